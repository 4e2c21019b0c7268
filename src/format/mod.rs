//! Checkpoint formats: how a quantized linear is stored, written and read back
//! (DESIGN §3). One description, [`Stored`], drives the writer's plan, the encoding of each
//! linear, the check that the bytes decode to exactly the in-memory result, and the reader
//! `qronos eval` uses on a quantized folder.
//!
//! - `fake`: dequantized weights under the input's names (no packing; [`crate::model::export`]).
//! - `gptq` / `gptq_v2` ([`gptq`]): `qweight` / `qzeros` / `scales` (F16) / `g_idx`, the
//!   format transformers (+ gptqmodel / optimum), vLLM and ExLlama load. v1 stores `z − 1` and
//!   is written for symmetric grids only.
//! - `compressed-tensors` ([`ct`]): `pack-quantized` — `weight_packed` / `weight_scale` (the
//!   model's dtype) / `weight_shape` (/ `weight_zero_point`), as compressed-tensors and vLLM
//!   read it; the group must divide every layer's inputs.
//! - `mlx` ([`mlx`]): mlx-lm's affine format — `weight` (U32) / `scales` / `biases`, as mlx-lm
//!   loads it on Apple Silicon (and mlx's CPU build); groups of 32, 64 or 128 inputs.
//!
//! Every format shares one bit packing ([`pack`]).

pub mod ct;
pub mod gptq;
pub mod mlx;
pub mod pack;

use safetensors::Dtype;
use serde_json::{json, Value};

use crate::algo::{GroupSize, LayerResult, QuantConfig};
use crate::grid::ScaleDtype;
use crate::io::writer::Planned;
use crate::{Error, Result};

/// An output format (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Fake,
    Gptq,
    GptqV2,
    CompressedTensors,
    Mlx,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Fake => "fake",
            Format::Gptq => "gptq",
            Format::GptqV2 => "gptq_v2",
            Format::CompressedTensors => "compressed-tensors",
            Format::Mlx => "mlx",
        }
    }

    /// The dtype the format stores scales in (the grid rounds to it before choosing codes);
    /// `model` is the dtype of the model's weights.
    pub fn scale_dtype(self, model: ScaleDtype) -> ScaleDtype {
        match self {
            Format::Fake => ScaleDtype::F32,
            Format::Gptq | Format::GptqV2 => ScaleDtype::F16,
            Format::CompressedTensors => model,
            // bf16 for an f32 model keeps mlx's `s · c + biases` exact in f32 (see [`mlx`])
            Format::Mlx => match model {
                ScaleDtype::F32 => ScaleDtype::Bf16,
                m => m,
            },
        }
    }

    /// Whether the format stores a quantized linear's bias itself (GPTQ: F16) instead of
    /// leaving it as it is.
    pub fn owns_bias(self) -> bool {
        matches!(self, Format::Gptq | Format::GptqV2)
    }
}

/// How a quantized folder stores its linears: the format and the grid's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    pub format: Format,
    pub bits: u32,
    /// Columns per group; `-1` = one group per output row.
    pub group_size: i64,
    pub sym: bool,
    /// Groups are runs in the act-order permutation (a permuted `g_idx`).
    pub desc_act: bool,
    /// The dtype scales are stored in.
    pub scale_dtype: ScaleDtype,
}

/// A tensor handed to or read from a folder: dtype, shape, little-endian bytes.
pub type RawTensor<'a> = (Dtype, Vec<usize>, &'a [u8]);

/// A tensor's header (dtype and shape) by name, or an error naming it.
pub type HeaderOf<'a> = &'a dyn Fn(&str) -> Result<(Dtype, Vec<usize>)>;

impl Stored {
    /// The stored layout of a quantization config in `format` (not `Fake`).
    pub fn new(format: Format, cfg: &QuantConfig) -> Stored {
        Stored {
            format,
            bits: cfg.bits,
            group_size: cfg.group_size.as_i64(),
            sym: cfg.sym,
            desc_act: cfg.desc_act,
            scale_dtype: cfg.scale_dtype,
        }
    }

    /// Columns per group of a layer with `d` inputs.
    pub fn columns(&self, d: usize) -> usize {
        match GroupSize::from_i64(self.group_size) {
            Ok(g) => g.columns(d),
            Err(_) => d,
        }
    }

    /// Refuse, before any work, a config the format cannot store (`flag`-style errors).
    pub fn check_config(&self, cfg: &QuantConfig) -> Result<()> {
        match self.format {
            Format::Fake => Ok(()),
            Format::Gptq | Format::GptqV2 => gptq::check_config(self, cfg),
            Format::CompressedTensors => ct::check_config(self, cfg),
            Format::Mlx => mlx::check_config(self, cfg),
        }
    }

    /// Refuse a linear the format cannot store (`name` without `.weight`, `m × d`).
    pub fn check_linear(&self, name: &str, m: usize, d: usize) -> Result<()> {
        match self.format {
            Format::Fake => Ok(()),
            Format::Gptq | Format::GptqV2 => gptq::check_linear(self, name, m, d),
            Format::CompressedTensors => ct::check_linear(self, name, m, d),
            Format::Mlx => mlx::check_linear(self, name, m, d),
        }
    }

    /// The tensors of one quantized linear `name` (`m × d`), in write order; `bias` is the
    /// dtype the linear's bias is stored in, when it has one.
    pub fn plan(&self, name: &str, m: usize, d: usize, bias: bool) -> Vec<Planned> {
        match self.format {
            Format::Fake => unreachable!("fake weights are planned by the fake writer"),
            Format::Gptq | Format::GptqV2 => gptq::plan(self, name, m, d, bias),
            Format::CompressedTensors => ct::plan(self, name, m, d),
            Format::Mlx => mlx::plan(self, name, m, d),
        }
    }

    /// The bytes of each planned tensor of a quantized linear (same order as
    /// [`Stored::plan`]); `bias` is the original bias tensor, if any.
    pub fn encode(
        &self,
        name: &str,
        r: &LayerResult,
        bias: Option<RawTensor<'_>>,
    ) -> Result<Vec<Vec<u8>>> {
        match self.format {
            Format::Fake => unreachable!("fake weights are encoded by the fake writer"),
            Format::Gptq | Format::GptqV2 => gptq::encode(self, name, r, bias),
            Format::CompressedTensors => ct::encode(self, name, r),
            Format::Mlx => mlx::encode(self, name, r),
        }
    }

    /// Linear `name`'s dequantized weight `m × d` (row-major f32), from the tensors `get`
    /// finds. Errors name the tensor.
    pub fn decode<'a>(
        &self,
        get: &dyn Fn(&str) -> Result<RawTensor<'a>>,
        name: &str,
        m: usize,
        d: usize,
    ) -> Result<Vec<f32>> {
        match self.format {
            Format::Fake => unreachable!("fake weights are plain tensors"),
            Format::Gptq | Format::GptqV2 => gptq::decode(self, get, name, m, d),
            Format::CompressedTensors => ct::decode(self, get, name, m, d),
            Format::Mlx => mlx::decode(get, name, m, d),
        }
    }

    /// `config.json`'s `quantization_config` (and the whole `quantize_config.json` for GPTQ).
    pub fn config_json(&self, cfg: &QuantConfig) -> Value {
        match self.format {
            Format::Fake => json!(null),
            Format::Gptq | Format::GptqV2 => gptq::config_json(self, cfg),
            Format::CompressedTensors => ct::config_json(self, cfg),
            Format::Mlx => mlx::config_json(self),
        }
    }

    /// The entries the format puts into `config.json`: `quantization_config`, and for mlx
    /// also `quantization` (the key mlx-lm reads; mlx-lm writes both).
    pub fn config_entries(&self, cfg: &QuantConfig) -> Vec<(&'static str, Value)> {
        let q = self.config_json(cfg);
        match self.format {
            Format::Fake => Vec::new(),
            Format::Mlx => vec![("quantization", q.clone()), ("quantization_config", q)],
            _ => vec![("quantization_config", q)],
        }
    }

    /// Check, from tensor headers alone (`info` gives a tensor's dtype and shape), that linear
    /// `name` (`m × d`) is stored as this layout says. Errors name the tensor.
    pub fn check_stored(&self, info: HeaderOf<'_>, name: &str, m: usize, d: usize) -> Result<()> {
        if self.format == Format::Mlx {
            return mlx::layout(info, name, m, d).map(|_| ());
        }
        for t in self.plan(name, m, d, false) {
            let (dt, shape) = info(&t.name)?;
            if dt != t.dtype || shape != t.shape {
                return Err(Error::Tensor {
                    path: std::path::PathBuf::new(),
                    tensor: t.name,
                    reason: format!(
                        "{dt:?} {shape:?}, expected {:?} {:?} from config.json's \
                         quantization_config",
                        t.dtype, t.shape
                    ),
                });
            }
        }
        Ok(())
    }

    /// The layout a model folder's `config.json` declares, if it is quantized in a format we
    /// read. `None` for a float folder; an error for a quantization we do not read.
    pub fn from_config(path: &std::path::Path, config: &Value) -> Result<Option<Stored>> {
        let model_dtype = match config
            .get("torch_dtype")
            .or_else(|| config.get("dtype"))
            .and_then(Value::as_str)
        {
            Some("float16") => ScaleDtype::F16,
            Some("float32") => ScaleDtype::F32,
            _ => ScaleDtype::Bf16,
        };
        // mlx-lm reads `quantization` first (its `quantization_config` is a copy)
        if let Some(q) = config.get("quantization").filter(|q| !q.is_null()) {
            return mlx::from_config(path, q, model_dtype).map(Some);
        }
        let Some(q) = config.get("quantization_config") else {
            return Ok(None);
        };
        let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
        match method {
            "gptq" => gptq::from_config(path, q).map(Some),
            "compressed-tensors" => ct::from_config(path, q, model_dtype).map(Some),
            other => Err(Error::model(
                path,
                "quantization_config.quant_method",
                format!(
                    "{other:?}: not a quantization qronos reads (gptq, compressed-tensors, or \
                     mlx's `quantization`)"
                ),
            )),
        }
    }
}

/// The safetensors dtype of a scale dtype.
pub(crate) fn dtype_of(s: ScaleDtype) -> Dtype {
    match s {
        ScaleDtype::F32 => Dtype::F32,
        ScaleDtype::F16 => Dtype::F16,
        ScaleDtype::Bf16 => Dtype::BF16,
    }
}

/// The little-endian bytes of `x` in `dt`, if `x` is exactly a `dt` value.
pub(crate) fn exact_bytes(x: f32, dt: ScaleDtype) -> Option<Vec<u8>> {
    match dt {
        ScaleDtype::F32 => Some(x.to_le_bytes().to_vec()),
        ScaleDtype::F16 => {
            let h = half::f16::from_f32(x);
            (h.to_f32() == x).then(|| h.to_le_bytes().to_vec())
        }
        ScaleDtype::Bf16 => {
            let h = half::bf16::from_f32(x);
            (h.to_f32() == x).then(|| h.to_le_bytes().to_vec())
        }
    }
}

/// Tensor `{name}.{suffix}` from `get`, checked to have `dtype` and `shape` (an error naming
/// it otherwise): how every decoder reads its packed tensors.
pub(crate) fn fetch<'a>(
    get: &dyn Fn(&str) -> Result<RawTensor<'a>>,
    name: &str,
    suffix: &str,
    dtype: Dtype,
    shape: &[usize],
) -> Result<RawTensor<'a>> {
    let full = format!("{name}.{suffix}");
    let t = get(&full)?;
    if t.0 != dtype || t.1 != shape {
        return Err(Error::Tensor {
            path: std::path::PathBuf::new(),
            tensor: full,
            reason: format!(
                "{:?} {:?}, expected {dtype:?} {shape:?} from the quantization config",
                t.0, t.1
            ),
        });
    }
    Ok(t)
}

/// The `quantizer` tag written into checkpoints.
pub fn quantizer_tag() -> String {
    format!("qronos:{}", env!("CARGO_PKG_VERSION"))
}

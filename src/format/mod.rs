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
//!
//! Every format shares one bit packing ([`pack`]).

pub mod ct;
pub mod gptq;
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
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Fake => "fake",
            Format::Gptq => "gptq",
            Format::GptqV2 => "gptq_v2",
            Format::CompressedTensors => "compressed-tensors",
        }
    }

    /// The dtype the format stores scales in (the grid rounds to it before choosing codes);
    /// `model` is the dtype of the model's weights.
    pub fn scale_dtype(self, model: ScaleDtype) -> ScaleDtype {
        match self {
            Format::Fake => ScaleDtype::F32,
            Format::Gptq | Format::GptqV2 => ScaleDtype::F16,
            Format::CompressedTensors => model,
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
        }
    }

    /// Refuse a linear the format cannot store (`name` without `.weight`, `m × d`).
    pub fn check_linear(&self, name: &str, m: usize, d: usize) -> Result<()> {
        match self.format {
            Format::Fake => Ok(()),
            Format::Gptq | Format::GptqV2 => gptq::check_linear(self, name, m, d),
            Format::CompressedTensors => ct::check_linear(self, name, m, d),
        }
    }

    /// The tensors of one quantized linear `name` (`m × d`), in write order; `bias` is the
    /// dtype the linear's bias is stored in, when it has one.
    pub fn plan(&self, name: &str, m: usize, d: usize, bias: bool) -> Vec<Planned> {
        match self.format {
            Format::Fake => unreachable!("fake weights are planned by the fake writer"),
            Format::Gptq | Format::GptqV2 => gptq::plan(self, name, m, d, bias),
            Format::CompressedTensors => ct::plan(self, name, m, d),
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
        }
    }

    /// The names of the tensors holding linear `name`'s weight (presence check on open).
    pub fn tensor_names(&self, name: &str) -> Vec<String> {
        self.plan(name, 32, 32, false)
            .into_iter()
            .map(|p| p.name)
            .collect()
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
        }
    }

    /// `config.json`'s `quantization_config` (and the whole `quantize_config.json` for GPTQ).
    pub fn config_json(&self, cfg: &QuantConfig) -> Value {
        match self.format {
            Format::Fake => json!(null),
            Format::Gptq | Format::GptqV2 => gptq::config_json(self, cfg),
            Format::CompressedTensors => ct::config_json(self, cfg),
        }
    }

    /// The layout a model folder's `config.json` declares, if it is quantized in a format we
    /// read. `None` for a float folder; an error for a quantization we do not read.
    pub fn from_config(path: &std::path::Path, config: &Value) -> Result<Option<Stored>> {
        let Some(q) = config.get("quantization_config") else {
            return Ok(None);
        };
        let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
        match method {
            "gptq" => gptq::from_config(path, q).map(Some),
            "compressed-tensors" => {
                let dt = match config
                    .get("torch_dtype")
                    .or_else(|| config.get("dtype"))
                    .and_then(Value::as_str)
                {
                    Some("float16") => ScaleDtype::F16,
                    Some("float32") => ScaleDtype::F32,
                    _ => ScaleDtype::Bf16,
                };
                ct::from_config(path, q, dt).map(Some)
            }
            other => Err(Error::model(
                path,
                "quantization_config.quant_method",
                format!("{other:?}: not a quantization qronos reads (gptq, compressed-tensors)"),
            )),
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

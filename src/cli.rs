//! Command-line flags (clap) and their conversion into the library's validated config.
//! The library never sees clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use qronos::grid::Clip;
use qronos::{Error, GroupSize, Method, QuantConfig, Result};

#[derive(Parser, Debug)]
#[command(
    name = "qronos",
    version,
    about = "Hessian-based post-training quantization (Qronos, GPTQ, RTN) on any GPU or the CPU"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Quantize one linear layer from a case file; print one JSON line.
    Layer(LayerArgs),
    /// Quantize every linear of a Hugging Face model folder, block by block; write a folder.
    Quantize(QuantizeArgs),
    /// Perplexity of a Hugging Face model folder on a text file; print one JSON line.
    Eval(EvalArgs),
    /// List the GPU adapters and say which one `--device auto` picks.
    Devices,
    /// Write a deterministic synthetic LLM-like case file (for demos, tests and benches).
    Synth(SynthArgs),
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output rows (output channels).
    #[arg(long, default_value_t = 256)]
    pub m: usize,
    /// Input features.
    #[arg(long, default_value_t = 256)]
    pub d: usize,
    /// Calibration tokens.
    #[arg(long, default_value_t = 2048)]
    pub tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Leave out Xq (the quantized-model inputs), i.e. X̃ = X.
    #[arg(long)]
    pub no_xq: bool,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatStreamArg {
    /// The float block fed with the quantized stream's input (the reference's rule).
    Block,
    /// A second stream carries the float model through all blocks.
    Model,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    /// Dequantized weights under the input's names (safetensors), everything else copied.
    Fake,
    /// GPTQ v1 (`checkpoint_format: "gptq"`, zero points stored as z − 1; symmetric only).
    Gptq,
    /// GPTQ v2 (zero points stored as z; symmetric and asymmetric).
    #[value(name = "gptq_v2")]
    GptqV2,
    /// compressed-tensors pack-quantized (scales in the model's dtype; the group must divide
    /// every layer's inputs).
    #[value(name = "compressed-tensors")]
    CompressedTensors,
    /// mlx-lm's affine format (groups of 32, 64 or 128 that divide every layer's inputs;
    /// bits 2-6 or 8).
    Mlx,
}

impl FormatArg {
    pub fn format(self) -> qronos::format::Format {
        use qronos::format::Format;
        match self {
            FormatArg::Fake => Format::Fake,
            FormatArg::Gptq => Format::Gptq,
            FormatArg::GptqV2 => Format::GptqV2,
            FormatArg::CompressedTensors => Format::CompressedTensors,
            FormatArg::Mlx => Format::Mlx,
        }
    }
}

/// A size like `5GB`, `500MB`, `64KiB` or a number of bytes.
pub fn parse_size(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a size (e.g. 5GB, 500MB)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = v * mult;
    if bytes.is_nan() || bytes < 1.0 {
        return Err(format!("{s:?}: must be at least one byte"));
    }
    Ok(bytes as usize)
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtypeArg {
    F32,
    F16,
    Bf16,
}

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Hugging Face model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Calibration text (UTF-8), tokenized whole without special tokens; repeat the flag for
    /// several files (their token streams are concatenated in the order given).
    #[arg(long, required = true)]
    pub calib: Vec<PathBuf>,
    /// Output folder (must not exist; written under a temporary name, renamed at the end).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = FormatArg::Gptq)]
    pub format: FormatArg,
    /// dtype of the dequantized weights in `fake` output (default f32).
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// With `--format fake`: round scales to this dtype before choosing codes, as the packed
    /// format that stores them would (gptq: f16), so the fake folder holds exactly its weights.
    #[arg(long, value_enum)]
    pub scale_dtype: Option<DtypeArg>,
    /// Largest weight file; bigger checkpoints are sharded with model.safetensors.index.json.
    #[arg(long, value_parser = parse_size, default_value = "5GB")]
    pub max_shard_size: usize,
    #[command(flatten)]
    pub q: QuantFlags,
    /// Act-order with static groups (the default; trivial g_idx).
    #[arg(long, conflicts_with_all = ["desc_act", "no_act_order"])]
    pub act_order: bool,
    /// Sweep in the original column order.
    #[arg(long, conflicts_with = "desc_act")]
    pub no_act_order: bool,
    /// Act-order with groups in the permuted order (permuted g_idx).
    #[arg(long)]
    pub desc_act: bool,
    /// Calibration windows.
    #[arg(long, default_value_t = 128)]
    pub nsamples: usize,
    /// Tokens per calibration window.
    #[arg(long, default_value_t = 2048)]
    pub seqlen: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    #[arg(long, value_enum, default_value_t = FloatStreamArg::Block)]
    pub float_stream: FloatStreamArg,
    /// Per-token symmetric fake quantization of every linear's input in the quantized
    /// stream (W·A·), bits 2..=8 (8 and 4 are the usual).
    #[arg(long)]
    pub act_bits: Option<u32>,
    /// Per-token, per-head symmetric fake quantization of K and V in the quantized stream.
    #[arg(long)]
    pub kv_bits: Option<u32>,
    /// MiB of float-block inputs kept per block (one float forward per chunk then serves
    /// all four linear groups); more than this and each group recomputes its inputs (same
    /// results, more forwards).
    #[arg(long, default_value_t = 512)]
    pub float_cache_mb: usize,
    /// With the GPU: MiB of calibration streams kept on the device; larger streams stay in
    /// host memory and go to the device one chunk at a time.
    #[arg(long, default_value_t = 4096)]
    pub gpu_stream_mb: usize,
    /// After quantizing: perplexity of the float and the quantized model on this text.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    #[arg(long, default_value_t = 2048)]
    pub eval_seqlen: usize,
    /// Use only the first N characters of the --eval text.
    #[arg(long)]
    pub eval_max_chars: Option<usize>,
    /// No per-linear lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl QuantizeArgs {
    pub fn config(&self) -> Result<qronos::model::quantize::PipelineConfig> {
        let act_order = !self.no_act_order && !self.desc_act;
        // hmse where it applies (static groups of GPTQ / Qronos; measured in BENCHMARKS.md)
        let fits = self.q.method != MethodArg::Rtn && (act_order || self.q.static_groups);
        let clip = if fits { Clip::HessianMse } else { Clip::MinMax };
        let format = self.format.format();
        let group = if format == qronos::format::Format::Mlx {
            64
        } else {
            128
        };
        let mut layer = self.q.config(act_order, self.desc_act, clip, group)?;
        // the model's dtype is set once the model is open (compressed-tensors, mlx)
        layer.scale_dtype = format.scale_dtype(qronos::grid::ScaleDtype::Bf16);
        if format == qronos::format::Format::Fake {
            if let Some(dt) = self.scale_dtype {
                layer.scale_dtype = match dt {
                    DtypeArg::F32 => qronos::grid::ScaleDtype::F32,
                    DtypeArg::F16 => qronos::grid::ScaleDtype::F16,
                    DtypeArg::Bf16 => qronos::grid::ScaleDtype::Bf16,
                };
            }
        } else {
            for (flag, given) in [("--dtype", self.dtype), ("--scale-dtype", self.scale_dtype)] {
                if given.is_some() {
                    return Err(Error::config(
                        flag,
                        format!(
                            "applies to --format fake; {} stores its own dtypes",
                            format.name()
                        ),
                    ));
                }
            }
            qronos::format::Stored::new(format, &layer).check_config(&layer)?;
        }
        for (flag, v) in [("--act-bits", self.act_bits), ("--kv-bits", self.kv_bits)] {
            if let Some(b) = v {
                if !(2..=8).contains(&b) {
                    return Err(Error::config(flag, format!("{b}: must be in 2..=8")));
                }
            }
        }
        if self.nsamples == 0 || self.seqlen < 2 {
            return Err(Error::config(
                "--nsamples / --seqlen",
                "need at least one calibration window of at least 2 tokens",
            ));
        }
        Ok(qronos::model::quantize::PipelineConfig {
            layer,
            float_stream: match self.float_stream {
                FloatStreamArg::Block => qronos::model::quantize::FloatStream::Block,
                FloatStreamArg::Model => qronos::model::quantize::FloatStream::Model,
            },
            chunk_tokens: None,
            act_bits: self.act_bits,
            kv_bits: self.kv_bits,
            float_cache_bytes: Some(self.float_cache_mb << 20),
            stream_device_bytes: None,
        })
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolArg {
    /// Non-overlapping windows of --seqlen text tokens, every token but each window's first
    /// scored (transformers' common protocol).
    Standard,
    /// BOS + --seqlen − 1 text tokens per window, only the second half of each scored.
    Paper,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Hugging Face model folder (config.json, model.safetensors or shards + index,
    /// tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// UTF-8 text file, tokenized whole without special tokens.
    #[arg(long)]
    pub data: PathBuf,
    /// Tokens per window.
    #[arg(long, default_value_t = 2048)]
    pub seqlen: usize,
    /// Use only the first N tokens of the text.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Use only the first N characters of the text (before tokenizing).
    #[arg(long)]
    pub max_chars: Option<usize>,
    #[arg(long, value_enum, default_value_t = ProtocolArg::Standard)]
    pub protocol: ProtocolArg,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Simulate per-token symmetric activation quantization of every linear's input.
    #[arg(long)]
    pub act_bits: Option<u32>,
    /// Simulate per-token, per-head symmetric quantization of K and V.
    #[arg(long)]
    pub kv_bits: Option<u32>,
}

impl EvalArgs {
    pub fn config(&self) -> Result<qronos::model::EvalConfig> {
        if self.seqlen < 2 {
            return Err(Error::config(
                "--seqlen",
                format!("{}: need at least 2", self.seqlen),
            ));
        }
        if self.max_tokens == Some(0) {
            return Err(Error::config("--max-tokens", "0 leaves nothing to score"));
        }
        for (flag, v) in [("--act-bits", self.act_bits), ("--kv-bits", self.kv_bits)] {
            if let Some(b) = v {
                if !(2..=8).contains(&b) {
                    return Err(Error::config(flag, format!("{b}: must be in 2..=8")));
                }
            }
        }
        Ok(qronos::model::EvalConfig {
            act_bits: self.act_bits,
            kv_bits: self.kv_bits,
            seqlen: self.seqlen,
            max_tokens: self.max_tokens,
            protocol: match self.protocol {
                ProtocolArg::Standard => qronos::model::Protocol::Standard,
                ProtocolArg::Paper => qronos::model::Protocol::Paper,
            },
            chunk_tokens: None,
        })
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodArg {
    Rtn,
    Gptq,
    Qronos,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    /// A hardware GPU if there is one, else the CPU (a software adapter is not picked).
    Auto,
    Cpu,
    /// Any GPU adapter, software ones (lavapipe) included.
    Gpu,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectivesArg {
    /// Both objectives from Gram traces (costs one extra Gram and ~2 layer GEMMs).
    Exact,
    /// Skip them (the JSON fields are null).
    None,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipArg {
    Minmax,
    Mse,
    Hmse,
}

/// The per-layer quantization flags shared by `layer` and `quantize` (the act-order flags,
/// whose defaults differ, stay with each command).
#[derive(Args, Debug)]
pub struct QuantFlags {
    #[arg(long, value_enum, default_value_t = MethodArg::Qronos)]
    pub method: MethodArg,
    /// Bits per weight, 2..=8.
    #[arg(long, default_value_t = 4)]
    pub bits: u32,
    /// Input columns per scale group; -1 = one group per output row. Default 128 (64 with
    /// `quantize --format mlx`, mlx-lm's own default).
    #[arg(long, allow_hyphen_values = true)]
    pub group_size: Option<i64>,
    /// Symmetric grid (the default; loadable as GPTQ sym).
    #[arg(long, conflicts_with = "asym")]
    pub sym: bool,
    /// Asymmetric grid with an integer zero point.
    #[arg(long)]
    pub asym: bool,
    /// Group parameters from the original weights instead of during the sweep (implied by
    /// --act-order).
    #[arg(long)]
    pub static_groups: bool,
    /// Range of each static group: minmax = the group's full range (the references'),
    /// mse = shrunk by the factor in 1, 0.99, …, 0.21 that rounds the group with the least
    /// squared error, hmse = the same with each column's error weighted by diag(H) (GPTQ /
    /// Qronos; RTN keeps minmax). Default: `quantize` hmse (minmax for RTN and dynamic
    /// groups), `layer` minmax.
    #[arg(long, value_enum)]
    pub clip: Option<ClipArg>,
    /// GPTQ damping, as a fraction of mean(diag H).
    #[arg(long, default_value_t = 0.01, allow_hyphen_values = true)]
    pub damp_percent: f32,
    /// Qronos damping, as a fraction of λmax(H).
    #[arg(long, default_value_t = 1e-6, allow_hyphen_values = true)]
    pub qronos_alpha: f32,
    /// Lazy-batch block size of the sweep.
    #[arg(long, default_value_t = 128)]
    pub block_size: usize,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    #[arg(long, value_enum, default_value_t = ObjectivesArg::Exact)]
    pub objectives: ObjectivesArg,
}

impl QuantFlags {
    /// The validated layer config, with the command's act-order choice.
    /// `group` is the group size when `--group-size` is not given.
    pub fn config(
        &self,
        act_order: bool,
        desc_act: bool,
        clip: Clip,
        group: i64,
    ) -> Result<QuantConfig> {
        let cfg = QuantConfig {
            method: match self.method {
                MethodArg::Rtn => Method::Rtn,
                MethodArg::Gptq => Method::Gptq,
                MethodArg::Qronos => Method::Qronos,
            },
            bits: self.bits,
            group_size: GroupSize::from_i64(self.group_size.unwrap_or(group))?,
            sym: !self.asym,
            act_order,
            desc_act,
            static_groups: self.static_groups,
            clip: match self.clip {
                None => clip,
                Some(ClipArg::Minmax) => Clip::MinMax,
                Some(ClipArg::Mse) => Clip::Mse,
                Some(ClipArg::Hmse) => Clip::HessianMse,
            },
            damp_percent: self.damp_percent,
            qronos_alpha: self.qronos_alpha,
            block_size: self.block_size,
            objectives: self.objectives == ObjectivesArg::Exact,
            ..QuantConfig::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Args, Debug)]
pub struct LayerArgs {
    /// Case file: W [m,d] f32 and X [N,d] (+ optional Xq), or H, G [d,d] (+ optional XX).
    #[arg(long)]
    pub case: PathBuf,
    /// Result file (safetensors): Q, codes, scales, zeros, g_idx.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub q: QuantFlags,
    /// Sweep columns by descending diag(H); groups stay contiguous (static parameters).
    #[arg(long, conflicts_with = "desc_act")]
    pub act_order: bool,
    /// Sweep by descending diag(H) with groups in the permuted order (permuted g_idx).
    #[arg(long)]
    pub desc_act: bool,
}

impl LayerArgs {
    /// The validated library config these flags mean.
    pub fn config(&self) -> Result<QuantConfig> {
        let cfg = self
            .q
            .config(self.act_order, self.desc_act, Clip::MinMax, 128)?;
        if qronos::io::same_file(&self.case, &self.out) || self.case == self.out {
            return Err(Error::config(
                "--out",
                format!(
                    "{} is the case file itself; refusing to overwrite the input",
                    self.out.display()
                ),
            ));
        }
        Ok(cfg)
    }
}

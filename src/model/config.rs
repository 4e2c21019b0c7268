//! `config.json` of a Hugging Face Llama-family model, parsed into one typed config. The
//! architecture differences (Qwen2's q/k/v bias, Qwen3's q/k norms and explicit head_dim,
//! llama3 rope scaling, tied lm_head) are fields here, not copies of the block code.
//!
//! Both spellings transformers has used are read: `rope_theta` + `rope_scaling` (transformers
//! 4) and `rope_parameters` (transformers 5, which folds `rope_theta` into it).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Error, Result};

/// The architectures the forward implements (`config.json["architectures"][0]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Arch {
    pub fn hf_name(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
        }
    }
    const ALL: [Arch; 4] = [Arch::Llama, Arch::Mistral, Arch::Qwen2, Arch::Qwen3];
}

/// How rotary frequencies are derived from `rope_theta`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// `inv_freq[i] = θ^(−2i/head_dim)`.
    Default,
    /// Llama 3.1's piecewise rescaling of the low frequencies.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
}

/// Everything the forward needs from `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v (Qwen2 always; Llama's `attention_bias` also puts one on o).
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Qwen3's RMSNorm of each query / key head before rope.
    pub qk_norm: bool,
    /// Attention window in tokens, if the model has one (a sequence must fit it).
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// The checkpoint's dtype as config.json states it (informational).
    pub dtype: Option<String>,
}

struct Json<'a> {
    path: &'a Path,
    v: &'a Value,
}

impl Json<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::model(self.path, key, reason)
    }
    fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(key, "missing (a positive integer is required)"))
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(Some(n as usize)),
                _ => Err(self.err(key, format!("{v} is not a positive integer"))),
            },
        }
    }
    fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(|x| x as f32)
                .ok_or_else(|| self.err(key, format!("{v} is not a number"))),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("{v} is not true / false"))),
        }
    }
    /// A token id; lists (several eos ids) give their first entry.
    fn token(&self, key: &str) -> Result<Option<u32>> {
        let v = match self.get(key) {
            None => return Ok(None),
            Some(Value::Array(a)) => match a.first() {
                None => return Ok(None),
                Some(v) => v,
            },
            Some(v) => v,
        };
        v.as_u64()
            .filter(|&n| n <= u64::from(u32::MAX))
            .map(|n| Some(n as u32))
            .ok_or_else(|| self.err(key, format!("{v} is not a token id")))
    }
}

impl ModelConfig {
    /// Read and validate `dir/config.json`.
    pub fn load(dir: &Path) -> Result<ModelConfig> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::model(&path, "config.json", format!("not valid JSON: {e}")))?;
        Self::from_json(&path, &v)
    }

    /// Parse a config already read; `path` is named in errors.
    pub fn from_json(path: &Path, v: &Value) -> Result<ModelConfig> {
        let j = Json { path, v };
        let arch_name = match j.get("architectures") {
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_string()
            }
            Some(other) => {
                return Err(j.err(
                    "architectures",
                    format!("{other}: expected a list with one architecture name"),
                ))
            }
            None => return Err(j.err("architectures", "missing")),
        };
        let supported: Vec<&str> = Arch::ALL.iter().map(|a| a.hf_name()).collect();
        let arch = Arch::ALL
            .into_iter()
            .find(|a| a.hf_name() == arch_name)
            .ok_or_else(|| {
                j.err(
                    "architectures",
                    format!(
                        "unsupported architecture {arch_name:?}; supported: {}",
                        supported.join(", ")
                    ),
                )
            })?;
        let act = j
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("silu");
        if act != "silu" {
            return Err(j.err(
                "hidden_act",
                format!("{act:?}: only \"silu\" (SwiGLU) is supported"),
            ));
        }
        let hidden_size = j.usize("hidden_size")?;
        let num_attention_heads = j.usize("num_attention_heads")?;
        let num_key_value_heads = j
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(j.err(
                "num_key_value_heads",
                format!(
                    "{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"
                ),
            ));
        }
        let head_dim = match j.opt_usize("head_dim")? {
            Some(h) => h,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(j.err(
                    "head_dim",
                    format!(
                        "missing, and hidden_size {hidden_size} is not a multiple of \
                         num_attention_heads {num_attention_heads}"
                    ),
                ))
            }
        };
        if head_dim % 2 != 0 {
            return Err(j.err("head_dim", format!("{head_dim} is odd (rope needs pairs)")));
        }
        let (rope_theta, rope_scaling) = rope(&j)?;
        if let Some(p) = j.get("partial_rotary_factor") {
            if p.as_f64() != Some(1.0) {
                return Err(j.err(
                    "partial_rotary_factor",
                    format!("{p}: only full rotary embeddings are supported"),
                ));
            }
        }
        let attention_bias = j.bool_or("attention_bias", false)?;
        let (qkv_bias, o_bias) = match arch {
            // Qwen2 hard-codes bias on q/k/v and none on o
            Arch::Qwen2 => (true, false),
            _ => (attention_bias, attention_bias),
        };
        let sliding_window = match arch {
            Arch::Mistral => j.opt_usize("sliding_window")?,
            Arch::Qwen2 | Arch::Qwen3 if j.bool_or("use_sliding_window", false)? => {
                Some(j.usize("sliding_window")?)
            }
            _ => None,
        };
        let intermediate_size = j.usize("intermediate_size")?;
        let vocab_size = j.usize("vocab_size")?;
        // every weight the config implies must be addressable (as f32 bytes), so an absurd
        // config is an error here and not an overflow in the shape arithmetic downstream
        let weights: [(&str, &[usize]); 3] = [
            (
                "num_attention_heads × head_dim × hidden_size",
                &[num_attention_heads, head_dim, hidden_size],
            ),
            ("vocab_size × hidden_size", &[vocab_size, hidden_size]),
            (
                "intermediate_size × hidden_size",
                &[intermediate_size, hidden_size],
            ),
        ];
        for (keys, dims) in weights {
            let bytes = dims.iter().try_fold(4usize, |b, &d| b.checked_mul(d));
            if bytes.is_none_or(|b| b > isize::MAX as usize) {
                return Err(j.err(
                    keys,
                    format!("{dims:?}: a weight of this many f32 values cannot be addressed"),
                ));
            }
        }
        let dtype = j
            .get("dtype")
            .or_else(|| j.get("torch_dtype"))
            .and_then(Value::as_str)
            .map(String::from);
        Ok(ModelConfig {
            arch,
            hidden_size,
            intermediate_size,
            num_hidden_layers: j.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size,
            rms_norm_eps: j.f32_or("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: j.bool_or("tie_word_embeddings", false)?,
            qkv_bias,
            o_bias,
            mlp_bias: j.bool_or("mlp_bias", false)?,
            qk_norm: arch == Arch::Qwen3,
            sliding_window,
            bos_token_id: j.token("bos_token_id")?,
            eos_token_id: j.token("eos_token_id")?,
            dtype,
        })
    }

    /// Query heads per key/value head.
    pub fn gqa_group(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Rotary inverse frequencies (`head_dim / 2` of them), computed as transformers does in
    /// f32 (`1 / θ^(2i/d)` with the exponent, the power and the reciprocal each rounded to
    /// f32, then the llama3 rescaling in f32 arithmetic). The power is evaluated in f64 and
    /// rounded once, i.e. correctly rounded.
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f32> = (0..d / 2)
            .map(|i| {
                let e = (2 * i) as f32 / d as f32;
                let pow = f64::from(self.rope_theta).powf(f64::from(e)) as f32;
                1.0 / pow
            })
            .collect();
        match self.rope_scaling {
            RopeScaling::Default => base,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        // transformers: ~(wavelen < high) & ~(wavelen > low); finite here, so a plain range
                        let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                        if medium {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        } else {
                            scaled
                        }
                    })
                    .collect()
            }
        }
    }

    /// Checks a sequence length against the model (sliding window).
    pub fn check_seqlen(&self, path: &Path, seqlen: usize) -> Result<()> {
        if let Some(w) = self.sliding_window {
            if w < seqlen {
                return Err(Error::model(
                    path,
                    "sliding_window",
                    format!(
                        "{w} tokens is shorter than the sequence length {seqlen}; sliding-window \
                         attention is not implemented (use a sequence length ≤ {w})"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `(rope_theta, scaling)` from either spelling.
fn rope(j: &Json<'_>) -> Result<(f32, RopeScaling)> {
    let (params, key) = match (j.get("rope_parameters"), j.get("rope_scaling")) {
        (Some(p), _) => (Some(p), "rope_parameters"),
        (None, Some(s)) => (Some(s), "rope_scaling"),
        (None, None) => (None, "rope_scaling"),
    };
    let mut theta = j.f32_or("rope_theta", 10000.0)?;
    let Some(p) = params else {
        return Ok((theta, RopeScaling::Default));
    };
    let pj = Json { path: j.path, v: p };
    if !p.is_object() {
        return Err(j.err(key, format!("{p} is not an object")));
    }
    if pj.get("rope_theta").is_some() {
        theta = pj.f32_or("rope_theta", theta)?;
    }
    // transformers 4 wrote `type`; errors name the spelling the file uses
    let kind_key = if pj.get("rope_type").is_none() && pj.get("type").is_some() {
        "type"
    } else {
        "rope_type"
    };
    let sub = |name: &str| format!("{key}.{name}");
    let kind = match pj.get(kind_key) {
        None => "default",
        Some(v) => v
            .as_str()
            .ok_or_else(|| j.err(sub(kind_key).as_str(), format!("{v} is not a string")))?,
    };
    let num = |name: &str| -> Result<f32> {
        match pj.get(name).and_then(Value::as_f64) {
            Some(x) if x.is_finite() && x > 0.0 => Ok(x as f32),
            _ => Err(j.err(
                sub(name).as_str(),
                "missing or not a positive number (required by rope_type llama3)",
            )),
        }
    };
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "llama3" => {
            let s = RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            };
            if let RopeScaling::Llama3 {
                low_freq_factor,
                high_freq_factor,
                ..
            } = s
            {
                if high_freq_factor <= low_freq_factor {
                    return Err(j.err(
                        sub("high_freq_factor").as_str(),
                        "must be larger than low_freq_factor",
                    ));
                }
            }
            s
        }
        other => {
            return Err(j.err(
                sub(kind_key).as_str(),
                format!("unsupported rope type {other:?}; supported: default, llama3"),
            ))
        }
    };
    Ok((theta, scaling))
}

/// The path of `config.json` in a model folder (for error messages elsewhere).
pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("config.json")
}

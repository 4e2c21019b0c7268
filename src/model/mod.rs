//! Real models: Hugging Face folders ([`files`]), their config ([`config`]) and tokenizer
//! ([`tokenizer`]), the Llama-family decoder written once against the
//! [`Forward`](crate::backend::Forward) seam ([`llama`]), and perplexity ([`eval`]).
//!
//! Supported: `LlamaForCausalLM` (Llama 2 / 3 / 3.1 / 3.2 with `llama3` rope scaling, SmolLM /
//! SmolLM2), `MistralForCausalLM` (no sliding window shorter than the sequence),
//! `Qwen2ForCausalLM` (q/k/v bias), `Qwen3ForCausalLM` (q/k norms, explicit `head_dim`);
//! GQA; tied or separate `lm_head`; weights in F32 / F16 / BF16.

pub mod calib;
pub mod config;
pub mod eval;
pub mod export;
pub mod files;
pub mod llama;
pub mod quantize;
pub mod tokenizer;

pub use config::{Arch, ModelConfig, RopeScaling};
pub use eval::{perplexity, EvalConfig, EvalResult, Protocol};
pub use files::ModelDir;
pub use tokenizer::Tokenizer;

//! qronos: Hessian-based post-training quantization of linear layers (Qronos, GPTQ, RTN),
//! on the CPU through faer and on any Vulkan / Metal / DX12 GPU through wgpu.
//!
//! # Data flow of one layer ([`quantize_layer`])
//! 1. **load** — `W` (`m × d`) goes to the backend, column-major.
//! 2. **gram** — the calibration tokens stream through in chunks of
//!    [`algo::GRAM_CHUNK_TOKENS`]: `H = X̃ᵀX̃/N` (syrk), `G = XᵀX̃/N`, and for exact objectives
//!    `D = (X−X̃)ᵀ(X−X̃)/N`, as running means. `diag(H)` is also summed on the host, so the
//!    act-order permutation and dead columns never need a readback.
//! 3. **factor** — dead columns, permutation, damping λ (computed and kept on the backend),
//!    `U` with `(H + λI)⁻¹ = UᵀU`.
//! 4. **sweep** — GPTQ's lazy-batch sweep; Qronos first corrects column 0 against the
//!    mismatch and re-solves the rest by least squares, then runs the same sweep.
//! 5. **readback** — the one download of codes, scales, zeros, λ and the factorisation status
//!    (a failed factorisation is retried with 10× damping, then falls back to RTN, loudly).
//! 6. **objectives** — both relative errors from traces of Gram matrices (no second pass).
//!
//! # Example
//!
//! ```
//! use qronos::backend::cpu::CpuBackend;
//! use qronos::{quantize_layer, Calibration, LayerInput, Method, NoProgress, QuantConfig};
//!
//! // a small synthetic layer: W [m, d], calibration inputs X (float model) and X̃ (quantized)
//! let l = qronos::synth::llm_like(16, 64, 256, 0);
//! let input = LayerInput {
//!     w: &l.w,
//!     m: l.m,
//!     d: l.d,
//!     calib: Calibration::Tokens { x: &l.x, xq: Some(&l.xq), n: l.n },
//! };
//! let cfg = QuantConfig { method: Method::Qronos, bits: 4, ..QuantConfig::default() };
//! let r = quantize_layer(&CpuBackend::new(), &cfg, &input, &mut NoProgress)?;
//! // every weight is on its group's grid: Q = s · (c − z)
//! let (j, g) = (5, r.g_idx[5] as usize);
//! assert_eq!(r.q[j], r.scales[g] * (r.codes[j] as f32 - r.zeros[g]));
//! assert!(r.objective.unwrap().mismatched < 0.2);
//! # Ok::<(), qronos::Error>(())
//! ```
//!
//! # Modules
//! - [`grid`]: the quantizer grid, the single rounding rule (mirrored in `shaders/common.wgsl`).
//! - [`backend`]: the `Backend` trait and its forward family `Forward`; [`backend::cpu`] (faer, the reference) and
//!   [`backend::gpu`] (WGSL through wgpu, one launcher per kernel family).
//! - [`algo`]: RTN, GPTQ, Qronos written once against the trait; config and objectives.
//! - [`io`]: memory-mapped safetensors reading with validation, atomic writes, the case file.
//! - [`model`]: Hugging Face model folders (config, shards, tokenizer), the Llama-family
//!   decoder written once against [`backend::Forward`], and perplexity. A model runs block by
//!   block: embed every window, then load one decoder block, run all windows through it, drop
//!   it, and so on; the head turns the last hidden states into per-token NLLs on the backend.
//!   [`model::quantize`] runs the same block loop with two calibration streams and quantizes
//!   every linear from Grams accumulated on the backend ([`quantize_from_grams`]);
//!   [`model::export`] writes the result.
//! - [`format`](mod@format): checkpoint formats (GPTQ v1 / v2; the bit packing they share): the plan of
//!   tensors per quantized linear, the encoding, the exact decode the writer checks every
//!   linear with, and the reader `qronos eval` uses on quantized folders.
//! - [`synth`]: deterministic synthetic LLM-like layers for demos, tests and benches.
//! - [`error`]: the library's one error type.
//! - [`alloc`]: an opt-in global allocator that asks for transparent huge pages (the binary
//!   uses it; large GEMMs and 64 MiB matrices run markedly faster with them).

pub mod algo;
pub mod alloc;
pub mod backend;
pub mod error;
pub mod format;
pub mod grid;
pub mod io;
pub mod model;
pub mod synth;

pub use algo::{
    grams_diag, quantize_from_grams, quantize_layer, Calibration, GroupSize, LayerInput,
    LayerResult, Method, NoProgress, Objectives, Progress, QuantConfig, Timings,
};
pub use error::{Error, Result};

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
//! # Modules
//! - [`grid`]: the quantizer grid, the single rounding rule (mirrored in `shaders/common.wgsl`).
//! - [`backend`]: the `Backend` trait; [`backend::cpu`] (faer, the reference) and
//!   [`backend::gpu`] (WGSL through wgpu, one launcher per kernel family).
//! - [`algo`]: RTN, GPTQ, Qronos written once against the trait; config and objectives.
//! - [`io`]: memory-mapped safetensors reading with validation, atomic writes, the case file.
//! - [`synth`]: deterministic synthetic LLM-like layers for demos, tests and benches.
//! - [`error`]: the library's one error type.

pub mod algo;
pub mod backend;
pub mod error;
pub mod grid;
pub mod io;
pub mod synth;

pub use algo::{
    quantize_layer, Calibration, GroupSize, LayerInput, LayerResult, Method, NoProgress,
    Objectives, Progress, QuantConfig, Timings,
};
pub use error::{Error, Result};

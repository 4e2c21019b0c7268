//! qronos: Hessian-based post-training quantization of linear layers (Qronos, GPTQ, RTN),
//! on the CPU through faer and on any Vulkan / Metal / DX12 GPU through wgpu.

pub mod backend;
pub mod error;
pub mod grid;

pub use error::{Error, Result};
pub mod algo;
pub mod io;
pub mod synth;

pub use algo::{
    quantize_layer, Calibration, GroupSize, LayerInput, LayerResult, Method, NoProgress,
    Objectives, Progress, QuantConfig, Timings,
};

//! The one module where WGSL enters the binary. Each kernel family is one file in `shaders/`;
//! `shaders/common.wgsl` (the grid of `src/grid.rs`, op for op) is prepended to every family.

/// A kernel family (one `.wgsl` file).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Shader {
    Gemm,
    Gram,
    Elementwise,
    Dot,
    Damping,
    Cholesky,
    Sweep,
    Gather,
    Rmsnorm,
    Rope,
    Attention,
    SiluMul,
    Nll,
    FakeQuant,
}

macro_rules! family {
    ($file:literal) => {
        concat!(
            include_str!("../../../shaders/common.wgsl"),
            include_str!(concat!("../../../shaders/", $file))
        )
    };
}

impl Shader {
    pub const ALL: [Shader; 14] = [
        Shader::Gemm,
        Shader::Gram,
        Shader::Elementwise,
        Shader::Dot,
        Shader::Damping,
        Shader::Cholesky,
        Shader::Sweep,
        Shader::Gather,
        Shader::Rmsnorm,
        Shader::Rope,
        Shader::Attention,
        Shader::SiluMul,
        Shader::Nll,
        Shader::FakeQuant,
    ];

    /// Family name (also the file stem).
    pub fn name(self) -> &'static str {
        match self {
            Shader::Gemm => "gemm",
            Shader::Gram => "gram",
            Shader::Elementwise => "elementwise",
            Shader::Dot => "dot",
            Shader::Damping => "damping",
            Shader::Cholesky => "cholesky",
            Shader::Sweep => "sweep",
            Shader::Gather => "gather",
            Shader::Rmsnorm => "rmsnorm",
            Shader::Rope => "rope",
            Shader::Attention => "attention",
            Shader::SiluMul => "silu_mul",
            Shader::Nll => "nll",
            Shader::FakeQuant => "fake_quant",
        }
    }

    /// The complete WGSL source: `common.wgsl` followed by the family's file.
    pub fn source(self) -> &'static str {
        match self {
            Shader::Gemm => family!("gemm.wgsl"),
            Shader::Gram => family!("gram.wgsl"),
            Shader::Elementwise => family!("elementwise.wgsl"),
            Shader::Dot => family!("dot.wgsl"),
            Shader::Damping => family!("damping.wgsl"),
            Shader::Cholesky => family!("cholesky.wgsl"),
            Shader::Sweep => family!("sweep.wgsl"),
            Shader::Gather => family!("gather.wgsl"),
            Shader::Rmsnorm => family!("rmsnorm.wgsl"),
            Shader::Rope => family!("rope.wgsl"),
            Shader::Attention => family!("attention.wgsl"),
            Shader::SiluMul => family!("silu_mul.wgsl"),
            Shader::Nll => family!("nll.wgsl"),
            Shader::FakeQuant => family!("fake_quant.wgsl"),
        }
    }
}

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
    pub const ALL: [Shader; 7] = [
        Shader::Gemm,
        Shader::Gram,
        Shader::Elementwise,
        Shader::Dot,
        Shader::Damping,
        Shader::Cholesky,
        Shader::Sweep,
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
        }
    }
}

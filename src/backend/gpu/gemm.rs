//! gemm family launcher (`shaders/gemm.wgsl`): `C = α·op(A)·op(B) + β·C` on regions.
//!
//! Paneling: each operand is bound as a range of whole columns. The stored columns of A index
//! K (or M when transposed), those of B index N (or K when transposed), those of C index N.
//! M, N and K are cut into chunks so that every bound range fits the binding limit; the K
//! chunks after the first accumulate with β = 1.

use super::pipeline::PipelineKey;
use super::shaders::Shader;
use super::{gpu_params, Dispatch, GpuBackend, GpuMat, ParamLayout};
use crate::backend::Region;
use crate::Result;

gpu_params!(GemmParams {
    m: u32,
    n: u32,
    k: u32,
    a_off: u32,
    lda: u32,
    b_off: u32,
    ldb: u32,
    c_off: u32,
    ldc: u32,
    alpha: f32,
    beta: f32,
    lower: u32,
    m0: u32,
    n0: u32,
    pad0: u32,
    pad1: u32,
});

pub(crate) fn layouts() -> Vec<(Shader, ParamLayout)> {
    vec![(Shader::Gemm, GemmParams::LAYOUT)]
}

/// Tile edge of the kernel (C tiles are 64 × 64, K steps of 16).
const TILE: usize = 64;

/// A matrix operand: its buffer, leading dimension (= rows), region and transpose flag.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub buf: &'a wgpu::Buffer,
    pub ld: usize,
    pub region: Region,
    pub trans: bool,
}

impl<'a> Operand<'a> {
    pub fn of(m: &'a GpuMat, region: Region, trans: bool) -> Self {
        Operand {
            buf: &m.buf,
            ld: m.rows,
            region,
            trans,
        }
    }
}

#[track_caller]
pub(crate) fn check_region(what: &str, m: &GpuMat, r: Region) {
    assert!(
        r.row0 + r.rows <= m.rows && r.col0 + r.cols <= m.cols,
        "{what}: region {r:?} outside a {} × {} matrix",
        m.rows,
        m.cols
    );
}

/// Chunk length for a dimension bounded by the given per-operand column capacities; rounded
/// down to a multiple of the tile when larger than one tile.
fn chunk(len: usize, caps: &[usize]) -> usize {
    let mut c = caps
        .iter()
        .copied()
        .min()
        .unwrap_or(usize::MAX)
        .min(len.max(1));
    if c > TILE && c < len {
        c -= c % TILE;
    }
    c.max(1)
}

/// Record `C = α·op(A)·op(B) + β·C` (optionally only on/below the diagonal of C's region).
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_gemm(
    be: &GpuBackend,
    enc: &mut wgpu::CommandEncoder,
    c: Operand<'_>,
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    lower: bool,
) -> Result<()> {
    let ra = if a.trans { a.region.t() } else { a.region };
    let rb = if b.trans { b.region.t() } else { b.region };
    let (m, n) = (c.region.rows, c.region.cols);
    let k = ra.cols;
    assert!(
        ra.rows == m && rb.cols == n && rb.rows == k,
        "gemm: op(A) {}×{}, op(B) {}×{}, C {}×{}",
        ra.rows,
        ra.cols,
        rb.rows,
        rb.cols,
        m,
        n
    );
    if m == 0 || n == 0 {
        return Ok(());
    }
    let op = "gemm";
    let cap_a = be.panel_cols(op, a.ld)?;
    let cap_b = be.panel_cols(op, b.ld)?;
    let cap_c = be.panel_cols(op, c.ld)?;
    let mc = chunk(m, &[if a.trans { cap_a } else { usize::MAX }]);
    let nc = chunk(n, &[cap_c, if b.trans { usize::MAX } else { cap_b }]);
    let kc = {
        let mut caps = Vec::new();
        if !a.trans {
            caps.push(cap_a);
        }
        if b.trans {
            caps.push(cap_b);
        }
        chunk(k, &caps)
    };
    let key = PipelineKey::new(Shader::Gemm, "gemm", 2, 1)
        .with("TRANS_A", a.trans as u32)
        .with("TRANS_B", b.trans as u32);
    let mut m0 = 0;
    while m0 < m {
        let mm = mc.min(m - m0);
        let mut n0 = 0;
        while n0 < n {
            let nn = nc.min(n - n0);
            if lower && m0 + mm <= n0 {
                n0 += nn;
                continue; // wholly above the diagonal
            }
            let mut k0 = 0;
            loop {
                let kk = kc.min(k - k0);
                // stored (row0, col0, cols) of each operand's piece
                let (a_r0, a_c0, a_nc) = if a.trans {
                    (a.region.row0 + k0, a.region.col0 + m0, mm)
                } else {
                    (a.region.row0 + m0, a.region.col0 + k0, kk)
                };
                let (b_r0, b_c0, b_nc) = if b.trans {
                    (b.region.row0 + n0, b.region.col0 + k0, kk)
                } else {
                    (b.region.row0 + k0, b.region.col0 + n0, nn)
                };
                let (c_r0, c_c0) = (c.region.row0 + m0, c.region.col0 + n0);
                let va = be.view(a.buf, a.ld, a_c0, a_c0 + a_nc);
                let vb = be.view(b.buf, b.ld, b_c0, b_c0 + b_nc);
                let vc = be.view(c.buf, c.ld, c_c0, c_c0 + nn);
                let p = GemmParams {
                    m: mm as u32,
                    n: nn as u32,
                    k: kk as u32,
                    a_off: va.elem_off + a_r0 as u32,
                    lda: a.ld as u32,
                    b_off: vb.elem_off + b_r0 as u32,
                    ldb: b.ld as u32,
                    c_off: vc.elem_off + c_r0 as u32,
                    ldc: c.ld as u32,
                    alpha,
                    beta: if k0 == 0 { beta } else { 1.0 },
                    lower: lower as u32,
                    m0: m0 as u32,
                    n0: n0 as u32,
                    ..Default::default()
                };
                be.record(
                    enc,
                    Dispatch {
                        key: key.clone(),
                        reads: vec![va.bind, vb.bind],
                        writes: vec![vc.bind],
                        params: bytemuck::bytes_of(&p),
                        groups: [be.groups(op, mm, TILE)?, be.groups(op, nn, TILE)?, 1],
                    },
                )?;
                k0 += kk;
                if k0 >= k {
                    break;
                }
            }
            n0 += nn;
        }
        m0 += mm;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    be: &GpuBackend,
    c: &mut GpuMat,
    rc: Region,
    alpha: f32,
    a: &GpuMat,
    ra: Region,
    ta: bool,
    b: &GpuMat,
    rb: Region,
    tb: bool,
    beta: f32,
) -> Result<()> {
    check_region("gemm C", c, rc);
    check_region("gemm A", a, ra);
    check_region("gemm B", b, rb);
    be.op("gemm", |enc| {
        record_gemm(
            be,
            enc,
            Operand::of(c, rc, false),
            alpha,
            Operand::of(a, ra, ta),
            Operand::of(b, rb, tb),
            beta,
            false,
        )
    })
}

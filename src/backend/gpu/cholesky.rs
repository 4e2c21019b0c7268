//! cholesky family launcher (`shaders/cholesky.wgsl` + lower-mode gemm): `U` upper with
//! `a⁻¹ = UᵀU`, and a `1 × 1` status, entirely on the device.
//!
//! Reversal trick (trait doc): with `J` the index reversal, `J a J = L Lᵀ` gives
//! `a⁻¹ = (J L⁻¹ J)ᵀ (J L⁻¹ J)`, so only a lower Cholesky and a lower triangular inverse are
//! needed. Both are blocked by NB = 32 columns: the diagonal block is factored (and inverted)
//! by one workgroup in workgroup memory, everything else is panel TRSM and GEMM work.
//! Status: 0, or `j + 1` for the first column `j` of `a` (in factorisation order) whose pivot
//! was not positive and finite — the same convention as the CPU twin.

use super::gemm::{record_gemm, Operand};
use super::pipeline::PipelineKey;
use super::shaders::Shader;
use super::{gpu_params, Dispatch, GpuBackend, GpuMat, ParamLayout};
use crate::backend::Region;
use crate::{Error, Result};

gpu_params!(ReverseParams {
    d: u32,
    j0: u32,
    ncols: u32,
    dst_off: u32,
    src_c0: u32,
    src_off: u32,
    zero_lower: u32,
    pad0: u32,
});

gpu_params!(BlockParams {
    d: u32,
    kb: u32,
    nbk: u32,
    a_off: u32,
    dinv_off: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
});

gpu_params!(TrinvParams {
    d: u32,
    ib: u32,
    nbi: u32,
    j0: u32,
    ncols: u32,
    x_off: u32,
    t_off: u32,
    dinv_off: u32,
});

pub(crate) fn layouts() -> Vec<(Shader, ParamLayout)> {
    vec![
        (Shader::Cholesky, ReverseParams::LAYOUT),
        (Shader::Cholesky, BlockParams::LAYOUT),
        (Shader::Cholesky, TrinvParams::LAYOUT),
    ]
}

/// Block size (must equal `NB` in cholesky.wgsl).
const NB: usize = 32;

/// Record `dst = J src J` (optionally zeroing dst's strict lower triangle), panel by panel.
fn record_reverse(
    be: &GpuBackend,
    enc: &mut wgpu::CommandEncoder,
    dst: &GpuMat,
    src: &GpuMat,
    zero_lower: bool,
) -> Result<()> {
    let op = "inverse_cholesky";
    let d = dst.rows;
    let cap = be.panel_cols(op, d)?;
    let key = PipelineKey::new(Shader::Cholesky, "reverse", 1, 1);
    let mut j0 = 0;
    while j0 < d {
        let n = cap.min(d - j0);
        let vd = be.view(&dst.buf, d, j0, j0 + n);
        let src_c0 = d - j0 - n;
        let vs = be.view(&src.buf, d, src_c0, d - j0);
        let p = ReverseParams {
            d: d as u32,
            j0: j0 as u32,
            ncols: n as u32,
            dst_off: vd.elem_off,
            src_c0: src_c0 as u32,
            src_off: vs.elem_off,
            zero_lower: zero_lower as u32,
            pad0: 0,
        };
        be.record(
            enc,
            Dispatch {
                key: key.clone(),
                reads: vec![vs.bind],
                writes: vec![vd.bind],
                params: bytemuck::bytes_of(&p),
                groups: [be.groups(op, d, 16)?, be.groups(op, n, 16)?, 1],
            },
        )?;
        j0 += n;
    }
    Ok(())
}

pub(crate) fn inverse_cholesky(be: &GpuBackend, a: &GpuMat) -> Result<(GpuMat, GpuMat)> {
    let d = a.rows;
    assert_eq!(d, a.cols, "inverse_cholesky: a is {}×{}", a.rows, a.cols);
    let op = "inverse_cholesky";
    let status = be.new_mat("cholesky.status", 1, 1)?;
    if d == 0 {
        return Ok((be.new_mat("cholesky.u", 0, 0)?, status));
    }
    if be.panel_cols(op, d)? < NB {
        return Err(Error::gpu(
            op,
            format!(
                "{NB} columns of {d} floats do not fit the storage binding limit of {} bytes",
                be.binding_limit
            ),
        ));
    }
    let nblk = d.div_ceil(NB);
    let bmat = be.new_mat("cholesky.b", d, d)?;
    let dinv = be.new_mat("cholesky.dinv", NB, nblk * NB)?;
    let panel = be.new_mat("cholesky.panel", d, NB)?;
    let x = be.new_mat("cholesky.x", d, d)?;
    let t = be.new_mat("cholesky.t", NB, d)?;
    be.op(op, |enc| {
        record_reverse(be, enc, &bmat, a, false)?;
        // --- blocked right-looking Cholesky of B, L in B's lower triangle ---
        for k in 0..nblk {
            let kb = k * NB;
            let nbk = NB.min(d - kb);
            let va = be.view(&bmat.buf, d, kb, kb + nbk);
            let vdinv = be.view(&dinv.buf, NB, kb, kb + NB);
            let p = BlockParams {
                d: d as u32,
                kb: kb as u32,
                nbk: nbk as u32,
                a_off: va.elem_off,
                dinv_off: vdinv.elem_off,
                ..Default::default()
            };
            be.record(
                enc,
                Dispatch {
                    key: PipelineKey::new(Shader::Cholesky, "potrf_diag", 0, 3),
                    reads: vec![],
                    writes: vec![va.bind, vdinv.bind, be.whole(op, &status.buf)?],
                    params: bytemuck::bytes_of(&p),
                    groups: [1, 1, 1],
                },
            )?;
            let below = d - kb - nbk;
            if below == 0 {
                continue;
            }
            be.record(
                enc,
                Dispatch {
                    key: PipelineKey::new(Shader::Cholesky, "trsm_panel", 1, 1),
                    reads: vec![vdinv.bind],
                    writes: vec![va.bind],
                    params: bytemuck::bytes_of(&p),
                    groups: [be.groups(op, below, 64)?, 1, 1],
                },
            )?;
            // The trailing update reads L21 from a copy: B cannot be bound read-only and
            // read-write in the same dispatch.
            enc.copy_buffer_to_buffer(
                &bmat.buf,
                (kb * d * 4) as u64,
                &panel.buf,
                0,
                (nbk * d * 4) as u64,
            );
            let l21 = Region {
                row0: kb + nbk,
                col0: 0,
                rows: below,
                cols: nbk,
            };
            record_gemm(
                be,
                enc,
                Operand {
                    buf: &bmat.buf,
                    ld: d,
                    region: Region {
                        row0: kb + nbk,
                        col0: kb + nbk,
                        rows: below,
                        cols: below,
                    },
                    trans: false,
                },
                -1.0,
                Operand {
                    buf: &panel.buf,
                    ld: d,
                    region: l21,
                    trans: false,
                },
                Operand {
                    buf: &panel.buf,
                    ld: d,
                    region: l21,
                    trans: true,
                },
                1.0,
                true,
            )?;
        }
        // --- X = L⁻¹, block row by block row ---
        let cap = be.panel_cols(op, d)?;
        for i in 0..nblk {
            let ib = i * NB;
            let nbi = NB.min(d - ib);
            if ib > 0 {
                record_gemm(
                    be,
                    enc,
                    Operand {
                        buf: &t.buf,
                        ld: NB,
                        region: Region::all(nbi, ib),
                        trans: false,
                    },
                    1.0,
                    Operand {
                        buf: &bmat.buf,
                        ld: d,
                        region: Region {
                            row0: ib,
                            col0: 0,
                            rows: nbi,
                            cols: ib,
                        },
                        trans: false,
                    },
                    Operand {
                        buf: &x.buf,
                        ld: d,
                        region: Region::all(ib, ib),
                        trans: false,
                    },
                    0.0,
                    false,
                )?;
            }
            let vdinv = be.view(&dinv.buf, NB, ib, ib + NB);
            let width = ib + nbi;
            let mut j0 = 0;
            while j0 < width {
                let n = cap.min(width - j0);
                let vx = be.view(&x.buf, d, j0, j0 + n);
                let vt = be.view(&t.buf, NB, j0, j0 + n);
                let p = TrinvParams {
                    d: d as u32,
                    ib: ib as u32,
                    nbi: nbi as u32,
                    j0: j0 as u32,
                    ncols: n as u32,
                    x_off: vx.elem_off,
                    t_off: vt.elem_off,
                    dinv_off: vdinv.elem_off,
                };
                be.record(
                    enc,
                    Dispatch {
                        key: PipelineKey::new(Shader::Cholesky, "trinv_apply", 2, 1),
                        reads: vec![vdinv.bind, vt.bind],
                        writes: vec![vx.bind],
                        params: bytemuck::bytes_of(&p),
                        groups: [1, be.groups(op, n, 8)?, 1],
                    },
                )?;
                j0 += n;
            }
        }
        // --- U = J X J, strict lower triangle zero (written into B, no longer needed) ---
        record_reverse(be, enc, &bmat, &x, true)
    })?;
    Ok((bmat, status))
}

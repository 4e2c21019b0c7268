//! elementwise family launcher (`shaders/elementwise.wgsl`): copy, axpy, add_diag, permute,
//! fix_dead, and the forward family's add_bias. Every kernel walks column panels that fit one binding.

use super::gemm::check_region;
use super::pipeline::PipelineKey;
use super::shaders::Shader;
use super::{gpu_params, Dispatch, GpuBackend, GpuIdx, GpuMat, ParamLayout, MAX_GROUPS_PER_DIM};
use crate::backend::Region;
use crate::Result;

gpu_params!(CopyParams {
    rows: u32,
    cols: u32,
    src_off: u32,
    lds: u32,
    dst_off: u32,
    ldd: u32,
    pad0: u32,
    pad1: u32,
});

gpu_params!(AxpyParams {
    rows: u32,
    cols: u32,
    x_off: u32,
    ldx: u32,
    y_off: u32,
    ldy: u32,
    alpha: f32,
    has_scalar: u32,
});

gpu_params!(DiagParams {
    n: u32,
    a_off: u32,
    lda: u32,
    col0: u32,
    alpha: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
});

gpu_params!(PermuteParams {
    rows: u32,
    cols: u32,
    out_c0: u32,
    out_off: u32,
    ldo: u32,
    a_c0: u32,
    a_c1: u32,
    a_off: u32,
    lda: u32,
    has_rows: u32,
    has_cols: u32,
    pad0: u32,
});

gpu_params!(DeadParams {
    rows: u32,
    n_dead: u32,
    c0: u32,
    c1: u32,
    off: u32,
    ld: u32,
    pad0: u32,
    pad1: u32,
});

gpu_params!(BiasParams {
    rows: u32,
    cols: u32,
    y_off: u32,
    pad0: u32,
});

pub(crate) fn layouts() -> Vec<(Shader, ParamLayout)> {
    vec![
        (Shader::Elementwise, CopyParams::LAYOUT),
        (Shader::Elementwise, AxpyParams::LAYOUT),
        (Shader::Elementwise, DiagParams::LAYOUT),
        (Shader::Elementwise, PermuteParams::LAYOUT),
        (Shader::Elementwise, DeadParams::LAYOUT),
        (Shader::Elementwise, BiasParams::LAYOUT),
    ]
}

/// Record `dst[rd] = src[rs]` (raw buffers; used by other launchers too).
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_copy(
    be: &GpuBackend,
    enc: &mut wgpu::CommandEncoder,
    dst: &wgpu::Buffer,
    ldd: usize,
    rd: Region,
    src: &wgpu::Buffer,
    lds: usize,
    rs: Region,
) -> Result<()> {
    assert_eq!(
        (rd.rows, rd.cols),
        (rs.rows, rs.cols),
        "copy: extents differ"
    );
    let op = "copy";
    let chunk = be.panel_cols(op, ldd)?.min(be.panel_cols(op, lds)?);
    let key = PipelineKey::new(Shader::Elementwise, "copy", 1, 1);
    let mut c = 0;
    while c < rd.cols {
        let n = chunk.min(rd.cols - c);
        let vs = be.view(src, lds, rs.col0 + c, rs.col0 + c + n);
        let vd = be.view(dst, ldd, rd.col0 + c, rd.col0 + c + n);
        let p = CopyParams {
            rows: rd.rows as u32,
            cols: n as u32,
            src_off: vs.elem_off + rs.row0 as u32,
            lds: lds as u32,
            dst_off: vd.elem_off + rd.row0 as u32,
            ldd: ldd as u32,
            ..Default::default()
        };
        be.record(
            enc,
            Dispatch {
                key: key.clone(),
                reads: vec![vs.bind],
                writes: vec![vd.bind],
                params: bytemuck::bytes_of(&p),
                groups: [be.groups(op, rd.rows, 16)?, be.groups(op, n, 16)?, 1],
            },
        )?;
        c += n;
    }
    Ok(())
}

pub(crate) fn copy(
    be: &GpuBackend,
    dst: &mut GpuMat,
    rd: Region,
    src: &GpuMat,
    rs: Region,
) -> Result<()> {
    check_region("copy dst", dst, rd);
    check_region("copy src", src, rs);
    be.op("copy", |enc| {
        record_copy(be, enc, &dst.buf, dst.rows, rd, &src.buf, src.rows, rs)
    })
}

pub(crate) fn axpy(
    be: &GpuBackend,
    y: &mut GpuMat,
    ry: Region,
    alpha: f32,
    x: &GpuMat,
    rx: Region,
    scalar: Option<&GpuMat>,
) -> Result<()> {
    check_region("axpy y", y, ry);
    check_region("axpy x", x, rx);
    assert_eq!(
        (ry.rows, ry.cols),
        (rx.rows, rx.cols),
        "axpy: extents differ"
    );
    if let Some(s) = scalar {
        assert!(s.rows * s.cols >= 1, "axpy: empty scalar");
    }
    let op = "axpy";
    be.op(op, |enc| {
        let chunk = be.panel_cols(op, y.rows)?.min(be.panel_cols(op, x.rows)?);
        let key = PipelineKey::new(Shader::Elementwise, "axpy", 2, 1);
        let s_bind = match scalar {
            Some(s) => be.view(&s.buf, 1, 0, 1).bind,
            None => be.dummy(),
        };
        let mut c = 0;
        while c < ry.cols {
            let n = chunk.min(ry.cols - c);
            let vx = be.view(&x.buf, x.rows, rx.col0 + c, rx.col0 + c + n);
            let vy = be.view(&y.buf, y.rows, ry.col0 + c, ry.col0 + c + n);
            let p = AxpyParams {
                rows: ry.rows as u32,
                cols: n as u32,
                x_off: vx.elem_off + rx.row0 as u32,
                ldx: x.rows as u32,
                y_off: vy.elem_off + ry.row0 as u32,
                ldy: y.rows as u32,
                alpha,
                has_scalar: scalar.is_some() as u32,
            };
            be.record(
                enc,
                Dispatch {
                    key: key.clone(),
                    reads: vec![vx.bind, s_bind],
                    writes: vec![vy.bind],
                    params: bytemuck::bytes_of(&p),
                    groups: [be.groups(op, ry.rows, 16)?, be.groups(op, n, 16)?, 1],
                },
            )?;
            c += n;
        }
        Ok(())
    })
}

/// Record `a[i, i] += alpha · scalar[0]` (raw buffer, square `n × n` with leading dim `n`).
pub(crate) fn record_add_diag(
    be: &GpuBackend,
    enc: &mut wgpu::CommandEncoder,
    a: &wgpu::Buffer,
    n: usize,
    alpha: f32,
    scalar: &wgpu::Buffer,
) -> Result<()> {
    let op = "add_diag";
    let chunk = be.panel_cols(op, n)?;
    let key = PipelineKey::new(Shader::Elementwise, "add_diag", 1, 1);
    let vs = be.view(scalar, 1, 0, 1);
    let mut c = 0;
    while c < n {
        let k = chunk.min(n - c);
        let va = be.view(a, n, c, c + k);
        let p = DiagParams {
            n: k as u32,
            a_off: va.elem_off,
            lda: n as u32,
            col0: c as u32,
            alpha,
            ..Default::default()
        };
        be.record(
            enc,
            Dispatch {
                key: key.clone(),
                reads: vec![vs.bind],
                writes: vec![va.bind],
                params: bytemuck::bytes_of(&p),
                groups: [be.groups(op, k, 64)?, 1, 1],
            },
        )?;
        c += k;
    }
    Ok(())
}

pub(crate) fn add_diag(be: &GpuBackend, a: &mut GpuMat, alpha: f32, scalar: &GpuMat) -> Result<()> {
    assert_eq!(a.rows, a.cols, "add_diag: matrix is {}×{}", a.rows, a.cols);
    assert!(scalar.rows * scalar.cols >= 1, "add_diag: empty scalar");
    be.op("add_diag", |enc| {
        record_add_diag(be, enc, &a.buf, a.rows, alpha, &scalar.buf)
    })
}

pub(crate) fn permute(
    be: &GpuBackend,
    a: &GpuMat,
    rows: Option<&GpuIdx>,
    cols: Option<&GpuIdx>,
) -> Result<GpuMat> {
    let out_rows = rows.map_or(a.rows, |r| r.len());
    let out_cols = cols.map_or(a.cols, |c| c.len());
    if let Some(r) = rows {
        assert!(
            r.host.iter().all(|&i| (i as usize) < a.rows),
            "permute: row index out of range"
        );
    }
    if let Some(c) = cols {
        assert!(
            c.host.iter().all(|&i| (i as usize) < a.cols),
            "permute: column index out of range"
        );
    }
    let out = be.new_mat("permute.out", out_rows, out_cols)?;
    let op = "permute";
    be.op(op, |enc| {
        let cap_out = be.panel_cols(op, out_rows)?;
        let cap_a = be.panel_cols(op, a.rows)?;
        let key = PipelineKey::new(Shader::Elementwise, "permute", 3, 1);
        let r_bind = match rows {
            Some(r) => be.whole(op, &r.buf)?,
            None => be.dummy(),
        };
        let c_bind = match cols {
            Some(c) => be.whole(op, &c.buf)?,
            None => be.dummy(),
        };
        let mut j0 = 0;
        while j0 < out_cols {
            let nj = cap_out.min(out_cols - j0);
            // the source columns this output panel reads
            let (lo, hi) = match cols {
                Some(c) => {
                    let s = &c.host[j0..j0 + nj];
                    (
                        *s.iter().min().unwrap() as usize,
                        *s.iter().max().unwrap() as usize + 1,
                    )
                }
                None => (j0, j0 + nj),
            };
            let vo = be.view(&out.buf, out_rows, j0, j0 + nj);
            let mut s0 = lo;
            while s0 < hi {
                let s1 = (s0 + cap_a).min(hi);
                let va = be.view(&a.buf, a.rows, s0, s1);
                let p = PermuteParams {
                    rows: out_rows as u32,
                    cols: nj as u32,
                    out_c0: j0 as u32,
                    out_off: vo.elem_off,
                    ldo: out_rows as u32,
                    a_c0: s0 as u32,
                    a_c1: s1 as u32,
                    a_off: va.elem_off,
                    lda: a.rows as u32,
                    has_rows: rows.is_some() as u32,
                    has_cols: cols.is_some() as u32,
                    pad0: 0,
                };
                be.record(
                    enc,
                    Dispatch {
                        key: key.clone(),
                        reads: vec![va.bind, r_bind, c_bind],
                        writes: vec![vo.bind],
                        params: bytemuck::bytes_of(&p),
                        groups: [be.groups(op, out_rows, 16)?, be.groups(op, nj, 16)?, 1],
                    },
                )?;
                s0 = s1;
            }
            j0 += nj;
        }
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn fix_dead(
    be: &GpuBackend,
    h: &mut GpuMat,
    w: &mut GpuMat,
    dead: &GpuIdx,
) -> Result<()> {
    assert_eq!(h.rows, h.cols, "fix_dead: h is {}×{}", h.rows, h.cols);
    assert_eq!(
        w.cols, h.cols,
        "fix_dead: w has {} columns, h {}",
        w.cols, h.cols
    );
    assert!(
        dead.host.iter().all(|&j| (j as usize) < h.cols),
        "fix_dead: dead column out of range"
    );
    if dead.is_empty() {
        return Ok(());
    }
    let op = "fix_dead";
    be.op(op, |enc| {
        let vd = be.whole(op, &dead.buf)?;
        for (m, entry, rows) in [(&*h, "dead_diag", 1usize), (&*w, "dead_cols", w.rows)] {
            let cap = be.panel_cols(op, m.rows)?;
            let key = PipelineKey::new(Shader::Elementwise, entry, 1, 1);
            let mut c0 = 0;
            while c0 < m.cols {
                let c1 = (c0 + cap).min(m.cols);
                if dead.host.iter().any(|&j| (c0..c1).contains(&(j as usize))) {
                    let v = be.view(&m.buf, m.rows, c0, c1);
                    let p = DeadParams {
                        rows: rows as u32,
                        n_dead: dead.len() as u32,
                        c0: c0 as u32,
                        c1: c1 as u32,
                        off: v.elem_off,
                        ld: m.rows as u32,
                        ..Default::default()
                    };
                    let groups = if entry == "dead_diag" {
                        [be.groups(op, dead.len(), 64)?, 1, 1]
                    } else {
                        [be.groups(op, rows, 64)?, be.groups(op, dead.len(), 4)?, 1]
                    };
                    be.record(
                        enc,
                        Dispatch {
                            key: key.clone(),
                            reads: vec![vd],
                            writes: vec![v.bind],
                            params: bytemuck::bytes_of(&p),
                            groups,
                        },
                    )?;
                }
                c0 = c1;
            }
        }
        Ok(())
    })
}

/// `y[:, c] += b` for every column ([`Forward::add_bias`](crate::backend::Forward::add_bias)),
/// over column panels of `y`; `b` is one binding.
pub(crate) fn add_bias(be: &GpuBackend, y: &mut GpuMat, b: &GpuMat) -> Result<()> {
    assert_eq!((b.rows, b.cols), (y.rows, 1), "add_bias: bias shape");
    if y.rows == 0 || y.cols == 0 {
        return Ok(());
    }
    let op = "add_bias";
    be.op(op, |enc| {
        // workgroups of 64 rows × 4 columns
        let chunk = be.panel_cols(op, y.rows)?.min(MAX_GROUPS_PER_DIM * 4);
        let vb = be.whole(op, &b.buf)?;
        let key = PipelineKey::new(Shader::Elementwise, "add_bias", 1, 1);
        let mut c = 0;
        while c < y.cols {
            let n = chunk.min(y.cols - c);
            let vy = be.view(&y.buf, y.rows, c, c + n);
            let p = BiasParams {
                rows: y.rows as u32,
                cols: n as u32,
                y_off: vy.elem_off,
                pad0: 0,
            };
            be.record(
                enc,
                Dispatch {
                    key: key.clone(),
                    reads: vec![vb],
                    writes: vec![vy.bind],
                    params: bytemuck::bytes_of(&p),
                    groups: [be.groups(op, y.rows, 64)?, be.groups(op, n, 4)?, 1],
                },
            )?;
            c += n;
        }
        Ok(())
    })
}

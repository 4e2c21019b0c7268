//! sweep family launcher (`shaders/sweep.wgsl`): the GPTQ/Qronos column sweep, static group
//! parameters, and the grid probe used by the bit-exact grid test.

use super::gemm::check_region;
use super::pipeline::PipelineKey;
use super::shaders::Shader;
use super::{gpu_params, Dispatch, GpuBackend, GpuIdx, GpuMat, ParamLayout};
use crate::backend::SweepSpec;
use crate::grid::{Clip, Grid};
use crate::{Error, Result};

gpu_params!(SweepParams {
    m: u32,
    d: u32,
    c0: u32,
    c1: u32,
    group_size: u32,
    dynamic_groups: u32,
    propagate: u32,
    bits: u32,
    sym: u32,
    w_off: u32,
    q_off: u32,
    codes_off: u32,
    u_off: u32,
    ldu: u32,
    g0: u32,
    s_off: u32,
    z_off: u32,
    err_off: u32,
    lde: u32,
    scale_dtype: u32,
});

gpu_params!(GroupParamsParams {
    m: u32,
    d: u32,
    group_size: u32,
    bits: u32,
    sym: u32,
    g0: u32,
    ngroups: u32,
    w_off: u32,
    s_off: u32,
    z_off: u32,
    mse_steps: u32,
    weighted: u32,
    cw_off: u32,
    scale_dtype: u32,
    pad1: u32,
    pad2: u32,
});

gpu_params!(GroupRangeParams {
    m: u32,
    ncols: u32,
    w_off: u32,
    first: u32,
    last: u32,
    bits: u32,
    sym: u32,
    s_off: u32,
    z_off: u32,
    scale_dtype: u32,
    pad1: u32,
    pad2: u32,
});

gpu_params!(ProbeParams {
    n: u32,
    bits: u32,
    sym: u32,
    scale_dtype: u32,
});

pub(crate) fn layouts() -> Vec<(Shader, ParamLayout)> {
    vec![
        (Shader::Sweep, SweepParams::LAYOUT),
        (Shader::Sweep, GroupParamsParams::LAYOUT),
        (Shader::Sweep, GroupRangeParams::LAYOUT),
        (Shader::Sweep, ProbeParams::LAYOUT),
    ]
}

const WG: usize = 64;

fn too_wide(op: &str, what: &str) -> Error {
    Error::gpu(
        op,
        format!("{what} does not fit one storage binding; use narrower sweep blocks"),
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn sweep(
    be: &GpuBackend,
    spec: &SweepSpec,
    w: &mut GpuMat,
    u: &GpuMat,
    q: &mut GpuMat,
    codes: &mut GpuMat,
    scales: &mut GpuMat,
    zeros: &mut GpuMat,
    err: &mut GpuMat,
    group_of: &GpuIdx,
    c0: usize,
    c1: usize,
) -> Result<()> {
    let (m, d) = (w.rows, w.cols);
    let gs = spec.group_size;
    assert!(gs >= 1, "sweep: group_size 0");
    assert!(c0 <= c1 && c1 <= d, "sweep: columns {c0}..{c1} of {d}");
    // U and err are only read / written when propagating (RTN passes placeholders).
    if spec.propagate {
        assert_eq!(
            (u.rows, u.cols),
            (d, d),
            "sweep: U is {}×{}",
            u.rows,
            u.cols
        );
        assert_eq!(err.rows, m, "sweep: err rows");
        assert!(err.cols >= c1 - c0, "sweep: err has {} columns", err.cols);
    }
    assert_eq!((q.rows, q.cols), (m, d), "sweep: Q shape");
    assert_eq!((codes.rows, codes.cols), (m, d), "sweep: codes shape");
    let ngroups = d.div_ceil(gs);
    assert_eq!(scales.rows, m, "sweep: scales rows");
    assert_eq!(zeros.rows, m, "sweep: zeros rows");
    assert!(
        scales.cols >= ngroups && zeros.cols >= ngroups,
        "sweep: too few groups"
    );
    assert_eq!(
        group_of.len(),
        d,
        "sweep: group_of has {} entries",
        group_of.len()
    );
    if c0 == c1 || m == 0 {
        return Ok(());
    }
    let op = "sweep";
    // Which groups this block touches, and how far W must be bound: a group starting at c0
    // is handled by `group_range` (any width, in panels); one starting later inside the block
    // is computed by the sweep kernel itself and must fit the binding with the block.
    let (g_lo, g_hi, w_end) = if spec.dynamic {
        let last_start = (c1 - 1) / gs * gs;
        let w_end = if last_start > c0 {
            c1.max((last_start + gs).min(d))
        } else {
            c1
        };
        (c0 / gs, (c1 - 1) / gs + 1, w_end)
    } else {
        let s = &group_of.host[c0..c1];
        let lo = *s.iter().min().unwrap() as usize;
        let hi = *s.iter().max().unwrap() as usize + 1;
        assert!(hi <= scales.cols, "sweep: group_of points past the scales");
        (lo, hi, c1)
    };
    let cap_m = be.panel_cols(op, m)?;
    if w_end - c0 > cap_m || g_hi - g_lo > cap_m {
        return Err(too_wide(
            op,
            &format!("columns {c0}..{w_end} of a {m}-row matrix"),
        ));
    }
    if spec.propagate && c1 - c0 > be.panel_cols(op, d)? {
        return Err(too_wide(op, &format!("U columns {c0}..{c1}")));
    }
    let mnmx = if spec.dynamic && c0 % gs == 0 {
        Some(be.new_mat("sweep.minmax", m, 2)?)
    } else {
        None
    };
    be.op(op, |enc| {
        if let Some(mnmx) = &mnmx {
            record_group_range(be, enc, spec.grid, gs, w, scales, zeros, mnmx, c0)?;
        }
        let vw = be.view(&w.buf, m, c0, w_end);
        let vq = be.view(&q.buf, m, c0, c1);
        let vc = be.view(&codes.buf, m, c0, c1);
        let vu = if spec.propagate {
            be.view(&u.buf, d, c0, c1)
        } else {
            be.view(&u.buf, u.rows, 0, u.cols.min(1))
        };
        let vs = be.view(&scales.buf, m, g_lo, g_hi);
        let vz = be.view(&zeros.buf, m, g_lo, g_hi);
        let ve = if spec.propagate {
            be.view(&err.buf, m, 0, c1 - c0)
        } else {
            be.view(&err.buf, err.rows, 0, err.cols.min(1))
        };
        let vg = be.whole(op, &group_of.buf)?;
        let p = SweepParams {
            m: m as u32,
            d: d as u32,
            c0: c0 as u32,
            c1: c1 as u32,
            group_size: gs as u32,
            dynamic_groups: spec.dynamic as u32,
            propagate: spec.propagate as u32,
            bits: spec.grid.bits,
            sym: spec.grid.sym as u32,
            w_off: vw.elem_off,
            q_off: vq.elem_off,
            codes_off: vc.elem_off,
            u_off: vu.elem_off,
            ldu: d as u32,
            g0: g_lo as u32,
            s_off: vs.elem_off,
            z_off: vz.elem_off,
            err_off: ve.elem_off,
            lde: m as u32,
            scale_dtype: spec.grid.scale_dtype.code(),
        };
        be.record(
            enc,
            Dispatch {
                key: PipelineKey::new(Shader::Sweep, "sweep", 2, 6),
                reads: vec![vu.bind, vg],
                writes: vec![vw.bind, vq.bind, vc.bind, vs.bind, vz.bind, ve.bind],
                params: bytemuck::bytes_of(&p),
                groups: [be.groups(op, m, WG)?, 1, 1],
            },
        )
    })
}

/// Record the dynamic parameters of the group starting at column `c0` from the current W,
/// over column panels (the group may be wider than one binding: per-channel on wide layers).
#[allow(clippy::too_many_arguments)]
fn record_group_range(
    be: &GpuBackend,
    enc: &mut wgpu::CommandEncoder,
    grid: Grid,
    group_size: usize,
    w: &GpuMat,
    scales: &GpuMat,
    zeros: &GpuMat,
    mnmx: &GpuMat,
    c0: usize,
) -> Result<()> {
    let op = "group_range";
    let m = w.rows;
    let end = (c0 + group_size).min(w.cols);
    let grp = c0 / group_size;
    let cap = be.panel_cols(op, m)?;
    let vs = be.view(&scales.buf, m, grp, grp + 1);
    let vz = be.view(&zeros.buf, m, grp, grp + 1);
    let vm = be.view(&mnmx.buf, m, 0, 2);
    let key = PipelineKey::new(Shader::Sweep, "group_range", 1, 3);
    let mut k0 = c0;
    while k0 < end {
        let k1 = (k0 + cap).min(end);
        let vw = be.view(&w.buf, m, k0, k1);
        let p = GroupRangeParams {
            m: m as u32,
            ncols: (k1 - k0) as u32,
            w_off: vw.elem_off,
            first: (k0 == c0) as u32,
            last: (k1 == end) as u32,
            bits: grid.bits,
            sym: grid.sym as u32,
            scale_dtype: grid.scale_dtype.code(),
            s_off: vs.elem_off,
            z_off: vz.elem_off,
            ..Default::default()
        };
        be.record(
            enc,
            Dispatch {
                key: key.clone(),
                reads: vec![vw.bind],
                writes: vec![vm.bind, vs.bind, vz.bind],
                params: bytemuck::bytes_of(&p),
                groups: [be.groups(op, m, WG)?, 1, 1],
            },
        )?;
        k0 = k1;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn group_params(
    be: &GpuBackend,
    grid: Grid,
    clip: Clip,
    col_weights: Option<&[f32]>,
    w: &GpuMat,
    group_size: usize,
    scales: &mut GpuMat,
    zeros: &mut GpuMat,
) -> Result<()> {
    let (m, d) = (w.rows, w.cols);
    assert!(group_size >= 1, "group_params: group_size 0");
    let ngroups = d.div_ceil(group_size);
    check_region(
        "group_params scales",
        scales,
        crate::backend::Region::all(m, ngroups),
    );
    check_region(
        "group_params zeros",
        zeros,
        crate::backend::Region::all(m, ngroups),
    );
    assert_eq!(scales.rows, m, "group_params: scales rows");
    assert_eq!(zeros.rows, m, "group_params: zeros rows");
    if m == 0 || d == 0 {
        return Ok(());
    }
    let op = "group_params";
    let cap = be.panel_cols(op, m)?;
    if group_size.min(d) > cap {
        // Groups wider than one binding (per-channel on a wide layer): one group at a time,
        // its columns in panels.
        if clip != Clip::MinMax {
            return Err(Error::config(
                "--clip",
                format!(
                    "{}: a group of {} columns of a {m}-row layer is wider than one GPU \
                     binding holds ({cap} columns); use --clip minmax or a group size ≤ {cap}",
                    clip.name(),
                    group_size.min(d)
                ),
            ));
        }
        let mnmx = be.new_mat("group_params.minmax", m, 2)?;
        return be.op(op, |enc| {
            for g in 0..ngroups {
                record_group_range(
                    be,
                    enc,
                    grid,
                    group_size,
                    w,
                    scales,
                    zeros,
                    &mnmx,
                    g * group_size,
                )?;
            }
            Ok(())
        });
    }
    let per_panel = cap / group_size.min(d);
    // column weights of the MSE search (a 1 × d matrix; a dummy when there are none)
    let cw = match col_weights {
        Some(c) => {
            assert_eq!(c.len(), d, "group_params: column weights");
            crate::backend::Backend::upload(be, 1, d, c)?
        }
        None => be.new_mat("group_params.no_weights", 1, 1)?,
    };
    be.op(op, |enc| {
        let key = PipelineKey::new(Shader::Sweep, "group_params", 2, 2);
        let mut g0 = 0;
        while g0 < ngroups {
            let ng = per_panel.min(ngroups - g0);
            let c0 = g0 * group_size;
            let c1 = ((g0 + ng) * group_size).min(d);
            let vw = be.view(&w.buf, m, c0, c1);
            let vs = be.view(&scales.buf, m, g0, g0 + ng);
            let vz = be.view(&zeros.buf, m, g0, g0 + ng);
            let vc = match col_weights {
                Some(_) => be.view(&cw.buf, 1, c0, c1),
                None => be.view(&cw.buf, 1, 0, 1),
            };
            let p = GroupParamsParams {
                m: m as u32,
                d: d as u32,
                group_size: group_size as u32,
                bits: grid.bits,
                sym: grid.sym as u32,
                g0: g0 as u32,
                ngroups: ng as u32,
                w_off: vw.elem_off,
                s_off: vs.elem_off,
                z_off: vz.elem_off,
                mse_steps: match clip {
                    Clip::MinMax => 0,
                    _ => crate::grid::MSE_STEPS,
                },
                weighted: col_weights.is_some() as u32,
                cw_off: vc.elem_off,
                scale_dtype: grid.scale_dtype.code(),
                ..Default::default()
            };
            be.record(
                enc,
                Dispatch {
                    key: key.clone(),
                    reads: vec![vw.bind, vc.bind],
                    writes: vec![vs.bind, vz.bind],
                    params: bytemuck::bytes_of(&p),
                    groups: [be.groups(op, m, WG)?, be.groups(op, ng, 1)?, 1],
                },
            )?;
            g0 += ng;
        }
        Ok(())
    })
}

impl GpuBackend {
    /// Runs `shaders/common.wgsl`'s grid on `(w, min, max)` cases: for each, the WGSL
    /// `(scale, zero, code, dequant)` of `w` on the grid of the range `[min, max]`. For the
    /// bit-exact test against `src/grid.rs`.
    #[doc(hidden)]
    pub fn grid_probe(&self, grid: Grid, cases: &[[f32; 3]]) -> Result<Vec<[f32; 4]>> {
        let n = cases.len();
        let input: Vec<f32> = cases.iter().flatten().copied().collect();
        let inp = self.init_buffer("grid_probe.in", bytemuck::cast_slice(&input))?;
        let out = self.new_mat("grid_probe.out", 4, n)?;
        let op = "grid_probe";
        self.op(op, |enc| {
            let p = ProbeParams {
                n: n as u32,
                bits: grid.bits,
                sym: grid.sym as u32,
                scale_dtype: grid.scale_dtype.code(),
            };
            self.record(
                enc,
                Dispatch {
                    key: PipelineKey::new(Shader::Sweep, "grid_probe", 1, 1),
                    reads: vec![self.whole(op, &inp)?],
                    writes: vec![self.whole(op, &out.buf)?],
                    params: bytemuck::bytes_of(&p),
                    groups: [self.groups(op, n, WG)?, 1, 1],
                },
            )
        })?;
        let v = crate::backend::Backend::download(self, &out)?;
        Ok(v.chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect())
    }
}

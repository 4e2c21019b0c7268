//! damping family launcher (`shaders/damping.wgsl`): λ for a [`DampRule`], on the device,
//! returned as a `1 × 1` matrix (never read back here).

use super::pipeline::PipelineKey;
use super::shaders::Shader;
use super::{gpu_params, Dispatch, GpuBackend, GpuMat, ParamLayout};
use crate::backend::{power_start, DampRule};
use crate::Result;

gpu_params!(DiagSumParams {
    n: u32,
    h_off: u32,
    ldh: u32,
    col0: u32,
    first: u32,
    last: u32,
    d: u32,
    pad0: u32,
    factor: f32,
    pad1: u32,
    pad2: u32,
    pad3: u32,
});

gpu_params!(VecParams {
    n: u32,
    alpha: f32,
    pad0: u32,
    pad1: u32,
});

gpu_params!(MatvecParams {
    rows: u32,
    cols: u32,
    h_off: u32,
    ldh: u32,
    col0: u32,
    first: u32,
    pad0: u32,
    pad1: u32,
});

pub(crate) fn layouts() -> Vec<(Shader, ParamLayout)> {
    vec![
        (Shader::Damping, DiagSumParams::LAYOUT),
        (Shader::Damping, VecParams::LAYOUT),
        (Shader::Damping, MatvecParams::LAYOUT),
    ]
}

pub(crate) fn damping(be: &GpuBackend, h: &GpuMat, rule: DampRule) -> Result<GpuMat> {
    let d = h.rows;
    assert_eq!(d, h.cols, "damping: H is {}×{}", h.rows, h.cols);
    assert!(d > 0, "damping: empty H");
    let lam = be.new_mat("damping.lambda", 1, 1)?;
    let op = "damping";
    let cap = be.panel_cols(op, d)?;
    match rule {
        DampRule::MeanDiag(f) => be.op(op, |enc| {
            let key = PipelineKey::new(Shader::Damping, "diag_sum", 1, 1);
            let vl = be.whole(op, &lam.buf)?;
            let mut c = 0;
            while c < d {
                let n = cap.min(d - c);
                let vh = be.view(&h.buf, d, c, c + n);
                let p = DiagSumParams {
                    n: n as u32,
                    h_off: vh.elem_off,
                    ldh: d as u32,
                    col0: c as u32,
                    first: (c == 0) as u32,
                    last: (c + n == d) as u32,
                    d: d as u32,
                    factor: f,
                    ..Default::default()
                };
                be.record(
                    enc,
                    Dispatch {
                        key: key.clone(),
                        reads: vec![vh.bind],
                        writes: vec![vl],
                        params: bytemuck::bytes_of(&p),
                        groups: [1, 1, 1],
                    },
                )?;
                c += n;
            }
            Ok(())
        })?,
        DampRule::LambdaMax { alpha, iters } => {
            let v0 = be.init_buffer("damping.v", bytemuck::cast_slice(&power_start(d)))?;
            let v1 = be.new_mat("damping.y", d, 1)?;
            let st = be.new_mat("damping.state", 4, 1)?;
            be.op(op, |enc| {
                let vp = VecParams {
                    n: d as u32,
                    alpha,
                    ..Default::default()
                };
                let normalize = |enc: &mut wgpu::CommandEncoder, v: &wgpu::Buffer| {
                    be.record(
                        enc,
                        Dispatch {
                            key: PipelineKey::new(Shader::Damping, "normalize", 0, 2),
                            reads: vec![],
                            writes: vec![be.whole(op, v)?, be.whole(op, &st.buf)?],
                            params: bytemuck::bytes_of(&vp),
                            groups: [1, 1, 1],
                        },
                    )
                };
                let matvec =
                    |enc: &mut wgpu::CommandEncoder, v: &wgpu::Buffer, y: &wgpu::Buffer| {
                        let mut c = 0;
                        while c < d {
                            let n = cap.min(d - c);
                            let vh = be.view(&h.buf, d, c, c + n);
                            let p = MatvecParams {
                                rows: d as u32,
                                cols: n as u32,
                                h_off: vh.elem_off,
                                ldh: d as u32,
                                col0: c as u32,
                                first: (c == 0) as u32,
                                ..Default::default()
                            };
                            be.record(
                                enc,
                                Dispatch {
                                    key: PipelineKey::new(Shader::Damping, "matvec", 2, 1),
                                    reads: vec![vh.bind, be.whole(op, v)?],
                                    writes: vec![be.whole(op, y)?],
                                    params: bytemuck::bytes_of(&p),
                                    groups: [be.groups(op, d, 64)?, 1, 1],
                                },
                            )?;
                            c += n;
                        }
                        Ok(())
                    };
                // v ← start / ‖start‖; then iters × (y ← H v; v ← y / ‖y‖)
                normalize(enc, &v0)?;
                let (mut v, mut y) = (&v0, &v1.buf);
                for _ in 0..iters {
                    matvec(enc, v, y)?;
                    normalize(enc, y)?;
                    std::mem::swap(&mut v, &mut y);
                }
                matvec(enc, v, y)?;
                be.record(
                    enc,
                    Dispatch {
                        key: PipelineKey::new(Shader::Damping, "rayleigh", 3, 1),
                        reads: vec![be.whole(op, v)?, be.whole(op, y)?, be.whole(op, &st.buf)?],
                        writes: vec![be.whole(op, &lam.buf)?],
                        params: bytemuck::bytes_of(&vp),
                        groups: [1, 1, 1],
                    },
                )
            })?
        }
    }
    Ok(lam)
}

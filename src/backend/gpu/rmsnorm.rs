//! rmsnorm family launcher (`shaders/rmsnorm.wgsl`):
//! [`Forward::rmsnorm`](crate::backend::Forward::rmsnorm), one workgroup per (segment,
//! column), over column panels of `x` and the output (same shape, so the same panels).

use super::pipeline::PipelineKey;
use super::shaders::Shader;
use super::{gpu_params, Dispatch, GpuBackend, GpuMat, ParamLayout, MAX_GROUPS_PER_DIM};
use crate::Result;

gpu_params!(RmsParams {
    rows: u32,
    cols: u32,
    dim: u32,
    x_off: u32,
    o_off: u32,
    eps: f32,
    pad0: u32,
    pad1: u32,
});

pub(crate) fn layouts() -> Vec<(Shader, ParamLayout)> {
    vec![(Shader::Rmsnorm, RmsParams::LAYOUT)]
}

pub(crate) fn rmsnorm(
    be: &GpuBackend,
    x: &GpuMat,
    w: &GpuMat,
    dim: usize,
    eps: f32,
) -> Result<GpuMat> {
    let (rows, cols) = (x.rows, x.cols);
    assert!(
        dim > 0 && rows % dim == 0,
        "rmsnorm: {rows} rows, segments of {dim}"
    );
    assert_eq!((w.rows, w.cols), (dim, 1), "rmsnorm: weight shape");
    let out = be.new_mat("rmsnorm.out", rows, cols)?;
    if rows == 0 || cols == 0 {
        return Ok(out);
    }
    let op = "rmsnorm";
    be.op(op, |enc| {
        let chunk = be.panel_cols(op, rows)?.min(MAX_GROUPS_PER_DIM);
        let vw = be.whole(op, &w.buf)?;
        let key = PipelineKey::new(Shader::Rmsnorm, "rmsnorm", 2, 1);
        let segs = be.groups(op, rows / dim, 1)?;
        let mut c = 0;
        while c < cols {
            let n = chunk.min(cols - c);
            let vx = be.view(&x.buf, rows, c, c + n);
            let vo = be.view(&out.buf, rows, c, c + n);
            let p = RmsParams {
                rows: rows as u32,
                cols: n as u32,
                dim: dim as u32,
                x_off: vx.elem_off,
                o_off: vo.elem_off,
                eps,
                ..Default::default()
            };
            be.record(
                enc,
                Dispatch {
                    key: key.clone(),
                    reads: vec![vx.bind, vw],
                    writes: vec![vo.bind],
                    params: bytemuck::bytes_of(&p),
                    groups: [segs, n as u32, 1],
                },
            )?;
            c += n;
        }
        Ok(())
    })?;
    Ok(out)
}

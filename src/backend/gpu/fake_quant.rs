//! fake_quant family launcher (`shaders/fake_quant.wgsl`):
//! [`Forward::fake_quant`](crate::backend::Forward::fake_quant), in place, one workgroup per
//! (segment, column), over column panels of `x` bound read-write.

use super::pipeline::PipelineKey;
use super::shaders::Shader;
use super::{gpu_params, Dispatch, GpuBackend, GpuMat, ParamLayout, MAX_GROUPS_PER_DIM};
use crate::Result;

gpu_params!(FakeQuantParams {
    rows: u32,
    cols: u32,
    dim: u32,
    x_off: u32,
    bits: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
});

pub(crate) fn layouts() -> Vec<(Shader, ParamLayout)> {
    vec![(Shader::FakeQuant, FakeQuantParams::LAYOUT)]
}

pub(crate) fn fake_quant(be: &GpuBackend, x: &mut GpuMat, dim: usize, bits: u32) -> Result<()> {
    let (rows, cols) = (x.rows, x.cols);
    assert!(
        (2..=8).contains(&bits),
        "fake_quant: bits {bits} not in 2..=8"
    );
    assert!(
        dim > 0 && rows % dim == 0,
        "fake_quant: {rows} rows, segments of {dim}"
    );
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let op = "fake_quant";
    be.op(op, |enc| {
        let chunk = be.panel_cols(op, rows)?.min(MAX_GROUPS_PER_DIM);
        let key = PipelineKey::new(Shader::FakeQuant, "fake_quant", 0, 1);
        let segs = be.groups(op, rows / dim, 1)?;
        let mut c = 0;
        while c < cols {
            let n = chunk.min(cols - c);
            let vx = be.view(&x.buf, rows, c, c + n);
            let p = FakeQuantParams {
                rows: rows as u32,
                cols: n as u32,
                dim: dim as u32,
                x_off: vx.elem_off,
                bits,
                ..Default::default()
            };
            be.record(
                enc,
                Dispatch {
                    key: key.clone(),
                    reads: vec![],
                    writes: vec![vx.bind],
                    params: bytemuck::bytes_of(&p),
                    groups: [segs, n as u32, 1],
                },
            )?;
            c += n;
        }
        Ok(())
    })
}

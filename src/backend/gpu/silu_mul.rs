//! silu_mul family launcher (`shaders/silu_mul.wgsl`):
//! [`Forward::silu_mul`](crate::backend::Forward::silu_mul), `gate ← silu(gate) ⊙ up` in place.
//! Both matrices have the same shape, so their flat storage is walked in element ranges that
//! fit one binding (a `1 × n` view of the buffer).

use super::pipeline::PipelineKey;
use super::shaders::Shader;
use super::{gpu_params, Dispatch, GpuBackend, GpuMat, ParamLayout, MAX_GROUPS_PER_DIM};
use crate::Result;

gpu_params!(SiluParams {
    n: u32,
    g_off: u32,
    u_off: u32,
    pad0: u32,
});

pub(crate) fn layouts() -> Vec<(Shader, ParamLayout)> {
    vec![(Shader::SiluMul, SiluParams::LAYOUT)]
}

/// Threads per workgroup of the kernel.
const WG: usize = 256;

pub(crate) fn silu_mul(be: &GpuBackend, gate: &mut GpuMat, up: &GpuMat) -> Result<()> {
    assert_eq!(
        (gate.rows, gate.cols),
        (up.rows, up.cols),
        "silu_mul: shapes"
    );
    let total = gate.rows * gate.cols;
    if total == 0 {
        return Ok(());
    }
    let op = "silu_mul";
    be.op(op, |enc| {
        // the kernel folds y into the element index: up to MAX² workgroups of WG
        let chunk = be
            .panel_cols(op, 1)?
            .min(MAX_GROUPS_PER_DIM * MAX_GROUPS_PER_DIM * WG);
        let key = PipelineKey::new(Shader::SiluMul, "silu_mul", 1, 1);
        let mut e = 0;
        while e < total {
            let n = chunk.min(total - e);
            let vg = be.view(&gate.buf, 1, e, e + n);
            let vu = be.view(&up.buf, 1, e, e + n);
            let p = SiluParams {
                n: n as u32,
                g_off: vg.elem_off,
                u_off: vu.elem_off,
                pad0: 0,
            };
            let wgs = n.div_ceil(WG);
            let gx = wgs.min(MAX_GROUPS_PER_DIM);
            be.record(
                enc,
                Dispatch {
                    key: key.clone(),
                    reads: vec![vu.bind],
                    writes: vec![vg.bind],
                    params: bytemuck::bytes_of(&p),
                    groups: [gx as u32, be.groups(op, wgs, gx)?, 1],
                },
            )?;
            e += n;
        }
        Ok(())
    })
}

//! nll family launcher (`shaders/nll.wgsl`): [`Forward::nll`](crate::backend::Forward::nll),
//! one workgroup per column of the `vocab × T` logits, over column panels (one column of the
//! largest vocabulary, 152064 floats, is 594 KiB: far below any real binding limit).

use super::pipeline::PipelineKey;
use super::shaders::Shader;
use super::{gpu_params, Dispatch, GpuBackend, GpuIdx, GpuMat, ParamLayout, MAX_GROUPS_PER_DIM};
use crate::Result;

gpu_params!(NllParams {
    vocab: u32,
    cols: u32,
    z_off: u32,
    t_off: u32,
    o_off: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
});

pub(crate) fn layouts() -> Vec<(Shader, ParamLayout)> {
    vec![(Shader::Nll, NllParams::LAYOUT)]
}

pub(crate) fn nll(be: &GpuBackend, logits: &GpuMat, targets: &GpuIdx) -> Result<GpuMat> {
    let (vocab, tokens) = (logits.rows, logits.cols);
    assert_eq!(targets.len(), tokens, "nll: one target per column");
    if let Some(&bad) = targets.host.iter().find(|&&t| t as usize >= vocab) {
        panic!("nll: target {bad} ≥ vocab {vocab}");
    }
    let out = be.new_mat("nll.out", tokens, 1)?;
    if tokens == 0 {
        return Ok(out);
    }
    let op = "nll";
    be.op(op, |enc| {
        let chunk = be.panel_cols(op, vocab)?.min(MAX_GROUPS_PER_DIM);
        let key = PipelineKey::new(Shader::Nll, "nll", 2, 1);
        let mut c = 0;
        while c < tokens {
            let n = chunk.min(tokens - c);
            let vz = be.view(&logits.buf, vocab, c, c + n);
            let vt = be.view(&targets.buf, 1, c, c + n);
            let vo = be.view(&out.buf, 1, c, c + n);
            let p = NllParams {
                vocab: vocab as u32,
                cols: n as u32,
                z_off: vz.elem_off,
                t_off: vt.elem_off,
                o_off: vo.elem_off,
                ..Default::default()
            };
            be.record(
                enc,
                Dispatch {
                    key: key.clone(),
                    reads: vec![vz.bind, vt.bind],
                    writes: vec![vo.bind],
                    params: bytemuck::bytes_of(&p),
                    groups: [n as u32, 1, 1],
                },
            )?;
            c += n;
        }
        Ok(())
    })?;
    Ok(out)
}

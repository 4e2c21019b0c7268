//! gather family launcher (`shaders/gather.wgsl`): the embedding lookup
//! `out[:, t] = table[:, ids[t]]` ([`Forward::gather`](crate::backend::Forward::gather)).
//!
//! Paneling: the output is cut into panels of whole columns (at most one binding and
//! [`MAX_GROUPS_PER_DIM`] columns); for each, only the table panels that hold one of its ids
//! are bound and dispatched (the ids are known on the host, see [`GpuIdx`]), so a 2 GB
//! `d × vocab` table is never bound whole.

use super::pipeline::PipelineKey;
use super::shaders::Shader;
use super::{gpu_params, Dispatch, GpuBackend, GpuIdx, GpuMat, ParamLayout, MAX_GROUPS_PER_DIM};
use crate::Result;

gpu_params!(GatherParams {
    rows: u32,
    cols: u32,
    ids_off: u32,
    out_off: u32,
    tab_c0: u32,
    tab_c1: u32,
    tab_off: u32,
    pad0: u32,
});

pub(crate) fn layouts() -> Vec<(Shader, ParamLayout)> {
    vec![(Shader::Gather, GatherParams::LAYOUT)]
}

/// Workgroup shape of the kernel: 64 rows × 4 columns.
const WG_ROWS: usize = 64;
const WG_COLS: usize = 4;

pub(crate) fn gather(be: &GpuBackend, table: &GpuMat, ids: &GpuIdx) -> Result<GpuMat> {
    let (d, vocab) = (table.rows, table.cols);
    if let Some(&bad) = ids.host.iter().find(|&&i| i as usize >= vocab) {
        panic!("gather: id {bad} ≥ vocab {vocab}");
    }
    let t = ids.len();
    let out = be.new_mat("gather.out", d, t)?;
    if d == 0 || t == 0 {
        return Ok(out);
    }
    let op = "gather";
    be.op(op, |enc| {
        let cap_tab = be.panel_cols(op, d)?;
        // (the ids' panel, one u32 per column, is smaller than the output's)
        let cap_out = be.panel_cols(op, d)?.min(MAX_GROUPS_PER_DIM * WG_COLS);
        let key = PipelineKey::new(Shader::Gather, "gather", 2, 1);
        let mut j0 = 0;
        while j0 < t {
            let nj = cap_out.min(t - j0);
            let vo = be.view(&out.buf, d, j0, j0 + nj);
            let vi = be.view(&ids.buf, 1, j0, j0 + nj);
            // the table panels this output panel reads, in ascending order
            let mut panels: Vec<usize> = ids.host[j0..j0 + nj]
                .iter()
                .map(|&i| i as usize / cap_tab)
                .collect();
            panels.sort_unstable();
            panels.dedup();
            for p in panels {
                let (c0, c1) = (p * cap_tab, ((p + 1) * cap_tab).min(vocab));
                let vt = be.view(&table.buf, d, c0, c1);
                let params = GatherParams {
                    rows: d as u32,
                    cols: nj as u32,
                    ids_off: vi.elem_off,
                    out_off: vo.elem_off,
                    tab_c0: c0 as u32,
                    tab_c1: c1 as u32,
                    tab_off: vt.elem_off,
                    pad0: 0,
                };
                be.record(
                    enc,
                    Dispatch {
                        key: key.clone(),
                        reads: vec![vt.bind, vi.bind],
                        writes: vec![vo.bind],
                        params: bytemuck::bytes_of(&params),
                        groups: [be.groups(op, d, WG_ROWS)?, be.groups(op, nj, WG_COLS)?, 1],
                    },
                )?;
            }
            j0 += nj;
        }
        Ok(())
    })?;
    Ok(out)
}

//! rope family launcher (`shaders/rope.wgsl`): [`Forward::rope`](crate::backend::Forward::rope),
//! in place, with the host-computed table of [`rope_table`](crate::backend::forward::rope_table).
//!
//! Paneling: `x` in panels of whole columns. The table (`head_dim × seqlen`) is bound whole
//! when it fits one binding; otherwise each dispatch covers a run of columns whose positions
//! do not wrap past the end of a sequence and binds just those table columns.

use super::pipeline::PipelineKey;
use super::shaders::Shader;
use super::{gpu_params, Dispatch, GpuBackend, GpuMat, ParamLayout, MAX_GROUPS_PER_DIM};
use crate::Result;

gpu_params!(RopeParams {
    rows: u32,
    cols: u32,
    x_off: u32,
    head_dim: u32,
    seqlen: u32,
    pos0: u32,
    tab_p0: u32,
    tab_off: u32,
});

pub(crate) fn layouts() -> Vec<(Shader, ParamLayout)> {
    vec![(Shader::Rope, RopeParams::LAYOUT)]
}

/// Workgroup shape of the kernel: 64 rotation pairs × 4 columns.
const WG_PAIRS: usize = 64;
const WG_COLS: usize = 4;

pub(crate) fn rope(be: &GpuBackend, x: &mut GpuMat, table: &GpuMat, head_dim: usize) -> Result<()> {
    assert!(
        head_dim > 0 && head_dim % 2 == 0,
        "rope: odd head_dim {head_dim}"
    );
    assert_eq!(table.rows, head_dim, "rope: table rows");
    assert!(x.rows % head_dim == 0, "rope: rows not whole heads");
    let seqlen = table.cols;
    assert!(
        seqlen > 0 && x.cols % seqlen == 0,
        "rope: tokens not whole sequences"
    );
    let (rows, cols) = (x.rows, x.cols);
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let op = "rope";
    be.op(op, |enc| {
        let cap_x = be.panel_cols(op, rows)?.min(MAX_GROUPS_PER_DIM * WG_COLS);
        let cap_t = be.panel_cols(op, head_dim)?;
        let whole_table = cap_t >= seqlen;
        let key = PipelineKey::new(Shader::Rope, "rope", 1, 1);
        let pairs = be.groups(op, rows / 2, WG_PAIRS)?;
        let mut c = 0;
        while c < cols {
            let pos0 = c % seqlen;
            let mut n = cap_x.min(cols - c);
            let (vt, tab_p0) = if whole_table {
                (be.view(&table.buf, head_dim, 0, seqlen), 0)
            } else {
                n = n.min(cap_t).min(seqlen - pos0);
                (be.view(&table.buf, head_dim, pos0, pos0 + n), pos0)
            };
            let vx = be.view(&x.buf, rows, c, c + n);
            let p = RopeParams {
                rows: rows as u32,
                cols: n as u32,
                x_off: vx.elem_off,
                head_dim: head_dim as u32,
                seqlen: seqlen as u32,
                pos0: pos0 as u32,
                tab_p0: tab_p0 as u32,
                tab_off: vt.elem_off,
            };
            be.record(
                enc,
                Dispatch {
                    key: key.clone(),
                    reads: vec![vt.bind],
                    writes: vec![vx.bind],
                    params: bytemuck::bytes_of(&p),
                    groups: [pairs, be.groups(op, n, WG_COLS)?, 1],
                },
            )?;
            c += n;
        }
        Ok(())
    })
}

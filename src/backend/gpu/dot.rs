//! dot family launcher (`shaders/dot.wgsl`): `out[c] = Σ_r a[r, c] · b[r, c]`.

use super::gemm::check_region;
use super::pipeline::PipelineKey;
use super::shaders::Shader;
use super::{gpu_params, Dispatch, GpuBackend, GpuMat, ParamLayout};
use crate::backend::Region;
use crate::Result;

gpu_params!(DotParams {
    rows: u32,
    cols: u32,
    a_off: u32,
    lda: u32,
    b_off: u32,
    ldb: u32,
    out0: u32,
    pad0: u32,
});

pub(crate) fn layouts() -> Vec<(Shader, ParamLayout)> {
    vec![(Shader::Dot, DotParams::LAYOUT)]
}

/// Workgroups per dispatch row (the kernel folds y into the column index).
const ROW: usize = 65535;

pub(crate) fn dot_cols(
    be: &GpuBackend,
    a: &GpuMat,
    ra: Region,
    b: &GpuMat,
    rb: Region,
) -> Result<GpuMat> {
    check_region("dot_cols a", a, ra);
    check_region("dot_cols b", b, rb);
    assert_eq!(
        (ra.rows, ra.cols),
        (rb.rows, rb.cols),
        "dot_cols: extents differ"
    );
    let out = be.new_mat("dot_cols.out", ra.cols, 1)?;
    let op = "dot_cols";
    be.op(op, |enc| {
        let chunk = be.panel_cols(op, a.rows)?.min(be.panel_cols(op, b.rows)?);
        let vo = be.whole(op, &out.buf)?;
        let key = PipelineKey::new(Shader::Dot, "dot_cols", 2, 1);
        let mut c = 0;
        while c < ra.cols {
            let n = chunk.min(ra.cols - c);
            let va = be.view(&a.buf, a.rows, ra.col0 + c, ra.col0 + c + n);
            let vb = be.view(&b.buf, b.rows, rb.col0 + c, rb.col0 + c + n);
            let p = DotParams {
                rows: ra.rows as u32,
                cols: n as u32,
                a_off: va.elem_off + ra.row0 as u32,
                lda: a.rows as u32,
                b_off: vb.elem_off + rb.row0 as u32,
                ldb: b.rows as u32,
                out0: c as u32,
                pad0: 0,
            };
            let gx = n.min(ROW) as u32;
            let gy = be.groups(op, n, ROW)?;
            be.record(
                enc,
                Dispatch {
                    key: key.clone(),
                    reads: vec![va.bind, vb.bind],
                    writes: vec![vo],
                    params: bytemuck::bytes_of(&p),
                    groups: [gx, gy, 1],
                },
            )?;
            c += n;
        }
        Ok(())
    })?;
    Ok(out)
}

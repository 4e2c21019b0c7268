//! attention family launcher (`shaders/attention.wgsl`):
//! [`Forward::attention`](crate::backend::Forward::attention), causal, grouped K/V, flash style
//! (see the shader for the kernel's design).
//!
//! Paneling: a panel is whole sequences — as many as fit one binding for each of q, k, v and
//! the output; one sequence that does not fit is an error (it never happens for real models:
//! 2048 tokens of 32 × 128 query rows are 32 MiB). Grid: (query tiles, query heads,
//! sequences of the panel).

use super::pipeline::PipelineKey;
use super::shaders::Shader;
use super::{gpu_params, Dispatch, GpuBackend, GpuMat, ParamLayout, MAX_GROUPS_PER_DIM};
use crate::backend::forward::AttnSpec;
use crate::{Error, Result};

gpu_params!(AttnParams {
    seqlen: u32,
    n_heads: u32,
    group: u32,
    ldq: u32,
    ldkv: u32,
    q_off: u32,
    k_off: u32,
    v_off: u32,
    o_off: u32,
    scale: f32,
    n_qt: u32,
    pad0: u32,
});

pub(crate) fn layouts() -> Vec<(Shader, ParamLayout)> {
    vec![(Shader::Attention, AttnParams::LAYOUT)]
}

/// Threads per workgroup (the shader's `WG`).
const WG: usize = 128;
/// vec4 chunks of q / o one thread holds at most (`MAXV`).
const MAXV: usize = 8;
/// Keys per staged tile at most (`MAXK`; also sizes the partial-dot buffer `red`).
const MAXK: usize = 16;
/// Capacity of the staged K / V tile in vec4s (`KV_VEC4`, 8 KiB).
const KV_VEC4: usize = 512;
/// Workgroup memory the kernel declares: the K / V tile and the partial dots `red`
/// (`WG · MAXK` floats) — 16 KiB, WebGPU's guaranteed minimum.
const SHARED_BYTES: u32 = (KV_VEC4 * 16 + WG * MAXK * 4) as u32;

/// The kernel's specialisation for one head_dim: threads per query row, chunks per thread,
/// keys per tile (the shader's `R`, `NV`, `BK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tiling {
    r: usize,
    nv: usize,
    bk: usize,
}

impl Tiling {
    /// `None` when head_dim is beyond what a row of WG threads can hold (> 512).
    fn for_head_dim(hd: usize) -> Option<Tiling> {
        let chunks = hd.div_ceil(4);
        let r = chunks.div_ceil(MAXV).max(1).next_power_of_two();
        if r > WG / 8 {
            return None;
        }
        let nv = chunks.div_ceil(r);
        let bk = MAXK.min(KV_VEC4 / (r * nv));
        Some(Tiling { r, nv, bk })
    }

    /// Query positions per workgroup.
    fn bq(self) -> usize {
        WG / self.r
    }
}

pub(crate) fn attention(
    be: &GpuBackend,
    q: &GpuMat,
    k: &GpuMat,
    v: &GpuMat,
    spec: &AttnSpec,
) -> Result<GpuMat> {
    let tokens = q.cols;
    spec.check(q.rows, k.rows, v.rows, tokens);
    assert_eq!(
        (k.cols, v.cols),
        (tokens, tokens),
        "attention: token counts"
    );
    let (hd, len) = (spec.head_dim, spec.seqlen);
    let op = "attention";
    assert!(hd % 2 == 0, "attention: odd head_dim {hd}");
    let out = be.new_mat("attention.out", q.rows, tokens)?;
    if tokens == 0 || hd == 0 {
        return Ok(out);
    }
    // (some downlevel GL adapters report slightly less than the WebGPU minimum)
    let shared = be.limits.max_compute_workgroup_storage_size;
    if shared < SHARED_BYTES {
        return Err(Error::gpu(
            op,
            format!(
                "the kernel needs {SHARED_BYTES} B of workgroup memory, the adapter has {shared} B"
            ),
        ));
    }
    let tiling = Tiling::for_head_dim(hd).ok_or_else(|| {
        Error::gpu(
            op,
            format!("head_dim {hd} is not supported by the GPU kernel (at most 512)"),
        )
    })?;
    let nseq = tokens / len;
    let (ldq, ldkv) = (q.rows, k.rows);
    // whole sequences per panel
    let cap = be.panel_cols(op, ldq)?.min(be.panel_cols(op, ldkv)?) / len;
    if cap == 0 {
        return Err(Error::gpu(
            op,
            format!(
                "one sequence of {len} tokens ({ldq} query rows, {ldkv} key rows) does not fit \
                 the storage binding limit of {} bytes",
                be.binding_limit
            ),
        ));
    }
    let cap = cap.min(MAX_GROUPS_PER_DIM);
    let n_qt = len.div_ceil(tiling.bq());
    let key = PipelineKey::new(Shader::Attention, "attention", 3, 1)
        .with("HD", hd as u32)
        .with("R", tiling.r as u32)
        .with("NV", tiling.nv as u32)
        .with("BK", tiling.bk as u32);
    be.op(op, |enc| {
        let gx = be.groups(op, n_qt, 1)?;
        let gy = be.groups(op, spec.n_heads, 1)?;
        let mut s0 = 0;
        while s0 < nseq {
            let ns = cap.min(nseq - s0);
            let (c0, c1) = (s0 * len, (s0 + ns) * len);
            let vq = be.view(&q.buf, ldq, c0, c1);
            let vk = be.view(&k.buf, ldkv, c0, c1);
            let vv = be.view(&v.buf, ldkv, c0, c1);
            let vo = be.view(&out.buf, ldq, c0, c1);
            let p = AttnParams {
                seqlen: len as u32,
                n_heads: spec.n_heads as u32,
                group: (spec.n_heads / spec.n_kv_heads) as u32,
                ldq: ldq as u32,
                ldkv: ldkv as u32,
                q_off: vq.elem_off,
                k_off: vk.elem_off,
                v_off: vv.elem_off,
                o_off: vo.elem_off,
                scale: spec.scale,
                n_qt: n_qt as u32,
                pad0: 0,
            };
            be.record(
                enc,
                Dispatch {
                    key: key.clone(),
                    reads: vec![vq.bind, vk.bind, vv.bind],
                    writes: vec![vo.bind],
                    params: bytemuck::bytes_of(&p),
                    groups: [gx, gy, ns as u32],
                },
            )?;
            s0 += ns;
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilings_fit_the_shader_arrays() {
        for hd in (2..=512).step_by(2) {
            let t = Tiling::for_head_dim(hd).expect("supported");
            assert!(
                WG % t.r == 0 && t.nv <= MAXV && t.bk >= 1 && t.bk <= MAXK,
                "{hd}: {t:?}"
            );
            assert!(4 * t.r * t.nv >= hd, "{hd}: chunks do not cover the head");
            assert!(t.bk * t.r * t.nv <= KV_VEC4, "{hd}: K tile overflows");
        }
        assert_eq!(
            Tiling::for_head_dim(64),
            Some(Tiling {
                r: 2,
                nv: 8,
                bk: 16
            })
        );
        assert_eq!(
            Tiling::for_head_dim(128),
            Some(Tiling {
                r: 4,
                nv: 8,
                bk: 16
            })
        );
        assert_eq!(
            Tiling::for_head_dim(256),
            Some(Tiling { r: 8, nv: 8, bk: 8 })
        );
        assert_eq!(Tiling::for_head_dim(514), None);
    }
}

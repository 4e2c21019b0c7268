//! gram family launcher (`shaders/gram.wgsl`): running-mean H, G, D on the device.
//!
//! Token rows are uploaded per call in chunks that fit one binding (and at most
//! `STREAM_BYTES`), into two device buffers the backend keeps and reuses (no allocation per
//! chunk); the first chunk of a call scales the old mean by `n / n'`, later chunks add
//! (keep = 1), every chunk adds `XᵀY / n'`.
//! H and D are accumulated on the lower triangle only; `finish` mirrors them.

use super::elementwise::record_copy;
use super::pipeline::PipelineKey;
use super::shaders::Shader;
use super::{gpu_params, Dispatch, GpuBackend, GpuMat, ParamLayout};
use crate::backend::{Grams, Region};
use crate::Result;

gpu_params!(GramParams {
    d: u32,
    tokens: u32,
    out_off: u32,
    j0: u32,
    ncols: u32,
    lower: u32,
    pad0: u32,
    pad1: u32,
    keep: f32,
    scale: f32,
    pad2: u32,
    pad3: u32,
});

gpu_params!(MirrorParams {
    d: u32,
    s0: u32,
    s1: u32,
    j0: u32,
    j1: u32,
    dst_off: u32,
    pad0: u32,
    pad1: u32,
});

pub(crate) fn layouts() -> Vec<(Shader, ParamLayout)> {
    vec![
        (Shader::Gram, GramParams::LAYOUT),
        (Shader::Gram, MirrorParams::LAYOUT),
    ]
}

/// Output tile edge of the `gram` kernel.
const TILE: usize = 128;
/// Largest uploaded token chunk in bytes (per input): bounds the reused upload buffers.
const STREAM_BYTES: usize = 64 << 20;

pub(crate) fn init(
    be: &GpuBackend,
    d: usize,
    mismatched: bool,
    delta: bool,
) -> Result<Grams<GpuMat>> {
    Ok(Grams {
        h: be.new_mat("gram.h", d, d)?,
        g: if mismatched {
            Some(be.new_mat("gram.g", d, d)?)
        } else {
            None
        },
        d: if mismatched && delta {
            Some(be.new_mat("gram.d", d, d)?)
        } else {
            None
        },
        n: 0,
    })
}

/// Record `out ← keep·out + scale·AᵀB` for one uploaded chunk (see the MODE table in
/// gram.wgsl), panel by panel over out's columns.
#[allow(clippy::too_many_arguments)]
fn record_chunk(
    be: &GpuBackend,
    enc: &mut wgpu::CommandEncoder,
    out: &GpuMat,
    mode: u32,
    x0: &wgpu::Buffer,
    x1: &wgpu::Buffer,
    tokens: usize,
    keep: f32,
    scale: f32,
) -> Result<()> {
    let op = "gram_update";
    let d = out.rows;
    let lower = mode != 1;
    let mut cap = be.panel_cols(op, d)?;
    if cap > TILE && cap < d {
        cap -= cap % TILE;
    }
    let key = PipelineKey::new(Shader::Gram, "gram", 2, 1).with("MODE", mode);
    let b0 = be.whole(op, x0)?;
    let b1 = be.whole(op, x1)?;
    let mut j0 = 0;
    while j0 < d {
        let nc = cap.min(d - j0);
        let vo = be.view(&out.buf, d, j0, j0 + nc);
        let p = GramParams {
            d: d as u32,
            tokens: tokens as u32,
            out_off: vo.elem_off,
            j0: j0 as u32,
            ncols: nc as u32,
            lower: lower as u32,
            keep,
            scale,
            ..Default::default()
        };
        be.record(
            enc,
            Dispatch {
                key: key.clone(),
                reads: vec![b0, b1],
                writes: vec![vo.bind],
                params: bytemuck::bytes_of(&p),
                groups: [be.groups(op, d, TILE)?, be.groups(op, nc, TILE)?, 1],
            },
        )?;
        j0 += nc;
    }
    Ok(())
}

/// Record one chunk's updates of every running mean in `acc`: `H` from `X̃` (`xq`, or `x`
/// when `X̃ = X`), and with `xq` also `G` (`XᵀX̃`) and `D` if kept.
#[allow(clippy::too_many_arguments)]
fn record_grams(
    be: &GpuBackend,
    enc: &mut wgpu::CommandEncoder,
    acc: &Grams<GpuMat>,
    x: &wgpu::Buffer,
    xq: Option<&wgpu::Buffer>,
    tokens: usize,
    keep: f32,
    scale: f32,
) -> Result<()> {
    let Some(xq) = xq else {
        return record_chunk(be, enc, &acc.h, 0, x, x, tokens, keep, scale);
    };
    record_chunk(be, enc, &acc.h, 0, xq, xq, tokens, keep, scale)?;
    if let Some(g) = &acc.g {
        record_chunk(be, enc, g, 1, x, xq, tokens, keep, scale)?;
    }
    if let Some(dm) = &acc.d {
        record_chunk(be, enc, dm, 2, x, xq, tokens, keep, scale)?;
    }
    Ok(())
}

pub(crate) fn update(
    be: &GpuBackend,
    acc: &mut Grams<GpuMat>,
    x: &[f32],
    xq: Option<&[f32]>,
    tokens: usize,
) -> Result<()> {
    let d = acc.h.rows;
    assert_eq!(
        x.len(),
        tokens * d,
        "gram_update: x has {} values, want {tokens} × {d}",
        x.len()
    );
    assert_eq!(
        xq.is_some(),
        acc.g.is_some(),
        "gram_update: xq iff mismatched"
    );
    if let Some(xq) = xq {
        assert_eq!(xq.len(), tokens * d, "gram_update: xq length");
    }
    if tokens == 0 || d == 0 {
        return Ok(());
    }
    let op = "gram_update";
    let n_new = acc.n + tokens as u64;
    let keep0 = (acc.n as f64 / n_new as f64) as f32;
    let scale = (1.0 / n_new as f64) as f32;
    // Tokens per uploaded chunk: one chunk of X (row-major, d floats per token) per binding,
    // and at most STREAM_BYTES, so the reused upload buffers stay small.
    let per = be.panel_cols(op, d)?.min((STREAM_BYTES / (4 * d)).max(1));
    let mut in_flight = None;
    let mut t0 = 0;
    while t0 < tokens {
        let t1 = (t0 + per).min(tokens);
        let keep = if t0 == 0 { keep0 } else { 1.0 };
        let xb = be.stream_upload(0, "gram.x", bytemuck::cast_slice(&x[t0 * d..t1 * d]))?;
        let xqb = match xq {
            Some(xq) => {
                Some(be.stream_upload(1, "gram.xq", bytemuck::cast_slice(&xq[t0 * d..t1 * d]))?)
            }
            None => None,
        };
        let (_, index) = be.op_indexed(op, |enc| {
            record_grams(be, enc, acc, &xb, xqb.as_ref(), t1 - t0, keep, scale)
        })?;
        // At most two uploaded chunks in flight: wait for the previous one before the next
        // upload (queued staging memory stays bounded however many tokens one call brings).
        if let Some(prev) = in_flight.replace(index) {
            be.wait_for(op, prev)?;
        }
        t0 = t1;
    }
    acc.n = n_new;
    Ok(())
}

/// [`update`] from device-resident `d × tokens` matrices: each chunk of tokens (whole
/// columns, contiguous in the buffer) is copied on the device into the stream buffers the
/// kernel binds at offset 0 (a copy needs only 4-byte alignment, a binding offset needs
/// `min_storage_buffer_offset_alignment`), then accumulated as before. No host transfer.
pub(crate) fn update_mat(
    be: &GpuBackend,
    acc: &mut Grams<GpuMat>,
    x: &GpuMat,
    xq: Option<&GpuMat>,
) -> Result<()> {
    let d = acc.h.rows;
    let tokens = x.cols;
    assert_eq!(
        x.rows, d,
        "gram_update_mat: x has {} rows, want {d}",
        x.rows
    );
    assert_eq!(
        xq.is_some(),
        acc.g.is_some(),
        "gram_update_mat: xq iff mismatched"
    );
    if let Some(xq) = xq {
        assert_eq!((xq.rows, xq.cols), (d, tokens), "gram_update_mat: xq shape");
    }
    if tokens == 0 || d == 0 {
        return Ok(());
    }
    let op = "gram_update";
    let n_new = acc.n + tokens as u64;
    let keep0 = (acc.n as f64 / n_new as f64) as f32;
    let scale = (1.0 / n_new as f64) as f32;
    let per = be.panel_cols(op, d)?.min((STREAM_BYTES / (4 * d)).max(1));
    let mut t0 = 0;
    while t0 < tokens {
        let t1 = (t0 + per).min(tokens);
        let keep = if t0 == 0 { keep0 } else { 1.0 };
        let (off, bytes) = ((t0 * d * 4) as u64, ((t1 - t0) * d * 4) as u64);
        let xb = be.stream_buffer(0, "gram.x", bytes)?;
        let xqb = match xq {
            Some(_) => Some(be.stream_buffer(1, "gram.xq", bytes)?),
            None => None,
        };
        be.op(op, |enc| {
            enc.copy_buffer_to_buffer(&x.buf, off, &xb, 0, bytes);
            if let (Some(xqb), Some(xq)) = (&xqb, xq) {
                enc.copy_buffer_to_buffer(&xq.buf, off, xqb, 0, bytes);
            }
            record_grams(be, enc, acc, &xb, xqb.as_ref(), t1 - t0, keep, scale)
        })?;
        t0 = t1;
    }
    acc.n = n_new;
    Ok(())
}

/// Copy the lower triangle of a symmetric `d × d` matrix onto its upper triangle.
fn mirror(be: &GpuBackend, m: &GpuMat) -> Result<()> {
    let op = "gram_finish";
    let d = m.rows;
    if d < 2 {
        return Ok(());
    }
    let cap = be.panel_cols(op, d)?;
    // Sources are read through a scratch copy: a buffer cannot be bound read-only and
    // read-write in one dispatch.
    let scratch = be.new_mat("gram.mirror.scratch", d, cap.min(d))?;
    be.op(op, |enc| {
        let key = PipelineKey::new(Shader::Gram, "mirror", 1, 1);
        let mut s0 = 0;
        while s0 < d {
            let s1 = (s0 + cap).min(d);
            record_copy(
                be,
                enc,
                &scratch.buf,
                d,
                Region::all(d, s1 - s0),
                &m.buf,
                d,
                Region::cols(d, s0, s1),
            )?;
            let vs = be.view(&scratch.buf, d, 0, s1 - s0);
            let mut j0 = s0;
            while j0 < d {
                let j1 = (j0 + cap).min(d);
                let vd = be.view(&m.buf, d, j0, j1);
                let p = MirrorParams {
                    d: d as u32,
                    s0: s0 as u32,
                    s1: s1 as u32,
                    j0: j0 as u32,
                    j1: j1 as u32,
                    dst_off: vd.elem_off,
                    ..Default::default()
                };
                be.record(
                    enc,
                    Dispatch {
                        key: key.clone(),
                        reads: vec![vs.bind],
                        writes: vec![vd.bind],
                        params: bytemuck::bytes_of(&p),
                        groups: [be.groups(op, s1 - s0, 16)?, be.groups(op, j1 - j0, 16)?, 1],
                    },
                )?;
                j0 = j1;
            }
            s0 = s1;
        }
        Ok(())
    })
}

pub(crate) fn finish(be: &GpuBackend, acc: &mut Grams<GpuMat>) -> Result<()> {
    mirror(be, &acc.h)?;
    if let Some(dm) = &acc.d {
        mirror(be, dm)?;
    }
    Ok(())
}

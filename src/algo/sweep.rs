//! The column sweep shared by GPTQ and Qronos, and Qronos's first-column step.

use super::{tick, Progress};
use crate::backend::{Backend, Region, SweepSpec};
use crate::Result;

/// GPTQ's lazy-batch sweep over columns `[start, d)` (DESIGN §1.4 step 5): each block is
/// quantized by [`Backend::sweep`] (in-block rank-1 updates), then the columns after it get
/// one GEMM `W[:, c1:] −= E · U[c0:c1, c1:]`. With dynamic groups a block never crosses a
/// group start, so every group's parameters see all updates so far and the result does not
/// depend on the block size.
#[allow(clippy::too_many_arguments)]
pub fn gptq_sweep<B: Backend>(
    b: &B,
    spec: &SweepSpec,
    w: &mut B::Mat,
    u: &B::Mat,
    q: &mut B::Mat,
    codes: &mut B::Mat,
    scales: &mut B::Mat,
    zeros: &mut B::Mat,
    group_of: &B::Idx,
    start: usize,
    block: usize,
    progress: &mut dyn Progress,
) -> Result<()> {
    let (m, d) = b.shape(w);
    let mut err = b.zeros(m, block.min(d.max(1)))?;
    let mut c0 = start;
    while c0 < d {
        let c1 = block_end(spec, c0, block, d);
        b.sweep(
            spec, w, u, q, codes, scales, zeros, &mut err, group_of, c0, c1,
        )?;
        if c1 < d {
            b.gemm(
                w,
                Region::cols(m, c1, d),
                -1.0,
                &err,
                Region::cols(m, 0, c1 - c0),
                false,
                u,
                Region {
                    row0: c0,
                    col0: c1,
                    rows: c1 - c0,
                    cols: d - c1,
                },
                false,
                1.0,
            )?;
        }
        tick(progress, "sweep", c1 as u64, d as u64)?;
        c0 = c1;
    }
    Ok(())
}

/// End of the lazy batch starting at column `c0`: `block` columns, cut at the next group
/// start when groups are dynamic (so a group's parameters see every update before it).
fn block_end(spec: &SweepSpec, c0: usize, block: usize, d: usize) -> usize {
    let c1 = (c0 + block).min(d);
    if spec.dynamic {
        let g = spec.group_size;
        c1.min((c0 / g + 1) * g)
    } else {
        c1
    }
}

/// What Qronos's first step reads (all in sweep order).
pub(super) struct QronosInputs<'a, B: Backend> {
    /// Weights, `W₀` on entry; on exit column 0 holds `v₀` and columns `1..` the least-squares
    /// re-solve.
    pub w: &'a mut B::Mat,
    /// Undamped `H`.
    pub h: &'a B::Mat,
    /// `G`, or `None` when `X̃ = X` (then `G = H`, and the step reduces to an OBS update).
    pub g: Option<&'a B::Mat>,
    /// Upper factor of `(H + λI)⁻¹`.
    pub u: &'a B::Mat,
    /// `1 × 1` λ on the backend, and the retry multiplier applied to it.
    pub lambda: &'a B::Mat,
    pub damp_factor: f32,
    /// `H[0, 0]` (known on the host).
    pub h00: f64,
}

/// Qronos steps 1–3 (DESIGN §1.5): correct column 0 against the mismatch, round it, and
/// re-solve columns `1..d` by least squares:
/// - `v₀ = W₀[:,0] + W₀ · (G[:,0] − H[:,0]) / H[0,0]`   (= `(W₀G[:,0] − Σ_{j≥1} W₀[:,j]H[j,0]) / H[0,0]`)
/// - `q₀ = quant(v₀)` (the first group's parameters from `[v₀ | W₀[:,1:g]]`)
/// - `W[:,1:] = (W₀ · (G + λI)[:,1:] − q₀ · H[0,1:]) · A`, `A = U₁ᵀU₁`, `U₁ = U[1:,1:]`.
///
/// Returns `Some(Y)`, `Y = (W₀ · (G + λI)[:,1:] − q₀ · H[0,1:]) · U₁ᵀ`, for [`qronos_sweep`]
/// to finish (`W[:,1:] = Y · U₁`); `None` when `W` already holds the re-solved columns (the
/// `X̃ = X` shortcut) and the plain GPTQ sweep from column 1 follows.
#[allow(clippy::too_many_arguments)]
pub(super) fn qronos_first_column<B: Backend>(
    b: &B,
    spec: &SweepSpec,
    x: QronosInputs<'_, B>,
    q: &mut B::Mat,
    codes: &mut B::Mat,
    scales: &mut B::Mat,
    zeros: &mut B::Mat,
    group_of: &B::Idx,
) -> Result<Option<B::Mat>> {
    let Some(g) = x.g else {
        first_column_standard(b, spec, x, q, codes, scales, zeros, group_of)?;
        return Ok(None);
    };
    let (m, d) = b.shape(x.w);
    let rest = Region::cols(m, 1, d);
    let hrest = Region::cols(d, 1, d);
    // R = W₀ · G[:, 1:] + λ W₀[:, 1:]      (before column 0 of W changes)
    let mut r = b.zeros(m, d - 1)?;
    let rall = Region::all(m, d - 1);
    if d > 1 {
        b.gemm(
            &mut r,
            rall,
            1.0,
            x.w,
            Region::all(m, d),
            false,
            g,
            hrest,
            false,
            0.0,
        )?;
        b.axpy(&mut r, rall, x.damp_factor, x.w, rest, Some(x.lambda))?;
    }
    // v₀ = W₀[:,0] + W₀ · c / H[0,0],  c = G[:,0] − H[:,0]
    let col0 = Region::cols(d, 0, 1);
    let mut c = b.zeros(d, 1)?;
    b.copy(&mut c, Region::all(d, 1), g, col0)?;
    b.axpy(&mut c, Region::all(d, 1), -1.0, x.h, col0, None)?;
    let mut v = b.zeros(m, 1)?;
    b.gemm(
        &mut v,
        Region::all(m, 1),
        1.0,
        x.w,
        Region::all(m, d),
        false,
        &c,
        Region::all(d, 1),
        false,
        0.0,
    )?;
    b.axpy(
        x.w,
        Region::cols(m, 0, 1),
        (1.0 / x.h00) as f32,
        &v,
        Region::all(m, 1),
        None,
    )?;
    // q₀: quantize column 0 alone (its group's parameters from [v₀ | W₀[:, 1:g]])
    let no_prop = SweepSpec {
        propagate: false,
        ..*spec
    };
    let mut err = b.zeros(1, 1)?;
    b.sweep(
        &no_prop, x.w, x.u, q, codes, scales, zeros, &mut err, group_of, 0, 1,
    )?;
    if d == 1 {
        return Ok(None);
    }
    // R −= q₀ · H[0, 1:]
    b.gemm(
        &mut r,
        rall,
        -1.0,
        q,
        Region::cols(m, 0, 1),
        false,
        x.h,
        Region {
            row0: 0,
            col0: 1,
            rows: 1,
            cols: d - 1,
        },
        false,
        1.0,
    )?;
    // Y = R · U₁ᵀ; the re-solved columns are W[:, 1:] = Y · U₁, formed block by block by
    // `qronos_sweep` rather than here (one m·d² product fewer)
    let u1 = Region {
        row0: 1,
        col0: 1,
        rows: d - 1,
        cols: d - 1,
    };
    let mut y = b.zeros(m, d - 1)?;
    b.trmm_right(&mut y, rall, 1.0, &r, rall, x.u, u1, true, 0.0)?;
    Ok(Some(y))
}

/// The sweep over columns `1..d` after Qronos's mismatched first step, given `Y = R·U₁ᵀ`
/// (`m × (d−1)`, column `k − 1` for column `k`). GPTQ's sweep subtracts `e_k · U[k, l]` from
/// every later column `l`; in terms of `Y` that is `Ỹ[:, k] = Y[:, k] − e_k`, and the current
/// columns are always `W[:, l] = Σ_{1≤k≤l} Ỹ[:, k] U[k, l]`. So each block is materialised by one
/// GEMM from `Ỹ` just before it is swept (plus, at a dynamic group start, the rest of that
/// group, whose parameters need current values), and its errors are folded back into `Ỹ`.
/// This replaces forming `Y·U₁` up front and the trailing updates by block GEMMs of the same
/// total size: one `m·d²` product fewer than re-solve + GPTQ sweep.
#[allow(clippy::too_many_arguments)]
pub(super) fn qronos_sweep<B: Backend>(
    b: &B,
    spec: &SweepSpec,
    w: &mut B::Mat,
    u: &B::Mat,
    y: &mut B::Mat,
    q: &mut B::Mat,
    codes: &mut B::Mat,
    scales: &mut B::Mat,
    zeros: &mut B::Mat,
    group_of: &B::Idx,
    block: usize,
    progress: &mut dyn Progress,
) -> Result<()> {
    let (m, d) = b.shape(w);
    let g = spec.group_size;
    let mut err = b.zeros(m, block.min(d.max(1)))?;
    let mut c0 = 1;
    while c0 < d {
        let c1 = block_end(spec, c0, block, d);
        let end = if spec.dynamic && c0 % g == 0 {
            (c0 + g).min(d).max(c1)
        } else {
            c1
        };
        // W[:, c0..end] = Ỹ[:, 1..end] · U[1..end, c0..end]  (U is upper triangular)
        b.gemm(
            w,
            Region::cols(m, c0, end),
            1.0,
            y,
            Region::cols(m, 0, end - 1),
            false,
            u,
            Region {
                row0: 1,
                col0: c0,
                rows: end - 1,
                cols: end - c0,
            },
            false,
            0.0,
        )?;
        b.sweep(
            spec, w, u, q, codes, scales, zeros, &mut err, group_of, c0, c1,
        )?;
        b.axpy(
            y,
            Region::cols(m, c0 - 1, c1 - 1),
            -1.0,
            &err,
            Region::cols(m, 0, c1 - c0),
            None,
        )?;
        tick(progress, "sweep", c1 as u64, d as u64)?;
        c0 = c1;
    }
    Ok(())
}

/// Qronos's first step when `X̃ = X` (`G = H`): the correction is zero (`v₀ = W₀[:,0]`) and
/// `W₀(H + λI)[:,1:]·A = W₀[:,1:] + W₀[:,0]·H[0,1:]·A` (because `(H + λI)[1:,1:]·A = I`), so
/// the re-solve is the rank-1 update `W[:,1:] += (W₀[:,0] − q₀) · (H[0,1:]·A)`: `O(m·d + d²)`
/// instead of three `m·d²` products.
#[allow(clippy::too_many_arguments)]
fn first_column_standard<B: Backend>(
    b: &B,
    spec: &SweepSpec,
    x: QronosInputs<'_, B>,
    q: &mut B::Mat,
    codes: &mut B::Mat,
    scales: &mut B::Mat,
    zeros: &mut B::Mat,
    group_of: &B::Idx,
) -> Result<()> {
    let (m, d) = b.shape(x.w);
    let no_prop = SweepSpec {
        propagate: false,
        ..*spec
    };
    let mut err = b.zeros(1, 1)?;
    b.sweep(
        &no_prop, x.w, x.u, q, codes, scales, zeros, &mut err, group_of, 0, 1,
    )?;
    if d == 1 {
        return Ok(());
    }
    // h = H[0, 1:] · U₁ᵀ · U₁   (1 × (d−1))
    let row = Region::all(1, d - 1);
    let u1 = Region {
        row0: 1,
        col0: 1,
        rows: d - 1,
        cols: d - 1,
    };
    let h0 = Region {
        row0: 0,
        col0: 1,
        rows: 1,
        cols: d - 1,
    };
    let mut t = b.zeros(1, d - 1)?;
    b.trmm_right(&mut t, row, 1.0, x.h, h0, x.u, u1, true, 0.0)?;
    let mut ha = b.zeros(1, d - 1)?;
    b.trmm_right(&mut ha, row, 1.0, &t, row, x.u, u1, false, 0.0)?;
    // e = W₀[:, 0] − q₀;  W[:, 1:] += e · h
    let col = Region::all(m, 1);
    let mut e = b.zeros(m, 1)?;
    b.copy(&mut e, col, x.w, Region::cols(m, 0, 1))?;
    b.axpy(&mut e, col, -1.0, q, Region::cols(m, 0, 1), None)?;
    b.gemm(
        x.w,
        Region::cols(m, 1, d),
        1.0,
        &e,
        col,
        false,
        &ha,
        row,
        false,
        1.0,
    )?;
    Ok(())
}

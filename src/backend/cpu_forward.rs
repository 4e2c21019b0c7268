//! CPU twin of the forward family ([`Forward`]): faer products for attention, and column-
//! parallel loops (rayon, each column computed by one thread in a fixed order, so results do
//! not depend on the thread count) for the rest. The reference the GPU kernels are checked
//! against.

use faer::linalg::matmul::triangular::{self as tri, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::cpu::CpuBackend;
use super::forward::{AttnSpec, Forward};
use crate::Result;

thread_local! {
    /// Per-thread scratch for column-wise exponentials (reused, so no allocation per column).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Columns per parallel task: enough work per task to amortise scheduling.
fn chunk_cols(rows: usize, cols: usize) -> usize {
    (16384 / rows.max(1)).clamp(1, cols.max(1))
}

/// `f(col_index, column)` on every column of `a`, in parallel.
fn par_cols(a: &mut Mat<f32>, f: impl Fn(usize, &mut [f32]) + Sync) {
    let (rows, cols) = (a.nrows(), a.ncols());
    if cols == 0 {
        return;
    }
    let chunk = chunk_cols(rows, cols);
    a.as_mut()
        .par_col_chunks_mut(chunk)
        .enumerate()
        .for_each(|(ci, mut part)| {
            for j in 0..part.ncols() {
                let col = part
                    .as_mut()
                    .col_mut(j)
                    .try_as_col_major_mut()
                    .expect("faer columns are contiguous")
                    .as_slice_mut();
                f(ci * chunk + j, col);
            }
        });
}

/// The RMSNorm of one segment, as transformers computes it in f32.
pub(crate) fn rmsnorm_segment(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let mut ss = 0f32;
    for &v in x {
        ss += v * v;
    }
    let r = 1.0 / (ss / x.len() as f32 + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = g * (v * r);
    }
}

/// `e^x` for every element, in place: Cephes' `expf` (range reduction by ln 2 in two parts,
/// a degree-5 polynomial), branch-free so it vectorises; within 2 ulp of the correctly
/// rounded value on `[−87.3, 88]`, inputs clamped to that range (`e^{−87.3} ≈ 1.2e−38` stands
/// for anything smaller, `e^{88}` for anything larger), NaN stays NaN. glibc's scalar `expf`
/// was a quarter of the whole forward (vocabulary softmax, attention softmax, SiLU).
pub(crate) fn exp_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features the function is compiled for were just detected.
            unsafe { exp_avx2(xs) };
            return;
        }
    }
    exp_generic(xs);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_avx2(xs: &mut [f32]) {
    exp_generic(xs);
}

#[inline(always)]
fn exp_generic(xs: &mut [f32]) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    for x in xs.iter_mut() {
        let v = x.clamp(-87.3, 88.0);
        let t = v * LOG2E + MAGIC;
        let n = t - MAGIC;
        let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
        let r = v - n * C1 - n * C2;
        let mut p = 1.987_569_1e-4;
        p = p * r + 1.398_199_9e-3;
        p = p * r + 8.333_452e-3;
        p = p * r + 4.166_579_6e-2;
        p = p * r + 1.666_666_5e-1;
        p = p * r + 0.5;
        let e = p * (r * r) + r + 1.0;
        *x = e * f32::from_bits(((ni + 127) << 23) as u32);
    }
}

/// `g ← g / (1 + e^{−g}) · u` over two columns, through [`exp_in_place`].
fn silu_mul_col(g: &mut [f32], u: &[f32], scratch: &mut Vec<f32>) {
    scratch.clear();
    scratch.extend(g.iter().map(|&v| -v));
    exp_in_place(scratch);
    for ((gv, &e), &uv) in g.iter_mut().zip(scratch.iter()).zip(u) {
        *gv = *gv / (1.0 + e) * uv;
    }
}

impl Forward for CpuBackend {
    fn gather(&self, table: &Mat<f32>, ids: &Vec<u32>) -> Result<Mat<f32>> {
        let (d, vocab) = (table.nrows(), table.ncols());
        let mut out = Mat::<f32>::zeros(d, ids.len());
        par_cols(&mut out, |t, col| {
            let id = ids[t] as usize;
            assert!(id < vocab, "gather: id {id} ≥ vocab {vocab}");
            col.copy_from_slice(table.col_as_slice(id));
        });
        Ok(out)
    }

    fn rmsnorm(&self, x: &Mat<f32>, w: &Mat<f32>, dim: usize, eps: f32) -> Result<Mat<f32>> {
        let rows = x.nrows();
        assert!(
            dim > 0 && rows % dim == 0,
            "rmsnorm: {rows} rows, segments of {dim}"
        );
        assert_eq!((w.nrows(), w.ncols()), (dim, 1), "rmsnorm: weight shape");
        let w = w.col_as_slice(0);
        let mut out = Mat::<f32>::zeros(rows, x.ncols());
        par_cols(&mut out, |t, col| {
            let xc = x.col_as_slice(t);
            for (o, xs) in col.chunks_exact_mut(dim).zip(xc.chunks_exact(dim)) {
                rmsnorm_segment(xs, w, eps, o);
            }
        });
        Ok(out)
    }

    fn add_bias(&self, y: &mut Mat<f32>, b: &Mat<f32>) -> Result<()> {
        assert_eq!(
            (b.nrows(), b.ncols()),
            (y.nrows(), 1),
            "add_bias: bias shape"
        );
        let b = b.col_as_slice(0);
        par_cols(y, |_, col| {
            for (v, &bi) in col.iter_mut().zip(b) {
                *v += bi;
            }
        });
        Ok(())
    }

    fn rope(&self, x: &mut Mat<f32>, table: &Mat<f32>, head_dim: usize) -> Result<()> {
        assert!(head_dim % 2 == 0, "rope: odd head_dim {head_dim}");
        assert_eq!(table.nrows(), head_dim, "rope: table rows");
        assert!(x.nrows() % head_dim == 0, "rope: rows not whole heads");
        let seqlen = table.ncols();
        assert!(
            seqlen > 0 && x.ncols() % seqlen == 0,
            "rope: tokens not whole sequences"
        );
        let h = head_dim / 2;
        par_cols(x, |t, col| {
            let cs = table.col_as_slice(t % seqlen);
            let (cos, sin) = cs.split_at(h);
            for head in col.chunks_exact_mut(head_dim) {
                let (a, b) = head.split_at_mut(h);
                for i in 0..h {
                    let (xa, xb) = (a[i], b[i]);
                    a[i] = xa * cos[i] - xb * sin[i];
                    b[i] = xb * cos[i] + xa * sin[i];
                }
            }
        });
        Ok(())
    }

    fn attention(
        &self,
        q: &Mat<f32>,
        k: &Mat<f32>,
        v: &Mat<f32>,
        spec: &AttnSpec,
    ) -> Result<Mat<f32>> {
        let tokens = q.ncols();
        spec.check(q.nrows(), k.nrows(), v.nrows(), tokens);
        assert_eq!(
            (k.ncols(), v.ncols()),
            (tokens, tokens),
            "attention: token counts"
        );
        let (hd, l) = (spec.head_dim, spec.seqlen);
        let group = spec.n_heads / spec.n_kv_heads;
        let nseq = tokens / l;
        // one task per (sequence, head): two triangular products and a causal softmax
        let parts: Vec<Mat<f32>> = (0..nseq * spec.n_heads)
            .into_par_iter()
            .map(|task| {
                let (s, a) = (task / spec.n_heads, task % spec.n_heads);
                let kvh = a / group;
                let qh = q.as_ref().submatrix(a * hd, s * l, hd, l);
                let kh = k.as_ref().submatrix(kvh * hd, s * l, hd, l);
                let vh = v.as_ref().submatrix(kvh * hd, s * l, hd, l);
                attend_one(qh, kh, vh, spec.scale)
            })
            .collect();
        let mut out = Mat::<f32>::zeros(spec.n_heads * hd, tokens);
        for (task, part) in parts.iter().enumerate() {
            let (s, a) = (task / spec.n_heads, task % spec.n_heads);
            out.as_mut()
                .submatrix_mut(a * hd, s * l, hd, l)
                .copy_from(part.as_ref());
        }
        Ok(out)
    }

    fn silu_mul(&self, gate: &mut Mat<f32>, up: &Mat<f32>) -> Result<()> {
        assert_eq!(
            (gate.nrows(), gate.ncols()),
            (up.nrows(), up.ncols()),
            "silu_mul: shapes"
        );
        par_cols(gate, |t, col| {
            SCRATCH.with_borrow_mut(|s| silu_mul_col(col, up.col_as_slice(t), s));
        });
        Ok(())
    }

    fn nll(&self, logits: &Mat<f32>, targets: &Vec<u32>) -> Result<Mat<f32>> {
        let (vocab, tokens) = (logits.nrows(), logits.ncols());
        assert_eq!(targets.len(), tokens, "nll: one target per column");
        let mut out = Mat::<f32>::zeros(tokens, 1);
        let vals: Vec<f32> = (0..tokens)
            .into_par_iter()
            .map(|t| {
                let z = logits.col_as_slice(t);
                let tgt = targets[t] as usize;
                assert!(tgt < vocab, "nll: target {tgt} ≥ vocab {vocab}");
                let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                SCRATCH.with_borrow_mut(|e| {
                    e.clear();
                    e.extend(z.iter().map(|&x| x - m));
                    exp_in_place(e);
                    let sum: f64 = e.iter().map(|&x| f64::from(x)).sum();
                    ((f64::from(m) + sum.ln()) - f64::from(z[tgt])) as f32
                })
            })
            .collect();
        out.col_as_slice_mut(0).copy_from_slice(&vals);
        Ok(out)
    }
}

/// One head of one sequence: `S = kᵀq` (upper triangle: key `j ≤` query `t`), scaled, softmax
/// down each column, `o = v·P` with `P` upper triangular. `hd × l` in, `hd × l` out.
fn attend_one(q: MatRef<'_, f32>, k: MatRef<'_, f32>, v: MatRef<'_, f32>, scale: f32) -> Mat<f32> {
    let l = q.ncols();
    let mut s = Mat::<f32>::zeros(l, l);
    tri::matmul(
        s.as_mut(),
        BlockStructure::TriangularUpper,
        Accum::Replace,
        k.transpose(),
        BlockStructure::Rectangular,
        q,
        BlockStructure::Rectangular,
        scale,
        Par::Seq,
    );
    softmax_causal(s.as_mut());
    let mut o = Mat::<f32>::zeros(q.nrows(), l);
    tri::matmul(
        o.as_mut(),
        BlockStructure::Rectangular,
        Accum::Replace,
        v,
        BlockStructure::Rectangular,
        s.as_ref(),
        BlockStructure::TriangularUpper,
        1.0,
        Par::Seq,
    );
    o
}

/// Softmax of `s[0..=t, t]` for every column `t`; entries below the diagonal are set to 0.
fn softmax_causal(mut s: MatMut<'_, f32>) {
    let l = s.ncols();
    for t in 0..l {
        let col = s
            .as_mut()
            .col_mut(t)
            .try_as_col_major_mut()
            .expect("contiguous")
            .as_slice_mut();
        let (live, dead) = col.split_at_mut(t + 1);
        let m = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for x in live.iter_mut() {
            *x -= m;
        }
        exp_in_place(live);
        let sum: f32 = live.iter().sum();
        for x in live.iter_mut() {
            *x /= sum;
        }
        dead.fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::exp_in_place;

    /// Cephes' expf is documented at ~1 ulp on its range; allow 2 ulp relative.
    const EXP_REL_TOL: f64 = 2.0 * f32::EPSILON as f64;

    #[test]
    fn fast_exp_matches_f64_exp() {
        let xs: Vec<f32> = (0..200_001)
            .map(|i| -87.0 + 175.0 * i as f32 / 200_000.0)
            .collect();
        let mut e = xs.clone();
        exp_in_place(&mut e);
        let mut worst = (0f64, 0f32);
        for (&x, &got) in xs.iter().zip(&e) {
            let want = f64::from(x).exp();
            let rel = (f64::from(got) - want).abs() / want;
            if rel > worst.0 {
                worst = (rel, x);
            }
        }
        assert!(
            worst.0 <= EXP_REL_TOL,
            "exp: worst relative error {:e} at x = {}",
            worst.0,
            worst.1
        );
        let mut edge = [0.0f32, -200.0, 200.0, f32::NAN, -0.0];
        exp_in_place(&mut edge);
        assert_eq!(edge[0], 1.0);
        assert!(edge[1] >= 0.0 && edge[1] < 1e-37, "e^-200 → {}", edge[1]);
        assert!(edge[2].is_finite() && edge[2] > 1e38, "e^200 → {}", edge[2]);
        assert!(edge[3].is_nan(), "NaN must stay NaN");
        assert_eq!(edge[4], 1.0);
    }
}

//! CPU twin of the forward family ([`Forward`]): faer products for attention, and column-
//! parallel loops (rayon, each column computed by one thread in a fixed order, so results do
//! not depend on the thread count) for the rest. The reference the GPU kernels are checked
//! against.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::cpu::CpuBackend;
use super::forward::{AttnSpec, Forward};
use crate::grid::round_ties_even;
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

/// Largest code of a `bits`-bit signed grid, `2^(bits−1) − 1` (as the exact small float).
fn fake_quant_qmax(bits: u32) -> f32 {
    ((1u32 << (bits - 1)) - 1) as f32
}

/// [`Forward::fake_quant`] of one segment: `s = max |x| / qmax`, then
/// `x ← s · clamp(round(x / s), −qmax − 1, qmax)`, ties to even, a zero segment untouched.
/// Written op for op like `shaders/fake_quant.wgsl` (a true division `x / s`, not a product
/// with `1/s`; the clamp as compare-and-replace) so that the two agree bit for bit.
pub(crate) fn fake_quant_segment(x: &mut [f32], qmax: f32) {
    // max is exact in any order, so the GPU's tree finds the same `a`
    let a = x.iter().fold(0f32, |m, &v| m.max(v.abs()));
    if a == 0.0 {
        return;
    }
    let s = a / qmax;
    for v in x.iter_mut() {
        *v = s * round_ties_even(*v / s).clamp(-qmax - 1.0, qmax);
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

    fn fake_quant(&self, x: &mut Mat<f32>, dim: usize, bits: u32) -> Result<()> {
        let rows = x.nrows();
        assert!(
            (2..=8).contains(&bits),
            "fake_quant: bits {bits} not in 2..=8"
        );
        assert!(
            dim > 0 && rows % dim == 0,
            "fake_quant: {rows} rows, segments of {dim}"
        );
        let qmax = fake_quant_qmax(bits);
        par_cols(x, |_, col| {
            for seg in col.chunks_exact_mut(dim) {
                fake_quant_segment(seg, qmax);
            }
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

/// Queries per block of [`attend_one`]: the block's scores (`≤ seqlen × QBLK` f32) stay in
/// cache, and the masked part of the diagonal block costs `QBLK/2` wasted keys per query.
const QBLK: usize = 128;

/// One head of one sequence, a block of `QBLK` queries `[t0, t1)` at a time: scores
/// `S = scale · k[:, ..t1]ᵀ q[:, t0..t1]` (one product), a causal softmax down each column
/// (keys `j ≤ t`; the rest set to 0), `o[:, t0..t1] = v[:, ..t1] · S`. `hd × l` in and out.
fn attend_one(q: MatRef<'_, f32>, k: MatRef<'_, f32>, v: MatRef<'_, f32>, scale: f32) -> Mat<f32> {
    let l = q.ncols();
    let mut o = Mat::<f32>::zeros(q.nrows(), l);
    let mut s = Mat::<f32>::zeros(l, QBLK.min(l));
    for t0 in (0..l).step_by(QBLK) {
        let t1 = (t0 + QBLK).min(l);
        let mut sb = s.as_mut().submatrix_mut(0, 0, t1, t1 - t0);
        matmul(
            sb.as_mut(),
            Accum::Replace,
            k.subcols(0, t1).transpose(),
            q.subcols(t0, t1 - t0),
            scale,
            Par::Seq,
        );
        super::cpu::settle(Par::Seq);
        softmax_causal(sb.as_mut(), t0);
        matmul(
            o.as_mut().subcols_mut(t0, t1 - t0),
            Accum::Replace,
            v.subcols(0, t1),
            sb.as_ref(),
            1.0,
            Par::Seq,
        );
        super::cpu::settle(Par::Seq);
    }
    o
}

/// Column `c` of `s` holds the scores of query `t0 + c` against keys `0..s.nrows()`:
/// softmax over keys `0..=t0 + c`, the later (future) keys set to 0.
fn softmax_causal(mut s: MatMut<'_, f32>, t0: usize) {
    for c in 0..s.ncols() {
        let col = s
            .as_mut()
            .col_mut(c)
            .try_as_col_major_mut()
            .expect("contiguous")
            .as_slice_mut();
        let (live, dead) = col.split_at_mut(t0 + c + 1);
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
    use crate::backend::cpu::CpuBackend;
    use crate::backend::{AttnSpec, Backend, Forward};

    /// Blocked f32 attention vs a brute-force f64 one: scores of ≤ 300 terms, softmax sums of
    /// ≤ 300 terms, in f32: ~1e-6 relative.
    const ATTN_REL_TOL: f64 = 1e-5;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Causal GQA attention by definition, in f64, column-major like the seam.
    fn naive(q: &[f32], k: &[f32], v: &[f32], s: &AttnSpec, tokens: usize) -> Vec<f64> {
        let (hd, l) = (s.head_dim, s.seqlen);
        let (qr, kr) = (s.n_heads * hd, s.n_kv_heads * hd);
        let mut out = vec![0f64; qr * tokens];
        for t in 0..tokens {
            let start = t / l * l;
            for a in 0..s.n_heads {
                let kvh = a / (s.n_heads / s.n_kv_heads);
                let scores: Vec<f64> = (start..=t)
                    .map(|j| {
                        (0..hd)
                            .map(|i| {
                                q[t * qr + a * hd + i] as f64 * k[j * kr + kvh * hd + i] as f64
                            })
                            .sum::<f64>()
                            * s.scale as f64
                    })
                    .collect();
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = w.iter().sum();
                for i in 0..hd {
                    out[t * qr + a * hd + i] = (start..=t)
                        .zip(&w)
                        .map(|(j, wj)| wj / z * v[j * kr + kvh * hd + i] as f64)
                        .sum();
                }
            }
        }
        out
    }

    #[test]
    fn attention_matches_brute_force() {
        let be = CpuBackend::new();
        // seqlen 300 spans three query blocks; 2 sequences; GQA 6 over 2
        for &(nh, nkv, hd, l, nseq) in &[(6, 2, 16, 300, 2), (4, 4, 8, 5, 3), (3, 1, 32, 129, 1)] {
            let s = AttnSpec {
                n_heads: nh,
                n_kv_heads: nkv,
                head_dim: hd,
                seqlen: l,
                scale: 0.3,
            };
            let t = l * nseq;
            let mut seed = (nh * 1000 + l) as u64;
            let mut rnd = |n: usize| (0..n).map(|_| 2.0 * lcg(&mut seed)).collect::<Vec<f32>>();
            let (q, k, v) = (rnd(nh * hd * t), rnd(nkv * hd * t), rnd(nkv * hd * t));
            let (qm, km, vm) = (
                be.upload(nh * hd, t, &q).unwrap(),
                be.upload(nkv * hd, t, &k).unwrap(),
                be.upload(nkv * hd, t, &v).unwrap(),
            );
            let got = be
                .download(&be.attention(&qm, &km, &vm, &s).unwrap())
                .unwrap();
            let want = naive(&q, &k, &v, &s, t);
            let num: f64 = got
                .iter()
                .zip(&want)
                .map(|(&g, &w)| (g as f64 - w).powi(2))
                .sum();
            let den: f64 = want.iter().map(|w| w * w).sum();
            let rel = (num / den).sqrt();
            assert!(rel <= ATTN_REL_TOL, "{s:?}: relative error {rel:e}");
        }
    }

    /// Fake quantization by its definition, one scalar at a time, with std's rounding:
    /// `qmax = 2^(bits−1) − 1`, `s = max |x| / qmax` per segment, `s · clamp(round(x / s))`.
    fn fake_quant_naive(x: &[f32], rows: usize, dim: usize, bits: u32) -> Vec<f32> {
        let qmax = (2f32).powi(bits as i32 - 1) - 1.0;
        let mut out = x.to_vec();
        for seg in out.chunks_mut(dim) {
            debug_assert_eq!(rows % dim, 0);
            let mut a = 0f32;
            for &v in seg.iter() {
                if v.abs() > a {
                    a = v.abs();
                }
            }
            if a == 0.0 {
                continue;
            }
            let s = a / qmax;
            for v in seg.iter_mut() {
                let mut q = (*v / s).round_ties_even();
                if q < -qmax - 1.0 {
                    q = -qmax - 1.0;
                }
                if q > qmax {
                    q = qmax;
                }
                *v = s * q;
            }
        }
        out
    }

    #[test]
    fn fake_quant_matches_brute_force() {
        let be = CpuBackend::new();
        let (rows, tokens) = (72, 37);
        for bits in [8, 4, 2] {
            let qmax = (1u32 << (bits - 1)) as f32 - 1.0;
            for dim in [72, 8] {
                let mut seed = (bits as u64) * 100 + dim as u64;
                let mut x: Vec<f32> = (0..rows * tokens).map(|_| 3.0 * lcg(&mut seed)).collect();
                // segment 0 of column 1: exact ties — the max is qmax · s with s = 1/16, the
                // rest (k + ½) · s with |k + ½| < qmax, so x / s lands on a half exactly and
                // must round to the even neighbour
                let s = 0.0625f32;
                let q = qmax as usize;
                let seg = &mut x[rows..rows + dim];
                seg[0] = -qmax * s;
                for (i, v) in seg.iter_mut().enumerate().skip(1) {
                    *v = ((i % (2 * q)) as f32 - qmax + 0.5) * s;
                }
                // column 2: all zeros (first segment −0) stay exactly as they were
                x[2 * rows..3 * rows].fill(0.0);
                x[2 * rows..2 * rows + dim].fill(-0.0);
                let mut m = be.upload(rows, tokens, &x).unwrap();
                be.fake_quant(&mut m, dim, bits).unwrap();
                let got = be.download(&m).unwrap();
                let want = fake_quant_naive(&x, rows, dim, bits);
                let bad: Vec<String> = (0..got.len())
                    .filter(|&i| got[i].to_bits() != want[i].to_bits())
                    .map(|i| format!("[{i}] x {} got {} want {}", x[i], got[i], want[i]))
                    .collect();
                assert!(
                    bad.is_empty(),
                    "fake_quant bits {bits} dim {dim}: {} of {} differ: {}",
                    bad.len(),
                    got.len(),
                    bad.join(", ")
                );
                // the ties were rounded to even codes (s is a power of two: got / s is exact)
                for i in 1..dim {
                    let c = got[rows + i] / s;
                    assert!(
                        c.fract() == 0.0 && c % 2.0 == 0.0,
                        "bits {bits} dim {dim}: tie {} rounded to code {c}",
                        x[rows + i] / s
                    );
                }
                assert!(got[2 * rows..2 * rows + dim]
                    .iter()
                    .all(|v| v.to_bits() == (-0f32).to_bits()));
            }
        }
    }

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

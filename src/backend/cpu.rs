//! CPU backend (faer): the reference every GPU kernel family is checked against.
//!
//! f32 storage like the GPU. The factorisation runs in f32 by default, like the GPU and the
//! PyTorch references (half the time of f64 and, on the 4096-wide synthetic layer, the same
//! objective to 3e-5 relative); [`FactorPrecision::F64`] is there for reference runs.
//! Grams use syrk-style products (only the lower triangle is computed while accumulating).

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self as tri, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef, Par};

use super::{Backend, BackendInfo, DampRule, Grams, Region, SweepSpec};
use crate::grid::{clipped_range, shrink, Clip, Grid, GroupParams, MSE_STEPS};
use crate::Result;

/// The faer backend. `par` is the parallelism faer's kernels use (all cores by default);
/// `factor` the precision of the Cholesky factorisation and triangular inverse.
#[derive(Clone, Copy, Debug)]
pub struct CpuBackend {
    pub par: Par,
    pub factor: FactorPrecision,
}

/// Precision of [`Backend::inverse_cholesky`] on the CPU (storage is f32 either way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FactorPrecision {
    #[default]
    F32,
    F64,
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend {
            par: Par::rayon(0),
            factor: FactorPrecision::F32,
        }
    }
}

impl CpuBackend {
    pub fn new() -> Self {
        Self::default()
    }
}

impl CpuBackend {
    /// `c[rc] = alpha · a · op(b) + beta · c[rc]`, `b_structure` describing `op(b)`. faer
    /// runs at half speed on a transposed right operand, so a transposed `b` is first copied
    /// (tiled) into column-major storage.
    #[allow(clippy::too_many_arguments)]
    fn product(
        &self,
        c: &mut Mat<f32>,
        rc: Region,
        alpha: f32,
        a: MatRef<'_, f32>,
        b: MatRef<'_, f32>,
        tb: bool,
        b_structure: BlockStructure,
        beta: f32,
    ) {
        let bt;
        let b = if tb {
            let lower = b_structure == BlockStructure::TriangularLower;
            bt = transposed(b, lower, par_threads(self.par));
            MatRef::from_column_major_slice(&bt, b.ncols(), b.nrows())
        } else {
            b
        };
        let mut cv = view_mut(c, rc);
        assert_eq!(
            (a.nrows(), b.ncols(), a.ncols()),
            (cv.nrows(), cv.ncols(), b.nrows()),
            "product: shapes"
        );
        let accum = scale_for_beta(&mut cv, beta);
        tri::matmul(
            cv,
            BlockStructure::Rectangular,
            accum,
            a,
            BlockStructure::Rectangular,
            b,
            b_structure,
            alpha,
            self.par,
        );
        settle(self.par);
    }
}

/// `bᵀ` as column-major `b.ncols() × b.nrows()` storage, copied in 8 × 8 tiles (faer's copy of
/// a transposed view is about 2× slower at 4096², its writes striding by a power of two),
/// output columns split over `threads`. With `lower`, only the lower triangle of `bᵀ` is
/// copied (the rest stays zero): all a triangular product reads.
fn transposed(b: MatRef<'_, f32>, lower: bool, threads: usize) -> Vec<f32> {
    const TILE: usize = 8;
    let (r, c) = (b.nrows(), b.ncols());
    let mut out = vec![0f32; r * c];
    if r == 0 || c == 0 {
        return out;
    }
    // output column i = row i of b; a thread takes a range of them
    let per = r.div_ceil(threads.max(1)).next_multiple_of(TILE);
    std::thread::scope(|s| {
        for (t, part) in out.chunks_mut(per * c).enumerate() {
            s.spawn(move || {
                let i_base = t * per;
                let ni = part.len() / c;
                for i0 in (0..ni).step_by(TILE) {
                    let i1 = (i0 + TILE).min(ni);
                    // bᵀ[j, i] is in the lower triangle iff j ≥ i
                    let j_start = if lower { i_base + i0 } else { 0 };
                    for j0 in (j_start / TILE * TILE..c).step_by(TILE) {
                        for i in i0..i1 {
                            let col = &mut part[i * c..(i + 1) * c];
                            let lo = if lower { j0.max(i_base + i) } else { j0 };
                            for (j, v) in
                                col.iter_mut().enumerate().take((j0 + TILE).min(c)).skip(lo)
                            {
                                *v = b[(i_base + i, j)];
                            }
                        }
                    }
                }
            });
        }
    });
    out
}

/// Clear the upper halves of the vector registers on the threads `par` ran faer on (this
/// one, and with `Par::Rayon` every pool thread). faer's kernels are AVX2 / AVX-512, chosen
/// at run time, and return with that state in use; the rest of the crate is built for
/// baseline x86-64 (SSE), and on the machines measured here every SSE instruction after that
/// runs slowly until a `vzeroupper` (the clip search 4.7× slower, BENCHMARKS.md). Call it
/// after every faer call whose thread then runs our own loops. Values are not touched.
pub(crate) fn settle(par: Par) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        #[target_feature(enable = "avx")]
        fn zero_upper() {
            std::arch::x86_64::_mm256_zeroupper();
        }
        // SAFETY: the CPU has AVX (checked above), the only requirement of `zero_upper`
        if let Par::Rayon(_) = par {
            rayon::broadcast(|_| unsafe { zero_upper() });
        }
        unsafe { zero_upper() };
    }
}

fn par_threads(par: Par) -> usize {
    match par {
        Par::Seq => 1,
        Par::Rayon(n) => n.get(),
    }
}

fn view(a: &Mat<f32>, r: Region) -> MatRef<'_, f32> {
    a.as_ref().submatrix(r.row0, r.col0, r.rows, r.cols)
}

fn view_mut(a: &mut Mat<f32>, r: Region) -> MatMut<'_, f32> {
    a.as_mut().submatrix_mut(r.row0, r.col0, r.rows, r.cols)
}

fn op(a: MatRef<'_, f32>, t: bool) -> MatRef<'_, f32> {
    if t {
        a.transpose()
    } else {
        a
    }
}

/// A row-major `[tokens, d]` chunk transposed into column-major `tokens × d` storage.
/// Columns are padded (`ld = tokens + 16`) so that a power-of-two token count does not make
/// every write of a tile land in the same cache set; tiles of 64 × 64; both halves of the
/// columns in parallel.
struct TokensMajor {
    data: Vec<f32>,
    tokens: usize,
    ld: usize,
    d: usize,
}

impl TokensMajor {
    fn new(x: &[f32], tokens: usize, d: usize, threads: usize) -> Self {
        const TILE: usize = 64;
        let ld = tokens + 16;
        let mut data = vec![0f32; ld * d];
        let per = d.div_ceil(threads.max(1)).div_ceil(TILE) * TILE;
        std::thread::scope(|s| {
            for (i, part) in data.chunks_mut(per * ld).enumerate() {
                s.spawn(move || {
                    let c_base = i * per;
                    let ncols = part.len() / ld;
                    for r0 in (0..tokens).step_by(TILE) {
                        for c0 in (0..ncols).step_by(TILE) {
                            let c1 = (c0 + TILE).min(ncols);
                            for r in r0..(r0 + TILE).min(tokens) {
                                let row = &x[r * d + c_base + c0..r * d + c_base + c1];
                                for (k, v) in row.iter().enumerate() {
                                    part[(c0 + k) * ld + r] = *v;
                                }
                            }
                        }
                    }
                });
            }
        });
        TokensMajor {
            data,
            tokens,
            ld,
            d,
        }
    }

    fn as_ref(&self) -> MatRef<'_, f32> {
        MatRef::from_column_major_slice_with_stride(&self.data, self.tokens, self.d, self.ld)
    }

    /// `self − other`, elementwise (the same layout), halves in parallel.
    fn minus(&self, other: &TokensMajor, threads: usize) -> TokensMajor {
        assert_eq!(self.data.len(), other.data.len(), "minus: layouts");
        let mut data = vec![0f32; self.data.len()];
        let per = data.len().div_ceil(threads.max(1)).max(1);
        std::thread::scope(|s| {
            for ((out, a), b) in data
                .chunks_mut(per)
                .zip(self.data.chunks(per))
                .zip(other.data.chunks(per))
            {
                s.spawn(move || {
                    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
                        *o = x - y;
                    }
                });
            }
        });
        TokensMajor { data, ..*self }
    }
}

/// `acc ← keep·acc + alpha·aᵀ·b` on the lower triangle (`b = None`: `aᵀa`) or in full;
/// `a`, `b` are column-major `tokens × d`.
fn accumulate_outer(
    acc: &mut Mat<f32>,
    a: MatRef<'_, f32>,
    b: Option<MatRef<'_, f32>>,
    keep: f32,
    alpha: f32,
    par: Par,
) {
    let d = acc.nrows();
    let sym = b.is_none();
    let accum = if keep == 0.0 {
        Accum::Replace
    } else {
        if keep != 1.0 {
            for j in 0..d {
                let start = if sym { j } else { 0 };
                for v in &mut acc.col_as_slice_mut(j)[start..] {
                    *v *= keep;
                }
            }
        }
        Accum::Add
    };
    if sym {
        tri::matmul(
            acc.as_mut(),
            BlockStructure::TriangularLower,
            accum,
            a.transpose(),
            BlockStructure::Rectangular,
            a,
            BlockStructure::Rectangular,
            alpha,
            par,
        );
    } else {
        matmul(acc.as_mut(), accum, a.transpose(), b.unwrap(), alpha, par);
    }
    settle(par);
}

/// `beta = 0`: overwrite (old values, even NaN, ignored); else scale by `beta` and add.
fn scale_for_beta(c: &mut MatMut<'_, f32>, beta: f32) -> Accum {
    if beta == 0.0 {
        return Accum::Replace;
    }
    if beta != 1.0 {
        for j in 0..c.ncols() {
            for i in 0..c.nrows() {
                c[(i, j)] *= beta;
            }
        }
    }
    Accum::Add
}

/// Copies the lower triangle onto the upper one, in 64 × 64 tiles (a plain loop writes along
/// rows of a column-major matrix, a cache miss per element at d = 4096).
fn mirror_lower(a: &mut Mat<f32>) {
    const TILE: usize = 64;
    let d = a.nrows();
    for j0 in (0..d).step_by(TILE) {
        for i0 in (j0..d).step_by(TILE) {
            for j in j0..(j0 + TILE).min(d) {
                for i in i0.max(j + 1)..(i0 + TILE).min(d) {
                    a[(j, i)] = a[(i, j)];
                }
            }
        }
    }
}

impl CpuBackend {
    /// `U` (and the status) for `a + shift·I`, in the configured precision.
    fn inverse_factor(&self, a: &Mat<f32>, shift: f32) -> Result<(Mat<f32>, Mat<f32>)> {
        let d = a.nrows();
        assert_eq!(d, a.ncols(), "inverse_cholesky: square");
        let fail = |col: usize| Mat::from_fn(1, 1, |_, _| (col + 1) as f32);
        let u = match self.factor {
            FactorPrecision::F32 => reversed_inverse_factor::<f32>(a, shift, self.par),
            FactorPrecision::F64 => reversed_inverse_factor::<f64>(a, shift, self.par),
        };
        let u = match u {
            Ok(u) => u,
            Err(col) => return Ok((Mat::zeros(d, d), fail(col))),
        };
        if let Some(bad) = (0..d).find(|&i| !(u[(i, i)].is_finite() && u[(i, i)] > 0.0)) {
            return Ok((u, fail(bad)));
        }
        Ok((u, Mat::zeros(1, 1)))
    }
}

impl Backend for CpuBackend {
    type Mat = Mat<f32>;
    type Idx = Vec<u32>;

    fn info(&self) -> BackendInfo {
        BackendInfo {
            device: "cpu".into(),
            adapter: "faer".into(),
        }
    }

    fn upload(&self, rows: usize, cols: usize, data: &[f32]) -> Result<Mat<f32>> {
        assert_eq!(data.len(), rows * cols, "upload: data length");
        Ok(MatRef::from_column_major_slice(data, rows, cols).to_owned())
    }

    fn zeros(&self, rows: usize, cols: usize) -> Result<Mat<f32>> {
        Ok(Mat::zeros(rows, cols))
    }

    fn shape(&self, a: &Mat<f32>) -> (usize, usize) {
        (a.nrows(), a.ncols())
    }

    fn download(&self, a: &Mat<f32>) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(a.nrows() * a.ncols());
        for j in 0..a.ncols() {
            out.extend_from_slice(a.col_as_slice(j));
        }
        Ok(out)
    }

    fn upload_idx(&self, data: &[u32]) -> Result<Vec<u32>> {
        Ok(data.to_vec())
    }

    fn copy(&self, dst: &mut Mat<f32>, rd: Region, src: &Mat<f32>, rs: Region) -> Result<()> {
        assert_eq!((rd.rows, rd.cols), (rs.rows, rs.cols), "copy: extents");
        view_mut(dst, rd).copy_from(view(src, rs));
        Ok(())
    }

    fn gram_init(&self, d: usize, mismatched: bool, delta: bool) -> Result<Grams<Mat<f32>>> {
        Ok(Grams {
            h: Mat::zeros(d, d),
            g: mismatched.then(|| Mat::zeros(d, d)),
            d: (mismatched && delta).then(|| Mat::zeros(d, d)),
            n: 0,
        })
    }

    fn gram_update(
        &self,
        acc: &mut Grams<Mat<f32>>,
        x: &[f32],
        xq: Option<&[f32]>,
        tokens: usize,
    ) -> Result<()> {
        let d = acc.h.nrows();
        assert_eq!(x.len(), tokens * d, "gram_update: x length");
        assert_eq!(
            xq.is_some(),
            acc.g.is_some(),
            "gram_update: xq iff mismatched"
        );
        if tokens == 0 {
            return Ok(());
        }
        let n_new = acc.n + tokens as u64;
        let keep = (acc.n as f64 / n_new as f64) as f32;
        let alpha = (1.0 / n_new as f64) as f32;
        // A row-major [tokens, d] chunk is the column-major d × tokens matrix Xᵀ. faer's
        // kernels run at half speed when the right operand is a transposed view, so the chunk
        // is copied once to column-major tokens × d and the products take the `XᵀY` form.
        let threads = par_threads(self.par);
        let x = TokensMajor::new(x, tokens, d, threads);
        match xq {
            None => accumulate_outer(&mut acc.h, x.as_ref(), None, keep, alpha, self.par),
            Some(xq) => {
                assert_eq!(xq.len(), tokens * d, "gram_update: xq length");
                let xq = TokensMajor::new(xq, tokens, d, threads);
                accumulate_outer(&mut acc.h, xq.as_ref(), None, keep, alpha, self.par);
                let g = acc.g.as_mut().unwrap();
                accumulate_outer(g, x.as_ref(), Some(xq.as_ref()), keep, alpha, self.par);
                if let Some(dm) = acc.d.as_mut() {
                    let delta = x.minus(&xq, threads);
                    accumulate_outer(dm, delta.as_ref(), None, keep, alpha, self.par);
                }
            }
        }
        acc.n = n_new;
        Ok(())
    }

    fn gram_update_mat(
        &self,
        acc: &mut Grams<Mat<f32>>,
        x: &Mat<f32>,
        xq: Option<&Mat<f32>>,
    ) -> Result<()> {
        // the columns of a d × T matrix, back to back, are the row-major [T, d] tokens
        let flat = |a: &Mat<f32>| -> Vec<f32> {
            let mut v = Vec::with_capacity(a.nrows() * a.ncols());
            for j in 0..a.ncols() {
                v.extend_from_slice(a.col_as_slice(j));
            }
            v
        };
        let d = acc.h.nrows();
        assert_eq!(x.nrows(), d, "gram_update_mat: x rows");
        let xs = flat(x);
        let xqs = xq.map(|q| {
            assert_eq!(
                (q.nrows(), q.ncols()),
                (d, x.ncols()),
                "gram_update_mat: xq shape"
            );
            flat(q)
        });
        self.gram_update(acc, &xs, xqs.as_deref(), x.ncols())
    }

    fn gram_finish(&self, acc: &mut Grams<Mat<f32>>) -> Result<()> {
        mirror_lower(&mut acc.h);
        if let Some(dm) = acc.d.as_mut() {
            mirror_lower(dm);
        }
        Ok(())
    }

    fn axpy(
        &self,
        y: &mut Mat<f32>,
        ry: Region,
        alpha: f32,
        x: &Mat<f32>,
        rx: Region,
        scalar: Option<&Mat<f32>>,
    ) -> Result<()> {
        assert_eq!((ry.rows, ry.cols), (rx.rows, rx.cols), "axpy: extents");
        let a = alpha * scalar.map_or(1.0, |s| s[(0, 0)]);
        for j in 0..ry.cols {
            let xs = &x.col_as_slice(rx.col0 + j)[rx.row0..rx.row0 + rx.rows];
            let ys = &mut y.col_as_slice_mut(ry.col0 + j)[ry.row0..ry.row0 + ry.rows];
            for (yv, xv) in ys.iter_mut().zip(xs) {
                *yv += a * xv;
            }
        }
        Ok(())
    }

    fn add_diag(&self, a: &mut Mat<f32>, alpha: f32, scalar: &Mat<f32>) -> Result<()> {
        assert_eq!(a.nrows(), a.ncols(), "add_diag: square");
        let v = alpha * scalar[(0, 0)];
        for i in 0..a.nrows() {
            a[(i, i)] += v;
        }
        Ok(())
    }

    fn permute(
        &self,
        a: &Mat<f32>,
        rows: Option<&Vec<u32>>,
        cols: Option<&Vec<u32>>,
    ) -> Result<Mat<f32>> {
        let (nr, nc) = (a.nrows(), a.ncols());
        let mut out = Mat::<f32>::zeros(nr, nc);
        for j in 0..nc {
            let src = a.col_as_slice(cols.map_or(j, |p| p[j] as usize));
            let dst = out.col_as_slice_mut(j);
            match rows {
                None => dst.copy_from_slice(src),
                Some(p) => {
                    for (v, &i) in dst.iter_mut().zip(p.iter()) {
                        *v = src[i as usize];
                    }
                }
            }
        }
        Ok(out)
    }

    fn fix_dead(&self, h: &mut Mat<f32>, w: &mut Mat<f32>, dead: &Vec<u32>) -> Result<()> {
        for &j in dead {
            let j = j as usize;
            h[(j, j)] = 1.0;
            w.col_as_slice_mut(j).fill(0.0);
        }
        Ok(())
    }

    fn gemm(
        &self,
        c: &mut Mat<f32>,
        rc: Region,
        alpha: f32,
        a: &Mat<f32>,
        ra: Region,
        ta: bool,
        b: &Mat<f32>,
        rb: Region,
        tb: bool,
        beta: f32,
    ) -> Result<()> {
        let a = op(view(a, ra), ta);
        self.product(
            c,
            rc,
            alpha,
            a,
            view(b, rb),
            tb,
            BlockStructure::Rectangular,
            beta,
        );
        Ok(())
    }

    fn trmm_right(
        &self,
        c: &mut Mat<f32>,
        rc: Region,
        alpha: f32,
        a: &Mat<f32>,
        ra: Region,
        u: &Mat<f32>,
        ru: Region,
        tu: bool,
        beta: f32,
    ) -> Result<()> {
        assert_eq!(ru.rows, ru.cols, "trmm_right: u must be square");
        let structure = if tu {
            BlockStructure::TriangularLower
        } else {
            BlockStructure::TriangularUpper
        };
        self.product(c, rc, alpha, view(a, ra), view(u, ru), tu, structure, beta);
        Ok(())
    }

    fn gram_t(&self, a: &Mat<f32>) -> Result<Mat<f32>> {
        let n = a.ncols();
        let mut c = Mat::<f32>::zeros(n, n);
        accumulate_outer(&mut c, a.as_ref(), None, 0.0, 1.0, self.par);
        mirror_lower(&mut c);
        Ok(c)
    }

    fn dot_cols(&self, a: &Mat<f32>, ra: Region, b: &Mat<f32>, rb: Region) -> Result<Mat<f32>> {
        assert_eq!((ra.rows, ra.cols), (rb.rows, rb.cols), "dot_cols: extents");
        Ok(Mat::from_fn(ra.cols, 1, |j, _| {
            let x = &a.col_as_slice(ra.col0 + j)[ra.row0..ra.row0 + ra.rows];
            let y = &b.col_as_slice(rb.col0 + j)[rb.row0..rb.row0 + rb.rows];
            x.iter()
                .zip(y)
                .map(|(p, q)| *p as f64 * *q as f64)
                .sum::<f64>() as f32
        }))
    }

    fn damping(&self, h: &Mat<f32>, rule: DampRule) -> Result<Mat<f32>> {
        let d = h.nrows();
        let lambda = match rule {
            DampRule::MeanDiag(f) => {
                let mean = (0..d).map(|i| h[(i, i)] as f64).sum::<f64>() / d as f64;
                f as f64 * mean
            }
            DampRule::LambdaMax { alpha, iters } => {
                let l = lambda_max(h, iters, self.par);
                settle(self.par);
                alpha as f64 * l
            }
        };
        Ok(Mat::from_fn(1, 1, |_, _| lambda as f32))
    }

    fn inverse_cholesky(&self, a: &Mat<f32>) -> Result<(Mat<f32>, Mat<f32>)> {
        self.inverse_factor(a, 0.0)
    }

    fn inverse_cholesky_damped(
        &self,
        a: &Mat<f32>,
        factor: f32,
        lambda: &Mat<f32>,
    ) -> Result<(Mat<f32>, Mat<f32>)> {
        self.inverse_factor(a, factor * lambda[(0, 0)])
    }

    fn sweep(
        &self,
        spec: &SweepSpec,
        w: &mut Mat<f32>,
        u: &Mat<f32>,
        q: &mut Mat<f32>,
        codes: &mut Mat<f32>,
        scales: &mut Mat<f32>,
        zeros: &mut Mat<f32>,
        err: &mut Mat<f32>,
        group_of: &Vec<u32>,
        c0: usize,
        c1: usize,
    ) -> Result<()> {
        // Rows are independent: split them over threads; each works on a private copy of its
        // rows of the block and returns them (the shared matrices are read-only meanwhile).
        let m = w.nrows();
        let threads = par_threads(self.par);
        let work = m * (c1 - c0) * (c1 - c0);
        let nt = if work < 1 << 16 {
            1
        } else {
            threads.min(m).max(1)
        };
        let chunk = m.div_ceil(nt);
        let ctx = SweepCtx {
            spec,
            w,
            u,
            scales,
            zeros,
            group_of,
            c0,
            c1,
        };
        let parts: Vec<RowsOut> = if nt == 1 {
            vec![ctx.rows(0, m)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..m)
                    .step_by(chunk)
                    .map(|r0| {
                        let ctx = &ctx;
                        s.spawn(move || ctx.rows(r0, (r0 + chunk).min(m)))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("sweep worker"))
                    .collect()
            })
        };
        for p in parts {
            let nr = p.r1 - p.r0;
            for (k, j) in (c0..c1).enumerate() {
                let span = k * nr..(k + 1) * nr;
                w.col_as_slice_mut(j)[p.r0..p.r1].copy_from_slice(&p.w[span.clone()]);
                q.col_as_slice_mut(j)[p.r0..p.r1].copy_from_slice(&p.q[span.clone()]);
                codes.col_as_slice_mut(j)[p.r0..p.r1].copy_from_slice(&p.codes[span.clone()]);
                if spec.propagate {
                    err.col_as_slice_mut(k)[p.r0..p.r1].copy_from_slice(&p.err[span]);
                }
            }
            for (grp, sc, ze) in p.params {
                scales.col_as_slice_mut(grp)[p.r0..p.r1].copy_from_slice(&sc);
                zeros.col_as_slice_mut(grp)[p.r0..p.r1].copy_from_slice(&ze);
            }
        }
        Ok(())
    }

    fn group_params(
        &self,
        grid: Grid,
        clip: Clip,
        col_weights: Option<&[f32]>,
        w: &Mat<f32>,
        group_size: usize,
        scales: &mut Mat<f32>,
        zeros: &mut Mat<f32>,
    ) -> Result<()> {
        use rayon::prelude::*;
        let (m, d) = (w.nrows(), w.ncols());
        // tasks of (group, rows r0..r0+GP_ROWS), each the scalar `Grid::params_clipped` of
        // its rows with the rows as the vector lanes (same operations, same order per row)
        let tasks: Vec<(usize, usize)> = (0..d.div_ceil(group_size))
            .flat_map(|g| (0..m).step_by(GP_ROWS).map(move |r0| (g, r0)))
            .collect();
        let out: Vec<Vec<GroupParams>> = tasks
            .par_iter()
            .map(|&(g, r0)| {
                let rows = r0..(r0 + GP_ROWS).min(m);
                let cols = g * group_size..((g + 1) * group_size).min(d);
                group_params_rows(grid, clip, col_weights, w, rows, cols)
            })
            .collect();
        for (&(g, r0), ps) in tasks.iter().zip(out) {
            for (i, p) in ps.into_iter().enumerate() {
                scales[(r0 + i, g)] = p.scale;
                zeros[(r0 + i, g)] = p.zero;
            }
        }
        Ok(())
    }
}

/// Rows per task of [`CpuBackend::group_params`].
const GP_ROWS: usize = 64;

/// [`Grid::params_clipped`] of the rows `rows` over the columns `cols` of `w`, with the rows
/// as vector lanes (column-major `w`: one column's rows are contiguous). The search compiled
/// for AVX2 where the CPU has it (8 lanes instead of baseline x86-64's 4): the same
/// operations in the same order per lane (no FMA, no reassociation), so the same bits.
fn group_params_rows(
    grid: Grid,
    clip: Clip,
    col_weights: Option<&[f32]>,
    w: &Mat<f32>,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> Vec<GroupParams> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn avx2(
            grid: Grid,
            clip: Clip,
            col_weights: Option<&[f32]>,
            w: &Mat<f32>,
            rows: std::ops::Range<usize>,
            cols: std::ops::Range<usize>,
        ) -> Vec<GroupParams> {
            group_params_lanes(grid, clip, col_weights, w, rows, cols)
        }
        // SAFETY: the CPU has AVX2 (checked above), the only requirement of `avx2`
        return unsafe { avx2(grid, clip, col_weights, w, rows, cols) };
    }
    group_params_lanes(grid, clip, col_weights, w, rows, cols)
}

/// The body of [`group_params_rows`], inlined into each of its builds.
#[inline(always)]
fn group_params_lanes(
    grid: Grid,
    clip: Clip,
    col_weights: Option<&[f32]>,
    w: &Mat<f32>,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> Vec<GroupParams> {
    let n = rows.len();
    let (mut lo, mut hi) = ([f32::INFINITY; GP_ROWS], [f32::NEG_INFINITY; GP_ROWS]);
    for k in cols.clone() {
        let col = &w.col_as_slice(k)[rows.clone()];
        for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(col) {
            *l = l.min(v);
            *h = h.max(v);
        }
    }
    let mut best: Vec<GroupParams> = (0..n)
        .map(|r| grid.params_from_range(lo[r], hi[r]))
        .collect();
    if clip == Clip::MinMax {
        return best;
    }
    for r in 0..n {
        (lo[r], hi[r]) = clipped_range(lo[r], hi[r]);
    }
    let mut best_err = [f32::INFINITY; GP_ROWS];
    let (mut sc, mut ze) = ([1f32; GP_ROWS], [0f32; GP_ROWS]);
    let maxq = grid.maxq();
    for i in 0..MSE_STEPS {
        for r in 0..n {
            let p = grid.params_from_range(lo[r] * shrink(i), hi[r] * shrink(i));
            (sc[r], ze[r]) = (p.scale, p.zero);
        }
        let mut err = [0f32; GP_ROWS];
        let mut v = [0f32; GP_ROWS]; // a full-width column (zero-padded) so the loop vectorises
        for k in cols.clone() {
            v[..n].copy_from_slice(&w.col_as_slice(k)[rows.clone()]);
            let wk = col_weights.map_or(1.0, |cw| cw[k]);
            for r in 0..GP_ROWS {
                // Grid::code and Grid::dequant, spelled out branch-free
                let q = crate::grid::round_ties_even(v[r] / sc[r]) + ze[r];
                let c = q.max(0.0).min(maxq);
                let x = sc[r] * (c - ze[r]) - v[r];
                err[r] += wk * (x * x);
            }
        }
        for r in 0..n {
            if err[r] < best_err[r] {
                best_err[r] = err[r];
                best[r] = GroupParams {
                    scale: sc[r],
                    zero: ze[r],
                };
            }
        }
    }
    best
}

/// `λmax(h)` by power iteration from [`super::power_start`]: `v ← hv/‖hv‖`, then `vᵀhv`.
fn lambda_max(h: &Mat<f32>, iters: u32, par: Par) -> f64 {
    let d = h.nrows();
    let mut v = Mat::<f32>::from_fn(d, 1, |i, _| super::power_start(d)[i]);
    let mut hv = Mat::<f32>::zeros(d, 1);
    let norm = |x: &Mat<f32>| {
        x.col_as_slice(0)
            .iter()
            .map(|a| (*a as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let n0 = norm(&v);
    v.col_as_slice_mut(0)
        .iter_mut()
        .for_each(|a| *a = (*a as f64 / n0) as f32);
    for _ in 0..iters {
        matmul(
            hv.as_mut(),
            Accum::Replace,
            h.as_ref(),
            v.as_ref(),
            1.0,
            par,
        );
        let n = norm(&hv);
        if !(n > 0.0 && n.is_finite()) {
            return n;
        }
        for (a, b) in v.col_as_slice_mut(0).iter_mut().zip(hv.col_as_slice(0)) {
            *a = (*b as f64 / n) as f32;
        }
    }
    matmul(
        hv.as_mut(),
        Accum::Replace,
        h.as_ref(),
        v.as_ref(),
        1.0,
        par,
    );
    let num: f64 = v
        .col_as_slice(0)
        .iter()
        .zip(hv.col_as_slice(0))
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum();
    num / norm(&v).powi(2)
}

/// Precision of the factorisation: `f32` like the GPU and the reference implementations, or
/// `f64`.
trait FactorFloat: faer::traits::RealField + Copy {
    fn of(v: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl FactorFloat for f32 {
    fn of(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl FactorFloat for f64 {
    fn of(v: f32) -> Self {
        v as f64
    }
    fn to_f32(self) -> f32 {
        self as f32
    }
}

/// The upper `U` with `(a + shift·I)⁻¹ = UᵀU` (the shift added in f32, as `add_diag` does), or
/// `Err(j)` when the pivot of column `j` is not positive.
/// With `J` the reversal, `J a J = L Lᵀ` ⇒ `a = (J L J)(J L J)ᵀ` with `J L J` upper ⇒
/// `a⁻¹ = UᵀU`, `U = J L⁻¹ J`. Column `j` of `J a J` is column `d−1−j` of `a` reversed:
/// contiguous copies.
fn reversed_inverse_factor<T: FactorFloat>(
    a: &Mat<f32>,
    shift: f32,
    par: Par,
) -> std::result::Result<Mat<f32>, usize> {
    let d = a.nrows();
    let mut rev = Mat::<T>::zeros(d, d);
    for j in 0..d {
        let src = a.col_as_slice(d - 1 - j);
        for (dst, v) in rev.col_as_slice_mut(j).iter_mut().zip(src.iter().rev()) {
            *dst = T::of(*v);
        }
        // rev[j, j] = a[d−1−j, d−1−j] + shift
        rev[(j, j)] = T::of(src[d - 1 - j] + shift);
    }
    let llt = match rev.llt(faer::Side::Lower) {
        Ok(llt) => llt,
        Err(faer::linalg::cholesky::llt::factor::LltError::NonPositivePivot { index }) => {
            return Err(d - 1 - index);
        }
    };
    drop(rev);
    let mut linv = Mat::<T>::zeros(d, d);
    faer::linalg::triangular_inverse::invert_lower_triangular(linv.as_mut(), llt.L(), par);
    drop(llt);
    settle(par);
    // U[i, j] = L⁻¹[d−1−i, d−1−j]: column j of U is column d−1−j of L⁻¹ reversed, and only
    // its first j+1 entries (the upper triangle) are non-zero.
    let mut u = Mat::<f32>::zeros(d, d);
    for j in 0..d {
        let src = linv.col_as_slice(d - 1 - j);
        let dst = &mut u.col_as_slice_mut(j)[..=j];
        for (k, v) in dst.iter_mut().enumerate() {
            *v = src[d - 1 - k].to_f32();
        }
    }
    Ok(u)
}

/// Read-only inputs of one sweep call, shared by the row workers.
struct SweepCtx<'a> {
    spec: &'a SweepSpec,
    w: &'a Mat<f32>,
    u: &'a Mat<f32>,
    scales: &'a Mat<f32>,
    zeros: &'a Mat<f32>,
    group_of: &'a [u32],
    c0: usize,
    c1: usize,
}

/// What a worker produced for rows `[r0, r1)`: block columns column-major (`nr` per column),
/// and the dynamic group parameters it computed.
struct RowsOut {
    r0: usize,
    r1: usize,
    w: Vec<f32>,
    q: Vec<f32>,
    codes: Vec<f32>,
    err: Vec<f32>,
    params: Vec<(usize, Vec<f32>, Vec<f32>)>,
}

/// Rows quantized together in one pass over a block's columns: the pass's slices of the block
/// (64 rows × 128 columns × 4 arrays) stay in L1/L2 while its rank-1 updates run.
const ROWS_PER_PASS: usize = 64;

impl SweepCtx<'_> {
    /// The sweep of `Backend::sweep` for rows `[r0, r1)`. Rows are independent, so they are
    /// processed in passes of [`ROWS_PER_PASS`] rows (any split gives the same result).
    fn rows(&self, r0: usize, r1: usize) -> RowsOut {
        let (spec, c0, c1) = (self.spec, self.c0, self.c1);
        let nr = r1 - r0;
        let nb = c1 - c0;
        let g = spec.group_size;
        let mut out = RowsOut {
            r0,
            r1,
            w: Vec::with_capacity(nr * nb),
            q: vec![0f32; nr * nb],
            codes: vec![0f32; nr * nb],
            err: vec![0f32; if spec.propagate { nr * nb } else { 0 }],
            // the dynamic groups that start inside the block
            params: (c0..c1)
                .filter(|j| spec.dynamic && j % g == 0)
                .map(|j| (j / g, vec![0f32; nr], vec![0f32; nr]))
                .collect(),
        };
        for j in c0..c1 {
            out.w.extend_from_slice(&self.w.col_as_slice(j)[r0..r1]);
        }
        for a in (0..nr).step_by(ROWS_PER_PASS) {
            self.pass(&mut out, a, (a + ROWS_PER_PASS).min(nr));
        }
        out
    }

    /// Rows `[r0 + a, r0 + b)`: every column of the block in turn — group parameters at a
    /// dynamic group start, quantize, error, rank-1 update of the block's later columns.
    fn pass(&self, out: &mut RowsOut, a: usize, b: usize) {
        let (spec, c0, c1) = (self.spec, self.c0, self.c1);
        let d = self.w.ncols();
        let (nr, n, r0) = (out.r1 - out.r0, b - a, out.r0);
        let g = spec.group_size;
        let grid = spec.grid;
        let (mut sc, mut ze) = ([0f32; ROWS_PER_PASS], [0f32; ROWS_PER_PASS]);
        let (sc, ze) = (&mut sc[..n], &mut ze[..n]);
        let mut cur_grp = usize::MAX;
        for (k, j) in (c0..c1).enumerate() {
            let grp = if spec.dynamic {
                j / g
            } else {
                self.group_of[j] as usize
            };
            if spec.dynamic && j % g == 0 {
                // current values: the block's columns from the private copy, later ones from w
                let (mut lo, mut hi) = (
                    [f32::INFINITY; ROWS_PER_PASS],
                    [f32::NEG_INFINITY; ROWS_PER_PASS],
                );
                for jj in j..(j + g).min(d) {
                    let col: &[f32] = if jj < c1 {
                        &out.w[(jj - c0) * nr + a..(jj - c0) * nr + b]
                    } else {
                        &self.w.col_as_slice(jj)[r0 + a..r0 + b]
                    };
                    for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(col) {
                        *l = l.min(v);
                        *h = h.max(v);
                    }
                }
                let entry = out.params.iter_mut().find(|p| p.0 == grp).expect("group");
                for r in 0..n {
                    let p = grid.params_from_range(lo[r], hi[r]);
                    sc[r] = p.scale;
                    ze[r] = p.zero;
                }
                entry.1[a..b].copy_from_slice(sc);
                entry.2[a..b].copy_from_slice(ze);
                cur_grp = grp;
            } else if grp != cur_grp {
                match out.params.iter().find(|p| p.0 == grp) {
                    Some(p) => {
                        sc.copy_from_slice(&p.1[a..b]);
                        ze.copy_from_slice(&p.2[a..b]);
                    }
                    None => {
                        sc.copy_from_slice(&self.scales.col_as_slice(grp)[r0 + a..r0 + b]);
                        ze.copy_from_slice(&self.zeros.col_as_slice(grp)[r0 + a..r0 + b]);
                    }
                }
                cur_grp = grp;
            }
            let span = k * nr + a..k * nr + b;
            let col = &out.w[span.clone()];
            let codes = &mut out.codes[span.clone()];
            let qs = &mut out.q[span.clone()];
            for r in 0..n {
                let (c, qv) = grid.quantize(
                    col[r],
                    GroupParams {
                        scale: sc[r],
                        zero: ze[r],
                    },
                );
                codes[r] = c;
                qs[r] = qv;
            }
            if !spec.propagate {
                continue;
            }
            let ujj = self.u[(j, j)];
            let e = &mut out.err[span];
            for ((ev, &wv), &qv) in e.iter_mut().zip(col).zip(qs.iter()) {
                *ev = (wv - qv) / ujj;
            }
            let e = &out.err[k * nr + a..k * nr + b];
            for (kk, later) in out.w[(k + 1) * nr..].chunks_exact_mut(nr).enumerate() {
                let ujk = self.u[(j, j + 1 + kk)];
                for (wv, ev) in later[a..b].iter_mut().zip(e) {
                    *wv -= ev * ujk;
                }
            }
        }
    }
}

//! The Backend seam: every stage of a layer's quantization, expressed as operations on
//! matrices resident on one backend. `cpu` (faer) is the reference; `gpu` (WGSL through wgpu)
//! is its twin, checked against it kernel family by kernel family (tests/gpu_*.rs).
//!
//! Conventions (both backends):
//! - Every matrix is **column-major** f32: element `(r, c)` of an `rows × cols` matrix lives at
//!   `c · rows + r`. A weight `W` (`m × d`, rows = output channels) is therefore stored column
//!   by column, which is what the sweep walks. A row-major `[m, d]` tensor from a file is the
//!   column-major `d × m` matrix `Wᵀ`; the caller transposes once on load / store.
//! - Vectors are `n × 1` matrices; device-side scalars (damping λ, status flags) are `1 × 1`.
//! - Codes are stored as exact small floats (0..=255) in an f32 matrix.
//! - A `Region` selects a sub-block of a matrix; operations take `(&Mat, Region)` pairs.
//! - Work is queued in order; nothing is guaranteed to have run until `download`.
//!   The GPU backend never reads back to the host except in `download`.

pub mod cpu;
mod cpu_forward;
pub mod forward;
pub mod gpu;

pub use forward::{AttnSpec, Forward};

use crate::grid::{Clip, Grid};
use crate::Result;

/// A rectangular sub-block `[row0, row0 + rows) × [col0, col0 + cols)` of a matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub row0: usize,
    pub col0: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Region {
    /// The whole of a `rows × cols` matrix.
    pub fn all(rows: usize, cols: usize) -> Self {
        Region {
            row0: 0,
            col0: 0,
            rows,
            cols,
        }
    }
    /// Columns `[c0, c1)`, all `rows` rows.
    pub fn cols(rows: usize, c0: usize, c1: usize) -> Self {
        assert!(c0 <= c1, "bad column range {c0}..{c1}");
        Region {
            row0: 0,
            col0: c0,
            rows,
            cols: c1 - c0,
        }
    }
    /// The transposed extent (rows ↔ cols).
    pub fn t(self) -> Self {
        Region {
            row0: self.col0,
            col0: self.row0,
            rows: self.cols,
            cols: self.rows,
        }
    }
}

/// How the damping λ added to `diag(H)` is chosen (computed on the backend, kept there).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DampRule {
    /// `λ = f · mean(diag H)` (GPTQ's `percdamp`).
    MeanDiag(f32),
    /// `λ = α · λmax(H)`, `λmax` by `iters` steps of power iteration (Qronos). The start vector
    /// is [`power_start`]; the estimate is the Rayleigh quotient `vᵀHv / vᵀv` of the last
    /// iterate.
    LambdaMax { alpha: f32, iters: u32 },
}

/// The fixed start vector of the power iteration: deterministic, positive, not constant.
pub fn power_start(d: usize) -> Vec<f32> {
    (0..d).map(|i| 1.0 + (i % 7) as f32 / 7.0).collect()
}

/// What one sweep call does to each column `j` of `[c0, c1)` of `W` (in this order):
/// 1. if `dynamic` and `j % group_size == 0`: the parameters of group `j / group_size` are
///    computed per row from the *current* `W[r, j .. min(j + group_size, d)]` and stored in
///    `scales[r, grp]`, `zeros[r, grp]` (the caller aligns blocks to group starts, so those
///    columns are up to date);
/// 2. the column's group is `j / group_size` if `dynamic`, else `group_of[j]` (static
///    parameters already in `scales` / `zeros`);
/// 3. `codes[r, j] = code(W[r, j])`, `Q[r, j] = dequant(codes[r, j])` (see `grid.rs`);
/// 4. if `propagate`: `e_r = (W[r, j] − Q[r, j]) / U[j, j]`, `W[r, k] −= e_r · U[j, k]` for
///    `k ∈ (j, c1)`, and `err[r, j − c0] = e_r`.
///
/// Without `propagate`, `U` and `err` are not read or written (callers pass `1 × 1`
/// placeholders). Rows are independent. The trailing update `W[:, c1:] −= err · U[c0:c1, c1:]` is the
/// caller's (a `gemm`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SweepSpec {
    pub grid: Grid,
    /// Columns per group (`d` for per-channel).
    pub group_size: usize,
    pub dynamic: bool,
    pub propagate: bool,
}

/// The calibration statistics of one layer, running means over the tokens seen so far.
pub struct Grams<M> {
    /// `H = X̃ᵀX̃ / N` (`d × d`).
    pub h: M,
    /// `G = XᵀX̃ / N`; `None` when `X̃ = X` (then `G = H`).
    pub g: Option<M>,
    /// `D = (X − X̃)ᵀ(X − X̃) / N`; `None` when `X̃ = X` or not requested.
    pub d: Option<M>,
    /// Tokens accumulated.
    pub n: u64,
}

/// What a backend is, for reports.
#[derive(Clone, Debug, Default)]
pub struct BackendInfo {
    /// `"cpu"` or `"gpu"`.
    pub device: String,
    /// Adapter name and API (`"faer"` for the CPU).
    pub adapter: String,
}

/// Operations a layer's quantization is written against. Shape mismatches are bugs (panics);
/// device failures are `Err`.
pub trait Backend {
    /// A dense column-major f32 matrix resident on the backend.
    type Mat;
    /// A vector of u32 indices resident on the backend.
    type Idx;

    fn info(&self) -> BackendInfo;

    // ----- memory -----
    /// A matrix from column-major host data (`data.len() == rows · cols`).
    fn upload(&self, rows: usize, cols: usize, data: &[f32]) -> Result<Self::Mat>;
    /// A zero matrix.
    fn zeros(&self, rows: usize, cols: usize) -> Result<Self::Mat>;
    /// `(rows, cols)` of a matrix.
    fn shape(&self, a: &Self::Mat) -> (usize, usize);
    /// The whole matrix, column-major, on the host. The only host readback.
    fn download(&self, a: &Self::Mat) -> Result<Vec<f32>>;
    fn upload_idx(&self, data: &[u32]) -> Result<Self::Idx>;
    /// Block until all queued work has run (no data moves). Used only to time stages
    /// honestly; the default (synchronous backends) returns at once.
    fn finish(&self) -> Result<()> {
        Ok(())
    }
    /// `dst[rd] = src[rs]` (same extents).
    fn copy(&self, dst: &mut Self::Mat, rd: Region, src: &Self::Mat, rs: Region) -> Result<()>;

    // ----- gram family -----
    /// Empty running means for `d` features; `mismatched`: also G (and D if `delta`).
    fn gram_init(&self, d: usize, mismatched: bool, delta: bool) -> Result<Grams<Self::Mat>>;
    /// Fold in `tokens` more rows. `x` is row-major `[tokens, d]` (float-model inputs), `xq`
    /// likewise (quantized-model inputs), required iff the grams are mismatched. With
    /// `n' = n + tokens`, `r = n / n'`: `H ← r·H + X̃ᵀX̃/n'`, `G ← r·G + XᵀX̃/n'`,
    /// `D ← r·D + (X−X̃)ᵀ(X−X̃)/n'`.
    fn gram_update(
        &self,
        acc: &mut Grams<Self::Mat>,
        x: &[f32],
        xq: Option<&[f32]>,
        tokens: usize,
    ) -> Result<()>;
    /// [`Backend::gram_update`] from activations already on the backend: `x` (and `xq`) are
    /// `d × tokens` matrices, i.e. token-major `[tokens, d]` — the layout of the forward's
    /// activations. The GPU path never moves them to the host.
    fn gram_update_mat(
        &self,
        acc: &mut Grams<Self::Mat>,
        x: &Self::Mat,
        xq: Option<&Self::Mat>,
    ) -> Result<()>;
    /// Make `h` and `d` fully symmetric (a backend may keep only one triangle while
    /// accumulating).
    fn gram_finish(&self, acc: &mut Grams<Self::Mat>) -> Result<()>;

    // ----- elementwise family -----
    /// `y[ry] += alpha · s · x[rx]` with `s = scalar[0]` if given, else 1.
    fn axpy(
        &self,
        y: &mut Self::Mat,
        ry: Region,
        alpha: f32,
        x: &Self::Mat,
        rx: Region,
        scalar: Option<&Self::Mat>,
    ) -> Result<()>;
    /// `a[i, i] += alpha · scalar[0]` for every `i` of the square matrix `a`.
    fn add_diag(&self, a: &mut Self::Mat, alpha: f32, scalar: &Self::Mat) -> Result<()>;
    /// `out[i, j] = a[rows[i], cols[j]]` (`None` = identity). `rows` / `cols` are
    /// permutations: the output has `a`'s shape.
    fn permute(
        &self,
        a: &Self::Mat,
        rows: Option<&Self::Idx>,
        cols: Option<&Self::Idx>,
    ) -> Result<Self::Mat>;
    /// Dead inputs: for each `j` in `dead`, `h[j, j] = 1` and `w[:, j] = 0`.
    fn fix_dead(&self, h: &mut Self::Mat, w: &mut Self::Mat, dead: &Self::Idx) -> Result<()>;

    // ----- gemm family -----
    /// `c[rc] = alpha · op(a[ra]) · op(b[rb]) + beta · c[rc]`, `op` = transpose when the flag
    /// is set (the region is taken before the transpose). `beta = 0` ignores c's old values
    /// (even NaN).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        c: &mut Self::Mat,
        rc: Region,
        alpha: f32,
        a: &Self::Mat,
        ra: Region,
        ta: bool,
        b: &Self::Mat,
        rb: Region,
        tb: bool,
        beta: f32,
    ) -> Result<()>;
    /// `c[rc] = alpha · a[ra] · op(u[ru]) + beta · c[rc]` where `u[ru]` is square and upper
    /// triangular (its entries below the diagonal are zero and may be skipped). A performance
    /// hint: the default is the dense [`Backend::gemm`].
    #[allow(clippy::too_many_arguments)]
    fn trmm_right(
        &self,
        c: &mut Self::Mat,
        rc: Region,
        alpha: f32,
        a: &Self::Mat,
        ra: Region,
        u: &Self::Mat,
        ru: Region,
        tu: bool,
        beta: f32,
    ) -> Result<()> {
        self.gemm(c, rc, alpha, a, ra, false, u, ru, tu, beta)
    }
    /// `aᵀa` (`cols × cols`, symmetric). A backend may compute one triangle and mirror it;
    /// the default is the dense [`Backend::gemm`].
    fn gram_t(&self, a: &Self::Mat) -> Result<Self::Mat> {
        let (rows, cols) = self.shape(a);
        let mut c = self.zeros(cols, cols)?;
        let (ra, rc) = (Region::all(rows, cols), Region::all(cols, cols));
        self.gemm(&mut c, rc, 1.0, a, ra, true, a, ra, false, 0.0)?;
        Ok(c)
    }
    /// Column-wise dot products: `out[c] = Σ_r a[r, c] · b[r, c]` (`cols × 1`); the host sums
    /// them in f64 after download.
    fn dot_cols(&self, a: &Self::Mat, ra: Region, b: &Self::Mat, rb: Region) -> Result<Self::Mat>;

    // ----- damping / factorisation family -----
    /// `1 × 1` matrix holding λ for `rule` on the symmetric `h`.
    fn damping(&self, h: &Self::Mat, rule: DampRule) -> Result<Self::Mat>;
    /// For SPD `a` (`d × d`): `U` upper triangular with `a⁻¹ = UᵀU` (zeros below the
    /// diagonal), and a `1 × 1` status: 0 if the factorisation succeeded, else `j + 1` for the
    /// first column whose pivot was not positive and finite. (One way: Cholesky of the
    /// index-reversed matrix `J a J = L Lᵀ`, then `U = J L⁻¹ J`.)
    fn inverse_cholesky(&self, a: &Self::Mat) -> Result<(Self::Mat, Self::Mat)>;
    /// [`Backend::inverse_cholesky`] of `a + factor·λ·I`, `λ` the `1 × 1` matrix `lambda`;
    /// `a` is left as it is. The default copies `a` and adds the diagonal; a backend may fold
    /// that into the copy its factorisation makes anyway.
    fn inverse_cholesky_damped(
        &self,
        a: &Self::Mat,
        factor: f32,
        lambda: &Self::Mat,
    ) -> Result<(Self::Mat, Self::Mat)> {
        let mut damped = self.permute(a, None, None)?;
        self.add_diag(&mut damped, factor, lambda)?;
        self.inverse_cholesky(&damped)
    }

    // ----- sweep family -----
    /// Quantize columns `[c0, c1)` of `w`, see [`SweepSpec`]. `q`, `codes`: `m × d`;
    /// `scales`, `zeros`: `m × ngroups`; `err`: `m × (≥ c1 − c0)`; `group_of`: `d` entries.
    #[allow(clippy::too_many_arguments)]
    fn sweep(
        &self,
        spec: &SweepSpec,
        w: &mut Self::Mat,
        u: &Self::Mat,
        q: &mut Self::Mat,
        codes: &mut Self::Mat,
        scales: &mut Self::Mat,
        zeros: &mut Self::Mat,
        err: &mut Self::Mat,
        group_of: &Self::Idx,
        c0: usize,
        c1: usize,
    ) -> Result<()>;
    /// Static group parameters of `w` (`m × d`) for contiguous groups of `group_size` columns
    /// (the last one may be shorter), each [`Grid::params_clipped`] under `clip`: writes
    /// `scales`, `zeros` (`m × ceil(d / group_size)`).
    /// `col_weights` (`d` values, one per column of `w`) weight the squared errors of the
    /// MSE search ([`Grid::params_weighted`]).
    #[allow(clippy::too_many_arguments)]
    fn group_params(
        &self,
        grid: Grid,
        clip: Clip,
        col_weights: Option<&[f32]>,
        w: &Self::Mat,
        group_size: usize,
        scales: &mut Self::Mat,
        zeros: &mut Self::Mat,
    ) -> Result<()>;
}

/// The backend's f32 GEMM rate in GFLOP/s on `m × k · k × n` (best of 3 after one warm-up),
/// the yardstick the benchmarks and `qronos quantize`'s report measure FLOP rates against.
pub fn gemm_rate<B: Backend>(be: &B, m: usize, k: usize, n: usize) -> Result<f64> {
    let a = be.upload(m, k, &vec![0.5; m * k])?;
    let x = be.upload(k, n, &vec![0.25; k * n])?;
    let mut c = be.zeros(m, n)?;
    let (rc, ra, rx) = (Region::all(m, n), Region::all(m, k), Region::all(k, n));
    let mut best = f64::MAX;
    for i in 0..4 {
        let t = std::time::Instant::now();
        be.gemm(&mut c, rc, 1.0, &a, ra, false, &x, rx, false, 0.0)?;
        be.finish()?;
        if i > 0 {
            best = best.min(t.elapsed().as_secs_f64());
        }
    }
    Ok(2.0 * (m * k * n) as f64 / best / 1e9)
}

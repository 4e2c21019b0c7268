//! The algorithms (RTN, GPTQ, Qronos), written once against [`Backend`].
//!
//! Stages of one layer, each its own function: load → grams (streamed over token chunks) →
//! prepare (dead columns, act-order permutation, damping, inverse Cholesky factor) → sweep
//! (GPTQ's lazy-batch sweep; Qronos's correction + least-squares re-solve, then the same sweep)
//! → download → objectives (from Gram traces, no second pass over the tokens).

mod config;
mod objective;
mod sweep;

pub use config::{GroupSize, Method, QuantConfig};
pub use objective::Objectives;
pub use sweep::gptq_sweep;

use std::time::Instant;

use crate::backend::{Backend, DampRule, Grams, SweepSpec};
use crate::grid::Grid;
use crate::{Error, Result};

/// Calibration data of one layer.
#[derive(Clone, Copy, Debug)]
pub enum Calibration<'a> {
    /// `n` tokens: `x` row-major `[n, d]` from the float model, `xq` (optional, `X̃`) from the
    /// quantized model. Absent `xq` means `X̃ = X`.
    Tokens {
        x: &'a [f32],
        xq: Option<&'a [f32]>,
        n: usize,
    },
    /// Precomputed running means, row-major `[d, d]`: `H = X̃ᵀX̃/N`, `G = XᵀX̃/N` and optionally
    /// `XX = XᵀX/N` (needed for the objectives).
    Grams {
        h: &'a [f32],
        g: &'a [f32],
        xx: Option<&'a [f32]>,
    },
}

/// One linear layer to quantize: `w` row-major `[m, d]` (rows = output channels).
#[derive(Clone, Copy, Debug)]
pub struct LayerInput<'a> {
    pub w: &'a [f32],
    pub m: usize,
    pub d: usize,
    pub calib: Calibration<'a>,
}

/// Wall-clock seconds per stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub load: f64,
    pub gram: f64,
    pub factor: f64,
    pub sweep: f64,
    /// The one download of the result and the transposes back to row-major.
    pub readback: f64,
    pub objectives: f64,
    pub total: f64,
}

/// The quantized layer. Row-major like the input: `q`, `codes`: `[m, d]`; `scales`, `zeros`:
/// `[m, ngroups]`; `g_idx`: `[d]`, and `q[r, j] == scales[r, g] · (codes[r, j] − zeros[r, g])`
/// with `g = g_idx[j]`, exactly.
#[derive(Clone, Debug)]
pub struct LayerResult {
    pub m: usize,
    pub d: usize,
    pub ngroups: usize,
    pub q: Vec<f32>,
    pub codes: Vec<i32>,
    pub scales: Vec<f32>,
    pub zeros: Vec<f32>,
    pub g_idx: Vec<i32>,
    /// The λ added to `diag(H)` (after retries); `None` for RTN.
    pub damping: Option<f64>,
    /// Damping retries needed (λ ×10 each).
    pub retries: u32,
    /// Set when the factorisation kept failing and the layer fell back to RTN.
    pub fallback: Option<String>,
    pub objective: Option<Objectives>,
    pub timings: Timings,
}

/// Progress reports and cancellation for long work. `stage` names the stage; return `false`
/// to cancel (the call then ends with [`Error::Cancelled`]).
pub trait Progress {
    fn update(&mut self, stage: &str, done: u64, total: u64) -> bool;
}

/// A [`Progress`] that reports nothing and never cancels.
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&mut self, _: &str, _: u64, _: u64) -> bool {
        true
    }
}

/// Report progress; a `false` from the callback becomes [`Error::Cancelled`].
pub(crate) fn tick(p: &mut dyn Progress, stage: &str, done: u64, total: u64) -> Result<()> {
    if p.update(stage, done, total) {
        Ok(())
    } else {
        Err(Error::Cancelled)
    }
}

/// Tokens per Gram update: big enough for efficient GEMMs, small enough to bound memory.
pub const GRAM_CHUNK_TOKENS: usize = 2048;

/// Host transpose of a row-major `[rows, cols]` array (= column-major `cols × rows`) into
/// column-major `rows × cols`.
pub(crate) fn to_col_major(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    col_to_row_major(a, cols, rows, None)
}

/// Cores to split host-side passes over.
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `diag[j] += Σ_t x[t, j]²` (f64) for a row-major chunk; threads take column ranges, so the
/// summation order (and the result) does not depend on the thread count.
fn add_column_squares(diag: &mut [f64], x: &[f32], d: usize) {
    let per = d.div_ceil(threads()).max(256);
    std::thread::scope(|s| {
        for (i, part) in diag.chunks_mut(per).enumerate() {
            s.spawn(move || {
                let c0 = i * per;
                for row in x.chunks_exact(d) {
                    for (acc, v) in part.iter_mut().zip(&row[c0..]) {
                        *acc += (*v as f64) * (*v as f64);
                    }
                }
            });
        }
    });
}

/// Column-major `rows × cols` → row-major `[rows, cols]`, column `j` going to column
/// `perm[j]` (a permutation) when given.
pub(crate) fn col_to_row_major<T: Copy + Default + Send + Sync>(
    src: &[T],
    rows: usize,
    cols: usize,
    perm: Option<&[usize]>,
) -> Vec<T> {
    col_to_row_major_map(src, rows, cols, perm, |v| v)
}

/// [`col_to_row_major`] applying `f` to every value on the way. Tiled: a power-of-two leading
/// dimension would otherwise send every write of a column to the same cache set.
pub(crate) fn col_to_row_major_map<T: Copy + Sync, U: Copy + Default + Send>(
    src: &[T],
    rows: usize,
    cols: usize,
    perm: Option<&[usize]>,
    f: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    const TILE: usize = 32;
    assert_eq!(src.len(), rows * cols, "transpose: length");
    let mut out = vec![U::default(); rows * cols];
    if rows == 0 || cols == 0 {
        return out;
    }
    // threads take ranges of output rows (a pure copy: any split gives the same result)
    let per = rows.div_ceil(threads()).max(TILE);
    let f = &f;
    std::thread::scope(|s| {
        for (i, part) in out.chunks_mut(per * cols).enumerate() {
            s.spawn(move || {
                let r_base = i * per;
                let nr = part.len() / cols;
                for j0 in (0..cols).step_by(TILE) {
                    for r0 in (0..nr).step_by(TILE) {
                        let r1 = (r0 + TILE).min(nr);
                        for j in j0..(j0 + TILE).min(cols) {
                            let dst_col = perm.map_or(j, |p| p[j]);
                            let col = &src[j * rows + r_base + r0..j * rows + r_base + r1];
                            for (k, &v) in col.iter().enumerate() {
                                part[(r0 + k) * cols + dst_col] = f(v);
                            }
                        }
                    }
                }
            });
        }
    });
    out
}

/// Quantize one layer on `backend`. Validates `cfg` and the input shapes; NaN/Inf checks on
/// the data are the caller's (the IO layer reports them with file and tensor names).
pub fn quantize_layer<B: Backend>(
    backend: &B,
    cfg: &QuantConfig,
    input: &LayerInput<'_>,
    progress: &mut dyn Progress,
) -> Result<LayerResult> {
    cfg.validate()?;
    let t_start = Instant::now();
    let (m, d) = (input.m, input.d);
    assert_eq!(input.w.len(), m * d, "w length");
    let mut t = Timings::default();

    // ----- load -----
    let t0 = Instant::now();
    let w0 = backend.upload(m, d, &to_col_major(input.w, m, d))?;
    backend.finish()?; // stage timings measure completed work, not submission
    t.load = t0.elapsed().as_secs_f64();

    // ----- grams -----
    let t0 = Instant::now();
    let needs_data = cfg.method != Method::Rtn || cfg.objectives;
    let (grams, diag) = if needs_data {
        let (g, diag) = grams(backend, cfg, input, progress)?;
        (Some(g), diag)
    } else {
        (None, vec![1.0; d])
    };
    backend.finish()?; // stage timings measure completed work, not submission
    t.gram = t0.elapsed().as_secs_f64();

    finish_layer(
        backend,
        cfg,
        &w0,
        grams.as_ref(),
        &diag,
        m,
        d,
        t,
        t_start,
        progress,
    )
}

/// Factor, sweep (with damping retries), read back and compute the objectives: the stages
/// after the Grams, shared by [`quantize_layer`] and [`quantize_from_grams`]. `t` holds the
/// load / gram timings so far.
#[allow(clippy::too_many_arguments)]
fn finish_layer<B: Backend>(
    backend: &B,
    cfg: &QuantConfig,
    w0: &B::Mat,
    grams: Option<&Grams<B::Mat>>,
    diag: &[f64],
    m: usize,
    d: usize,
    mut t: Timings,
    t_start: Instant,
    progress: &mut dyn Progress,
) -> Result<LayerResult> {
    let mut out = loop_with_retries(backend, cfg, w0, grams, diag, m, d, &mut t, progress)?;

    // ----- objectives -----
    let t0 = Instant::now();
    if let (true, Some(grams)) = (cfg.objectives, grams) {
        tick(progress, "objectives", 0, 1)?;
        out.objective = objective::compute(backend, w0, &out, grams)?;
    }
    t.objectives = t0.elapsed().as_secs_f64();
    t.total = t_start.elapsed().as_secs_f64();
    out.timings = t;
    Ok(out)
}

/// Quantize one layer whose calibration statistics are already accumulated on the backend
/// (the model pipeline's path: several linears share one input's Grams). `w` is row-major
/// `[m, d]`; `grams` must be finished ([`Backend::gram_finish`]) and hold D when
/// `cfg.objectives` is set and G ≠ H. The sweep order comes from `diag(H)` as the backend
/// holds it ([`grams_diag`]).
#[allow(clippy::too_many_arguments)]
pub fn quantize_from_grams<B: Backend>(
    backend: &B,
    cfg: &QuantConfig,
    w: &[f32],
    m: usize,
    d: usize,
    grams: &Grams<B::Mat>,
    diag: &[f64],
    progress: &mut dyn Progress,
) -> Result<LayerResult> {
    cfg.validate()?;
    let t_start = Instant::now();
    assert_eq!(w.len(), m * d, "w length");
    assert_eq!(diag.len(), d, "diag length");
    let mut t = Timings::default();
    let t0 = Instant::now();
    let w0 = backend.upload(m, d, &to_col_major(w, m, d))?;
    t.load = t0.elapsed().as_secs_f64();
    finish_layer(
        backend,
        cfg,
        &w0,
        Some(grams),
        diag,
        m,
        d,
        t,
        t_start,
        progress,
    )
}

/// FLOPs of quantizing one `m × d` layer from its Grams, counted by their dominant terms as
/// `benches/layer.rs` does: the factorisation ≈ `1.3·d³` (damping, Cholesky, inverse, the
/// factor of the inverse) and `≈ 5·m·d²` for the sweep with its trailing updates, Qronos's
/// first-column correction and the objectives (without objectives `3·m·d²`); RTN `≈ 0`.
pub fn quantize_flops(cfg: &QuantConfig, m: usize, d: usize) -> f64 {
    let (m, d) = (m as f64, d as f64);
    match cfg.method {
        Method::Rtn => 10.0 * m * d,
        _ => 1.3 * d.powi(3) + if cfg.objectives { 5.0 } else { 3.0 } * m * d * d,
    }
}

/// `diag(H)` of finished Grams, read back as `d` values (never the `d × d` matrix):
/// `dot_cols(H, I)` picks each diagonal entry exactly.
pub fn grams_diag<B: Backend>(backend: &B, grams: &Grams<B::Mat>) -> Result<Vec<f64>> {
    let d = backend.shape(&grams.h).0;
    let mut eye = backend.zeros(d, d)?;
    let one = backend.upload(1, 1, &[1.0])?;
    backend.add_diag(&mut eye, 1.0, &one)?;
    let r = crate::backend::Region::all(d, d);
    let diag = backend.download(&backend.dot_cols(&grams.h, r, &eye, r)?)?;
    Ok(diag.into_iter().map(f64::from).collect())
}

/// Accumulates the Gram matrices on the backend; also returns `diag(H)` computed on the host
/// (f64) so ordering decisions (act-order, dead columns) never need a readback and are the
/// same on every backend.
fn grams<B: Backend>(
    backend: &B,
    cfg: &QuantConfig,
    input: &LayerInput<'_>,
    progress: &mut dyn Progress,
) -> Result<(Grams<B::Mat>, Vec<f64>)> {
    let d = input.d;
    match input.calib {
        Calibration::Tokens { x, xq, n } => {
            assert_eq!(x.len(), n * d, "x length");
            let mut acc = backend.gram_init(d, xq.is_some(), cfg.objectives)?;
            let mut diag = vec![0f64; d];
            let total = n as u64;
            for start in (0..n).step_by(GRAM_CHUNK_TOKENS) {
                let end = (start + GRAM_CHUNK_TOKENS).min(n);
                let xs = &x[start * d..end * d];
                let xqs = xq.map(|v| &v[start * d..end * d]);
                add_column_squares(&mut diag, xqs.unwrap_or(xs), d);
                backend.gram_update(&mut acc, xs, xqs, end - start)?;
                tick(progress, "gram", end as u64, total)?;
            }
            backend.gram_finish(&mut acc)?;
            diag.iter_mut().for_each(|v| *v /= n as f64);
            Ok((acc, diag))
        }
        Calibration::Grams { h, g, xx } => {
            let diag = (0..d).map(|i| h[i * d + i] as f64).collect();
            // H is symmetric (row-major = column-major); G must be transposed.
            let dm = xx.map(|xx| {
                // D = XX − H − C − Cᵀ = XX − G − Gᵀ + H   (C = G − H)
                let mut out = vec![0f32; d * d];
                for i in 0..d {
                    for j in 0..d {
                        let v = xx[i * d + j] as f64 - g[i * d + j] as f64 - g[j * d + i] as f64
                            + h[i * d + j] as f64;
                        out[j * d + i] = v as f32;
                    }
                }
                out
            });
            let grams = Grams {
                h: backend.upload(d, d, h)?,
                g: Some(backend.upload(d, d, &to_col_major(g, d, d))?),
                d: match (&dm, cfg.objectives) {
                    (Some(dm), true) => Some(backend.upload(d, d, dm)?),
                    _ => None,
                },
                n: 0,
            };
            Ok((grams, diag))
        }
    }
}

/// Column weights of the [`Clip::HessianMse`] search: `diag(H)` in the order of the matrix
/// whose groups are searched (`perm` = its column order; `None` = original). `None` for
/// other clips and for RTN (no data).
fn col_weights(cfg: &QuantConfig, diag: &[f64], perm: Option<&[usize]>) -> Option<Vec<f32>> {
    if cfg.clip != crate::grid::Clip::HessianMse || cfg.method == Method::Rtn {
        return None;
    }
    Some(match perm {
        None => diag.iter().map(|&v| v as f32).collect(),
        Some(p) => p.iter().map(|&j| diag[j] as f32).collect(),
    })
}

/// The sweep order: identity, or columns by descending `diag(H)` (ties by index).
fn column_order(cfg: &QuantConfig, diag: &[f64]) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..diag.len()).collect();
    if cfg.permutes() {
        perm.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]).then(a.cmp(&b)));
    }
    perm
}

#[allow(clippy::too_many_arguments)]
fn loop_with_retries<B: Backend>(
    backend: &B,
    cfg: &QuantConfig,
    w0: &B::Mat,
    grams: Option<&Grams<B::Mat>>,
    diag: &[f64],
    m: usize,
    d: usize,
    t: &mut Timings,
    progress: &mut dyn Progress,
) -> Result<LayerResult> {
    let mut factor = 1.0f32;
    for retry in 0..=cfg.max_damp_retries {
        let mut res = run_once(backend, cfg, w0, grams, diag, m, d, factor, t, progress)?;
        match res.status {
            0 => {
                let mut out = res.result;
                out.retries = retry;
                return Ok(out);
            }
            col => {
                log::warn!(
                    "Cholesky failed at column {} with damping {:e}; retrying with 10× the damping",
                    col - 1,
                    res.result.damping.unwrap_or(0.0)
                );
                factor *= 10.0;
                res.result.retries = retry;
            }
        }
        if retry == cfg.max_damp_retries {
            log::warn!(
                "factorisation still fails after {} retries: falling back to RTN for this layer",
                cfg.max_damp_retries
            );
            let rtn_cfg = QuantConfig {
                method: Method::Rtn,
                ..cfg.clone()
            };
            let mut out =
                run_once(backend, &rtn_cfg, w0, grams, diag, m, d, 1.0, t, progress)?.result;
            out.fallback = Some(format!(
                "rtn: Cholesky failed at column {} after {} damping retries",
                res.status - 1,
                cfg.max_damp_retries
            ));
            out.retries = retry;
            return Ok(out);
        }
    }
    unreachable!()
}

struct Attempt {
    result: LayerResult,
    /// 0, or 1 + the failing column of the factorisation.
    status: usize,
}

/// One complete attempt with damping multiplier `factor`; the only readbacks are at the end.
#[allow(clippy::too_many_arguments)]
fn run_once<B: Backend>(
    backend: &B,
    cfg: &QuantConfig,
    w0: &B::Mat,
    grams: Option<&Grams<B::Mat>>,
    diag: &[f64],
    m: usize,
    d: usize,
    factor: f32,
    t: &mut Timings,
    progress: &mut dyn Progress,
) -> Result<Attempt> {
    let t0 = Instant::now();
    let grid = Grid::new(cfg.bits, cfg.sym).with_scale_dtype(cfg.scale_dtype);
    let g = cfg.group_size.columns(d);
    let ngroups = d.div_ceil(g);
    let rtn = cfg.method == Method::Rtn;
    let perm: Vec<usize> = if rtn {
        (0..d).collect()
    } else {
        column_order(cfg, diag)
    };
    let perm_u32: Vec<u32> = perm.iter().map(|&p| p as u32).collect();
    let identity = perm.iter().enumerate().all(|(j, &p)| j == p);
    let perm_idx = if identity {
        None
    } else {
        Some(backend.upload_idx(&perm_u32)?)
    };
    let perm_idx = perm_idx.as_ref();
    let dead: Vec<u32> = (0..d as u32).filter(|&j| diag[j as usize] == 0.0).collect();

    // Working copies in sweep order.
    let mut w = backend.permute(w0, None, perm_idx)?;
    let dead_p: Vec<u32> = (0..d as u32)
        .filter(|&j| diag[perm[j as usize]] == 0.0)
        .collect();
    // H and G in sweep order (RTN uses no data)
    // (copies only where the order changes or dead columns must be patched)
    let (h_own, g_own) = match (rtn, grams) {
        (true, _) => (None, None),
        (false, None) => panic!("GPTQ and Qronos need calibration statistics"),
        (false, Some(grams)) => {
            let h = if perm_idx.is_some() || !dead_p.is_empty() {
                let mut h = backend.permute(&grams.h, perm_idx, perm_idx)?;
                if !dead_p.is_empty() {
                    log::info!("{} dead input columns (zero in every token)", dead.len());
                    let idx = backend.upload_idx(&dead_p)?;
                    backend.fix_dead(&mut h, &mut w, &idx)?;
                }
                Some(h)
            } else {
                None
            };
            let g = match (&grams.g, perm_idx) {
                (Some(gm), Some(_)) => Some(backend.permute(gm, perm_idx, perm_idx)?),
                _ => None,
            };
            (h, g)
        }
    };
    let h = h_own.as_ref().or(grams.map(|g| &g.h));
    let gp = g_own.as_ref().or(grams.and_then(|g| g.g.as_ref()));

    // Groups: which group each sweep position belongs to, and the exported g_idx.
    let mut scales = backend.zeros(m, ngroups)?;
    let mut zeros = backend.zeros(m, ngroups)?;
    let dynamic = !rtn && !cfg.static_groups();
    let (group_of, g_idx): (Vec<u32>, Vec<i32>) = if cfg.act_order && !cfg.desc_act && !rtn {
        // static groups over the original contiguous columns, trivial g_idx
        (
            perm.iter().map(|&p| (p / g) as u32).collect(),
            (0..d).map(|k| (k / g) as i32).collect(),
        )
    } else {
        let mut g_idx = vec![0i32; d];
        for (pos, &col) in perm.iter().enumerate() {
            g_idx[col] = (pos / g) as i32;
        }
        ((0..d).map(|j| (j / g) as u32).collect(), g_idx)
    };
    // Hessian-weighted clipping has no Hessian under RTN: the full range (the unweighted
    // MSE search clips the few large weights that matter most, BENCHMARKS.md)
    let clip = match (cfg.clip, rtn) {
        (crate::grid::Clip::HessianMse, true) => crate::grid::Clip::MinMax,
        (c, _) => c,
    };
    if !dynamic {
        if cfg.act_order && !cfg.desc_act && !rtn {
            // parameters of the original contiguous groups: `w` (dead columns zeroed) put
            // back in the original column order
            let mut inverse = vec![0u32; d];
            for (pos, &col) in perm.iter().enumerate() {
                inverse[col] = pos as u32;
            }
            let wz = backend.permute(&w, None, Some(&backend.upload_idx(&inverse)?))?;
            let cw: Option<Vec<f32>> = col_weights(cfg, diag, None);
            backend.group_params(grid, clip, cw.as_deref(), &wz, g, &mut scales, &mut zeros)?;
        } else {
            let cw: Option<Vec<f32>> = col_weights(cfg, diag, Some(&perm));
            backend.group_params(grid, clip, cw.as_deref(), &w, g, &mut scales, &mut zeros)?;
        }
    }
    let group_of = backend.upload_idx(&group_of)?;
    let spec = SweepSpec {
        grid,
        group_size: g,
        dynamic,
        propagate: !rtn,
    };
    let mut q = backend.zeros(m, d)?;
    let mut codes = backend.zeros(m, d)?;

    let (lambda, status) = if rtn {
        t.factor = 0.0;
        let t1 = Instant::now();
        let dummy = backend.zeros(1, 1)?;
        let mut err = backend.zeros(1, 1)?;
        backend.sweep(
            &spec,
            &mut w,
            &dummy,
            &mut q,
            &mut codes,
            &mut scales,
            &mut zeros,
            &mut err,
            &group_of,
            0,
            d,
        )?;
        backend.finish()?; // stage timings measure completed work, not submission
        t.sweep = t1.elapsed().as_secs_f64();
        (None, None)
    } else {
        let h = h.expect("GPTQ and Qronos have calibration statistics");
        tick(progress, "factor", 0, 1)?;
        let rule = match cfg.method {
            Method::Qronos => DampRule::LambdaMax {
                alpha: cfg.qronos_alpha,
                iters: cfg.power_iters,
            },
            _ => DampRule::MeanDiag(cfg.damp_percent),
        };
        let lambda = backend.damping(h, rule)?;
        let (u, status) = backend.inverse_cholesky_damped(h, factor, &lambda)?;
        backend.finish()?; // stage timings measure completed work, not submission
        t.factor = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut start = 0;
        let mut y = None;
        if cfg.method == Method::Qronos {
            y = sweep::qronos_first_column(
                backend,
                &spec,
                sweep::QronosInputs {
                    w: &mut w,
                    h,
                    g: gp,
                    u: &u,
                    lambda: &lambda,
                    damp_factor: factor,
                    h00: if dead_p.first() == Some(&0) {
                        1.0
                    } else {
                        diag[perm[0]]
                    },
                },
                &mut q,
                &mut codes,
                &mut scales,
                &mut zeros,
                &group_of,
            )?;
            start = 1;
        }
        match y.as_mut() {
            Some(y) => sweep::qronos_sweep(
                backend,
                &spec,
                &mut w,
                &u,
                y,
                &mut q,
                &mut codes,
                &mut scales,
                &mut zeros,
                &group_of,
                cfg.block_size,
                progress,
            )?,
            None => sweep::gptq_sweep(
                backend,
                &spec,
                &mut w,
                &u,
                &mut q,
                &mut codes,
                &mut scales,
                &mut zeros,
                &group_of,
                start,
                cfg.block_size,
                progress,
            )?,
        }
        backend.finish()?; // stage timings measure completed work, not submission
        t.sweep = t1.elapsed().as_secs_f64();
        (Some(lambda), Some(status))
    };

    // ----- the readback -----
    let t0 = Instant::now();
    let qv = backend.download(&q)?;
    let cv = backend.download(&codes)?;
    let sv = backend.download(&scales)?;
    let zv = backend.download(&zeros)?;
    let lambda = match &lambda {
        Some(l) => Some(backend.download(l)?[0] as f64 * factor as f64),
        None => None,
    };
    let status = match &status {
        Some(s) => backend.download(s)?[0] as usize,
        None => 0,
    };

    // Undo the permutation: sweep position j holds original column perm[j].
    let qo = col_to_row_major(&qv, m, d, Some(&perm));
    let co = col_to_row_major_map(&cv, m, d, Some(&perm), |c| c as i32);
    let row_major = |v: &[f32]| col_to_row_major(v, m, ngroups, None);
    let (scales, zeros) = (row_major(&sv), row_major(&zv));
    t.readback = t0.elapsed().as_secs_f64();
    Ok(Attempt {
        result: LayerResult {
            m,
            d,
            ngroups,
            q: qo,
            codes: co,
            scales,
            zeros,
            g_idx,
            damping: lambda,
            retries: 0,
            fallback: None,
            objective: None,
            timings: Timings::default(),
        },
        status,
    })
}

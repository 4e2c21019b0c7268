//! sweep family: `sweep` (dynamic and static groups, with and without propagation) and
//! `group_params`, GPU vs CPU. Without propagation (RTN) every code, scale and zero must be
//! bit-identical. With propagation a full GPTQ-style sweep (blocks + trailing gemm, on each
//! backend) is compared by the share of identical codes and by the layer objective
//! `tr(E H Eᵀ) / tr(W H Wᵀ)`, not code by code: one tie flip cascades along a row.

#[path = "common/gpu.rs"]
mod gpu_common;

use gpu_common::{nan_vec, spd, Rng};
use qronos::backend::cpu::CpuBackend;
use qronos::backend::gpu::GpuBackend;
use qronos::backend::{Backend, Region, SweepSpec};
use qronos::grid::{Clip, Grid, GroupParams};

/// Share of codes that must agree after a propagating sweep: f32 rounding differences
/// (fused multiply-adds, summation order in the trailing gemm) flip a few near-ties, and each
/// flip changes the rest of its row a little.
const MIN_SAME_CODES: f64 = 0.97;
/// Relative difference of the layer objectives of the two sweeps.
const OBJ_REL_TOL: f64 = 1e-2;

struct Out {
    q: Vec<f32>,
    codes: Vec<f32>,
    scales: Vec<f32>,
    zeros: Vec<f32>,
}

/// A GPTQ sweep on backend `b`: blocks of `block` columns (cut at group starts when dynamic),
/// each followed by the trailing update `W[:, c1:] −= E · U[c0:c1, c1:]`.
#[allow(clippy::too_many_arguments)]
fn run<B: Backend>(
    b: &B,
    spec: &SweepSpec,
    w0: &[f32],
    u: &[f32],
    m: usize,
    d: usize,
    group_of: &[u32],
    block: usize,
    static_params: bool,
) -> Out {
    let ng = d.div_ceil(spec.group_size);
    let mut w = b.upload(m, d, w0).unwrap();
    let u = b.upload(d, d, u).unwrap();
    let mut q = b.upload(m, d, &nan_vec(m * d)).unwrap();
    let mut codes = b.upload(m, d, &nan_vec(m * d)).unwrap();
    let mut scales = b.upload(m, ng, &nan_vec(m * ng)).unwrap();
    let mut zeros = b.upload(m, ng, &nan_vec(m * ng)).unwrap();
    let mut err = b.upload(m, block, &nan_vec(m * block)).unwrap();
    let gi = b.upload_idx(group_of).unwrap();
    if static_params {
        b.group_params(
            spec.grid,
            Clip::MinMax,
            None,
            &w,
            spec.group_size,
            &mut scales,
            &mut zeros,
        )
        .unwrap();
    }
    let mut c0 = 0;
    while c0 < d {
        let mut c1 = (c0 + block).min(d);
        if spec.dynamic {
            c1 = c1.min((c0 / spec.group_size + 1) * spec.group_size);
        }
        b.sweep(
            spec,
            &mut w,
            &u,
            &mut q,
            &mut codes,
            &mut scales,
            &mut zeros,
            &mut err,
            &gi,
            c0,
            c1,
        )
        .unwrap();
        if spec.propagate && c1 < d {
            let ru = Region {
                row0: c0,
                col0: c1,
                rows: c1 - c0,
                cols: d - c1,
            };
            b.gemm(
                &mut w,
                Region::cols(m, c1, d),
                -1.0,
                &err,
                Region::cols(m, 0, c1 - c0),
                false,
                &u,
                ru,
                false,
                1.0,
            )
            .unwrap();
        }
        c0 = c1;
    }
    Out {
        q: b.download(&q).unwrap(),
        codes: b.download(&codes).unwrap(),
        scales: b.download(&scales).unwrap(),
        zeros: b.download(&zeros).unwrap(),
    }
}

/// `tr(E H Eᵀ) / tr(W H Wᵀ)` with `E = W − Q` (f64 on the host).
fn objective(w: &[f32], q: &[f32], h: &[f32], m: usize, d: usize) -> f64 {
    let quad = |x: &dyn Fn(usize, usize) -> f64| {
        let mut s = 0f64;
        for r in 0..m {
            for i in 0..d {
                let xi = x(r, i);
                for j in 0..d {
                    s += xi * h[j * d + i] as f64 * x(r, j);
                }
            }
        }
        s
    };
    let e = quad(&|r, i| (w[i * m + r] - q[i * m + r]) as f64);
    let n = quad(&|r, i| w[i * m + r] as f64);
    e / n
}

fn bits_differ(a: &[f32], b: &[f32]) -> usize {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count()
}

struct Setup {
    m: usize,
    d: usize,
    w: Vec<f32>,
    h: Vec<f32>,
    u: Vec<f32>,
}

fn setup(seed: u64, m: usize, d: usize) -> Setup {
    let mut rng = Rng::new(seed);
    let w = rng.vec(m * d);
    let h = spd(&mut rng, d, 0.05);
    // One U for both backends (the CPU's), so only the sweep is compared.
    let cpu = CpuBackend::new();
    let (u, st) = cpu
        .inverse_cholesky(&cpu.upload(d, d, &h).unwrap())
        .unwrap();
    assert_eq!(cpu.download(&st).unwrap(), vec![0.0]);
    let u = cpu.download(&u).unwrap();
    Setup { m, d, w, h, u }
}

fn compare(gpu: &GpuBackend, label: &str, s: &Setup, block: usize) {
    let cpu = CpuBackend::new();
    let (m, d) = (s.m, s.d);
    for (bits, sym) in [(4, true), (3, false), (2, true)] {
        for (gs, dynamic, static_params) in [
            (16usize, true, false),
            (d, true, false),
            (16, false, true),
            (d, false, true),
        ] {
            let spec = SweepSpec {
                grid: Grid::new(bits, sym),
                group_size: gs,
                dynamic,
                propagate: true,
            };
            let group_of: Vec<u32> = (0..d).map(|k| (k / gs) as u32).collect();
            let g = run(
                gpu,
                &spec,
                &s.w,
                &s.u,
                m,
                d,
                &group_of,
                block,
                static_params,
            );
            let c = run(
                &cpu,
                &spec,
                &s.w,
                &s.u,
                m,
                d,
                &group_of,
                block,
                static_params,
            );
            let what = format!("{label}: bits {bits} sym {sym} group {gs} dynamic {dynamic}");
            for (name, v) in [
                ("q", &g.q),
                ("codes", &g.codes),
                ("scales", &g.scales),
                ("zeros", &g.zeros),
            ] {
                let bad = gpu_common::non_finite(v);
                assert!(
                    bad.is_empty(),
                    "{what}: {} unwritten (NaN) values in {name}",
                    bad.len()
                );
            }
            let same = g.codes.iter().zip(&c.codes).filter(|(a, b)| a == b).count() as f64
                / (m * d) as f64;
            let og = objective(&s.w, &g.q, &s.h, m, d);
            let oc = objective(&s.w, &c.q, &s.h, m, d);
            let rel = (og - oc).abs() / oc;
            eprintln!("sweep ({what}): same codes {:.4}, objective gpu {og:.6} cpu {oc:.6} (rel diff {rel:.2e})", same);
            assert!(
                same >= MIN_SAME_CODES,
                "{what}: only {same:.4} of codes agree"
            );
            assert!(rel <= OBJ_REL_TOL, "{what}: objectives differ by {rel:e}");
        }
    }
}

#[test]
fn propagating_sweep_agrees_with_cpu() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    compare(&gpu, "device limit", &setup(41, 45, 70), 32);
}

#[test]
fn propagating_sweep_agrees_with_cpu_in_column_panels() {
    // 6 kB bindings: gemm, group_params and the per-channel group ranges (70 × 45 × 4 =
    // 12.6 kB) work in panels; a sweep block's columns of U (20 × 70 × 4 = 5.6 kB) must fit
    // one binding, so blocks are 20 wide.
    let Some(gpu) = gpu_common::backend_with_limit(6_000) else {
        return;
    };
    compare(&gpu, "6 kB bindings", &setup(42, 45, 70), 20);
}

#[test]
fn rtn_sweep_and_group_params_are_bit_exact() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    let cpu = CpuBackend::new();
    let s = setup(43, 37, 83);
    let (m, d) = (s.m, s.d);
    let mut total = 0;
    for bits in 2..=8 {
        for sym in [false, true] {
            for (gs, dynamic) in [(16usize, true), (16, false), (d, true), (5, false)] {
                let spec = SweepSpec {
                    grid: Grid::new(bits, sym),
                    group_size: gs,
                    dynamic,
                    propagate: false,
                };
                let group_of: Vec<u32> = (0..d).map(|k| (k / gs) as u32).collect();
                let g = run(&gpu, &spec, &s.w, &s.u, m, d, &group_of, 24, !dynamic);
                let c = run(&cpu, &spec, &s.w, &s.u, m, d, &group_of, 24, !dynamic);
                let what = format!("bits {bits} sym {sym} group {gs} dynamic {dynamic}");
                assert_eq!(
                    bits_differ(&g.scales, &c.scales),
                    0,
                    "{what}: scales differ"
                );
                assert_eq!(bits_differ(&g.zeros, &c.zeros), 0, "{what}: zeros differ");
                assert_eq!(bits_differ(&g.codes, &c.codes), 0, "{what}: codes differ");
                assert_eq!(bits_differ(&g.q, &c.q), 0, "{what}: q differs");
                total += 1;
            }
        }
    }
    eprintln!("rtn sweep: {total} configurations bit-identical");
}

/// Weighted squared rounding error of one (row, group) under `p`, in f64.
fn group_sq_err(grid: Grid, vals: &[f32], wts: Option<&[f32]>, p: GroupParams) -> f64 {
    vals.iter()
        .enumerate()
        .map(|(k, &v)| {
            let wk = wts.map_or(1.0, |w| w[k] as f64);
            wk * ((grid.dequant(grid.code(v, p), p) - v) as f64).powi(2)
        })
        .sum()
}

/// `Backend::group_params` of an MSE search: (scales, zeros) on the host.
#[allow(clippy::too_many_arguments)]
fn mse_params<B: Backend>(
    b: &B,
    grid: Grid,
    clip: Clip,
    cw: Option<&[f32]>,
    w: &[f32],
    m: usize,
    d: usize,
    gs: usize,
) -> (Vec<f32>, Vec<f32>) {
    let ng = d.div_ceil(gs);
    let wm = b.upload(m, d, w).unwrap();
    let (mut s, mut z) = (b.zeros(m, ng).unwrap(), b.zeros(m, ng).unwrap());
    b.group_params(grid, clip, cw, &wm, gs, &mut s, &mut z)
        .unwrap();
    (b.download(&s).unwrap(), b.download(&z).unwrap())
}

/// `--clip mse` / `hmse` static group parameters (unweighted, and with `diag(H)`-like column
/// weights): the CPU backend equals the scalar `Grid::params_weighted` bit for bit (rows in
/// several vector chunks, short last groups); the GPU agrees with it except where two
/// candidates score within f32 rounding (a fused multiply-add in the error sum may reorder
/// them), and there both choices must round the group equally well (1e-5 relative) — at most
/// 1 % of the groups.
#[test]
fn mse_group_params_agree_with_cpu_and_scalar_grid() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    let cpu = CpuBackend::new();
    let (m, d) = (150, 83);
    let mut rng = Rng::new(47);
    let mut w = rng.vec(m * d);
    for i in (0..w.len()).step_by(29) {
        w[i] *= 6.0; // outliers, so that clipping matters
    }
    for i in 0..d {
        w[i * m + 3] = 0.0; // an all-zero row
    }
    let weights: Vec<f32> = (0..d).map(|_| rng.normal().abs() * 3.0 + 0.01).collect();
    let (mut groups, mut same) = (0usize, 0usize);
    let cases = [(Clip::Mse, None), (Clip::HessianMse, Some(&weights[..]))];
    for ((clip, cw), bits) in cases.iter().flat_map(|c| [2, 3, 4, 8].map(|b| (*c, b))) {
        for sym in [false, true] {
            for gs in [16usize, 5, d] {
                let grid = Grid::new(bits, sym);
                let ng = d.div_ceil(gs);
                let (cs, cz) = mse_params(&cpu, grid, clip, cw, &w, m, d, gs);
                let (gs_, gz) = mse_params(&gpu, grid, clip, cw, &w, m, d, gs);
                let mut clipped = 0;
                for g in 0..ng {
                    for r in 0..m {
                        let cols = g * gs..((g + 1) * gs).min(d);
                        let vals: Vec<f32> = cols.clone().map(|k| w[k * m + r]).collect();
                        let wts = cw.map(|c| &c[cols.clone()]);
                        let want = grid.params_weighted(&vals, wts, clip);
                        let full = grid.params_clipped(&vals, Clip::MinMax);
                        let i = g * m + r;
                        let what =
                            format!("{clip:?} bits {bits} sym {sym} group {gs}: row {r} group {g}");
                        assert_eq!(cs[i].to_bits(), want.scale.to_bits(), "{what}: cpu scale");
                        assert_eq!(cz[i].to_bits(), want.zero.to_bits(), "{what}: cpu zero");
                        clipped += (want.scale != full.scale) as usize;
                        groups += 1;
                        if gs_[i].to_bits() == cs[i].to_bits() && gz[i].to_bits() == cz[i].to_bits()
                        {
                            same += 1;
                            continue;
                        }
                        let got = GroupParams {
                            scale: gs_[i],
                            zero: gz[i],
                        };
                        let (eg, ec) = (
                            group_sq_err(grid, &vals, wts, got),
                            group_sq_err(grid, &vals, wts, want),
                        );
                        assert!(
                            (eg - ec).abs() <= 1e-5 * ec.max(1e-30),
                            "{what}: gpu {got:?} err {eg} vs cpu {want:?} err {ec}"
                        );
                    }
                }
                if bits <= 4 {
                    assert!(
                        clipped > 0,
                        "{clip:?} bits {bits} sym {sym} group {gs}: none clipped"
                    );
                }
            }
        }
    }
    eprintln!("mse group params: {same} of {groups} GPU groups bit-identical to the CPU");
    assert!(same as f64 >= 0.99 * groups as f64, "{same} of {groups}");
}

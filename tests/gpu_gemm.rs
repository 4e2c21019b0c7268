//! gemm family: GPU vs CPU on random regions of larger matrices, all four transpose cases,
//! shapes that are not multiples of the tiles, β = 0 over NaN, β ≠ 0, K = 0, and
//! the same with a tiny binding limit so M, N and K are all cut into panels.

#[path = "common/gpu.rs"]
mod gpu_common;

use gpu_common::{nan_vec, rel_fro, Rng};
use qronos::backend::cpu::CpuBackend;
use qronos::backend::gpu::GpuBackend;
use qronos::backend::{Backend, Region};

/// f32 dot products of ≤ 200 terms differ from faer's by ~√k·ε ≈ 1e-6 relative; 10× margin.
const GEMM_REL_TOL: f64 = 1e-5;

struct Case {
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    alpha: f32,
    beta: f32,
}

/// Runs one case on both backends; returns the relative error inside the C region and checks
/// that everything outside it is untouched.
fn run(gpu: &GpuBackend, rng: &mut Rng, c: &Case) -> f64 {
    let cpu = CpuBackend::new();
    // Operands live at offsets inside larger matrices.
    let (ar, ac) = if c.ta { (c.k, c.m) } else { (c.m, c.k) };
    let (br, bc) = if c.tb { (c.n, c.k) } else { (c.k, c.n) };
    let ra = Region {
        row0: 3,
        col0: 2,
        rows: ar,
        cols: ac,
    };
    let rb = Region {
        row0: 1,
        col0: 5,
        rows: br,
        cols: bc,
    };
    let rc = Region {
        row0: 4,
        col0: 3,
        rows: c.m,
        cols: c.n,
    };
    let (a_rows, a_cols) = (ar + 7, ac + 4);
    let (b_rows, b_cols) = (br + 2, bc + 9);
    let (c_rows, c_cols) = (c.m + 6, c.n + 5);
    let a = rng.vec(a_rows * a_cols);
    let b = rng.vec(b_rows * b_cols);
    let mut c0 = rng.vec(c_rows * c_cols);
    if c.beta == 0.0 {
        // β = 0 must ignore C's old values, NaN included
        for j in rc.col0..rc.col0 + rc.cols {
            for i in rc.row0..rc.row0 + rc.rows {
                c0[j * c_rows + i] = f32::NAN;
            }
        }
    }
    let run_on = |be: &dyn Fn() -> Vec<f32>| be();
    let g = run_on(&|| {
        let ga = gpu.upload(a_rows, a_cols, &a).unwrap();
        let gb = gpu.upload(b_rows, b_cols, &b).unwrap();
        let mut gc = gpu.upload(c_rows, c_cols, &c0).unwrap();
        gpu.gemm(&mut gc, rc, c.alpha, &ga, ra, c.ta, &gb, rb, c.tb, c.beta)
            .unwrap();
        gpu.download(&gc).unwrap()
    });
    let r = run_on(&|| {
        let ca = cpu.upload(a_rows, a_cols, &a).unwrap();
        let cb = cpu.upload(b_rows, b_cols, &b).unwrap();
        let mut cc = cpu.upload(c_rows, c_cols, &c0).unwrap();
        cpu.gemm(&mut cc, rc, c.alpha, &ca, ra, c.ta, &cb, rb, c.tb, c.beta)
            .unwrap();
        cpu.download(&cc).unwrap()
    });
    let (mut gi, mut ri) = (Vec::new(), Vec::new());
    let mut outside_changed = 0;
    for j in 0..c_cols {
        for i in 0..c_rows {
            let at = j * c_rows + i;
            let inside = (rc.row0..rc.row0 + rc.rows).contains(&i)
                && (rc.col0..rc.col0 + rc.cols).contains(&j);
            if inside {
                gi.push(g[at]);
                ri.push(r[at]);
            } else if g[at].to_bits() != c0[at].to_bits() {
                outside_changed += 1;
            }
        }
    }
    assert_eq!(
        outside_changed, 0,
        "gemm wrote {outside_changed} elements outside its region"
    );
    let bad = gpu_common::non_finite(&gi);
    assert!(
        bad.is_empty(),
        "gemm left {} non-finite values in C (first at {})",
        bad.len(),
        bad[0]
    );
    rel_fro(&gi, &ri)
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (m, n, k) in [
        (37, 53, 29),
        (70, 65, 130),
        (1, 67, 17),
        (65, 1, 3),
        (150, 133, 41),
    ] {
        for ta in [false, true] {
            for tb in [false, true] {
                for (alpha, beta) in [(0.7, 0.0), (-1.3, 0.45)] {
                    v.push(Case {
                        m,
                        n,
                        k,
                        ta,
                        tb,
                        alpha,
                        beta,
                    });
                }
            }
        }
    }
    v
}

fn check_all(gpu: &GpuBackend, seed: u64, label: &str) {
    let mut rng = Rng::new(seed);
    let mut worst = 0.0f64;
    let mut fails = Vec::new();
    for c in cases() {
        let e = run(gpu, &mut rng, &c);
        worst = worst.max(e);
        if e.is_nan() || e > GEMM_REL_TOL {
            fails.push(format!(
                "m {} n {} k {} ta {} tb {} alpha {} beta {}: rel err {e:e}",
                c.m, c.n, c.k, c.ta, c.tb, c.alpha, c.beta
            ));
        }
    }
    eprintln!("gemm ({label}): worst relative Frobenius error {worst:e} (tol {GEMM_REL_TOL:e})");
    assert!(
        fails.is_empty(),
        "{} gemm case(s) over tolerance:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

#[test]
fn gemm_agrees_with_cpu() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    check_all(&gpu, 11, "device limit");
}

#[test]
fn gemm_agrees_with_cpu_in_small_panels() {
    // ~4 KiB bindings: 37..136-row operands are cut into panels of 7..27 columns
    let Some(gpu) = gpu_common::backend_with_limit(4096) else {
        return;
    };
    check_all(&gpu, 12, "4 KiB bindings");
}

#[test]
fn gemm_with_k_zero_scales_c() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    let mut rng = Rng::new(13);
    let c0 = rng.vec(5 * 4);
    let a = gpu.zeros(5, 0).unwrap();
    let b = gpu.zeros(0, 4).unwrap();
    let mut c = gpu.upload(5, 4, &c0).unwrap();
    gpu.gemm(
        &mut c,
        Region::all(5, 4),
        1.0,
        &a,
        Region::all(5, 0),
        false,
        &b,
        Region::all(0, 4),
        false,
        0.5,
    )
    .unwrap();
    let got = gpu.download(&c).unwrap();
    let want: Vec<f32> = c0.iter().map(|v| 0.5 * v).collect();
    assert_eq!(got, want, "K = 0: C must become β·C exactly");
    let mut c = gpu.upload(5, 4, &nan_vec(20)).unwrap();
    gpu.gemm(
        &mut c,
        Region::all(5, 4),
        1.0,
        &a,
        Region::all(5, 0),
        false,
        &b,
        Region::all(0, 4),
        false,
        0.0,
    )
    .unwrap();
    assert_eq!(
        gpu.download(&c).unwrap(),
        vec![0.0; 20],
        "K = 0, β = 0: C must become 0"
    );
}

#[test]
fn empty_regions_at_the_matrix_edge_are_fine() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    // K = 0 with A's and B's regions starting one past their last column / row
    let a = gpu.zeros(4, 4).unwrap();
    let b = gpu.zeros(4, 4).unwrap();
    let mut c = gpu.upload(4, 4, &[1.0; 16]).unwrap();
    let ra = Region {
        row0: 0,
        col0: 4,
        rows: 4,
        cols: 0,
    };
    let rb = Region {
        row0: 4,
        col0: 0,
        rows: 0,
        cols: 4,
    };
    gpu.gemm(
        &mut c,
        Region::all(4, 4),
        1.0,
        &a,
        ra,
        false,
        &b,
        rb,
        false,
        2.0,
    )
    .unwrap();
    assert_eq!(gpu.download(&c).unwrap(), vec![2.0; 16]);
    // empty copies and axpys at the edge
    let src = gpu.zeros(4, 4).unwrap();
    gpu.copy(&mut c, Region::cols(4, 4, 4), &src, Region::cols(4, 4, 4))
        .unwrap();
    gpu.axpy(
        &mut c,
        Region::cols(4, 4, 4),
        1.0,
        &src,
        Region::cols(4, 4, 4),
        None,
    )
    .unwrap();
    assert_eq!(gpu.download(&c).unwrap(), vec![2.0; 16]);
}

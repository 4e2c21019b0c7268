//! damping family: λ for MeanDiag and LambdaMax (power iteration from `power_start`, Rayleigh
//! quotient), computed and kept on the device, GPU vs CPU; the degenerate zero matrix; and a
//! tiny binding limit so the diagonal sum and the matrix–vector products run in panels.

#[path = "common/gpu.rs"]
mod gpu_common;

use gpu_common::{spd, Rng};
use qronos::backend::cpu::CpuBackend;
use qronos::backend::gpu::GpuBackend;
use qronos::backend::{Backend, DampRule};

/// mean(diag): an f32 tree sum vs the CPU's f64 sum of ≤ 200 terms.
const MEAN_REL_TOL: f64 = 1e-5;
/// λmax after 30 power steps: both sides run the same iteration; f32 matrix–vector products
/// and norms differ in the last bits each step, the Rayleigh quotient damps that (≈ ε·κ_gap).
const LMAX_REL_TOL: f64 = 1e-4;

fn lam<B: Backend>(b: &B, h: &[f32], d: usize, rule: DampRule) -> f64 {
    let m = b.upload(d, d, h).unwrap();
    let l = b.damping(&m, rule).unwrap();
    assert_eq!(b.shape(&l), (1, 1));
    b.download(&l).unwrap()[0] as f64
}

fn check(gpu: &GpuBackend, label: &str) {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(61);
    for d in [1usize, 7, 70, 131] {
        let h = spd(&mut rng, d, 0.01);
        for (rule, tol) in [
            (DampRule::MeanDiag(0.01), MEAN_REL_TOL),
            (
                DampRule::LambdaMax {
                    alpha: 1e-6,
                    iters: 30,
                },
                LMAX_REL_TOL,
            ),
            (
                DampRule::LambdaMax {
                    alpha: 1.0,
                    iters: 3,
                },
                LMAX_REL_TOL,
            ),
        ] {
            let (g, c) = (lam(gpu, &h, d, rule), lam(&cpu, &h, d, rule));
            let rel = (g - c).abs() / c.abs();
            eprintln!("damping ({label}) d = {d} {rule:?}: gpu {g:e} cpu {c:e} rel {rel:.2e}");
            assert!(
                rel <= tol,
                "damping ({label}) d = {d} {rule:?}: gpu {g:e} cpu {c:e}"
            );
        }
    }
    // the zero matrix: the power iteration stops at a zero norm on both sides (λ = 0)
    let z = vec![0f32; 9 * 9];
    let rule = DampRule::LambdaMax {
        alpha: 1e-6,
        iters: 30,
    };
    assert_eq!(
        lam(gpu, &z, 9, rule),
        lam(&cpu, &z, 9, rule),
        "zero matrix ({label})"
    );
}

#[test]
fn damping_agrees_with_cpu() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    check(&gpu, "device limit");
}

#[test]
fn damping_agrees_with_cpu_in_panels() {
    // 2 kB bindings: 3..70 columns per panel
    let Some(gpu) = gpu_common::backend_with_limit(2_048) else {
        return;
    };
    check(&gpu, "2 kB bindings");
}

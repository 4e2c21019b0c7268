//! cholesky family: `inverse_cholesky` on the device (blocked Cholesky of the reversed matrix,
//! blocked triangular inverse, reversal). Checked by residual `‖UᵀU·a − I‖`, by agreement with
//! the CPU's f64 factorisation, by exact zeros below the diagonal, and by the status on
//! matrices that are not positive definite. Sizes straddle the 32-column block; one backend
//! runs with a binding limit small enough to force column panels.

#[path = "common/gpu.rs"]
mod gpu_common;

use gpu_common::{rel_fro, spd, Rng};
use qronos::backend::cpu::CpuBackend;
use qronos::backend::gpu::GpuBackend;
use qronos::backend::Backend;

/// `‖UᵀU·a − I‖_F / √d` for an f32 factorisation grows like κ·ε; the test matrices have
/// κ ≲ 1e3, so ≲ 1e-4 (measured ≈ 1e-6 on lavapipe).
const RESID_TOL: f64 = 1e-4;
/// U from the GPU (f32 throughout) vs the CPU (f64 factorisation rounded to f32): ≈ κ·ε
/// (measured ≈ 4e-7).
const U_REL_TOL: f64 = 1e-4;

fn residual(u: &[f32], a: &[f32], d: usize) -> f64 {
    // K = UᵀU, then ‖K·a − I‖
    let mut k = vec![0f64; d * d];
    for j in 0..d {
        for i in 0..d {
            let mut s = 0f64;
            for t in 0..=i.min(j) {
                s += u[i * d + t] as f64 * u[j * d + t] as f64;
            }
            k[j * d + i] = s;
        }
    }
    let mut num = 0f64;
    for j in 0..d {
        for i in 0..d {
            let mut s = 0f64;
            for t in 0..d {
                s += k[t * d + i] * a[j * d + t] as f64;
            }
            let target = if i == j { 1.0 } else { 0.0 };
            num += (s - target).powi(2);
        }
    }
    (num / d as f64).sqrt()
}

fn check(gpu: &GpuBackend, label: &str, sizes: &[usize]) {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(31);
    for &d in sizes {
        let a = spd(&mut rng, d, 0.05);
        let (gu, gs) = gpu
            .inverse_cholesky(&gpu.upload(d, d, &a).unwrap())
            .unwrap();
        let (cu, cs) = cpu
            .inverse_cholesky(&cpu.upload(d, d, &a).unwrap())
            .unwrap();
        let (gu, gs) = (gpu.download(&gu).unwrap(), gpu.download(&gs).unwrap());
        let (cu, cs) = (cpu.download(&cu).unwrap(), cpu.download(&cs).unwrap());
        assert_eq!(cs, vec![0.0], "CPU failed on d = {d}");
        assert_eq!(gs, vec![0.0], "GPU status ({label}, d = {d})");
        let below: usize = (0..d)
            .flat_map(|j| (j + 1..d).map(move |i| (i, j)))
            .filter(|&(i, j)| gu[j * d + i] != 0.0)
            .count();
        assert_eq!(
            below, 0,
            "U ({label}, d = {d}) has {below} non-zeros below the diagonal"
        );
        let r = residual(&gu, &a, d);
        let e = rel_fro(&gu, &cu);
        eprintln!("inverse_cholesky ({label}) d = {d}: residual {r:e}, rel diff to CPU {e:e}");
        assert!(
            r <= RESID_TOL,
            "residual ({label}, d = {d}) {r:e} > {RESID_TOL:e}"
        );
        assert!(
            e <= U_REL_TOL,
            "U vs CPU ({label}, d = {d}) {e:e} > {U_REL_TOL:e}"
        );
    }
}

#[test]
fn inverse_cholesky_agrees_with_cpu() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    check(&gpu, "device limit", &[1, 5, 32, 33, 75, 130]);
}

#[test]
fn inverse_cholesky_in_column_panels() {
    // 20 000-byte bindings: 38 columns of a 130-row matrix per panel
    let Some(gpu) = gpu_common::backend_with_limit(20_000) else {
        return;
    };
    check(&gpu, "20 kB bindings", &[97, 130]);
}

#[test]
fn non_positive_pivot_sets_the_same_status_as_the_cpu() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(32);
    let d = 70;
    for bad in [0usize, 5, 40, 69] {
        let mut a = spd(&mut rng, d, 0.05);
        a[bad * d + bad] = -1.0;
        let (_, gs) = gpu
            .inverse_cholesky(&gpu.upload(d, d, &a).unwrap())
            .unwrap();
        let (_, cs) = cpu
            .inverse_cholesky(&cpu.upload(d, d, &a).unwrap())
            .unwrap();
        let (gs, cs) = (gpu.download(&gs).unwrap(), cpu.download(&cs).unwrap());
        assert_eq!(
            cs,
            vec![(bad + 1) as f32],
            "CPU status for a bad pivot at column {bad}"
        );
        assert_eq!(gs, cs, "GPU status for a bad pivot at column {bad}");
    }
    let mut a = spd(&mut rng, d, 0.05);
    a[3 * d + 60] = f32::NAN;
    a[60 * d + 3] = f32::NAN;
    let (_, gs) = gpu
        .inverse_cholesky(&gpu.upload(d, d, &a).unwrap())
        .unwrap();
    let gs = gpu.download(&gs).unwrap();
    assert!(
        gs[0] != 0.0,
        "a NaN entry must fail the factorisation, status {gs:?}"
    );
}

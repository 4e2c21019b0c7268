//! elementwise family (copy, axpy, add_diag, permute, fix_dead) and dot family (dot_cols):
//! GPU vs CPU on random data, odd shapes, NaN-poisoned outputs, at the device's binding limit
//! and with a tiny one (column panels).

#[path = "common/gpu.rs"]
mod gpu_common;

use gpu_common::{rel_fro, Rng};
use qronos::backend::cpu::CpuBackend;
use qronos::backend::gpu::GpuBackend;
use qronos::backend::{Backend, Region};

/// axpy is one multiply-add per element; a fused multiply-add on the GPU may differ from the
/// CPU's separate rounding by an ulp.
const AXPY_REL_TOL: f64 = 1e-6;
/// Column dot products of ≤ 100 terms in a different summation order: ~√n·ε.
const DOT_REL_TOL: f64 = 1e-5;

fn gpus() -> Vec<(GpuBackend, &'static str)> {
    let mut v = Vec::new();
    if let Some(g) = gpu_common::backend() {
        v.push((g, "device limit"));
    }
    if let Some(g) = gpu_common::backend_with_limit(2048) {
        v.push((g, "2 KiB bindings"));
    }
    v
}

#[test]
fn copy_is_exact_and_stays_in_its_region() {
    let cpu = CpuBackend::new();
    for (gpu, label) in gpus() {
        let mut rng = Rng::new(21);
        let (sr, sc, dr, dc) = (41, 37, 53, 45);
        let src = rng.vec(sr * sc);
        let dst0 = rng.vec(dr * dc);
        let rs = Region {
            row0: 3,
            col0: 5,
            rows: 33,
            cols: 29,
        };
        let rd = Region {
            row0: 17,
            col0: 2,
            rows: 33,
            cols: 29,
        };
        let gs = gpu.upload(sr, sc, &src).unwrap();
        let mut gd = gpu.upload(dr, dc, &dst0).unwrap();
        gpu.copy(&mut gd, rd, &gs, rs).unwrap();
        let cs = cpu.upload(sr, sc, &src).unwrap();
        let mut cd = cpu.upload(dr, dc, &dst0).unwrap();
        cpu.copy(&mut cd, rd, &cs, rs).unwrap();
        let (g, c) = (gpu.download(&gd).unwrap(), cpu.download(&cd).unwrap());
        let diff = g
            .iter()
            .zip(&c)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            diff, 0,
            "copy ({label}): {diff} elements differ from the CPU"
        );
    }
}

#[test]
fn axpy_and_add_diag_agree() {
    let cpu = CpuBackend::new();
    for (gpu, label) in gpus() {
        let mut rng = Rng::new(22);
        let (yr, yc, xr, xc) = (47, 39, 35, 50);
        let y0 = rng.vec(yr * yc);
        let x = rng.vec(xr * xc);
        let s = [0.37f32];
        let ry = Region {
            row0: 5,
            col0: 1,
            rows: 30,
            cols: 33,
        };
        let rx = Region {
            row0: 2,
            col0: 11,
            rows: 30,
            cols: 33,
        };
        for with_scalar in [false, true] {
            let mut gy = gpu.upload(yr, yc, &y0).unwrap();
            let gx = gpu.upload(xr, xc, &x).unwrap();
            let gs = gpu.upload(1, 1, &s).unwrap();
            gpu.axpy(&mut gy, ry, -1.7, &gx, rx, with_scalar.then_some(&gs))
                .unwrap();
            let mut cy = cpu.upload(yr, yc, &y0).unwrap();
            let cx = cpu.upload(xr, xc, &x).unwrap();
            let cs = cpu.upload(1, 1, &s).unwrap();
            cpu.axpy(&mut cy, ry, -1.7, &cx, rx, with_scalar.then_some(&cs))
                .unwrap();
            let e = rel_fro(&gpu.download(&gy).unwrap(), &cpu.download(&cy).unwrap());
            eprintln!("axpy ({label}, scalar {with_scalar}): rel err {e:e}");
            assert!(
                e <= AXPY_REL_TOL,
                "axpy ({label}, scalar {with_scalar}): rel err {e:e}"
            );
        }
        let d = 45;
        let a0 = rng.vec(d * d);
        let mut ga = gpu.upload(d, d, &a0).unwrap();
        let gs = gpu.upload(1, 1, &s).unwrap();
        gpu.add_diag(&mut ga, 2.5, &gs).unwrap();
        let mut ca = cpu.upload(d, d, &a0).unwrap();
        let cs = cpu.upload(1, 1, &s).unwrap();
        cpu.add_diag(&mut ca, 2.5, &cs).unwrap();
        let e = rel_fro(&gpu.download(&ga).unwrap(), &cpu.download(&ca).unwrap());
        assert!(e <= AXPY_REL_TOL, "add_diag ({label}): rel err {e:e}");
    }
}

#[test]
fn permute_is_exact() {
    let cpu = CpuBackend::new();
    for (gpu, label) in gpus() {
        let mut rng = Rng::new(23);
        let (r, c) = (43, 51);
        let a = rng.vec(r * c);
        let pr = rng.perm(r);
        let pc = rng.perm(c);
        let ga = gpu.upload(r, c, &a).unwrap();
        let ca = cpu.upload(r, c, &a).unwrap();
        let gpr = gpu.upload_idx(&pr).unwrap();
        let gpc = gpu.upload_idx(&pc).unwrap();
        let cpr = cpu.upload_idx(&pr).unwrap();
        let cpc = cpu.upload_idx(&pc).unwrap();
        for (rows, cols) in [(false, false), (true, false), (false, true), (true, true)] {
            let g = gpu
                .permute(&ga, rows.then_some(&gpr), cols.then_some(&gpc))
                .unwrap();
            let c2 = cpu
                .permute(&ca, rows.then_some(&cpr), cols.then_some(&cpc))
                .unwrap();
            let (g, c2) = (gpu.download(&g).unwrap(), cpu.download(&c2).unwrap());
            let diff = g
                .iter()
                .zip(&c2)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count();
            assert_eq!(
                diff, 0,
                "permute ({label}, rows {rows}, cols {cols}): {diff} differ"
            );
        }
    }
}

#[test]
fn fix_dead_is_exact() {
    let cpu = CpuBackend::new();
    for (gpu, label) in gpus() {
        let mut rng = Rng::new(24);
        let (m, d) = (29, 47);
        let h = rng.vec(d * d);
        let w = rng.vec(m * d);
        let dead: Vec<u32> = vec![0, 5, 46, 23, 30];
        let mut gh = gpu.upload(d, d, &h).unwrap();
        let mut gw = gpu.upload(m, d, &w).unwrap();
        gpu.fix_dead(&mut gh, &mut gw, &gpu.upload_idx(&dead).unwrap())
            .unwrap();
        let mut ch = cpu.upload(d, d, &h).unwrap();
        let mut cw = cpu.upload(m, d, &w).unwrap();
        cpu.fix_dead(&mut ch, &mut cw, &cpu.upload_idx(&dead).unwrap())
            .unwrap();
        assert_eq!(
            gpu.download(&gh).unwrap(),
            cpu.download(&ch).unwrap(),
            "fix_dead ({label}): h"
        );
        assert_eq!(
            gpu.download(&gw).unwrap(),
            cpu.download(&cw).unwrap(),
            "fix_dead ({label}): w"
        );
    }
}

#[test]
fn dot_cols_agrees() {
    let cpu = CpuBackend::new();
    for (gpu, label) in gpus() {
        let mut rng = Rng::new(25);
        let (ar, ac, br, bc) = (97, 41, 90, 44);
        let a = rng.vec(ar * ac);
        let b = rng.vec(br * bc);
        let ra = Region {
            row0: 4,
            col0: 3,
            rows: 83,
            cols: 37,
        };
        let rb = Region {
            row0: 1,
            col0: 6,
            rows: 83,
            cols: 37,
        };
        let g = gpu
            .dot_cols(
                &gpu.upload(ar, ac, &a).unwrap(),
                ra,
                &gpu.upload(br, bc, &b).unwrap(),
                rb,
            )
            .unwrap();
        let c = cpu
            .dot_cols(
                &cpu.upload(ar, ac, &a).unwrap(),
                ra,
                &cpu.upload(br, bc, &b).unwrap(),
                rb,
            )
            .unwrap();
        assert_eq!(gpu.shape(&g), (37, 1));
        let e = rel_fro(&gpu.download(&g).unwrap(), &cpu.download(&c).unwrap());
        eprintln!("dot_cols ({label}): rel err {e:e}");
        assert!(
            e <= DOT_REL_TOL,
            "dot_cols ({label}): rel err {e:e} > {DOT_REL_TOL:e}"
        );
    }
}

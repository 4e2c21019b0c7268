//! gram family: running-mean H, G, D over several updates of different token counts, GPU vs
//! CPU, with d not a multiple of the 128-wide tile; and with a tiny binding limit, so that the
//! token rows are uploaded in chunks and the outputs are written and mirrored in panels.

#[path = "common/gpu.rs"]
mod gpu_common;

use gpu_common::{rel_fro, Rng};
use qronos::backend::cpu::CpuBackend;
use qronos::backend::gpu::GpuBackend;
use qronos::backend::Backend;

/// Sums of ≤ 200 f32 products per update plus the running-mean rescaling: ~√n·ε ≈ 1e-6
/// relative; 10× margin.
const GRAM_REL_TOL: f64 = 1e-5;

/// `resident`: both backends take the tokens as `d × t` matrices already on the backend
/// (`gram_update_mat`, the model pipeline's path), else as host slices.
fn check(gpu: &GpuBackend, label: &str, d: usize, batches: &[usize], resident: bool) {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(51);
    for (mismatched, delta) in [(false, false), (true, false), (true, true)] {
        let mut gg = gpu.gram_init(d, mismatched, delta).unwrap();
        let mut cg = cpu.gram_init(d, mismatched, delta).unwrap();
        for &t in batches {
            let x = rng.vec(t * d);
            // X̃ = X + a perturbation, so D is small but not zero
            let xq: Vec<f32> = x.iter().map(|v| v + 0.1 * rng.normal()).collect();
            let xq = mismatched.then_some(&xq[..]);
            if resident {
                let (gx, cx) = (gpu.upload(d, t, &x).unwrap(), cpu.upload(d, t, &x).unwrap());
                let gq = xq.map(|v| gpu.upload(d, t, v).unwrap());
                let cq = xq.map(|v| cpu.upload(d, t, v).unwrap());
                gpu.gram_update_mat(&mut gg, &gx, gq.as_ref()).unwrap();
                cpu.gram_update_mat(&mut cg, &cx, cq.as_ref()).unwrap();
            } else {
                gpu.gram_update(&mut gg, &x, xq, t).unwrap();
                cpu.gram_update(&mut cg, &x, xq, t).unwrap();
            }
        }
        gpu.gram_finish(&mut gg).unwrap();
        cpu.gram_finish(&mut cg).unwrap();
        assert_eq!(gg.n, cg.n);
        let mut pairs = vec![("H", &gg.h, &cg.h)];
        if let (Some(a), Some(b)) = (&gg.g, &cg.g) {
            pairs.push(("G", a, b));
        }
        if let (Some(a), Some(b)) = (&gg.d, &cg.d) {
            pairs.push(("D", a, b));
        }
        assert_eq!(pairs.len(), 1 + mismatched as usize + delta as usize);
        for (name, a, b) in pairs {
            let (a, b) = (gpu.download(a).unwrap(), cpu.download(b).unwrap());
            let bad = gpu_common::non_finite(&a);
            assert!(
                bad.is_empty(),
                "{name} ({label}): {} non-finite values",
                bad.len()
            );
            // symmetric after finish (exactly: the mirror copies)
            if name != "G" {
                let asym = (0..d)
                    .flat_map(|j| (0..d).map(move |i| (i, j)))
                    .filter(|&(i, j)| a[j * d + i].to_bits() != a[i * d + j].to_bits())
                    .count();
                assert_eq!(
                    asym, 0,
                    "{name} ({label}) is not symmetric in {asym} places"
                );
            }
            let e = rel_fro(&a, &b);
            eprintln!(
                "gram ({label}, mismatched {mismatched}, delta {delta}) {name}: rel err {e:e}"
            );
            assert!(
                e <= GRAM_REL_TOL,
                "{name} ({label}): rel err {e:e} > {GRAM_REL_TOL:e}"
            );
        }
    }
}

#[test]
fn grams_agree_with_cpu() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    for resident in [false, true] {
        check(&gpu, "device limit", 75, &[37, 100, 5], resident);
        // more than one 128-wide tile each way: tiles above the diagonal skipped, partial edges
        check(&gpu, "two tiles", 150, &[37, 100], resident);
    }
}

#[test]
fn grams_agree_with_cpu_in_chunks_and_panels() {
    // 3 kB bindings: 10 tokens of 75 features per uploaded chunk, 10-column output panels
    let Some(gpu) = gpu_common::backend_with_limit(3_072) else {
        return;
    };
    for resident in [false, true] {
        check(&gpu, "3 kB bindings", 75, &[37, 23], resident);
    }
}

/// The CPU's resident path is the host path on the same tokens, bit for bit.
#[test]
fn cpu_resident_grams_equal_host_grams() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(52);
    let (d, t) = (33, 70);
    let x = rng.vec(t * d);
    let xq: Vec<f32> = x.iter().map(|v| v + 0.1 * rng.normal()).collect();
    let mut a = cpu.gram_init(d, true, true).unwrap();
    let mut b = cpu.gram_init(d, true, true).unwrap();
    cpu.gram_update(&mut a, &x, Some(&xq), t).unwrap();
    let (mx, mq) = (
        cpu.upload(d, t, &x).unwrap(),
        cpu.upload(d, t, &xq).unwrap(),
    );
    cpu.gram_update_mat(&mut b, &mx, Some(&mq)).unwrap();
    for (p, q) in [(&a.h, &b.h), (a.g.as_ref().unwrap(), b.g.as_ref().unwrap())] {
        assert_eq!(cpu.download(p).unwrap(), cpu.download(q).unwrap());
    }
}

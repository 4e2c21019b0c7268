//! A 14336-wide layer (Llama-3-8B's MLP width) on a real GPU with storage bindings capped at
//! 128 MiB (lavapipe's and wgpu's default limit), so every d × d matrix (822 MB) is processed
//! in column panels; compared with the CPU path. Too big for lavapipe / CI: run explicitly on
//! a hardware adapter with `cargo test --release --test gpu_wide -- --ignored --nocapture`.

use qronos::backend::cpu::CpuBackend;
use qronos::backend::gpu::{AdapterChoice, GpuBackend};
use qronos::synth::llm_like;
use qronos::{quantize_layer, Calibration, LayerInput, Method, NoProgress, QuantConfig};

const LIMIT: u64 = 128 << 20;
/// Share of identical codes after a propagating sweep (near-ties flip and cascade).
const SAME: f64 = 0.9;
/// Relative difference of the mismatched objective.
const OBJ_REL_TOL: f64 = 0.02;

#[test]
#[ignore = "needs a hardware GPU and ~10 GB of memory"]
fn layer_14336_wide_in_128_mib_panels_agrees_with_cpu() {
    let gpu = GpuBackend::with_binding_limit(AdapterChoice::HardwareOnly, LIMIT)
        .expect("a hardware GPU adapter");
    let (m, d, n) = (128, 14336, 2048);
    let l = llm_like(m, d, n, 14336);
    let input = LayerInput {
        w: &l.w,
        m,
        d,
        calib: Calibration::Tokens {
            x: &l.x,
            xq: Some(&l.xq),
            n,
        },
    };
    for method in [Method::Gptq, Method::Qronos] {
        let cfg = QuantConfig {
            method,
            qronos_alpha: 1e-4,
            ..QuantConfig::default()
        };
        let g = quantize_layer(&gpu, &cfg, &input, &mut NoProgress).expect("GPU run");
        let c = quantize_layer(&CpuBackend::new(), &cfg, &input, &mut NoProgress).expect("CPU run");
        let same =
            g.codes.iter().zip(&c.codes).filter(|(a, b)| a == b).count() as f64 / (m * d) as f64;
        let (og, oc) = (g.objective.unwrap(), c.objective.unwrap());
        let rel = (og.mismatched - oc.mismatched).abs() / oc.mismatched;
        eprintln!(
            "{method:?} d={d}: same codes {same:.5}, mismatched gpu {:.6} cpu {:.6} (rel {rel:.2e}), \
             gpu {:.2}s (gram {:.2} factor {:.2} sweep {:.2} obj {:.2}), cpu {:.2}s",
            og.mismatched,
            oc.mismatched,
            g.timings.total,
            g.timings.gram,
            g.timings.factor,
            g.timings.sweep,
            g.timings.objectives,
            c.timings.total
        );
        assert!(same >= SAME, "{method:?}: only {same} of codes agree");
        assert!(rel < OBJ_REL_TOL, "{method:?}: objectives differ by {rel}");
    }
}

//! End to end: `quantize_layer` (RTN, GPTQ, Qronos; dynamic and static groups; act-order) run
//! on the GPU backend and on the CPU backend from the same calibration tokens. The GPU runs
//! every stage in f32 (the CPU factorises in f64), so results are compared the way DESIGN §4
//! says: share of identical codes and the layer objectives, not code by code.

#[path = "common/gpu.rs"]
mod gpu_common;

use gpu_common::Rng;
use qronos::backend::cpu::CpuBackend;
use qronos::{quantize_layer, Calibration, GroupSize, LayerInput, Method, NoProgress, QuantConfig};

/// RTN involves no floating-point accumulation: identical codes.
const RTN_SAME: f64 = 1.0;
/// After a propagating sweep, near-ties flip and cascade along their rows (f32 vs f64
/// factorisations, different summation orders).
const SWEEP_SAME: f64 = 0.9;
/// Relative difference of the objectives (a few percent of ‖XWᵀ‖ each).
const OBJ_REL_TOL: f64 = 0.02;

#[test]
fn quantize_layer_agrees_with_cpu() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    let cpu = CpuBackend::new();
    let (m, d, n) = (40, 72, 300);
    let mut rng = Rng::new(71);
    // correlated features (a random mixing), so H is far from diagonal
    let mix = rng.vec(d * d);
    let z = rng.vec(n * d);
    let x: Vec<f32> = (0..n)
        .flat_map(|t| {
            let z = &z[t * d..(t + 1) * d];
            let mix = &mix;
            (0..d).map(move |i| {
                (0..d).map(|k| z[k] * mix[k * d + i]).sum::<f32>() / (d as f32).sqrt()
            })
        })
        .collect();
    let xq: Vec<f32> = x.iter().map(|v| v + 0.05 * rng.normal()).collect();
    let w = rng.vec(m * d);
    let configs = [
        (Method::Rtn, GroupSize::Columns(32), false, false),
        (Method::Gptq, GroupSize::Columns(32), false, false),
        (Method::Gptq, GroupSize::PerChannel, true, false),
        (Method::Gptq, GroupSize::Columns(32), true, true),
        (Method::Qronos, GroupSize::Columns(32), false, false),
        (Method::Qronos, GroupSize::PerChannel, true, false),
    ];
    for (method, group_size, act_order, static_groups) in configs {
        let cfg = QuantConfig {
            method,
            bits: 3,
            group_size,
            act_order,
            static_groups,
            block_size: 32,
            objectives: true,
            ..QuantConfig::default()
        };
        let input = LayerInput {
            w: &w,
            m,
            d,
            calib: Calibration::Tokens {
                x: &x,
                xq: (method == Method::Qronos).then_some(&xq[..]),
                n,
            },
        };
        let g = quantize_layer(&gpu, &cfg, &input, &mut NoProgress).expect("gpu quantize_layer");
        let c = quantize_layer(&cpu, &cfg, &input, &mut NoProgress).expect("cpu quantize_layer");
        let same =
            g.codes.iter().zip(&c.codes).filter(|(a, b)| a == b).count() as f64 / (m * d) as f64;
        let (go, co) = (
            g.objective.expect("gpu objectives"),
            c.objective.expect("cpu objectives"),
        );
        let what =
            format!("{method:?} {group_size:?} act_order {act_order} static {static_groups}");
        eprintln!(
            "layer ({what}): same codes {same:.4}; mismatched gpu {:.5} cpu {:.5}; standard gpu {:.5} cpu {:.5}; \
             damping gpu {:?} cpu {:?}; fallback gpu {:?} cpu {:?}",
            go.mismatched, co.mismatched, go.standard, co.standard, g.damping, c.damping, g.fallback, c.fallback
        );
        assert_eq!(g.fallback, c.fallback, "{what}: fallbacks differ");
        let want = if method == Method::Rtn {
            RTN_SAME
        } else {
            SWEEP_SAME
        };
        assert!(
            same >= want,
            "{what}: only {same:.4} of codes agree (want ≥ {want})"
        );
        for (name, a, b) in [
            ("mismatched", go.mismatched, co.mismatched),
            ("standard", go.standard, co.standard),
        ] {
            let rel = (a - b).abs() / b.abs().max(1e-12);
            assert!(
                rel <= OBJ_REL_TOL,
                "{what}: {name} objective gpu {a} cpu {b} (rel {rel:.2e})"
            );
        }
    }
}

/// Determinism: the same input, config and backend give bit-identical output (fixed reduction
/// orders, no float atomics, seeded power iteration).
#[test]
fn gpu_results_are_bit_identical_across_runs() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    let l = qronos::synth::llm_like(24, 80, 256, 8);
    let input = LayerInput {
        w: &l.w,
        m: l.m,
        d: l.d,
        calib: Calibration::Tokens {
            x: &l.x,
            xq: Some(&l.xq),
            n: l.n,
        },
    };
    for (method, desc_act) in [(Method::Qronos, false), (Method::Gptq, true)] {
        let cfg = QuantConfig {
            method,
            bits: 3,
            desc_act,
            group_size: GroupSize::Columns(32),
            ..QuantConfig::default()
        };
        let a = quantize_layer(&gpu, &cfg, &input, &mut NoProgress).expect("first run");
        let b = quantize_layer(&gpu, &cfg, &input, &mut NoProgress).expect("second run");
        let differ =
            a.q.iter()
                .zip(&b.q)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count();
        assert_eq!(
            differ, 0,
            "{method:?}: {differ} values of Q differ between two runs"
        );
        assert_eq!(a.codes, b.codes);
        assert_eq!(a.scales, b.scales);
        assert_eq!(a.objective, b.objective);
        assert_eq!(a.damping, b.damping);
    }
}

/// The GPU's on-device Cholesky status drives the same retry / RTN fallback as on the CPU.
#[test]
fn gpu_factorisation_failures_retry_then_fall_back() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    let (m, d) = (4, 8);
    let w: Vec<f32> = (0..m * d)
        .map(|k| ((k * 37 % 11) as f32 - 5.0) / 7.0)
        .collect();
    let cfg = QuantConfig {
        method: Method::Gptq,
        bits: 4,
        group_size: GroupSize::PerChannel,
        objectives: false,
        ..QuantConfig::default()
    };
    for (last, retries, falls_back) in [(-0.05f32, 1, false), (-1e6, cfg.max_damp_retries, true)] {
        let mut h = vec![0f32; d * d];
        (0..d).for_each(|i| h[i * d + i] = 1.0);
        h[d * d - 1] = last;
        let input = LayerInput {
            w: &w,
            m,
            d,
            calib: Calibration::Grams {
                h: &h,
                g: &h,
                xx: None,
            },
        };
        let g = quantize_layer(&gpu, &cfg, &input, &mut NoProgress).expect("gpu run");
        let c = quantize_layer(&CpuBackend::new(), &cfg, &input, &mut NoProgress).expect("cpu run");
        assert_eq!(g.retries, retries, "H[7,7] = {last}: retries");
        assert_eq!(
            g.fallback.is_some(),
            falls_back,
            "H[7,7] = {last}: fallback"
        );
        assert_eq!(
            (g.retries, g.fallback.is_some()),
            (c.retries, c.fallback.is_some())
        );
    }
}

/// Qronos with `X̃ = X` takes its rank-1 shortcut on both backends.
#[test]
fn gpu_qronos_without_upstream_quantization_agrees_with_cpu() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    let l = qronos::synth::llm_like(24, 72, 300, 4);
    let input = LayerInput {
        w: &l.w,
        m: l.m,
        d: l.d,
        calib: Calibration::Tokens {
            x: &l.x,
            xq: None,
            n: l.n,
        },
    };
    let cfg = QuantConfig {
        method: Method::Qronos,
        bits: 3,
        group_size: GroupSize::Columns(32),
        ..QuantConfig::default()
    };
    let g = quantize_layer(&gpu, &cfg, &input, &mut NoProgress).expect("gpu run");
    let c = quantize_layer(&CpuBackend::new(), &cfg, &input, &mut NoProgress).expect("cpu run");
    let same =
        g.codes.iter().zip(&c.codes).filter(|(a, b)| a == b).count() as f64 / g.codes.len() as f64;
    let (go, co) = (g.objective.unwrap(), c.objective.unwrap());
    let rel = (go.mismatched - co.mismatched).abs() / co.mismatched;
    eprintln!("qronos X̃ = X: same codes {same:.4}, objective rel {rel:.2e}");
    assert!(same >= SWEEP_SAME, "only {same} of codes agree");
    assert!(rel <= OBJ_REL_TOL, "objectives differ by {rel}");
}

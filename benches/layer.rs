//! Stage and whole-layer benchmarks, CPU (faer) and GPU (wgpu), reporting FLOP rates and the
//! ratio to this machine's f32 GEMM rate measured in the same run.
//!
//! `cargo bench --bench layer` runs d = 1024 and 4096 on the CPU, and on the GPU when a
//! hardware adapter exists (d = 1024 only on a software adapter such as lavapipe).
//! `QRONOS_BENCH_DIMS=1024` restricts the sizes; `QRONOS_BENCH_GPU=0|1` forces the GPU part
//! off / on (1 also runs on a software adapter); `QRONOS_BENCH_CPU=0` skips the CPU part.
//!
//! Timed regions end with a `download`, so GPU work is complete when the clock stops. The CPU
//! factorisation runs in f32 (the default); `QRONOS_BENCH_F64=1` times the f64 one.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qronos::backend::cpu::{CpuBackend, FactorPrecision};
use qronos::backend::gpu::{self, AdapterChoice, GpuBackend};
use qronos::backend::{Backend, DampRule, SweepSpec};
use qronos::grid::Grid;
use qronos::synth::llm_like;
use qronos::{quantize_layer, Calibration, LayerInput, NoProgress, QuantConfig};

/// Huge pages for the big matrices, as in the `qronos` binary.
#[global_allocator]
static ALLOC: qronos::alloc::HugePages = qronos::alloc::HugePages;

fn dims() -> Vec<usize> {
    std::env::var("QRONOS_BENCH_DIMS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1024, 4096])
}

/// Tokens per layer: 4·d (16384 at d = 4096, the reference size).
fn tokens(d: usize) -> usize {
    4 * d
}

/// f32 GEMM rate of faer on this machine (GFLOP/s), 2048³.
fn machine_gemm_rate() -> f64 {
    qronos::backend::gemm_rate(&CpuBackend::new(), 2048, 2048, 2048).unwrap()
}

struct Summary {
    gemm_gflops: f64,
    lines: Vec<String>,
}

impl Summary {
    fn record(&mut self, name: &str, secs: f64, flop: f64) {
        let rate = flop / secs / 1e9;
        self.lines.push(format!(
            "{name:<34} {secs:>9.4} s {rate:>8.1} GFLOP/s  {:>5.2}× of faer GEMM rate",
            rate / self.gemm_gflops
        ));
    }
}

/// One timed run after one untimed warm-up run (pipelines compiled, buffers allocated).
fn time_once<F: FnMut()>(mut f: F) -> f64 {
    f();
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn bench_backend<B: Backend>(c: &mut Criterion, b: &B, tag: &str, d: usize, s: &mut Summary) {
    let (m, n) = (d, tokens(d));
    let l = llm_like(m, d, n, 0);
    let mut group = c.benchmark_group(format!("{tag}/d{d}"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(if d >= 4096 { 30 } else { 5 }));
    group.warm_up_time(Duration::from_millis(500));

    // gram: H (syrk, N·d²) + G (gemm, 2·N·d²), streamed in 2048-token chunks
    let gram_flop = 3.0 * n as f64 * (d * d) as f64;
    let gram = || {
        let mut acc = b.gram_init(d, true, false).unwrap();
        for t0 in (0..n).step_by(2048) {
            let t1 = (t0 + 2048).min(n);
            b.gram_update(
                &mut acc,
                &l.x[t0 * d..t1 * d],
                Some(&l.xq[t0 * d..t1 * d]),
                t1 - t0,
            )
            .unwrap();
        }
        b.gram_finish(&mut acc).unwrap();
        b.download(&acc.h).unwrap();
        acc
    };
    group.throughput(Throughput::Elements(gram_flop as u64));
    group.bench_function("gram", |bch| bch.iter(gram));
    let acc = gram();
    s.record(
        &format!("{tag} gram d={d} N={n}"),
        time_once(|| drop(gram())),
        gram_flop,
    );

    // factor: damping + inverse Cholesky (≈ 2/3·d³ for Cholesky + triangular inverse)
    let factor_flop = 2.0 / 3.0 * (d as f64).powi(3);
    let factor = || {
        let lam = b.damping(&acc.h, DampRule::MeanDiag(0.01)).unwrap();
        let mut hd = b.permute(&acc.h, None, None).unwrap();
        b.add_diag(&mut hd, 1.0, &lam).unwrap();
        let (u, st) = b.inverse_cholesky(&hd).unwrap();
        assert_eq!(b.download(&st).unwrap()[0], 0.0, "factorisation failed");
        u
    };
    group.throughput(Throughput::Elements(factor_flop as u64));
    group.bench_function("factor", |bch| bch.iter(factor));
    let u = factor();
    s.record(
        &format!("{tag} factor d={d}"),
        time_once(|| drop(factor())),
        factor_flop,
    );

    // sweep: GPTQ lazy-batch sweep, W4 g128 dynamic (≈ 2·m·d²/2 trailing GEMM FLOPs + in-block)
    let sweep_flop = (m * d) as f64 * d as f64;
    let w0 = b.upload(m, d, &l.w).unwrap();
    let spec = SweepSpec {
        grid: Grid::new(4, true),
        group_size: 128,
        dynamic: true,
        propagate: true,
    };
    let group_of = b
        .upload_idx(&(0..d as u32).map(|j| j / 128).collect::<Vec<_>>())
        .unwrap();
    let sweep = || {
        let mut w = b.permute(&w0, None, None).unwrap();
        let (mut q, mut codes) = (b.zeros(m, d).unwrap(), b.zeros(m, d).unwrap());
        let ng = d.div_ceil(128);
        let (mut sc, mut ze) = (b.zeros(m, ng).unwrap(), b.zeros(m, ng).unwrap());
        qronos::algo::gptq_sweep(
            b,
            &spec,
            &mut w,
            &u,
            &mut q,
            &mut codes,
            &mut sc,
            &mut ze,
            &group_of,
            0,
            128,
            &mut NoProgress,
        )
        .unwrap();
        b.download(&q).unwrap()
    };
    group.throughput(Throughput::Elements(sweep_flop as u64));
    group.bench_function("sweep", |bch| bch.iter(sweep));
    s.record(
        &format!("{tag} sweep d={d}"),
        time_once(|| drop(sweep())),
        sweep_flop,
    );

    // whole layer: Qronos W4 g128, objectives off (loading from memory, grams included)
    let cfg = QuantConfig {
        objectives: false,
        ..QuantConfig::default()
    };
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
    let layer_flop = gram_flop + 1.3 * (d as f64).powi(3) + 5.0 * (m * d * d) as f64;
    let layer = || quantize_layer(b, &cfg, &input, &mut NoProgress).unwrap();
    group.throughput(Throughput::Elements(layer_flop as u64));
    group.bench_function("qronos_layer", |bch| bch.iter(layer));
    s.record(
        &format!("{tag} qronos layer d={d}"),
        time_once(|| drop(layer())),
        layer_flop,
    );
    group.finish();
}

fn benches(c: &mut Criterion) {
    let mut s = Summary {
        gemm_gflops: machine_gemm_rate(),
        lines: Vec::new(),
    };
    let cpu = CpuBackend {
        factor: if std::env::var("QRONOS_BENCH_F64").as_deref() == Ok("1") {
            FactorPrecision::F64
        } else {
            FactorPrecision::F32
        },
        ..CpuBackend::new()
    };
    if std::env::var("QRONOS_BENCH_CPU").as_deref() != Ok("0") {
        for d in dims() {
            bench_backend(c, &cpu, "cpu", d, &mut s);
        }
    }
    let force = std::env::var("QRONOS_BENCH_GPU").ok();
    let hardware = gpu::list_adapters()
        .iter()
        .any(|a| gpu::is_hardware(&a.device_type));
    if force.as_deref() != Some("0") && (hardware || force.as_deref() == Some("1")) {
        match GpuBackend::new(if hardware {
            AdapterChoice::HardwareOnly
        } else {
            AdapterChoice::Any
        }) {
            Ok(g) => {
                let tag = format!("gpu[{}]", g.adapter_name());
                for d in dims() {
                    if !hardware && d > 1024 {
                        continue; // a software adapter at d = 4096 takes many minutes per sample
                    }
                    bench_backend(c, &g, &tag, d, &mut s);
                }
            }
            Err(e) => eprintln!("GPU benches skipped: {e}"),
        }
    }
    println!(
        "\nfaer f32 GEMM rate on this machine (2048³): {:.1} GFLOP/s",
        s.gemm_gflops
    );
    for l in &s.lines {
        println!("{l}");
    }
}

criterion_group!(layer_benches, benches);
criterion_main!(layer_benches);

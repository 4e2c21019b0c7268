//! The model forward (`qronos eval`'s work) on the real SmolLM2-135M, CPU (faer) and GPU
//! (wgpu), reporting tokens/s, the FLOP rate (`model::eval::forward_flops`: linears +
//! lm_head + causal attention) and its ratio to this machine's faer f32 GEMM rate measured in
//! the same run — both the square 2048³ rate and the rate of the model's own widest linear
//! (576 → 1536 over 4096 tokens).
//!
//! Needs the fixtures (`scripts/fixtures/fetch.sh`; `$QRONOS_FIXTURES`, default
//! `~/.cache/qronos/fixtures`); without them it prints a note and measures nothing.
//! `QRONOS_BENCH_GPU=0|1` forces the GPU part off / on (1 also runs on a software adapter such
//! as lavapipe, which is very slow); `QRONOS_BENCH_CPU=0` skips the CPU part;
//! `QRONOS_BENCH_TOKENS` (default 8192) sets the text tokens per measurement.
//!
//! Timed regions include reading the NLLs back, so GPU work is complete when the clock stops.

use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qronos::backend::cpu::CpuBackend;
use qronos::backend::gpu::{self, AdapterChoice, GpuBackend};
use qronos::backend::{Backend, Forward};
use qronos::model::eval::{forward_flops, perplexity, EvalConfig, Protocol};
use qronos::model::{ModelDir, Tokenizer};
use qronos::NoProgress;

#[global_allocator]
static ALLOC: qronos::alloc::HugePages = qronos::alloc::HugePages;

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("QRONOS_FIXTURES")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/qronos/fixtures"))
        })?;
    dir.join("smollm2-135m-instruct/model.safetensors")
        .exists()
        .then_some(dir)
}

fn flag(name: &str) -> Option<bool> {
    std::env::var(name).ok().map(|v| v == "1")
}

/// faer f32 GEMM rate (GFLOP/s), `m × k · k × n`.
fn gemm_rate(m: usize, k: usize, n: usize) -> f64 {
    qronos::backend::gemm_rate(&CpuBackend::new(), m, k, n).unwrap()
}

struct Case {
    model: ModelDir,
    ids: Vec<u32>,
}

fn run<B: Forward>(be: &B, c: &Case, seqlen: usize) -> f64 {
    let cfg = EvalConfig {
        seqlen,
        max_tokens: None,
        protocol: Protocol::Standard,
        chunk_tokens: None,
        act_bits: None,
        kv_bits: None,
    };
    perplexity(be, &c.model, &c.ids, None, &cfg, &mut NoProgress)
        .unwrap()
        .ppl
}

fn bench_backend<B: Forward>(
    crit: &mut Criterion,
    be: &B,
    tag: &str,
    c: &Case,
    rates: (f64, f64),
    lines: &mut Vec<String>,
) {
    for seqlen in [512, 2048] {
        let windows = c.ids.len() / seqlen;
        let tokens = windows * seqlen;
        let flop = forward_flops(&c.model.config, windows, seqlen);
        // warm-up (pipelines, page cache), then one timed run for the summary
        let ppl = run(be, c, seqlen);
        let t = Instant::now();
        run(be, c, seqlen);
        let secs = t.elapsed().as_secs_f64();
        let rate = flop / secs / 1e9;
        lines.push(format!(
            "{tag} seqlen {seqlen:>4}: {tokens} tokens {secs:>7.2} s {:>7.0} tok/s \
             {rate:>6.1} GFLOP/s  {:.2}× of 2048³ GEMM, {:.2}× of the model's GEMM  (ppl {ppl:.3})",
            tokens as f64 / secs,
            rate / rates.0,
            rate / rates.1,
        ));
        let mut g = crit.benchmark_group(format!("forward/{tag}"));
        g.sample_size(10);
        g.throughput(Throughput::Elements(tokens as u64));
        g.bench_function(format!("smollm2-135m/seqlen{seqlen}"), |b| {
            b.iter(|| run(be, c, seqlen))
        });
        g.finish();
    }
}

fn benches(crit: &mut Criterion) {
    // the binary's allocator settings, so the bench measures what `qronos eval` does
    qronos::alloc::keep_freed_memory();
    let Some(dir) = fixtures() else {
        eprintln!("forward bench: no fixtures (run scripts/fixtures/fetch.sh); nothing measured");
        return;
    };
    let mdir = dir.join("smollm2-135m-instruct");
    let model = ModelDir::open(&mdir).unwrap();
    let tok = Tokenizer::open(&mdir, &model.config).unwrap();
    let text = std::fs::read_to_string(dir.join("text/eval.txt")).unwrap();
    let n: usize = std::env::var("QRONOS_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8192);
    let mut ids = tok.encode(&text, false).unwrap();
    ids.truncate(n);
    let case = Case { model, ids };
    let rates = (gemm_rate(2048, 2048, 2048), gemm_rate(1536, 576, 4096));
    let mut lines = vec![format!(
        "faer f32 GEMM: 2048³ {:.1} GFLOP/s; 1536×576·576×4096 {:.1} GFLOP/s",
        rates.0, rates.1
    )];
    if flag("QRONOS_BENCH_CPU") != Some(false) {
        bench_backend(crit, &CpuBackend::new(), "cpu", &case, rates, &mut lines);
    }
    let hardware = gpu::list_adapters()
        .iter()
        .any(|a| gpu::is_hardware(&a.device_type));
    if flag("QRONOS_BENCH_GPU").unwrap_or(hardware) {
        let choice = if hardware {
            AdapterChoice::HardwareOnly
        } else {
            AdapterChoice::Any
        };
        let be = GpuBackend::new(choice).unwrap();
        let tag = format!("gpu ({})", be.info().adapter);
        bench_backend(crit, &be, &tag, &case, rates, &mut lines);
    }
    eprintln!("\n--- forward summary (single timed runs after a warm-up) ---");
    for l in &lines {
        eprintln!("{l}");
    }
}

criterion_group!(forward_benches, benches);
criterion_main!(forward_benches);

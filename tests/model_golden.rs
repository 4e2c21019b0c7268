//! The Llama-family forward against golden outputs of the real implementation (transformers
//! 5.23 + torch 2.15, f32, eager attention; made by `scripts/golden/make_tiny_models.py`):
//! tiny random-weight models of every architecture variant, each with per-token
//! log-probabilities of two token sequences and the full logits at two positions.
//! The CPU forward must match the goldens; the GPU forward (lavapipe in CI) must match the
//! CPU forward.

#[path = "common/gpu.rs"]
mod gpu_common;

use std::path::{Path, PathBuf};

use qronos::backend::cpu::CpuBackend;
use qronos::backend::Forward;
use qronos::model::eval::{logits, perplexity, EvalConfig, Protocol};
use qronos::model::ModelDir;
use qronos::NoProgress;
use serde_json::Value;

/// Every variant committed under tests/data/models.
const VARIANTS: [&str; 8] = [
    "llama3-rope",
    "mistral",
    "qwen2",
    "qwen3",
    "llama-f16",
    "llama-bf16",
    "llama-sharded",
    "llama-bias",
];

/// Max |Δ log p| per token against transformers. Both sides compute in f32 from the same
/// stored weights; what differs is summation order (GEMM blocking, softmax sums) and the
/// exp / rsqrt implementations, ~1e-7 relative per op. Through 2 blocks the logits of these
/// models (|z| up to ~10) move by ~1e-6; 2e-5 leaves headroom without hiding a real bug
/// (a wrong rope frequency, bias or norm moves log-probs by 1e-2 or more).
const LOGPROB_TOL: f64 = 2e-5;
/// Max |Δ logit| against transformers, for the same reasons.
const LOGIT_TOL: f64 = 2e-5;
/// GPU vs CPU, max |Δ log p|: the same f32 math in another summation order.
const GPU_LOGPROB_TOL: f64 = 2e-5;

fn model_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models")
        .join(name)
}

struct Golden {
    ids: Vec<u32>,
    logprobs: Vec<f64>,
    ids2: Vec<u32>,
    logprobs2: Vec<f64>,
    logits_first: Vec<f64>,
    logits_last: Vec<f64>,
}

fn floats(v: &Value, key: &str) -> Vec<f64> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("golden key {key}"))
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn ints(v: &Value, key: &str) -> Vec<u32> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("golden key {key}"))
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn golden(name: &str) -> Golden {
    let text = std::fs::read_to_string(model_dir(name).join("golden.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    Golden {
        ids: ints(&v, "input_ids"),
        logprobs: floats(&v, "logprobs"),
        ids2: ints(&v, "input_ids_2"),
        logprobs2: floats(&v, "logprobs_2"),
        logits_first: floats(&v, "logits_first"),
        logits_last: floats(&v, "logits_last"),
    }
}

/// log p(ids[t+1] | ..=t) from column-major `vocab × T` logits, log-softmax in f64.
fn logprobs_of(z: &[f32], vocab: usize, ids: &[u32]) -> Vec<f64> {
    (0..ids.len() - 1)
        .map(|t| {
            let col = &z[t * vocab..(t + 1) * vocab];
            let m = col.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m + col.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            col[ids[t + 1] as usize] as f64 - lse
        })
        .collect()
}

/// `(max |a − b|, index)`.
fn max_abs(a: &[f64], b: &[f64]) -> (f64, usize) {
    assert_eq!(a.len(), b.len(), "lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .enumerate()
        .fold(
            (0.0, 0),
            |(m, i), (j, d)| if d > m { (d, j) } else { (m, i) },
        )
}

fn check(name: &str, what: &str, got: &[f64], want: &[f64], tol: f64) {
    let (d, i) = max_abs(got, want);
    assert!(
        d <= tol,
        "{name}: {what}: max |Δ| = {d:e} at index {i} (got {}, want {}), tolerance {tol:e}",
        got[i],
        want[i]
    );
    eprintln!("{name}: {what}: max |Δ| = {d:.2e}");
}

/// Logits (`vocab × T`) of a sequence, as f64.
fn run_logits<B: Forward>(be: &B, m: &ModelDir, ids: &[u32]) -> Vec<f32> {
    logits(be, m, ids, &mut NoProgress).unwrap()
}

#[test]
fn cpu_forward_matches_transformers_on_every_variant() {
    let cpu = CpuBackend::new();
    for name in VARIANTS {
        let m = ModelDir::open(&model_dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let g = golden(name);
        let vocab = m.config.vocab_size;
        let z = run_logits(&cpu, &m, &g.ids);
        check(
            name,
            "logprobs",
            &logprobs_of(&z, vocab, &g.ids),
            &g.logprobs,
            LOGPROB_TOL,
        );
        let t = g.ids.len();
        let first: Vec<f64> = z[..vocab].iter().map(|&x| x as f64).collect();
        let last: Vec<f64> = z[(t - 1) * vocab..].iter().map(|&x| x as f64).collect();
        check(name, "logits[0]", &first, &g.logits_first, LOGIT_TOL);
        check(name, "logits[T-1]", &last, &g.logits_last, LOGIT_TOL);
        let z2 = run_logits(&cpu, &m, &g.ids2);
        check(
            name,
            "logprobs (second sequence)",
            &logprobs_of(&z2, vocab, &g.ids2),
            &g.logprobs2,
            LOGPROB_TOL,
        );
    }
}

/// The perplexity path (chunked windows, on-backend NLL, scoring rule) gives the golden
/// per-token NLLs: one window of the whole sequence scores every token but the first.
#[test]
fn perplexity_path_gives_the_golden_token_nll() {
    let cpu = CpuBackend::new();
    for name in ["llama3-rope", "qwen3"] {
        let m = ModelDir::open(&model_dir(name)).unwrap();
        let g = golden(name);
        // two copies of the sequence: two windows, one per forward chunk
        let text: Vec<u32> = g.ids.iter().chain(&g.ids).copied().collect();
        let cfg = EvalConfig {
            seqlen: g.ids.len(),
            max_tokens: None,
            protocol: Protocol::Standard,
            chunk_tokens: Some(g.ids.len()),
            act_bits: None,
            kv_bits: None,
        };
        let r = perplexity(&cpu, &m, &text, None, &cfg, &mut NoProgress).unwrap();
        assert_eq!((r.windows, r.tokens), (2, 2 * (g.ids.len() - 1)));
        let got: Vec<f64> = r.token_nll.iter().map(|&v| -(v as f64)).collect();
        let want: Vec<f64> = g.logprobs.iter().chain(&g.logprobs).copied().collect();
        check(name, "perplexity token NLL", &got, &want, LOGPROB_TOL);
        let mean = -want.iter().sum::<f64>() / want.len() as f64;
        assert!(
            (r.nll - mean).abs() < LOGPROB_TOL,
            "{name}: mean NLL {} vs golden {mean}",
            r.nll
        );
    }
}

#[test]
fn gpu_forward_matches_cpu_on_every_variant() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    let cpu = CpuBackend::new();
    for name in VARIANTS {
        let m = ModelDir::open(&model_dir(name)).unwrap();
        let g = golden(name);
        let vocab = m.config.vocab_size;
        let zc = logprobs_of(&run_logits(&cpu, &m, &g.ids), vocab, &g.ids);
        let zg = logprobs_of(&run_logits(&gpu, &m, &g.ids), vocab, &g.ids);
        check(name, "GPU vs CPU logprobs", &zg, &zc, GPU_LOGPROB_TOL);
        // and the GPU on its own against transformers
        check(name, "GPU logprobs", &zg, &g.logprobs, LOGPROB_TOL);
    }
}

#[test]
fn gpu_perplexity_is_deterministic_and_matches_cpu() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    let cpu = CpuBackend::new();
    let m = ModelDir::open(&model_dir("qwen2")).unwrap();
    let g = golden("qwen2");
    let text: Vec<u32> = g.ids.iter().chain(&g.ids2).chain(&g.ids).copied().collect();
    let cfg = EvalConfig {
        seqlen: 32,
        max_tokens: None,
        protocol: Protocol::Standard,
        chunk_tokens: Some(64),
        act_bits: None,
        kv_bits: None,
    };
    let a = perplexity(&gpu, &m, &text, None, &cfg, &mut NoProgress).unwrap();
    let b = perplexity(&gpu, &m, &text, None, &cfg, &mut NoProgress).unwrap();
    let c = perplexity(&cpu, &m, &text, None, &cfg, &mut NoProgress).unwrap();
    assert_eq!(a.windows, 4);
    assert_eq!(
        a.token_nll, b.token_nll,
        "GPU perplexity must be bit-identical run to run"
    );
    assert!(
        (a.nll - c.nll).abs() < GPU_LOGPROB_TOL,
        "GPU mean NLL {} vs CPU {}",
        a.nll,
        c.nll
    );
}

/// Rotary frequencies as transformers computed them (`rope_inv_freq` in each golden, f32),
/// including the llama3 bands: equal to the last bit, or at most 1 ulp where torch's f32
/// `pow` rounds differently from the correctly rounded one.
#[test]
fn rope_frequencies_match_transformers() {
    for name in VARIANTS {
        let m = ModelDir::open(&model_dir(name)).unwrap();
        let text = std::fs::read_to_string(model_dir(name).join("golden.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let want = floats(&v, "rope_inv_freq");
        let got = m.config.inv_freq();
        assert_eq!(got.len(), want.len(), "{name}: inv_freq length");
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let w = w as f32;
            let ulps = (g.to_bits() as i64 - w.to_bits() as i64).abs();
            assert!(
                ulps <= 1,
                "{name}: inv_freq[{i}] = {g:e}, transformers {w:e}"
            );
        }
    }
}

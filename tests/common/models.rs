//! Shared helpers of the model-level tests (included with
//! `#[path = "common/models.rs"] mod models;`): the tiny test models, scratch folders,
//! seeded token ids, a sink that keeps every quantized linear, and a folder's perplexity.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use qronos::model::quantize::Sink;
use qronos::LayerResult;

/// `tests/data/models/<name>`.
pub fn model_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models")
        .join(name)
}

/// A fresh (removed) scratch path under the temp folder, unique to the test process.
pub fn tmp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("qronos-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// Seeded pseudo-random token ids (the tiny models have no real text).
pub fn tokens(n: usize, vocab: u32, seed: u64) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % vocab as u64) as u32
        })
        .collect()
}

/// Keeps every quantized linear the pipeline hands over.
pub struct Collect(pub Vec<(String, LayerResult)>);

impl Sink for Collect {
    fn linear(&mut self, _block: usize, name: &str, r: &LayerResult) -> qronos::Result<()> {
        self.0.push((name.to_string(), r.clone()));
        Ok(())
    }
}

/// The CPU perplexity of model folder `dir` on 2048 seeded tokens (seed 99), seqlen 64.
pub fn tiny_ppl(dir: &Path) -> f64 {
    use qronos::model::eval::{perplexity, EvalConfig, Protocol};
    let m = qronos::model::ModelDir::open(dir).unwrap();
    let ids = tokens(2048, m.config.vocab_size as u32, 99);
    let cfg = EvalConfig {
        seqlen: 64,
        max_tokens: None,
        protocol: Protocol::Standard,
        chunk_tokens: None,
        act_bits: None,
        kv_bits: None,
    };
    let be = qronos::backend::cpu::CpuBackend::new();
    perplexity(&be, &m, &ids, None, &cfg, &mut qronos::NoProgress)
        .unwrap()
        .ppl
}

//! Shared helpers of the model-level tests (included with
//! `#[path = "common/models.rs"] mod models;`): the tiny test models, scratch folders,
//! seeded token ids, and a sink that keeps every quantized linear.
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

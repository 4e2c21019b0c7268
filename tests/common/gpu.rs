//! Shared helpers of the GPU tests (included with `#[path = "common/gpu.rs"] mod gpu_common;`).
//!
//! - [`backend`]: the GPU backend on any adapter (lavapipe in CI). Without an adapter the test
//!   fails when `CI=true` (CI must not silently skip GPU tests) and is skipped otherwise.
//! - [`Rng`]: a tiny deterministic PRNG (splitmix64), so tests need no `rand`.
//! - error measures used by the agreement tests.
#![allow(dead_code)]

use qronos::backend::gpu::{AdapterChoice, GpuBackend};

fn on_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

fn open(limit: Option<u64>) -> Option<GpuBackend> {
    let r = match limit {
        None => GpuBackend::new(AdapterChoice::Any),
        Some(l) => GpuBackend::with_binding_limit(AdapterChoice::Any, l),
    };
    match r {
        Ok(be) => Some(be),
        Err(e) if on_ci() => panic!(
            "CI=true but no GPU adapter could be opened ({e}); install lavapipe \
             (apt-get install mesa-vulkan-drivers libvulkan1)"
        ),
        Err(e) => {
            eprintln!("skipping GPU test: no adapter ({e})");
            None
        }
    }
}

/// The GPU backend on any adapter, or `None` (skip) outside CI when there is none.
pub fn backend() -> Option<GpuBackend> {
    open(None)
}

/// Like [`backend`], with storage bindings capped at `limit` bytes to force column panels.
pub fn backend_with_limit(limit: u64) -> Option<GpuBackend> {
    open(Some(limit))
}

/// splitmix64: deterministic, seedable, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [-1, 1).
    pub fn sym(&mut self) -> f32 {
        (2.0 * self.unit() - 1.0) as f32
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
    /// A random permutation of 0..n.
    pub fn perm(&mut self, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

/// `‖a − b‖_F / ‖b‖_F` in f64 (b is the reference).
pub fn rel_fro(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "rel_fro: lengths differ");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Indices of non-finite values (what a poisoned output left unwritten shows up as).
pub fn non_finite(a: &[f32]) -> Vec<usize> {
    a.iter()
        .enumerate()
        .filter(|(_, v)| !v.is_finite())
        .map(|(i, _)| i)
        .collect()
}

/// A matrix full of NaN, to show which outputs a kernel failed to write.
pub fn nan_vec(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

/// Random SPD matrix `XᵀX/n + shift·I` (d × d, column-major), reasonably conditioned.
pub fn spd(rng: &mut Rng, d: usize, shift: f32) -> Vec<f32> {
    let n = d + 16;
    let x = rng.vec(n * d); // column-major n × d
    let mut h = vec![0f32; d * d];
    for i in 0..d {
        for j in 0..=i {
            let mut s = 0f64;
            for t in 0..n {
                s += x[i * n + t] as f64 * x[j * n + t] as f64;
            }
            let v = (s / n as f64) as f32 + if i == j { shift } else { 0.0 };
            h[j * d + i] = v;
            h[i * d + j] = v;
        }
    }
    h
}

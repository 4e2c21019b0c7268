//! Deterministic synthetic layers that look like LLM linears, for tests, benches and the
//! bundled demo case: heavy-tailed weights, a few outlier input channels, and quantized-model
//! inputs `X̃ = X + drift` rounded to an int8 grid (what an upstream W/A quantized model feeds).

/// SplitMix64: tiny, fast, deterministic across platforms.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// Student-t with `nu` degrees of freedom (heavy tails), from normals.
    pub fn student_t(&mut self, nu: u32) -> f64 {
        let z = self.normal();
        let chi2: f64 = (0..nu).map(|_| self.normal().powi(2)).sum();
        z / (chi2 / nu as f64).sqrt()
    }
}

/// A synthetic layer: `w` `[m, d]`, `x` `[n, d]`, `xq` `[n, d]`, all row-major.
pub struct SynthLayer {
    pub m: usize,
    pub d: usize,
    pub n: usize,
    pub w: Vec<f32>,
    pub x: Vec<f32>,
    pub xq: Vec<f32>,
}

/// LLM-like layer: Student-t(4) weights scaled by `1/√d`; inputs with correlated features
/// (a shared low-rank component), per-channel scales with ~1% outlier channels ×20;
/// `X̃ = round_int8(X + 0.05·drift)` with a per-token absmax int8 grid.
pub fn llm_like(m: usize, d: usize, n: usize, seed: u64) -> SynthLayer {
    let mut rng = Rng::new(seed);
    let ws = 1.0 / (d as f64).sqrt();
    let w: Vec<f32> = (0..m * d)
        .map(|_| (rng.student_t(4) * ws * 0.5) as f32)
        .collect();
    let chan: Vec<f64> = (0..d)
        .map(|_| {
            let base = 0.5 + rng.uniform();
            if rng.uniform() < 0.01 {
                base * 20.0
            } else {
                base
            }
        })
        .collect();
    let rank = 8.min(d);
    let basis: Vec<f64> = (0..rank * d).map(|_| rng.normal()).collect();
    let mut x = vec![0f32; n * d];
    let mut xq = vec![0f32; n * d];
    let mut row = vec![0f64; d];
    for t in 0..n {
        let coef: Vec<f64> = (0..rank).map(|_| rng.normal() * 0.7).collect();
        for (j, v) in row.iter_mut().enumerate() {
            let shared: f64 = (0..rank).map(|k| coef[k] * basis[k * d + j]).sum();
            *v = (rng.normal() + shared) * chan[j];
        }
        for j in 0..d {
            x[t * d + j] = row[j] as f32;
        }
        // the quantized model's input: drifted, then int8 per-token
        let drifted: Vec<f64> = (0..d)
            .map(|j| row[j] + 0.05 * chan[j] * rng.normal())
            .collect();
        let amax = drifted.iter().fold(0f64, |a, v| a.max(v.abs())).max(1e-12);
        let s = amax / 127.0;
        for j in 0..d {
            xq[t * d + j] = ((drifted[j] / s).round_ties_even().clamp(-127.0, 127.0) * s) as f32;
        }
    }
    SynthLayer { m, d, n, w, x, xq }
}

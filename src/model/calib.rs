//! Calibration windows: `nsamples` windows of `seqlen` tokens at seeded random starts in a
//! tokenized text, by exactly the rule of the GPTQ / Qronos reference scripts:
//!
//! ```python
//! random.seed(seed)
//! for _ in range(nsamples):
//!     i = random.randint(0, n - seqlen - 1)      # inclusive bounds
//!     window = ids[i : i + seqlen]
//! ```
//!
//! [`PyRandom`] reproduces CPython's `random` (MT19937 seeded by `init_by_array`, `randint`
//! through `getrandbits` with rejection), so the same seed picks the same windows as the
//! references do on the same token ids.

use crate::{Error, Result};

const N: usize = 624;
const M: usize = 397;

/// CPython's `random.Random` for integer seeds and `randint` / `getrandbits(≤ 32)`.
pub struct PyRandom {
    mt: [u32; N],
    idx: usize,
}

impl PyRandom {
    /// `random.seed(seed)` for a non-negative integer seed below 2³².
    pub fn new(seed: u32) -> Self {
        let mut r = PyRandom { mt: [0; N], idx: N };
        r.init_by_array(&[seed]);
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..N {
            let prev = self.mt[i - 1];
            self.mt[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        self.idx = N;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
        }
        self.mt[0] = 0x8000_0000;
    }

    /// The next 32 random bits (`genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.idx >= N {
            for k in 0..N {
                let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % N] & 0x7fff_ffff);
                let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
                self.mt[k] = self.mt[(k + M) % N] ^ (y >> 1) ^ mag;
            }
            self.idx = 0;
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `random.getrandbits(k)` for `1 ≤ k ≤ 32`.
    pub fn getrandbits(&mut self, k: u32) -> u32 {
        assert!((1..=32).contains(&k), "getrandbits: k = {k}");
        self.next_u32() >> (32 - k)
    }

    /// `random.randint(a, b)`: uniform on `[a, b]`, both inclusive (`b − a < 2³²`).
    pub fn randint(&mut self, a: u64, b: u64) -> u64 {
        assert!(a <= b && b - a < u64::from(u32::MAX), "randint({a}, {b})");
        let n = b - a + 1;
        let k = 64 - n.leading_zeros(); // n.bit_length()
        loop {
            let r = u64::from(self.getrandbits(k));
            if r < n {
                return a + r;
            }
        }
    }
}

/// `nsamples` windows of `seqlen` tokens of `tokens` (see the module docs). A text with fewer
/// than `seqlen + 1` tokens is an error that says how many it has; `what` names the source.
pub fn windows(
    tokens: &[u32],
    nsamples: usize,
    seqlen: usize,
    seed: u32,
    what: &str,
) -> Result<Vec<Vec<u32>>> {
    if seqlen == 0 || nsamples == 0 {
        return Err(Error::config(
            "--nsamples / --seqlen",
            "calibration needs at least one window of at least one token",
        ));
    }
    if tokens.len() < seqlen + 1 {
        return Err(Error::config(
            "--calib",
            format!(
                "{what} has {} tokens; calibration windows of {seqlen} tokens need at least {}",
                tokens.len(),
                seqlen + 1
            ),
        ));
    }
    let mut rng = PyRandom::new(seed);
    let last = (tokens.len() - seqlen - 1) as u64;
    Ok((0..nsamples)
        .map(|_| {
            let i = rng.randint(0, last) as usize;
            tokens[i..i + seqlen].to_vec()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values from CPython 3.11:
    // python3 -c "import random; random.seed(0); print([random.getrandbits(32) for _ in range(3)])"
    // python3 -c "import random; random.seed(0); print([random.randint(0, 100000-512-1) for _ in range(8)])"
    // python3 -c "import random; random.seed(1234); print([random.randint(0, 3000-2048-1) for _ in range(5)])"
    #[test]
    fn matches_cpython_random() {
        let mut r = PyRandom::new(0);
        let bits: Vec<u32> = (0..3).map(|_| r.getrandbits(32)).collect();
        assert_eq!(bits, [3626764237, 1654615998, 3255389356]);
        let mut r = PyRandom::new(0);
        let s: Vec<u64> = (0..8).map(|_| r.randint(0, 100_000 - 512 - 1)).collect();
        assert_eq!(s, [50494, 99346, 55125, 5306, 33936, 67013, 63691, 53075]);
        let mut r = PyRandom::new(1234);
        let s: Vec<u64> = (0..5).map(|_| r.randint(0, 3000 - 2048 - 1)).collect();
        assert_eq!(s, [796, 451, 119, 7, 92]);
    }

    #[test]
    fn windows_follow_the_reference_rule() {
        let tokens: Vec<u32> = (0..100_000).collect();
        let w = windows(&tokens, 3, 512, 0, "calib.txt").unwrap();
        assert_eq!(w[0][0], 50494);
        assert_eq!(w[1][0], 99346);
        assert!(w.iter().all(|x| x.len() == 512));
        assert_eq!(w, windows(&tokens, 3, 512, 0, "calib.txt").unwrap());
        let e = windows(&tokens[..512], 1, 512, 0, "calib.txt").unwrap_err();
        assert!(e.to_string().contains("calib.txt has 512 tokens"), "{e}");
    }
}

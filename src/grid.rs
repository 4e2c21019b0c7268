//! The quantizer grid (DESIGN §1.2): the single source of rounding truth.
//!
//! Codes are unsigned integers `c ∈ [0, 2^b − 1]`, dequantized as `q = s · (c − z)` with one
//! scale `s` and zero-point `z` per (output row, group of input columns).
//! - range of a group: `lo = min(min w, 0)`, `hi = max(max w, 0)`; all-zero ⇒ `[-1, 1]`;
//! - symmetric (GPTQ): `s = 2·max(−lo, hi)/(2^b − 1)`, `z = 2^(b−1)`;
//! - asymmetric: `s = (hi − lo)/(2^b − 1)`, `z = round(−lo / s)`;
//! - `c = clamp(round(w / s) + z, 0, 2^b − 1)`, rounding half to even everywhere;
//! - with a [`ScaleDtype`] other than f32, `s` is rounded to it before `z` and the codes.
//!
//! `shaders/common.wgsl` mirrors these functions operation for operation (WGSL `round` is
//! ties-to-even); `tests/grid_wgsl.rs` checks the two bit for bit. Rust's `f32::round` rounds
//! ties away from zero and must not be used here.

/// `x` rounded to the nearest integer, ties to even: bit-identical to
/// [`f32::round_ties_even`] for every input (±0, NaN and ±∞ included), but written with two
/// additions so it vectorises; on x86-64 without SSE4.1 the std version is a call to libm's
/// `rintf` per value. Below 2²³, `|x| + 2²³` has a spacing of exactly 1, so the addition rounds
/// `|x|` to an integer, ties to even (2²³ is even); at and above 2²³ every float is an integer.
#[inline]
pub fn round_ties_even(x: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let a = x.abs();
    if a < TWO_23 {
        ((a + TWO_23) - TWO_23).copysign(x)
    } else {
        x
    }
}

/// How a static group's range is chosen (DESIGN §1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Clip {
    /// The group's full range `[lo, hi]` (the references' grid).
    #[default]
    MinMax,
    /// The range shrunk by the factor `p ∈ {1, 0.99, …, 0.21}` ([`shrink`]) whose grid rounds
    /// the group with the least squared error (GPTQ's `mse` option, with norm 2); ties keep
    /// the larger range.
    Mse,
    /// Like `Mse`, each column's squared error weighted by `diag(H)` (the layer objective's
    /// diagonal part: what an error in that input costs the output). RTN has no `H`: there
    /// it is `MinMax`.
    HessianMse,
}

impl Clip {
    pub fn name(self) -> &'static str {
        match self {
            Clip::MinMax => "minmax",
            Clip::Mse => "mse",
            Clip::HessianMse => "hmse",
        }
    }
}

/// Shrink factors tried by [`Clip::Mse`] (GPTQ: `grid = 100`, `maxshrink = 0.8`).
pub const MSE_STEPS: u32 = 80;

/// The `i`-th shrink factor, `(100 − i) · 0.01` in f32 (a product, not a quotient, so that
/// WGSL, whose division is only promised to 2.5 ulp, computes the same bits).
#[inline]
pub fn shrink(i: u32) -> f32 {
    (100 - i) as f32 * 0.01
}

/// `lo = min(min, 0)`, `hi = max(max, 0)`; `[−1, 1]` when both are 0.
#[inline]
pub fn clipped_range(min: f32, max: f32) -> (f32, f32) {
    let (lo, hi) = (min.min(0.0), max.max(0.0));
    if lo == 0.0 && hi == 0.0 {
        (-1.0, 1.0)
    } else {
        (lo, hi)
    }
}

/// The dtype a checkpoint stores scales in. The grid rounds each scale to it (ties to even)
/// before any code is chosen, so the stored checkpoint decodes to exactly the weights the
/// algorithm worked with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ScaleDtype {
    #[default]
    F32,
    F16,
    Bf16,
}

impl ScaleDtype {
    pub fn name(self) -> &'static str {
        match self {
            ScaleDtype::F32 => "f32",
            ScaleDtype::F16 => "f16",
            ScaleDtype::Bf16 => "bf16",
        }
    }
    /// The value the WGSL twin receives (`shaders/common.wgsl`, `grid_round_scale`).
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// A positive scale `s` rounded to `dt`, ties to even, by bit operations (the WGSL twin does
/// the same): f16 keeps 10 fraction bits (subnormals in steps of 2⁻²⁴), bf16 7. A scale that
/// would round to 0 becomes the dtype's smallest positive value and one beyond the largest
/// finite value becomes that value (no weights are that far apart from 0 in practice).
#[inline]
pub fn round_scale(s: f32, dt: ScaleDtype) -> f32 {
    const F16_MAX: f32 = 65504.0;
    const F16_MIN_SUB: f32 = 5.960_464_5e-8; // 2^-24
    match dt {
        ScaleDtype::F32 => s,
        ScaleDtype::F16 => {
            let b = s.to_bits();
            let e = (b >> 23) & 0xff;
            if e >= 143 {
                return F16_MAX;
            }
            if e >= 113 {
                let y = f32::from_bits((b + 0xfff + ((b >> 13) & 1)) & !0x1fff);
                return y.min(F16_MAX);
            }
            // f16 subnormal range: a multiple of 2^-24 (x · 2^24 is exact)
            let n = round_ties_even(s * 16_777_216.0).max(1.0);
            n * F16_MIN_SUB
        }
        ScaleDtype::Bf16 => {
            let b = s.to_bits();
            let y = (b + 0x7fff + ((b >> 16) & 1)) & 0xffff_0000;
            match y {
                0 => f32::from_bits(0x0001_0000),
                0x7f80_0000 => f32::from_bits(0x7f7f_0000),
                _ => f32::from_bits(y),
            }
        }
    }
}

/// Bits and symmetry of a grid, and the dtype its scales are stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub bits: u32,
    pub sym: bool,
    pub scale_dtype: ScaleDtype,
}

/// Scale and zero point of one (row, group).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupParams {
    pub scale: f32,
    pub zero: f32,
}

impl Grid {
    pub fn new(bits: u32, sym: bool) -> Self {
        assert!((2..=8).contains(&bits), "bits must be in 2..=8, got {bits}");
        Grid {
            bits,
            sym,
            scale_dtype: ScaleDtype::F32,
        }
    }

    /// The same grid with scales rounded to `dt`.
    pub fn with_scale_dtype(self, dt: ScaleDtype) -> Self {
        Grid {
            scale_dtype: dt,
            ..self
        }
    }

    /// Largest code, `2^b − 1`.
    pub fn maxq(&self) -> f32 {
        ((1u32 << self.bits) - 1) as f32
    }

    /// Grid parameters from the group's minimum and maximum value.
    pub fn params_from_range(&self, min: f32, max: f32) -> GroupParams {
        let (lo, hi) = clipped_range(min, max);
        let maxq = self.maxq();
        if self.sym {
            let a = (-lo).max(hi);
            GroupParams {
                scale: round_scale(2.0 * a / maxq, self.scale_dtype),
                zero: (1u32 << (self.bits - 1)) as f32,
            }
        } else {
            let scale = round_scale((hi - lo) / maxq, self.scale_dtype);
            // a scale rounded down may put −lo / s a little past maxq
            GroupParams {
                scale,
                zero: round_ties_even(-lo / scale).clamp(0.0, maxq),
            }
        }
    }

    /// Grid parameters of a group of values (NaN values are ignored by min/max).
    pub fn params<I: IntoIterator<Item = f32>>(&self, values: I) -> GroupParams {
        let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
        for v in values {
            min = min.min(v);
            max = max.max(v);
        }
        self.params_from_range(min, max)
    }

    /// Grid parameters of a group under `clip`. [`Clip::Mse`] tries the candidates
    /// `params_from_range(lo·p, hi·p)` of [`shrink`] in order, each scored by
    /// `Σ (dequant(code(v)) − v)²` summed in f32 in the order given; the first with the
    /// smallest score wins. `lo`, `hi` are the clamped, all-zero-fixed range of
    /// [`Grid::params_from_range`].
    pub fn params_clipped(&self, values: &[f32], clip: Clip) -> GroupParams {
        self.params_weighted(values, None, clip)
    }

    /// [`Grid::params_clipped`] with each value's squared error multiplied by its weight
    /// (`weights[k] · e²`) when `weights` is given (the [`Clip::HessianMse`] score).
    pub fn params_weighted(
        &self,
        values: &[f32],
        weights: Option<&[f32]>,
        clip: Clip,
    ) -> GroupParams {
        let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
        for &v in values {
            min = min.min(v);
            max = max.max(v);
        }
        let full = self.params_from_range(min, max);
        if clip == Clip::MinMax {
            return full;
        }
        let (lo, hi) = clipped_range(min, max);
        let (mut best, mut best_err) = (full, f32::INFINITY);
        for i in 0..MSE_STEPS {
            let p = self.params_from_range(lo * shrink(i), hi * shrink(i));
            let mut err = 0f32;
            for (k, &v) in values.iter().enumerate() {
                let e = self.dequant(self.code(v, p), p) - v;
                err += weights.map_or(1.0, |w| w[k]) * (e * e);
            }
            if err < best_err {
                (best, best_err) = (p, err);
            }
        }
        best
    }

    /// The code of `w`: `clamp(round(w / s) + z, 0, 2^b − 1)` (as an exact small float).
    #[inline]
    pub fn code(&self, w: f32, p: GroupParams) -> f32 {
        (round_ties_even(w / p.scale) + p.zero).clamp(0.0, self.maxq())
    }

    /// The dequantized value of a code: `s · (c − z)`.
    #[inline]
    pub fn dequant(&self, c: f32, p: GroupParams) -> f32 {
        p.scale * (c - p.zero)
    }

    /// Round-to-grid of one value: `(code, dequantized)`.
    #[inline]
    pub fn quantize(&self, w: f32, p: GroupParams) -> (f32, f32) {
        let c = self.code(w, p);
        (c, self.dequant(c, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_round_to_even() {
        let g = Grid::new(4, false);
        let p = GroupParams {
            scale: 1.0,
            zero: 0.0,
        };
        assert_eq!(g.code(2.5, p), 2.0);
        assert_eq!(g.code(3.5, p), 4.0);
        assert_eq!(g.code(0.5, p), 0.0);
        assert_eq!(g.code(-0.5, p), 0.0); // clamped after rounding to -0
        assert_eq!(g.code(100.0, p), 15.0);
    }

    #[test]
    fn fast_rounding_matches_std_bit_for_bit() {
        let mut specials = vec![
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -2.5,
            8_388_607.5,
            8_388_608.0,
            -8_388_609.0,
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        // every half-integer and its neighbours up to 2^12, then a sweep over the bit patterns
        for k in 0..(1 << 13) {
            let h = k as f32 * 0.5;
            specials.extend([h, -h, h.next_up(), h.next_down(), -h.next_up()]);
        }
        let patterns = (0..1u64 << 32)
            .step_by(65_521)
            .map(|b| f32::from_bits(b as u32));
        for x in specials.into_iter().chain(patterns) {
            assert_eq!(
                round_ties_even(x).to_bits(),
                x.round_ties_even().to_bits(),
                "x = {x:e} ({:#010x})",
                x.to_bits()
            );
        }
    }

    #[test]
    fn sym_grid_is_gptq() {
        let g = Grid::new(4, true);
        let p = g.params([-1.5f32, 0.5, 3.0]);
        assert_eq!(p.zero, 8.0);
        assert_eq!(p.scale, 6.0 / 15.0);
        // the largest magnitude lands on the grid's edge
        assert_eq!(g.code(-3.0, p), 0.0);
    }

    #[test]
    fn asym_grid_contains_zero_exactly() {
        let g = Grid::new(3, false);
        let p = g.params([0.3f32, 1.7, 2.9]);
        // lo is clamped to 0: zero point 0 and zero maps to code 0 exactly
        assert_eq!(p.zero, 0.0);
        assert_eq!(g.dequant(g.code(0.0, p), p), 0.0);
        let p = g.params([-0.7f32, 0.2]);
        assert_eq!(g.dequant(g.code(0.0, p), p), 0.0);
    }

    /// Brute force over every candidate: MSE clipping picks the least squared error, never
    /// does worse than the full range, and on a group with one outlier it clips.
    #[test]
    fn mse_clip_minimises_squared_error() {
        let sq = |g: &Grid, v: &[f32], p: GroupParams| -> f64 {
            v.iter()
                .map(|&x| ((g.dequant(g.code(x, p), p) - x) as f64).powi(2))
                .sum()
        };
        let mut state = 12345u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for (bits, sym) in [(3, true), (4, true), (2, false), (4, false), (8, true)] {
            let g = Grid::new(bits, sym);
            for _ in 0..50 {
                let mut v: Vec<f32> = (0..32).map(|_| next() * 0.1).collect();
                v[7] = 0.9; // an outlier
                let mse = g.params_clipped(&v, Clip::Mse);
                let full = g.params_clipped(&v, Clip::MinMax);
                assert_eq!(full, g.params(v.iter().copied()));
                let best = (0..MSE_STEPS)
                    .map(|i| {
                        let (lo, hi) = clipped_range(
                            v.iter().copied().fold(f32::INFINITY, f32::min),
                            v.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                        );
                        sq(&g, &v, g.params_from_range(lo * shrink(i), hi * shrink(i)))
                    })
                    .fold(f64::INFINITY, f64::min);
                let got = sq(&g, &v, mse);
                assert!(got <= best * (1.0 + 1e-5), "{bits} {sym}: {got} vs {best}");
                assert!(got <= sq(&g, &v, full) * (1.0 + 1e-6));
            }
        }
        // evenly spread values with one outlier: the 3-bit grid clips it
        let g = Grid::new(3, true);
        let mut v: Vec<f32> = (0..64).map(|i| i as f32 / 31.5 - 1.0).collect();
        v.push(1.3);
        let (mse, full) = (
            g.params_clipped(&v, Clip::Mse),
            g.params_clipped(&v, Clip::MinMax),
        );
        assert!(mse.scale < full.scale && sq(&g, &v, mse) < sq(&g, &v, full));
        // an all-zero group keeps the unit range
        let g = Grid::new(4, true);
        assert_eq!(
            g.params_clipped(&[0.0; 8], Clip::Mse),
            g.params([0.0f32; 8])
        );
    }

    /// The bit-level scale rounding equals the `half` crate's f32 → f16 / bf16 conversion
    /// (round to nearest, ties to even) on every positive value it does not clamp.
    #[test]
    fn scale_rounding_matches_half() {
        let mut xs: Vec<f32> = (1..(1u32 << 31))
            .step_by(4093)
            .map(f32::from_bits)
            .filter(|x| x.is_finite())
            .collect();
        // ties and neighbours of the f16 / bf16 grids, subnormal f16 included
        for k in 1..5000u32 {
            let t16 = f32::from_bits(0x3880_0000 + (k << 13) - (1 << 12)); // near 2^-14
            let tb = f32::from_bits(0x3f80_0000 + (k << 16) - (1 << 15));
            let ts = (k as f32 + 0.5) * 5.960_464_5e-8;
            for t in [t16, tb, ts] {
                xs.extend([t, t.next_up(), t.next_down()]);
            }
        }
        for x in xs {
            let h = half::f16::from_f32(x).to_f32();
            if h > 0.0 && h.is_finite() {
                assert_eq!(
                    round_scale(x, ScaleDtype::F16).to_bits(),
                    h.to_bits(),
                    "{x:e}"
                );
            }
            let b = half::bf16::from_f32(x).to_f32();
            if b > 0.0 && b.is_finite() {
                assert_eq!(
                    round_scale(x, ScaleDtype::Bf16).to_bits(),
                    b.to_bits(),
                    "{x:e}"
                );
            }
        }
        assert_eq!(round_scale(1e-12, ScaleDtype::F16), 5.960_464_5e-8);
        assert_eq!(round_scale(1e6, ScaleDtype::F16), 65504.0);
        assert_eq!(round_scale(1e-45, ScaleDtype::Bf16).to_bits(), 0x0001_0000);
        assert_eq!(round_scale(0.1, ScaleDtype::F32), 0.1);
    }

    /// With a rounded scale every code still dequantizes to `s · (c − z)` with `s`
    /// representable in the dtype, and the grid is the f32 one when the scale is exact.
    #[test]
    fn rounded_scales_are_representable() {
        for (bits, sym) in [(4, true), (3, false), (8, false), (2, true)] {
            for dt in [ScaleDtype::F16, ScaleDtype::Bf16] {
                let g = Grid::new(bits, sym).with_scale_dtype(dt);
                for (lo, hi) in [(-0.37f32, 0.52), (0.0, 1e-3), (-2.5, -0.5), (-1e-9, 1e-9)] {
                    let p = g.params_from_range(lo, hi);
                    let back = match dt {
                        ScaleDtype::F16 => half::f16::from_f32(p.scale).to_f32(),
                        _ => half::bf16::from_f32(p.scale).to_f32(),
                    };
                    assert_eq!(back, p.scale, "{dt:?} {lo} {hi}");
                    assert!(p.zero >= 0.0 && p.zero <= g.maxq());
                }
            }
        }
        // a power-of-two range: the f16 scale equals the f32 one
        let (a, b) = (
            Grid::new(4, false),
            Grid::new(4, false).with_scale_dtype(ScaleDtype::F16),
        );
        assert_eq!(
            a.params_from_range(-7.5, 0.0),
            b.params_from_range(-7.5, 0.0)
        );
    }

    #[test]
    fn all_zero_group_uses_unit_range() {
        let g = Grid::new(2, false);
        let p = g.params([0.0f32, 0.0]);
        assert_eq!(p.scale, 2.0 / 3.0);
        assert_eq!(g.dequant(g.code(0.0, p), p), 0.0);
    }
}

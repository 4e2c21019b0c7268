//! The quantizer grid (DESIGN §1.2): the single source of rounding truth.
//!
//! Codes are unsigned integers `c ∈ [0, 2^b − 1]`, dequantized as `q = s · (c − z)` with one
//! scale `s` and zero-point `z` per (output row, group of input columns).
//! - range of a group: `lo = min(min w, 0)`, `hi = max(max w, 0)`; all-zero ⇒ `[-1, 1]`;
//! - symmetric (GPTQ): `s = 2·max(−lo, hi)/(2^b − 1)`, `z = 2^(b−1)`;
//! - asymmetric: `s = (hi − lo)/(2^b − 1)`, `z = round(−lo / s)`;
//! - `c = clamp(round(w / s) + z, 0, 2^b − 1)`, rounding half to even everywhere.
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

/// Bits and symmetry of a grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub bits: u32,
    pub sym: bool,
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
        Grid { bits, sym }
    }

    /// Largest code, `2^b − 1`.
    pub fn maxq(&self) -> f32 {
        ((1u32 << self.bits) - 1) as f32
    }

    /// Grid parameters from the group's minimum and maximum value.
    pub fn params_from_range(&self, min: f32, max: f32) -> GroupParams {
        let mut lo = min.min(0.0);
        let mut hi = max.max(0.0);
        if lo == 0.0 && hi == 0.0 {
            lo = -1.0;
            hi = 1.0;
        }
        let maxq = self.maxq();
        if self.sym {
            let a = (-lo).max(hi);
            GroupParams {
                scale: 2.0 * a / maxq,
                zero: (1u32 << (self.bits - 1)) as f32,
            }
        } else {
            let scale = (hi - lo) / maxq;
            GroupParams {
                scale,
                zero: round_ties_even(-lo / scale),
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

    #[test]
    fn all_zero_group_uses_unit_range() {
        let g = Grid::new(2, false);
        let p = g.params([0.0f32, 0.0]);
        assert_eq!(p.scale, 2.0 / 3.0);
        assert_eq!(g.dequant(g.code(0.0, p), p), 0.0);
    }
}

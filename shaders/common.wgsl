// common.wgsl — prepended to every kernel family (see src/backend/gpu/shaders.rs).
//
// The quantizer grid of src/grid.rs, operation for operation (DESIGN §1.2). WGSL `round` rounds
// half to even, like `f32::round_ties_even`. Keep both files in step: tests/gpu_grid.rs checks
// them bit for bit on edge cases (all identical on lavapipe, which divides exactly). Caveat:
// WGSL only promises f32 division to 2.5 ulp, so on a GPU whose `w / s` is not correctly
// rounded a value within an ulp of a tie can round the other way; that test lists any case.

struct GridParams {
    scale: f32,
    zero: f32,
}

// Largest code, 2^b − 1.
fn grid_maxq(bits: u32) -> f32 {
    return f32((1u << bits) - 1u);
}

// grid::clipped_range: (min(mn, 0), max(mx, 0)), [−1, 1] when both are 0.
fn grid_range(mn: f32, mx: f32) -> vec2<f32> {
    let lo = min(mn, 0.0);
    let hi = max(mx, 0.0);
    if (lo == 0.0 && hi == 0.0) {
        return vec2<f32>(-1.0, 1.0);
    }
    return vec2<f32>(lo, hi);
}

// grid::round_scale: a positive scale rounded to the checkpoint's scale dtype
// (0 = f32, 1 = f16, 2 = bf16; grid::ScaleDtype::code), ties to even, by bit operations.
fn grid_round_scale(s: f32, dt: u32) -> f32 {
    let b = bitcast<u32>(s);
    if (dt == 1u) {
        let e = (b >> 23u) & 0xffu;
        if (e >= 143u) {
            return 65504.0;
        }
        if (e >= 113u) {
            let y = bitcast<f32>((b + 0xfffu + ((b >> 13u) & 1u)) & ~0x1fffu);
            return min(y, 65504.0);
        }
        let n = max(round(s * 16777216.0), 1.0);
        return n * 5.9604645e-8;
    }
    if (dt == 2u) {
        let y = (b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u;
        if (y == 0u) {
            return bitcast<f32>(0x00010000u);
        }
        if (y == 0x7f800000u) {
            return bitcast<f32>(0x7f7f0000u);
        }
        return bitcast<f32>(y);
    }
    return s;
}

// Grid::params_from_range (sdt: the scale dtype code).
fn grid_params_from_range(mn: f32, mx: f32, bits: u32, sym: bool, sdt: u32) -> GridParams {
    let r = grid_range(mn, mx);
    let lo = r.x;
    let hi = r.y;
    let maxq = grid_maxq(bits);
    if (sym) {
        let a = max(-lo, hi);
        return GridParams(grid_round_scale(2.0 * a / maxq, sdt), f32(1u << (bits - 1u)));
    }
    let scale = grid_round_scale((hi - lo) / maxq, sdt);
    // Rust's f32::clamp: compare and replace
    var z = round(-lo / scale);
    if (z < 0.0) {
        z = 0.0;
    }
    if (z > maxq) {
        z = maxq;
    }
    return GridParams(scale, z);
}

// Grid::code: clamp(round(w / s) + z, 0, 2^b − 1). The clamp is written as Rust's
// `f32::clamp` is (compare and replace), not WGSL's clamp = min(max(..)), so that a code of
// −0 stays −0 exactly as on the CPU.
fn grid_code(w: f32, p: GridParams, bits: u32) -> f32 {
    var c = round(w / p.scale) + p.zero;
    let maxq = grid_maxq(bits);
    if (c < 0.0) {
        c = 0.0;
    }
    if (c > maxq) {
        c = maxq;
    }
    return c;
}

// Grid::dequant: s · (c − z).
fn grid_dequant(c: f32, p: GridParams) -> f32 {
    return p.scale * (c - p.zero);
}

// True when x is neither infinite nor NaN (by its bits: comparisons with NaN may be optimised
// away by some compilers).
fn is_finite_f32(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

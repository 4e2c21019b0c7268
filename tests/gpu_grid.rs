//! Bit-exact differential test of the WGSL grid (`shaders/common.wgsl`) against `src/grid.rs`
//! on hand-picked edge cases: ties (k + ½)·s, clamps, zeros, negative zero, all-zero groups,
//! one-signed groups, tiny and large ranges, sym and asym, bits 2..=8, scales in f32, f16
//! (subnormal and clamped ones included) and bf16. Reports every mismatch.

#[path = "common/gpu.rs"]
mod gpu_common;

use qronos::grid::{Grid, ScaleDtype};

fn cases_for(grid: Grid, lo: f32, hi: f32) -> Vec<[f32; 3]> {
    let p = grid.params_from_range(lo, hi);
    let maxq = grid.maxq() as i32;
    let mut ws = vec![
        0.0f32,
        -0.0,
        lo,
        hi,
        2.0 * hi,
        2.0 * lo - 1.0,
        1e-30,
        -1e-30,
        f32::MIN_POSITIVE,
    ];
    for k in -(maxq + 2)..=(maxq + 2) {
        let t = (k as f32 + 0.5) * p.scale; // a tie of w / s (up to the product's rounding)
        ws.extend([
            t,
            f32::from_bits(t.to_bits() + 1),
            f32::from_bits(t.to_bits().saturating_sub(1)),
        ]);
        ws.push(k as f32 * p.scale);
    }
    ws.into_iter().map(|w| [w, lo, hi]).collect()
}

#[test]
fn wgsl_grid_matches_grid_rs_bit_for_bit() {
    let Some(be) = gpu_common::backend() else {
        return;
    };
    let ranges: [(f32, f32); 15] = [
        (0.0, 0.0),
        (-0.0, 0.0),
        (-1.0, 1.0),
        (0.3, 2.9),
        (-0.7, 0.2),
        (-3.0, -1.0),
        (-1e-30, 1e-30),
        (-65504.0, 30000.0),
        (-1e6, 2e6),
        (-3e-7, 1e-7),
        (-1e-40, 0.0),
        (-0.1, 0.1),
        (-1.5, 3.0),
        (0.0, 1.0),
        (-2.0, 0.0),
    ];
    let mut rng = gpu_common::Rng::new(7);
    let mut extra: Vec<(f32, f32)> = (0..8)
        .map(|_| (-rng.unit() as f32 * 3.0, rng.unit() as f32 * 2.0))
        .collect();
    extra.extend(ranges);
    let mut mismatches = Vec::new();
    let mut total = 0;
    for (bits, dt) in
        (2..=8).flat_map(|b| [ScaleDtype::F32, ScaleDtype::F16, ScaleDtype::Bf16].map(|d| (b, d)))
    {
        for sym in [false, true] {
            let grid = Grid::new(bits, sym).with_scale_dtype(dt);
            let cases: Vec<[f32; 3]> = extra
                .iter()
                .flat_map(|&(lo, hi)| cases_for(grid, lo, hi))
                .collect();
            let got = be.grid_probe(grid, &cases).expect("grid_probe");
            for (c, g) in cases.iter().zip(&got) {
                total += 1;
                let p = grid.params_from_range(c[1], c[2]);
                let (code, deq) = grid.quantize(c[0], p);
                let want = [p.scale, p.zero, code, deq];
                let same = want
                    .iter()
                    .zip(g)
                    .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
                if !same {
                    mismatches.push(format!(
                        "bits {bits} sym {sym} w {:e} range [{:e}, {:e}]: want (s, z, c, q) = {want:?}, got {g:?}",
                        c[0], c[1], c[2]
                    ));
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {total} grid cases differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    eprintln!("grid: {total} cases, all bit-identical");
}

//! The forward family ([`Forward`]: gather, rmsnorm, add_bias, rope, attention, silu_mul, nll):
//! GPU vs the CPU twin (`cpu_forward.rs`) on seeded random inputs, one test per kernel family,
//! at the device's binding limit and with a tiny one (column panels, table panels, one
//! sequence per attention panel). Shapes are deliberately not multiples of the workgroup or
//! tile sizes (d = 72, 3 sequences of 37 tokens, head_dim 18 ...).
//!
//! Outputs of the non-in-place ops are fresh (zeroed) device buffers, so an element a kernel
//! failed to write shows up as a 0 against a non-zero CPU value; the poisoning that matters is
//! in the inputs a kernel must *not* read: NaN in the future keys/values of a sequence (causal
//! mask), and in the table columns nobody asked for (gather).

#[path = "common/gpu.rs"]
mod gpu_common;

use gpu_common::{non_finite, rel_fro, Rng};
use qronos::backend::cpu::CpuBackend;
use qronos::backend::forward::rope_table;
use qronos::backend::gpu::GpuBackend;
use qronos::backend::{AttnSpec, Backend, Forward};
use qronos::Error;

/// rmsnorm: the sum of squares of ≤ 576 terms is a fixed-order tree on the GPU and a
/// sequential loop on the CPU (≈ √n·ε apart), then 1/√ and two products (~3 ulp).
const RMSNORM_REL_TOL: f64 = 1e-5;
/// add_bias: one correctly rounded add per element on both sides.
const BIAS_REL_TOL: f64 = 1e-6;
/// rope: two products and a sum per element; a GPU may fuse them into one fma.
const ROPE_REL_TOL: f64 = 1e-6;
/// silu_mul: WGSL's exp is only accurate to 3 + 2|x| ulp (≈ 1e-6 relative for |g| ≤ 10).
const SILU_REL_TOL: f64 = 1e-5;
/// silu(g) · u for g ≤ −88 is this small on both sides (|g| / e^88 · |u| < 1e-33 here).
const SATURATED: f32 = 1e-30;
/// attention: dot products of ≤ 256 terms in another order, an online softmax (rescaled
/// partial sums) against the CPU's two-pass one, WGSL's exp (a few ulp): ~1e-6 in practice.
const ATTN_REL_TOL: f64 = 1e-5;
/// nll: Σ exp over ≤ 49157 terms in f32 (a 256-way tree of strided sums, ≈ √(vocab/256)·ε)
/// against the CPU's f64 sum, plus WGSL's exp / log accuracy.
const NLL_REL_TOL: f64 = 1e-5;

/// The backend at the device limit, and one whose bindings are capped at `limit` bytes.
fn gpus(limit: u64) -> Vec<(GpuBackend, String)> {
    let mut v = Vec::new();
    if let Some(g) = gpu_common::backend() {
        v.push((g, "device limit".to_string()));
    }
    if let Some(g) = gpu_common::backend_with_limit(limit) {
        v.push((g, format!("{limit} B bindings")));
    }
    v
}

/// Count and describe elements whose bits differ (first few listed).
fn bit_diffs(what: &str, got: &[f32], want: &[f32]) -> Option<String> {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].to_bits() != want[i].to_bits())
        .collect();
    if bad.is_empty() {
        return None;
    }
    let first: Vec<String> = bad
        .iter()
        .take(5)
        .map(|&i| format!("[{i}] got {} want {}", got[i], want[i]))
        .collect();
    Some(format!(
        "{what}: {} of {} differ: {}",
        bad.len(),
        got.len(),
        first.join(", ")
    ))
}

#[track_caller]
fn check_rel(what: &str, got: &[f32], want: &[f32], tol: f64) -> f64 {
    let nf = non_finite(got);
    assert!(
        nf.is_empty(),
        "{what}: {} non-finite outputs, first at {:?}",
        nf.len(),
        &nf[..nf.len().min(5)]
    );
    let e = rel_fro(got, want);
    eprintln!("{what}: rel err {e:.3e} (tol {tol:.0e})");
    assert!(e <= tol, "{what}: rel err {e:e} > {tol:e}");
    e
}

#[test]
fn gather_is_exact() {
    let cpu = CpuBackend::new();
    // 4 KiB: the 576-row table and output go one column per panel, the 72-row ones 14
    for (gpu, label) in gpus(4096) {
        let mut rng = Rng::new(31);
        for (d, vocab, tokens) in [(72, 101, 111), (576, 67, 40)] {
            let mut table = rng.vec(d * vocab);
            let mut ids: Vec<u32> = (0..tokens).map(|_| rng.below(vocab) as u32).collect();
            ids[0] = 0;
            ids[tokens - 1] = vocab as u32 - 1;
            ids[5] = ids[6];
            // poison the columns nobody asks for: they must not reach the output
            for c in 0..vocab {
                if !ids.contains(&(c as u32)) {
                    table[c * d..(c + 1) * d].fill(f32::NAN);
                }
            }
            let g = gpu
                .gather(
                    &gpu.upload(d, vocab, &table).unwrap(),
                    &gpu.upload_idx(&ids).unwrap(),
                )
                .unwrap();
            let c = cpu
                .gather(
                    &cpu.upload(d, vocab, &table).unwrap(),
                    &cpu.upload_idx(&ids).unwrap(),
                )
                .unwrap();
            assert_eq!(gpu.shape(&g), (d, tokens));
            let (g, c) = (gpu.download(&g).unwrap(), cpu.download(&c).unwrap());
            if let Some(msg) = bit_diffs(&format!("gather d={d} ({label})"), &g, &c) {
                panic!("{msg}");
            }
        }
    }
}

#[test]
fn rmsnorm_agrees_and_keeps_its_input() {
    let cpu = CpuBackend::new();
    for (gpu, label) in gpus(8192) {
        let mut rng = Rng::new(32);
        // block norms (dim = d, also d > the workgroup) and Qwen3's per-head q/k norms
        for (rows, dim, tokens) in [(72, 72, 111), (576, 576, 37), (576, 64, 111), (48, 16, 5)] {
            let x: Vec<f32> = rng.vec(rows * tokens).iter().map(|v| 3.0 * v).collect();
            let w: Vec<f32> = (0..dim).map(|_| 1.0 + 0.2 * rng.normal()).collect();
            let gx = gpu.upload(rows, tokens, &x).unwrap();
            let g = gpu
                .rmsnorm(&gx, &gpu.upload(dim, 1, &w).unwrap(), dim, 1e-6)
                .unwrap();
            let c = cpu
                .rmsnorm(
                    &cpu.upload(rows, tokens, &x).unwrap(),
                    &cpu.upload(dim, 1, &w).unwrap(),
                    dim,
                    1e-6,
                )
                .unwrap();
            assert_eq!(gpu.shape(&g), (rows, tokens));
            let what = format!("rmsnorm {rows}×{tokens} dim {dim} ({label})");
            check_rel(
                &what,
                &gpu.download(&g).unwrap(),
                &cpu.download(&c).unwrap(),
                RMSNORM_REL_TOL,
            );
            if let Some(msg) = bit_diffs(&format!("{what}: input"), &gpu.download(&gx).unwrap(), &x)
            {
                panic!("the residual input changed: {msg}");
            }
        }
    }
}

#[test]
fn add_bias_agrees() {
    let cpu = CpuBackend::new();
    for (gpu, label) in gpus(4096) {
        let mut rng = Rng::new(33);
        for (rows, tokens) in [(72, 111), (576, 37), (1, 3)] {
            let y = rng.vec(rows * tokens);
            let b = rng.vec(rows);
            let mut gy = gpu.upload(rows, tokens, &y).unwrap();
            gpu.add_bias(&mut gy, &gpu.upload(rows, 1, &b).unwrap())
                .unwrap();
            let mut cy = cpu.upload(rows, tokens, &y).unwrap();
            cpu.add_bias(&mut cy, &cpu.upload(rows, 1, &b).unwrap())
                .unwrap();
            check_rel(
                &format!("add_bias {rows}×{tokens} ({label})"),
                &gpu.download(&gy).unwrap(),
                &cpu.download(&cy).unwrap(),
                BIAS_REL_TOL,
            );
        }
    }
}

/// transformers' default rotary frequencies: `base^(−2i/head_dim)`.
fn inv_freq(head_dim: usize, base: f64) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| base.powf(-((2 * i) as f64) / head_dim as f64) as f32)
        .collect()
}

#[test]
fn rope_agrees() {
    let cpu = CpuBackend::new();
    // 4 KiB: the head_dim 64 table (9.5 KiB) is bound in runs of positions, the head_dim 16
    // one whole; x panels of 1..2 columns.
    for (gpu, label) in gpus(4096) {
        let mut rng = Rng::new(34);
        for (heads, hd, seqlen, nseq) in [(6, 16, 37, 3), (2, 64, 37, 3), (9, 64, 300, 1)] {
            let (rows, tokens) = (heads * hd, seqlen * nseq);
            let x = rng.vec(rows * tokens);
            let table = rope_table(&inv_freq(hd, 10000.0), seqlen);
            let mut gx = gpu.upload(rows, tokens, &x).unwrap();
            gpu.rope(&mut gx, &gpu.upload(hd, seqlen, &table).unwrap(), hd)
                .unwrap();
            let mut cx = cpu.upload(rows, tokens, &x).unwrap();
            cpu.rope(&mut cx, &cpu.upload(hd, seqlen, &table).unwrap(), hd)
                .unwrap();
            check_rel(
                &format!("rope {heads}×{hd}, {nseq}×{seqlen} tokens ({label})"),
                &gpu.download(&gx).unwrap(),
                &cpu.download(&cx).unwrap(),
                ROPE_REL_TOL,
            );
        }
    }
}

#[test]
fn silu_mul_agrees_and_saturates() {
    let cpu = CpuBackend::new();
    let specials: [f32; 12] = [
        -100.0, 100.0, -1000.0, 1000.0, -88.5, -88.0, -87.0, 0.0, -0.0, 30.0, -30.0, 88.5,
    ];
    for (gpu, label) in gpus(2048) {
        let mut rng = Rng::new(35);
        let (rows, tokens) = (72, 111);
        let mut g: Vec<f32> = rng.vec(rows * tokens).iter().map(|v| 4.0 * v).collect();
        let u = rng.vec(rows * tokens);
        let at: Vec<usize> = (0..specials.len()).map(|i| 17 + 613 * i).collect();
        for (&i, &s) in at.iter().zip(&specials) {
            g[i] = s;
        }
        let mut gg = gpu.upload(rows, tokens, &g).unwrap();
        gpu.silu_mul(&mut gg, &gpu.upload(rows, tokens, &u).unwrap())
            .unwrap();
        let mut cg = cpu.upload(rows, tokens, &g).unwrap();
        cpu.silu_mul(&mut cg, &cpu.upload(rows, tokens, &u).unwrap())
            .unwrap();
        let (gv, cv) = (gpu.download(&gg).unwrap(), cpu.download(&cg).unwrap());
        check_rel(
            &format!("silu_mul {rows}×{tokens} ({label})"),
            &gv,
            &cv,
            SILU_REL_TOL,
        );
        // the saturated ends: for g ≪ 0 both sides give a finite value of no size (the CPU
        // twin clamps exp's argument to 88, so silu(−100) ≈ −6e−37, not 0 and not NaN; the
        // GPU clamps the same way), for g ≫ 0 exactly g · u; in between, relative agreement
        for (&i, &s) in at.iter().zip(&specials) {
            let (got, want) = (gv[i], cv[i]);
            if s <= -88.0 {
                assert!(
                    want.abs() < SATURATED && got.abs() < SATURATED,
                    "silu({s}) · u: gpu {got}, cpu {want} ({label})"
                );
            } else if s >= 30.0 {
                assert_eq!(want, s * u[i], "cpu silu({s})");
                assert_eq!(got, want, "gpu silu({s}) · u ({label})");
            } else {
                assert!(
                    (got - want).abs() <= SILU_REL_TOL as f32 * want.abs() + SATURATED,
                    "gpu silu({s}) · u = {got} vs cpu {want} ({label})"
                );
            }
        }
    }
}

/// Random q, k, v of one attention problem (q scaled by `q_gain` to sharpen the softmax).
struct AttnCase {
    spec: AttnSpec,
    tokens: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl AttnCase {
    fn new(rng: &mut Rng, heads: (usize, usize), hd: usize, seqlen: usize, nseq: usize) -> Self {
        Self::with_gain(rng, heads, hd, seqlen, nseq, 1.0)
    }

    fn with_gain(
        rng: &mut Rng,
        (n_heads, n_kv_heads): (usize, usize),
        hd: usize,
        seqlen: usize,
        nseq: usize,
        q_gain: f32,
    ) -> Self {
        let tokens = seqlen * nseq;
        let spec = AttnSpec {
            n_heads,
            n_kv_heads,
            head_dim: hd,
            seqlen,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        AttnCase {
            spec,
            tokens,
            q: rng
                .vec(n_heads * hd * tokens)
                .iter()
                .map(|x| q_gain * x)
                .collect(),
            k: rng.vec(n_kv_heads * hd * tokens),
            v: rng.vec(n_kv_heads * hd * tokens),
        }
    }

    fn run<B: Forward>(&self, be: &B) -> qronos::Result<Vec<f32>> {
        let (qr, kr) = (
            self.spec.n_heads * self.spec.head_dim,
            self.spec.n_kv_heads * self.spec.head_dim,
        );
        let q = be.upload(qr, self.tokens, &self.q)?;
        let k = be.upload(kr, self.tokens, &self.k)?;
        let v = be.upload(kr, self.tokens, &self.v)?;
        let o = be.attention(&q, &k, &v, &self.spec)?;
        assert_eq!(be.shape(&o), (qr, self.tokens));
        be.download(&o)
    }

    fn label(&self) -> String {
        let s = &self.spec;
        format!(
            "attention {}/{} heads × {}, {}×{} tokens",
            s.n_heads,
            s.n_kv_heads,
            s.head_dim,
            self.tokens / s.seqlen,
            s.seqlen
        )
    }
}

#[test]
fn attention_agrees() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(36);
    let cases = [
        AttnCase::new(&mut rng, (6, 2), 16, 37, 3),
        AttnCase::new(&mut rng, (6, 2), 64, 37, 3),
        // SmolLM2-135M's heads (d = 576 = 9 × 64, 3 kv heads)
        AttnCase::new(&mut rng, (9, 3), 64, 29, 2),
        AttnCase::with_gain(&mut rng, (4, 4), 128, 21, 2, 4.0),
        AttnCase::new(&mut rng, (2, 1), 256, 11, 2),
        AttnCase::new(&mut rng, (3, 1), 18, 40, 1),
        AttnCase::new(&mut rng, (2, 2), 8, 1, 5),
        // more keys than one tile and more queries than one query tile at head_dim 64
        AttnCase::with_gain(&mut rng, (2, 1), 64, 150, 1, 3.0),
    ];
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    for case in &cases {
        let g = case.run(&gpu).unwrap();
        let c = case.run(&cpu).unwrap();
        check_rel(&case.label(), &g, &c, ATTN_REL_TOL);
        let again = case.run(&gpu).unwrap();
        if let Some(msg) = bit_diffs(&format!("{}: rerun", case.label()), &again, &g) {
            panic!("attention is not deterministic: {msg}");
        }
    }
}

#[test]
fn attention_panels_whole_sequences() {
    let cpu = CpuBackend::new();
    // 32 KiB: q of one sequence (96 rows × 37 tokens) is 14.2 KiB, so panels of 2 sequences
    // then 1; head_dim 64 (56.8 KiB per sequence) cannot be bound and must say so.
    let Some(gpu) = gpu_common::backend_with_limit(32 * 1024) else {
        return;
    };
    let mut rng = Rng::new(37);
    let fits = AttnCase::new(&mut rng, (6, 2), 16, 37, 3);
    let g = fits.run(&gpu).unwrap();
    let c = fits.run(&cpu).unwrap();
    check_rel(
        &format!("{} (32 KiB bindings)", fits.label()),
        &g,
        &c,
        ATTN_REL_TOL,
    );
    let too_big = AttnCase::new(&mut rng, (6, 2), 64, 37, 3);
    match too_big.run(&gpu) {
        Err(Error::Gpu { op, reason }) => {
            assert_eq!(op, "attention");
            assert!(reason.contains("does not fit"), "unclear error: {reason}");
        }
        other => panic!("a sequence larger than a binding must be an error, got {other:?}"),
    }
}

#[test]
fn attention_is_causal_and_per_sequence() {
    // NaN in the keys and values of token `t` of the middle sequence: only that sequence's
    // outputs from `t` on may change; everything else must be bit-identical (masked keys are
    // skipped, not multiplied by 0). GPU only: the CPU twin's triangular `v · P` multiplies
    // the masked zeros of P by the NaN values of future tokens, so there NaN does leak
    // backwards (it cannot for finite values).
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    let mut rng = Rng::new(38);
    for hd in [16, 64] {
        let clean = AttnCase::new(&mut rng, (6, 2), hd, 37, 3);
        let mut dirty = AttnCase {
            spec: clean.spec,
            tokens: clean.tokens,
            q: clean.q.clone(),
            k: clean.k.clone(),
            v: clean.v.clone(),
        };
        let (l, t) = (37, 20);
        let (qr, kr) = (6 * hd, 2 * hd);
        let col = l + t;
        dirty.k[col * kr..(col + 1) * kr].fill(f32::NAN);
        dirty.v[col * kr..(col + 1) * kr].fill(f32::NAN);
        let (base, pois) = (clean.run(&gpu).unwrap(), dirty.run(&gpu).unwrap());
        for tok in (0..clean.tokens).filter(|tok| !(l + t..2 * l).contains(tok)) {
            let r = tok * qr..(tok + 1) * qr;
            if let Some(msg) = bit_diffs(
                &format!("head_dim {hd}, token {tok}"),
                &pois[r.clone()],
                &base[r],
            ) {
                panic!("a future or foreign token leaked into an output: {msg}");
            }
        }
        // and the poisoned token itself does see its NaN (the test is not vacuous)
        assert!(pois[col * qr].is_nan(), "head_dim {hd}: poison not visible");
    }
}

#[test]
fn nll_agrees_and_is_deterministic() {
    let cpu = CpuBackend::new();
    // 4 KiB: one 900-row column per panel
    for (gpu, label) in gpus(4096) {
        let mut rng = Rng::new(39);
        let shapes: &[(usize, usize, f32)] = if label == "device limit" {
            &[(5003, 7, 3.0), (49157, 3, 2.0), (900, 13, 1.0)]
        } else {
            &[(900, 13, 1.0)]
        };
        for &(vocab, tokens, gain) in shapes {
            let mut z: Vec<f32> = rng.vec(vocab * tokens).iter().map(|x| gain * x).collect();
            let targets: Vec<u32> = (0..tokens).map(|_| rng.below(vocab) as u32).collect();
            // one confident column (small NLL) and one with a huge offset (max subtraction)
            z[targets[0] as usize] = 40.0;
            for x in &mut z[vocab..2 * vocab] {
                *x += 1000.0;
            }
            let gz = gpu.upload(vocab, tokens, &z).unwrap();
            let gt = gpu.upload_idx(&targets).unwrap();
            let g = gpu.nll(&gz, &gt).unwrap();
            assert_eq!(gpu.shape(&g), (tokens, 1));
            let c = cpu
                .nll(
                    &cpu.upload(vocab, tokens, &z).unwrap(),
                    &cpu.upload_idx(&targets).unwrap(),
                )
                .unwrap();
            let what = format!("nll vocab {vocab} × {tokens} ({label})");
            let g = gpu.download(&g).unwrap();
            check_rel(&what, &g, &cpu.download(&c).unwrap(), NLL_REL_TOL);
            let again = gpu.download(&gpu.nll(&gz, &gt).unwrap()).unwrap();
            if let Some(msg) = bit_diffs(&format!("{what}: rerun"), &again, &g) {
                panic!("nll is not deterministic: {msg}");
            }
        }
    }
}

/// Test data for fake_quant: random values over a wide range of column scales, plus, per
/// `dim`-segment kind, exact ties, all-zero segments (one of −0s) and a negative maximum.
fn fake_quant_input(rng: &mut Rng, rows: usize, tokens: usize, dim: usize, bits: u32) -> Vec<f32> {
    let qmax = ((1u32 << (bits - 1)) - 1) as f32;
    let mut x = Vec::with_capacity(rows * tokens);
    for t in 0..tokens {
        // column scales 2^-6 .. 2^6: no subnormal scales, no overflow
        let gain = (2f32).powi((t % 13) as i32 - 6);
        x.extend(rng.vec(rows).iter().map(|v| gain * 3.0 * v));
    }
    let segs = rows / dim;
    for t in 0..tokens {
        for g in 0..segs {
            let seg = &mut x[t * rows + g * dim..t * rows + (g + 1) * dim];
            match (t * segs + g) % 5 {
                // ties: the max is ±qmax · s with s a power of two, the rest (k + ½) · s with
                // |k + ½| < qmax, so x / s is exactly a half (s = a / qmax is exact too)
                0 | 1 => {
                    let s = (2f32).powi((t % 7) as i32 - 5);
                    let sign = if t % 2 == 0 { 1.0 } else { -1.0 };
                    for v in seg.iter_mut() {
                        let k = rng.below(2 * qmax as usize) as f32 - qmax;
                        *v = (k + 0.5) * s;
                    }
                    seg[rng.below(dim)] = sign * qmax * s;
                }
                2 if t % 3 == 0 => seg.fill(if g % 2 == 0 { 0.0 } else { -0.0 }),
                _ => {}
            }
        }
    }
    x
}

#[test]
fn fake_quant_is_bit_exact() {
    let cpu = CpuBackend::new();
    // 2 KiB: panels of a few columns. A 72-row column is 288 B, a multiple of the storage
    // offset alignment, so those panels start on a boundary; 45 rows (180 B) do not, which
    // exercises the element offset inside the binding.
    for (gpu, label) in gpus(2048) {
        let mut rng = Rng::new(40);
        let tokens = 37;
        for (rows, dim) in [(72, 72), (72, 8), (45, 45), (45, 9)] {
            for bits in [8, 4] {
                let x = fake_quant_input(&mut rng, rows, tokens, dim, bits);
                assert!(non_finite(&x).is_empty());
                let mut gx = gpu.upload(rows, tokens, &x).unwrap();
                gpu.fake_quant(&mut gx, dim, bits).unwrap();
                let mut cx = cpu.upload(rows, tokens, &x).unwrap();
                cpu.fake_quant(&mut cx, dim, bits).unwrap();
                let (g, c) = (gpu.download(&gx).unwrap(), cpu.download(&cx).unwrap());
                let what = format!("fake_quant {rows}×{tokens} dim {dim} bits {bits} ({label})");
                // not vacuous: values moved, and at most 2^bits levels per segment
                assert!(
                    c.iter().zip(&x).any(|(a, b)| a != b),
                    "{what}: nothing changed"
                );
                for seg in c.chunks(dim) {
                    let mut lv = seg.to_vec();
                    lv.sort_by(f32::total_cmp);
                    lv.dedup(); // by value: −0 and +0 are one level
                    assert!(lv.len() <= 1 << bits, "{what}: {} levels", lv.len());
                }
                // every mismatch, with its place and input (a tie flip shows as x / s = k + ½)
                let bad: Vec<String> = (0..g.len())
                    .filter(|&i| g[i].to_bits() != c[i].to_bits())
                    .map(|i| {
                        let (t, r) = (i / rows, i % rows);
                        format!(
                            "(row {r}, col {t}) x {:e}: gpu {:e} cpu {:e}",
                            x[i], g[i], c[i]
                        )
                    })
                    .collect();
                assert!(
                    bad.is_empty(),
                    "{what}: {} of {} differ:\n  {}",
                    bad.len(),
                    g.len(),
                    bad.join("\n  ")
                );
            }
        }
    }
}

// gram.wgsl — running-mean Gram accumulation out ← keep · out + scale · AᵀB over a chunk of
// tokens, and the lower → upper mirror of gram_finish.
//
// x0, x1 are row-major [tokens, d] chunks (uploaded per call). MODE (override):
//   0: A = B = x0            (H = X̃ᵀX̃, x0 = X̃)
//   1: A = x0, B = x1        (G = XᵀX̃, x0 = X, x1 = X̃)
//   2: A = B = x0 − x1       (D = ΔᵀΔ)
// `out` is d × d column-major, bound as a panel of columns [j0, j0 + ncols). One workgroup
// computes a 128 × 128 tile (see `gram` below). `lower` != 0 computes and writes only i ≥ j.

struct GramParams {
    d: u32,
    tokens: u32,
    out_off: u32,
    j0: u32,
    ncols: u32,
    lower: u32,
    pad0: u32,
    pad1: u32,
    keep: f32,
    scale: f32,
    pad2: u32,
    pad3: u32,
}

struct MirrorParams {
    d: u32,
    // source columns [s0, s1) were copied to `src` (ld d, from element 0)
    s0: u32,
    s1: u32,
    // destination panel: columns [j0, j1), dst_off = offset of element (0, j0)
    j0: u32,
    j1: u32,
    dst_off: u32,
    pad0: u32,
    pad1: u32,
}

override MODE: u32 = 0u;

// Tile edge, tokens per stage, and vec4s per staged token row (TT / 4).
const TT: u32 = 128u;
const TK: u32 = 8u;
const RV: u32 = 32u;

@group(0) @binding(0) var<storage, read> gx0: array<f32>;
@group(0) @binding(1) var<storage, read> gx1: array<f32>;
@group(0) @binding(2) var<storage, read_write> gout: array<f32>;
@group(0) @binding(3) var<uniform> gp: GramParams;

// TK token rows of the left / right tile, as vec4s: sa[n * RV + i / 4][i % 4]. Threads read
// whole vec4s (one wide load feeds 4 rows or columns of the micro-tile).
var<workgroup> sa: array<vec4<f32>, 256>;
var<workgroup> sb: array<vec4<f32>, 256>;

fn left_at(at: u32) -> f32 {
    if (MODE == 2u) {
        return gx0[at] - gx1[at];
    }
    return gx0[at];
}

fn right_at(at: u32) -> f32 {
    if (MODE == 1u) {
        return gx1[at];
    }
    if (MODE == 2u) {
        return gx0[at] - gx1[at];
    }
    return gx0[at];
}

// Design (after 64 × 64 tiles with 4 × 4 per thread ran at 360 GFLOP/s on an H100): one
// workgroup of 256 threads computes a 128 × 128 tile, each thread an 8 × 8 micro-tile kept in
// 16 vec4 registers: rows 4·tx + {0..3} and 64 + 4·tx + {0..3}, columns likewise from ty. Per
// token that is 4 vec4 workgroup loads (broadcasts: a warp reads 16 distinct vec4s) for 64
// FMAs. Loading is decoupled from computing: thread t always loads column t % 128 of the
// tile (coalesced along the row-major token rows), rows t / 128 + 2e, and the next stage's
// values are fetched into registers while the current stage is being multiplied.
@compute @workgroup_size(256)
fn gram(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let i0 = wid.x * TT;
    let jl0 = wid.y * TT;
    let jg0 = gp.j0 + jl0;
    if (gp.lower != 0u && i0 + TT <= jg0) {
        return; // tile wholly above the diagonal (uniform per workgroup)
    }
    // loader role: one column of the tile, rows lr + 2e
    let lc = tid % TT;
    let lr = tid / TT;
    let ai = i0 + lc;
    let a_ok = ai < gp.d;
    let bj = jg0 + lc;
    let b_ok = jl0 + lc < gp.ncols; // ncols ≤ d − j0, so bj < d
    let slot = lr * RV + lc / 4u;
    let comp = lc % 4u;
    // compute role
    let tx = tid % 16u;
    let ty = tid / 16u;

    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    var c4 = vec4<f32>(0.0);
    var c5 = vec4<f32>(0.0);
    var c6 = vec4<f32>(0.0);
    var c7 = vec4<f32>(0.0);
    var c8 = vec4<f32>(0.0);
    var c9 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c12 = vec4<f32>(0.0);
    var c13 = vec4<f32>(0.0);
    var c14 = vec4<f32>(0.0);
    var c15 = vec4<f32>(0.0);

    var pa = vec4<f32>(0.0);
    var pb = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        let n = lr + 2u * e;
        if (n < gp.tokens) {
            if (a_ok) {
                pa[e] = left_at(n * gp.d + ai);
            }
            if (b_ok) {
                pb[e] = right_at(n * gp.d + bj);
            }
        }
    }
    for (var n0 = 0u; n0 < gp.tokens; n0 += TK) {
        for (var e = 0u; e < 4u; e++) {
            sa[slot + 2u * e * RV][comp] = pa[e];
            sb[slot + 2u * e * RV][comp] = pb[e];
        }
        workgroupBarrier();
        // prefetch the next stage (zeros past the last token)
        pa = vec4<f32>(0.0);
        pb = vec4<f32>(0.0);
        for (var e = 0u; e < 4u; e++) {
            let n = n0 + TK + lr + 2u * e;
            if (n < gp.tokens) {
                if (a_ok) {
                    pa[e] = left_at(n * gp.d + ai);
                }
                if (b_ok) {
                    pb[e] = right_at(n * gp.d + bj);
                }
            }
        }
        for (var k = 0u; k < TK; k++) {
            let a0 = sa[k * RV + tx];
            let a1 = sa[k * RV + 16u + tx];
            let b0 = sb[k * RV + ty];
            let b1 = sb[k * RV + 16u + ty];
            c0 = fma(vec4<f32>(a0.x), b0, c0);
            c1 = fma(vec4<f32>(a0.x), b1, c1);
            c2 = fma(vec4<f32>(a0.y), b0, c2);
            c3 = fma(vec4<f32>(a0.y), b1, c3);
            c4 = fma(vec4<f32>(a0.z), b0, c4);
            c5 = fma(vec4<f32>(a0.z), b1, c5);
            c6 = fma(vec4<f32>(a0.w), b0, c6);
            c7 = fma(vec4<f32>(a0.w), b1, c7);
            c8 = fma(vec4<f32>(a1.x), b0, c8);
            c9 = fma(vec4<f32>(a1.x), b1, c9);
            c10 = fma(vec4<f32>(a1.y), b0, c10);
            c11 = fma(vec4<f32>(a1.y), b1, c11);
            c12 = fma(vec4<f32>(a1.z), b0, c12);
            c13 = fma(vec4<f32>(a1.z), b1, c13);
            c14 = fma(vec4<f32>(a1.w), b0, c14);
            c15 = fma(vec4<f32>(a1.w), b1, c15);
        }
        workgroupBarrier();
    }
    // acc[2r + h]: micro-tile row r (rows 4tx + r, then 64 + 4tx + r − 4), column quad h
    let acc = array<vec4<f32>, 16>(c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15);
    for (var r = 0u; r < 8u; r++) {
        let i = i0 + 4u * tx + (r % 4u) + 64u * (r / 4u);
        for (var h = 0u; h < 2u; h++) {
            let v = acc[2u * r + h];
            for (var q = 0u; q < 4u; q++) {
                let jl = jl0 + 4u * ty + 64u * h + q;
                let j = gp.j0 + jl;
                if (i < gp.d && jl < gp.ncols && (gp.lower == 0u || i >= j)) {
                    let oi = gp.out_off + jl * gp.d + i;
                    var o = gp.scale * v[q];
                    if (gp.keep != 0.0) {
                        o = fma(gp.keep, gout[oi], o);
                    }
                    gout[oi] = o;
                }
            }
        }
    }
}

// ---- gram_finish: out[i, j] = out[j, i] for i < j, from a copied source panel ----
@group(0) @binding(0) var<storage, read> mir_src: array<f32>;
@group(0) @binding(1) var<storage, read_write> mir_dst: array<f32>;
@group(0) @binding(2) var<uniform> mp: MirrorParams;

@compute @workgroup_size(16, 16)
fn mirror(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = mp.s0 + gid.x;
    let j = mp.j0 + gid.y;
    if (i < mp.s1 && j < mp.j1 && i < j) {
        mir_dst[mp.dst_off + (j - mp.j0) * mp.d + i] = mir_src[(i - mp.s0) * mp.d + j];
    }
}

// gram.wgsl — running-mean Gram accumulation out ← keep · out + scale · AᵀB over a chunk of
// tokens, and the lower → upper mirror of gram_finish.
//
// x0, x1 are row-major [tokens, d] chunks (uploaded per call). MODE (override):
//   0: A = B = x0            (H = X̃ᵀX̃, x0 = X̃)
//   1: A = x0, B = x1        (G = XᵀX̃, x0 = X, x1 = X̃)
//   2: A = B = x0 − x1       (D = ΔᵀΔ)
// `out` is d × d column-major, bound as a panel of columns [j0, j0 + ncols). One workgroup
// computes a 64 × 64 tile with 16 × 16 threads (4 × 4 each at stride 16), 16 tokens at a
// time through workgroup memory. `lower` != 0 computes and writes only i ≥ j.

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

const TT: u32 = 64u;
const TK: u32 = 16u;

@group(0) @binding(0) var<storage, read> gx0: array<f32>;
@group(0) @binding(1) var<storage, read> gx1: array<f32>;
@group(0) @binding(2) var<storage, read_write> gout: array<f32>;
@group(0) @binding(3) var<uniform> gp: GramParams;

var<workgroup> sa: array<f32, 1024>; // TK × TT, sa[n * TT + i]
var<workgroup> sb: array<f32, 1024>; // TK × TT, sb[n * TT + j]

fn left(n: u32, i: u32) -> f32 {
    if (n >= gp.tokens || i >= gp.d) {
        return 0.0;
    }
    let at = n * gp.d + i;
    if (MODE == 2u) {
        return gx0[at] - gx1[at];
    }
    return gx0[at];
}

fn right(n: u32, j: u32) -> f32 {
    if (n >= gp.tokens || j >= gp.d) {
        return 0.0;
    }
    let at = n * gp.d + j;
    if (MODE == 1u) {
        return gx1[at];
    }
    if (MODE == 2u) {
        return gx0[at] - gx1[at];
    }
    return gx0[at];
}

@compute @workgroup_size(16, 16)
fn gram(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i0 = wid.x * TT;
    let jl0 = wid.y * TT;
    let jg0 = gp.j0 + jl0;
    if (gp.lower != 0u && i0 + TT <= jg0) {
        return; // tile wholly above the diagonal (uniform per workgroup)
    }
    let tid = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var t = 0u; t < 16u; t++) {
        acc[t] = 0.0;
    }
    for (var n0 = 0u; n0 < gp.tokens; n0 += TK) {
        for (var e = 0u; e < 4u; e++) {
            let idx = tid + e * 256u;
            let c = idx % TT;
            let n = idx / TT;
            sa[n * TT + c] = left(n0 + n, i0 + c);
            var bj = jg0 + c;
            if (jl0 + c >= gp.ncols) {
                bj = gp.d; // outside the panel: load zero
            }
            sb[n * TT + c] = right(n0 + n, bj);
        }
        workgroupBarrier();
        for (var n = 0u; n < TK; n++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var u = 0u; u < 4u; u++) {
                av[u] = sa[n * TT + lid.x + 16u * u];
                bv[u] = sb[n * TT + lid.y + 16u * u];
            }
            for (var u = 0u; u < 4u; u++) {
                for (var v = 0u; v < 4u; v++) {
                    acc[u * 4u + v] = fma(av[u], bv[v], acc[u * 4u + v]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var u = 0u; u < 4u; u++) {
        let i = i0 + lid.x + 16u * u;
        for (var v = 0u; v < 4u; v++) {
            let jl = jl0 + lid.y + 16u * v;
            let j = gp.j0 + jl;
            if (i < gp.d && jl < gp.ncols && (gp.lower == 0u || i >= j)) {
                let oi = gp.out_off + jl * gp.d + i;
                var r = gp.scale * acc[u * 4u + v];
                if (gp.keep != 0.0) {
                    r = fma(gp.keep, gout[oi], r);
                }
                gout[oi] = r;
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

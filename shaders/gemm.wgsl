// gemm.wgsl — C = alpha · op(A) · op(B) + beta · C on column-major panels.
//
// One workgroup computes a TM × TN tile of C with 16 × 16 threads, each thread a 4 × 4
// micro-tile at stride 16 (so neighbouring threads touch neighbouring rows of C). op(A) and
// op(B) are staged through workgroup memory TK columns at a time. Transposes are override
// constants: the same source serves all four cases. beta == 0 ignores C's old contents (NaN
// included); `lower` != 0 writes only elements on or below the diagonal of the C region
// (syrk-style updates inside the Cholesky).

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    a_off: u32,
    lda: u32,
    b_off: u32,
    ldb: u32,
    c_off: u32,
    ldc: u32,
    alpha: f32,
    beta: f32,
    lower: u32,
    // offsets of this panel inside the C region (for the `lower` test)
    m0: u32,
    n0: u32,
    pad0: u32,
    pad1: u32,
}

override TRANS_A: u32 = 0u;
override TRANS_B: u32 = 0u;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

@group(0) @binding(0) var<storage, read> ga: array<f32>;
@group(0) @binding(1) var<storage, read> gb: array<f32>;
@group(0) @binding(2) var<storage, read_write> gc: array<f32>;
@group(0) @binding(3) var<uniform> gp: GemmParams;

var<workgroup> sa: array<f32, 1024>; // TK × TM, sa[p * TM + i]
var<workgroup> sb: array<f32, 1024>; // TK × TN, sb[p * TN + j]

// op(A)[i, p]
fn load_a(i: u32, p: u32) -> f32 {
    if (i >= gp.m || p >= gp.k) {
        return 0.0;
    }
    if (TRANS_A == 0u) {
        return ga[gp.a_off + p * gp.lda + i];
    }
    return ga[gp.a_off + i * gp.lda + p];
}

// op(B)[p, j]
fn load_b(p: u32, j: u32) -> f32 {
    if (p >= gp.k || j >= gp.n) {
        return 0.0;
    }
    if (TRANS_B == 0u) {
        return gb[gp.b_off + j * gp.ldb + p];
    }
    return gb[gp.b_off + p * gp.ldb + j];
}

@compute @workgroup_size(16, 16)
fn gemm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i0 = wid.x * TM;
    let j0 = wid.y * TN;
    // A tile wholly above the diagonal has nothing to write (uniform per workgroup).
    if (gp.lower != 0u && gp.m0 + i0 + TM <= gp.n0 + j0) {
        return;
    }
    let tid = lid.y * 16u + lid.x;
    // acc_u[v] = C[i0 + lid.x + 16u, j0 + lid.y + 16v] (registers, no dynamic indexing)
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var p0 = 0u; p0 < gp.k; p0 += TK) {
        for (var e = 0u; e < 4u; e++) {
            let idx = tid + e * 256u;
            // walk memory-contiguous direction with consecutive threads
            var i: u32;
            var p: u32;
            if (TRANS_A == 0u) {
                i = idx % TM;
                p = idx / TM;
            } else {
                p = idx % TK;
                i = idx / TK;
            }
            sa[p * TM + i] = load_a(i0 + i, p0 + p);
            var j: u32;
            var q: u32;
            if (TRANS_B == 0u) {
                q = idx % TK;
                j = idx / TK;
            } else {
                j = idx % TN;
                q = idx / TN;
            }
            sb[q * TN + j] = load_b(p0 + q, j0 + j);
        }
        workgroupBarrier();
        for (var p = 0u; p < TK; p++) {
            let ab = p * TM + lid.x;
            let bb = p * TN + lid.y;
            let bv = vec4<f32>(sb[bb], sb[bb + 16u], sb[bb + 32u], sb[bb + 48u]);
            acc0 = fma(vec4<f32>(sa[ab]), bv, acc0);
            acc1 = fma(vec4<f32>(sa[ab + 16u]), bv, acc1);
            acc2 = fma(vec4<f32>(sa[ab + 32u]), bv, acc2);
            acc3 = fma(vec4<f32>(sa[ab + 48u]), bv, acc3);
        }
        workgroupBarrier();
    }
    let acc = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var u = 0u; u < 4u; u++) {
        let i = i0 + lid.x + 16u * u;
        for (var v = 0u; v < 4u; v++) {
            let j = j0 + lid.y + 16u * v;
            if (i < gp.m && j < gp.n && (gp.lower == 0u || gp.m0 + i >= gp.n0 + j)) {
                let ci = gp.c_off + j * gp.ldc + i;
                var r = gp.alpha * acc[u][v];
                if (gp.beta != 0.0) {
                    r = r + gp.beta * gc[ci];
                }
                gc[ci] = r;
            }
        }
    }
}

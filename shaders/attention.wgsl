// attention.wgsl — causal multi-head attention with grouped K/V (Forward::attention), in the
// flash-attention style: the L × L score matrix never exists.
//
// One workgroup of WG threads per (query tile, query head, sequence). A query tile is
// BQ = WG / R consecutive positions; each position is served by R threads, thread r owning the
// vec4 chunks c = r + R·k (k < NV) of the query and of the output accumulator, in registers.
// Key tiles of BK positions, only those a query of the tile can see (fully masked tiles are
// never visited), are staged in workgroup memory; per tile:
//   1. K tile → `kv`;  each thread's partial dots q·k_j over its chunks → `red`
//   2. V tile → `kv` (K is no longer needed); every thread of a row sums the R partials of
//      each key in the same fixed order (so the R threads hold identical scores and softmax
//      state), applies the causal mask and the online softmax: running max m and sum l,
//      rescaling the accumulator by exp(m_old − m_new)
//   3. o += p_j · v_j over the tile's visible keys.
// Finally o / l. Workgroup memory: kv 8 KiB + red 8 KiB = 16 KiB (the portable minimum).
// Chunks interleave across the R threads, so threads of one row read consecutive vec4s of a
// staged key and other rows read the same addresses (broadcast): no bank conflicts.
// Everything is summed in a fixed order: same input ⇒ bit-identical output.
//
// Overrides (chosen by the launcher from head_dim): HD = head_dim (even), R (a power of two
// dividing WG), NV = ⌈⌈HD/4⌉ / R⌉ ≤ MAXV, BK ≤ MAXK with BK · R · NV ≤ KV_VEC4.
// Chunks past HD are zero (HD even, so a chunk is full, half or empty).

struct AttnParams {
    seqlen: u32,
    n_heads: u32,
    // query heads per kv head
    group: u32,
    // rows of q / out and of k / v (their leading dimensions)
    ldq: u32,
    ldkv: u32,
    // element offsets of (0, first column of the panel) inside each binding
    q_off: u32,
    k_off: u32,
    v_off: u32,
    o_off: u32,
    scale: f32,
    // query tiles per sequence, ⌈seqlen / BQ⌉
    n_qt: u32,
    pad0: u32,
}

override HD: u32 = 64u;
override R: u32 = 2u;
override NV: u32 = 8u;
override BK: u32 = 16u;

const WG: u32 = 128u;
const MAXV: u32 = 8u;
const MAXK: u32 = 16u;
const KV_VEC4: u32 = 512u;
const RED: u32 = 2048u; // WG · MAXK
// Initial running max: finite (WGSL may assume no infinities), below any real score; the
// first visited tile always holds key 0, which every query sees.
const NEG_BIG: f32 = -3.0e38;

@group(0) @binding(0) var<storage, read> at_q: array<f32>;
@group(0) @binding(1) var<storage, read> at_k: array<f32>;
@group(0) @binding(2) var<storage, read> at_v: array<f32>;
@group(0) @binding(3) var<storage, read_write> at_o: array<f32>;
@group(0) @binding(4) var<uniform> at_p: AttnParams;

var<workgroup> kv: array<vec4<f32>, KV_VEC4>;
var<workgroup> red: array<f32, RED>;

// Chunk c (dims 4c .. 4c+3) of the head vector starting at element `base`.
fn load_q(base: u32, c: u32) -> vec4<f32> {
    let d = 4u * c;
    if (d + 3u < HD) {
        return vec4<f32>(at_q[base + d], at_q[base + d + 1u], at_q[base + d + 2u], at_q[base + d + 3u]);
    }
    if (d < HD) {
        return vec4<f32>(at_q[base + d], at_q[base + d + 1u], 0.0, 0.0);
    }
    return vec4<f32>(0.0);
}

fn load_k(base: u32, c: u32) -> vec4<f32> {
    let d = 4u * c;
    if (d + 3u < HD) {
        return vec4<f32>(at_k[base + d], at_k[base + d + 1u], at_k[base + d + 2u], at_k[base + d + 3u]);
    }
    if (d < HD) {
        return vec4<f32>(at_k[base + d], at_k[base + d + 1u], 0.0, 0.0);
    }
    return vec4<f32>(0.0);
}

fn load_v(base: u32, c: u32) -> vec4<f32> {
    let d = 4u * c;
    if (d + 3u < HD) {
        return vec4<f32>(at_v[base + d], at_v[base + d + 1u], at_v[base + d + 2u], at_v[base + d + 3u]);
    }
    if (d < HD) {
        return vec4<f32>(at_v[base + d], at_v[base + d + 1u], 0.0, 0.0);
    }
    return vec4<f32>(0.0);
}

@compute @workgroup_size(128)
fn attention(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let bq = WG / R;
    let hdvp = R * NV;
    let len = at_p.seqlen;
    // the longest (last) query tiles are dispatched first
    let qt = at_p.n_qt - 1u - wid.x;
    let head = wid.y;
    let col0 = wid.z * len;
    let kvcol = (head / at_p.group) * HD;
    let row = li / R;
    let r = li % R;
    let tq = qt * bq + row;
    // rows past the end of the sequence compute on the last query and are not written
    let tq_ld = min(tq, len - 1u);

    var qv: array<vec4<f32>, MAXV>;
    var ov: array<vec4<f32>, MAXV>;
    var sc: array<f32, MAXK>;
    let qbase = at_p.q_off + (col0 + tq_ld) * at_p.ldq + head * HD;
    for (var k = 0u; k < NV; k++) {
        qv[k] = load_q(qbase, r + R * k);
        ov[k] = vec4<f32>(0.0);
    }
    var m = NEG_BIG;
    var l = 0.0;
    // keys < key_end can be seen by some query of the tile
    let key_end = min(qt * bq + bq, len);
    let n_kt = (key_end + BK - 1u) / BK;
    for (var kt = 0u; kt < n_kt; kt++) {
        let k0 = kt * BK;
        // everyone is done with the previous tile's V
        workgroupBarrier();
        for (var e = li; e < BK * hdvp; e += WG) {
            let tk = k0 + e / hdvp;
            var x = vec4<f32>(0.0);
            if (tk < len) {
                x = load_k(at_p.k_off + (col0 + tk) * at_p.ldkv + kvcol, e % hdvp);
            }
            kv[e] = x;
        }
        workgroupBarrier();
        for (var j = 0u; j < BK; j++) {
            var acc = 0.0;
            for (var k = 0u; k < NV; k++) {
                acc = acc + dot(qv[k], kv[j * hdvp + r + R * k]);
            }
            red[j * WG + li] = acc;
        }
        workgroupBarrier();
        for (var e = li; e < BK * hdvp; e += WG) {
            let tk = k0 + e / hdvp;
            var x = vec4<f32>(0.0);
            if (tk < len) {
                x = load_v(at_p.v_off + (col0 + tk) * at_p.ldkv + kvcol, e % hdvp);
            }
            kv[e] = x;
        }
        var mn = m;
        for (var j = 0u; j < BK; j++) {
            var t = 0.0;
            for (var rr = 0u; rr < R; rr++) {
                t = t + red[j * WG + row * R + rr];
            }
            t = t * at_p.scale;
            sc[j] = t;
            if (k0 + j <= tq) {
                mn = max(mn, t);
            }
        }
        let alpha = exp(m - mn);
        l = l * alpha;
        for (var k = 0u; k < NV; k++) {
            ov[k] = ov[k] * alpha;
        }
        for (var j = 0u; j < BK; j++) {
            var p = 0.0;
            if (k0 + j <= tq) {
                p = exp(sc[j] - mn);
            }
            sc[j] = p;
            l = l + p;
        }
        m = mn;
        workgroupBarrier();
        for (var j = 0u; j < BK; j++) {
            // masked keys are skipped, not weighted by 0: a future or padded value never
            // reaches the output, whatever it holds (as in the CPU twin's triangular product)
            if (k0 + j <= tq) {
                let p = sc[j];
                for (var k = 0u; k < NV; k++) {
                    ov[k] = ov[k] + p * kv[j * hdvp + r + R * k];
                }
            }
        }
    }
    if (tq < len) {
        let obase = at_p.o_off + (col0 + tq) * at_p.ldq + head * HD;
        for (var k = 0u; k < NV; k++) {
            let d = 4u * (r + R * k);
            let o = ov[k] / l;
            if (d < HD) {
                at_o[obase + d] = o.x;
                at_o[obase + d + 1u] = o.y;
            }
            if (d + 3u < HD) {
                at_o[obase + d + 2u] = o.z;
                at_o[obase + d + 3u] = o.w;
            }
        }
    }
}

// nll.wgsl — per-column negative log-likelihood −log softmax(z)_target = logsumexp(z) − z_t
// (Forward::nll), for vocabularies of 49152..152064 rows. One workgroup per column walks the
// whole column twice with a stride of WG: first the maximum m (exact, order-free), then
// Σ exp(z − m); each pass ends in a fixed-order tree in workgroup memory (deterministic, no
// atomics). The result is formed as (m − z_t) + log Σ, which keeps the rounding of the large
// m away from small NLLs. The CPU twin sums in f64; here the sum is f32 (WGSL has no portable
// f64), ≈ √(vocab/WG)·ε relative per column.

struct NllParams {
    vocab: u32,
    cols: u32,
    // element offsets of (0, first column) of the logits, of the first target and output
    z_off: u32,
    t_off: u32,
    o_off: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> nl_z: array<f32>;
@group(0) @binding(1) var<storage, read> nl_t: array<u32>;
@group(0) @binding(2) var<storage, read_write> nl_out: array<f32>;
@group(0) @binding(3) var<uniform> nl_p: NllParams;

var<workgroup> nl_red: array<f32, WG>;

@compute @workgroup_size(256)
fn nll(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.x;
    let zb = nl_p.z_off + c * nl_p.vocab;
    // the first element seeds every thread's max (vocab ≥ 1), so no ±∞ sentinel is needed
    var m = nl_z[zb];
    for (var i = lid.x; i < nl_p.vocab; i += WG) {
        m = max(m, nl_z[zb + i]);
    }
    nl_red[lid.x] = m;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        if (lid.x < h) {
            nl_red[lid.x] = max(nl_red[lid.x], nl_red[lid.x + h]);
        }
        workgroupBarrier();
    }
    m = nl_red[0];
    workgroupBarrier();
    var s = 0.0;
    for (var i = lid.x; i < nl_p.vocab; i += WG) {
        s = s + exp(nl_z[zb + i] - m);
    }
    nl_red[lid.x] = s;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        if (lid.x < h) {
            nl_red[lid.x] = nl_red[lid.x] + nl_red[lid.x + h];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        let zt = nl_z[zb + nl_t[nl_p.t_off + c]];
        nl_out[nl_p.o_off + c] = (m - zt) + log(nl_red[0]);
    }
}

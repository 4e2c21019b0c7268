// damping.wgsl — the damping λ, computed and kept on the device (Backend::damping).
// MeanDiag: λ = f · mean(diag H), summed panel by panel into λ's own buffer.
// LambdaMax: power iteration from power_start (normalize → matvec → normalize …), then the
// Rayleigh quotient vᵀHv / vᵀv of the last iterate, times α. Mirrors the CPU twin: a norm
// that is not positive and finite stops the iteration and becomes the estimate.
// All reductions are single-workgroup fixed-order trees (deterministic).

struct DiagSumParams {
    // diagonal elements in this panel, from global column col0
    n: u32,
    h_off: u32,
    ldh: u32,
    col0: u32,
    first: u32,
    last: u32,
    d: u32,
    pad0: u32,
    factor: f32,
    pad1: u32,
    pad2: u32,
    pad3: u32,
}

struct VecParams {
    n: u32,
    alpha: f32,
    pad0: u32,
    pad1: u32,
}

struct MatvecParams {
    rows: u32,
    // columns [col0, col0 + cols) of H are bound; h_off = offset of element (0, col0)
    cols: u32,
    h_off: u32,
    ldh: u32,
    col0: u32,
    first: u32,
    pad0: u32,
    pad1: u32,
}

const WG: u32 = 256u;

var<workgroup> red: array<f32, WG>;

// Fixed-order tree sum of red[0..WG); every invocation of the workgroup must call it.
fn reduce_red(lid: u32) -> f32 {
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        if (lid < h) {
            red[lid] = red[lid] + red[lid + h];
        }
        workgroupBarrier();
    }
    let s = red[0];
    workgroupBarrier();
    return s;
}

// ---- Σ diag(H) over one panel; the last panel turns the sum into factor · sum / d ----
@group(0) @binding(0) var<storage, read> ds_h: array<f32>;
@group(0) @binding(1) var<storage, read_write> ds_lam: array<f32>;
@group(0) @binding(2) var<uniform> ds_p: DiagSumParams;

@compute @workgroup_size(256)
fn diag_sum(@builtin(local_invocation_id) lid: vec3<u32>) {
    var s = 0.0;
    for (var t = lid.x; t < ds_p.n; t += WG) {
        s = s + ds_h[ds_p.h_off + t * ds_p.ldh + ds_p.col0 + t];
    }
    red[lid.x] = s;
    let total = reduce_red(lid.x);
    if (lid.x == 0u) {
        var acc = total;
        if (ds_p.first == 0u) {
            acc = ds_lam[0] + total;
        }
        if (ds_p.last != 0u) {
            acc = ds_p.factor * (acc / f32(ds_p.d));
        }
        ds_lam[0] = acc;
    }
}

// ---- v ← v / ‖v‖ (st[0] = 1, st[1] = ‖v‖ when the norm is not positive and finite) ----
@group(0) @binding(0) var<storage, read_write> nv_v: array<f32>;
@group(0) @binding(1) var<storage, read_write> nv_st: array<f32>;
@group(0) @binding(2) var<uniform> nv_p: VecParams;

@compute @workgroup_size(256)
fn normalize(@builtin(local_invocation_id) lid: vec3<u32>) {
    var s = 0.0;
    for (var t = lid.x; t < nv_p.n; t += WG) {
        let x = nv_v[t];
        s = fma(x, x, s);
    }
    red[lid.x] = s;
    let nrm = sqrt(reduce_red(lid.x));
    if (nv_st[0] != 0.0) {
        return; // an earlier step already stopped the iteration
    }
    if (!(nrm > 0.0 && is_finite_f32(nrm))) {
        if (lid.x == 0u) {
            nv_st[0] = 1.0;
            nv_st[1] = nrm;
        }
        return;
    }
    for (var t = lid.x; t < nv_p.n; t += WG) {
        nv_v[t] = nv_v[t] / nrm;
    }
}

// ---- y (+)= H[:, panel] · v[panel]; one thread per row (coalesced column-major reads) ----
@group(0) @binding(0) var<storage, read> mv_h: array<f32>;
@group(0) @binding(1) var<storage, read> mv_v: array<f32>;
@group(0) @binding(2) var<storage, read_write> mv_y: array<f32>;
@group(0) @binding(3) var<uniform> mv_p: MatvecParams;

@compute @workgroup_size(64)
fn matvec(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= mv_p.rows) {
        return;
    }
    var s = 0.0;
    if (mv_p.first == 0u) {
        s = mv_y[i];
    }
    for (var t = 0u; t < mv_p.cols; t++) {
        s = fma(mv_h[mv_p.h_off + t * mv_p.ldh + i], mv_v[mv_p.col0 + t], s);
    }
    mv_y[i] = s;
}

// ---- λ = α · vᵀy / vᵀv (or α · the bad norm that stopped the iteration) ----
@group(0) @binding(0) var<storage, read> rq_v: array<f32>;
@group(0) @binding(1) var<storage, read> rq_y: array<f32>;
@group(0) @binding(2) var<storage, read> rq_st: array<f32>;
@group(0) @binding(3) var<storage, read_write> rq_lam: array<f32>;
@group(0) @binding(4) var<uniform> rq_p: VecParams;

@compute @workgroup_size(256)
fn rayleigh(@builtin(local_invocation_id) lid: vec3<u32>) {
    var s = 0.0;
    for (var t = lid.x; t < rq_p.n; t += WG) {
        s = fma(rq_v[t], rq_y[t], s);
    }
    red[lid.x] = s;
    let num = reduce_red(lid.x);
    var q = 0.0;
    for (var t = lid.x; t < rq_p.n; t += WG) {
        q = fma(rq_v[t], rq_v[t], q);
    }
    red[lid.x] = q;
    let den = reduce_red(lid.x);
    if (lid.x == 0u) {
        if (rq_st[0] != 0.0) {
            rq_lam[0] = rq_p.alpha * rq_st[1];
        } else {
            rq_lam[0] = rq_p.alpha * (num / den);
        }
    }
}

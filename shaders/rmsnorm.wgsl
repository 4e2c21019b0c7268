// rmsnorm.wgsl — y = w ⊙ (x · 1/√(mean(x²) + ε)) over segments of `dim` rows of every column
// (Forward::rmsnorm; dim = d for block norms, head_dim for Qwen3's q/k norms).
// One workgroup per (segment, column): strided partial sums of squares, then a fixed-order
// tree in workgroup memory (deterministic, no atomics), then the scaled copy. The final
// products are written in the CPU twin's order, w · (x · r).

struct RmsParams {
    rows: u32,
    cols: u32,
    dim: u32,
    // element offsets of (0, first column) of x and of the output inside their bindings
    x_off: u32,
    o_off: u32,
    eps: f32,
    pad0: u32,
    pad1: u32,
}

const WG: u32 = 128u;

@group(0) @binding(0) var<storage, read> rn_x: array<f32>;
@group(0) @binding(1) var<storage, read> rn_w: array<f32>;
@group(0) @binding(2) var<storage, read_write> rn_out: array<f32>;
@group(0) @binding(3) var<uniform> rn_p: RmsParams;

var<workgroup> rn_red: array<f32, WG>;

@compute @workgroup_size(128)
fn rmsnorm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let seg = wid.x;
    let c = wid.y;
    let xb = rn_p.x_off + c * rn_p.rows + seg * rn_p.dim;
    let ob = rn_p.o_off + c * rn_p.rows + seg * rn_p.dim;
    var s = 0.0;
    for (var i = lid.x; i < rn_p.dim; i += WG) {
        let v = rn_x[xb + i];
        s = s + v * v;
    }
    rn_red[lid.x] = s;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        if (lid.x < h) {
            rn_red[lid.x] = rn_red[lid.x] + rn_red[lid.x + h];
        }
        workgroupBarrier();
    }
    let r = 1.0 / sqrt(rn_red[0] / f32(rn_p.dim) + rn_p.eps);
    for (var i = lid.x; i < rn_p.dim; i += WG) {
        rn_out[ob + i] = rn_w[i] * (rn_x[xb + i] * r);
    }
}

// fake_quant.wgsl — per-token symmetric fake quantization in place (Forward::fake_quant), over
// segments of `dim` rows of every column (dim = d for a whole token, head_dim for per-head
// K/V): a = max |x| over the segment, qmax = 2^(bits−1) − 1, s = a / qmax,
// x ← s · clamp(round(x / s), −qmax − 1, qmax); a segment of zeros is left as it is.
// One workgroup per (segment, column): strided partial maxima, then a tree in workgroup
// memory. A max is exact in any order and the rest is elementwise, so this matches the CPU
// twin (cpu_forward.rs, fake_quant_segment) bit for bit: the same true division x / s (not a
// product with 1/s), WGSL `round` (ties to even, as in common.wgsl), and the clamp written as
// compare-and-replace like grid_code. Each thread rewrites exactly the elements it read.

struct FakeQuantParams {
    rows: u32,
    cols: u32,
    dim: u32,
    // element offset of (0, first column) of x inside its binding
    x_off: u32,
    bits: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

const WG: u32 = 128u;

@group(0) @binding(0) var<storage, read_write> fq_x: array<f32>;
@group(0) @binding(1) var<uniform> fq_p: FakeQuantParams;

var<workgroup> fq_red: array<f32, WG>;

@compute @workgroup_size(128)
fn fake_quant(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let seg = wid.x;
    let c = wid.y;
    let xb = fq_p.x_off + c * fq_p.rows + seg * fq_p.dim;
    var m = 0.0;
    for (var i = lid.x; i < fq_p.dim; i += WG) {
        m = max(m, abs(fq_x[xb + i]));
    }
    fq_red[lid.x] = m;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        if (lid.x < h) {
            fq_red[lid.x] = max(fq_red[lid.x], fq_red[lid.x + h]);
        }
        workgroupBarrier();
    }
    let a = fq_red[0];
    if (a == 0.0) {
        return;
    }
    let qmax = f32((1u << (fq_p.bits - 1u)) - 1u);
    let s = a / qmax;
    for (var i = lid.x; i < fq_p.dim; i += WG) {
        var q = round(fq_x[xb + i] / s);
        if (q < -qmax - 1.0) {
            q = -qmax - 1.0;
        }
        if (q > qmax) {
            q = qmax;
        }
        fq_x[xb + i] = s * q;
    }
}

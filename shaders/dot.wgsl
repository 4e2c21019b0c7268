// dot.wgsl — column-wise dot products out[c] = Σ_r a[r, c] · b[r, c].
// One workgroup per column: strided partial sums, then a fixed-order tree reduction in
// workgroup memory (deterministic, no atomics).

struct DotParams {
    rows: u32,
    cols: u32,
    a_off: u32,
    lda: u32,
    b_off: u32,
    ldb: u32,
    // output index of this panel's first column
    out0: u32,
    pad0: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> da: array<f32>;
@group(0) @binding(1) var<storage, read> db: array<f32>;
@group(0) @binding(2) var<storage, read_write> dout: array<f32>;
@group(0) @binding(3) var<uniform> dp: DotParams;

var<workgroup> part: array<f32, WG>;

@compute @workgroup_size(256)
fn dot_cols(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.x + wid.y * 65535u;
    var s = 0.0;
    if (c < dp.cols) {
        for (var r = lid.x; r < dp.rows; r += WG) {
            s = fma(da[dp.a_off + c * dp.lda + r], db[dp.b_off + c * dp.ldb + r], s);
        }
    }
    part[lid.x] = s;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        if (lid.x < h) {
            part[lid.x] = part[lid.x] + part[lid.x + h];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u && c < dp.cols) {
        dout[dp.out0 + c] = part[0];
    }
}

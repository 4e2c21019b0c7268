// cholesky.wgsl — U with a⁻¹ = UᵀU for SPD a (Backend::inverse_cholesky), on the device:
//   B = J a J (index reversal)                         `reverse`
//   blocked right-looking Cholesky B = L Lᵀ, NB columns at a time:
//     diagonal block factor + its inverse in workgroup memory   `potrf_diag`
//     panel L21 = A21 · L11⁻ᵀ                                     `trsm_panel`
//     trailing A22 −= L21 L21ᵀ (lower)                            gemm.wgsl, lower mode
//   blocked X = L⁻¹, block row by block row:
//     T = L[i, :i] · X[:i, :i]                                    gemm.wgsl
//     X[i, :i] = −L_ii⁻¹ T,  X[i, i] = L_ii⁻¹                     `trinv_apply`
//   U = J X J with the strict lower triangle zeroed               `reverse`
// A pivot that is not positive and finite writes status = (column of a) + 1, first one only.

struct ReverseParams {
    d: u32,
    // destination columns [j0, j0 + ncols); dst_off = offset of element (0, j0)
    j0: u32,
    ncols: u32,
    dst_off: u32,
    // source columns [src_c0, src_c0 + ncols) = [d − j0 − ncols, d − j0); src_off = offset of (0, src_c0)
    src_c0: u32,
    src_off: u32,
    zero_lower: u32,
    pad0: u32,
}

struct BlockParams {
    d: u32,
    // block columns [kb, kb + nbk); a_off = offset of element (0, kb) in the bound panel
    kb: u32,
    nbk: u32,
    a_off: u32,
    // offset of the block's NB × NB inverse in the bound dinv range
    dinv_off: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

struct TrinvParams {
    d: u32,
    // block row [ib, ib + nbi)
    ib: u32,
    nbi: u32,
    // X columns [j0, j0 + ncols) are bound; x_off = offset of (0, j0); t_off likewise for T
    j0: u32,
    ncols: u32,
    x_off: u32,
    t_off: u32,
    dinv_off: u32,
}

const NB: u32 = 32u;
const NB2: u32 = 1024u;

var<workgroup> tl: array<f32, NB2>; // column-major NB × NB
var<workgroup> ti: array<f32, NB2>;

// ---- reverse: dst[i, j] = src[d−1−i, d−1−j] (0 where i > j if zero_lower) ----
@group(0) @binding(0) var<storage, read> rv_src: array<f32>;
@group(0) @binding(1) var<storage, read_write> rv_dst: array<f32>;
@group(0) @binding(2) var<uniform> rv: ReverseParams;

@compute @workgroup_size(16, 16)
fn reverse(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let jl = gid.y;
    if (i >= rv.d || jl >= rv.ncols) {
        return;
    }
    let j = rv.j0 + jl;
    var v = 0.0;
    if (rv.zero_lower == 0u || i <= j) {
        let sc = rv.d - 1u - j;
        v = rv_src[rv.src_off + (sc - rv.src_c0) * rv.d + (rv.d - 1u - i)];
    }
    rv_dst[rv.dst_off + jl * rv.d + i] = v;
}

// ---- potrf_diag: factor the diagonal block in workgroup memory, store L11 and L11⁻¹ ----
@group(0) @binding(0) var<storage, read_write> pd_a: array<f32>;
@group(0) @binding(1) var<storage, read_write> pd_dinv: array<f32>;
@group(0) @binding(2) var<storage, read_write> pd_status: array<f32>;
@group(0) @binding(3) var<uniform> bp: BlockParams;

@compute @workgroup_size(256)
fn potrf_diag(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    for (var e = 0u; e < 4u; e++) {
        let idx = t + e * 256u;
        let r = idx % NB;
        let c = idx / NB;
        var v = select(0.0, 1.0, r == c); // identity padding past the matrix edge
        if (r < bp.nbk && c < bp.nbk) {
            v = pd_a[bp.a_off + c * bp.d + bp.kb + r];
        }
        tl[idx] = v;
    }
    workgroupBarrier();
    for (var k = 0u; k < NB; k++) {
        if (t == 0u) {
            let p = tl[k * NB + k];
            if (!(p > 0.0 && is_finite_f32(p)) && k < bp.nbk && pd_status[0] == 0.0) {
                // reversed index kb + k is column d − 1 − (kb + k) of a; status = column + 1
                pd_status[0] = f32(bp.d - (bp.kb + k));
            }
            tl[k * NB + k] = sqrt(p);
        }
        workgroupBarrier();
        if (t < NB && t > k) {
            tl[k * NB + t] = tl[k * NB + t] / tl[k * NB + k];
        }
        workgroupBarrier();
        for (var e = 0u; e < 4u; e++) {
            let idx = t + e * 256u;
            let r = idx % NB;
            let c = idx / NB;
            if (c > k && r >= c) {
                tl[idx] = tl[idx] - tl[k * NB + r] * tl[k * NB + c];
            }
        }
        workgroupBarrier();
    }
    // L11⁻¹ by columns: thread c solves L11 x = e_c (forward substitution)
    if (t < NB) {
        let c = t;
        for (var r = 0u; r < NB; r++) {
            if (r < c) {
                ti[c * NB + r] = 0.0;
            } else {
                var s = select(0.0, 1.0, r == c);
                for (var q = c; q < r; q++) {
                    s = s - tl[q * NB + r] * ti[c * NB + q];
                }
                ti[c * NB + r] = s / tl[r * NB + r];
            }
        }
    }
    workgroupBarrier();
    for (var e = 0u; e < 4u; e++) {
        let idx = t + e * 256u;
        let r = idx % NB;
        let c = idx / NB;
        if (r < bp.nbk && c < bp.nbk && r >= c) {
            pd_a[bp.a_off + c * bp.d + bp.kb + r] = tl[idx];
        }
        pd_dinv[bp.dinv_off + idx] = ti[idx];
    }
}

// ---- trsm_panel: rows below the block, L21[i, c] = Σ_{t ≤ c} A21[i, t] · L11⁻¹[c, t] ----
@group(0) @binding(0) var<storage, read> ts_dinv: array<f32>;
@group(0) @binding(1) var<storage, read_write> ts_a: array<f32>;
@group(0) @binding(2) var<uniform> tp: BlockParams;

@compute @workgroup_size(64)
fn trsm_panel(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    for (var idx = lid.x; idx < NB2; idx += 64u) {
        ti[idx] = ts_dinv[tp.dinv_off + idx];
    }
    workgroupBarrier();
    let row = tp.kb + tp.nbk + gid.x;
    if (row >= tp.d) {
        return;
    }
    var x: array<f32, NB>;
    for (var q = 0u; q < tp.nbk; q++) {
        x[q] = ts_a[tp.a_off + q * tp.d + row];
    }
    for (var c = 0u; c < tp.nbk; c++) {
        var s = 0.0;
        for (var q = 0u; q <= c; q++) {
            s = fma(x[q], ti[q * NB + c], s);
        }
        ts_a[tp.a_off + c * tp.d + row] = s;
    }
}

// ---- trinv_apply: X[ib + r, j] = −Σ_c L_ii⁻¹[r, c] T[c, j] (j < ib), X[ib.., ib..] = L_ii⁻¹ ----
@group(0) @binding(0) var<storage, read> ta_dinv: array<f32>;
@group(0) @binding(1) var<storage, read> ta_t: array<f32>;
@group(0) @binding(2) var<storage, read_write> ta_x: array<f32>;
@group(0) @binding(3) var<uniform> tr: TrinvParams;

@compute @workgroup_size(32, 8)
fn trinv_apply(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(global_invocation_id) gid: vec3<u32>) {
    let tid = lid.y * 32u + lid.x;
    for (var e = 0u; e < 4u; e++) {
        let idx = tid + e * 256u;
        ti[idx] = ta_dinv[tr.dinv_off + idx];
    }
    workgroupBarrier();
    let r = lid.x;
    let jl = gid.y;
    if (r >= tr.nbi || jl >= tr.ncols) {
        return;
    }
    let j = tr.j0 + jl;
    var v = 0.0;
    if (j < tr.ib) {
        var s = 0.0;
        for (var c = 0u; c <= r; c++) {
            s = fma(ti[c * NB + r], ta_t[tr.t_off + jl * NB + c], s);
        }
        v = -s;
    } else {
        let c = j - tr.ib;
        if (c <= r) {
            v = ti[c * NB + r];
        }
    }
    ta_x[tr.x_off + jl * tr.d + tr.ib + r] = v;
}

// sweep.wgsl — the column sweep of GPTQ / Qronos (Backend::sweep), static group parameters
// (Backend::group_params), and a probe of the grid functions for the bit-exact test.
//
// sweep: one thread per row r of W (m × d, column-major, so threads r read consecutive
// addresses). For each column j of [c0, c1): dynamic group parameters at group starts,
// code + dequantized value, error e = (w − q) / U[j, j], rank-1 update of the rest of the
// block W[r, j+1 .. c1) −= e · U[j, ·]. Rows are independent: the only workgroup cooperation
// is staging U's row j through workgroup memory, UTILE columns at a time.

struct SweepParams {
    m: u32,
    d: u32,
    c0: u32,
    c1: u32,
    group_size: u32,
    dynamic_groups: u32,
    propagate: u32,
    bits: u32,
    sym: u32,
    // w, q, codes: bound from column c0; *_off = element offset of (0, c0)
    w_off: u32,
    q_off: u32,
    codes_off: u32,
    // u: bound from column c0 (ldu = d); u_off = element offset of (0, c0)
    u_off: u32,
    ldu: u32,
    // scales, zeros: bound from group g0
    g0: u32,
    s_off: u32,
    z_off: u32,
    // err: bound from column 0 (lde = m)
    err_off: u32,
    lde: u32,
    scale_dtype: u32,
}

struct GroupParamsParams {
    m: u32,
    d: u32,
    group_size: u32,
    bits: u32,
    sym: u32,
    // first group of this panel and how many groups it holds
    g0: u32,
    ngroups: u32,
    // w bound from column g0 · group_size; scales / zeros bound from column g0
    w_off: u32,
    s_off: u32,
    z_off: u32,
    // Clip::Mse: shrink factors tried (grid::MSE_STEPS); 0 = Clip::MinMax
    mse_steps: u32,
    // squared errors weighted by gp_cw (bound from column g0 · group_size at cw_off)
    weighted: u32,
    cw_off: u32,
    scale_dtype: u32,
    pad1: u32,
    pad2: u32,
}

struct GroupRangeParams {
    m: u32,
    // columns of this panel; w_off = offset of its first column
    ncols: u32,
    w_off: u32,
    first: u32,
    last: u32,
    bits: u32,
    sym: u32,
    // the group's scale / zero column
    s_off: u32,
    z_off: u32,
    scale_dtype: u32,
    pad1: u32,
    pad2: u32,
}

struct ProbeParams {
    n: u32,
    bits: u32,
    sym: u32,
    scale_dtype: u32,
}

const WG: u32 = 64u;
const UTILE: u32 = 256u;

@group(0) @binding(0) var<storage, read> sw_u: array<f32>;
@group(0) @binding(1) var<storage, read> sw_group_of: array<u32>;
@group(0) @binding(2) var<storage, read_write> sw_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> sw_q: array<f32>;
@group(0) @binding(4) var<storage, read_write> sw_codes: array<f32>;
@group(0) @binding(5) var<storage, read_write> sw_scales: array<f32>;
@group(0) @binding(6) var<storage, read_write> sw_zeros: array<f32>;
@group(0) @binding(7) var<storage, read_write> sw_err: array<f32>;
@group(0) @binding(8) var<uniform> sp: SweepParams;

var<workgroup> urow: array<f32, UTILE>;

fn w_at(r: u32, j: u32) -> u32 {
    return sp.w_off + (j - sp.c0) * sp.m + r;
}

@compute @workgroup_size(64)
fn sweep(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = gid.x;
    let live = r < sp.m;
    let gs = sp.group_size;
    let sym = sp.sym != 0u;
    for (var j = sp.c0; j < sp.c1; j++) {
        var grp: u32;
        if (sp.dynamic_groups != 0u) {
            grp = j / gs;
            // the launcher computed the parameters of a group starting at c0 (group_range)
            if (live && j % gs == 0u && j != sp.c0) {
                // Grid::params over the current W[r, j .. min(j + gs, d)]
                var mn = 3.4028235e38;
                var mx = -3.4028235e38;
                let end = min(j + gs, sp.d);
                for (var k = j; k < end; k++) {
                    let v = sw_w[w_at(r, k)];
                    mn = min(mn, v);
                    mx = max(mx, v);
                }
                let gpar = grid_params_from_range(mn, mx, sp.bits, sym, sp.scale_dtype);
                sw_scales[sp.s_off + (grp - sp.g0) * sp.m + r] = gpar.scale;
                sw_zeros[sp.z_off + (grp - sp.g0) * sp.m + r] = gpar.zero;
            }
        } else {
            grp = sw_group_of[j];
        }
        var e = 0.0;
        if (live) {
            let gpar = GridParams(sw_scales[sp.s_off + (grp - sp.g0) * sp.m + r], sw_zeros[sp.z_off + (grp - sp.g0) * sp.m + r]);
            let w = sw_w[w_at(r, j)];
            let c = grid_code(w, gpar, sp.bits);
            let q = grid_dequant(c, gpar);
            sw_codes[sp.codes_off + (j - sp.c0) * sp.m + r] = c;
            sw_q[sp.q_off + (j - sp.c0) * sp.m + r] = q;
            if (sp.propagate != 0u) {
                e = (w - q) / sw_u[sp.u_off + (j - sp.c0) * sp.ldu + j];
                sw_err[sp.err_off + (j - sp.c0) * sp.lde + r] = e;
            }
        }
        if (sp.propagate != 0u) {
            for (var k0 = j + 1u; k0 < sp.c1; k0 += UTILE) {
                let kn = min(UTILE, sp.c1 - k0);
                for (var t = lid.x; t < kn; t += WG) {
                    // U[j, k0 + t]
                    urow[t] = sw_u[sp.u_off + (k0 + t - sp.c0) * sp.ldu + j];
                }
                workgroupBarrier();
                if (live) {
                    for (var t = 0u; t < kn; t++) {
                        let wi = w_at(r, k0 + t);
                        sw_w[wi] = sw_w[wi] - e * urow[t];
                    }
                }
                workgroupBarrier();
            }
        }
    }
}

// ---- static group parameters: thread (row r, group g) ----
@group(0) @binding(0) var<storage, read> gpw: array<f32>;
@group(0) @binding(1) var<storage, read> gp_cw: array<f32>;
@group(0) @binding(2) var<storage, read_write> gp_scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> gp_zeros: array<f32>;
@group(0) @binding(4) var<uniform> gpp: GroupParamsParams;

@compute @workgroup_size(64)
fn group_params(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    let gl = gid.y;
    if (r >= gpp.m || gl >= gpp.ngroups) {
        return;
    }
    let g = gpp.g0 + gl;
    let start = g * gpp.group_size;
    let end = min(start + gpp.group_size, gpp.d);
    var mn = 3.4028235e38;
    var mx = -3.4028235e38;
    for (var k = start; k < end; k++) {
        let v = gpw[gpp.w_off + (k - gpp.g0 * gpp.group_size) * gpp.m + r];
        mn = min(mn, v);
        mx = max(mx, v);
    }
    var gpar = grid_params_from_range(mn, mx, gpp.bits, gpp.sym != 0u, gpp.scale_dtype);
    // Grid::params_clipped with Clip::Mse: the first candidate of least squared error
    let range = grid_range(mn, mx);
    var best_err = bitcast<f32>(0x7f800000u);
    for (var i = 0u; i < gpp.mse_steps; i++) {
        let p = f32(100u - i) * 0.01;
        let cand = grid_params_from_range(range.x * p, range.y * p, gpp.bits, gpp.sym != 0u, gpp.scale_dtype);
        var err = 0.0;
        for (var k = start; k < end; k++) {
            let v = gpw[gpp.w_off + (k - gpp.g0 * gpp.group_size) * gpp.m + r];
            let e = grid_dequant(grid_code(v, cand, gpp.bits), cand) - v;
            var wk = 1.0;
            if (gpp.weighted != 0u) {
                wk = gp_cw[gpp.cw_off + (k - gpp.g0 * gpp.group_size)];
            }
            err += wk * (e * e);
        }
        if (err < best_err) {
            best_err = err;
            gpar = cand;
        }
    }
    gp_scales[gpp.s_off + gl * gpp.m + r] = gpar.scale;
    gp_zeros[gpp.z_off + gl * gpp.m + r] = gpar.zero;
}

// ---- dynamic parameters of the group starting at a sweep call's first column, computed
// before the sweep kernel from the then-current W, over column panels of any width:
// running per-row min / max in `mnmx` (2 × m), parameters on the last panel ----
@group(0) @binding(0) var<storage, read> gr_w: array<f32>;
@group(0) @binding(1) var<storage, read_write> gr_mnmx: array<f32>;
@group(0) @binding(2) var<storage, read_write> gr_scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> gr_zeros: array<f32>;
@group(0) @binding(4) var<uniform> grp: GroupRangeParams;

@compute @workgroup_size(64)
fn group_range(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= grp.m) {
        return;
    }
    var mn = 3.4028235e38;
    var mx = -3.4028235e38;
    if (grp.first == 0u) {
        mn = gr_mnmx[r];
        mx = gr_mnmx[grp.m + r];
    }
    for (var k = 0u; k < grp.ncols; k++) {
        let v = gr_w[grp.w_off + k * grp.m + r];
        mn = min(mn, v);
        mx = max(mx, v);
    }
    if (grp.last != 0u) {
        let gpar = grid_params_from_range(mn, mx, grp.bits, grp.sym != 0u, grp.scale_dtype);
        gr_scales[grp.s_off + r] = gpar.scale;
        gr_zeros[grp.z_off + r] = gpar.zero;
    } else {
        gr_mnmx[r] = mn;
        gr_mnmx[grp.m + r] = mx;
    }
}

// ---- grid probe (tests): case i = (w, min, max) → (scale, zero, code, dequant) ----
@group(0) @binding(0) var<storage, read> probe_in: array<f32>;
@group(0) @binding(1) var<storage, read_write> probe_out: array<f32>;
@group(0) @binding(2) var<uniform> probe_p: ProbeParams;

@compute @workgroup_size(64)
fn grid_probe(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= probe_p.n) {
        return;
    }
    let w = probe_in[3u * i];
    let gpar = grid_params_from_range(probe_in[3u * i + 1u], probe_in[3u * i + 2u], probe_p.bits, probe_p.sym != 0u, probe_p.scale_dtype);
    let c = grid_code(w, gpar, probe_p.bits);
    probe_out[4u * i] = gpar.scale;
    probe_out[4u * i + 1u] = gpar.zero;
    probe_out[4u * i + 2u] = c;
    probe_out[4u * i + 3u] = grid_dequant(c, gpar);
}

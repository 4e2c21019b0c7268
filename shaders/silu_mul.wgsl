// silu_mul.wgsl — SwiGLU's gate, g ← g / (1 + e^{−g}) · u, in place (Forward::silu_mul).
// Elementwise over the flat storage of two equally shaped matrices, bound as element ranges.
//
// Overflow: the exponent is clamped to [EXP_LO, EXP_HI] as the CPU twin's `exp_in_place`
// clamps its input, so e^{−g} is always finite: for g ≪ 0, silu(g) = g / (1 + e^88), a
// value below 1e−33 for any |g| < 1e5 — not ∞/∞ = NaN, and not an indeterminate overflowed
// exp (WGSL leaves those undefined). For g ≫ 0, 1 + e^{−g} rounds to 1 and silu(g) = g.

struct SiluParams {
    n: u32,
    g_off: u32,
    u_off: u32,
    pad0: u32,
}

// The CPU twin's clamp of exp's argument (e^88 ≈ 1.65e38 < f32::MAX; e^−87.3 ≈ 1.2e−38).
const EXP_LO: f32 = -87.3;
const EXP_HI: f32 = 88.0;

@group(0) @binding(0) var<storage, read> sm_u: array<f32>;
@group(0) @binding(1) var<storage, read_write> sm_g: array<f32>;
@group(0) @binding(2) var<uniform> sm_p: SiluParams;

@compute @workgroup_size(256)
fn silu_mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * 256u;
    if (e >= sm_p.n) {
        return;
    }
    let g = sm_g[sm_p.g_off + e];
    let s = g / (1.0 + exp(clamp(-g, EXP_LO, EXP_HI)));
    sm_g[sm_p.g_off + e] = s * sm_u[sm_p.u_off + e];
}

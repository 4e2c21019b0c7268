// elementwise.wgsl — copy, axpy, add_diag, permute, the dead-column fix and the broadcast bias
// add (Forward::add_bias), on column-major panels (each binding holds whole columns; `*_off`
// is the element offset of the panel's first used element inside its binding).
// Threads (x, y) = (row, column) of the output.

struct CopyParams {
    rows: u32,
    cols: u32,
    src_off: u32,
    lds: u32,
    dst_off: u32,
    ldd: u32,
    pad0: u32,
    pad1: u32,
}

struct AxpyParams {
    rows: u32,
    cols: u32,
    x_off: u32,
    ldx: u32,
    y_off: u32,
    ldy: u32,
    alpha: f32,
    has_scalar: u32,
}

struct DiagParams {
    // diagonal elements in this panel, starting at global column `col0`
    n: u32,
    a_off: u32,
    lda: u32,
    col0: u32,
    alpha: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

struct PermuteParams {
    rows: u32,
    cols: u32,
    // global output column of this panel's first column
    out_c0: u32,
    out_off: u32,
    ldo: u32,
    // source columns [a_c0, a_c1) are bound, a_off = offset of element (0, a_c0)
    a_c0: u32,
    a_c1: u32,
    a_off: u32,
    lda: u32,
    has_rows: u32,
    has_cols: u32,
    pad0: u32,
}

struct DeadParams {
    rows: u32,
    n_dead: u32,
    // columns [c0, c1) are bound, off = offset of element (0, c0)
    c0: u32,
    c1: u32,
    off: u32,
    ld: u32,
    pad0: u32,
    pad1: u32,
}

struct BiasParams {
    rows: u32,
    cols: u32,
    // offset of element (0, first column) of y inside its binding (ld = rows)
    y_off: u32,
    pad0: u32,
}

// ---- copy: dst = src ----
@group(0) @binding(0) var<storage, read> copy_src: array<f32>;
@group(0) @binding(1) var<storage, read_write> copy_dst: array<f32>;
@group(0) @binding(2) var<uniform> copy_p: CopyParams;

@compute @workgroup_size(16, 16)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    let c = gid.y;
    if (r < copy_p.rows && c < copy_p.cols) {
        copy_dst[copy_p.dst_off + c * copy_p.ldd + r] = copy_src[copy_p.src_off + c * copy_p.lds + r];
    }
}

// ---- axpy: y += alpha · s · x ----
@group(0) @binding(0) var<storage, read> axpy_x: array<f32>;
@group(0) @binding(1) var<storage, read> axpy_s: array<f32>;
@group(0) @binding(2) var<storage, read_write> axpy_y: array<f32>;
@group(0) @binding(3) var<uniform> axpy_p: AxpyParams;

@compute @workgroup_size(16, 16)
fn axpy(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    let c = gid.y;
    if (r < axpy_p.rows && c < axpy_p.cols) {
        var f = axpy_p.alpha;
        if (axpy_p.has_scalar != 0u) {
            f = f * axpy_s[0];
        }
        let yi = axpy_p.y_off + c * axpy_p.ldy + r;
        axpy_y[yi] = axpy_y[yi] + f * axpy_x[axpy_p.x_off + c * axpy_p.ldx + r];
    }
}

// ---- add_diag: a[i, i] += alpha · s ----
@group(0) @binding(0) var<storage, read> diag_s: array<f32>;
@group(0) @binding(1) var<storage, read_write> diag_a: array<f32>;
@group(0) @binding(2) var<uniform> diag_p: DiagParams;

@compute @workgroup_size(64)
fn add_diag(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    if (t < diag_p.n) {
        let ai = diag_p.a_off + t * diag_p.lda + diag_p.col0 + t;
        diag_a[ai] = diag_a[ai] + diag_p.alpha * diag_s[0];
    }
}

// ---- permute: out[i, j] = a[rows[i], cols[j]] for source columns in the bound panel ----
@group(0) @binding(0) var<storage, read> perm_a: array<f32>;
@group(0) @binding(1) var<storage, read> perm_rows: array<u32>;
@group(0) @binding(2) var<storage, read> perm_cols: array<u32>;
@group(0) @binding(3) var<storage, read_write> perm_out: array<f32>;
@group(0) @binding(4) var<uniform> perm_p: PermuteParams;

@compute @workgroup_size(16, 16)
fn permute(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let jl = gid.y;
    if (i >= perm_p.rows || jl >= perm_p.cols) {
        return;
    }
    let j = perm_p.out_c0 + jl;
    var sc = j;
    if (perm_p.has_cols != 0u) {
        sc = perm_cols[j];
    }
    if (sc < perm_p.a_c0 || sc >= perm_p.a_c1) {
        return;
    }
    var sr = i;
    if (perm_p.has_rows != 0u) {
        sr = perm_rows[i];
    }
    perm_out[perm_p.out_off + jl * perm_p.ldo + i] = perm_a[perm_p.a_off + (sc - perm_p.a_c0) * perm_p.lda + sr];
}

// ---- dead columns: h[j, j] = 1, w[:, j] = 0 ----
@group(0) @binding(0) var<storage, read> dead_idx: array<u32>;
@group(0) @binding(1) var<storage, read_write> dead_m: array<f32>;
@group(0) @binding(2) var<uniform> dead_p: DeadParams;

@compute @workgroup_size(64)
fn dead_diag(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    if (t < dead_p.n_dead) {
        let j = dead_idx[t];
        if (j >= dead_p.c0 && j < dead_p.c1) {
            dead_m[dead_p.off + (j - dead_p.c0) * dead_p.ld + j] = 1.0;
        }
    }
}

@compute @workgroup_size(64, 4)
fn dead_cols(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    let t = gid.y;
    if (r < dead_p.rows && t < dead_p.n_dead) {
        let j = dead_idx[t];
        if (j >= dead_p.c0 && j < dead_p.c1) {
            dead_m[dead_p.off + (j - dead_p.c0) * dead_p.ld + r] = 0.0;
        }
    }
}

// ---- add_bias: y[:, c] += b ----
@group(0) @binding(0) var<storage, read> bias_b: array<f32>;
@group(0) @binding(1) var<storage, read_write> bias_y: array<f32>;
@group(0) @binding(2) var<uniform> bias_p: BiasParams;

@compute @workgroup_size(64, 4)
fn add_bias(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    let c = gid.y;
    if (r < bias_p.rows && c < bias_p.cols) {
        let yi = bias_p.y_off + c * bias_p.rows + r;
        bias_y[yi] = bias_y[yi] + bias_b[r];
    }
}

// rope.wgsl — rotary embedding in place, rotate-half convention (Forward::rope): for
// i < h = head_dim/2, y_i = x_i·c − x_{i+h}·s, y_{i+h} = x_{i+h}·c + x_i·s, with c, s from the
// precomputed table (head_dim × seqlen: cos in rows 0..h, sin in rows h..2h) — no trig here.
// Column c of this dispatch is at position (pos0 + c) mod seqlen; table columns from tab_p0 on
// are bound (the launcher binds the whole table when it fits, else a run of positions that
// does not wrap). Threads (x, y) = (rotation pair over all heads, column).

struct RopeParams {
    rows: u32,
    cols: u32,
    x_off: u32,
    head_dim: u32,
    seqlen: u32,
    // position of this dispatch's first column
    pos0: u32,
    // first bound table column and the offset of its element 0 inside the binding
    tab_p0: u32,
    tab_off: u32,
}

@group(0) @binding(0) var<storage, read> rp_tab: array<f32>;
@group(0) @binding(1) var<storage, read_write> rp_x: array<f32>;
@group(0) @binding(2) var<uniform> rp_p: RopeParams;

@compute @workgroup_size(64, 4)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pair = gid.x;
    let c = gid.y;
    let h = rp_p.head_dim / 2u;
    if (pair >= rp_p.rows / 2u || c >= rp_p.cols) {
        return;
    }
    let head = pair / h;
    let i = pair % h;
    let pos = (rp_p.pos0 + c) % rp_p.seqlen;
    let tb = rp_p.tab_off + (pos - rp_p.tab_p0) * rp_p.head_dim;
    let cs = rp_tab[tb + i];
    let sn = rp_tab[tb + h + i];
    let xb = rp_p.x_off + c * rp_p.rows + head * rp_p.head_dim;
    let xa = rp_x[xb + i];
    let xh = rp_x[xb + h + i];
    rp_x[xb + i] = xa * cs - xh * sn;
    rp_x[xb + h + i] = xh * cs + xa * sn;
}

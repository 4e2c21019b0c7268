// gather.wgsl — embedding gather out[:, t] = table[:, ids[t]] (Forward::gather).
// The table (d × vocab, up to 2 GB) is bound one panel of columns [tab_c0, tab_c1) at a time;
// a thread copies its element only when its column's id falls in the bound panel, so the
// launcher dispatches each output panel once per table panel its ids touch. A plain copy:
// bit-exact. Threads (x, y) = (row, output column).

struct GatherParams {
    // d and the output columns of this dispatch
    rows: u32,
    cols: u32,
    // element offsets of the first id / output element inside their bindings
    ids_off: u32,
    out_off: u32,
    // table columns [tab_c0, tab_c1) are bound; tab_off = offset of element (0, tab_c0)
    tab_c0: u32,
    tab_c1: u32,
    tab_off: u32,
    pad0: u32,
}

@group(0) @binding(0) var<storage, read> g_tab: array<f32>;
@group(0) @binding(1) var<storage, read> g_ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> g_out: array<f32>;
@group(0) @binding(3) var<uniform> g_p: GatherParams;

@compute @workgroup_size(64, 4)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    let c = gid.y;
    if (r >= g_p.rows || c >= g_p.cols) {
        return;
    }
    let id = g_ids[g_p.ids_off + c];
    if (id < g_p.tab_c0 || id >= g_p.tab_c1) {
        return;
    }
    g_out[g_p.out_off + c * g_p.rows + r] = g_tab[g_p.tab_off + (id - g_p.tab_c0) * g_p.rows + r];
}

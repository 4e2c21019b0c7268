use faer::linalg::matmul::triangular::{self as tri, BlockStructure};
use faer::{Accum, Mat, Par};
use std::time::Instant;
fn main() {
    let d = 4096; let k = 2048;
    let a = Mat::<f32>::from_fn(d, k, |i, j| ((i * 7 + j * 13) % 17) as f32 / 17.0);
    let b = Mat::<f32>::from_fn(d, k, |i, j| ((i * 5 + j * 11) % 19) as f32 / 19.0);
    let mut c = Mat::<f32>::zeros(d, d);
    let par = Par::rayon(0);
    for _ in 0..2 {
        let t = Instant::now();
        faer::linalg::matmul::matmul(c.as_mut(), Accum::Add, a.as_ref(), b.as_ref().transpose(), 1.0, par);
        let s = t.elapsed().as_secs_f64();
        println!("gemm d={d} k={k}: {s:.3}s {:.1} GFLOP/s", 2.0 * (d * d * k) as f64 / s / 1e9);
        let t = Instant::now();
        tri::matmul(c.as_mut(), BlockStructure::TriangularLower, Accum::Add, a.as_ref(), BlockStructure::Rectangular, a.as_ref().transpose(), BlockStructure::Rectangular, 1.0, par);
        let s = t.elapsed().as_secs_f64();
        println!("syrk d={d} k={k}: {s:.3}s {:.1} GFLOP/s(eff, d²k)", (d * d * k) as f64 / s / 1e9);
    }
}

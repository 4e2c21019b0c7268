//! STUB for the CPU worktree only (the real GPU backend lives on main).
#![allow(unused_variables)]
use super::{Backend, BackendInfo, DampRule, Grams, Region, SweepSpec};
use crate::grid::Grid;
use crate::{Error, Result};

pub enum AdapterChoice { HardwareOnly, Any }
pub struct AdapterReport { pub name: String, pub backend: String, pub device_type: String, pub max_storage_buffer_binding_size: u64, pub max_buffer_size: u64, pub max_compute_workgroup_storage_size: u32, pub max_compute_invocations_per_workgroup: u32 }
pub fn is_hardware(device_type: &str) -> bool { false }
pub fn list_adapters() -> Vec<AdapterReport> { vec![] }
pub struct GpuBackend;
impl GpuBackend {
    pub fn new(choice: AdapterChoice) -> Result<GpuBackend> { Err(Error::NoAdapter("stub".into())) }
    pub fn adapter_name(&self) -> String { String::new() }
}
impl Backend for GpuBackend {

    type Mat = ();
    type Idx = ();

    fn info(&self) -> BackendInfo { unimplemented!("GPU stub") }

    fn upload(&self, rows: usize, cols: usize, data: &[f32]) -> Result<()> { unimplemented!("GPU stub") }
    fn zeros(&self, rows: usize, cols: usize) -> Result<()> { unimplemented!("GPU stub") }
    fn shape(&self, a: &()) -> (usize, usize) { unimplemented!("GPU stub") }
    fn download(&self, a: &()) -> Result<Vec<f32>> { unimplemented!("GPU stub") }
    fn upload_idx(&self, data: &[u32]) -> Result<()> { unimplemented!("GPU stub") }
    fn copy(&self, dst: &mut (), rd: Region, src: &(), rs: Region) -> Result<()> { unimplemented!("GPU stub") }

    fn gram_init(&self, d: usize, mismatched: bool, delta: bool) -> Result<Grams<()>> { unimplemented!("GPU stub") }
    fn gram_update(
        &self,
        acc: &mut Grams<()>,
        x: &[f32],
        xq: Option<&[f32]>,
        tokens: usize,
    ) -> Result<()> { unimplemented!("GPU stub") }
    fn gram_finish(&self, acc: &mut Grams<()>) -> Result<()> { unimplemented!("GPU stub") }

    fn axpy(
        &self,
        y: &mut (),
        ry: Region,
        alpha: f32,
        x: &(),
        rx: Region,
        scalar: Option<&()>,
    ) -> Result<()> { unimplemented!("GPU stub") }
    fn add_diag(&self, a: &mut (), alpha: f32, scalar: &()) -> Result<()> { unimplemented!("GPU stub") }
    fn permute(
        &self,
        a: &(),
        rows: Option<&()>,
        cols: Option<&()>,
    ) -> Result<()> { unimplemented!("GPU stub") }
    fn fix_dead(&self, h: &mut (), w: &mut (), dead: &()) -> Result<()> { unimplemented!("GPU stub") }

    fn gemm(
        &self,
        c: &mut (),
        rc: Region,
        alpha: f32,
        a: &(),
        ra: Region,
        ta: bool,
        b: &(),
        rb: Region,
        tb: bool,
        beta: f32,
    ) -> Result<()> { unimplemented!("GPU stub") }
    fn dot_cols(&self, a: &(), ra: Region, b: &(), rb: Region) -> Result<()> { unimplemented!("GPU stub") }

    fn damping(&self, h: &(), rule: DampRule) -> Result<()> { unimplemented!("GPU stub") }
    fn inverse_cholesky(&self, a: &()) -> Result<((), ())> { unimplemented!("GPU stub") }

    fn sweep(
        &self,
        spec: &SweepSpec,
        w: &mut (),
        u: &(),
        q: &mut (),
        codes: &mut (),
        scales: &mut (),
        zeros: &mut (),
        err: &mut (),
        group_of: &(),
        c0: usize,
        c1: usize,
    ) -> Result<()> { unimplemented!("GPU stub") }
    fn group_params(
        &self,
        grid: Grid,
        w: &(),
        group_size: usize,
        scales: &mut (),
        zeros: &mut (),
    ) -> Result<()> { unimplemented!("GPU stub") }

}

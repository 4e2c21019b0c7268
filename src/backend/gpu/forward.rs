//! [`Forward`] for the GPU backend: each operation is one launcher of its kernel family. Every
//! operation records one encoder and reads nothing back; activations stay on the device.

use super::{attention, elementwise, fake_quant, gather, nll, rmsnorm, rope, silu_mul};
use super::{GpuBackend, GpuIdx, GpuMat};
use crate::backend::forward::{AttnSpec, Forward};
use crate::Result;

impl Forward for GpuBackend {
    fn gather(&self, table: &GpuMat, ids: &GpuIdx) -> Result<GpuMat> {
        gather::gather(self, table, ids)
    }

    fn rmsnorm(&self, x: &GpuMat, w: &GpuMat, dim: usize, eps: f32) -> Result<GpuMat> {
        rmsnorm::rmsnorm(self, x, w, dim, eps)
    }

    fn add_bias(&self, y: &mut GpuMat, b: &GpuMat) -> Result<()> {
        elementwise::add_bias(self, y, b)
    }

    fn rope(&self, x: &mut GpuMat, table: &GpuMat, head_dim: usize) -> Result<()> {
        rope::rope(self, x, table, head_dim)
    }

    fn attention(&self, q: &GpuMat, k: &GpuMat, v: &GpuMat, spec: &AttnSpec) -> Result<GpuMat> {
        attention::attention(self, q, k, v, spec)
    }

    fn silu_mul(&self, gate: &mut GpuMat, up: &GpuMat) -> Result<()> {
        silu_mul::silu_mul(self, gate, up)
    }

    fn fake_quant(&self, x: &mut GpuMat, dim: usize, bits: u32) -> Result<()> {
        fake_quant::fake_quant(self, x, dim, bits)
    }

    fn nll(&self, logits: &GpuMat, targets: &GpuIdx) -> Result<GpuMat> {
        nll::nll(self, logits, targets)
    }
}

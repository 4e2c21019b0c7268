//! The library's quantization config: validated here, never seen as CLI flags.

use crate::grid::{Clip, ScaleDtype};
use crate::{Error, Result};

/// Which algorithm quantizes the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Round-to-nearest on the grid of the original weights; no data.
    Rtn,
    /// GPTQ / OPTQ (DESIGN §1.4).
    Gptq,
    /// Qronos (DESIGN §1.5).
    Qronos,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Gptq => "gptq",
            Method::Qronos => "qronos",
        }
    }
}

/// Columns per scale group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupSize {
    /// One group per output row (`--group-size -1`).
    PerChannel,
    /// Groups of this many input columns (the last one may be shorter).
    Columns(usize),
}

impl GroupSize {
    /// From the CLI / GPTQ convention: `-1` = per channel, positive = columns.
    pub fn from_i64(g: i64) -> Result<Self> {
        match g {
            -1 => Ok(GroupSize::PerChannel),
            g if g > 0 => Ok(GroupSize::Columns(g as usize)),
            _ => Err(Error::config(
                "--group-size",
                format!("{g}: must be -1 (per channel) or a positive number of columns"),
            )),
        }
    }
    pub fn as_i64(self) -> i64 {
        match self {
            GroupSize::PerChannel => -1,
            GroupSize::Columns(g) => g as i64,
        }
    }
    /// Columns per group for a layer with `d` inputs.
    pub fn columns(self, d: usize) -> usize {
        match self {
            GroupSize::PerChannel => d.max(1),
            GroupSize::Columns(g) => g.min(d.max(1)),
        }
    }
}

/// Everything that decides how one layer is quantized.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantConfig {
    pub method: Method,
    /// 2..=8.
    pub bits: u32,
    pub group_size: GroupSize,
    pub sym: bool,
    /// Sweep columns by descending `diag(H)`, groups stay the original contiguous ones
    /// (static group parameters, trivial `g_idx`).
    pub act_order: bool,
    /// Sweep by descending `diag(H)`, groups are runs in the permuted order (permuted `g_idx`).
    pub desc_act: bool,
    /// Group parameters from the original weights, before the sweep.
    pub static_groups: bool,
    /// How static groups choose their range (full range or MSE-clipped).
    pub clip: Clip,
    /// The dtype the checkpoint stores scales in; the grid rounds scales to it before it
    /// chooses codes (f32 = no rounding).
    pub scale_dtype: ScaleDtype,
    /// GPTQ damping: `λ = damp_percent · mean(diag H)`.
    pub damp_percent: f32,
    /// Qronos damping: `λ = qronos_alpha · λmax(H)`.
    pub qronos_alpha: f32,
    /// Power-iteration steps for `λmax`.
    pub power_iters: u32,
    /// Lazy-batch block size of the sweep.
    pub block_size: usize,
    /// Compute the layer objectives (DESIGN §1.1).
    pub objectives: bool,
    /// Damping retries (λ ×10 each) before falling back to RTN.
    pub max_damp_retries: u32,
}

impl Default for QuantConfig {
    fn default() -> Self {
        QuantConfig {
            method: Method::Qronos,
            bits: 4,
            group_size: GroupSize::Columns(128),
            sym: true,
            act_order: false,
            desc_act: false,
            static_groups: false,
            clip: Clip::MinMax,
            scale_dtype: ScaleDtype::F32,
            damp_percent: 0.01,
            qronos_alpha: 1e-6,
            power_iters: 30,
            block_size: 128,
            objectives: true,
            max_damp_retries: 6,
        }
    }
}

impl QuantConfig {
    pub fn validate(&self) -> Result<()> {
        if !(2..=8).contains(&self.bits) {
            return Err(Error::config(
                "--bits",
                format!("{}: must be in 2..=8", self.bits),
            ));
        }
        if let GroupSize::Columns(0) = self.group_size {
            return Err(Error::config("--group-size", "0: must be -1 or positive"));
        }
        if !(self.damp_percent.is_finite() && self.damp_percent >= 0.0) {
            return Err(Error::config(
                "--damp-percent",
                format!("{}: must be a finite number ≥ 0", self.damp_percent),
            ));
        }
        if !(self.qronos_alpha.is_finite() && self.qronos_alpha >= 0.0) {
            return Err(Error::config(
                "--qronos-alpha",
                format!("{}: must be a finite number ≥ 0", self.qronos_alpha),
            ));
        }
        if self.block_size == 0 {
            return Err(Error::config("--block-size", "0: must be positive"));
        }
        if self.act_order && self.desc_act {
            return Err(Error::config(
                "--act-order/--desc-act",
                "choose one: --act-order keeps contiguous groups, --desc-act permutes them",
            ));
        }
        if self.clip != Clip::MinMax && self.method != Method::Rtn && !self.static_groups() {
            return Err(Error::config(
                "--clip",
                format!(
                    "{}: needs group parameters fixed before the sweep (--act-order or \
                     --static-groups)",
                    self.clip.name()
                ),
            ));
        }
        Ok(())
    }

    /// Whether the sweep runs in `diag(H)` order.
    pub fn permutes(&self) -> bool {
        self.act_order || self.desc_act
    }

    /// Whether group parameters are fixed before the sweep (`--act-order` implies it).
    pub fn static_groups(&self) -> bool {
        self.static_groups || (self.act_order && !self.desc_act)
    }
}

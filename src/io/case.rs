//! The single-layer case file of `qronos layer`: `W` f32 `[m, d]` plus either tokens `X`
//! (`[N, d]`, optional `Xq`) or Gram matrices `H`, `G` (`[d, d]`, optional `XX`).

use super::{F32Tensor, SafetensorsFile};
use crate::algo::{Calibration, LayerInput};
use crate::{Error, Result};

/// A validated case, borrowing from the mapped file where it can.
pub struct Case<'a> {
    pub w: F32Tensor<'a>,
    pub calib: CaseCalib<'a>,
}

pub enum CaseCalib<'a> {
    Tokens {
        x: F32Tensor<'a>,
        xq: Option<F32Tensor<'a>>,
    },
    Grams {
        h: F32Tensor<'a>,
        g: F32Tensor<'a>,
        xx: Option<F32Tensor<'a>>,
    },
}

impl<'a> Case<'a> {
    /// Reads and checks every tensor: presence, dtype, rank, shapes, finiteness.
    pub fn read(file: &'a SafetensorsFile) -> Result<Self> {
        let bad = |tensor: &str, reason: String| Error::Tensor {
            path: file.path().to_path_buf(),
            tensor: tensor.into(),
            reason,
        };
        let w = file.require_f32("W", 2)?;
        let (m, d) = (w.shape[0], w.shape[1]);
        if m == 0 || d == 0 {
            return Err(bad("W", format!("empty shape {:?}", w.shape)));
        }
        let has_tokens = file.has("X") || file.has("Xq");
        let has_grams = file.has("H") || file.has("G") || file.has("XX");
        let calib = match (has_tokens, has_grams) {
            (true, true) => {
                return Err(bad(
                    "X/H",
                    "holds both tokens (X, Xq) and Gram matrices (H, G, XX); give one kind".into(),
                ))
            }
            (false, false) => {
                return Err(bad(
                    "X",
                    format!(
                        "missing: a case needs X (and optionally Xq) or H and G; found {:?}",
                        file.names()
                    ),
                ))
            }
            (true, false) => {
                let x = file.require_f32("X", 2)?;
                if x.shape[1] != d {
                    return Err(bad(
                        "X",
                        format!(
                            "shape {:?}: expected [N, {d}] (d from W {:?})",
                            x.shape, w.shape
                        ),
                    ));
                }
                if x.shape[0] == 0 {
                    return Err(bad("X", "zero tokens (shape [0, d])".into()));
                }
                let xq = file.f32_tensor("Xq", 2)?;
                if let Some(xq) = &xq {
                    if xq.shape != x.shape {
                        return Err(bad(
                            "Xq",
                            format!("shape {:?}: expected X's shape {:?}", xq.shape, x.shape),
                        ));
                    }
                }
                CaseCalib::Tokens { x, xq }
            }
            (false, true) => {
                let h = file.require_f32("H", 2)?;
                let g = file.f32_tensor("G", 2)?.ok_or_else(|| {
                    bad(
                        "G",
                        "missing: H was given without G (G = XᵀX̃/N is required)".into(),
                    )
                })?;
                let xx = file.f32_tensor("XX", 2)?;
                for (name, t) in [("H", Some(&h)), ("G", Some(&g)), ("XX", xx.as_ref())] {
                    if let Some(t) = t {
                        if t.shape != [d, d] {
                            return Err(bad(
                                name,
                                format!("shape {:?}: expected [{d}, {d}] (d from W)", t.shape),
                            ));
                        }
                    }
                }
                CaseCalib::Grams { h, g, xx }
            }
        };
        Ok(Case { w, calib })
    }

    pub fn input(&self) -> LayerInput<'_> {
        let calib = match &self.calib {
            CaseCalib::Tokens { x, xq } => Calibration::Tokens {
                x: &x.data,
                xq: xq.as_ref().map(|t| &*t.data),
                n: x.shape[0],
            },
            CaseCalib::Grams { h, g, xx } => Calibration::Grams {
                h: &h.data,
                g: &g.data,
                xx: xx.as_ref().map(|t| &*t.data),
            },
        };
        LayerInput {
            w: &self.w.data,
            m: self.w.shape[0],
            d: self.w.shape[1],
            calib,
        }
    }
}

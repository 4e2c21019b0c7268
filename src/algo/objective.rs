//! Layer objectives (DESIGN §1.1) from Gram matrices, without a second pass over the tokens.
//!
//! With `E = W − Q`, `C = G − H`, `D = ΔᵀΔ/N` and `XᵀX/N = H + C + Cᵀ + D`:
//! - mismatched²: `tr(W D Wᵀ) + 2·tr(W C Eᵀ) + tr(E H Eᵀ)`
//! - standard²: `tr(E H Eᵀ) + 2·tr(E C Eᵀ) + tr(E D Eᵀ)`
//! - reference `‖XWᵀ‖²/N`: `tr(W H Wᵀ) + 2·tr(W C Wᵀ) + tr(W D Wᵀ)`
//!
//! Every trace is `tr(A M Bᵀ) = ⟨M, AᵀB⟩`, so three `d × d` products `P = WᵀW`, `R = EᵀE`,
//! `S = WᵀE` (`m·d²` multiply-adds; the symmetric two as syrk, half that) and elementwise dots with `H`, `G`, `D` give them all
//! (dots accumulated in f64). `E` is formed directly, never as a difference of traces of `W`
//! and `Q`, so the few-percent objectives keep their digits.

use super::{to_col_major, LayerResult};
use crate::backend::{Backend, Grams, Region};
use crate::Result;

/// Relative Frobenius errors of the layer output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Objectives {
    /// `‖X Wᵀ − X̃ Qᵀ‖ / ‖X Wᵀ‖` (what Qronos minimises).
    pub mismatched: f64,
    /// `‖X Wᵀ − X Qᵀ‖ / ‖X Wᵀ‖` (GPTQ's).
    pub standard: f64,
}

/// `None` when the statistics are missing (precomputed H, G without XX).
pub(super) fn compute<B: Backend>(
    b: &B,
    w0: &B::Mat,
    out: &LayerResult,
    grams: &Grams<B::Mat>,
) -> Result<Option<Objectives>> {
    if grams.g.is_some() && grams.d.is_none() {
        return Ok(None);
    }
    let (m, d) = (out.m, out.d);
    let all = Region::all(m, d);
    let sq = Region::all(d, d);
    let qm = b.upload(m, d, &to_col_major(&out.q, m, d))?;
    let mut e = b.permute(w0, None, None)?;
    b.axpy(&mut e, all, -1.0, &qm, all, None)?;
    drop(qm);
    let product = |x: &B::Mat, y: &B::Mat| -> Result<B::Mat> {
        let mut p = b.zeros(d, d)?;
        b.gemm(&mut p, sq, 1.0, x, all, true, y, all, false, 0.0)?;
        Ok(p)
    };
    let dot = |x: &B::Mat, y: &B::Mat| -> Result<f64> {
        let v = b.dot_cols(x, sq, y, sq)?;
        Ok(b.download(&v)?.iter().map(|&s| s as f64).sum())
    };
    let p = b.gram_t(w0)?;
    let r = b.gram_t(&e)?;
    let (h, g, dm) = (&grams.h, grams.g.as_ref(), grams.d.as_ref());
    let (ehe, whw) = (dot(h, &r)?, dot(h, &p)?);
    let (mism2, std2, ref2) = match (g, dm) {
        (Some(g), Some(dm)) => {
            let s = product(w0, &e)?;
            let wdw = dot(dm, &p)?;
            let wce = dot(g, &s)? - dot(h, &s)?;
            let ece = dot(g, &r)? - ehe;
            let ede = dot(dm, &r)?;
            let wcw = dot(g, &p)? - whw;
            (
                wdw + 2.0 * wce + ehe,
                ehe + 2.0 * ece + ede,
                whw + 2.0 * wcw + wdw,
            )
        }
        _ => (ehe, ehe, whw),
    };
    let rel = |num: f64| {
        if ref2 > 0.0 {
            (num.max(0.0) / ref2).sqrt()
        } else {
            f64::NAN
        }
    };
    Ok(Some(Objectives {
        mismatched: rel(mism2),
        standard: rel(std2),
    }))
}

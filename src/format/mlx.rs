//! MLX affine checkpoints, as mlx-lm (0.32) loads them with mlx's `QuantizedLinear`. Per
//! quantized linear `P` (`m` outputs, `d` inputs, groups of `g ∈ {32, 64, 128}` consecutive
//! inputs, `G = d / g`):
//! - `P.weight` U32 `[m, d·b/32]`: each output row's codes along the inputs as one dense
//!   LSB-first stream ([`super::pack`]; bits 2, 3, 4, 5, 6, 8);
//! - `P.scales`, `P.biases` `[m, G]`: `w[n, k] = scales[n, k/g] · code[n, k] + biases[n, k/g]`;
//! - the linear's `bias` stays as it is.
//!
//! Our grid is `s · (c − z)`, so `biases = −s · z`. Kept exact: the scale is rounded before
//! the codes are chosen to the model's dtype (bf16 for an f32 model), so `s · c` and `s · z`
//! (at most 8 + 8 significant bits for bf16, 11 + 8 for f16) are exact in f32 and
//! `s · c + b == s · (c − z)` exactly when mlx computes in f32 (f32 activations, or f32
//! scales). A symmetric grid (`z = 2^(b−1)`) stores scales and biases in that dtype (a
//! power-of-two multiple is exact); an asymmetric one stores both in f32, since `s · z` needs
//! up to 16 significant bits (and mlx then computes that layer in f32). With bf16 / f16
//! activations and scales mlx rounds `s · c + b` to that dtype itself, as it does for its own
//! quantizations.
//!
//! `config.json` gets `quantization: {group_size, bits, mode: "affine"}` and the same object
//! as `quantization_config` (as mlx-lm writes it). mlx-lm quantizes a module iff its `.scales`
//! tensor exists and reads each module's bits and group from the tensors' shapes; the reader
//! here does the same.

use safetensors::Dtype;
use serde_json::{json, Value};

use super::pack::{from_le_bytes, le_bytes, pack_rows, unpack, words};
use super::{dtype_of, exact_bytes, fetch, HeaderOf, RawTensor, Stored};
use crate::algo::{LayerResult, QuantConfig};
use crate::grid::ScaleDtype;
use crate::io::writer::Planned;
use crate::{Error, Result};

/// The bit widths mlx's affine kernels take.
pub const BITS: [u32; 6] = [2, 3, 4, 5, 6, 8];
/// The group sizes mlx's affine kernels take.
pub const GROUPS: [usize; 3] = [32, 64, 128];

pub(super) fn check_config(s: &Stored, cfg: &QuantConfig) -> Result<()> {
    if !BITS.contains(&s.bits) {
        return Err(Error::config(
            "--bits",
            format!("{}: mlx stores 2, 3, 4, 5, 6 or 8 bits", s.bits),
        ));
    }
    if !GROUPS.iter().any(|&g| g as i64 == s.group_size) {
        let g = if s.group_size < 0 {
            "-1 (one group per row)".to_string()
        } else {
            s.group_size.to_string()
        };
        return Err(Error::config(
            "--group-size",
            format!("{g}: mlx stores groups of 32, 64 or 128 inputs"),
        ));
    }
    if cfg.desc_act {
        return Err(Error::config(
            "--desc-act",
            "mlx groups are runs of consecutive inputs (no g_idx): use --act-order (static \
             groups)",
        ));
    }
    Ok(())
}

pub(super) fn check_linear(s: &Stored, name: &str, _m: usize, d: usize) -> Result<()> {
    let g = s.group_size as usize;
    if d % g != 0 {
        let hint = match GROUPS.iter().rev().find(|&&f| d % f == 0) {
            Some(f) => format!("try --group-size {f}"),
            None => "no mlx group size divides it".to_string(),
        };
        return Err(Error::config(
            "--group-size",
            format!(
                "{g}: mlx needs the group to divide every layer's inputs; {name} has {d} ({hint})"
            ),
        ));
    }
    Ok(())
}

/// The dtype scales and biases are stored in.
fn value_dtype(s: &Stored) -> Dtype {
    if s.sym {
        dtype_of(s.scale_dtype)
    } else {
        Dtype::F32
    }
}

pub(super) fn plan(s: &Stored, name: &str, m: usize, d: usize) -> Vec<Planned> {
    let (b, g) = (s.bits, d.div_ceil(s.columns(d)));
    let t = |suffix: &str, dtype, shape: Vec<usize>| Planned {
        name: format!("{name}.{suffix}"),
        dtype,
        shape,
    };
    vec![
        t("weight", Dtype::U32, vec![m, words(d, b)]),
        t("scales", value_dtype(s), vec![m, g]),
        t("biases", value_dtype(s), vec![m, g]),
    ]
}

pub(super) fn encode(s: &Stored, name: &str, r: &LayerResult) -> Result<Vec<Vec<u8>>> {
    let (m, d, g, b) = (r.m, r.d, r.ngroups, s.bits);
    let packed = pack_rows(&r.codes, m, d, b);
    let dt = match value_dtype(s) {
        Dtype::F32 => ScaleDtype::F32,
        _ => s.scale_dtype,
    };
    let (mut scales, mut biases) = (Vec::with_capacity(m * g * 4), Vec::with_capacity(m * g * 4));
    for (i, (&x, &z)) in r.scales.iter().zip(&r.zeros).enumerate() {
        let bad = |what: &str, v: f32| Error::Tensor {
            path: std::path::PathBuf::new(),
            tensor: format!("{name}.{what}"),
            reason: format!(
                "{v:e} at [{}, {}] is not a {} value: the grid was not built for it",
                i / g,
                i % g,
                dt.name()
            ),
        };
        scales.extend(exact_bytes(x, dt).ok_or_else(|| bad("scales", x))?);
        let bias = -(x * z);
        biases.extend(exact_bytes(bias, dt).ok_or_else(|| bad("biases", bias))?);
    }
    Ok(vec![le_bytes(&packed), scales, biases])
}

/// A float tensor `{name}.{suffix}` of `shape` in any float dtype, as f32.
fn floats<'a>(
    get: &dyn Fn(&str) -> Result<RawTensor<'a>>,
    name: &str,
    suffix: &str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let full = format!("{name}.{suffix}");
    let (dt, got, bytes) = get(&full)?;
    match crate::io::decode_float(dt, bytes) {
        Some(v) if got == shape => Ok(v),
        _ => Err(Error::Tensor {
            path: std::path::PathBuf::new(),
            tensor: full,
            reason: format!("{dt:?} {got:?}, expected a float tensor {shape:?}"),
        }),
    }
}

/// The bits and group size of linear `name` (`m × d`), read from its tensors' shapes as
/// mlx-lm does (`weight` `[m, d·b/32]`, `scales` `[m, d/g]`), checked against what mlx takes.
pub(super) fn layout(info: HeaderOf<'_>, name: &str, m: usize, d: usize) -> Result<(u32, usize)> {
    let bad = |suffix: &str, reason: String| Error::Tensor {
        path: std::path::PathBuf::new(),
        tensor: format!("{name}.{suffix}"),
        reason,
    };
    let (wdt, ws) = info(&format!("{name}.weight"))?;
    let bits = match ws.as_slice() {
        [rows, cols] if *rows == m && wdt == Dtype::U32 && cols * 32 % d == 0 => {
            (cols * 32 / d) as u32
        }
        _ => 0,
    };
    if !BITS.contains(&bits) {
        return Err(bad(
            "weight",
            format!(
                "{wdt:?} {ws:?}: expected U32 [{m}, {d}·b/32] with b in 2, 3, 4, 5, 6, 8 for a \
                 {m} × {d} linear"
            ),
        ));
    }
    let (sdt, ss) = info(&format!("{name}.scales"))?;
    let group = match ss.as_slice() {
        [rows, cols] if *rows == m && *cols > 0 && d % cols == 0 => d / cols,
        _ => 0,
    };
    if !GROUPS.contains(&group) || !matches!(sdt, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
        return Err(bad(
            "scales",
            format!("{sdt:?} {ss:?}: expected a float [{m}, {d}/g] with g in 32, 64, 128"),
        ));
    }
    let (bdt, bs) = info(&format!("{name}.biases"))?;
    if bs != ss || !matches!(bdt, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
        return Err(bad(
            "biases",
            format!("{bdt:?} {bs:?}: expected a float tensor {ss:?} like the scales"),
        ));
    }
    Ok((bits, group))
}

pub(super) fn decode<'a>(
    get: &dyn Fn(&str) -> Result<RawTensor<'a>>,
    name: &str,
    m: usize,
    d: usize,
) -> Result<Vec<f32>> {
    let info = |n: &str| get(n).map(|t| (t.0, t.1));
    let (b, gs) = layout(&info, name, m, d)?;
    let (g, nw) = (d / gs, words(d, b));
    let packed = from_le_bytes(fetch(get, name, "weight", Dtype::U32, &[m, nw])?.2);
    let scales = floats(get, name, "scales", &[m, g])?;
    let biases = floats(get, name, "biases", &[m, g])?;
    let mut w = vec![0f32; m * d];
    for n in 0..m {
        let codes = unpack(&packed[n * nw..(n + 1) * nw], b, d);
        for (k, &c) in codes.iter().enumerate() {
            let i = n * g + k / gs;
            w[n * d + k] = scales[i] * c as f32 + biases[i];
        }
    }
    Ok(w)
}

/// `quantization` (and the same object as `quantization_config`).
pub(super) fn config_json(s: &Stored) -> Value {
    json!({"group_size": s.group_size, "bits": s.bits, "mode": "affine"})
}

pub(super) fn from_config(path: &std::path::Path, q: &Value, dtype: ScaleDtype) -> Result<Stored> {
    let bad = |k: &str, why: String| Error::model(path, format!("quantization.{k}"), why);
    let mode = q.get("mode").and_then(Value::as_str).unwrap_or("affine");
    if mode != "affine" {
        return Err(bad(
            "mode",
            format!("{mode:?}: qronos reads mlx's affine quantization"),
        ));
    }
    let bits = q.get("bits").and_then(Value::as_u64).unwrap_or(0) as u32;
    if !BITS.contains(&bits) {
        return Err(bad("bits", format!("{bits}: mlx takes 2, 3, 4, 5, 6 or 8")));
    }
    let group_size = q.get("group_size").and_then(Value::as_i64).unwrap_or(0);
    if !GROUPS.iter().any(|&g| g as i64 == group_size) {
        return Err(bad(
            "group_size",
            format!("{group_size}: mlx takes 32, 64 or 128"),
        ));
    }
    Ok(Stored {
        format: super::Format::Mlx,
        bits,
        group_size,
        // affine: each layer's scales and biases say it all
        sym: false,
        desc_act: false,
        scale_dtype: dtype,
    })
}

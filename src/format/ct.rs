//! compressed-tensors `pack-quantized` checkpoints (`quant_method: "compressed-tensors"`), as
//! compressed-tensors 0.20 (through transformers) and vLLM read them. Per linear `P` (`m`
//! outputs, `d` inputs, `G = d / g` groups — the group must divide the inputs):
//! - `P.weight_packed` I32 `[m, d·b/32]`: each output row's codes along the inputs as one
//!   dense LSB-first stream (the stored value is the signed value + 2^(b−1), i.e. our
//!   unsigned code);
//! - `P.weight_scale` `[m, G]` in the model's dtype; `P.weight_shape` I64 `[2]` = `[m, d]`;
//! - `P.weight_zero_point` I32 `[m·b/32, G]` for asymmetric grids (zero points packed along
//!   the outputs, per group);
//! - the linear's `bias` stays as it is.
//!
//! `w[n, k] = (code − z) · scale[n, k / g]`. No `g_idx` (0.20 dropped it), so `--desc-act`
//! cannot be stored.

use safetensors::Dtype;
use serde_json::{json, Value};

use super::pack::{from_le_bytes, le_bytes, pack_into, pack_rows, unpack, words};
use super::{dtype_of, exact_bytes, fetch, RawTensor, Stored};
use crate::algo::{LayerResult, QuantConfig};
use crate::grid::ScaleDtype;
use crate::io::writer::Planned;
use crate::{Error, Result};

pub(super) fn check_config(s: &Stored, cfg: &QuantConfig) -> Result<()> {
    if ![2, 4, 8].contains(&s.bits) {
        return Err(Error::config(
            "--bits",
            format!(
                "{}: compressed-tensors pack-quantized stores 2, 4 or 8 bits",
                s.bits
            ),
        ));
    }
    if cfg.desc_act {
        return Err(Error::config(
            "--desc-act",
            "compressed-tensors 0.20 has no g_idx: use --act-order (static groups)",
        ));
    }
    Ok(())
}

pub(super) fn check_linear(s: &Stored, name: &str, m: usize, d: usize) -> Result<()> {
    let per = 32 / s.bits as usize;
    if d % per != 0 || m % per != 0 {
        return Err(Error::config(
            "--format",
            format!(
                "compressed-tensors: {name} is {m} × {d}; {}-bit packing needs both a multiple \
                 of {per}",
                s.bits
            ),
        ));
    }
    if s.group_size > 0 && d % s.group_size as usize != 0 {
        let g = s.group_size as usize;
        // the largest power of two below g that divides d
        let fit = (0..usize::BITS)
            .map(|i| 1usize << i)
            .take_while(|&p| p <= g)
            .filter(|&p| d % p == 0)
            .last()
            .unwrap_or(1);
        return Err(Error::config(
            "--group-size",
            format!(
                "{g}: compressed-tensors needs the group to divide every layer's inputs; {name} \
                 has {d} (try --group-size {fit})"
            ),
        ));
    }
    Ok(())
}

pub(super) fn plan(s: &Stored, name: &str, m: usize, d: usize) -> Vec<Planned> {
    let (b, g) = (s.bits, d.div_ceil(s.columns(d)));
    let t = |suffix: &str, dtype, shape: Vec<usize>| Planned {
        name: format!("{name}.{suffix}"),
        dtype,
        shape,
    };
    let mut v = vec![
        t("weight_packed", Dtype::I32, vec![m, words(d, b)]),
        t("weight_scale", dtype_of(s.scale_dtype), vec![m, g]),
        t("weight_shape", Dtype::I64, vec![2]),
    ];
    if !s.sym {
        v.push(t("weight_zero_point", Dtype::I32, vec![words(m, b), g]));
    }
    v
}

pub(super) fn encode(s: &Stored, name: &str, r: &LayerResult) -> Result<Vec<Vec<u8>>> {
    let (m, d, g, b) = (r.m, r.d, r.ngroups, s.bits);
    let packed = pack_rows(&r.codes, m, d, b);
    let mut scales = Vec::with_capacity(m * g * 4);
    for (i, &x) in r.scales.iter().enumerate() {
        scales.extend(exact_bytes(x, s.scale_dtype).ok_or_else(|| Error::Tensor {
            path: std::path::PathBuf::new(),
            tensor: name.to_string(),
            reason: format!(
                "scale {x:e} at [{}, {}] is not a {} value: the grid was not built for it",
                i / g,
                i % g,
                s.scale_dtype.name()
            ),
        })?);
    }
    let shape: Vec<u8> = [m as i64, d as i64]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut out = vec![le_bytes(&packed), scales, shape];
    if !s.sym {
        let nzw = words(m, b);
        let mut zp = vec![0u32; nzw * g];
        let mut col = vec![0u32; nzw];
        for gi in 0..g {
            pack_into((0..m).map(|n| r.zeros[n * g + gi] as u32), b, &mut col);
            for (w, &x) in col.iter().enumerate() {
                zp[w * g + gi] = x;
            }
        }
        out.push(le_bytes(&zp));
    }
    Ok(out)
}

pub(super) fn decode<'a>(
    s: &Stored,
    get: &dyn Fn(&str) -> Result<RawTensor<'a>>,
    name: &str,
    m: usize,
    d: usize,
) -> Result<Vec<f32>> {
    let (b, gs) = (s.bits, s.columns(d));
    let g = d.div_ceil(gs);
    let t = |suffix: &str, dtype, shape: &[usize]| fetch(get, name, suffix, dtype, shape);
    let nw = words(d, b);
    let packed = from_le_bytes(t("weight_packed", Dtype::I32, &[m, nw])?.2);
    let sc = t("weight_scale", dtype_of(s.scale_dtype), &[m, g])?;
    let scales = crate::io::decode_float(sc.0, sc.2).expect("a float dtype");
    let zeros: Vec<f32> = if s.sym {
        vec![(1u32 << (b - 1)) as f32; m * g]
    } else {
        let nzw = words(m, b);
        let zp = from_le_bytes(t("weight_zero_point", Dtype::I32, &[nzw, g])?.2);
        let mut z = vec![0f32; m * g];
        for gi in 0..g {
            let col: Vec<u32> = (0..nzw).map(|w| zp[w * g + gi]).collect();
            for (n, v) in unpack(&col, b, m).into_iter().enumerate() {
                z[n * g + gi] = v as f32;
            }
        }
        z
    };
    let mut w = vec![0f32; m * d];
    for n in 0..m {
        let codes = unpack(&packed[n * nw..(n + 1) * nw], b, d);
        for (k, &c) in codes.iter().enumerate() {
            let i = n * g + k / gs;
            w[n * d + k] = scales[i] * (c as f32 - zeros[i]);
        }
    }
    Ok(w)
}

pub(super) fn config_json(s: &Stored, cfg: &QuantConfig) -> Value {
    let (strategy, group) = if s.group_size > 0 {
        ("group", json!(s.group_size))
    } else {
        ("channel", json!(null))
    };
    let mut weights = json!({
        "num_bits": s.bits, "type": "int", "symmetric": s.sym, "strategy": strategy,
        "group_size": group, "dynamic": false,
    });
    if cfg.act_order {
        weights["actorder"] = json!("weight");
    }
    json!({
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "ignore": ["lm_head"],
        "kv_cache_scheme": null,
        "config_groups": {"group_0": {
            "targets": ["Linear"], "format": "pack-quantized", "weights": weights,
            "input_activations": null, "output_activations": null,
        }},
        "quantizer": super::quantizer_tag(),
    })
}

pub(super) fn from_config(path: &std::path::Path, q: &Value, dtype: ScaleDtype) -> Result<Stored> {
    let bad = |k: &str, why: String| Error::model(path, format!("quantization_config.{k}"), why);
    let fmt = q.get("format").and_then(Value::as_str).unwrap_or("");
    if fmt != "pack-quantized" {
        return Err(bad(
            "format",
            format!("{fmt:?}: qronos reads pack-quantized"),
        ));
    }
    let groups = q
        .get("config_groups")
        .and_then(Value::as_object)
        .filter(|g| g.len() == 1)
        .ok_or_else(|| bad("config_groups", "qronos reads exactly one group".into()))?;
    let w = groups
        .values()
        .next()
        .and_then(|g| g.get("weights"))
        .ok_or_else(|| bad("config_groups", "no weights scheme".into()))?;
    let bits = w.get("num_bits").and_then(Value::as_u64).unwrap_or(0) as u32;
    if ![2, 4, 8].contains(&bits) {
        return Err(bad(
            "weights.num_bits",
            format!("{bits}: qronos reads 2, 4 or 8"),
        ));
    }
    let group_size = match w.get("strategy").and_then(Value::as_str) {
        Some("group") => w.get("group_size").and_then(Value::as_i64).unwrap_or(0),
        Some("channel") => -1,
        other => {
            return Err(bad(
                "weights.strategy",
                format!("{other:?}: qronos reads group, channel"),
            ))
        }
    };
    if group_size == 0 || group_size < -1 {
        return Err(bad("weights.group_size", format!("{group_size}")));
    }
    Ok(Stored {
        format: super::Format::CompressedTensors,
        bits,
        group_size,
        sym: w.get("symmetric").and_then(Value::as_bool).unwrap_or(true),
        desc_act: false,
        scale_dtype: dtype,
    })
}

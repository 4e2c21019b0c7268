//! GPTQ checkpoints (`quant_method: "gptq"`), as transformers (with gptqmodel / optimum),
//! GPTQModel and vLLM read them. Per linear `P` (`m` outputs, `d` inputs, `G` groups):
//! - `P.qweight` I32 `[d·b/32, m]`: for each output column, the codes along the input axis as
//!   one dense LSB-first stream ([`super::pack`]);
//! - `P.qzeros` I32 `[G, m·b/32]`: for each group, the zero points along the output axis;
//!   v1 (`checkpoint_format: "gptq"`) stores `z − 1`, v2 (`"gptq_v2"`) stores `z`;
//! - `P.scales` F16 `[G, m]`; `P.g_idx` I32 `[d]` (the group of each input column);
//! - `P.bias` F16 `[m]` when the linear has a bias.
//!
//! `w[n, k] = scales[g, n] · (code[n, k] − z[g, n])` with `g = g_idx[k]`; `G = ceil(d / g)`
//! (transformers / gptqmodel; vLLM needs `g | d`). v1 is written for symmetric grids only:
//! readers disagree on how `z − 1` wraps when `z = 0` (word-wise or field-wise `+1`).

use safetensors::Dtype;
use serde_json::{json, Value};

use super::pack::{from_le_bytes, le_bytes, pack_into, unpack, words};
use super::{fetch, Format, RawTensor, Stored};
use crate::algo::{LayerResult, QuantConfig};
use crate::io::writer::Planned;
use crate::{Error, Result};

pub(super) fn check_config(s: &Stored, cfg: &QuantConfig) -> Result<()> {
    if ![2, 3, 4, 8].contains(&s.bits) {
        return Err(Error::config(
            "--bits",
            format!(
                "{}: {} stores 2, 3, 4 or 8 bits (transformers and vLLM refuse others)",
                s.bits,
                s.format.name()
            ),
        ));
    }
    if s.format == Format::Gptq && !cfg.sym {
        return Err(Error::config(
            "--asym",
            "gptq (v1) stores z − 1, which loaders decode differently when z = 0; \
             write asymmetric grids with --format gptq_v2 (or compressed-tensors)",
        ));
    }
    Ok(())
}

pub(super) fn check_linear(s: &Stored, name: &str, m: usize, d: usize) -> Result<()> {
    let per = 32 / gcd(32, s.bits as usize);
    for (what, n) in [("in_features", d), ("out_features", m)] {
        if n % per != 0 {
            return Err(Error::config(
                "--format",
                format!(
                    "{}: {name} has {what} {n}, not a multiple of {per}: {}-bit {} packs \
                     {per} values into whole 32-bit words",
                    s.format.name(),
                    s.bits,
                    s.format.name()
                ),
            ));
        }
    }
    Ok(())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn ngroups(s: &Stored, d: usize) -> usize {
    d.div_ceil(s.columns(d))
}

pub(super) fn plan(s: &Stored, name: &str, m: usize, d: usize, bias: bool) -> Vec<Planned> {
    let b = s.bits;
    let g = ngroups(s, d);
    let t = |suffix: &str, dtype, shape: Vec<usize>| Planned {
        name: format!("{name}.{suffix}"),
        dtype,
        shape,
    };
    let mut v = vec![
        t("qweight", Dtype::I32, vec![words(d, b), m]),
        t("qzeros", Dtype::I32, vec![g, words(m, b)]),
        t("scales", Dtype::F16, vec![g, m]),
        t("g_idx", Dtype::I32, vec![d]),
    ];
    if bias {
        v.push(t("bias", Dtype::F16, vec![m]));
    }
    v
}

/// v1 stores `z − 1`.
fn zero_offset(s: &Stored) -> u32 {
    (s.format == Format::Gptq) as u32
}

pub(super) fn encode(
    s: &Stored,
    name: &str,
    r: &LayerResult,
    bias: Option<RawTensor<'_>>,
) -> Result<Vec<Vec<u8>>> {
    let (m, d, g, b) = (r.m, r.d, r.ngroups, s.bits);
    assert_eq!(g, ngroups(s, d), "{name}: groups");
    let bad = |reason: String| Error::Tensor {
        path: std::path::PathBuf::new(),
        tensor: name.to_string(),
        reason,
    };
    // qweight [d·b/32, m]: column n is output row n's codes along the inputs
    let nw = words(d, b);
    let mut qweight = vec![0u32; nw * m];
    let mut col = vec![0u32; nw];
    for n in 0..m {
        pack_into(
            r.codes[n * d..(n + 1) * d].iter().map(|&c| c as u32),
            b,
            &mut col,
        );
        for (w, &x) in col.iter().enumerate() {
            qweight[w * m + n] = x;
        }
    }
    // qzeros [G, m·b/32], scales [G, m]
    let mut qzeros = vec![0u32; g * words(m, b)];
    let mut scales = Vec::with_capacity(g * m * 2);
    let off = zero_offset(s);
    for gi in 0..g {
        let zs = (0..m).map(|n| r.zeros[n * g + gi] as u32 - off);
        let nzw = words(m, b);
        pack_into(zs, b, &mut qzeros[gi * nzw..(gi + 1) * nzw]);
        for n in 0..m {
            let sc = r.scales[n * g + gi];
            let h = half::f16::from_f32(sc);
            if h.to_f32() != sc {
                return Err(bad(format!(
                    "scale {sc:e} is not an f16 value: the grid was not built for {}",
                    s.format.name()
                )));
            }
            scales.extend(h.to_le_bytes());
        }
    }
    let g_idx: Vec<u8> = r.g_idx.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = vec![le_bytes(&qweight), le_bytes(&qzeros), scales, g_idx];
    if let Some((dt, shape, bytes)) = bias {
        let v = crate::io::decode_float(dt, bytes)
            .ok_or_else(|| bad(format!("bias dtype {dt:?} {shape:?} is not a float")))?;
        out.push(
            v.iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect(),
        );
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
    let (b, g) = (s.bits, ngroups(s, d));
    let t = |suffix: &str, dtype, shape: &[usize]| fetch(get, name, suffix, dtype, shape);
    let qweight = from_le_bytes(t("qweight", Dtype::I32, &[words(d, b), m])?.2);
    let qzeros = from_le_bytes(t("qzeros", Dtype::I32, &[g, words(m, b)])?.2);
    let scales = t("scales", Dtype::F16, &[g, m])?.2;
    let g_idx = t("g_idx", Dtype::I32, &[d])?.2;
    let g_idx: Vec<usize> = g_idx
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    if let Some(k) = g_idx.iter().position(|&x| x >= g) {
        return Err(Error::Tensor {
            path: std::path::PathBuf::new(),
            tensor: format!("{name}.g_idx"),
            reason: format!("column {k} names group {}, of {g}", g_idx[k] as i32),
        });
    }
    let nzw = words(m, b);
    let off = zero_offset(s);
    let zeros: Vec<Vec<u32>> = (0..g)
        .map(|gi| {
            unpack(&qzeros[gi * nzw..(gi + 1) * nzw], b, m)
                .into_iter()
                .map(|z| z + off)
                .collect()
        })
        .collect();
    let scale = |gi: usize, n: usize| {
        let i = 2 * (gi * m + n);
        half::f16::from_le_bytes([scales[i], scales[i + 1]]).to_f32()
    };
    let nw = words(d, b);
    let mut w = vec![0f32; m * d];
    let mut col = vec![0u32; nw];
    for n in 0..m {
        for (k, x) in col.iter_mut().enumerate() {
            *x = qweight[k * m + n];
        }
        let codes = unpack(&col, b, d);
        for (k, &c) in codes.iter().enumerate() {
            let gi = g_idx[k];
            w[n * d + k] = scale(gi, n) * (c as f32 - zeros[gi][n] as f32);
        }
    }
    Ok(w)
}

pub(super) fn config_json(s: &Stored, cfg: &QuantConfig) -> Value {
    let fmt = s.format.name();
    let meta = json!({
        "quantizer": [super::quantizer_tag()],
        "method": cfg.method.name(),
        "clip": cfg.clip.name(),
        "static_groups": cfg.static_groups(),
        "true_sequential": true,
        "damp_percent": short(cfg.damp_percent),
        "qronos_alpha": short(cfg.qronos_alpha),
    });
    let mut q = json!({
        "quant_method": "gptq",
        "bits": s.bits,
        "group_size": s.group_size,
        "desc_act": s.desc_act,
        "sym": s.sym,
        "format": fmt,
        "checkpoint_format": fmt,
        "pack_dtype": "int32",
        "lm_head": false,
        "true_sequential": true,
        "static_groups": cfg.static_groups(),
    });
    // loaders refuse a damp_percent outside (0, 1); it only describes the run
    if cfg.damp_percent > 0.0 && cfg.damp_percent < 1.0 {
        q["damp_percent"] = json!(short(cfg.damp_percent));
    }
    q["meta"] = meta;
    q
}

/// An f32 as the shortest decimal that reads back to it (0.01, not 0.009999999776).
fn short(x: f32) -> f64 {
    x.to_string().parse().expect("a float's own digits")
}

pub(super) fn from_config(path: &std::path::Path, q: &Value) -> Result<Stored> {
    let key = |k: &str| format!("quantization_config.{k}");
    let bad = |k: &str, why: String| Error::model(path, key(k), why);
    let fmt = q
        .get("checkpoint_format")
        .or_else(|| q.get("format"))
        .and_then(Value::as_str)
        .unwrap_or("gptq");
    let format = match fmt {
        "gptq" => Format::Gptq,
        "gptq_v2" => Format::GptqV2,
        other => {
            return Err(bad(
                "checkpoint_format",
                format!("{other:?}: qronos reads gptq and gptq_v2"),
            ))
        }
    };
    let bits = q
        .get("bits")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("bits", "missing or not a number".into()))? as u32;
    if ![2, 3, 4, 8].contains(&bits) {
        return Err(bad(
            "bits",
            format!("{bits}: gptq stores 2, 3, 4 or 8 bits"),
        ));
    }
    let group_size = q
        .get("group_size")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("group_size", "missing or not a number".into()))?;
    if group_size == 0 || group_size < -1 {
        return Err(bad(
            "group_size",
            format!("{group_size}: must be -1 or positive"),
        ));
    }
    Ok(Stored {
        format,
        bits,
        group_size,
        sym: q.get("sym").and_then(Value::as_bool).unwrap_or(true),
        desc_act: q.get("desc_act").and_then(Value::as_bool).unwrap_or(false),
        scale_dtype: crate::grid::ScaleDtype::F16,
    })
}

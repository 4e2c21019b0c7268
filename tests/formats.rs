//! Checkpoint formats (issue 12): what we write must decode, by a decoder written here from
//! the format description (the layout GPTQModel / AutoGPTQ readers use, not the writer's own
//! unpacking code), to exactly the weights the pipeline produced; `qronos eval` must read
//! the folder to the same perplexity as the fake folder of the same quantization; and the
//! formats' refusals are errors before any work.

#[path = "common/models.rs"]
mod models;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use models::{model_dir, tiny_ppl as ppl, tmp, tokens, Collect};
use qronos::backend::cpu::CpuBackend;
use qronos::format::{Format, Stored};
use qronos::grid::{Clip, ScaleDtype};
use qronos::model::export::{copy_side_files, CheckpointWriter, Output, MAX_SHARD_BYTES};
use qronos::model::quantize::{quantize_model, FloatStream, PipelineConfig, Sink};
use qronos::model::ModelDir;
use qronos::{GroupSize, LayerResult, NoProgress, QuantConfig};

/// The dtype of a model's linear weights.
fn model_dtype(m: &ModelDir) -> ScaleDtype {
    match m.raw("model.layers.0.self_attn.q_proj.weight").unwrap().0 {
        safetensors::Dtype::BF16 => ScaleDtype::Bf16,
        safetensors::Dtype::F16 => ScaleDtype::F16,
        _ => ScaleDtype::F32,
    }
}

/// The pipeline's results on a tiny model with scales rounded for `format`.
fn quantize(m: &ModelDir, layer: QuantConfig, format: Format) -> Vec<(String, LayerResult)> {
    let layer = QuantConfig {
        scale_dtype: format.scale_dtype(model_dtype(m)),
        ..layer
    };
    let ids = tokens(4000, m.config.vocab_size as u32, 7);
    let windows = qronos::model::calib::windows(&ids, 8, 32, 0, "test tokens").unwrap();
    let cfg = PipelineConfig {
        layer,
        float_stream: FloatStream::Block,
        chunk_tokens: Some(128),
        act_bits: None,
        kv_bits: None,
        float_cache_bytes: None,
        stream_device_bytes: None,
    };
    let mut sink = Collect(Vec::new());
    quantize_model(
        &CpuBackend::new(),
        m,
        &windows,
        &cfg,
        &mut sink,
        &mut NoProgress,
    )
    .unwrap();
    sink.0
}

fn write(
    m: &ModelDir,
    dir: &Path,
    out: Output,
    cfg: &QuantConfig,
    shard: usize,
    rs: &[(String, LayerResult)],
) {
    std::fs::create_dir_all(dir).unwrap();
    let q = match out {
        Output::Packed(s) => s.config_entries(cfg),
        Output::Fake(_) => Vec::new(),
    };
    let dt = matches!(out, Output::Fake(_)).then_some("float32");
    copy_side_files(m, dir, dt, &q).unwrap();
    let mut w = CheckpointWriter::create(m, dir, out, shard).unwrap();
    for (name, r) in rs {
        let b: usize = name.split('.').nth(2).unwrap().parse().unwrap();
        w.linear(b, name, r).unwrap();
    }
    w.finish().unwrap();
}

/// A tiny model quantized for `format` with `cfg` (scales rounded for it), written as that
/// format and as the fake folder of the same results.
struct Written {
    m: ModelDir,
    rs: Vec<(String, LayerResult)>,
    cfg: QuantConfig,
    /// The packed folder and its tensors; the fake folder.
    dq: std::path::PathBuf,
    t: Tensors,
    df: std::path::PathBuf,
    what: String,
}

type Tensors = HashMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>;

fn written(model: &str, cfg: QuantConfig, format: Format) -> Written {
    let m = ModelDir::open(&model_dir(model)).unwrap();
    let rs = quantize(&m, cfg.clone(), format);
    let cfg = QuantConfig {
        scale_dtype: format.scale_dtype(model_dtype(&m)),
        ..cfg
    };
    let what = format!(
        "{model} {} b{} sym {} desc {}",
        format.name(),
        cfg.bits,
        cfg.sym,
        cfg.desc_act
    );
    let (dq, df) = (tmp(format.name()), tmp(&format!("{}-fake", format.name())));
    let packed = Output::Packed(Stored::new(format, &cfg));
    write(&m, &dq, packed, &cfg, MAX_SHARD_BYTES, &rs);
    let fake = Output::Fake(safetensors::Dtype::F32);
    write(&m, &df, fake, &cfg, MAX_SHARD_BYTES, &rs);
    let t = read_all(&dq);
    // the tensors that are not quantized linears are copied in their dtype
    for (n, v) in &read_all(&model_dir(model)) {
        let replaced =
            n.ends_with("_proj.weight") || (format.owns_bias() && n.ends_with("_proj.bias"));
        if !replaced {
            assert_eq!(&t[n], v, "{what}: {n} must be copied unchanged");
        }
    }
    Written {
        m,
        rs,
        cfg,
        dq,
        t,
        df,
        what,
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dq);
        let _ = std::fs::remove_dir_all(&self.df);
    }
}

/// Replace a folder's single weight file by `t`.
fn rewrite(dir: &Path, t: &Tensors) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = t
        .iter()
        .map(|(n, (dt, s, d))| {
            let v = safetensors::tensor::TensorView::new(*dt, s.clone(), d).unwrap();
            (n.clone(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

/// Every tensor of a folder's safetensors files, read with the `safetensors` crate.
fn read_all(dir: &Path) -> Tensors {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            let bytes = std::fs::read(&p).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            for (name, v) in st.tensors() {
                out.insert(name, (v.dtype(), v.shape().to_vec(), v.data().to_vec()));
            }
        }
    }
    out
}

fn words(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The codes of one packed column of `b`-bit values, decoded as GPTQ readers do: for 2, 4
/// and 8 bits `(word >> b·i) & mask` with `32/b` values per word; for 3 bits the
/// `10 | 1 | 10 | 1 | 10` layout of three words per 32 values (AutoGPTQ's pack).
fn gptq_codes(col: &[u32], b: u32, n: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(n);
    if b == 3 {
        for w in col.chunks(3) {
            let (a, bb, c) = (w[0], w[1], w[2]);
            for i in 0..10 {
                out.push((a >> (3 * i)) & 7);
            }
            out.push((a >> 30) | ((bb & 1) << 2));
            for i in 0..10 {
                out.push((bb >> (3 * i + 1)) & 7);
            }
            out.push((bb >> 31) | ((c & 3) << 1));
            for i in 0..10 {
                out.push((c >> (3 * i + 2)) & 7);
            }
        }
    } else {
        let per = 32 / b;
        for &w in col {
            for i in 0..per {
                out.push((w >> (b * i)) & ((1 << b) - 1));
            }
        }
    }
    out.truncate(n);
    out
}

/// Dequantize one GPTQ linear from the raw tensors: `w[n,k] = s[g,n]·(c[n,k] − z[g,n])`,
/// `g = g_idx[k]`, `z` = the stored field (+1 for v1).
fn gptq_decode(t: &Tensors, name: &str, b: u32, v1: bool) -> (Vec<f32>, usize, usize, Vec<u32>) {
    let qw = &t[&format!("{name}.qweight")];
    let qz = &t[&format!("{name}.qzeros")];
    let sc = &t[&format!("{name}.scales")];
    let gi = &t[&format!("{name}.g_idx")];
    assert_eq!(qw.0, safetensors::Dtype::I32);
    assert_eq!(qz.0, safetensors::Dtype::I32);
    assert_eq!(sc.0, safetensors::Dtype::F16);
    assert_eq!(gi.0, safetensors::Dtype::I32);
    let (rows, m) = (qw.1[0], qw.1[1]);
    let d = gi.1[0];
    let g = sc.1[0];
    assert_eq!(rows * 32, d * b as usize, "{name}: qweight rows");
    let qw = words(&qw.2);
    let qzw = words(&qz.2);
    let zw_per_row = qz.1[1];
    let g_idx: Vec<usize> = words(&gi.2).into_iter().map(|x| x as usize).collect();
    let scale = |gg: usize, n: usize| {
        let i = 2 * (gg * m + n);
        half::f16::from_le_bytes([sc.2[i], sc.2[i + 1]]).to_f32()
    };
    let zeros: Vec<Vec<u32>> = (0..g)
        .map(|gg| {
            gptq_codes(&qzw[gg * zw_per_row..(gg + 1) * zw_per_row], b, m)
                .into_iter()
                .map(|z| z + v1 as u32)
                .collect()
        })
        .collect();
    let mut w = vec![0f32; m * d];
    for n in 0..m {
        let col: Vec<u32> = (0..rows).map(|r| qw[r * m + n]).collect();
        for (k, c) in gptq_codes(&col, b, d).into_iter().enumerate() {
            let gg = g_idx[k];
            w[n * d + k] = scale(gg, n) * (c as f32 - zeros[gg][n] as f32);
        }
    }
    (w, m, d, qzw)
}

fn layer(bits: u32, sym: bool, group: usize, desc_act: bool) -> QuantConfig {
    QuantConfig {
        bits,
        sym,
        group_size: GroupSize::Columns(group),
        act_order: !desc_act,
        desc_act,
        clip: if desc_act {
            Clip::MinMax
        } else {
            Clip::HessianMse
        },
        ..QuantConfig::default()
    }
}

/// GPTQ v1 and v2, sym and asym, 2/3/4/8 bits, contiguous and permuted groups, with and
/// without biases: the independent decoder gives the pipeline's weights bit for bit, sym
/// zero points are the known constant words, scales are F16, and `qronos eval` gives the
/// fake folder's perplexity exactly (both hold the same f32 weights).
#[test]
fn gptq_folders_decode_exactly_and_evaluate_like_fake() {
    let cases = [
        ("llama3-rope", Format::Gptq, layer(4, true, 32, false)),
        ("llama-bias", Format::Gptq, layer(3, true, 32, false)),
        ("qwen2", Format::GptqV2, layer(4, false, 32, false)),
        ("llama3-rope", Format::GptqV2, layer(2, true, 16, true)),
        ("mistral", Format::Gptq, layer(8, true, 64, false)),
    ];
    for (model, format, cfg) in cases {
        let w = written(model, cfg, format);
        let Written {
            m,
            rs,
            cfg,
            dq,
            df,
            t,
            what,
        } = &w;
        let b = cfg.bits;
        for (name, r) in rs {
            assert!(
                !t.contains_key(&format!("{name}.weight")),
                "{what}: {name}.weight left"
            );
            let (w, m_, d_, qz) = gptq_decode(t, name, b, format == Format::Gptq);
            assert_eq!((m_, d_), (r.m, r.d));
            let bad = (0..w.len())
                .filter(|&i| w[i].to_bits() != r.q[i].to_bits())
                .count();
            assert_eq!(bad, 0, "{what} {name}: {bad} weights decode differently");
            if cfg.sym {
                let want: &[u32] = match (b, format == Format::Gptq) {
                    (4, true) => &[0x7777_7777],
                    (4, false) => &[0x8888_8888],
                    (3, true) => &[0xDB6D_B6DB, 0xB6DB_6DB6, 0x6DB6_DB6D],
                    (2, true) => &[0x5555_5555],
                    (2, false) => &[0xAAAA_AAAA],
                    (8, true) => &[0x7F7F_7F7F],
                    _ => unreachable!(),
                };
                let row = qz.len() / r.ngroups;
                for (i, &x) in qz.iter().enumerate() {
                    assert_eq!(
                        x,
                        want[(i % row) % want.len()],
                        "{what} {name}: qzeros word {i}"
                    );
                }
            }
            // trivial g_idx with static contiguous groups, permuted with desc_act
            let gi = words(&t[&format!("{name}.g_idx")].2);
            let trivial = gi
                .iter()
                .enumerate()
                .all(|(k, &g)| g as usize == k / 32.min(r.d));
            if !cfg.desc_act && cfg.group_size == GroupSize::Columns(32) {
                assert!(trivial, "{what} {name}: g_idx must be k / g");
            }
            if let Some(bias) = t.get(&format!("{name}.bias")) {
                assert_eq!(bias.0, safetensors::Dtype::F16, "{what}: bias dtype");
            }
        }
        let cfgj: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dq.join("config.json")).unwrap())
                .unwrap();
        let q = &cfgj["quantization_config"];
        assert_eq!(q["quant_method"], "gptq");
        assert_eq!(q["checkpoint_format"], format.name());
        assert_eq!(q["format"], format.name());
        assert_eq!(q["bits"], b);
        assert_eq!(q["sym"], cfg.sym);
        assert_eq!(q["desc_act"], cfg.desc_act);
        assert!(q["meta"]["quantizer"][0]
            .as_str()
            .unwrap()
            .starts_with("qronos:"));
        assert!(dq.join("quantize_config.json").exists());
        // the same f32 weights: the same perplexity, bit for bit; GPTQ stores biases in F16
        // (what its loaders use), so a model with biases moves by that rounding only
        let (pq, pf) = (ppl(dq), ppl(df));
        let biased = m.config.qkv_bias || m.config.o_bias || m.config.mlp_bias;
        if biased {
            assert!(
                (pq - pf).abs() <= 1e-4 * pf,
                "{what}: ppl {pq} (gptq) vs {pf} (fake)"
            );
        } else {
            assert_eq!(
                pq.to_bits(),
                pf.to_bits(),
                "{what}: ppl {pq} (gptq) vs {pf} (fake)"
            );
        }
    }
}

/// Shards of at most N bytes with an index; the folder evaluates like the single file.
#[test]
fn sharded_output_has_an_index_and_reads_back() {
    let m = ModelDir::open(&model_dir("llama3-rope")).unwrap();
    let cfg = layer(4, true, 32, false);
    let rs = quantize(&m, cfg.clone(), Format::Gptq);
    let s = Stored::new(Format::Gptq, &cfg);
    let (one, many) = (tmp("one"), tmp("many"));
    write(&m, &one, Output::Packed(s), &cfg, MAX_SHARD_BYTES, &rs);
    write(&m, &many, Output::Packed(s), &cfg, 40_000, &rs);
    let files: Vec<String> = std::fs::read_dir(&many)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        assert!(f.starts_with("model-0000") && f.contains("-of-0000"), "{f}");
        let bytes = std::fs::read(many.join(f)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let data: usize = st.tensors().iter().map(|(_, v)| v.data().len()).sum();
        assert!(
            data <= 40_000 || st.len() == 1,
            "{f}: {data} bytes in {} tensors",
            st.len()
        );
    }
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(many.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        index["weight_map"].as_object().unwrap().len(),
        read_all(&one).len()
    );
    assert_eq!(read_all(&one), read_all(&many));
    assert_eq!(ppl(&one).to_bits(), ppl(&many).to_bits());
    let _ = std::fs::remove_dir_all(&one);
    let _ = std::fs::remove_dir_all(&many);
}

/// A scale the grid did not round for the format is an error, not a silent rounding.
#[test]
fn unrounded_scales_are_refused() {
    let m = ModelDir::open(&model_dir("llama3-rope")).unwrap();
    let cfg = layer(4, true, 32, false);
    let rs = quantize(&m, cfg.clone(), Format::Fake); // f32 scales
    assert_eq!(Format::Fake.scale_dtype(ScaleDtype::Bf16), ScaleDtype::F32);
    let dir = tmp("unrounded");
    std::fs::create_dir_all(&dir).unwrap();
    let mut w = CheckpointWriter::create(
        &m,
        &dir,
        Output::Packed(Stored::new(Format::Gptq, &cfg)),
        MAX_SHARD_BYTES,
    )
    .unwrap();
    let (name, r) = &rs[0];
    let e = w.linear(0, name, r).unwrap_err().to_string();
    assert!(e.contains("f16"), "{e}");
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
}

fn qronos(args: &[&str]) -> (bool, String) {
    let r = Command::new(env!("CARGO_BIN_EXE_qronos"))
        .args(args)
        .output()
        .unwrap();
    (
        r.status.success(),
        String::from_utf8_lossy(&r.stderr).to_string(),
    )
}

/// `qronos quantize` of `model` on 2 × 32 tokens of `calib` into `out`, on the CPU, quiet.
fn quantize_cli(model: &Path, calib: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let mut a = vec![
        "quantize",
        "--model",
        model.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--nsamples",
        "2",
        "--seqlen",
        "32",
        "--device",
        "cpu",
        "--quiet",
    ];
    a.extend_from_slice(extra);
    qronos(&a)
}

/// `qronos eval` of folder `model` on `data` (seqlen 32, CPU).
fn eval_cli(model: &Path, data: &Path) -> (bool, String) {
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    qronos(&[
        "eval", "--model", m, "--data", d, "--seqlen", "32", "--device", "cpu",
    ])
}

/// The formats' refusals, up front, with the flag and a way out, and no output folder.
#[test]
fn format_refusals_are_clear_errors() {
    let dir = tmp("refuse");
    std::fs::create_dir_all(&dir).unwrap();
    let calib = dir.join("calib.txt");
    std::fs::write(&calib, "the whale and the sea ".repeat(400)).unwrap();
    let model = model_dir("llama3-rope");
    let out = dir.join("out");
    let base = |extra: &[&str]| quantize_cli(&model, &calib, &out, extra);
    for (extra, want) in [
        (&["--format", "gptq", "--asym"][..], "gptq_v2"),
        (&["--format", "gptq", "--bits", "5"][..], "--bits"),
        (&["--format", "gptq_v2", "--dtype", "bf16"][..], "--dtype"),
    ] {
        let (ok, err) = base(extra);
        assert!(!ok, "{extra:?} must fail");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "{extra:?}: no output folder");
    }
    // a layer whose width the packing cannot hold names the layer
    let s = Stored::new(Format::Gptq, &layer(3, true, 32, false));
    let e = s
        .check_linear("model.layers.0.mlp.down_proj", 64, 48)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.layers.0.mlp.down_proj") && e.contains("48"),
        "{e}"
    );
    // the default format (gptq) is byte-deterministic
    let mut files = Vec::new();
    for _ in 0..2 {
        let (ok, err) = base(&[]);
        assert!(ok, "{err}");
        files.push(std::fs::read(out.join("model.safetensors")).unwrap());
        let c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(c["quantization_config"]["checkpoint_format"], "gptq");
        std::fs::remove_dir_all(&out).unwrap();
    }
    assert!(files[0] == files[1], "two runs wrote different bytes");
    // and the CLI writes a folder that `qronos eval` reads
    let (ok, err) = base(&["--format", "gptq_v2", "--asym"]);
    assert!(ok, "{err}");
    let (ok, err) = eval_cli(&out, &calib);
    assert!(ok, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// compressed-tensors pack-quantized: decoded here from the format description (each output
/// row a stream of `32/b` codes per word, zero points packed along the outputs per group),
/// bit for bit the pipeline's weights; scales in the model's dtype; biases kept as they are,
/// so the folder evaluates exactly like the fake one.
#[test]
fn compressed_tensors_folders_decode_exactly_and_evaluate_like_fake() {
    let cases = [
        ("llama3-rope", layer(4, true, 32, false)),
        ("llama-bf16", layer(4, false, 32, false)),
        ("llama-bias", layer(8, true, 16, false)),
        ("qwen2", layer(2, false, 32, false)),
    ];
    for (model, cfg) in cases {
        let w = written(model, cfg, Format::CompressedTensors);
        let Written {
            m,
            rs,
            cfg,
            dq,
            df,
            t,
            what,
        } = &w;
        let b = cfg.bits;
        let per = (32 / b) as usize;
        for (name, r) in rs {
            let wp = &t[&format!("{name}.weight_packed")];
            let ws = &t[&format!("{name}.weight_scale")];
            let sh = &t[&format!("{name}.weight_shape")];
            assert_eq!(wp.0, safetensors::Dtype::I32);
            assert_eq!(sh.0, safetensors::Dtype::I64);
            let shape: Vec<i64> =
                sh.2.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
            assert_eq!(
                shape,
                vec![r.m as i64, r.d as i64],
                "{what} {name}: weight_shape"
            );
            let want_dt = match model_dtype(m) {
                ScaleDtype::Bf16 => safetensors::Dtype::BF16,
                ScaleDtype::F16 => safetensors::Dtype::F16,
                ScaleDtype::F32 => safetensors::Dtype::F32,
            };
            assert_eq!(ws.0, want_dt, "{what} {name}: scale dtype is the model's");
            let g = ws.1[1];
            let gs = r.d / g;
            let scales = qronos::io::decode_float(ws.0, &ws.2).unwrap();
            let packed = words(&wp.2);
            let row = wp.1[1];
            let zeros: Vec<u32> = if cfg.sym {
                vec![1 << (b - 1); r.m * g]
            } else {
                let zp = &t[&format!("{name}.weight_zero_point")];
                let zw = words(&zp.2);
                let mut z = vec![0u32; r.m * g];
                for n in 0..r.m {
                    for gi in 0..g {
                        let word = zw[(n / per) * g + gi];
                        z[n * g + gi] = (word >> (b as usize * (n % per))) & ((1 << b) - 1);
                    }
                }
                z
            };
            let mut bad = 0;
            for n in 0..r.m {
                for k in 0..r.d {
                    let word = packed[n * row + k / per];
                    let c = (word >> (b as usize * (k % per))) & ((1 << b) - 1);
                    let i = n * g + k / gs;
                    let w = scales[i] * (c as f32 - zeros[i] as f32);
                    bad += (w.to_bits() != r.q[n * r.d + k].to_bits()) as usize;
                }
            }
            assert_eq!(bad, 0, "{what} {name}: {bad} weights decode differently");
        }
        let c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dq.join("config.json")).unwrap())
                .unwrap();
        let q = &c["quantization_config"];
        assert_eq!(q["quant_method"], "compressed-tensors");
        assert_eq!(q["format"], "pack-quantized");
        assert_eq!(q["quantization_status"], "compressed");
        assert_eq!(q["config_groups"]["group_0"]["weights"]["num_bits"], b);
        assert_eq!(
            q["config_groups"]["group_0"]["weights"]["symmetric"],
            cfg.sym
        );
        let (pq, pf) = (ppl(dq), ppl(df));
        assert_eq!(
            pq.to_bits(),
            pf.to_bits(),
            "{what}: ppl {pq} (ct) vs {pf} (fake)"
        );
    }
}

/// compressed-tensors refusals: 3 bits, --desc-act, and a group that does not divide a
/// layer's inputs (named, with a group size that works).
#[test]
fn compressed_tensors_refusals() {
    let ct = |cfg: &QuantConfig| Stored::new(Format::CompressedTensors, cfg);
    let e = ct(&layer(3, true, 32, false)).check_config(&layer(3, true, 32, false));
    assert!(e.unwrap_err().to_string().contains("--bits"));
    let e = ct(&layer(4, true, 32, true)).check_config(&layer(4, true, 32, true));
    assert!(e.unwrap_err().to_string().contains("--desc-act"));
    let s = ct(&layer(4, true, 128, false));
    let e = s
        .check_linear("model.layers.0.self_attn.q_proj", 576, 576)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.layers.0.self_attn.q_proj") && e.contains("--group-size 64"),
        "{e}"
    );
    assert!(s
        .check_linear("model.layers.0.mlp.down_proj", 576, 1536)
        .is_ok());
}

/// The codes of one MLX row read as mlx's CPU kernel reads them (`extract_bits`): the
/// little-endian bytes of the U32 words as one LSB-first bit stream, value `j` at stream
/// bits `[j·b, (j+1)·b)` (3 bits: 8 values per 3 bytes; 5: 8 per 5; 6: 4 per 3).
fn mlx_codes(bytes: &[u8], b: usize, n: usize) -> Vec<u32> {
    (0..n)
        .map(|j| {
            (0..b)
                .map(|i| {
                    let bit = j * b + i;
                    (((bytes[bit / 8] >> (bit % 8)) & 1) as u32) << i
                })
                .sum()
        })
        .collect()
}

/// The bytes of U32 words in a safetensors file.
fn le(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// mlx affine: decoded here as mlx's kernels do (`w = scales · q + biases` in f32 from the
/// byte stream), bit for bit the pipeline's weights for 2, 3, 4, 5, 6, 8 bits, sym and asym,
/// f32 / bf16 / f16 models, with biases; scales and biases in the model's dtype (sym; bf16
/// for an f32 model) or f32 (asym); `config.json` has `quantization` and its copy; the
/// folder evaluates exactly like the fake one, and also with one layer left float (no
/// `.scales`), which mlx-lm reads as a float module.
#[test]
fn mlx_folders_decode_exactly_and_evaluate_like_fake() {
    // the packer vectors of mlx's own `pack_and_quantize`, read back by this decoder
    let vecs: [(usize, &[u32], Vec<u32>); 4] = [
        (4, &[0x7654_3210], (0..8).collect()),
        (
            3,
            &[0x88FA_C688, 0xC688_FAC6, 0xFAC6_88FA],
            (0..8).cycle().take(32).collect(),
        ),
        (
            6,
            &[0x440C_2040, 0xA248_1C61, 0x3CE3_4C2C],
            (0..16).collect(),
        ),
        (
            5,
            &[
                0x8A41_8820,
                0xC5A9_2839,
                0xCA30_7B9A,
                0x38BD_AB49,
                0xFFBB_CDEB,
            ],
            (0..32).collect(),
        ),
    ];
    for (b, w, want) in vecs {
        assert_eq!(mlx_codes(&le(w), b, want.len()), want, "{b}-bit vector");
    }
    let cases = [
        ("llama3-rope", layer(4, true, 32, false)),
        ("llama-bf16", layer(3, false, 32, false)),
        ("llama-f16", layer(5, true, 32, false)),
        ("qwen2", layer(6, false, 32, false)),
        ("llama-bias", layer(8, true, 32, false)),
        ("qwen3", layer(2, true, 32, false)),
    ];
    for (model, cfg) in cases {
        let w = written(model, cfg, Format::Mlx);
        let Written {
            m,
            rs,
            cfg,
            dq,
            df,
            t,
            what,
        } = &w;
        let b = cfg.bits as usize;
        let want_dt = match (cfg.sym, model_dtype(m)) {
            (false, _) => safetensors::Dtype::F32,
            (true, ScaleDtype::F16) => safetensors::Dtype::F16,
            (true, _) => safetensors::Dtype::BF16,
        };
        for (name, r) in rs {
            let wt = &t[&format!("{name}.weight")];
            let sc = &t[&format!("{name}.scales")];
            let bi = &t[&format!("{name}.biases")];
            assert_eq!(wt.0, safetensors::Dtype::U32, "{what} {name}");
            assert_eq!(wt.1, vec![r.m, r.d * b / 32], "{what} {name}: weight shape");
            assert_eq!(sc.1, vec![r.m, r.d / 32], "{what} {name}: scales shape");
            assert_eq!(bi.1, sc.1, "{what} {name}: biases shape");
            assert_eq!((sc.0, bi.0), (want_dt, want_dt), "{what} {name}: dtypes");
            let scales = qronos::io::decode_float(sc.0, &sc.2).unwrap();
            let biases = qronos::io::decode_float(bi.0, &bi.2).unwrap();
            let row = wt.1[1] * 4;
            let mut bad = 0;
            for n in 0..r.m {
                let codes = mlx_codes(&wt.2[n * row..(n + 1) * row], b, r.d);
                for (k, &c) in codes.iter().enumerate() {
                    let i = n * (r.d / 32) + k / 32;
                    let w = scales[i] * c as f32 + biases[i];
                    bad += (w.to_bits() != r.q[n * r.d + k].to_bits()) as usize;
                }
            }
            assert_eq!(bad, 0, "{what} {name}: {bad} weights decode differently");
            if cfg.sym {
                for (s, bb) in scales.iter().zip(&biases) {
                    assert_eq!(*bb, -s * (1 << (b - 1)) as f32, "{what} {name}: sym bias");
                }
            }
        }
        let c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dq.join("config.json")).unwrap())
                .unwrap();
        let q = &c["quantization"];
        assert_eq!(
            q,
            &serde_json::json!({"group_size": 32, "bits": b, "mode": "affine"}),
            "{what}"
        );
        assert_eq!(
            &c["quantization_config"], q,
            "{what}: mlx-lm writes the copy"
        );
        let (pq, pf) = (ppl(dq), ppl(df));
        assert_eq!(
            pq.to_bits(),
            pf.to_bits(),
            "{what}: ppl {pq} (mlx) vs {pf} (fake)"
        );
        if model == "llama3-rope" {
            // one layer float, as mlx-lm leaves a module it cannot quantize
            let (name, r) = &rs[0];
            let mut t = t.clone();
            t.retain(|n, _| !n.starts_with(&format!("{name}.")));
            let w: Vec<u8> = r.q.iter().flat_map(|v| v.to_le_bytes()).collect();
            let f32 = safetensors::Dtype::F32;
            t.insert(format!("{name}.weight"), (f32, vec![r.m, r.d], w));
            rewrite(dq, &t);
            assert_eq!(
                ppl(dq).to_bits(),
                pf.to_bits(),
                "{what}: {name} float, the rest mlx"
            );
            // and the (tied) embedding quantized as mlx-lm does it: 4-bit affine, g32, bf16
            // scales and biases, packed here; the fake folder gets the same dequantized values
            let e = "model.embed_tokens";
            let (_, shape, bytes) = t[&format!("{e}.weight")].clone();
            let (rows, cols) = (shape[0], shape[1]);
            let x = qronos::io::decode_float(safetensors::Dtype::F32, &bytes).unwrap();
            let bf = |v: f32| half::bf16::from_f32(v);
            let (mut packed, mut sc, mut bi, mut deq) = (
                vec![0u8; rows * cols / 2],
                vec![],
                vec![],
                vec![0f32; rows * cols],
            );
            for r in 0..rows {
                for g in 0..cols / 32 {
                    let grp = &x[r * cols + g * 32..r * cols + g * 32 + 32];
                    let (lo, hi) = grp
                        .iter()
                        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                    let s = bf(((hi - lo) / 15.0).max(1e-6));
                    let b = bf(lo);
                    sc.extend(s.to_le_bytes());
                    bi.extend(b.to_le_bytes());
                    for (k, &v) in grp.iter().enumerate() {
                        let q = ((v - b.to_f32()) / s.to_f32()).round().clamp(0.0, 15.0) as u8;
                        let j = r * cols + g * 32 + k;
                        packed[j / 2] |= q << (4 * (j % 2));
                        deq[j] = s.to_f32() * q as f32 + b.to_f32();
                    }
                }
            }
            let u32t = safetensors::Dtype::U32;
            let bf16 = safetensors::Dtype::BF16;
            t.insert(format!("{e}.weight"), (u32t, vec![rows, cols / 8], packed));
            t.insert(
                format!("{e}.scales"),
                (bf16, vec![rows, cols / 32], sc.clone()),
            );
            t.insert(format!("{e}.biases"), (bf16, vec![rows, cols / 32], bi));
            rewrite(dq, &t);
            let mut tf = read_all(df);
            let f32b: Vec<u8> = deq.iter().flat_map(|v| v.to_le_bytes()).collect();
            tf.insert(
                format!("{e}.weight"),
                (safetensors::Dtype::F32, shape.clone(), f32b),
            );
            rewrite(df, &tf);
            assert_eq!(
                ppl(dq).to_bits(),
                ppl(df).to_bits(),
                "{what}: a quantized embedding (and tied head)"
            );
        }
    }
}

/// mlx refusals: 7 bits, groups mlx does not take, --desc-act, a group that does not divide
/// a layer's inputs (named, with a group size that works), from the CLI with no output; and
/// folders whose tensors do not fit the format, named on open.
#[test]
fn mlx_refusals() {
    let mlx = |cfg: &QuantConfig| Stored::new(Format::Mlx, cfg);
    for (cfg, flag) in [
        (layer(7, true, 32, false), "--bits"),
        (layer(4, true, 16, false), "--group-size"),
        (layer(4, true, 256, false), "--group-size"),
        (layer(4, true, 32, true), "--desc-act"),
    ] {
        let e = mlx(&cfg).check_config(&cfg).unwrap_err().to_string();
        assert!(e.contains(flag), "{e}");
    }
    let per_row = QuantConfig {
        group_size: GroupSize::PerChannel,
        ..layer(4, true, 32, false)
    };
    let e = mlx(&per_row).check_config(&per_row).unwrap_err();
    assert!(e.to_string().contains("--group-size"), "{e}");
    let s = mlx(&layer(4, true, 128, false));
    let e = s
        .check_linear("model.layers.0.self_attn.q_proj", 576, 576)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.layers.0.self_attn.q_proj") && e.contains("--group-size 64"),
        "{e}"
    );
    assert!(s
        .check_linear("model.layers.0.mlp.down_proj", 576, 1536)
        .is_ok());
    // from the CLI: the tiny model's down_proj has 96 inputs, which g64 does not divide
    let dir = tmp("mlx-refuse");
    std::fs::create_dir_all(&dir).unwrap();
    let calib = dir.join("calib.txt");
    std::fs::write(&calib, "the whale and the sea ".repeat(400)).unwrap();
    let model = model_dir("llama3-rope");
    let out = dir.join("out");
    for (extra, want) in [
        (&["--group-size", "64"][..], "down_proj"),
        // the mlx default group is mlx-lm's 64, which the tiny model's 96 inputs refuse
        (&[][..], "64: mlx needs the group to divide"),
        (&["--bits", "7"][..], "--bits"),
        (&["--desc-act"][..], "--desc-act"),
    ] {
        let extra = [&["--format", "mlx"][..], extra].concat();
        let (ok, err) = quantize_cli(&model, &calib, &out, &extra);
        assert!(!ok, "{extra:?} must fail");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "{extra:?}: no output folder");
    }
    // the CLI writes an mlx folder that `qronos eval` reads
    let mlx32 = ["--format", "mlx", "--group-size", "32"];
    let (ok, err) = quantize_cli(&model, &calib, &out, &mlx32);
    assert!(ok, "{err}");
    let (ok, err) = eval_cli(&out, &calib);
    assert!(ok, "{err}");
    // a quantized folder is not an input for quantize (no panic, no output)
    let again = dir.join("again");
    let (ok, err) = quantize_cli(&out, &calib, &again, &mlx32);
    assert!(!ok && err.contains("already a mlx checkpoint"), "{err}");
    assert!(!err.contains("panicked") && !again.exists(), "{err}");
    // `quantization: null` is a float model, as in mlx-lm
    let float = dir.join("float");
    std::fs::create_dir_all(&float).unwrap();
    for f in std::fs::read_dir(&model).unwrap().flatten() {
        std::fs::copy(f.path(), float.join(f.file_name())).unwrap();
    }
    let cpath = float.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cpath).unwrap()).unwrap();
    c["quantization"] = serde_json::Value::Null;
    std::fs::write(&cpath, c.to_string()).unwrap();
    assert!(ModelDir::open(&float).is_ok_and(|m| m.quant.is_none()));
    // a folder whose scales do not fit its weight: named on open
    let name = "model.layers.1.mlp.down_proj";
    let mut t = read_all(&out);
    let (dt, mut shape, bytes) = t.remove(&format!("{name}.scales")).unwrap();
    shape[1] -= 1;
    let cut = bytes[..shape[0] * shape[1] * (dt.bitsize() / 8)].to_vec();
    t.insert(format!("{name}.scales"), (dt, shape, cut));
    rewrite(&out, &t);
    let e = match ModelDir::open(&out) {
        Ok(_) => panic!("a cut scales tensor must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains(&format!("{name}.scales")) && e.contains("model.safetensors"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

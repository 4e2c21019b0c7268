//! `qronos quantize` end to end on the tiny random models: the written folder is a model that
//! loads and evaluates, every linear is on its grid, the rest is copied unchanged, two runs
//! give identical bytes, the GPU path agrees with the CPU path, and bad input leaves no
//! output folder.

#[path = "common/models.rs"]
mod models;

#[path = "common/gpu.rs"]
mod gpu_common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use models::{model_dir, tmp, tokens, Collect};
use qronos::backend::cpu::CpuBackend;
use qronos::backend::Forward;
use qronos::model::eval::{perplexity, EvalConfig, Protocol};
use qronos::model::quantize::{quantize_model, FloatStream, PipelineConfig, PipelineReport, Sink};
use qronos::model::ModelDir;
use qronos::{LayerResult, NoProgress, QuantConfig};

fn run<B: Forward>(
    be: &B,
    m: &ModelDir,
    fs: FloatStream,
    layer: QuantConfig,
) -> (PipelineReport, Vec<(String, LayerResult)>) {
    run_with(be, m, fs, layer, |_| {})
}

fn run_with<B: Forward>(
    be: &B,
    m: &ModelDir,
    fs: FloatStream,
    layer: QuantConfig,
    tweak: impl Fn(&mut PipelineConfig),
) -> (PipelineReport, Vec<(String, LayerResult)>) {
    let ids = tokens(4000, m.config.vocab_size as u32, 7);
    let windows = qronos::model::calib::windows(&ids, 8, 32, 0, "test tokens").unwrap();
    let mut cfg = PipelineConfig {
        layer,
        float_stream: fs,
        chunk_tokens: Some(128),
        act_bits: None,
        kv_bits: None,
        float_cache_bytes: None,
        stream_device_bytes: None,
    };
    tweak(&mut cfg);
    let mut sink = Collect(Vec::new());
    let rep = quantize_model(be, m, &windows, &cfg, &mut sink, &mut NoProgress).unwrap();
    (rep, sink.0)
}

/// The CLI's defaults (act-order, static groups, Hessian-weighted clipping), group 32.
fn w4() -> QuantConfig {
    QuantConfig {
        bits: 4,
        group_size: qronos::GroupSize::Columns(32),
        act_order: true,
        clip: qronos::grid::Clip::HessianMse,
        ..QuantConfig::default()
    }
}

#[test]
fn every_linear_is_quantized_in_true_sequential_order() {
    let m = ModelDir::open(&model_dir("qwen3")).unwrap();
    let (rep, got) = run(&CpuBackend::new(), &m, FloatStream::Block, w4());
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    let mut want = Vec::new();
    for b in 0..2 {
        for p in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
        ] {
            want.push(format!("model.layers.{b}.{p}"));
        }
        for p in ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"] {
            want.push(format!("model.layers.{b}.{p}"));
        }
    }
    assert_eq!(names, want);
    assert_eq!(rep.linears.len(), 14);
    for (name, r) in &got {
        // on the grid: q = s·(c − z) exactly, codes in range
        for i in 0..r.m {
            for j in 0..r.d {
                let g = r.g_idx[j] as usize;
                let (s, z) = (r.scales[i * r.ngroups + g], r.zeros[i * r.ngroups + g]);
                let c = r.codes[i * r.d + j];
                assert!((0..16).contains(&c), "{name}: code {c}");
                assert_eq!(r.q[i * r.d + j], s * (c as f32 - z), "{name}: ({i},{j})");
            }
        }
        let o = r.objective.expect("exact objectives");
        assert!(
            o.mismatched.is_finite() && o.mismatched < 0.5,
            "{name}: {o:?}"
        );
    }
    // q/k/v under the block rule see X̃ = X: mismatched == standard
    let q0 = &rep.linears[0];
    let o = q0.objective.unwrap();
    assert!((o.mismatched - o.standard).abs() < 1e-9, "{o:?}");
    // later groups see the quantized q/k/v: X̃ ≠ X
    let o = rep.linears[3].objective.unwrap();
    assert!((o.mismatched - o.standard).abs() > 1e-6, "o_proj: {o:?}");
}

#[test]
fn the_float_stream_mode_changes_the_calibration() {
    let m = ModelDir::open(&model_dir("llama3-rope")).unwrap();
    let (a, _) = run(&CpuBackend::new(), &m, FloatStream::Block, w4());
    let (b, _) = run(&CpuBackend::new(), &m, FloatStream::Model, w4());
    // identical in block 0's q/k/v (nothing upstream is quantized yet) ...
    let (oa, ob) = (
        a.linears[0].objective.unwrap(),
        b.linears[0].objective.unwrap(),
    );
    assert!((oa.mismatched - ob.mismatched).abs() < 1e-9);
    // ... different in block 1, where the float stream carries block 0's float output
    let (oa, ob) = (
        a.linears[7].objective.unwrap(),
        b.linears[7].objective.unwrap(),
    );
    assert!(
        (oa.mismatched - ob.mismatched).abs() > 1e-6,
        "block 1 q_proj: {oa:?} vs {ob:?}"
    );
}

/// Keeping the float block's inputs (one forward per chunk) or recomputing them for every
/// group gives the same bits, in both float-stream modes.
#[test]
fn the_float_input_cache_changes_nothing() {
    let m = ModelDir::open(&model_dir("llama3-rope")).unwrap();
    for fs in [FloatStream::Block, FloatStream::Model] {
        let (_, a) = run(&CpuBackend::new(), &m, fs, w4());
        let (_, b) = run_with(&CpuBackend::new(), &m, fs, w4(), |c| {
            c.float_cache_bytes = Some(0)
        });
        for ((na, ra), (_, rb)) in a.iter().zip(&b) {
            assert!(
                ra.q == rb.q,
                "{fs:?} {na}: cached and recomputed inputs differ"
            );
        }
    }
}

/// Streams over the device budget live in host memory, one chunk uploaded at a time: the
/// same bits as resident streams, in both float-stream modes (GPU: `gpu_pipeline_agrees_with_cpu`).
#[test]
fn host_memory_streams_change_nothing() {
    let m = ModelDir::open(&model_dir("llama3-rope")).unwrap();
    for fs in [FloatStream::Block, FloatStream::Model] {
        let (ra, a) = run(&CpuBackend::new(), &m, fs, w4());
        let (rb, b) = run_with(&CpuBackend::new(), &m, fs, w4(), |c| {
            c.stream_device_bytes = Some(1 << 10)
        });
        assert!(!ra.streams_on_host && rb.streams_on_host);
        for ((na, ra), (_, rb)) in a.iter().zip(&b) {
            assert!(
                ra.q == rb.q,
                "{fs:?} {na}: host and resident streams differ"
            );
        }
    }
}

/// `--act-bits` / `--kv-bits`: the quantized stream's linear inputs (and K, V) are
/// fake-quantized, so even block 0's q/k/v see X̃ ≠ X, and coarser activations cost more.
#[test]
fn activation_and_kv_quantization_reach_the_quantized_stream() {
    let m = ModelDir::open(&model_dir("llama3-rope")).unwrap();
    let ids = tokens(4000, m.config.vocab_size as u32, 7);
    let windows = qronos::model::calib::windows(&ids, 8, 32, 0, "test tokens").unwrap();
    let mut mean = Vec::new();
    for (act, kv) in [(None, None), (Some(8), None), (Some(4), Some(4))] {
        let cfg = PipelineConfig {
            layer: w4(),
            float_stream: FloatStream::Block,
            chunk_tokens: Some(128),
            act_bits: act,
            kv_bits: kv,
            float_cache_bytes: None,
            stream_device_bytes: None,
        };
        let mut sink = Collect(Vec::new());
        let rep = quantize_model(
            &CpuBackend::new(),
            &m,
            &windows,
            &cfg,
            &mut sink,
            &mut NoProgress,
        )
        .unwrap();
        let o = rep.linears[0].objective.unwrap();
        if act.is_some() {
            assert!((o.mismatched - o.standard).abs() > 1e-6, "{act:?}: {o:?}");
        }
        let all: Vec<f64> = rep
            .linears
            .iter()
            .map(|l| l.objective.unwrap().mismatched)
            .collect();
        mean.push(all.iter().sum::<f64>() / all.len() as f64);
    }
    assert!(
        mean[2] > mean[1],
        "A4/KV4 should cost more than A8: {mean:?}"
    );
}

/// GPU vs CPU (lavapipe in CI): the same pipeline through the WGSL kernels. Per-linear
/// objectives are relative errors of a few percent, reached through different f32 summation
/// orders in the forward, the Grams and the factorisation, and a sequential sweep where one
/// rounding flip moves later columns: they agree to a few percent of their value; the
/// quantized model's perplexity to 1 %.
const GPU_OBJECTIVE_REL_TOL: f64 = 0.05;
const GPU_PPL_REL_TOL: f64 = 0.01;

#[test]
fn gpu_pipeline_agrees_with_cpu() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    let m = ModelDir::open(&model_dir("qwen2")).unwrap();
    let (rc, lc) = run(&CpuBackend::new(), &m, FloatStream::Block, w4());
    let (rg, lg) = run(&gpu, &m, FloatStream::Block, w4());
    // streams in host memory, uploaded chunk by chunk: the same bits on the device
    let (rh, lh) = run_with(&gpu, &m, FloatStream::Block, w4(), |c| {
        c.stream_device_bytes = Some(0)
    });
    assert!(rh.streams_on_host && !rg.streams_on_host);
    for ((n, a), (_, b)) in lg.iter().zip(&lh) {
        assert!(
            a.q == b.q,
            "{n}: GPU host-memory streams differ from resident ones"
        );
    }
    for (c, g) in rc.linears.iter().zip(&rg.linears) {
        let (oc, og) = (
            c.objective.unwrap().mismatched,
            g.objective.unwrap().mismatched,
        );
        assert!(
            (oc - og).abs() <= GPU_OBJECTIVE_REL_TOL * oc,
            "block {} {}: objective CPU {oc} GPU {og}",
            c.block,
            c.module
        );
    }
    // both quantized models, evaluated on the CPU
    let mut ppl = Vec::new();
    for (tag, linears) in [("cpu", &lc), ("gpu", &lg)] {
        let dir = tmp(&format!("gpu-agree-{tag}"));
        write_fake(&m, &dir, linears);
        ppl.push(models::tiny_ppl(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        (ppl[0] - ppl[1]).abs() <= GPU_PPL_REL_TOL * ppl[0],
        "quantized ppl CPU {} GPU {}",
        ppl[0],
        ppl[1]
    );
}

/// A fake-quant folder from collected results (the library's writer).
fn write_fake(m: &ModelDir, dir: &Path, linears: &[(String, LayerResult)]) {
    use qronos::model::export::{copy_side_files, CheckpointWriter, Output, MAX_SHARD_BYTES};
    std::fs::create_dir_all(dir).unwrap();
    copy_side_files(m, dir, Some("float32"), &[]).unwrap();
    let out = Output::Fake(safetensors::Dtype::F32);
    let mut w = CheckpointWriter::create(m, dir, out, MAX_SHARD_BYTES).unwrap();
    for (name, r) in linears {
        let b: usize = name.split('.').nth(2).unwrap().parse().unwrap();
        w.linear(b, name, r).unwrap();
    }
    w.finish().unwrap();
}

fn qronos_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qronos"))
}

fn calib_text(path: &Path, words: usize) {
    let base = "the cat sat on the mat while a small dog ran in the park and the sun was warm ";
    let text: String = base.repeat(words / 18 + 1);
    std::fs::write(path, text).unwrap();
}

#[test]
fn cli_output_loads_evaluates_and_is_deterministic() {
    let dir = tmp("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let calib = dir.join("calib.txt");
    calib_text(&calib, 2000);
    let model = model_dir("llama3-rope");
    let outs = [dir.join("q1"), dir.join("q2")];
    for out in &outs {
        let r = qronos_bin()
            .args(["quantize", "--model"])
            .arg(&model)
            .arg("--calib")
            .arg(&calib)
            .arg("--out")
            .arg(out)
            .args([
                "--nsamples",
                "6",
                "--seqlen",
                "48",
                "--device",
                "cpu",
                "--quiet",
                "--format",
                "fake",
            ])
            .args(["--eval-seqlen", "48", "--eval"])
            .arg(&calib)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(r.status.success(), "quantize failed: {stderr}");
        let line: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&r.stdout).trim()).unwrap();
        assert_eq!(line["linears"], 14);
        let (f, q) = (
            line["perplexity"]["float"].as_f64().unwrap(),
            line["perplexity"]["quantized"].as_f64().unwrap(),
        );
        assert!(
            f.is_finite() && q.is_finite() && q > 0.5 * f,
            "ppl float {f} quantized {q}"
        );
        let rep: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        assert_eq!(rep["linears"].as_array().unwrap().len(), 14);
        assert_eq!(rep["calibration"]["nsamples"], 6);
    }
    let a = std::fs::read(outs[0].join("model.safetensors")).unwrap();
    let b = std::fs::read(outs[1].join("model.safetensors")).unwrap();
    assert!(a == b, "two CPU runs must write identical bytes");
    // the folder is a model: same tensor names as the input, non-linear tensors unchanged
    let q = ModelDir::open(&outs[0]).unwrap();
    let m = ModelDir::open(&model).unwrap();
    assert_eq!(q.names(), m.names());
    let quantized: BTreeSet<String> = q
        .names()
        .into_iter()
        .filter(|n| n.contains("_proj.weight"))
        .collect();
    assert_eq!(quantized.len(), 14);
    for n in m.names() {
        if !quantized.contains(&n) {
            assert_eq!(
                q.raw(&n).unwrap().2,
                m.raw(&n).unwrap().2,
                "{n} must be copied"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn expect_failure(args: &[&str], model: &Path, out: &Path, want: &str) {
    let r = qronos_bin()
        .arg("quantize")
        .arg("--model")
        .arg(model)
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "expected failure for {args:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(want),
        "stderr {stderr:?} should mention {want:?}"
    );
    assert!(!out.exists(), "no output folder may be left behind");
    let parent = out.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary folders left: {leftovers:?}"
    );
}

#[test]
fn bad_input_is_an_error_and_leaves_no_output() {
    let dir = tmp("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let short = dir.join("short.txt");
    std::fs::write(&short, "too short").unwrap();
    let calib = dir.join("calib.txt");
    calib_text(&calib, 2000);
    let model = model_dir("llama3-rope");
    let out = dir.join("out");
    let c = short.to_str().unwrap();
    expect_failure(
        &["--calib", c, "--seqlen", "48", "--device", "cpu"],
        &model,
        &out,
        "tokens",
    );
    // a clipping search needs static groups
    let cl = calib.to_str().unwrap();
    expect_failure(
        &[
            "--calib",
            cl,
            "--no-act-order",
            "--clip",
            "hmse",
            "--device",
            "cpu",
        ],
        &model,
        &out,
        "--clip",
    );
    // unknown architecture
    let bad_model = dir.join("gpt2");
    std::fs::create_dir_all(&bad_model).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(model.join(f), bad_model.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(model.join("config.json"))
        .unwrap()
        .replace("LlamaForCausalLM", "GPT2LMHeadModel");
    std::fs::write(bad_model.join("config.json"), cfg).unwrap();
    let c = calib.to_str().unwrap();
    expect_failure(
        &["--calib", c, "--device", "cpu"],
        &bad_model,
        &out,
        "GPT2LMHeadModel",
    );
    // output inside the input
    let copy = dir.join("model-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["model.safetensors", "tokenizer.json", "config.json"] {
        std::fs::copy(model.join(f), copy.join(f)).unwrap();
    }
    expect_failure(
        &[
            "--calib",
            c,
            "--seqlen",
            "48",
            "--nsamples",
            "2",
            "--device",
            "cpu",
        ],
        &copy,
        &copy.join("quantized"),
        "inside",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `EvalConfig::act_bits` / `kv_bits` simulate a W·A· runtime: coarser activations and KV
/// raise the perplexity of the same weights; 8 bits costs little.
#[test]
fn evaluation_simulates_activation_quantization() {
    let m = ModelDir::open(&model_dir("llama3-rope")).unwrap();
    let ids = tokens(2048, m.config.vocab_size as u32, 5);
    let ppl = |act: Option<u32>, kv: Option<u32>| {
        let cfg = EvalConfig {
            seqlen: 64,
            max_tokens: None,
            protocol: Protocol::Standard,
            chunk_tokens: None,
            act_bits: act,
            kv_bits: kv,
        };
        perplexity(&CpuBackend::new(), &m, &ids, None, &cfg, &mut NoProgress)
            .unwrap()
            .ppl
    };
    let (f, a8, a4) = (
        ppl(None, None),
        ppl(Some(8), Some(8)),
        ppl(Some(4), Some(4)),
    );
    assert!((a8 - f).abs() < 0.02 * f, "A8/KV8 {a8} vs float {f}");
    assert!(a4 > a8 && a4 != f, "A4/KV4 {a4} vs A8 {a8}");
}

//! `qronos eval` from the outside, on the tiny `llama3-rope` model and its byte-level
//! tokenizer (`scripts/golden/make_tiny_tokenizer.py`: token id = byte value): the JSON line
//! and its arithmetic under both protocols, `--max-tokens`, bad input (clear error, non-zero
//! exit, no panic), and the GPU giving the CPU's perplexity.

#[path = "common/gpu.rs"]
mod gpu_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qronos::model::{ModelDir, Tokenizer};
use serde_json::Value;

/// `ppl == exp(nll)`: both come from the same f64 mean, so only the exp's rounding differs.
const EXP_REL_TOL: f64 = 1e-9;
/// GPU vs CPU perplexity: the same f32 forward in another summation order (per-token log-prob
/// differences ~1e-6, see tests/model_golden.rs), averaged over thousands of tokens.
const GPU_PPL_REL_TOL: f64 = 1e-4;
const SEQLEN: usize = 64;

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/llama3-rope")
}

fn tmpdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qronos-cli-eval-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A few KB of English; with the byte-level tokenizer one token per byte.
fn text() -> String {
    const SENTENCES: [&str; 6] = [
        "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
        "Quantization maps each weight to one of a few levels, and the error it makes is \
         corrected by the columns that come after it.",
        "In the morning the river was calm, and the boats drifted slowly past the old mill.",
        "She wrote the numbers down carefully, checked them twice, and sent the letter by post.",
        "A small model trained on random weights has no idea what English looks like.",
        "Every window of tokens is scored on its own, and the perplexity is the exponential of \
         the mean negative log-likelihood.",
    ];
    let mut s = String::new();
    for round in 0..8 {
        for (i, line) in SENTENCES.iter().enumerate() {
            if (i + round) % 3 == 0 {
                s.push('\n');
            }
            s.push_str(line);
            s.push(' ');
        }
    }
    s
}

/// The text written to `dir/eval.txt`, and its token count (bytes, for this tokenizer).
fn write_text(dir: &Path, text: &str) -> (PathBuf, usize) {
    let p = dir.join("eval.txt");
    std::fs::write(&p, text).unwrap();
    (p, text.len())
}

fn eval(model: &Path, data: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qronos"))
        .arg("eval")
        .arg("--model")
        .arg(model)
        .arg("--data")
        .arg(data)
        .args(extra)
        .output()
        .unwrap()
}

/// The one JSON line of a successful run.
fn json_line(o: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "qronos eval failed: {stderr}");
    let stdout = String::from_utf8(o.stdout.clone()).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout must be exactly one JSON line: {stdout:?}"
    );
    let j: Value = serde_json::from_str(stdout.trim_end()).unwrap();
    for key in [
        "ppl",
        "nll",
        "tokens",
        "windows",
        "seqlen",
        "protocol",
        "device",
        "seconds",
        "tokens_per_second",
    ] {
        assert!(j.get(key).is_some(), "missing key {key} in {stdout}");
    }
    let (ppl, nll) = (f(&j, "ppl"), f(&j, "nll"));
    assert!(nll.is_finite() && nll > 0.0, "nll {nll}");
    let rel = (ppl - nll.exp()).abs() / ppl;
    assert!(
        rel <= EXP_REL_TOL,
        "ppl {ppl} vs exp(nll) {}: rel {rel:e}",
        nll.exp()
    );
    assert!(
        f(&j, "seconds") > 0.0 && f(&j, "tokens_per_second") > 0.0,
        "{stdout}"
    );
    assert_eq!(u(&j, "seqlen"), SEQLEN);
    j
}

fn f(j: &Value, key: &str) -> f64 {
    j[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {j}"))
}

fn u(j: &Value, key: &str) -> usize {
    j[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an integer: {j}")) as usize
}

/// Runs a case that must fail: non-zero exit, no panic, nothing on stdout, stderr mentioning
/// every string of `must`. Returns stderr.
fn expect_failure(case: &str, o: &Output, must: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    eprintln!("{case}:\n    {}", err.trim_end());
    assert!(
        !o.status.success(),
        "{case}: expected failure; stderr: {err}"
    );
    assert!(
        !err.contains("panicked"),
        "{case}: panic instead of an error: {err}"
    );
    assert!(
        o.stdout.is_empty(),
        "{case}: stdout should be empty on failure"
    );
    for m in must {
        assert!(
            err.contains(m),
            "{case}: stderr should mention `{m}`: {err}"
        );
    }
    err
}

#[test]
fn tiny_tokenizer_is_byte_level() {
    let m = ModelDir::open(&model()).unwrap();
    let tok = Tokenizer::open(&model(), &m.config).unwrap();
    assert_eq!(tok.vocab_size(), m.config.vocab_size);
    assert_eq!(tok.bos_token_id, Some(1), "from config.json");
    let ids = tok.encode("Hello", false).unwrap();
    assert_eq!(
        ids,
        [72, 101, 108, 108, 111],
        "one token per byte, id = byte"
    );
    assert!(ids.iter().all(|&i| (i as usize) < m.config.vocab_size));
    assert_eq!(tok.decode(&ids).unwrap(), "Hello");
    // no post-processor: special tokens add nothing
    assert_eq!(tok.encode("Hello", true).unwrap(), ids);
    for s in [
        "Hello, wörld! 👋\n\ttabs  and  spaces ",
        "",
        " leading space",
        &text(),
    ] {
        let ids = tok.encode(s, false).unwrap();
        assert_eq!(ids.len(), s.len(), "{s:?}");
        assert_eq!(tok.decode(&ids).unwrap(), s, "round trip");
    }
}

#[test]
fn standard_protocol_json_line_and_arithmetic() {
    let dir = tmpdir("standard");
    let (data, n) = write_text(&dir, &text());
    let o = eval(&model(), &data, &["--device", "cpu", "--seqlen", "64"]);
    let j = json_line(&o);
    assert_eq!(j["protocol"], "standard");
    assert_eq!(j["device"], "cpu");
    assert_eq!(u(&j, "text_tokens"), n);
    // non-overlapping windows of seqlen tokens, the tail dropped; all but each first scored
    let w = u(&j, "windows");
    assert_eq!(w, n / SEQLEN);
    assert_eq!(u(&j, "tokens"), w * (SEQLEN - 1));
    // a random model on English bytes: near-uniform over 256, not degenerate
    let ppl = f(&j, "ppl");
    assert!(ppl > 10.0 && ppl < 10_000.0, "ppl {ppl}");
    // deterministic on the CPU
    let again = json_line(&eval(
        &model(),
        &data,
        &["--device", "cpu", "--seqlen", "64"],
    ));
    assert_eq!(again["nll"], j["nll"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn paper_protocol_scores_the_second_half_of_bos_windows() {
    let dir = tmpdir("paper");
    let (data, n) = write_text(&dir, &text());
    let o = eval(
        &model(),
        &data,
        &["--device", "cpu", "--seqlen", "64", "--protocol", "paper"],
    );
    let j = json_line(&o);
    assert_eq!(j["protocol"], "paper");
    // windows of BOS + seqlen − 1 text tokens; targets at positions seqlen/2 .. seqlen scored
    let w = u(&j, "windows");
    assert_eq!(w, n / (SEQLEN - 1));
    assert_eq!(u(&j, "tokens"), w * (SEQLEN - SEQLEN / 2));
    let standard = json_line(&eval(
        &model(),
        &data,
        &["--device", "cpu", "--seqlen", "64"],
    ));
    assert_ne!(
        standard["nll"], j["nll"],
        "the protocols score different tokens"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn max_tokens_limits_the_windows() {
    let dir = tmpdir("max-tokens");
    let (data, n) = write_text(&dir, &text());
    let o = eval(
        &model(),
        &data,
        &["--device", "cpu", "--seqlen", "64", "--max-tokens", "200"],
    );
    let j = json_line(&o);
    assert_eq!(u(&j, "windows"), 200 / SEQLEN);
    assert_eq!(u(&j, "tokens"), (200 / SEQLEN) * (SEQLEN - 1));
    assert_eq!(u(&j, "text_tokens"), n, "text_tokens counts the whole text");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn text_shorter_than_one_window() {
    let dir = tmpdir("short");
    let (data, n) = write_text(&dir, "Too short for a window.");
    let o = eval(&model(), &data, &["--device", "cpu", "--seqlen", "64"]);
    expect_failure(
        "text shorter than one window",
        &o,
        &["--data", &format!("has {n} tokens"), "64"],
    );
    // and a long text cut below one window by --max-tokens says so
    let (data, _) = write_text(&dir, &text());
    let o = eval(
        &model(),
        &data,
        &["--device", "cpu", "--seqlen", "64", "--max-tokens", "63"],
    );
    expect_failure(
        "--max-tokens below one window",
        &o,
        &["limited to 63 by --max-tokens", "64"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_model_folder_data_file_or_tokenizer() {
    let dir = tmpdir("missing");
    let (data, _) = write_text(&dir, &text());
    let nowhere = dir.join("no-such-model");
    let o = eval(&nowhere, &data, &["--device", "cpu", "--seqlen", "64"]);
    expect_failure(
        "missing --model folder",
        &o,
        &[&nowhere.display().to_string(), "does not exist"],
    );

    let absent = dir.join("absent.txt");
    let o = eval(&model(), &absent, &["--device", "cpu", "--seqlen", "64"]);
    expect_failure(
        "missing --data file",
        &o,
        &["--data", &absent.display().to_string()],
    );

    // a model folder without tokenizer.json
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(model().join(f), m.join(f)).unwrap();
    }
    let o = eval(&m, &data, &["--device", "cpu", "--seqlen", "64"]);
    expect_failure("no tokenizer.json", &o, &["tokenizer.json", "missing"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_architecture() {
    let dir = tmpdir("arch");
    let (data, _) = write_text(&dir, &text());
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(model().join(f), m.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(m.join("config.json")).unwrap();
    let mut v: Value = serde_json::from_str(&cfg).unwrap();
    v["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    std::fs::write(m.join("config.json"), v.to_string()).unwrap();
    let o = eval(&m, &data, &["--device", "cpu", "--seqlen", "64"]);
    expect_failure(
        "unknown architecture",
        &o,
        &[
            "config.json",
            "architectures",
            "GPT2LMHeadModel",
            "LlamaForCausalLM",
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_flags() {
    let dir = tmpdir("flags");
    let (data, _) = write_text(&dir, &text());
    let o = eval(&model(), &data, &["--device", "cpu", "--seqlen", "1"]);
    expect_failure("--seqlen 1", &o, &["--seqlen"]);
    let o = eval(
        &model(),
        &data,
        &["--device", "cpu", "--seqlen", "64", "--max-tokens", "0"],
    );
    expect_failure("--max-tokens 0", &o, &["--max-tokens"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gpu_gives_the_cpu_perplexity() {
    // the rule of tests/common/gpu.rs: no adapter fails under CI=true, else skips
    if gpu_common::backend().is_none() {
        return;
    }
    let dir = tmpdir("gpu");
    let (data, _) = write_text(&dir, &text());
    let runtime = dir.join("xdg-runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let cpu = json_line(&eval(
        &model(),
        &data,
        &["--device", "cpu", "--seqlen", "64"],
    ));
    let o = Command::new(env!("CARGO_BIN_EXE_qronos"))
        .args(["eval", "--device", "gpu", "--seqlen", "64", "--model"])
        .arg(model())
        .arg("--data")
        .arg(&data)
        // the Vulkan loader warns on stderr without one
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    let gpu = json_line(&o);
    assert_eq!(gpu["device"], "gpu");
    assert_eq!(
        (gpu["windows"].clone(), gpu["tokens"].clone()),
        (cpu["windows"].clone(), cpu["tokens"].clone())
    );
    let (pg, pc) = (f(&gpu, "ppl"), f(&cpu, "ppl"));
    let rel = (pg - pc).abs() / pc;
    eprintln!(
        "GPU ppl {pg} vs CPU {pc}: rel {rel:.2e} ({})",
        gpu["adapter"]
    );
    assert!(
        rel <= GPU_PPL_REL_TOL,
        "GPU ppl {pg} vs CPU {pc}: rel {rel:e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

//! The `qronos layer` contract from the outside: the JSON line, the result file, and bad input
//! (clear error naming file and tensor or flag, non-zero exit, no panic, no output written,
//! input untouched).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qronos::io::{write_atomic, OutTensor};
use qronos::synth::llm_like;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qronos"))
}

fn tmpdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qronos-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn f32s(name: &str, shape: Vec<usize>, v: &[f32]) -> OutTensor<'static> {
    OutTensor::f32(name, shape, v).into_owned()
}

/// A valid small case: W [8, 12], X / Xq [40, 12].
fn good_tensors() -> Vec<OutTensor<'static>> {
    let l = llm_like(8, 12, 40, 1);
    vec![
        f32s("W", vec![8, 12], &l.w),
        f32s("X", vec![40, 12], &l.x),
        f32s("Xq", vec![40, 12], &l.xq),
    ]
}

fn write_case(dir: &Path, name: &str, t: Vec<OutTensor<'_>>) -> PathBuf {
    let p = dir.join(name);
    write_atomic(&p, t, None).unwrap();
    p
}

fn layer(case: &Path, out: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["layer", "--device", "cpu", "--case"])
        .arg(case)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// Runs a case that must fail; checks every promise of the bad-input contract.
fn expect_failure(case: &Path, out: &Path, extra: &[&str], must_mention: &[&str]) {
    let before = std::fs::read(case).ok();
    let o = layer(case, out, extra);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "expected failure for {extra:?}; stderr: {err}"
    );
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    for m in must_mention {
        assert!(err.contains(m), "error should mention `{m}`: {err}");
    }
    if out != case {
        assert!(
            !out.exists(),
            "an output file was written despite the error"
        );
    }
    assert_eq!(std::fs::read(case).ok(), before, "the input was modified");
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

#[test]
fn good_case_writes_a_result_and_one_json_line() {
    let dir = tmpdir("good");
    let case = write_case(&dir, "case.safetensors", good_tensors());
    let out = dir.join("r.safetensors");
    let o = layer(
        &case,
        &out,
        &["--method", "qronos", "--bits", "3", "--group-size", "5"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for key in [
        "method",
        "bits",
        "group_size",
        "sym",
        "act_order",
        "desc_act",
        "static_groups",
        "device",
        "adapter",
        "damping",
        "seconds",
        "objective",
    ] {
        assert!(j.get(key).is_some(), "missing key {key} in {stdout}");
    }
    for key in ["load", "gram", "factor", "sweep", "objectives", "total"] {
        assert!(j["seconds"][key].is_number(), "seconds.{key} in {stdout}");
    }
    assert_eq!(j["method"], "qronos");
    assert_eq!(j["group_size"], 5);
    let mism = j["objective"]["mismatched"].as_f64().unwrap();
    assert!(mism > 0.0 && mism < 1.0, "mismatched objective {mism}");
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let shape = |n: &str| st.tensor(n).unwrap().shape().to_vec();
    assert_eq!(shape("Q"), [8, 12]);
    assert_eq!(shape("codes"), [8, 12]);
    assert_eq!(shape("scales"), [8, 3]); // 12 = 5 + 5 + 2
    assert_eq!(shape("zeros"), [8, 3]);
    assert_eq!(shape("g_idx"), [12]);
    assert_eq!(st.tensor("codes").unwrap().dtype(), safetensors::Dtype::I32);

    // --objectives none: the fields are null
    let o = layer(&case, &out, &["--objectives", "none", "--method", "gptq"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(j["objective"]["mismatched"].is_null() && j["seconds"]["objectives"].is_null());

    // H / G input gives the same result as the tokens it came from (up to f32 summation)
    let l = llm_like(8, 12, 40, 1);
    let d = 12;
    let gram = |a: &[f32], b: &[f32]| -> Vec<f32> {
        let mut g = vec![0f32; d * d];
        for i in 0..d {
            for k in 0..d {
                g[i * d + k] = ((0..40)
                    .map(|t| a[t * d + i] as f64 * b[t * d + k] as f64)
                    .sum::<f64>()
                    / 40.0) as f32;
            }
        }
        g
    };
    let hg = write_case(
        &dir,
        "hg.safetensors",
        vec![
            f32s("W", vec![8, 12], &l.w),
            f32s("H", vec![12, 12], &gram(&l.xq, &l.xq)),
            f32s("G", vec![12, 12], &gram(&l.x, &l.xq)),
            f32s("XX", vec![12, 12], &gram(&l.x, &l.x)),
        ],
    );
    let o2 = layer(&hg, &out, &["--bits", "3", "--group-size", "5"]);
    assert!(
        o2.status.success(),
        "{}",
        String::from_utf8_lossy(&o2.stderr)
    );
    let j2: serde_json::Value = serde_json::from_slice(&o2.stdout).unwrap();
    let m2 = j2["objective"]["mismatched"].as_f64().unwrap();
    assert!(
        (m2 - mism).abs() / mism < 1e-3,
        "H/G case objective {m2} vs tokens {mism}"
    );
}

#[test]
fn corrupt_and_truncated_files_are_rejected() {
    let dir = tmpdir("corrupt");
    let out = dir.join("r.safetensors");
    let good = write_case(&dir, "good.safetensors", good_tensors());
    let bytes = std::fs::read(&good).unwrap();

    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    expect_failure(&truncated, &out, &[], &["truncated.safetensors"]);

    let header = dir.join("header.safetensors");
    let mut b = bytes.clone();
    b[8] = b'#'; // the JSON header's first byte
    std::fs::write(&header, &b).unwrap();
    expect_failure(&header, &out, &[], &["header.safetensors"]);

    let huge = dir.join("huge.safetensors");
    let mut b = bytes.clone();
    b[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&huge, &b).unwrap();
    expect_failure(&huge, &out, &[], &["huge.safetensors"]);

    let tiny = dir.join("tiny.safetensors");
    std::fs::write(&tiny, b"abc").unwrap();
    expect_failure(&tiny, &out, &[], &["tiny.safetensors"]);

    let missing = dir.join("does-not-exist.safetensors");
    expect_failure(&missing, &out, &[], &["does-not-exist.safetensors"]);
}

#[test]
fn bad_tensors_are_rejected_with_their_names() {
    let dir = tmpdir("tensors");
    let out = dir.join("r.safetensors");
    let l = llm_like(8, 12, 40, 1);
    let w = || f32s("W", vec![8, 12], &l.w);
    let x = || f32s("X", vec![40, 12], &l.x);
    let mut nan_x = l.x.clone();
    nan_x[17] = f32::NAN;
    let mut inf_w = l.w.clone();
    inf_w[3] = f32::INFINITY;
    let mut nan_xq = l.xq.clone();
    nan_xq[0] = f32::NAN;
    let w64 = OutTensor {
        name: "W".into(),
        dtype: safetensors::Dtype::F64,
        shape: vec![8, 12],
        bytes: l.w.iter().flat_map(|v| (*v as f64).to_le_bytes()).collect(),
    };
    let eye: Vec<f32> = (0..144)
        .map(|k| if k / 12 == k % 12 { 1.0 } else { 0.0 })
        .collect();
    let cases: Vec<(&str, Vec<OutTensor>, &str)> = vec![
        ("no-w", vec![x()], "`W`"),
        ("no-x", vec![w()], "`X`"),
        ("w-f64", vec![w64, x()], "`W`"),
        ("w-rank", vec![f32s("W", vec![96], &l.w), x()], "`W`"),
        (
            "x-shape",
            vec![w(), f32s("X", vec![48, 10], &l.x[..480])],
            "`X`",
        ),
        (
            "xq-shape",
            vec![w(), x(), f32s("Xq", vec![20, 12], &l.xq[..240])],
            "`Xq`",
        ),
        ("zero-tokens", vec![w(), f32s("X", vec![0, 12], &[])], "`X`"),
        ("nan-x", vec![w(), f32s("X", vec![40, 12], &nan_x)], "`X`"),
        ("inf-w", vec![f32s("W", vec![8, 12], &inf_w), x()], "`W`"),
        (
            "nan-xq",
            vec![w(), x(), f32s("Xq", vec![40, 12], &nan_xq)],
            "`Xq`",
        ),
        (
            "h-without-g",
            vec![w(), f32s("H", vec![12, 12], &eye)],
            "`G`",
        ),
        (
            "h-shape",
            vec![
                w(),
                f32s("H", vec![12, 11], &eye[..132]),
                f32s("G", vec![12, 12], &eye),
            ],
            "`H`",
        ),
        (
            "x-and-h",
            vec![
                w(),
                x(),
                f32s("H", vec![12, 12], &eye),
                f32s("G", vec![12, 12], &eye),
            ],
            "X",
        ),
    ];
    for (name, tensors, mention) in cases {
        let file = format!("{name}.safetensors");
        let case = write_case(&dir, &file, tensors);
        expect_failure(&case, &out, &[], &[&file, mention]);
    }
}

#[test]
fn bad_flags_are_rejected_naming_the_flag() {
    let dir = tmpdir("flags");
    let case = write_case(&dir, "case.safetensors", good_tensors());
    let out = dir.join("r.safetensors");
    for (args, flag) in [
        (vec!["--bits", "9"], "--bits"),
        (vec!["--bits", "1"], "--bits"),
        (vec!["--group-size", "0"], "--group-size"),
        (vec!["--group-size", "-2"], "--group-size"),
        (vec!["--damp-percent", "-0.1"], "--damp-percent"),
        (vec!["--qronos-alpha", "-1e-6"], "--qronos-alpha"),
        (vec!["--block-size", "0"], "--block-size"),
        (vec!["--method", "awq"], "--method"),
        (vec!["--act-order", "--desc-act"], "--act-order"),
    ] {
        expect_failure(&case, &out, &args, &[flag]);
    }
    // output path equal to the input, spelled two ways
    expect_failure(&case, &case, &[], &["--out"]);
    let dotted = dir.join(".").join("case.safetensors");
    expect_failure(&case, &dotted, &[], &["--out"]);
    // output directory that does not exist
    let nowhere = dir.join("no-such-dir").join("r.safetensors");
    let o = layer(&case, &nowhere, &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--out"));
}

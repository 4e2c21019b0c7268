//! Bad model folders get clear errors, never panics: each case copies a tiny model from
//! tests/data/models into a scratch folder, breaks one thing, and checks that the error names
//! the file and the key / tensor and says what was expected.
//!
//! Run with `--nocapture` to see every message (they are the UX).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use qronos::backend::cpu::CpuBackend;
use qronos::io::{write_atomic, OutTensor};
use qronos::model::eval::{logits, perplexity, EvalConfig, Protocol};
use qronos::model::{ModelDir, Tokenizer};
use qronos::NoProgress;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};

fn model_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models")
        .join(name)
}

/// A copy of a tiny model in its own temporary folder, removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// A fresh copy of `tests/data/models/<model>` for the case `case`.
    fn copy(model: &str, case: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "qronos-model-errors-{}-{}-{case}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(model_src(model)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        Scratch { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Edit config.json as JSON.
    fn config(&self, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
        let p = self.path("config.json");
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        edit(v.as_object_mut().unwrap());
        std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }

    /// Rewrite a safetensors file tensor by tensor: `edit` sees each tensor's name and may
    /// change its shape / bytes, or return `false` to drop it.
    fn rewrite(
        &self,
        file: &str,
        mut edit: impl FnMut(&str, &mut Vec<usize>, &mut Vec<u8>) -> bool,
    ) {
        let p = self.path(file);
        let bytes = std::fs::read(&p).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let metadata: Option<BTreeMap<String, String>> = meta
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let view = st.tensor(&name).unwrap();
            let mut shape = view.shape().to_vec();
            let mut data = view.data().to_vec();
            if edit(&name, &mut shape, &mut data) {
                out.push(OutTensor {
                    name,
                    dtype: view.dtype(),
                    shape,
                    bytes: data.into(),
                });
            }
        }
        write_atomic(&p, out, metadata).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The error of opening `dir`, which must fail.
fn open_err(dir: &Path) -> String {
    match ModelDir::open(dir) {
        Ok(_) => panic!("{}: expected ModelDir::open to fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Checks that `err` mentions every string of `must`, and prints it (the message is the UX).
fn expect(case: &str, err: &str, must: &[&str]) {
    eprintln!("{case}:\n    {err}");
    for m in must {
        assert!(
            err.contains(m),
            "{case}: the error should mention `{m}`: {err}"
        );
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

const SUPPORTED_ARCHS: [&str; 4] = [
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
];

/// The control: an unbroken copy of every committed model opens.
#[test]
fn unbroken_copies_open() {
    for model in [
        "llama3-rope",
        "mistral",
        "qwen2",
        "qwen3",
        "llama-f16",
        "llama-bf16",
        "llama-sharded",
        "llama-bias",
    ] {
        let s = Scratch::copy(model, "control");
        if let Err(e) = ModelDir::open(&s.dir) {
            panic!("{model}: {e}");
        }
    }
}

// ---- config.json ----

#[test]
fn unknown_architecture_names_the_value_and_the_supported_list() {
    let s = Scratch::copy("llama3-rope", "arch");
    s.config(|c| {
        c.insert("architectures".into(), json!(["GPT2LMHeadModel"]));
    });
    let err = open_err(&s.dir);
    let mut must = vec![
        path_str(&s.path("config.json")),
        "architectures".into(),
        "GPT2LMHeadModel".into(),
    ];
    must.extend(SUPPORTED_ARCHS.iter().map(|a| a.to_string()));
    let must: Vec<&str> = must.iter().map(String::as_str).collect();
    expect("unknown architecture", &err, &must);
}

#[test]
fn architectures_that_are_not_a_one_name_list() {
    for (case, v) in [
        ("architectures a string", json!("LlamaForCausalLM")),
        ("architectures two names", json!(["LlamaForCausalLM", "X"])),
    ] {
        let s = Scratch::copy("llama3-rope", "arch-shape");
        s.config(|c| {
            c.insert("architectures".into(), v);
        });
        let err = open_err(&s.dir);
        expect(
            case,
            &err,
            &["config.json", "architectures", "one architecture name"],
        );
    }
    let s = Scratch::copy("llama3-rope", "arch-missing");
    s.config(|c| {
        c.remove("architectures");
    });
    expect(
        "architectures missing",
        &open_err(&s.dir),
        &["config.json", "architectures", "missing"],
    );
}

#[test]
fn unknown_rope_type_names_the_key_and_the_supported_types() {
    let s = Scratch::copy("llama3-rope", "rope-yarn");
    s.config(|c| {
        c["rope_parameters"]["rope_type"] = json!("yarn");
    });
    let err = open_err(&s.dir);
    expect(
        "rope_parameters.rope_type yarn",
        &err,
        &[
            "config.json",
            "rope_parameters.rope_type",
            "\"yarn\"",
            "default",
            "llama3",
        ],
    );
}

#[test]
fn unknown_legacy_rope_scaling_type_names_the_key_and_the_supported_types() {
    // transformers 4's spelling: top-level rope_theta, `rope_scaling.type`
    let s = Scratch::copy("mistral", "rope-dynamic");
    s.config(|c| {
        c.remove("rope_parameters");
        c.insert("rope_theta".into(), json!(10000.0));
        c.insert(
            "rope_scaling".into(),
            json!({"type": "dynamic", "factor": 2.0}),
        );
    });
    let err = open_err(&s.dir);
    expect(
        "rope_scaling.type dynamic",
        &err,
        &[
            "config.json",
            "rope_scaling.type",
            "\"dynamic\"",
            "default",
            "llama3",
        ],
    );
}

#[test]
fn rope_type_that_is_not_a_string() {
    let s = Scratch::copy("llama3-rope", "rope-int");
    s.config(|c| {
        c["rope_parameters"]["rope_type"] = json!(3);
    });
    expect(
        "rope_parameters.rope_type 3",
        &open_err(&s.dir),
        &["config.json", "rope_parameters.rope_type", "not a string"],
    );
}

#[test]
fn llama3_rope_without_factor() {
    let s = Scratch::copy("llama3-rope", "rope-factor");
    s.config(|c| {
        c["rope_parameters"]
            .as_object_mut()
            .unwrap()
            .remove("factor");
    });
    let err = open_err(&s.dir);
    expect(
        "llama3 rope without factor",
        &err,
        &[
            "config.json",
            "rope_parameters.factor",
            "positive number",
            "llama3",
        ],
    );
}

#[test]
fn missing_config_key() {
    let s = Scratch::copy("llama3-rope", "no-hidden");
    s.config(|c| {
        c.remove("hidden_size");
    });
    let err = open_err(&s.dir);
    expect(
        "hidden_size removed",
        &err,
        &["config.json", "hidden_size", "missing", "positive integer"],
    );
}

#[test]
fn non_integer_sizes() {
    for (case, v) in [
        ("num_attention_heads 4.5", json!(4.5)),
        ("num_attention_heads \"4\"", json!("4")),
        ("num_attention_heads 0", json!(0)),
        ("num_attention_heads -4", json!(-4)),
    ] {
        let s = Scratch::copy("llama3-rope", "heads");
        s.config(|c| {
            c.insert("num_attention_heads".into(), v);
        });
        let err = open_err(&s.dir);
        expect(
            case,
            &err,
            &[
                "config.json",
                "num_attention_heads",
                "not a positive integer",
            ],
        );
    }
}

#[test]
fn kv_heads_that_do_not_divide_the_heads() {
    let s = Scratch::copy("llama3-rope", "kv");
    s.config(|c| {
        c.insert("num_key_value_heads".into(), json!(3));
    });
    let err = open_err(&s.dir);
    expect(
        "num_key_value_heads 3 of 4 heads",
        &err,
        &[
            "config.json",
            "num_key_value_heads",
            "3 does not divide",
            "num_attention_heads 4",
        ],
    );
}

#[test]
fn absurd_sizes_are_errors_not_overflows() {
    // products of these overflow usize; they must be rejected, not wrap or panic
    let s = Scratch::copy("llama3-rope", "huge");
    s.config(|c| {
        c.insert("num_attention_heads".into(), json!(1u64 << 40));
        c.insert("num_key_value_heads".into(), json!(1u64 << 40));
        c.insert("head_dim".into(), json!(1u64 << 40));
    });
    let err = open_err(&s.dir);
    expect(
        "heads × head_dim overflowing",
        &err,
        &[
            "config.json",
            "num_attention_heads × head_dim × hidden_size",
            "cannot be addressed",
        ],
    );
    // a trillion layers: one missing tensor, found without listing every name it implies
    let s = Scratch::copy("llama3-rope", "layers");
    s.config(|c| {
        c.insert("num_hidden_layers".into(), json!(1u64 << 40));
    });
    let err = open_err(&s.dir);
    expect(
        "num_hidden_layers 2^40",
        &err,
        &[
            "model.safetensors",
            "model.layers.1099511627775.input_layernorm.weight",
            "missing",
        ],
    );
}

#[test]
fn config_json_not_json() {
    let s = Scratch::copy("llama3-rope", "notjson");
    std::fs::write(
        s.path("config.json"),
        "{\"architectures\": [\"LlamaForCausalLM\"],",
    )
    .unwrap();
    let err = open_err(&s.dir);
    expect(
        "config.json not JSON",
        &err,
        &[
            &path_str(&s.path("config.json")),
            "not valid JSON",
            "line 1",
        ],
    );
}

#[test]
fn config_json_absent() {
    let s = Scratch::copy("llama3-rope", "noconfig");
    std::fs::remove_file(s.path("config.json")).unwrap();
    let err = open_err(&s.dir);
    expect(
        "config.json absent",
        &err,
        &[&path_str(&s.path("config.json")), "No such file"],
    );
}

#[test]
fn unsupported_activation() {
    let s = Scratch::copy("llama3-rope", "gelu");
    s.config(|c| {
        c.insert("hidden_act".into(), json!("gelu"));
    });
    let err = open_err(&s.dir);
    expect(
        "hidden_act gelu",
        &err,
        &["config.json", "hidden_act", "\"gelu\"", "\"silu\""],
    );
}

#[test]
fn odd_head_dim() {
    let s = Scratch::copy("llama3-rope", "odd-head");
    s.config(|c| {
        c.insert("head_dim".into(), json!(15));
    });
    expect(
        "head_dim 15",
        &open_err(&s.dir),
        &["config.json", "head_dim", "15", "odd"],
    );
}

// ---- weights ----

#[test]
fn missing_tensor_names_the_tensor_and_the_file() {
    let s = Scratch::copy("llama3-rope", "missing-tensor");
    let gone = "model.layers.1.mlp.down_proj.weight";
    s.rewrite("model.safetensors", |name, _, _| name != gone);
    let err = open_err(&s.dir);
    expect(
        "tensor missing",
        &err,
        &[
            &path_str(&s.path("model.safetensors")),
            gone,
            "missing",
            "[64, 96]",
            "config.json",
        ],
    );
}

#[test]
fn transposed_tensor_names_both_shapes() {
    let s = Scratch::copy("llama3-rope", "transposed");
    let t = "model.layers.0.mlp.up_proj.weight";
    s.rewrite("model.safetensors", |name, shape, _| {
        if name == t {
            assert_eq!(shape, &[96, 64]);
            shape.reverse();
        }
        true
    });
    let err = open_err(&s.dir);
    expect(
        "tensor transposed",
        &err,
        &[
            &path_str(&s.path("model.safetensors")),
            t,
            "shape [64, 96]",
            "expected [96, 64] from config.json",
        ],
    );
}

#[test]
fn config_that_disagrees_with_the_file() {
    let s = Scratch::copy("llama3-rope", "intermediate");
    s.config(|c| {
        c.insert("intermediate_size".into(), json!(128));
    });
    let err = open_err(&s.dir);
    expect(
        "intermediate_size 128 vs 96 in the file",
        &err,
        &[
            &path_str(&s.path("model.safetensors")),
            "model.layers.0.mlp.gate_proj.weight",
            "shape [96, 64]",
            "expected [128, 64]",
        ],
    );
}

#[test]
fn integer_tensor_is_rejected_by_dtype() {
    let s = Scratch::copy("llama3-rope", "dtype");
    let t = "model.norm.weight";
    let bytes = std::fs::read(s.path("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let others: Vec<OutTensor<'static>> = st
        .names()
        .into_iter()
        .map(|n| {
            let v = st.tensor(n).unwrap();
            OutTensor {
                name: n.to_string(),
                dtype: if n == t { Dtype::I32 } else { v.dtype() },
                shape: v.shape().to_vec(),
                bytes: v.data().to_vec().into(),
            }
        })
        .collect();
    write_atomic(&s.path("model.safetensors"), others, None).unwrap();
    let err = open_err(&s.dir);
    expect(
        "I32 tensor",
        &err,
        &["model.safetensors", t, "dtype I32", "F32, F16 or BF16"],
    );
}

#[test]
fn index_naming_a_shard_that_is_not_there() {
    let s = Scratch::copy("llama-sharded", "no-shard");
    let shard = "model-00002-of-00003.safetensors";
    std::fs::remove_file(s.path(shard)).unwrap();
    let err = open_err(&s.dir);
    expect(
        "shard deleted",
        &err,
        &[
            &path_str(&s.path("model.safetensors.index.json")),
            shard,
            "not in",
        ],
    );
}

#[test]
fn index_pointing_a_tensor_at_the_wrong_shard() {
    let s = Scratch::copy("llama-sharded", "wrong-shard");
    let p = s.path("model.safetensors.index.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(
        v["weight_map"]["lm_head.weight"],
        "model-00003-of-00003.safetensors"
    );
    v["weight_map"]["lm_head.weight"] = json!("model-00001-of-00003.safetensors");
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let err = open_err(&s.dir);
    expect(
        "weight_map points at the wrong shard",
        &err,
        &[
            &path_str(&s.path("model-00001-of-00003.safetensors")),
            "lm_head.weight",
            "model.safetensors.index.json",
            "not in this shard",
        ],
    );
}

#[test]
fn index_that_is_not_json_or_has_no_weight_map() {
    let s = Scratch::copy("llama-sharded", "index-json");
    let p = s.path("model.safetensors.index.json");
    std::fs::write(&p, "not json").unwrap();
    expect(
        "index not JSON",
        &open_err(&s.dir),
        &[&path_str(&p), "not valid JSON"],
    );
    std::fs::write(&p, "{\"metadata\": {}}").unwrap();
    expect(
        "index without weight_map",
        &open_err(&s.dir),
        &[&path_str(&p), "weight_map", "missing"],
    );
    std::fs::write(
        &p,
        "{\"weight_map\": {\"lm_head.weight\": \"../x.safetensors\"}}",
    )
    .unwrap();
    expect(
        "index naming a file outside the folder",
        &open_err(&s.dir),
        &[
            &path_str(&p),
            "weight_map.lm_head.weight",
            "not a plain file name",
        ],
    );
}

#[test]
fn truncated_safetensors_names_the_file() {
    let s = Scratch::copy("llama3-rope", "truncated");
    let p = s.path("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    for (case, keep) in [
        ("safetensors cut in half", bytes.len() / 2),
        ("safetensors cut inside the header", 100),
        ("safetensors cut to 4 bytes", 4),
        ("safetensors empty", 0),
    ] {
        std::fs::write(&p, &bytes[..keep]).unwrap();
        let err = open_err(&s.dir);
        expect(case, &err, &[&path_str(&p), "not a valid safetensors file"]);
    }
}

#[test]
fn nan_in_a_weight_is_found_when_the_tensor_is_converted() {
    let cpu = CpuBackend::new();
    for model in ["llama3-rope", "llama-bf16"] {
        let s = Scratch::copy(model, "nan");
        let t = "model.layers.1.mlp.down_proj.weight";
        s.rewrite("model.safetensors", |name, _, data| {
            if name == t {
                // flat index 100, in the file's dtype
                let nan: &[u8] = if data.len() == 64 * 96 * 4 {
                    &[0, 0, 0xc0, 0x7f]
                } else {
                    &[0xc0, 0x7f]
                };
                data[100 * nan.len()..101 * nan.len()].copy_from_slice(nan);
            }
            true
        });
        // headers only: opening succeeds
        let m = ModelDir::open(&s.dir).unwrap_or_else(|e| panic!("{model}: {e}"));
        let err = match logits(&cpu, &m, &[1, 2, 3, 4], &mut NoProgress) {
            Ok(_) => panic!("{model}: a NaN weight must be an error"),
            Err(e) => e.to_string(),
        };
        expect(
            &format!("NaN in a weight ({model})"),
            &err,
            &[
                &path_str(&s.path("model.safetensors")),
                t,
                "non-finite",
                "NaN",
                "flat index 100",
            ],
        );
    }
}

#[test]
fn folder_without_weights() {
    let s = Scratch::copy("llama3-rope", "no-weights");
    std::fs::remove_file(s.path("model.safetensors")).unwrap();
    let err = open_err(&s.dir);
    expect(
        "no weights",
        &err,
        &[
            &path_str(&s.dir),
            "model.safetensors",
            "model.safetensors.index.json",
        ],
    );
}

#[test]
fn path_that_is_not_a_directory() {
    let s = Scratch::copy("llama3-rope", "not-dir");
    let file = s.path("config.json");
    expect(
        "a file instead of a folder",
        &open_err(&file),
        &[&path_str(&file), "not a directory"],
    );
    let absent = s.path("nowhere");
    expect(
        "a path that does not exist",
        &open_err(&absent),
        &[&path_str(&absent), "does not exist"],
    );
}

// ---- tokenizer ----

#[test]
fn tokenizer_missing_or_broken() {
    let s = Scratch::copy("llama3-rope", "tokenizer");
    let m = ModelDir::open(&s.dir).unwrap();
    let p = s.path("tokenizer.json");
    std::fs::write(&p, "{\"model\": 3}").unwrap();
    let err = match Tokenizer::open(&s.dir, &m.config) {
        Ok(_) => panic!("a broken tokenizer.json must be an error"),
        Err(e) => e.to_string(),
    };
    expect(
        "tokenizer.json broken",
        &err,
        &[&path_str(&p), "cannot load"],
    );
    std::fs::remove_file(&p).unwrap();
    let err = match Tokenizer::open(&s.dir, &m.config) {
        Ok(_) => panic!("a missing tokenizer.json must be an error"),
        Err(e) => e.to_string(),
    };
    expect(
        "tokenizer.json missing",
        &err,
        &["tokenizer.json", "missing"],
    );
}

// ---- evaluation ----

#[test]
fn sliding_window_shorter_than_the_sequence() {
    let s = Scratch::copy("mistral", "window");
    s.config(|c| {
        c.insert("sliding_window".into(), json!(16));
    });
    let m = ModelDir::open(&s.dir).unwrap();
    let tokens: Vec<u32> = (0..128).map(|i| (i * 7 % 256) as u32).collect();
    let cfg = EvalConfig {
        seqlen: 32,
        max_tokens: None,
        protocol: Protocol::Standard,
        chunk_tokens: None,
        act_bits: None,
        kv_bits: None,
    };
    let err = match perplexity(&CpuBackend::new(), &m, &tokens, None, &cfg, &mut NoProgress) {
        Ok(_) => panic!("a sliding window shorter than seqlen must be an error"),
        Err(e) => e.to_string(),
    };
    expect(
        "sliding_window 16 at seqlen 32",
        &err,
        &[
            &path_str(&s.path("config.json")),
            "sliding_window",
            "16",
            "32",
            "sequence length ≤ 16",
        ],
    );
    // at seqlen 16 it runs
    let cfg = EvalConfig { seqlen: 16, ..cfg };
    let r = perplexity(&CpuBackend::new(), &m, &tokens, None, &cfg, &mut NoProgress).unwrap();
    assert_eq!(r.windows, 8);
}

//! Writing a quantized model folder. The folder is built under a temporary name beside the
//! target and renamed at the end ([`OutDir::commit`]); dropped before that (an error, a
//! cancellation), it is removed, so a failed run leaves nothing. An output that is the input
//! folder or inside it is refused.
//!
//! [`CheckpointWriter`] writes every output format from one plan of tensors: `fake` — the
//! dequantized weights under the input's tensor names (f32 unless a dtype is asked for) — or
//! a packed format of [`crate::format`] (GPTQ); every other tensor is copied unchanged,
//! every other file copied, `config.json` gets the format's `quantization_config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde_json::Value;

use super::files::{ModelDir, INDEX};
use super::llama::Site;
use super::quantize::Sink;
use crate::algo::LayerResult;
use crate::format::Stored;
use crate::io::writer::{Planned, PlannedWriter};
use crate::{Error, Result};

/// The output folder under construction.
pub struct OutDir {
    target: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl OutDir {
    /// Check `target` against the input folder and create the temporary folder.
    pub fn create(input: &Path, target: &Path) -> Result<OutDir> {
        let bad =
            |reason: String| Error::config("--out", format!("{}: {reason}", target.display()));
        if target.exists() {
            return Err(bad("already exists; refusing to overwrite it".into()));
        }
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let parent = parent
            .canonicalize()
            .map_err(|_| bad(format!("its parent {} does not exist", parent.display())))?;
        let input = input.canonicalize().map_err(|source| Error::Io {
            path: input.to_path_buf(),
            source,
        })?;
        let name = target
            .file_name()
            .ok_or_else(|| bad("not a folder name".into()))?;
        let full = parent.join(name);
        if full.starts_with(&input) {
            return Err(bad(format!(
                "is the input folder {} or inside it; choose a folder elsewhere",
                input.display()
            )));
        }
        let tmp = parent.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        if tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        std::fs::create_dir(&tmp).map_err(|source| Error::Io {
            path: tmp.clone(),
            source,
        })?;
        Ok(OutDir {
            target: full,
            tmp,
            committed: false,
        })
    }

    /// Where files go until [`OutDir::commit`].
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Rename the finished folder into place.
    pub fn commit(mut self) -> Result<PathBuf> {
        std::fs::rename(&self.tmp, &self.target).map_err(|source| Error::Io {
            path: self.target.clone(),
            source,
        })?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Copy every file of the model folder except the weights (config, tokenizer, generation
/// config, …) into `out`; `config.json` gets `dtype` / `torch_dtype` set to `dtype` when the
/// weights change dtype, and the format's `quant` entries (`quantization_config`; mlx's
/// `quantization`) when the output is a quantized format; an input's own entries are removed.
/// GPTQ's `quantization_config` is also written as `quantize_config.json`, which vLLM and
/// GPTQModel read.
pub fn copy_side_files(
    m: &ModelDir,
    out: &Path,
    dtype: Option<&str>,
    quant: &[(&str, Value)],
) -> Result<()> {
    let rd = std::fs::read_dir(&m.dir).map_err(|source| Error::Io {
        path: m.dir.clone(),
        source,
    })?;
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if !p.is_file() || name.ends_with(".safetensors") || name == INDEX {
            continue;
        }
        let dst = out.join(&name);
        if name == "quantize_config.json" || name == "quant_config.json" {
            continue; // an input's own GPTQ config never describes our output
        }
        if name == "config.json" && (dtype.is_some() || !quant.is_empty()) {
            {
                let text = std::fs::read_to_string(&p).map_err(|source| Error::Io {
                    path: p.clone(),
                    source,
                })?;
                let mut v: Value = serde_json::from_str(&text)
                    .map_err(|e| Error::model(&p, "config.json", format!("not valid JSON: {e}")))?;
                if let Some(o) = v.as_object_mut() {
                    if let Some(dt) = dtype {
                        let had_torch = o.contains_key("torch_dtype");
                        o.insert("dtype".into(), Value::from(dt));
                        if had_torch {
                            o.insert("torch_dtype".into(), Value::from(dt));
                        }
                    }
                    o.remove("quantization_config");
                    o.remove("quantization");
                    for (k, q) in quant {
                        o.insert(k.to_string(), q.clone());
                    }
                }
                let text = serde_json::to_string_pretty(&v).expect("JSON");
                std::fs::write(&dst, text + "\n").map_err(|source| Error::Io {
                    path: dst.clone(),
                    source,
                })?;
                continue;
            }
        }
        std::fs::copy(&p, &dst).map_err(|source| Error::Io { path: dst, source })?;
    }
    let gptq = quant
        .iter()
        .find(|(k, q)| *k == "quantization_config" && q["quant_method"] == "gptq");
    if let Some((_, q)) = gptq {
        let path = out.join("quantize_config.json");
        let text = serde_json::to_string_pretty(q).expect("JSON") + "\n";
        std::fs::write(&path, text).map_err(|source| Error::Io { path, source })?;
    }
    Ok(())
}

/// The writer takes a float model: a quantized checkpoint's packed tensors are not the
/// weights it plans (`qronos eval` reads such folders; quantize the float model instead).
pub fn check_float_input(m: &ModelDir) -> Result<()> {
    match m.quant {
        Some(s) => Err(Error::model(
            super::config::config_path(&m.dir),
            "quantization_config",
            format!(
                "{} is already a {} checkpoint: qronos quantize takes the float model",
                m.dir.display(),
                s.format.name()
            ),
        )),
        None => Ok(()),
    }
}

/// The block a tensor belongs to (`model.layers.{i}.…`), if any.
fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// What the writer stores for each quantized linear.
#[derive(Clone, Copy, Debug)]
pub enum Output {
    /// The dequantized weight under its own name, in this dtype.
    Fake(Dtype),
    /// A checkpoint format's packed tensors.
    Packed(Stored),
}

/// Bytes per shard (`--max-shard-size`, default 5 GB as transformers writes them).
pub const MAX_SHARD_BYTES: usize = 5_000_000_000;

/// The checkpoint writer, a [`Sink`] for the pipeline: every tensor of the output in one
/// plan made before the run (the non-quantized tensors copied in their dtype, each quantized
/// linear as [`Output`] says), cut into shards of at most `max_shard_bytes`, each shard a
/// [`PlannedWriter`] whose header is written first. A packed linear is decoded again from
/// the bytes about to be written and must give the in-memory weights bit for bit.
pub struct CheckpointWriter<'m> {
    m: &'m ModelDir,
    out: Output,
    dir: PathBuf,
    shards: Vec<(String, Vec<Planned>)>,
    next_shard: usize,
    current: Option<PlannedWriter>,
    /// The copied (non-quantized) tensors of each block, written before its first linear.
    block_rest: Vec<Vec<String>>,
    blocks_started: usize,
}

/// The quantized linears of block `b` (names without `.weight`), in pipeline order.
fn linear_names(b: usize) -> Vec<String> {
    Site::ALL
        .iter()
        .flat_map(|s| s.modules())
        .map(|module| format!("model.layers.{b}.{module}"))
        .collect()
}

fn encode(q: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F16 => q
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::BF16 => q
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        _ => q.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Cut `plan` into shards of at most `max` bytes (a bigger tensor gets a shard of its own);
/// one shard is `model.safetensors`, more are `model-0000k-of-0000n.safetensors`.
fn shard(plan: Vec<Planned>, max: usize) -> Vec<(String, Vec<Planned>)> {
    let mut parts: Vec<Vec<Planned>> = vec![Vec::new()];
    let mut size = 0;
    for t in plan {
        let b = t.bytes();
        if size > 0 && size + b > max {
            parts.push(Vec::new());
            size = 0;
        }
        size += b;
        parts.last_mut().expect("one part").push(t);
    }
    let n = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let name = if n == 1 {
                super::files::SINGLE.to_string()
            } else {
                format!("model-{:05}-of-{n:05}.safetensors", i + 1)
            };
            (name, p)
        })
        .collect()
}

impl<'m> CheckpointWriter<'m> {
    /// Plan the output in `dir` and write the tensors outside the blocks.
    pub fn create(
        m: &'m ModelDir,
        dir: &Path,
        out: Output,
        max_shard_bytes: usize,
    ) -> Result<CheckpointWriter<'m>> {
        check_float_input(m)?;
        let nb = m.config.num_hidden_layers;
        let owns_bias = matches!(out, Output::Packed(s) if s.format.owns_bias());
        let mut replaced = std::collections::HashSet::new();
        for b in 0..nb {
            for n in linear_names(b) {
                replaced.insert(format!("{n}.weight"));
                if owns_bias {
                    replaced.insert(format!("{n}.bias"));
                }
            }
        }
        let mut head = Vec::new();
        let mut block_rest = vec![Vec::new(); nb];
        for name in m.names() {
            if replaced.contains(&name) {
                continue;
            }
            match block_of(&name) {
                Some(b) if b < nb => block_rest[b].push(name),
                _ => head.push(name),
            }
        }
        let info = |name: &str| -> Planned {
            let (dt, shape, _) = m.raw(name).expect("listed tensors exist");
            Planned {
                name: name.to_string(),
                dtype: dt,
                shape,
            }
        };
        let mut plan: Vec<Planned> = head.iter().map(|n| info(n)).collect();
        for (b, rest) in block_rest.iter().enumerate() {
            plan.extend(rest.iter().map(|n| info(n)));
            for n in linear_names(b) {
                let (_, shape, _) = m.raw(&format!("{n}.weight")).expect("validated on open");
                match out {
                    Output::Fake(dtype) => plan.push(Planned {
                        name: format!("{n}.weight"),
                        dtype,
                        shape,
                    }),
                    Output::Packed(s) => {
                        let bias = s.format.owns_bias() && m.has(&format!("{n}.bias"));
                        plan.extend(s.plan(&n, shape[0], shape[1], bias));
                    }
                }
            }
        }
        let mut w = CheckpointWriter {
            m,
            out,
            dir: dir.to_path_buf(),
            shards: shard(plan, max_shard_bytes),
            next_shard: 0,
            current: None,
            block_rest,
            blocks_started: 0,
        };
        for n in &head {
            let (_, _, bytes) = m.raw(n).expect("listed");
            w.write(n, bytes)?;
        }
        Ok(w)
    }

    /// Write the next planned tensor, opening the next shard when one is full.
    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        if self.current.as_ref().is_none_or(|c| c.expects().is_none()) {
            if let Some(done) = self.current.take() {
                done.finish()?;
            }
            let (file, plan) = &self.shards[self.next_shard];
            let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
            self.current = Some(PlannedWriter::create(
                &self.dir.join(file),
                plan.clone(),
                Some(meta),
            )?);
            self.next_shard += 1;
        }
        self.current.as_mut().expect("opened").write(name, bytes)
    }

    /// Finish the last shard and, with more than one, write the index.
    pub fn finish(mut self) -> Result<()> {
        if let Some(done) = self.current.take() {
            done.finish()?;
        }
        assert_eq!(
            self.next_shard,
            self.shards.len(),
            "writer: shards left unwritten"
        );
        if self.shards.len() > 1 {
            let mut map = serde_json::Map::new();
            let mut total = 0usize;
            for (file, plan) in &self.shards {
                for t in plan {
                    total += t.bytes();
                    map.insert(t.name.clone(), Value::from(file.clone()));
                }
            }
            let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": map});
            let path = self.dir.join(INDEX);
            let text = serde_json::to_string_pretty(&index).expect("JSON") + "\n";
            std::fs::write(&path, text).map_err(|source| Error::Io { path, source })?;
        }
        Ok(())
    }
}

impl Sink for CheckpointWriter<'_> {
    fn linear(&mut self, block: usize, name: &str, r: &LayerResult) -> Result<()> {
        while self.blocks_started <= block {
            for n in self.block_rest[self.blocks_started].clone() {
                let (_, _, bytes) = self.m.raw(&n).expect("listed");
                self.write(&n, bytes)?;
            }
            self.blocks_started += 1;
        }
        match self.out {
            Output::Fake(dtype) => self.write(&format!("{name}.weight"), &encode(&r.q, dtype)),
            Output::Packed(s) => {
                let bias = self
                    .m
                    .raw(&format!("{name}.bias"))
                    .filter(|_| s.format.owns_bias());
                let plan = s.plan(name, r.m, r.d, bias.is_some());
                let bytes = s.encode(name, r, bias)?;
                verify(&s, name, r, &plan, &bytes)?;
                for (t, b) in plan.iter().zip(&bytes) {
                    self.write(&t.name, b)?;
                }
                Ok(())
            }
        }
    }
}

/// The packed tensors of `name` must decode to `r.q` bit for bit.
fn verify(
    s: &Stored,
    name: &str,
    r: &LayerResult,
    plan: &[Planned],
    bytes: &[Vec<u8>],
) -> Result<()> {
    let get = |n: &str| -> Result<crate::format::RawTensor<'_>> {
        let i = plan
            .iter()
            .position(|t| t.name == n)
            .ok_or_else(|| Error::Tensor {
                path: PathBuf::new(),
                tensor: n.to_string(),
                reason: "not written".into(),
            })?;
        Ok((plan[i].dtype, plan[i].shape.clone(), &bytes[i][..]))
    };
    let w = s.decode(&get, name, r.m, r.d)?;
    if let Some(i) = (0..w.len()).find(|&i| w[i].to_bits() != r.q[i].to_bits()) {
        return Err(Error::Tensor {
            path: PathBuf::new(),
            tensor: name.to_string(),
            reason: format!(
                "{} bytes decode to {} at [{}, {}], the quantized weight is {}",
                s.format.name(),
                w[i],
                i / r.d,
                i % r.d,
                r.q[i]
            ),
        });
    }
    Ok(())
}

//! Writing a quantized model folder. The folder is built under a temporary name beside the
//! target and renamed at the end ([`OutDir::commit`]); dropped before that (an error, a
//! cancellation), it is removed, so a failed run leaves nothing. An output that is the input
//! folder or inside it is refused.
//!
//! Formats: `fake` — the dequantized weights under the input's tensor names (f32 unless a
//! dtype is asked for), every other tensor copied unchanged, every other file copied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde_json::Value;

use super::files::{ModelDir, INDEX};
use super::llama::Site;
use super::quantize::Sink;
use crate::algo::LayerResult;
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
/// weights change dtype.
pub fn copy_side_files(m: &ModelDir, out: &Path, dtype: Option<&str>) -> Result<()> {
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
        if name == "config.json" {
            if let Some(dt) = dtype {
                let text = std::fs::read_to_string(&p).map_err(|source| Error::Io {
                    path: p.clone(),
                    source,
                })?;
                let mut v: Value = serde_json::from_str(&text)
                    .map_err(|e| Error::model(&p, "config.json", format!("not valid JSON: {e}")))?;
                if let Some(o) = v.as_object_mut() {
                    let had_torch = o.contains_key("torch_dtype");
                    o.insert("dtype".into(), Value::from(dt));
                    if had_torch {
                        o.insert("torch_dtype".into(), Value::from(dt));
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
    Ok(())
}

/// The block a tensor belongs to (`model.layers.{i}.…`), if any.
fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Weights written as `fake` quantization: see the module docs. A [`Sink`] for the pipeline.
pub struct FakeWriter<'m> {
    m: &'m ModelDir,
    w: PlannedWriter,
    dtype: Dtype,
    /// The copied (non-quantized) tensors of each block, written before its first linear.
    block_rest: Vec<Vec<String>>,
    blocks_started: usize,
}

/// The quantized linear weights of block `b`, in the order the pipeline produces them.
fn linear_names(b: usize) -> Vec<String> {
    Site::ALL
        .iter()
        .flat_map(|s| s.modules())
        .map(|module| format!("model.layers.{b}.{module}.weight"))
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

impl<'m> FakeWriter<'m> {
    /// Plan `dir/model.safetensors` and write its header and the tensors outside the blocks.
    pub fn create(m: &'m ModelDir, dir: &Path, dtype: Dtype) -> Result<FakeWriter<'m>> {
        let nb = m.config.num_hidden_layers;
        let quantized: std::collections::HashSet<String> = (0..nb).flat_map(linear_names).collect();
        let mut head = Vec::new();
        let mut block_rest = vec![Vec::new(); nb];
        for name in m.names() {
            if quantized.contains(&name) {
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
                let (_, shape, _) = m.raw(&n).expect("validated on open");
                plan.push(Planned {
                    name: n,
                    dtype,
                    shape,
                });
            }
        }
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let mut w = PlannedWriter::create(&dir.join("model.safetensors"), plan, Some(meta))?;
        for n in &head {
            let (_, _, bytes) = m.raw(n).expect("listed");
            w.write(n, bytes)?;
        }
        Ok(FakeWriter {
            m,
            w,
            dtype,
            block_rest,
            blocks_started: 0,
        })
    }

    pub fn finish(self) -> Result<()> {
        self.w.finish()
    }
}

impl Sink for FakeWriter<'_> {
    fn linear(&mut self, block: usize, name: &str, r: &LayerResult) -> Result<()> {
        while self.blocks_started <= block {
            for n in &self.block_rest[self.blocks_started] {
                let (_, _, bytes) = self.m.raw(n).expect("listed");
                self.w.write(n, bytes)?;
            }
            self.blocks_started += 1;
        }
        self.w
            .write(&format!("{name}.weight"), &encode(&r.q, self.dtype))
    }
}

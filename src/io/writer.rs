//! A safetensors file written tensor by tensor, in a planned order, without holding the
//! model in memory: the header (every name, dtype, shape and offset) is known up front — the
//! pipeline knows what it will produce — and is written first; the data follows as it is
//! produced. The file is written under a temporary name and renamed by [`finish`]; dropped
//! unfinished (an error, a cancellation), the temporary file is removed.
//!
//! [`finish`]: PlannedWriter::finish

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use safetensors::Dtype;

use crate::{Error, Result};

/// One planned tensor.
#[derive(Clone, Debug)]
pub struct Planned {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl Planned {
    pub fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.bitsize() / 8
    }
}

/// See the module docs.
pub struct PlannedWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
    plan: Vec<Planned>,
    next: usize,
}

impl PlannedWriter {
    /// Create `path`'s temporary file and write the header. Keys of `metadata` and tensors
    /// are sorted in the header (so the same plan gives the same bytes); the data is laid out
    /// in plan order.
    pub fn create(
        path: &Path,
        plan: Vec<Planned>,
        metadata: Option<BTreeMap<String, String>>,
    ) -> Result<PlannedWriter> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut header = serde_json::Map::new();
        if let Some(meta) = metadata {
            header.insert("__metadata__".into(), serde_json::json!(meta));
        }
        let mut offset = 0usize;
        for t in &plan {
            let len = t.bytes();
            let entry = serde_json::json!({
                "dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, offset + len],
            });
            if t.name == "__metadata__" || header.insert(t.name.clone(), entry).is_some() {
                return Err(Error::Tensor {
                    path: path.to_path_buf(),
                    tensor: t.name.clone(),
                    reason: "planned twice".into(),
                });
            }
            offset += len;
        }
        let mut head = serde_json::to_vec(&header).expect("JSON of strings and numbers");
        head.resize(head.len().next_multiple_of(8), b' ');
        let name = path.file_name().ok_or_else(|| {
            Error::config("--out", format!("{}: not a file path", path.display()))
        })?;
        let tmp = path.with_file_name(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let mut w = PlannedWriter {
            path: path.to_path_buf(),
            tmp: tmp.clone(),
            file: None,
            plan,
            next: 0,
        };
        let mut f = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io)?);
        f.write_all(&(head.len() as u64).to_le_bytes())
            .and_then(|_| f.write_all(&head))
            .map_err(io)?;
        w.file = Some(f);
        Ok(w)
    }

    /// The name of the next tensor the plan expects, if any.
    pub fn expects(&self) -> Option<&str> {
        self.plan.get(self.next).map(|t| t.name.as_str())
    }

    /// Write the next planned tensor (`name` must be it; `bytes` little-endian, its size).
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(t) = self.plan.get(self.next) else {
            panic!("writer: tensor {name} beyond the plan");
        };
        assert_eq!(t.name, name, "writer: tensors out of plan order");
        assert_eq!(bytes.len(), t.bytes(), "writer: {name}: byte count");
        let f = self.file.as_mut().expect("open until finish");
        f.write_all(bytes).map_err(|source| Error::Io {
            path: self.tmp.clone(),
            source,
        })?;
        self.next += 1;
        Ok(())
    }

    /// All planned tensors written: fsync and rename into place.
    pub fn finish(mut self) -> Result<()> {
        assert_eq!(
            self.next,
            self.plan.len(),
            "writer: finished after {} of {} tensors",
            self.next,
            self.plan.len()
        );
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let f = self.file.take().expect("open until finish");
        let f = f.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(io)?;
        Ok(())
    }
}

impl Drop for PlannedWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

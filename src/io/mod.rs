//! Reading and writing safetensors files: memory-mapped reads with validation that names the
//! file and tensor; writes that go to a temporary file first and are renamed into place, so a
//! failed run never leaves a partial or overwritten output.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

pub mod case;

use crate::{Error, Result};

/// A memory-mapped safetensors file whose header has been validated.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
}

/// An f32 tensor read from a file: borrowed from the map when aligned, else copied.
pub struct F32Tensor<'a> {
    pub shape: Vec<usize>,
    pub data: Cow<'a, [f32]>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and lives as long as `self`. Another process
        // truncating or rewriting the file while we read it would be undefined behaviour; like
        // every mmap-based model loader we document that input files must not change while
        // qronos runs. Outputs are never written in place (see `write_atomic`), so qronos
        // itself never modifies a mapped file.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        SafeTensors::deserialize(&mmap).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            mmap,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.mmap).expect("validated in open")
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.st().names().into_iter().map(String::from).collect();
        v.sort();
        v
    }

    pub fn has(&self, name: &str) -> bool {
        self.st().tensor(name).is_ok()
    }

    fn tensor_err(&self, name: &str, reason: impl Into<String>) -> Error {
        Error::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            reason: reason.into(),
        }
    }

    /// An f32 tensor of the given rank, or `None` if absent. Rejects other dtypes / ranks and
    /// NaN / Inf values.
    pub fn f32_tensor(&self, name: &str, rank: usize) -> Result<Option<F32Tensor<'_>>> {
        let st = self.st();
        let view = match st.tensor(name) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        };
        if view.dtype() != Dtype::F32 {
            return Err(self.tensor_err(name, format!("dtype {:?}, expected F32", view.dtype())));
        }
        let shape = view.shape().to_vec();
        if shape.len() != rank {
            return Err(self.tensor_err(
                name,
                format!(
                    "rank {} (shape {:?}), expected rank {rank}",
                    shape.len(),
                    shape
                ),
            ));
        }
        let bytes: &[u8] = view.data();
        let data: Cow<'_, [f32]> = match bytemuck::try_cast_slice::<u8, f32>(bytes) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
        };
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            let count = data.iter().filter(|v| !v.is_finite()).count();
            return Err(self.tensor_err(
                name,
                format!(
                    "{count} non-finite value(s), first {} at flat index {i}",
                    data[i]
                ),
            ));
        }
        Ok(Some(F32Tensor { shape, data }))
    }

    /// Like [`Self::f32_tensor`] but the tensor must exist.
    pub fn require_f32(&self, name: &str, rank: usize) -> Result<F32Tensor<'_>> {
        self.f32_tensor(name, rank)?
            .ok_or_else(|| self.tensor_err(name, "missing"))
    }
}

/// One tensor to write: name, dtype, shape, little-endian bytes.
pub struct OutTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl OutTensor {
    pub fn f32(name: &str, shape: Vec<usize>, data: &[f32]) -> Self {
        OutTensor {
            name: name.into(),
            dtype: Dtype::F32,
            shape,
            bytes: bytemuck::cast_slice(data).to_vec(),
        }
    }
    pub fn i32(name: &str, shape: Vec<usize>, data: &[i32]) -> Self {
        OutTensor {
            name: name.into(),
            dtype: Dtype::I32,
            shape,
            bytes: bytemuck::cast_slice(data).to_vec(),
        }
    }
}

/// Same file? Compares canonical paths (so `./a` and `a`, or a symlink, count as the same).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Serialize to `path.tmp-<pid>` in the same directory, fsync, then rename over `path`.
pub fn write_atomic(
    path: &Path,
    tensors: Vec<OutTensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| Error::Tensor {
                    path: path.to_path_buf(),
                    tensor: t.name.clone(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, metadata).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::config("--out", format!("{}: not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

//! Reading and writing safetensors files: memory-mapped reads with validation that names the
//! file and tensor; writes that go to a temporary file first and are renamed into place, so a
//! failed run never leaves a partial or overwritten output.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

pub mod case;
pub mod writer;

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
        if all_finite(&data) {
            return Ok(Some(F32Tensor { shape, data }));
        }
        if let Some(e) = self.non_finite(name, &data) {
            return Err(e);
        }
        Ok(Some(F32Tensor { shape, data }))
    }

    /// A tensor's dtype, shape and raw little-endian bytes (borrowed from the map), or `None`.
    pub fn raw_tensor(&self, name: &str) -> Option<(Dtype, Vec<usize>, &[u8])> {
        let st = SafeTensors::deserialize(&self.mmap).expect("validated in open");
        let view = st.tensor(name).ok()?;
        Some((view.dtype(), view.shape().to_vec(), view.data()))
    }

    /// Drop the pages of `bytes` (a slice of this map) from the process's resident set once
    /// they have been converted: a model is read once, tensor by tensor, and its mapped pages
    /// would otherwise all stay counted against the process (the 270 MB SmolLM2 file, a
    /// 16 GB 8B model). Only whole pages inside the slice are released; failure is harmless.
    fn release(&self, bytes: &[u8]) {
        #[cfg(unix)]
        {
            const PAGE: usize = 4096;
            let base = self.mmap.as_ptr() as usize;
            let start = (bytes.as_ptr() as usize - base).next_multiple_of(PAGE);
            let end = (bytes.as_ptr() as usize - base + bytes.len()) / PAGE * PAGE;
            if end > start {
                // SAFETY: the map is a read-only file mapping; MADV_DONTNEED on it only
                // drops cached pages, which are read from the file again on the next access.
                // No slice into the range is written to, and later reads see the same bytes.
                let _ = unsafe {
                    self.mmap.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
            }
        }
        #[cfg(not(unix))]
        let _ = bytes;
    }

    /// Shape and dtype of a tensor, or `None` if absent (reads only the header).
    pub fn tensor_info(&self, name: &str) -> Option<(Dtype, Vec<usize>)> {
        let st = self.st();
        let view = st.tensor(name).ok()?;
        Some((view.dtype(), view.shape().to_vec()))
    }

    /// A floating-point tensor (F32, F16 or BF16 in the file) converted to f32, or `None` if
    /// absent. Checks the shape against `expected` and rejects NaN / Inf, naming the tensor.
    pub fn float_tensor(&self, name: &str, expected: &[usize]) -> Result<Option<Vec<f32>>> {
        let st = self.st();
        let view = match st.tensor(name) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        };
        if view.shape() != expected {
            return Err(self.tensor_err(
                name,
                format!(
                    "shape {:?}, expected {:?} from config.json",
                    view.shape(),
                    expected
                ),
            ));
        }
        let bytes: &[u8] = view.data();
        let Some(data) = decode_float(view.dtype(), bytes) else {
            return Err(self.tensor_err(
                name,
                format!("dtype {:?}, expected F32, F16 or BF16", view.dtype()),
            ));
        };
        self.release(bytes);
        if !all_finite(&data) {
            if let Some(e) = self.non_finite(name, &data) {
                return Err(e);
            }
        }
        Ok(Some(data))
    }

    /// The error for a tensor holding NaN / Inf (how many, the first and where), if it does.
    fn non_finite(&self, name: &str, data: &[f32]) -> Option<Error> {
        let i = data.iter().position(|v| !v.is_finite())?;
        let count = data.iter().filter(|v| !v.is_finite()).count();
        Some(self.tensor_err(
            name,
            format!(
                "{count} non-finite value(s), first {} at flat index {i}",
                data[i]
            ),
        ))
    }

    /// Like [`Self::f32_tensor`] but the tensor must exist.
    pub fn require_f32(&self, name: &str, rank: usize) -> Result<F32Tensor<'_>> {
        self.f32_tensor(name, rank)?
            .ok_or_else(|| self.tensor_err(name, "missing"))
    }
}

/// Little-endian F32 / F16 / BF16 bytes as f32 (`None` for other dtypes).
pub fn decode_float(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Whether every value is finite: branch-free over blocks (so it vectorises), large tensors
/// split over the cores (the first pass over a memory-mapped tensor also pages it in).
fn all_finite(data: &[f32]) -> bool {
    const BLOCK: usize = 4096;
    let finite = |part: &[f32]| {
        part.chunks(BLOCK)
            .all(|c| c.iter().fold(true, |ok, v| ok & v.is_finite()))
    };
    let threads = crate::algo::threads();
    if threads == 1 || data.len() < 1 << 22 {
        return finite(data);
    }
    let per = data.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = data
            .chunks(per)
            .map(|p| s.spawn(move || finite(p)))
            .collect();
        parts.into_iter().all(|h| h.join().expect("finite check"))
    })
}

/// One tensor to write: name, dtype, shape, little-endian bytes (borrowed from the caller's
/// data on little-endian machines, so writing copies nothing).
pub struct OutTensor<'a> {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Cow<'a, [u8]>,
}

impl<'a> OutTensor<'a> {
    pub fn f32(name: &str, shape: Vec<usize>, data: &'a [f32]) -> Self {
        OutTensor {
            name: name.into(),
            dtype: Dtype::F32,
            shape,
            bytes: le_bytes(data, |v| v.to_le_bytes()),
        }
    }
    pub fn i32(name: &str, shape: Vec<usize>, data: &'a [i32]) -> Self {
        OutTensor {
            name: name.into(),
            dtype: Dtype::I32,
            shape,
            bytes: le_bytes(data, |v| v.to_le_bytes()),
        }
    }
    /// The same tensor owning its bytes.
    pub fn into_owned(self) -> OutTensor<'static> {
        OutTensor {
            bytes: Cow::Owned(self.bytes.into_owned()),
            ..self
        }
    }
}

fn le_bytes<T: bytemuck::Pod>(data: &[T], le: impl Fn(&T) -> [u8; 4]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(data))
    } else {
        Cow::Owned(data.iter().flat_map(le).collect())
    }
}

/// Same file? Compares canonical paths (so `./a` and `a`, or a symlink, count as the same).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Writes a safetensors file to `.<name>.tmp-<pid>` in the same directory (streamed, no
/// in-memory copy), fsyncs it, then renames it over `path`; on any failure the temporary file
/// is removed and `path` is untouched. The header is written here rather than by
/// `safetensors::serialize`, whose metadata `HashMap` comes out in a random order: keys are
/// sorted, tensors laid out in the order given, so the same tensors give the same bytes.
pub fn write_atomic(
    path: &Path,
    tensors: Vec<OutTensor<'_>>,
    metadata: Option<BTreeMap<String, String>>,
) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let tensor_err = |t: &OutTensor<'_>, reason: String| Error::Tensor {
        path: path.to_path_buf(),
        tensor: t.name.clone(),
        reason,
    };
    let mut header = serde_json::Map::new();
    if let Some(meta) = metadata {
        header.insert("__metadata__".into(), serde_json::json!(meta));
    }
    let mut offset = 0usize;
    for t in &tensors {
        let len = t.shape.iter().product::<usize>() * t.dtype.bitsize() / 8;
        if len != t.bytes.len() {
            return Err(tensor_err(
                t,
                format!(
                    "{} bytes for shape {:?} {:?}",
                    t.bytes.len(),
                    t.shape,
                    t.dtype
                ),
            ));
        }
        let entry = serde_json::json!({
            "dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, offset + len],
        });
        if t.name == "__metadata__" || header.insert(t.name.clone(), entry).is_some() {
            return Err(tensor_err(t, "duplicate tensor name".into()));
        }
        offset += len;
    }
    let mut head = serde_json::to_vec(&header).expect("JSON of strings and numbers");
    // the data starts 8-byte aligned (the header is padded with spaces, as the format allows)
    head.resize(head.len().next_multiple_of(8), b' ');
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::config("--out", format!("{}: not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        f.write_all(&(head.len() as u64).to_le_bytes())?;
        f.write_all(&head)?;
        for t in &tensors {
            f.write_all(&t.bytes)?;
        }
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(a: &'a [f32], c: &'a [i32]) -> Vec<OutTensor<'a>> {
        vec![
            OutTensor::f32("Q", vec![2, 3], a),
            OutTensor::i32("codes", vec![3, 2], c),
        ]
    }

    #[test]
    fn writes_are_byte_identical_and_readable() {
        let dir = std::env::temp_dir().join(format!("qronos-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, c) = (
            [1.5f32, -2.0, 0.0, 3.25, 7.0, -0.5],
            [0i32, 1, 2, 3, 14, 15],
        );
        let meta: BTreeMap<String, String> =
            (0..20).map(|i| (format!("k{i}"), i.to_string())).collect();
        let paths = [dir.join("a.safetensors"), dir.join("b.safetensors")];
        for p in &paths {
            write_atomic(p, sample(&a, &c), Some(meta.clone())).unwrap();
        }
        let bytes = std::fs::read(&paths[0]).unwrap();
        assert_eq!(bytes, std::fs::read(&paths[1]).unwrap());
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!((8 + header_len) % 8, 0, "data must start 8-byte aligned");
        let (_, info) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(info.metadata().as_ref().unwrap()["k7"], "7");
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let q = st.tensor("Q").unwrap();
        assert_eq!((q.dtype(), q.shape()), (Dtype::F32, &[2usize, 3][..]));
        assert_eq!(q.data(), bytemuck::cast_slice::<f32, u8>(&a));
        assert_eq!(
            st.tensor("codes").unwrap().data(),
            bytemuck::cast_slice::<i32, u8>(&c)
        );

        // a tensor whose bytes do not match its shape: an error naming it, nothing written
        let bad = dir.join("bad.safetensors");
        let mut t = sample(&a, &c);
        t[1].shape = vec![4, 2];
        let err = write_atomic(&bad, t, None).unwrap_err().to_string();
        assert!(err.contains("codes"), "{err}");
        assert!(!bad.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

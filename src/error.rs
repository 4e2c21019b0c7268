//! The library's one error type. Data problems are errors with context (file, tensor, flag);
//! programming bugs are panics (asserts), as in faer.

use std::path::PathBuf;

/// Everything the library can report to a caller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file is malformed (bad header, offsets past the end, ...).
    #[error("{path}: not a valid safetensors file: {reason}")]
    Format { path: PathBuf, reason: String },
    /// A tensor is missing, has the wrong dtype / rank / shape, or holds NaN / Inf.
    #[error("{path}: tensor `{tensor}`: {reason}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    /// A model folder is unusable: a `config.json` key is missing or unsupported, a file is
    /// absent, an index names a shard that is not there. `key` names the key / tensor / file.
    #[error("{path}: {key}: {reason}")]
    Model {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// A configuration value is out of range; `flag` names the CLI flag / config field.
    #[error("invalid {flag}: {reason}")]
    Config { flag: String, reason: String },
    /// The damped Hessian stayed non positive definite after every damping retry.
    #[error("Cholesky factorisation failed at column {column} even with damping {damping:e} (after {retries} retries)")]
    NotPositiveDefinite {
        column: usize,
        damping: f64,
        retries: u32,
    },
    /// No usable GPU adapter (or the device could not be created).
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// A GPU operation failed (validation, out of memory, device lost, map failure).
    #[error("GPU error in {op}: {reason}")]
    Gpu { op: String, reason: String },
    /// The caller asked to stop (cancellation through the progress callback).
    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn config(flag: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            flag: flag.into(),
            reason: reason.into(),
        }
    }
    pub fn model(
        path: impl Into<PathBuf>,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Model {
            path: path.into(),
            key: key.into(),
            reason: reason.into(),
        }
    }
    pub fn gpu(op: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Gpu {
            op: op.into(),
            reason: reason.to_string(),
        }
    }
}

//! The model's tokenizer: the `tokenizers` crate (pure Rust, `fancy-regex`; no system
//! libraries) on the folder's `tokenizer.json`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::config::ModelConfig;
use crate::{Error, Result};

/// A loaded tokenizer and the special ids the protocols need.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// From config.json's `bos_token_id`, else `tokenizer_config.json`'s `bos_token`.
    pub bos_token_id: Option<u32>,
}

impl Tokenizer {
    /// `dir/tokenizer.json`; `config` supplies the BOS id when it names one.
    pub fn open(dir: &Path, config: &ModelConfig) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::model(
                dir,
                "tokenizer.json",
                "missing (the model folder needs a Hugging Face tokenizer.json)",
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::model(&path, "tokenizer.json", format!("cannot load: {e}")))?;
        let bos_token_id = match config.bos_token_id {
            Some(id) => Some(id),
            None => bos_from_tokenizer_config(dir, &inner),
        };
        Ok(Tokenizer {
            inner,
            path,
            bos_token_id,
        })
    }

    /// Token ids of `text`; `special` adds the tokenizer's own special tokens (its
    /// post-processor, e.g. a BOS), as transformers' `add_special_tokens=True` does.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, special)
            .map_err(|e| Error::model(&self.path, "tokenizer.json", format!("encode: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::model(&self.path, "tokenizer.json", format!("decode: {e}")))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

fn bos_from_tokenizer_config(dir: &Path, tok: &tokenizers::Tokenizer) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let bos = v.get("bos_token")?;
    let s = bos
        .as_str()
        .or_else(|| bos.get("content").and_then(Value::as_str))?;
    tok.token_to_id(s)
}

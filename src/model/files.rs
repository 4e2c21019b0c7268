//! A Hugging Face model folder on disk: `config.json`, the weights (`model.safetensors`, or
//! shards named by `model.safetensors.index.json`), memory-mapped through the validated
//! reader of [`crate::io`]. Tensors are converted to f32 one at a time, when asked for; the
//! whole model is never converted at once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde_json::Value;

use super::config::ModelConfig;
use crate::format::{Format, Stored};
use crate::io::SafetensorsFile;
use crate::{Error, Result};

/// The single-file weights name.
pub const SINGLE: &str = "model.safetensors";
/// The shard index name.
pub const INDEX: &str = "model.safetensors.index.json";

/// An opened model folder.
pub struct ModelDir {
    pub dir: PathBuf,
    pub config: ModelConfig,
    /// How the decoder blocks' linears are stored, when the folder is a quantized checkpoint
    /// (`quantization_config` in config.json); their weights are dequantized on load.
    pub quant: Option<Stored>,
    shards: Vec<SafetensorsFile>,
    /// tensor name → shard index
    map: HashMap<String, usize>,
}

impl ModelDir {
    /// Open `dir`: parse config.json, map every shard, and check that each tensor the config
    /// implies is present with the right shape and a float dtype (headers only; no weights
    /// are read).
    pub fn open(dir: &Path) -> Result<ModelDir> {
        if !dir.exists() {
            return Err(Error::model(dir, "model folder", "does not exist"));
        }
        if !dir.is_dir() {
            return Err(Error::model(dir, "model folder", "not a directory"));
        }
        let config = ModelConfig::load(dir)?;
        let cpath = super::config::config_path(dir);
        let raw: Value = std::fs::read_to_string(&cpath)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let quant = Stored::from_config(&cpath, &raw)?;
        let (shards, map) = open_weights(dir)?;
        let m = ModelDir {
            dir: dir.to_path_buf(),
            config,
            quant,
            shards,
            map,
        };
        // the last block first: an absurd num_hidden_layers is then one missing tensor, not
        // a list of every name it implies
        let c = &m.config;
        let last = format!(
            "model.layers.{}.input_layernorm.weight",
            c.num_hidden_layers - 1
        );
        m.check(&last, &[c.hidden_size])?;
        for (name, shape) in super::llama::expected_tensors(&m.config) {
            match m.quantized(&name) {
                Some((s, p)) => {
                    let info = |n: &str| -> Result<(Dtype, Vec<usize>)> {
                        match m.map.get(n) {
                            Some(&i) => Ok(m.shards[i].tensor_info(n).expect("indexed")),
                            None => Err(Error::Tensor {
                                path: PathBuf::new(),
                                tensor: n.to_string(),
                                reason: "missing (config.json declares a quantized checkpoint)"
                                    .into(),
                            }),
                        }
                    };
                    s.check_stored(&info, p, shape[0], shape[1])
                        .map_err(|e| m.locate(e))?;
                }
                None => m.check(&name, &shape)?,
            }
        }
        Ok(m)
    }

    /// The stored layout and module name when `name` is a quantized matrix's weight: a decoder
    /// block's linear, or in an mlx folder any module with `.scales` (mlx-lm also quantizes
    /// the embedding and an untied lm_head, and leaves a module float when it has none).
    fn quantized<'n>(&self, name: &'n str) -> Option<(Stored, &'n str)> {
        let s = self.quant?;
        let p = name.strip_suffix(".weight")?;
        let ours = if s.format == Format::Mlx {
            self.map.contains_key(&format!("{p}.scales"))
        } else {
            p.starts_with("model.layers.") && p.ends_with("_proj")
        };
        ours.then_some((s, p))
    }

    /// `e` with the file its tensor is in (or where it was looked for).
    fn locate(&self, e: Error) -> Error {
        match e {
            Error::Tensor { tensor, reason, .. } => Error::Tensor {
                path: self.where_(&tensor),
                tensor,
                reason,
            },
            e => e,
        }
    }

    /// The file a tensor is in, or where it was looked for.
    fn where_(&self, name: &str) -> PathBuf {
        match self.map.get(name) {
            Some(&i) => self.shards[i].path().to_path_buf(),
            None if self.dir.join(INDEX).exists() => self.dir.join(INDEX),
            None => self.dir.join(SINGLE),
        }
    }

    /// Every tensor name in the weight files, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map.keys().cloned().collect();
        v.sort();
        v
    }

    /// A tensor's dtype, shape and raw bytes as stored (for copying it unchanged).
    pub fn raw(&self, name: &str) -> Option<(Dtype, Vec<usize>, &[u8])> {
        let &i = self.map.get(name)?;
        self.shards[i].raw_tensor(name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Total bytes of the weight files.
    pub fn weight_bytes(&self) -> u64 {
        self.shards
            .iter()
            .filter_map(|s| std::fs::metadata(s.path()).ok())
            .map(|m| m.len())
            .sum()
    }

    /// The distinct dtypes of the tensors (for reports).
    pub fn dtypes(&self) -> Vec<String> {
        let mut set = BTreeMap::new();
        for (name, &i) in &self.map {
            if let Some((dt, _)) = self.shards[i].tensor_info(name) {
                set.insert(format!("{dt:?}"), ());
            }
        }
        set.into_keys().collect()
    }

    fn check(&self, name: &str, shape: &[usize]) -> Result<()> {
        let Some(&i) = self.map.get(name) else {
            return Err(Error::Tensor {
                path: self.where_(name),
                tensor: name.to_string(),
                reason: format!("missing (expected shape {shape:?} from config.json)"),
            });
        };
        let (dt, got) = self.shards[i]
            .tensor_info(name)
            .expect("indexed tensors exist");
        let err = |reason: String| Error::Tensor {
            path: self.shards[i].path().to_path_buf(),
            tensor: name.to_string(),
            reason,
        };
        if got != shape {
            return Err(err(format!(
                "shape {got:?}, expected {shape:?} from config.json"
            )));
        }
        if !matches!(dt, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(err(format!("dtype {dt:?}, expected F32, F16 or BF16")));
        }
        Ok(())
    }

    /// Tensor `name` as f32 (row-major, in the file's shape), checked against `shape`. A
    /// quantized linear's weight is dequantized from its packed tensors.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        if let Some((s, p)) = self.quantized(name) {
            let get = |n: &str| -> Result<crate::format::RawTensor<'_>> {
                self.raw(n).ok_or_else(|| Error::Tensor {
                    path: self.where_(n),
                    tensor: n.to_string(),
                    reason: "missing".into(),
                })
            };
            return s
                .decode(&get, p, shape[0], shape[1])
                .map_err(|e| self.locate(e));
        }
        self.check(name, shape)?;
        let i = self.map[name];
        self.shards[i]
            .float_tensor(name, shape)?
            .ok_or_else(|| Error::Tensor {
                path: self.shards[i].path().to_path_buf(),
                tensor: name.to_string(),
                reason: "missing".into(),
            })
    }
}

type Weights = (Vec<SafetensorsFile>, HashMap<String, usize>);

fn open_weights(dir: &Path) -> Result<Weights> {
    let index = dir.join(INDEX);
    if index.exists() {
        return open_sharded(dir, &index);
    }
    let single = dir.join(SINGLE);
    if !single.exists() {
        return Err(Error::model(
            dir,
            SINGLE,
            format!("no {SINGLE} and no {INDEX} in the model folder"),
        ));
    }
    let f = SafetensorsFile::open(&single)?;
    let map = f.names().into_iter().map(|n| (n, 0)).collect();
    Ok((vec![f], map))
}

fn open_sharded(dir: &Path, index: &Path) -> Result<Weights> {
    let text = std::fs::read_to_string(index).map_err(|source| Error::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::model(index, INDEX, format!("not valid JSON: {e}")))?;
    let wm = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::model(index, "weight_map", "missing or not an object"))?;
    let mut files: Vec<String> = Vec::new();
    let mut by_file: HashMap<String, usize> = HashMap::new();
    let mut named: Vec<(String, usize)> = Vec::new();
    for (tensor, file) in wm {
        let file = file.as_str().ok_or_else(|| {
            Error::model(index, format!("weight_map.{tensor}"), "not a file name")
        })?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(Error::model(
                index,
                format!("weight_map.{tensor}"),
                format!("{file:?} is not a plain file name in the model folder"),
            ));
        }
        let i = *by_file.entry(file.to_string()).or_insert_with(|| {
            files.push(file.to_string());
            files.len() - 1
        });
        named.push((tensor.clone(), i));
    }
    let mut shards = Vec::with_capacity(files.len());
    for f in &files {
        let p = dir.join(f);
        if !p.exists() {
            return Err(Error::model(
                index,
                format!("weight_map → {f}"),
                format!(
                    "the index names shard {f}, which is not in {}",
                    dir.display()
                ),
            ));
        }
        shards.push(SafetensorsFile::open(&p)?);
    }
    let mut map = HashMap::new();
    for (tensor, i) in named {
        if !shards[i].has(&tensor) {
            return Err(Error::Tensor {
                path: shards[i].path().to_path_buf(),
                tensor,
                reason: format!("named by {INDEX} but not in this shard"),
            });
        }
        map.insert(tensor, i);
    }
    Ok((shards, map))
}

//! Checkpoints: safetensors files with the model's timm/torchvision tensor names, its
//! [`ModelConfig`] as JSON in the `config` metadata (so a checkpoint alone rebuilds its model), and
//! optionally training state ([`Extras`]: optimiser tensors under their own prefix, trainer
//! metadata). Files are written atomically; loading checks every tensor's presence, shape and dtype
//! and names everything that is wrong.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use cvn_autograd::io::{save, Stored, TensorFile};
use cvn_autograd::Tensor;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::params::Kind;

/// Metadata key of the model configuration.
pub const CONFIG_KEY: &str = "config";

/// What a checkpoint holds besides the model: tensors whose names lie outside the model's modules
/// (e.g. `optimizer.blocks.0.mlp.fc1.weight.exp_avg`) and metadata strings (e.g. a `trainer` JSON
/// with epoch, step and seeds).
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl Extras {
    /// Stores named tensors (e.g. `Optimizer::state()`, on any device) as 1-D tensors
    /// `<group>.<name>`.
    pub fn insert_group(&mut self, group: &str, values: BTreeMap<String, Tensor>) -> Result<()> {
        for (name, t) in values {
            let len = t.len();
            self.tensors.insert(format!("{group}.{name}"), t.reshape(&[len])?);
        }
        Ok(())
    }

    /// The tensors stored under `group` by [`Extras::insert_group`], without the prefix (flat).
    pub fn group(&self, group: &str) -> BTreeMap<String, Tensor> {
        let prefix = format!("{group}.");
        self.tensors.iter().filter_map(|(k, t)| k.strip_prefix(&prefix).map(|name| (name.to_string(), t.clone()))).collect()
    }
}

fn ckpt_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.display().to_string(), detail: detail.into() }
}

/// The first component of a tensor name (`blocks`, `layer1`, `cls_token`): the model's top-level
/// modules, which extra tensors may not use.
fn root(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

impl Model {
    /// Writes the model (and `extras`) to `path` atomically (temporary file + rename).
    pub fn save(&self, path: &Path, extras: &Extras) -> Result<()> {
        let roots: BTreeSet<&str> = self.params().entries().iter().map(|e| root(&e.name)).collect();
        let mut tensors = BTreeMap::new();
        for e in self.params().entries() {
            let stored = match e.kind {
                Kind::Counter => {
                    Stored::I64 { shape: e.tensor.shape().to_vec(), values: e.tensor.to_vec()?.iter().map(|v| *v as i64).collect() }
                }
                _ => Stored::F32(e.tensor.clone()),
            };
            tensors.insert(e.name.clone(), stored);
        }
        for (name, t) in &extras.tensors {
            if roots.contains(root(name)) {
                return Err(ckpt_err(
                    path,
                    format!("extra tensor `{name}` lies inside the model's module `{}`; use another prefix", root(name)),
                ));
            }
            tensors.insert(name.clone(), Stored::F32(t.clone()));
        }
        if extras.metadata.contains_key(CONFIG_KEY) {
            return Err(ckpt_err(path, format!("extra metadata may not use the key `{CONFIG_KEY}`, which holds the model configuration")));
        }
        let mut metadata: HashMap<String, String> = extras.metadata.clone().into_iter().collect();
        metadata.insert(CONFIG_KEY.to_string(), self.config().to_json());
        Ok(save(path, &tensors, &metadata)?)
    }

    /// Rebuilds a model from a checkpoint: configuration from its metadata, then every tensor.
    pub fn load(path: &Path) -> Result<(Self, Extras)> {
        let bytes = read(path)?;
        let config = config_of(&bytes, path)?;
        let mut model = Model::new(config, 0)?;
        let extras = model.fill(&bytes, path)?;
        Ok((model, extras))
    }

    /// Replaces this model's tensors with those of a checkpoint (whose configuration may differ in
    /// ways that do not change tensors, e.g. the number of competitors).
    pub fn load_weights(&mut self, path: &Path) -> Result<Extras> {
        self.fill(&read(path)?, path)
    }

    fn fill(&mut self, bytes: &[u8], path: &Path) -> Result<Extras> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| ckpt_err(path, format!("not a safetensors file: {e}")))?;
        let infos = header.tensors();
        let mut problems = Vec::new();
        for e in self.params().entries() {
            let expected = if e.kind == Kind::Counter { Dtype::I64 } else { Dtype::F32 };
            match infos.get(&e.name) {
                // PyTorch fills in a missing `num_batches_tracked` too (checkpoints from before it existed).
                None if e.kind == Kind::Counter => {}
                None => problems.push(format!("`{}` is missing (expected {expected:?} {:?})", e.name, e.tensor.shape())),
                Some(info) => {
                    if info.dtype != expected {
                        problems.push(format!("`{}` has dtype {:?}, expected {expected:?}", e.name, info.dtype));
                    }
                    if info.shape != e.tensor.shape() {
                        problems.push(format!("`{}` has shape {:?}, expected {:?}", e.name, info.shape, e.tensor.shape()));
                    }
                }
            }
        }
        let roots: BTreeSet<&str> = self.params().entries().iter().map(|e| root(&e.name)).collect();
        let mut unexpected: Vec<&String> =
            infos.keys().filter(|name| roots.contains(root(name)) && self.params().get(name).is_none()).collect();
        unexpected.sort();
        problems.extend(unexpected.iter().map(|name| format!("unexpected tensor `{name}`")));
        if !problems.is_empty() {
            return Err(ckpt_err(path, format!("does not match the model: {}", problems.join("; "))));
        }
        let mut file = TensorFile::from_bytes(bytes).map_err(|e| ckpt_err(path, e.to_string()))?;
        for e in self.params_mut().entries_mut() {
            e.tensor = match (file.tensors.remove(&e.name), e.kind.trainable()) {
                (Some(t), true) => t.requiring_grad(),
                (Some(t), false) => t,
                (None, _) => Tensor::zeros(e.tensor.shape()),
            };
        }
        file.metadata.remove(CONFIG_KEY);
        Ok(Extras { tensors: file.tensors, metadata: file.metadata.into_iter().collect() })
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| ckpt_err(path, format!("cannot read: {e}")))
}

/// The model configuration in a checkpoint's metadata.
pub fn config_of(bytes: &[u8], path: &Path) -> Result<ModelConfig> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| ckpt_err(path, format!("not a safetensors file: {e}")))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CONFIG_KEY))
        .ok_or_else(|| ckpt_err(path, format!("no `{CONFIG_KEY}` metadata: the file does not say which model it holds")))?;
    ModelConfig::from_json(json, &path.display().to_string())
}

//! Checkpoint files. A model file holds the model's tensors alone, under their timm/torchvision
//! names, with its [`ModelConfig`] as JSON in the `config` metadata — so it rebuilds its model here
//! and loads with `load_state_dict(strict=True)` in PyTorch. Training state ([`Extras`]: optimiser
//! tensors under their own prefix, trainer metadata) lives in a file of its own. Loading checks
//! every tensor's presence, shape and dtype and names everything that is wrong; a tensor the model
//! does not have is an error too (except in [`Model::load_checkpoint`], the old single-file layout
//! that kept the training state beside the weights).
//!
//! Every file goes through [`write`] (atomic: temporary file + rename).

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

/// The prefix `torch.nn.parallel.DistributedDataParallel` (and `DataParallel`) puts before every
/// name of the state dict it saves.
pub const DDP_PREFIX: &str = "module.";

/// What a training-state file holds: tensors that are not the model's (e.g.
/// `optimizer.blocks.0.mlp.fc1.weight.exp_avg`) and metadata strings (e.g. a `trainer` JSON with
/// epoch, step and seeds).
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

    /// Writes the tensors and metadata to `path` (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors = self.tensors.iter().map(|(k, t)| (k.clone(), Stored::F32(t.clone()))).collect();
        write(path, &tensors, &self.metadata)
    }

    /// Reads a file written by [`Extras::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let file = TensorFile::from_bytes(&read(path)?).map_err(|e| ckpt_err(path, e.to_string()))?;
        Ok(Self { tensors: file.tensors, metadata: file.metadata.into_iter().collect() })
    }
}

/// The one writer of the checkpoint layout's safetensors files (model, training state, argmax
/// BatchNorm statistics, predictions): atomic, so an interrupted save never destroys the last file.
pub fn write(path: &Path, tensors: &BTreeMap<String, Stored>, metadata: &BTreeMap<String, String>) -> Result<()> {
    let metadata: HashMap<String, String> = metadata.clone().into_iter().collect();
    Ok(save(path, tensors, &metadata)?)
}

fn ckpt_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.display().to_string(), detail: detail.into() }
}

/// The first component of a tensor name (`blocks`, `layer1`, `cls_token`): the model's top-level
/// modules, which extra tensors may not use.
fn root(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// The header of a safetensors file (name → dtype and shape) and its tensors as f32, under names
/// that may be rewritten before a model takes them (see [`StateDict::strip_prefix`]).
#[derive(Debug)]
pub struct StateDict {
    infos: BTreeMap<String, (Dtype, Vec<usize>)>,
    file: TensorFile,
}

impl StateDict {
    /// Reads a safetensors file; errors name it.
    pub fn read(path: &Path) -> Result<Self> {
        Self::parse(&read(path)?, path)
    }

    fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| ckpt_err(path, format!("not a safetensors file: {e}")))?;
        let infos = header.tensors().into_iter().map(|(name, info)| (name, (info.dtype, info.shape.clone()))).collect();
        let file = TensorFile::from_bytes(bytes).map_err(|e| ckpt_err(path, e.to_string()))?;
        Ok(Self { infos, file })
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.infos.keys().map(String::as_str)
    }

    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.file.metadata
    }

    /// Removes `prefix` from every name when every name has it (a DDP state dict); returns how many
    /// names changed (0 when none has it). Some names with it and some without is an error naming
    /// both kinds, as no PyTorch wrapper writes such a file.
    pub fn strip_prefix(&mut self, prefix: &str, path: &Path) -> Result<usize> {
        let (with, without): (Vec<&String>, Vec<&String>) = self.infos.keys().partition(|n| n.starts_with(prefix));
        if with.is_empty() {
            return Ok(0);
        }
        if !without.is_empty() {
            return Err(ckpt_err(
                path,
                format!(
                    "{} tensors start with `{prefix}` (e.g. `{}`) and {} do not (e.g. `{}`): not one state dict",
                    with.len(),
                    with[0],
                    without.len(),
                    without[0]
                ),
            ));
        }
        let strip = |name: String| name[prefix.len()..].to_string();
        self.infos = std::mem::take(&mut self.infos).into_iter().map(|(k, v)| (strip(k), v)).collect();
        self.file.tensors = std::mem::take(&mut self.file.tensors).into_iter().map(|(k, v)| (strip(k), v)).collect();
        Ok(self.infos.len())
    }
}

impl Model {
    /// Writes the model's tensors alone, its configuration in the `config` metadata, and
    /// `metadata` (e.g. the epoch it was saved at) to `path` atomically.
    pub fn save(&self, path: &Path, metadata: &BTreeMap<String, String>) -> Result<()> {
        if metadata.contains_key(CONFIG_KEY) {
            return Err(ckpt_err(path, format!("extra metadata may not use the key `{CONFIG_KEY}`, which holds the model configuration")));
        }
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
        let mut metadata = metadata.clone();
        metadata.insert(CONFIG_KEY.to_string(), self.config().to_json());
        write(path, &tensors, &metadata)
    }

    /// Rebuilds a model from a model file: configuration from its metadata, then every tensor. A
    /// tensor that is not the model's is an error.
    pub fn load(path: &Path) -> Result<Self> {
        let dict = StateDict::read(path)?;
        let mut model = Model::new(config_in(&dict, path)?, 0)?;
        model.fill(dict, path, true)?;
        Ok(model)
    }

    /// [`Model::load`] for a file that may also hold training state outside the model's modules
    /// (the old single-file `checkpoint.safetensors`), which is returned.
    pub fn load_checkpoint(path: &Path) -> Result<(Self, Extras)> {
        let dict = StateDict::read(path)?;
        let mut model = Model::new(config_in(&dict, path)?, 0)?;
        let extras = model.fill(dict, path, false)?;
        Ok((model, extras))
    }

    /// Replaces this model's tensors with those of a model file (whose configuration may differ in
    /// ways that do not change tensors, e.g. the number of competitors).
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        self.load_state_dict(StateDict::read(path)?, path)
    }

    /// Replaces this model's tensors with those of `dict` (read from `path`, which errors name),
    /// as `load_state_dict(strict=True)` does: every tensor of the model present with its shape and
    /// dtype, and no other.
    pub fn load_state_dict(&mut self, dict: StateDict, path: &Path) -> Result<()> {
        self.fill(dict, path, true).map(drop)
    }

    /// Checks and takes the tensors of `dict`; those outside the model's modules are returned, or
    /// with `strict` an error (e.g. a distilled DeiT's `dist_token`, an old checkpoint's optimiser
    /// state), named with every other problem.
    fn fill(&mut self, dict: StateDict, path: &Path, strict: bool) -> Result<Extras> {
        let StateDict { infos, mut file } = dict;
        let mut problems = Vec::new();
        for e in self.params().entries() {
            let expected = if e.kind == Kind::Counter { Dtype::I64 } else { Dtype::F32 };
            match infos.get(&e.name) {
                // PyTorch fills in a missing `num_batches_tracked` too (checkpoints from before it existed).
                None if e.kind == Kind::Counter => {}
                None => problems.push(format!("`{}` is missing (expected {expected:?} {:?})", e.name, e.tensor.shape())),
                Some((dtype, shape)) => {
                    if *dtype != expected {
                        problems.push(format!("`{}` has dtype {dtype:?}, expected {expected:?}", e.name));
                    }
                    if shape != e.tensor.shape() {
                        problems.push(format!("`{}` has shape {shape:?}, expected {:?}", e.name, e.tensor.shape()));
                    }
                }
            }
        }
        let roots: BTreeSet<&str> = self.params().entries().iter().map(|e| root(&e.name)).collect();
        let unexpected: Vec<&String> =
            infos.keys().filter(|name| roots.contains(root(name)) && self.params().get(name).is_none()).collect();
        problems.extend(unexpected.iter().map(|name| format!("unexpected tensor `{name}`")));
        let outside: Vec<String> = infos.keys().filter(|name| !roots.contains(root(name))).map(|n| format!("`{n}`")).collect();
        if strict && !outside.is_empty() {
            problems.push(format!("tensors the model does not have: {}", outside.join(", ")));
        }
        if !problems.is_empty() {
            return Err(ckpt_err(path, format!("does not match the model: {}", problems.join("; "))));
        }
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

/// The configuration in a state dict's `config` metadata.
fn config_in(dict: &StateDict, path: &Path) -> Result<ModelConfig> {
    let json = dict
        .metadata()
        .get(CONFIG_KEY)
        .ok_or_else(|| ckpt_err(path, format!("no `{CONFIG_KEY}` metadata: the file does not say which model it holds")))?;
    ModelConfig::from_json(json, &path.display().to_string())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| ckpt_err(path, format!("cannot read: {e}")))
}

/// The model configuration in a model file's metadata.
pub fn config_of(bytes: &[u8], path: &Path) -> Result<ModelConfig> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| ckpt_err(path, format!("not a safetensors file: {e}")))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CONFIG_KEY))
        .ok_or_else(|| ckpt_err(path, format!("no `{CONFIG_KEY}` metadata: the file does not say which model it holds")))?;
    ModelConfig::from_json(json, &path.display().to_string())
}

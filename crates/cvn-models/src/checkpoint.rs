//! Checkpoint files. A model file holds the model's tensors alone, under their timm/torchvision
//! names, with its [`ModelConfig`] as JSON in the `config` metadata — so it rebuilds its model here
//! and loads with `load_state_dict(strict=True)` in PyTorch. Training state ([`Extras`]: optimiser
//! tensors under their own prefix, trainer metadata) lives in a file of its own.
//!
//! Every file goes through [`write`]: atomic and durable, with a content hash
//! ([`cvn_autograd::io::serialize`]). Reading checks the hash (files without one, e.g. PyTorch's,
//! load unverified: [`Integrity::Unhashed`]) and that every value is finite; loading a model checks
//! every tensor's presence, shape and dtype against those its configuration implies *before* the
//! model is built (a lying configuration cannot make it allocate more than the file holds) and
//! names everything that is wrong; a tensor the model does not have is an error too (except in
//! [`Model::load_checkpoint`], the old single-file layout that kept the training state beside the
//! weights).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use cvn_autograd::io::{write_atomically, Integrity, Stored, TensorFile};
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
    /// Read from a file: whether its content hash was checked ([`Integrity::Unhashed`] for files
    /// written before they carried one, or by other tools).
    pub integrity: Integrity,
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
        Ok(write_atomically(path, &self.encode(path)?)?)
    }

    /// The bytes [`Extras::save`] writes.
    pub(crate) fn encode(&self, path: &Path) -> Result<Vec<u8>> {
        let tensors = self.tensors.iter().map(|(k, t)| (k.clone(), Stored::F32(t.clone()))).collect();
        encode(path, &tensors, &self.metadata)
    }

    /// Reads a file written by [`Extras::save`] (content hash and finiteness checked).
    pub fn load(path: &Path) -> Result<Self> {
        let file = read_file(path)?;
        Ok(Self { tensors: file.tensors, metadata: file.metadata.into_iter().collect(), integrity: file.integrity })
    }
}

/// The one writer of the checkpoint layout's safetensors files (model, training state, argmax
/// BatchNorm statistics, predictions): with a content hash, atomic and durable, so an interrupted
/// save never destroys the last file.
pub fn write(path: &Path, tensors: &BTreeMap<String, Stored>, metadata: &BTreeMap<String, String>) -> Result<()> {
    Ok(write_atomically(path, &encode(path, tensors, metadata)?)?)
}

/// The bytes [`write`] writes (for writing several files as one step:
/// [`cvn_autograd::io::write_all_atomically`]).
pub(crate) fn encode(path: &Path, tensors: &BTreeMap<String, Stored>, metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let metadata: HashMap<String, String> = metadata.clone().into_iter().collect();
    Ok(cvn_autograd::io::encode(path, tensors, &metadata)?)
}

fn ckpt_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.display().to_string(), detail: detail.into() }
}

/// The first component of a tensor name (`blocks`, `layer1`, `cls_token`): the model's top-level
/// modules, which extra tensors may not use.
fn root(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// A safetensors file read as far as its header (name → dtype and shape, metadata), under names
/// that may be rewritten before a model takes them (see [`StateDict::strip_prefix`]). The header is
/// checked against the model before the tensors are parsed, with the content hash (when the file
/// has one) and that every value is finite.
#[derive(Debug)]
pub struct StateDict {
    infos: BTreeMap<String, (Dtype, Vec<usize>)>,
    metadata: HashMap<String, String>,
    bytes: Vec<u8>,
    /// Length of the prefix [`StateDict::strip_prefix`] removed from every name.
    stripped: usize,
}

impl StateDict {
    /// Reads a safetensors file's header; errors name it.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = read(path)?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| ckpt_err(path, format!("not a safetensors file: {e}")))?;
        let infos = header.tensors().into_iter().map(|(name, info)| (name, (info.dtype, info.shape.clone()))).collect();
        let mut metadata = header.metadata().clone().unwrap_or_default();
        metadata.remove(cvn_autograd::io::CONTENT_HASH_KEY);
        Ok(Self { infos, metadata, bytes, stripped: 0 })
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.infos.keys().map(String::as_str)
    }

    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The tensors, their content hash (when there is one) and finiteness checked, under the
    /// (stripped) names of the header.
    fn into_file(self, path: &Path) -> Result<TensorFile> {
        let mut file = read_verified(&self.bytes, path)?;
        if self.stripped > 0 {
            file.tensors = std::mem::take(&mut file.tensors).into_iter().map(|(k, v)| (k[self.stripped..].to_string(), v)).collect();
        }
        Ok(file)
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
        self.stripped += prefix.len();
        Ok(self.infos.len())
    }
}

impl Model {
    /// Writes the model's tensors alone, its configuration in the `config` metadata, and
    /// `metadata` (e.g. the epoch it was saved at) to `path` atomically.
    pub fn save(&self, path: &Path, metadata: &BTreeMap<String, String>) -> Result<()> {
        Ok(write_atomically(path, &self.encode(path, metadata)?)?)
    }

    /// The bytes [`Model::save`] writes.
    pub(crate) fn encode(&self, path: &Path, metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
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
        encode(path, &tensors, &metadata)
    }

    /// Rebuilds a model from a model file: configuration from its metadata; every tensor checked
    /// against those the configuration implies before the model is built, then filled in. A tensor
    /// that is not the model's is an error.
    pub fn load(path: &Path) -> Result<Self> {
        Ok(Self::read_model(path, true)?.0)
    }

    /// [`Model::load`] for a file that may also hold training state outside the model's modules
    /// (the old single-file `checkpoint.safetensors`), which is returned with the file's
    /// [`Integrity`].
    pub fn load_checkpoint(path: &Path) -> Result<(Self, Extras)> {
        Self::read_model(path, false)
    }

    fn read_model(path: &Path, strict: bool) -> Result<(Self, Extras)> {
        let dict = StateDict::read(path)?;
        let config = config_in(&dict, path)?;
        let expected = Model::expected_tensors(&config)?;
        check_tensors(&dict.infos, path, expected.iter().map(|(name, shape, kind)| (name.as_str(), shape.as_slice(), *kind)), strict)?;
        let file = dict.into_file(path)?;
        let mut model = Model::new(config, 0)?;
        let extras = model.fill(file);
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
        check_tensors(&dict.infos, path, self.params().entries().iter().map(|e| (e.name.as_str(), e.tensor.shape(), e.kind)), true)?;
        let file = dict.into_file(path)?;
        self.fill(file);
        Ok(())
    }

    /// Moves a checked file's tensors into the model; what is left are the extras.
    fn fill(&mut self, mut file: TensorFile) -> Extras {
        for e in self.params_mut().entries_mut() {
            e.tensor = match (file.tensors.remove(&e.name), e.kind.trainable()) {
                (Some(t), true) => t.requiring_grad(),
                (Some(t), false) => t,
                (None, _) => Tensor::zeros(e.tensor.shape()),
            };
        }
        file.metadata.remove(CONFIG_KEY);
        Extras { tensors: file.tensors, metadata: file.metadata.into_iter().collect(), integrity: file.integrity }
    }
}

/// Compares a file's header (`infos`) with the tensors a model has (`expected`: name, shape,
/// kind); one error lists every missing, mis-typed, mis-shaped and unexpected tensor, and with
/// `strict` those outside the model's modules (e.g. a distilled DeiT's `dist_token`, an old
/// checkpoint's optimiser state).
fn check_tensors<'a>(
    infos: &BTreeMap<String, (Dtype, Vec<usize>)>,
    path: &Path,
    expected: impl Iterator<Item = (&'a str, &'a [usize], Kind)> + Clone,
    strict: bool,
) -> Result<()> {
    let mut problems = Vec::new();
    for (name, shape, kind) in expected.clone() {
        let dtype = if kind == Kind::Counter { Dtype::I64 } else { Dtype::F32 };
        match infos.get(name) {
            // PyTorch fills in a missing `num_batches_tracked` too (checkpoints from before it existed).
            None if kind == Kind::Counter => {}
            None => problems.push(format!("`{name}` is missing (expected {dtype:?} {shape:?})")),
            Some((stored_dtype, stored_shape)) => {
                if *stored_dtype != dtype {
                    problems.push(format!("`{name}` has dtype {stored_dtype:?}, expected {dtype:?}"));
                }
                if stored_shape != shape {
                    problems.push(format!("`{name}` has shape {stored_shape:?}, expected {shape:?}"));
                }
            }
        }
    }
    let names: BTreeSet<&str> = expected.clone().map(|(name, _, _)| name).collect();
    let roots: BTreeSet<&str> = names.iter().map(|name| root(name)).collect();
    let unexpected: Vec<&String> = infos.keys().filter(|name| roots.contains(root(name)) && !names.contains(name.as_str())).collect();
    problems.extend(unexpected.iter().map(|name| format!("unexpected tensor `{name}`")));
    let outside: Vec<String> = infos.keys().filter(|name| !roots.contains(root(name))).map(|n| format!("`{n}`")).collect();
    if strict && !outside.is_empty() {
        problems.push(format!("tensors the model does not have: {}", outside.join(", ")));
    }
    if !problems.is_empty() {
        return Err(ckpt_err(path, format!("does not match the model: {}", problems.join("; "))));
    }
    Ok(())
}

/// Reads a safetensors file of the project's (training state, argmax BatchNorm statistics),
/// checking its content hash (when it has one) and that every value is finite; errors name it.
pub(crate) fn read_file(path: &Path) -> Result<TensorFile> {
    read_verified(&read(path)?, path)
}

/// Parses a safetensors file, checking its content hash (when it has one) and that every value is
/// finite.
fn read_verified(bytes: &[u8], path: &Path) -> Result<TensorFile> {
    let file = TensorFile::from_bytes(bytes).map_err(|e| ckpt_err(path, e.detail()))?;
    file.require_finite().map_err(|e| ckpt_err(path, e.detail()))?;
    Ok(file)
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

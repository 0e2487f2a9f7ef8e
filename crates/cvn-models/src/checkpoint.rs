//! Checkpoints: safetensors files with the model's timm/torchvision tensor names, its
//! [`ModelConfig`] as JSON in the `config` metadata (so a checkpoint alone rebuilds its model), and
//! optionally training state ([`Extras`]: optimiser tensors under their own prefix, trainer
//! metadata). Files are written atomically with a content hash ([`cvn_autograd::io::serialize`]);
//! loading checks every tensor's presence, shape and dtype against the configuration before the
//! model is built, then the hash and that every value is finite, and names everything that is wrong.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use cvn_autograd::io::{save, Integrity, Stored, TensorFile};
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
    /// Read from a checkpoint: whether its content hash was checked ([`Integrity::Unhashed`] for
    /// files written before checkpoints carried one, or by other tools).
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

    /// Rebuilds a model from a checkpoint: configuration from its metadata; every tensor's
    /// presence, dtype and shape compared with those the configuration implies *before* the model
    /// is built (a lying configuration cannot make it allocate more than the file holds); then the
    /// content hash and every value's finiteness checked, and the tensors filled in.
    pub fn load(path: &Path) -> Result<(Self, Extras)> {
        let bytes = read(path)?;
        let config = config_of(&bytes, path)?;
        let expected = Model::expected_tensors(&config)?;
        check_tensors(&bytes, path, expected.iter().map(|(name, shape, kind)| (name.as_str(), shape.as_slice(), *kind)))?;
        let file = read_verified(&bytes, path)?;
        let mut model = Model::new(config, 0)?;
        let extras = model.fill(file);
        Ok((model, extras))
    }

    /// Replaces this model's tensors with those of a checkpoint (whose configuration may differ in
    /// ways that do not change tensors, e.g. the number of competitors).
    pub fn load_weights(&mut self, path: &Path) -> Result<Extras> {
        let bytes = read(path)?;
        check_tensors(&bytes, path, self.params().entries().iter().map(|e| (e.name.as_str(), e.tensor.shape(), e.kind)))?;
        let file = read_verified(&bytes, path)?;
        Ok(self.fill(file))
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

/// Compares a checkpoint's header with the tensors a model has (`expected`: name, shape, kind);
/// one error lists every missing, mis-typed, mis-shaped and unexpected tensor.
fn check_tensors<'a>(bytes: &[u8], path: &Path, expected: impl Iterator<Item = (&'a str, &'a [usize], Kind)> + Clone) -> Result<()> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| ckpt_err(path, format!("not a safetensors file: {e}")))?;
    let infos = header.tensors();
    let mut problems = Vec::new();
    for (name, shape, kind) in expected.clone() {
        let dtype = if kind == Kind::Counter { Dtype::I64 } else { Dtype::F32 };
        match infos.get(name) {
            // PyTorch fills in a missing `num_batches_tracked` too (checkpoints from before it existed).
            None if kind == Kind::Counter => {}
            None => problems.push(format!("`{name}` is missing (expected {dtype:?} {shape:?})")),
            Some(info) => {
                if info.dtype != dtype {
                    problems.push(format!("`{name}` has dtype {:?}, expected {dtype:?}", info.dtype));
                }
                if info.shape != shape {
                    problems.push(format!("`{name}` has shape {:?}, expected {shape:?}", info.shape));
                }
            }
        }
    }
    let names: BTreeSet<&str> = expected.clone().map(|(name, _, _)| name).collect();
    let roots: BTreeSet<&str> = names.iter().map(|name| root(name)).collect();
    let mut unexpected: Vec<&String> = infos.keys().filter(|name| roots.contains(root(name)) && !names.contains(name.as_str())).collect();
    unexpected.sort();
    problems.extend(unexpected.iter().map(|name| format!("unexpected tensor `{name}`")));
    if !problems.is_empty() {
        return Err(ckpt_err(path, format!("does not match the model: {}", problems.join("; "))));
    }
    Ok(())
}

/// Parses a checkpoint, checking its content hash and that every value is finite.
fn read_verified(bytes: &[u8], path: &Path) -> Result<TensorFile> {
    let file = TensorFile::from_bytes(bytes).map_err(|e| ckpt_err(path, e.detail()))?;
    file.require_finite().map_err(|e| ckpt_err(path, e.detail()))?;
    Ok(file)
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

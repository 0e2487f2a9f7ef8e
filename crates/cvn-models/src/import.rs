//! PyTorch state dicts in (`cargo xtask import`): a plain safetensors file as timm, torchvision or
//! DISCOVER's code write it (`tools/pth_to_safetensors.py` converts their `.pth` pickles) becomes
//! a run folder that `eval`, `predict`, `dissect` and `train --resume` (fine-tuning) accept.
//!
//! The file carries no configuration, so a preset (and, where the file's shapes differ from it,
//! [`ShapeOverrides`]) says which model it holds. Loading is `load_state_dict(strict=True)`:
//! a `module.` prefix (DistributedDataParallel) is stripped and reported; a missing, mis-shaped or
//! extra tensor (a distilled DeiT's `dist_token` / `head_dist`) is an error naming each one.

use std::path::{Path, PathBuf};

use crate::argmax_bn::{ArgmaxBatchNorm, BnRecalibration};
use crate::checkpoint::{StateDict, DDP_PREFIX};
use crate::config::{ModelConfig, Stem};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::run::{self, ARGMAX_BN_FILE, MODEL_FILE};
use crate::run_lock::RunLock;
use crate::train::{self, TrainConfig, TrainData, TrainError};

/// Sizes that replace the preset's, each named after its command-line flag.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShapeOverrides {
    pub num_classes: Option<usize>,
    pub in_chans: Option<usize>,
    /// ViT only.
    pub img_size: Option<usize>,
    pub patch_size: Option<usize>,
    pub embed_dim: Option<usize>,
    pub depth: Option<usize>,
    pub num_heads: Option<usize>,
    /// ResNet only: channels of layer1..layer4.
    pub widths: Option<Vec<usize>>,
    pub stem: Option<Stem>,
}

impl ShapeOverrides {
    /// `config` with these sizes; a ViT flag on a ResNet (or the reverse) is an error naming it.
    pub fn apply(&self, config: ModelConfig) -> Result<ModelConfig> {
        let not_for = |flag: &str, arch: &str| Error::Config { what: "import", detail: format!("{flag} does not apply to a {arch}") };
        let mut config = config;
        match &mut config {
            ModelConfig::Vit(c) => {
                if self.widths.is_some() {
                    return Err(not_for("--widths", "ViT"));
                }
                if self.stem.is_some() {
                    return Err(not_for("--stem", "ViT"));
                }
                let sizes = [
                    (&mut c.num_classes, self.num_classes),
                    (&mut c.in_chans, self.in_chans),
                    (&mut c.img_size, self.img_size),
                    (&mut c.patch_size, self.patch_size),
                    (&mut c.embed_dim, self.embed_dim),
                    (&mut c.depth, self.depth),
                    (&mut c.num_heads, self.num_heads),
                ];
                for (field, value) in sizes {
                    if let Some(v) = value {
                        *field = v;
                    }
                }
            }
            ModelConfig::ResNet18(c) => {
                let vit_only = [
                    ("--img-size", self.img_size),
                    ("--patch-size", self.patch_size),
                    ("--embed-dim", self.embed_dim),
                    ("--depth", self.depth),
                    ("--num-heads", self.num_heads),
                ];
                if let Some((flag, _)) = vit_only.iter().find(|(_, v)| v.is_some()) {
                    return Err(not_for(flag, "ResNet"));
                }
                if let Some(v) = self.num_classes {
                    c.num_classes = v;
                }
                if let Some(v) = self.in_chans {
                    c.in_chans = v;
                }
                if let Some(w) = &self.widths {
                    c.widths.clone_from(w);
                }
                if let Some(s) = self.stem {
                    c.stem = s;
                }
            }
        }
        config.validate()?;
        Ok(config)
    }
}

/// A state dict read into a model, and what was done to its names.
#[derive(Debug)]
pub struct ReadStateDict {
    pub model: Model,
    /// Sentences for the user (e.g. the stripped `module.` prefix).
    pub notes: Vec<String>,
}

/// Reads the state dict `path` into a model of `config` (strictly: see the module docs).
pub fn read_state_dict(path: &Path, config: ModelConfig) -> Result<ReadStateDict> {
    let mut dict = StateDict::read(path)?;
    let mut notes = Vec::new();
    let stripped = dict.strip_prefix(DDP_PREFIX, path)?;
    if stripped > 0 {
        notes.push(format!("stripped the `{DDP_PREFIX}` prefix (DistributedDataParallel) from all {stripped} tensor names"));
    }
    let distilled = dict.names().any(|n| n == "dist_token" || n.starts_with("head_dist."));
    let mut model = Model::new(config, 0)?;
    model.load_state_dict(dict, path).map_err(|e| match e {
        Error::Checkpoint { path, detail } if distilled => Error::Checkpoint {
            path,
            detail: format!(
                "{detail} (a distilled DeiT: this project's ViT has a class token and one head, no distillation token or second head)"
            ),
        },
        other => other,
    })?;
    Ok(ReadStateDict { model, notes })
}

/// What [`import_run`] wrote.
#[derive(Debug)]
pub struct Imported {
    pub model_file: PathBuf,
    pub notes: Vec<String>,
    /// For a BatchNorm CVN: the argmax BatchNorm statistics' file and the images they were
    /// estimated on.
    pub argmax_bn: Option<(PathBuf, usize)>,
}

/// Imports the state dict `file` as a model of `train.model_config()` into the new run folder
/// `dir` (model, training state with `train` and no optimiser state, and for a BatchNorm CVN its
/// argmax BatchNorm statistics, estimated on `train`'s training data).
pub fn import_run(file: &Path, dir: &Path, train: TrainConfig) -> std::result::Result<Imported, TrainError> {
    let taken = || TrainError::Run { path: dir.display().to_string(), detail: "already holds a model: import into a new folder".into() };
    if run::has_model(dir) {
        return Err(taken());
    }
    let ReadStateDict { model, notes } = read_state_dict(file, train.model_config()?)?;
    // Estimated before anything is written, so a failure leaves no half-made run.
    let argmax_bn = if ArgmaxBatchNorm::needed(&model) {
        let data = TrainData::load(&train)?;
        Some(ArgmaxBatchNorm::estimate(&model, &BnRecalibration::from_training_set(data.train.clone(), &data.source, train.seed))?)
    } else {
        None
    };
    // One writer at a time; taken only now (it creates the folder), so a failure above leaves
    // nothing behind.
    let _lock = RunLock::acquire(dir)?;
    if run::has_model(dir) {
        return Err(taken());
    }
    train::write_untrained_run(dir, &model, train)?;
    let argmax_bn = match argmax_bn {
        Some(stats) => {
            let path = dir.join(ARGMAX_BN_FILE);
            stats.save(&path)?;
            Some((path, stats.images))
        }
        None => None,
    };
    Ok(Imported { model_file: dir.join(MODEL_FILE), notes, argmax_bn })
}

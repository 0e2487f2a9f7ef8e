//! The files of a run folder (`runs/NAME/`), which `train` writes and `import` creates:
//! * `model.safetensors` — the model's tensors alone under timm/torchvision names, the
//!   [`crate::ModelConfig`] JSON in the `config` metadata and the epochs trained in `epochs_done`;
//!   loads with `load_state_dict(strict=True)` in timm/torchvision.
//! * `training_state.safetensors` — the optimiser state (tensors `optimizer.<param>.<slot>`) and the
//!   trainer state (`trainer` metadata: training configuration, epochs done, step, time spent). The
//!   trainer state is the whole RNG state too: every generator (data order, augmentation, LWTA
//!   noise, dropout) is counter-based on `(seed, epoch, sample)` or `(seed, step)`.
//! * `argmax_bn.safetensors` — BatchNorm CVNs only: the statistics of the deterministic pass
//!   ([`ArgmaxBatchNorm`]).
//!
//! Each is written atomically and durably with a content hash ([`crate::checkpoint::write`]), and
//! checked against it (and for finite values) on reading. A run of the old single-file layout (`checkpoint.safetensors`: the
//! weights with the optimiser state and trainer metadata beside them) still reads; training it
//! further writes the new layout and removes the old file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::argmax_bn::{ArgmaxBatchNorm, BnRecalibration};
use crate::checkpoint::Extras;
use crate::error::{Error, Result};
use crate::model::Model;
use cvn_autograd::io::Integrity;

pub const MODEL_FILE: &str = "model.safetensors";
pub const TRAINING_STATE_FILE: &str = "training_state.safetensors";
pub const ARGMAX_BN_FILE: &str = "argmax_bn.safetensors";
/// The old single-file layout (model, optimiser and trainer state together).
pub const LEGACY_CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// `model.safetensors` metadata: epochs trained when it was written (checked against the
/// training state, which is written just before it).
pub const EPOCHS_KEY: &str = "epochs_done";

fn run_err(dir: &Path, detail: impl Into<String>) -> Error {
    Error::Checkpoint { path: dir.display().to_string(), detail: detail.into() }
}

/// Whether `dir` holds a model (either layout).
pub fn has_model(dir: &Path) -> bool {
    dir.join(MODEL_FILE).is_file() || dir.join(LEGACY_CHECKPOINT_FILE).is_file()
}

/// The file a run's model is read from: `model.safetensors`, else the old `checkpoint.safetensors`.
pub fn model_file(dir: &Path) -> Result<PathBuf> {
    [MODEL_FILE, LEGACY_CHECKPOINT_FILE].iter().map(|f| dir.join(f)).find(|p| p.is_file()).ok_or_else(|| {
        run_err(dir, format!("no {MODEL_FILE} (nor an old {LEGACY_CHECKPOINT_FILE}): not a run folder, or its first epoch never finished"))
    })
}

/// A run's model with the file it came from and that file's metadata (besides the configuration).
#[derive(Debug, Clone)]
pub struct RunModel {
    pub model: Model,
    pub path: PathBuf,
    pub metadata: BTreeMap<String, String>,
    /// Whether the file's content hash was checked (see [`crate::train::integrity_note`]).
    pub integrity: Integrity,
}

/// Loads a run's model (either layout).
pub fn load_model(dir: &Path) -> Result<RunModel> {
    let path = model_file(dir)?;
    if path.ends_with(LEGACY_CHECKPOINT_FILE) {
        // The optimiser state beside the weights is the training state's business.
        let (model, extras) = Model::load_checkpoint(&path)?;
        return Ok(RunModel { model, path, metadata: BTreeMap::new(), integrity: extras.integrity });
    }
    let (model, extras) = Model::load_checkpoint(&path)?;
    if !extras.tensors.is_empty() {
        let names: Vec<String> = extras.tensors.keys().map(|n| format!("`{n}`")).collect();
        return Err(run_err(
            &path,
            format!("holds tensors that are not the model's ({}): a model file holds the weights alone", names.join(", ")),
        ));
    }
    Ok(RunModel { model, path, metadata: extras.metadata, integrity: extras.integrity })
}

/// The file a run's training state is read from: `training_state.safetensors`, else the old
/// `checkpoint.safetensors` (whose model tensors [`crate::train`] ignores).
pub fn training_state_file(dir: &Path) -> Result<PathBuf> {
    let model = model_file(dir)?;
    if model.ends_with(LEGACY_CHECKPOINT_FILE) {
        return Ok(model);
    }
    let path = dir.join(TRAINING_STATE_FILE);
    if !path.is_file() {
        return Err(run_err(
            dir,
            format!("holds {MODEL_FILE} but no {TRAINING_STATE_FILE}: a model alone can be evaluated, not trained on"),
        ));
    }
    Ok(path)
}

/// A run's training state (either layout).
pub fn load_training_state(dir: &Path) -> Result<(PathBuf, Extras)> {
    let path = training_state_file(dir)?;
    let extras = Extras::load(&path)?;
    Ok((path, extras))
}

/// Writes a training checkpoint: the training state and the model as one step
/// ([`cvn_autograd::io::write_all_atomically`]: both are written and synced before either
/// replaces its file, the training state first), the model with `epochs_done` in its metadata, so a
/// save interrupted between the two renames is detected. Argmax BatchNorm statistics of the
/// previous weights are removed first; an old single-file checkpoint last.
pub fn save_checkpoint(dir: &Path, model: &Model, epochs_done: usize, state: &Extras) -> Result<()> {
    let (state_path, model_path) = (dir.join(TRAINING_STATE_FILE), dir.join(MODEL_FILE));
    let state_bytes = state.encode(&state_path)?;
    let model_bytes = model.encode(&model_path, &BTreeMap::from([(EPOCHS_KEY.to_string(), epochs_done.to_string())]))?;
    remove_if_present(&dir.join(ARGMAX_BN_FILE))?;
    cvn_autograd::io::write_all_atomically(&[(&state_path, &state_bytes), (&model_path, &model_bytes)])?;
    remove_if_present(&dir.join(LEGACY_CHECKPOINT_FILE))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(run_err(path, format!("cannot remove: {e}"))),
        _ => Ok(()),
    }
}

/// A run's stored argmax BatchNorm statistics, checked against `model`; `None` when the model does
/// not need them or the run has none.
pub fn load_argmax_bn(dir: &Path, model: &Model) -> Result<Option<ArgmaxBatchNorm>> {
    let path = dir.join(ARGMAX_BN_FILE);
    if !ArgmaxBatchNorm::needed(model) || !path.is_file() {
        return Ok(None);
    }
    let stats = ArgmaxBatchNorm::load(&path)?;
    // Names and shapes must fit (the error names the file).
    model.clone().set_batch_norm_statistics(&stats.statistics, &path.display().to_string())?;
    Ok(Some(stats))
}

/// The argmax BatchNorm statistics of a run's deterministic pass and where they came from: the
/// stored ones, else estimated now on `recalibration()`'s images (the run folder is not written).
/// `None` when the model does not need them.
pub fn argmax_bn(
    dir: &Path,
    model: &Model,
    recalibration: impl FnOnce() -> Result<BnRecalibration>,
) -> Result<Option<(ArgmaxBatchNorm, ArgmaxBnOrigin)>> {
    if let Some(stored) = load_argmax_bn(dir, model)? {
        return Ok(Some((stored, ArgmaxBnOrigin::Stored(dir.join(ARGMAX_BN_FILE)))));
    }
    if !ArgmaxBatchNorm::needed(model) {
        return Ok(None);
    }
    Ok(Some((ArgmaxBatchNorm::estimate(model, &recalibration()?)?, ArgmaxBnOrigin::Estimated)))
}

/// Where a run's argmax BatchNorm statistics came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgmaxBnOrigin {
    Stored(PathBuf),
    /// Estimated now (the run has none stored).
    Estimated,
}

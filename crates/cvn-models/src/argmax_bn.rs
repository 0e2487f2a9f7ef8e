//! BatchNorm statistics for the deterministic (argmax) pass of a BatchNorm CVN (a ResNet with
//! U > 1). Training gathers the running statistics under *sampled* winners; argmax winners are
//! systematically larger, so the deterministic pass re-estimates them with argmax winners (see
//! [`Model::recalibrate_batch_norm`]). They are estimated once — at the end of training, or by
//! `import` / `eval` when a run lacks them — and stored in `argmax_bn.safetensors` beside
//! `model.safetensors`, so `eval --deterministic`, `predict` and `dissect` all use the same ones
//! and a PyTorch user can load them.
//!
//! The file holds them under torchvision's own buffer names (`layer1.0.bn1.running_mean`,
//! `…running_var`), so `state_dict.update(load_file("argmax_bn.safetensors"))` switches a
//! torchvision model to them. They live in a file of their own because any extra name in
//! `model.safetensors` (say `…argmax_running_mean`) would make `load_state_dict(strict=True)`
//! fail with "Unexpected key(s)".

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cvn_autograd::io::Stored;
use cvn_autograd::{DType, LwtaMode, Tensor};

use crate::checkpoint;
use crate::data::{BatchLoader, Dataset, LoaderConfig};
use crate::error::{Error, Result};
use crate::model::Model;

/// Training images whose batch statistics (under argmax winners) replace a BatchNorm CVN's
/// running statistics in its deterministic pass.
#[derive(Clone)]
pub struct BnRecalibration {
    pub data: Arc<dyn Dataset>,
    pub images: usize,
    pub batch_size: usize,
    /// The run's seed: it shuffles the images (salted like the evaluation's noise).
    pub seed: u64,
    /// Where the images came from (stored with the statistics).
    pub data_source: String,
}

impl BnRecalibration {
    /// What training, import and `cargo xtask eval` use: 4096 shuffled training images, batches
    /// of 128.
    pub fn from_training_set(data: Arc<dyn Dataset>, data_source: &str, seed: u64) -> Self {
        Self { data, images: 4096, batch_size: 128, seed, data_source: data_source.to_string() }
    }
}

/// Metadata keys of `argmax_bn.safetensors`.
const IMAGES_KEY: &str = "images";
const SOURCE_KEY: &str = "data_source";
const DOC_KEY: &str = "doc";
const DOC: &str = "BatchNorm running_mean/running_var re-estimated with argmax (deterministic) LWTA winners, under torchvision \
                   names; load over model.safetensors for the deterministic pass";

/// BatchNorm running statistics estimated with argmax winners, by torchvision name.
#[derive(Debug, Clone)]
pub struct ArgmaxBatchNorm {
    pub statistics: BTreeMap<String, Tensor>,
    /// Training images they were estimated on.
    pub images: usize,
    pub data_source: String,
}

impl ArgmaxBatchNorm {
    /// Whether `model`'s deterministic pass needs them: a CVN with BatchNorm.
    pub fn needed(model: &Model) -> bool {
        model.has_batch_norm() && model.config().competition().competitors > 1
    }

    /// Estimates them on `r`'s images (on the model's device; `model` is unchanged).
    pub fn estimate(model: &Model, r: &BnRecalibration) -> Result<Self> {
        let device = model.device();
        let seed = r.seed ^ crate::train::EVAL_SEED_SALT;
        let mut copy = model.clone();
        // A training set smaller than a batch is one batch (the loader drops incomplete ones).
        let batch_size = r.batch_size.min(r.data.len()).max(1);
        let loader = BatchLoader::new(r.data.clone(), LoaderConfig::train(batch_size, seed), 0, 0)?;
        let batches = loader
            .take(r.images.div_ceil(batch_size))
            .map(|b| b.and_then(|b| Ok(Tensor::from_slice_on(&b.images, &b.shape, DType::F32, &device)?)));
        let used = copy.recalibrate_batch_norm(batches, LwtaMode::Deterministic, seed)?;
        if used == 0 {
            return Err(Error::Config { what: "BatchNorm recalibration", detail: format!("no training images in {}", r.data_source) });
        }
        Ok(Self {
            statistics: copy.batch_norm_statistics(),
            images: (used * batch_size).min(r.data.len()),
            data_source: r.data_source.clone(),
        })
    }

    /// `model` with these statistics in place of its running ones.
    pub fn apply(&self, model: &mut Model, source: &str) -> Result<()> {
        model.set_batch_norm_statistics(&self.statistics, source)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors = self.statistics.iter().map(|(k, t)| (k.clone(), Stored::F32(t.clone()))).collect();
        let metadata = BTreeMap::from([
            (DOC_KEY.to_string(), DOC.to_string()),
            (IMAGES_KEY.to_string(), self.images.to_string()),
            (SOURCE_KEY.to_string(), self.data_source.clone()),
        ]);
        checkpoint::write(path, &tensors, &metadata)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let err = |detail: String| Error::Checkpoint { path: path.display().to_string(), detail };
        let file = checkpoint::read_file(path)?;
        let images = file
            .metadata
            .get(IMAGES_KEY)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| err(format!("no `{IMAGES_KEY}` metadata: not argmax BatchNorm statistics")))?;
        Ok(Self { images, data_source: file.metadata.get(SOURCE_KEY).cloned().unwrap_or_default(), statistics: file.tensors })
    }
}

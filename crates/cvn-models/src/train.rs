//! Training and evaluation of a preset model on its data set (`cargo xtask train`, `eval`, `demo`).
//!
//! A run lives in one folder, written by one process at a time (the [`RunLock`] on `RUN/.lock`;
//! [`crate::run`] describes its files): `model.safetensors` and `training_state.safetensors`,
//! written atomically with a content hash after every epoch; `argmax_bn.safetensors` for BatchNorm
//! CVNs, written once at the end; and
//! * `metrics.jsonl` — one JSON object per logged step (`"kind": "step"`) and per epoch
//!   (`"kind": "epoch"`), each line appended atomically; an epoch's line is durable before its
//!   checkpoint, and lines past the checkpoint are dropped on resuming, so after any crash the log
//!   holds every completed epoch once.
//! * `summary.json` — the final [`Summary`] with its [`Evaluation`].
//!
//! All randomness — data order, augmentation, LWTA noise, dropout — is counter-based on
//! `(seed, epoch, sample)` or `(seed, step)`, so epoch and step are the whole generator state and a
//! resumed run continues exactly as an uninterrupted one.
//!
//! Display is the caller's business: [`Trainer::run`] reports [`Progress`] through a callback.
//!
//! # Data-parallel training
//! [`Trainer::start_distributed`] and [`Trainer::resume_distributed`] train one replica per rank
//! of a [`Collectives`] engine, with PyTorch DDP's semantics: the configuration's `batch_size` is
//! the *global* batch, and each rank trains on its contiguous slice of every global batch of the
//! epoch's permutation ([`Shard`]), so the ranks together see the batches of one process with that
//! batch. Parameters are broadcast from rank 0 at the start; the gradients (and the loss) are
//! averaged over the ranks in [`BUCKET_BYTES`] buckets before every update; BatchNorm normalises
//! with each rank's own batch statistics (DDP's default), or with [`TrainConfig::sync_bn`] with the
//! global batch's (PyTorch's `SyncBatchNorm`, through [`cvn_dist::BnSum`]); rank 0's running
//! statistics are broadcast at the end of every epoch, before evaluation and the checkpoint (with
//! `sync_bn` every rank already holds the same ones, folded from the same global statistics, so
//! the broadcast changes nothing); each rank draws its own LWTA and dropout
//! noise ([`crate::RANK_NOISE_STRIDE`]). After every epoch the ranks compare digests of their weights
//! and optimiser state and stop if they differ. Rank 0 alone takes the run lock and writes
//! checkpoints, metrics and the summary; the others only read the run folder when resuming. The
//! learning rate is never rescaled for the world size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cvn_autograd::optim::{AdamW, Optimizer, Schedule, Sgd};
use cvn_autograd::{CrossReplicaSum, DType, Device, Gradients, LwtaMode, Tape, Tensor};
use cvn_dist::{all_reduce_average_bucketed, BnSum, Collectives, Single, BUCKET_BYTES};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::argmax_bn::{ArgmaxBatchNorm, BnRecalibration};
use crate::checkpoint::Extras;
use crate::config::ModelConfig;
use crate::data::synthetic_concepts::{self, SplitSizes};
use crate::data::{
    Batch, BatchLoader, Dataset, FashionMnist, FolderTransform, ImageFolder, LoaderConfig, PadCropFlip, Shard, Spread, SyntheticConcepts,
    SYNTHETIC_CONCEPTS,
};
use crate::forward::{ActivityCounters, Forward};
use crate::model::Model;
use crate::params::Kind;
use crate::run::{self, RunModel, ARGMAX_BN_FILE, EPOCHS_KEY, MODEL_FILE};
use crate::run_lock::RunLock;
use cvn_autograd::io::Integrity;

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const SUMMARY_FILE: &str = "summary.json";
/// Training-state metadata key of the [`TrainState`] JSON.
const TRAINER_KEY: &str = "trainer";
/// Prefix of the optimiser-state tensors in the training state.
const OPTIMIZER_GROUP: &str = "optimizer";
/// Evaluation noise uses its own seed so it never repeats a training step's noise.
pub(crate) const EVAL_SEED_SALT: u64 = 0x5eed_e7a1;

/// Errors of training and evaluation runs.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] crate::Error),
    #[error(transparent)]
    Tensor(#[from] cvn_autograd::Error),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// A JSON file of the run (`summary.json`, the trainer state) that cannot be read or written.
    #[error("{path}: {what}: {source}")]
    Json { path: String, what: &'static str, source: serde_json::Error },
    /// A setting that cannot work (the field is named).
    #[error("training setting `{field}`: {detail}")]
    Config { field: &'static str, detail: String },
    /// A run folder that cannot be started, resumed or evaluated as asked.
    #[error("run {path}: {detail}")]
    Run { path: String, detail: String },
    #[error("loss became {loss} at epoch {epoch}, step {step}: training stopped; {kept}")]
    NonFiniteLoss { epoch: usize, step: u64, loss: f32, kept: String },
    /// A collective of a data-parallel run that failed (a rank died or hangs) or ranks that diverged.
    #[error(transparent)]
    Dist(#[from] cvn_dist::DistError),
    #[error("data-parallel run {path}: {detail}")]
    Replicas { path: String, detail: String },
}

pub type Result<T> = std::result::Result<T, TrainError>;

fn io_err(path: &Path, source: std::io::Error) -> TrainError {
    TrainError::Io { path: path.display().to_string(), source }
}

fn json_err(path: &Path, what: &'static str, source: serde_json::Error) -> TrainError {
    TrainError::Json { path: path.display().to_string(), what, source }
}

fn run_err<T>(dir: &Path, detail: impl Into<String>) -> Result<T> {
    Err(TrainError::Run { path: dir.display().to_string(), detail: detail.into() })
}

fn config_err<T>(field: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(TrainError::Config { field, detail: detail.into() })
}

/// The optimiser family and its own settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    AdamW,
    Sgd { momentum: f32 },
}

/// The learning-rate schedule, in epochs (turned into steps once the data set size is known).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScheduleConfig {
    /// Linear warm-up over `warmup_epochs`, then cosine decay to `final_fraction × lr` at the last
    /// step.
    Cosine { warmup_epochs: f32, final_fraction: f32 },
    /// Multiply by `gamma` every `every_epochs` epochs (a fraction is fine: the steps are counted).
    Step { gamma: f32, every_epochs: f32 },
}

/// Everything that determines a training run (stored in its checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// A preset of [`crate::PRESETS`].
    pub model: String,
    /// U; 1 = the conventional twin.
    pub competitors: usize,
    /// The architecture when it is not the preset's (an import with other shapes); its
    /// competitors are `competitors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<ModelConfig>,
    pub epochs: usize,
    /// The global batch: each of a data-parallel run's `W` ranks trains on `batch_size / W`.
    pub batch_size: usize,
    pub lr: f32,
    pub weight_decay: f32,
    pub label_smoothing: f32,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    /// Seeds weights, data order, augmentation and noise.
    pub seed: u64,
    /// Stochastic test passes averaged in the final evaluation.
    pub samples: usize,
    /// Training augmentation of small images (Fashion-MNIST).
    pub augment: PadCropFlip,
    /// Train on N training images spread evenly through the set (quick runs; every class of an
    /// ImageFolder tree stays in).
    pub train_limit: Option<usize>,
    /// Data folder (`--data`), or `synthetic-concepts[:SEED]` for the generated set; `None` =
    /// installed Fashion-MNIST, else the embedded subset.
    pub data_dir: Option<PathBuf>,
    /// Write a `metrics.jsonl` step line every this many steps.
    pub log_every: usize,
    pub eval_batch_size: usize,
    /// Evaluate on the test set (deterministic mode) after every epoch.
    pub eval_each_epoch: bool,
    /// ImageFolder data: leave out (and count) images that cannot be read or are truncated,
    /// instead of stopping with an error naming the first.
    #[serde(default)]
    pub skip_bad_images: bool,
    /// Planted units ([`crate::plant`]): hidden units trained to detect a named concept of the
    /// data beside the classification loss, recorded here so that dissection can check them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plant: Vec<crate::plant::PlantedUnit>,
    /// Weight of the planted-unit loss against the cross-entropy (`--plant-weight`); runs saved
    /// before the field existed load with [`crate::plant::PLANT_WEIGHT`], the weight they used.
    #[serde(default = "default_plant_weight")]
    pub plant_weight: f32,
    /// Synchronised BatchNorm (`--sync-bn`, PyTorch's `nn.SyncBatchNorm`): in a data-parallel run
    /// every BatchNorm layer normalises with, and folds into its running statistics, the
    /// statistics of the global batch (all ranks' images) instead of its rank's; with one process
    /// it is plain BatchNorm. Only for models with BatchNorm; runs saved before the field existed
    /// load without it.
    #[serde(default)]
    pub sync_bn: bool,
}

fn default_plant_weight() -> f32 {
    crate::plant::PLANT_WEIGHT
}

/// SGD's peak learning rate for a ResNet CVN. It learns far slower per step than its ReLU twin at
/// the twin's lr: on 2 epochs of 12,000 Fashion-MNIST images (`resnet18-fmnist`, U=2) it reached
/// 31% / 58% / 71% / 74% / 74% test top-1 at lr 0.02 / 0.05 / 0.15 / 0.4 / 0.8, where the ReLU
/// network reached 78% / 78% / 34% at 0.05 / 0.15 / 0.4. On the full set for 5 epochs the CVN at
/// 0.4 reached 90.59% (6 passes averaged), the ReLU network at 0.05 90.81%; for 10 epochs 92.06%
/// and 92.34%.
pub const RESNET_CVN_LR: f32 = 0.4;

impl TrainConfig {
    /// Defaults for a preset: AdamW, cosine with warm-up (a tenth of the run, at most one epoch),
    /// lr 1e-3, weight decay 0.05 for ViTs; SGD with momentum 0.9, lr divided by 10 after each
    /// third of the run, weight decay 5e-4 for ResNets, at lr 0.05 for the ReLU network and 0.4 for
    /// a CVN ([`RESNET_CVN_LR`]); label smoothing 0.1, batch 128. Checks that the model exists and
    /// that U divides its LWTA layers.
    pub fn for_model(model: &str, competitors: usize, epochs: usize) -> Result<Self> {
        let config = ModelConfig::preset(model, competitors)?;
        let (optimizer, schedule, lr, weight_decay) = match config {
            ModelConfig::Vit(_) => (
                OptimizerConfig::AdamW,
                ScheduleConfig::Cosine { warmup_epochs: (epochs as f32 * 0.1).min(1.0), final_fraction: 0.01 },
                1e-3,
                0.05,
            ),
            ModelConfig::ResNet18(_) => (
                OptimizerConfig::Sgd { momentum: 0.9 },
                // Thirds of the run in steps, so that short runs decay too (1 epoch: at 1/3 and 2/3).
                ScheduleConfig::Step { gamma: 0.1, every_epochs: epochs.max(1) as f32 / 3.0 },
                if competitors > 1 { RESNET_CVN_LR } else { 0.05 },
                5e-4,
            ),
        };
        let small_images = config.img_size().is_none_or(|s| s <= 64) && config.in_chans() == 1;
        Ok(Self {
            model: model.to_string(),
            competitors,
            architecture: None,
            epochs,
            batch_size: 128,
            lr,
            weight_decay,
            label_smoothing: 0.1,
            optimizer,
            schedule,
            seed: 0,
            samples: 6,
            augment: if small_images { PadCropFlip { pad: 2, flip: true } } else { PadCropFlip::default() },
            train_limit: None,
            data_dir: None,
            log_every: 50,
            eval_batch_size: 256,
            eval_each_epoch: true,
            skip_bad_images: false,
            plant: Vec::new(),
            plant_weight: crate::plant::PLANT_WEIGHT,
            sync_bn: false,
        })
    }

    /// The model this configuration trains.
    pub fn model_config(&self) -> Result<ModelConfig> {
        Ok(match &self.architecture {
            Some(c) => c.clone().with_competitors(self.competitors)?,
            None => ModelConfig::preset(&self.model, self.competitors)?,
        })
    }

    pub fn validate(&self) -> Result<()> {
        let model = self.model_config()?;
        if self.sync_bn && !model.has_batch_norm() {
            return config_err(
                "sync_bn",
                format!("--sync-bn synchronises BatchNorm statistics, but model `{}` has no BatchNorm layers", self.model),
            );
        }
        if self.epochs == 0 {
            return config_err("epochs", "must be at least 1");
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return config_err("batch", format!("batch sizes must be at least 1, got {} and {}", self.batch_size, self.eval_batch_size));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return config_err("lr", format!("must be finite and > 0, got {}", self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return config_err("weight_decay", format!("must be finite and >= 0, got {}", self.weight_decay));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return config_err("label_smoothing", format!("must be in [0, 1), got {}", self.label_smoothing));
        }
        if self.log_every == 0 {
            return config_err("log_every", "must be at least 1");
        }
        if self.train_limit == Some(0) {
            return config_err("train_limit", "must be at least 1");
        }
        if !(self.plant_weight.is_finite() && self.plant_weight >= 0.0) {
            return config_err("plant_weight", format!("must be finite and >= 0, got {}", self.plant_weight));
        }
        match self.schedule {
            ScheduleConfig::Cosine { warmup_epochs, final_fraction } => {
                if !((0.0..=self.epochs as f32).contains(&warmup_epochs) && (0.0..=1.0).contains(&final_fraction)) {
                    return config_err(
                        "schedule",
                        format!("cosine needs 0 <= warmup_epochs <= epochs and 0 <= final_fraction <= 1, got {warmup_epochs} and {final_fraction}"),
                    );
                }
            }
            ScheduleConfig::Step { gamma, every_epochs } => {
                if !(gamma > 0.0 && gamma <= 1.0 && every_epochs.is_finite() && every_epochs > 0.0) {
                    return config_err(
                        "schedule",
                        format!("step needs 0 < gamma <= 1 and every_epochs > 0, got {gamma} and {every_epochs}"),
                    );
                }
            }
        }
        if let OptimizerConfig::Sgd { momentum } = self.optimizer {
            if !(0.0..1.0).contains(&momentum) {
                return config_err("optimizer", format!("SGD momentum must be in [0, 1), got {momentum}"));
            }
        }
        Ok(())
    }

    /// The schedule in steps, for `steps_per_epoch` optimiser steps per epoch.
    pub fn lr_schedule(&self, steps_per_epoch: usize) -> Schedule {
        let steps = |epochs: f32| (epochs * steps_per_epoch as f32).round() as u64;
        match self.schedule {
            ScheduleConfig::Cosine { warmup_epochs, final_fraction } => Schedule::Cosine {
                base_lr: self.lr,
                min_lr: self.lr * final_fraction,
                warmup: steps(warmup_epochs),
                total: steps(self.epochs as f32),
            },
            ScheduleConfig::Step { gamma, every_epochs } => Schedule::Step { base_lr: self.lr, gamma, every: steps(every_epochs).max(1) },
        }
    }

    fn new_optimizer(&self) -> Box<dyn Optimizer + Send> {
        match self.optimizer {
            OptimizerConfig::AdamW => Box::new(AdamW::new(self.weight_decay)),
            OptimizerConfig::Sgd { momentum } => Box::new(Sgd::new(momentum, self.weight_decay)),
        }
    }
}

/// The training and test splits of a run and a sentence saying where they came from.
#[derive(Clone)]
pub struct TrainData {
    pub train: Arc<dyn Dataset>,
    pub test: Arc<dyn Dataset>,
    pub source: String,
    /// What the user should know about the data (classes missing from a split, images skipped).
    pub notes: Vec<String>,
}

impl TrainData {
    /// The data set a configuration's model expects: the generated `synthetic-concepts[:SEED]` when
    /// `data_dir` names it, else Fashion-MNIST for one-channel models (`data_dir`, else the installed
    /// package, else the embedded subset), an ImageFolder tree (`data_dir/train`, `data_dir/val`) for
    /// RGB models.
    pub fn load(config: &TrainConfig) -> Result<Self> {
        let model = config.model_config()?;
        let synthetic = config.data_dir.as_deref().and_then(|d| d.to_str()).and_then(synthetic_concepts::parse_spec);
        let data = if let Some(seed) = synthetic {
            let seed = seed?;
            let set = SyntheticConcepts::new(seed, SplitSizes::default())?;
            TrainData {
                train: Arc::new(set.train),
                test: Arc::new(set.test),
                source: format!("{SYNTHETIC_CONCEPTS}:{seed} (generated)"),
                notes: Vec::new(),
            }
        } else if model.in_chans() == 1 {
            let fm = FashionMnist::load(config.data_dir.as_deref())?;
            TrainData {
                train: Arc::new(fm.train.with_augment(config.augment)),
                test: Arc::new(fm.test),
                source: fm.source.to_string(),
                notes: Vec::new(),
            }
        } else {
            let Some(dir) = &config.data_dir else {
                return config_err(
                    "data",
                    format!(
                        "model `{}` takes RGB images: give --data DIR holding train/ and val/ ImageFolder trees, or --data {SYNTHETIC_CONCEPTS}",
                        config.model
                    ),
                );
            };
            let size = model.img_size().unwrap_or(224);
            let train = ImageFolder::open(&dir.join("train"), FolderTransform::train(size))?.scan(config.skip_bad_images)?;
            let test = ImageFolder::open_with_classes(&dir.join("val"), FolderTransform::eval(size), train.class_names())?
                .scan(config.skip_bad_images)?;
            let mut notes = Vec::new();
            if !test.missing_classes().is_empty() {
                notes.push(format!(
                    "{}/val has no images of {} of the {} training classes: {}",
                    dir.display(),
                    test.missing_classes().len(),
                    train.class_names().len(),
                    test.missing_classes().join(", ")
                ));
            }
            for (split, set) in [("train", &train), ("val", &test)] {
                if set.skipped() > 0 {
                    notes.push(format!(
                        "{}/{split}: skipped {} unreadable or truncated images (--skip-bad-images)",
                        dir.display(),
                        set.skipped()
                    ));
                }
            }
            TrainData {
                train: Arc::new(train),
                test: Arc::new(test),
                source: format!("ImageFolder trees {}/train and {}/val", dir.display(), dir.display()),
                notes,
            }
        };
        data.check(&model)?;
        Ok(match config.train_limit {
            Some(n) => TrainData { train: Arc::new(Spread::new(data.train.clone(), n)), ..data },
            None => data,
        })
    }

    /// Checks that the data fits the model (classes, channels, size).
    fn check(&self, model: &ModelConfig) -> Result<()> {
        check_fits(model, "train", self.train.as_ref())?;
        check_fits(model, "test", self.test.as_ref())
    }
}

/// Checks that a data set fits a model: its images' channels and size, and no more classes than
/// the model has. Training, evaluation and dissection's probe sets all pass through this.
pub fn check_fits(model: &ModelConfig, split: &str, set: &dyn Dataset) -> Result<()> {
    let [c, h, w] = set.sample_shape();
    if c != model.in_chans() || model.img_size().is_some_and(|s| s != h || s != w) {
        return config_err(
            "data",
            format!(
                "{split} images are {c}×{h}×{w}; the model takes {} channels{}",
                model.in_chans(),
                match model.img_size() {
                    Some(s) => format!(" at {s}×{s}"),
                    None => String::new(),
                }
            ),
        );
    }
    if set.class_names().len() > model.num_classes() {
        return config_err("data", format!("{split} split has {} classes, the model {}", set.class_names().len(), model.num_classes()));
    }
    if set.is_empty() || h == 0 || w == 0 {
        return config_err("data", format!("{split} split holds no images of at least 1×1 pixels"));
    }
    Ok(())
}

/// What a checkpoint records about training, besides the weights and optimiser state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TrainState {
    config: TrainConfig,
    /// Epochs completed.
    epochs_done: usize,
    /// Optimiser steps taken (the counter of LWTA and dropout noise).
    step: u64,
    /// Time spent training (evaluation excluded) and images trained on, for throughput across resumes.
    train_seconds: f64,
    train_images: u64,
    /// Wall time of the run so far, evaluation included.
    wall_seconds: f64,
    /// Mean training loss of the last completed epoch.
    last_train_loss: Option<f64>,
    data_source: String,
    /// The last completed epoch's `metrics.jsonl` line, so resuming can restore it if a crash
    /// lost it (checkpoints written before this field existed lack it).
    #[serde(default)]
    last_epoch: Option<EpochMetrics>,
}

impl TrainState {
    /// A run before its first epoch.
    fn fresh(config: TrainConfig, data_source: String) -> Self {
        Self {
            config,
            epochs_done: 0,
            step: 0,
            train_seconds: 0.0,
            train_images: 0,
            wall_seconds: 0.0,
            last_train_loss: None,
            data_source,
            last_epoch: None,
        }
    }
}

/// Progress events of [`Trainer::run`] and [`evaluate`], for progress bars.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    /// Training begins or resumes at `epoch` (1-based).
    Start {
        source: &'a str,
        epoch: usize,
        epochs: usize,
        steps_per_epoch: usize,
        parameters: usize,
    },
    EpochStart {
        epoch: usize,
        batches: usize,
    },
    /// One optimiser step done; `images_per_sec` over the epoch so far.
    Step {
        epoch: usize,
        batch: usize,
        batches: usize,
        loss: f32,
        lr: f32,
        images_per_sec: f64,
    },
    /// An epoch ended and its checkpoint was written.
    EpochEnd(&'a EpochMetrics),
    /// Evaluation: `done` of `total` test images.
    Evaluating {
        done: usize,
        total: usize,
    },
}

/// The `"kind": "epoch"` line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    /// Optimiser steps taken so far.
    pub step: u64,
    pub train_loss: f64,
    pub train_top1: f64,
    /// Test top-1 in deterministic mode, when evaluated each epoch.
    pub test_top1: Option<f64>,
    /// Learning rate of the epoch's last step.
    pub lr: f32,
    pub images_per_sec: f64,
    pub seconds: f64,
}

/// Evaluation settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalOptions {
    /// Stochastic passes (LWTA sampled at τ test) whose class probabilities are averaged; 0 =
    /// deterministic only. Conventional networks (U = 1) are not stochastic and skip these passes.
    pub samples: usize,
    pub batch_size: usize,
    pub seed: u64,
}

/// Test-set results of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub images: usize,
    /// Stochastic passes run (0 for `--deterministic` and for conventional networks).
    pub samples: usize,
    /// Top-1 of the class probabilities averaged over the stochastic passes.
    pub top1_sampled: Option<f64>,
    /// Top-1 of each stochastic pass on its own.
    pub top1_per_pass: Vec<f64>,
    /// Top-1 with deterministic (argmax) winners.
    pub top1_deterministic: f64,
    /// Training images whose statistics the BatchNorm layers used in the deterministic pass (CVNs
    /// with BatchNorm); `None`: the running statistics gathered during training.
    #[serde(default)]
    pub deterministic_bn_recalibrated_on: Option<usize>,
    /// Fraction of non-zero outputs of each activation layer over all passes: the activation
    /// sparsity, 1/U for LWTA layers.
    pub active_fraction: BTreeMap<String, f64>,
    /// Per LWTA layer, the fraction of competitions in the stochastic passes that the unit with
    /// the largest response won: near 1/U, the Gumbel noise rather than the responses picks the
    /// winners. Empty without stochastic passes.
    #[serde(default)]
    pub argmax_win_rate: BTreeMap<String, f64>,
    pub seconds: f64,
}

/// The `summary.json` of a finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub model: String,
    pub competitors: usize,
    pub epochs: usize,
    pub steps: u64,
    pub data_source: String,
    pub train_images: u64,
    /// Training throughput: images per second of the training loops (evaluation excluded).
    pub images_per_sec: f64,
    pub train_seconds: f64,
    /// Wall time of the whole run, final evaluation included.
    pub wall_seconds: f64,
    pub final_train_loss: Option<f64>,
    pub test: Evaluation,
    pub config: TrainConfig,
    pub model_config: ModelConfig,
    pub checkpoint: PathBuf,
}

impl Summary {
    /// Reads a run's `summary.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(SUMMARY_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        serde_json::from_str(&text).map_err(|e| json_err(&path, "not a run summary", e))
    }
}

/// A training run: model, optimiser, data and the run folder.
pub struct Trainer {
    /// Held while the trainer lives, so no other process writes to the run; `None` on the ranks
    /// other than 0 of a data-parallel run, which never write.
    lock: Option<RunLock>,
    dir: PathBuf,
    /// The files resumed from and whether their content hashes were checked.
    integrity: Vec<(PathBuf, Integrity)>,
    model: Model,
    optimizer: Box<dyn Optimizer + Send>,
    data: TrainData,
    state: TrainState,
    /// When this process took the run over, and the run's wall time before that.
    session_start: Instant,
    wall_before: f64,
    /// Mixed precision of the training passes (see [`Trainer::with_autocast`]).
    autocast: Option<DType>,
    /// The ranks of a data-parallel run ([`Single`] for one process).
    comm: Arc<dyn Collectives>,
    /// The sum over the ranks of synchronised BatchNorm: only with `sync_bn` and more than one
    /// rank (one process trains exactly as without `sync_bn`).
    bn_sum: Option<Arc<dyn CrossReplicaSum>>,
}

/// The configuration a run folder was trained with (to load its data before resuming).
pub fn run_config(dir: &Path) -> Result<TrainConfig> {
    Ok(read_state(dir)?.0.config)
}

/// Loads a run's model (with whether its content hash was checked: [`RunModel::integrity`]) and
/// data (`data_dir` replaces the folder the run was trained with). Nothing is written.
pub fn load_run(dir: &Path, data_dir: Option<&Path>) -> Result<(RunModel, TrainConfig, TrainData)> {
    let model = run::load_model(dir)?;
    let mut config = run_config(dir)?;
    if let Some(d) = data_dir {
        config.data_dir = Some(d.to_path_buf());
    }
    let data = TrainData::load(&config)?;
    Ok((model, config, data))
}

/// What to tell the user about a file read without a content hash (`None` when verified).
pub fn integrity_note(checkpoint: &Path, integrity: Integrity) -> Option<String> {
    (integrity == Integrity::Unhashed).then(|| {
        format!("note: {} has no content hash (written by an older version or another tool): loaded unverified", checkpoint.display())
    })
}

/// A run's trainer state and the training-state tensors (optimiser state).
fn read_state(dir: &Path) -> Result<(TrainState, Extras)> {
    let (path, extras) = run::load_training_state(dir)?;
    let Some(json) = extras.metadata.get(TRAINER_KEY) else {
        return run_err(&path, format!("has no `{TRAINER_KEY}` metadata: it was not written by the trainer or `import`"));
    };
    let state = serde_json::from_str(json).or_else(|e| run_err(&path, format!("`{TRAINER_KEY}` metadata is not a trainer state ({e})")))?;
    Ok((state, extras))
}

/// The argmax BatchNorm statistics of a run's deterministic pass (see [`run::argmax_bn`]):
/// stored, else estimated on 4096 images of `data`'s training split.
pub fn run_argmax_bn(
    dir: &Path,
    model: &Model,
    config: &TrainConfig,
    data: &TrainData,
) -> Result<Option<(ArgmaxBatchNorm, run::ArgmaxBnOrigin)>> {
    Ok(run::argmax_bn(dir, model, || Ok(BnRecalibration::from_training_set(data.train.clone(), &data.source, config.seed)))?)
}

fn save_checkpoint(dir: &Path, model: &Model, state: &TrainState, optimizer: BTreeMap<String, Tensor>) -> Result<()> {
    let mut extras = Extras::default();
    extras.insert_group(OPTIMIZER_GROUP, optimizer)?;
    let json =
        serde_json::to_string(state).map_err(|e| json_err(&dir.join(run::TRAINING_STATE_FILE), "cannot encode the trainer state", e))?;
    extras.metadata.insert(TRAINER_KEY.to_string(), json);
    Ok(run::save_checkpoint(dir, model, state.epochs_done, &extras)?)
}

/// Writes `model` as a run that has trained no epoch yet (what `import` makes): its training state
/// holds `config` (which `train --resume` may change: fine-tuning), step 0 and no optimiser state.
pub fn write_untrained_run(dir: &Path, model: &Model, config: TrainConfig) -> Result<()> {
    config.validate()?;
    if model.config() != &config.model_config()? {
        return run_err(dir, format!("the model {} is not `{}` with U = {}", model.config().to_json(), config.model, config.competitors));
    }
    // No data yet: the first `train --resume` records its source.
    save_checkpoint(dir, model, &TrainState::fresh(config, String::new()), BTreeMap::new())
}

/// The fields in which two configurations differ, by name.
fn differing_fields(a: &TrainConfig, b: &TrainConfig) -> Vec<String> {
    let (serde_json::Value::Object(a), serde_json::Value::Object(b)) = (json!(a), json!(b)) else { return Vec::new() };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k} (run: {v}, now: {})", b.get(k).unwrap_or(&json!(null))))
        .collect()
}

impl Trainer {
    /// A fresh run in `dir`, which must not hold a run already (resume it, or delete it first).
    pub fn start(config: TrainConfig, data: TrainData, dir: &Path) -> Result<Self> {
        config.validate()?;
        data.check(&config.model_config()?)?;
        // Taking the lock also checks that the folder is writable, before any training.
        Self::start_locked(RunLock::acquire(dir)?, config, data)
    }

    /// [`Trainer::start`] in the folder of a lock the caller already holds (to clear an old run
    /// first without letting another writer in between).
    pub fn start_locked(lock: RunLock, config: TrainConfig, data: TrainData) -> Result<Self> {
        config.validate()?;
        data.check(&config.model_config()?)?;
        let dir = lock.dir().to_path_buf();
        let dir = dir.as_path();
        if run::has_model(dir) {
            return run_err(dir, format!("already holds a model ({MODEL_FILE}): resume it (--resume) or choose another folder"));
        }
        for stale in [METRICS_FILE, SUMMARY_FILE] {
            let path = dir.join(stale);
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            }
        }
        Self::fresh(Some(lock), dir, config, data)
    }

    /// A run before its first step; `lock` is `None` on ranks that do not write.
    fn fresh(lock: Option<RunLock>, dir: &Path, config: TrainConfig, data: TrainData) -> Result<Self> {
        let model = Model::new(config.model_config()?, config.seed)?;
        crate::plant::check_plants(&config.plant, &model, data.train.as_ref())?;
        let state = TrainState::fresh(config, data.source.clone());
        Ok(Self {
            lock,
            dir: dir.to_path_buf(),
            integrity: Vec::new(),
            optimizer: state.config.new_optimizer(),
            model,
            data,
            state,
            session_start: Instant::now(),
            wall_before: 0.0,
            autocast: None,
            comm: Arc::new(Single),
            bn_sum: None,
        })
    }

    /// [`Trainer::start`] for one rank of a data-parallel run (see the module docs): rank 0 takes
    /// the folder as `start` does, the other ranks only build their replica; then rank 0's
    /// parameters are broadcast. `config.batch_size` is the global batch.
    pub fn start_distributed(config: TrainConfig, data: TrainData, dir: &Path, comm: Arc<dyn Collectives>) -> Result<Self> {
        let trainer = if comm.rank() == 0 {
            Self::start(config, data, dir)?
        } else {
            config.validate()?;
            data.check(&config.model_config()?)?;
            Self::fresh(None, dir, config, data)?
        };
        trainer.join(comm)
    }

    /// [`Trainer::resume`] for one rank of a data-parallel run: every rank reads the run's last
    /// checkpoint (on several machines the run folder must be shared), rank 0 alone takes the
    /// lock; then rank 0's parameters are broadcast and the ranks check that they hold the same
    /// state. Any world size resumes any run whose global batch (`config.batch_size`) it keeps.
    pub fn resume_distributed(dir: &Path, config: TrainConfig, data: TrainData, comm: Arc<dyn Collectives>) -> Result<Self> {
        let lock = if comm.rank() == 0 { Some(RunLock::acquire(dir)?) } else { None };
        Self::resume_as(lock, dir, config, data)?.join(comm)
    }

    /// Makes this trainer one replica of `comm`'s ranks: checks that the global batch splits
    /// evenly, broadcasts rank 0's parameters and checks that every rank holds the same state.
    fn join(mut self, comm: Arc<dyn Collectives>) -> Result<Self> {
        let world = comm.world_size();
        if !self.state.config.batch_size.is_multiple_of(world) {
            return config_err(
                "batch",
                format!("the global batch {} does not split evenly over {world} ranks", self.state.config.batch_size),
            );
        }
        if world > 1 && self.state.config.sync_bn {
            self.bn_sum = Some(Arc::new(BnSum(comm.clone())));
        }
        self.comm = comm;
        if world > 1 {
            self.broadcast_params(|_| true)?;
            self.check_replicas("starting")?;
        }
        Ok(self)
    }

    /// Replaces the parameters of kinds `which` by rank 0's, in one broadcast.
    fn broadcast_params(&mut self, which: impl Fn(Kind) -> bool) -> Result<()> {
        let entries = self.model.params_mut().entries_mut();
        let mut values = Vec::new();
        for e in entries.iter().filter(|e| which(e.kind)) {
            values.extend(e.tensor.to_vec()?);
        }
        self.comm.broadcast_f32(&mut values, 0)?;
        let mut rest = &values[..];
        for e in entries.iter_mut().filter(|e| which(e.kind)) {
            let (mine, tail) = rest.split_at(e.tensor.len());
            e.tensor.set_values(mine)?;
            rest = tail;
        }
        Ok(())
    }

    /// A digest of everything the ranks must agree on: step, epochs, every parameter and the
    /// optimiser state (bits, in name order). Every rank runs the same binary, so the hasher's
    /// fixed keys are the same everywhere.
    fn replica_digest(&self) -> Result<u64> {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        (self.state.step, self.state.epochs_done).hash(&mut h);
        let optimizer = self.optimizer.state();
        let tensors = self
            .model
            .params()
            .entries()
            .iter()
            .map(|e| (e.name.as_str(), &e.tensor))
            .chain(optimizer.iter().map(|(n, t)| (n.as_str(), t)));
        for (name, tensor) in tensors {
            name.hash(&mut h);
            tensor.to_vec()?.iter().for_each(|v| v.to_bits().hash(&mut h));
        }
        Ok(h.finish())
    }

    /// Stops every rank with an error when any rank's [`Trainer::replica_digest`] differs from
    /// rank 0's.
    fn check_replicas(&self, when: &str) -> Result<()> {
        let mine = self.replica_digest()?;
        let mut root = mine.to_le_bytes();
        self.comm.broadcast_bytes(&mut root, 0)?;
        let mut differing = [f32::from(u64::from_le_bytes(root) != mine)];
        self.comm.all_reduce_sum(&mut differing)?;
        if differing[0] > 0.0 {
            return Err(TrainError::Replicas {
                path: self.dir().display().to_string(),
                detail: format!(
                    "{when}, {} of the {} ranks hold weights or optimiser state that differ from rank 0's (different run folders or builds?)",
                    differing[0],
                    self.comm.world_size()
                ),
            });
        }
        Ok(())
    }

    /// This process's rank and the world size.
    pub fn rank(&self) -> (usize, usize) {
        (self.comm.rank(), self.comm.world_size())
    }

    /// Whether this process writes the run folder (one process, or rank 0).
    fn writes(&self) -> bool {
        self.lock.is_some()
    }

    /// Continues the run in `dir` from its last checkpoint: weights, optimiser state, epoch and step.
    /// `config` must be the run's own ([`run_config`]) except that `epochs` may be raised (which
    /// stretches the learning-rate schedule from here on). A run that has trained no epoch yet (an
    /// imported model) takes any settings and data that fit its model: that is fine-tuning.
    pub fn resume(dir: &Path, config: TrainConfig, data: TrainData) -> Result<Self> {
        Self::resume_as(Some(RunLock::acquire(dir)?), dir, config, data)
    }

    /// [`Trainer::resume`] with the lock already taken, or without one (a rank that only reads).
    fn resume_as(lock: Option<RunLock>, dir: &Path, config: TrainConfig, data: TrainData) -> Result<Self> {
        let (mut state, extras) = read_state(dir)?;
        let state_file = run::training_state_file(dir)?;
        let RunModel { model, path, metadata, integrity } = run::load_model(dir)?;
        if let Some(epochs) = metadata.get(EPOCHS_KEY).filter(|e| **e != state.epochs_done.to_string()) {
            return run_err(
                &path,
                format!(
                    "was written after epoch {epochs}, the training state after epoch {}: the last save was interrupted; train again from an earlier copy",
                    state.epochs_done
                ),
            );
        }
        if state.epochs_done > 0 {
            let differing = differing_fields(&state.config, &TrainConfig { epochs: state.config.epochs, ..config.clone() });
            if !differing.is_empty() {
                return run_err(dir, format!("resuming keeps the run's settings, but these differ: {}", differing.join(", ")));
            }
            if config.epochs < state.epochs_done {
                return run_err(dir, format!("has already trained {} epochs; --epochs {} is fewer", state.epochs_done, config.epochs));
            }
            if data.source != state.data_source {
                return run_err(dir, format!("was trained on {}, but now {} would be used", state.data_source, data.source));
            }
        }
        state.data_source.clone_from(&data.source);
        config.validate()?;
        if model.config() != &config.model_config()? {
            return run_err(
                dir,
                format!("the checkpoint's model {} is not `{}` with U = {}", model.config().to_json(), config.model, config.competitors),
            );
        }
        data.check(model.config())?;
        crate::plant::check_plants(&config.plant, &model, data.train.as_ref())?;
        let mut optimizer = config.new_optimizer();
        let optimizer_state = extras.group(OPTIMIZER_GROUP);
        if state.step > 0 {
            // After a step every trainable tensor has its state; a missing one must not be reset.
            for e in model.params().entries().iter().filter(|e| e.kind.trainable()) {
                if let Some(missing) = optimizer.state_names(&e.name).into_iter().find(|n| !optimizer_state.contains_key(n)) {
                    return run_err(
                        &state_file,
                        format!("optimiser state `{OPTIMIZER_GROUP}.{missing}` is missing after {} steps: the training state is incomplete, resuming would reset it", state.step),
                    );
                }
            }
        }
        optimizer.load_state(optimizer_state)?;
        state.config = config;
        let wall_before = state.wall_seconds;
        let trainer = Self {
            lock,
            dir: dir.to_path_buf(),
            integrity: if state_file == path { vec![(path, integrity)] } else { vec![(state_file, extras.integrity), (path, integrity)] },
            model,
            optimizer,
            data,
            state,
            session_start: Instant::now(),
            wall_before,
            autocast: None,
            comm: Arc::new(Single),
            bn_sum: None,
        };
        if trainer.writes() {
            trainer.truncate_metrics()?;
        }
        Ok(trainer)
    }

    /// What to tell the user about the files resumed from that had no content hash (see
    /// [`integrity_note`]).
    pub fn integrity_notes(&self) -> Vec<String> {
        self.integrity.iter().filter_map(|(path, integrity)| integrity_note(path, *integrity)).collect()
    }

    pub fn config(&self) -> &TrainConfig {
        &self.state.config
    }

    /// Trains (and evaluates) on `device`: the model moves there now, the optimiser state at its
    /// first update. Checkpoints are the same whatever the device, so a run may resume elsewhere.
    pub fn on_device(mut self, device: &Device) -> Result<Self> {
        self.model.to_device(device)?;
        Ok(self)
    }

    /// Mixed precision for the training passes: `Some(DType::BF16)` runs matrix products and
    /// convolutions in bf16 over the f32 master weights (see `Forward::with_autocast`).
    pub fn with_autocast(mut self, dtype: Option<DType>) -> Self {
        self.autocast = dtype;
        self
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn data(&self) -> &TrainData {
        &self.data
    }

    /// Epochs completed so far.
    pub fn epochs_done(&self) -> usize {
        self.state.epochs_done
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Trains the remaining epochs, then [`Trainer::finish`]es.
    pub fn run(&mut self, progress: &mut dyn FnMut(Progress)) -> Result<Summary> {
        self.train(self.state.config.epochs, progress)?;
        self.finish(progress)
    }

    /// Trains up to epoch `until` (at most the configured epochs), writing the checkpoint after
    /// each. A non-finite loss stops training with [`TrainError::NonFiniteLoss`], leaving the last
    /// checkpoint as it was.
    pub fn train(&mut self, until: usize, progress: &mut dyn FnMut(Progress)) -> Result<()> {
        let config = self.state.config.clone();
        let steps_per_epoch = LoaderConfig::train(config.batch_size, config.seed).batches_per_epoch(self.data.train.len());
        if steps_per_epoch == 0 {
            return config_err("batch", format!("batch size {} exceeds the {} training images", config.batch_size, self.data.train.len()));
        }
        let schedule = config.lr_schedule(steps_per_epoch);
        progress(Progress::Start {
            source: &self.data.source,
            epoch: self.state.epochs_done + 1,
            epochs: config.epochs,
            steps_per_epoch,
            parameters: self.model.params().num_trainable(),
        });
        while self.state.epochs_done < until.min(config.epochs) {
            let mut metrics = self.train_epoch(&schedule, steps_per_epoch, progress)?;
            if self.comm.world_size() > 1 {
                // Rank 0's running statistics for evaluation and the checkpoint, as DDP's buffer
                // broadcast (a no-op with synchronised BatchNorm, whose ranks fold the same global
                // statistics); then every rank must hold what rank 0 is about to save.
                self.broadcast_params(|kind| !kind.trainable())?;
                self.check_replicas(&format!("after epoch {}", self.state.epochs_done + 1))?;
            }
            if config.eval_each_epoch {
                let options = EvalOptions { samples: 0, batch_size: config.eval_batch_size, seed: config.seed };
                // The weights change every epoch: these statistics are estimated for this evaluation only.
                let argmax_bn = if ArgmaxBatchNorm::needed(&self.model) {
                    Some(ArgmaxBatchNorm::estimate(&self.model, &self.recalibration())?)
                } else {
                    None
                };
                metrics.test_top1 =
                    Some(evaluate(&mut self.model, self.data.test.clone(), &options, argmax_bn.as_ref(), progress)?.top1_deterministic);
            }
            self.state.epochs_done += 1;
            self.state.last_train_loss = Some(metrics.train_loss);
            self.state.wall_seconds = self.wall_seconds();
            self.state.last_epoch = Some(metrics.clone());
            // The line first: a crash between the two leaves a line past the checkpoint, which
            // resuming drops and writes again; the other order could lose it.
            self.append_metrics("epoch", json!(metrics))?;
            self.save_checkpoint()?;
            progress(Progress::EpochEnd(&metrics));
        }
        Ok(())
    }

    /// The images the argmax BatchNorm statistics are estimated on.
    fn recalibration(&self) -> BnRecalibration {
        BnRecalibration::from_training_set(self.data.train.clone(), &self.data.source, self.state.config.seed)
    }

    /// Stores the argmax BatchNorm statistics of a BatchNorm CVN (once: kept when already there),
    /// evaluates the model on the test set (`samples` stochastic passes and deterministic) and
    /// writes `summary.json`.
    pub fn finish(&mut self, progress: &mut dyn FnMut(Progress)) -> Result<Summary> {
        let config = self.state.config.clone();
        let options = EvalOptions { samples: config.samples, batch_size: config.eval_batch_size, seed: config.seed };
        let argmax_bn = match run::argmax_bn(self.dir(), &self.model, || Ok(self.recalibration()))? {
            Some((stats, origin)) => {
                if origin == run::ArgmaxBnOrigin::Estimated && self.writes() {
                    stats.save(&self.dir().join(ARGMAX_BN_FILE))?;
                }
                Some(stats)
            }
            None => None,
        };
        let test = evaluate(&mut self.model, self.data.test.clone(), &options, argmax_bn.as_ref(), progress)?;
        let summary = Summary {
            model: config.model.clone(),
            competitors: config.competitors,
            epochs: self.state.epochs_done,
            steps: self.state.step,
            data_source: self.data.source.clone(),
            train_images: self.state.train_images,
            images_per_sec: self.state.train_images as f64 / self.state.train_seconds.max(1e-9),
            train_seconds: self.state.train_seconds,
            wall_seconds: self.wall_seconds(),
            final_train_loss: self.state.last_train_loss,
            test,
            model_config: self.model.config().clone(),
            config,
            checkpoint: self.dir().join(MODEL_FILE),
        };
        if self.writes() {
            let path = self.dir().join(SUMMARY_FILE);
            let text = serde_json::to_string_pretty(&summary).map_err(|e| json_err(&path, "cannot encode the run summary", e))?;
            cvn_autograd::io::write_atomically(&path, text.as_bytes())?;
        }
        Ok(summary)
    }

    /// Wall time of the run: earlier sessions' plus this one's.
    fn wall_seconds(&self) -> f64 {
        self.wall_before + self.session_start.elapsed().as_secs_f64()
    }

    fn train_epoch(&mut self, schedule: &Schedule, batches: usize, progress: &mut dyn FnMut(Progress)) -> Result<EpochMetrics> {
        let config = self.state.config.clone();
        let epoch = self.state.epochs_done + 1;
        let (rank, world) = self.rank();
        let loader = BatchLoader::sharded(
            self.data.train.clone(),
            LoaderConfig::train(config.batch_size, config.seed),
            epoch as u64 - 1,
            0,
            Shard { rank, world },
        )?;
        progress(Progress::EpochStart { epoch, batches });
        let device = self.model.device();
        // The loss is read on the host only at these steps (every step on the CPU, where reading
        // it costs nothing; at the log interval on a GPU, so the device never waits for the host).
        let read_every = if device.is_cpu() { 1 } else { config.log_every as u64 };
        let started = Instant::now();
        let mut loss_sum = Tensor::zeros_on(&[], DType::F32, &device)?;
        let mut correct = Tensor::counter(&device)?;
        let (mut images, mut lr, mut last_loss) = (0usize, config.lr, f32::NAN);
        for (b, batch) in loader.enumerate() {
            let batch = batch?;
            lr = schedule.lr(self.state.step);
            // Images of the global batch: the loss returned is the global batch's mean.
            let n = batch.labels.len() * world;
            let logged = (self.state.step + 1).is_multiple_of(config.log_every as u64);
            let read = logged || self.state.step.is_multiple_of(read_every);
            let (loss, value) = self.step(&batch, lr, read, &mut correct)?;
            loss_sum = loss_sum.add(&loss.scale(n as f32)?)?;
            self.state.step += 1;
            images += n;
            last_loss = value.unwrap_or(last_loss);
            let images_per_sec = images as f64 / started.elapsed().as_secs_f64().max(1e-9);
            if logged {
                let line = json!({"epoch": epoch, "step": self.state.step, "loss": last_loss, "lr": lr, "images_per_sec": images_per_sec});
                self.append_metrics("step", line)?;
            }
            progress(Progress::Step { epoch, batch: b + 1, batches, loss: last_loss, lr, images_per_sec });
        }
        let loss_total = loss_sum.item()?;
        if !loss_total.is_finite() {
            // A GPU run notices a non-finite loss here at the latest, before any checkpoint.
            return Err(self.stop_on_non_finite(loss_total));
        }
        let correct = self.sum_over_ranks(correct.to_vec_u64()?[0])? as usize;
        let seconds = started.elapsed().as_secs_f64();
        self.state.train_seconds += seconds;
        self.state.train_images += images as u64;
        Ok(EpochMetrics {
            epoch,
            step: self.state.step,
            train_loss: loss_total as f64 / images.max(1) as f64,
            train_top1: correct as f64 / images.max(1) as f64,
            test_top1: None,
            lr,
            images_per_sec: images as f64 / seconds.max(1e-9),
            seconds,
        })
    }

    /// One optimiser step on `batch`: the loss (a 0-d tensor on the model's device), its value when
    /// `read` (then a non-finite loss stops training before the update), and the correct
    /// predictions added into `correct`.
    fn step(&mut self, batch: &Batch, lr: f32, read: bool, correct: &mut Tensor) -> Result<(Tensor, Option<f32>)> {
        let config = &self.state.config;
        let device = self.model.device();
        let tape = Tape::new();
        let x = Tensor::from_slice_on(&batch.images, &batch.shape, DType::F32, &device)?.traced(&tape);
        let mut ctx =
            Forward::train(config.seed, self.state.step).on_rank(self.comm.rank()).with_taps(config.plant.iter().map(|p| p.layer.clone()));
        if let Some(dtype) = self.autocast {
            ctx = ctx.with_autocast(dtype);
        }
        if let Some(sum) = &self.bn_sum {
            ctx = ctx.with_synced_batch_norm(sum.clone());
        }
        let logits = self.model.forward(&x, &mut ctx)?;
        logits.count_correct_into(&batch.labels, correct)?;
        let mut loss = logits.cross_entropy(&batch.labels, config.label_smoothing)?;
        if !config.plant.is_empty() {
            loss =
                loss.add(&crate::plant::plant_loss(&config.plant, config.plant_weight, &ctx, self.data.train.as_ref(), &batch.indices)?)?;
        }
        if self.comm.world_size() > 1 {
            // The ranks decide on the global loss together, after the gradients' reduction.
            let value = loss.item()?;
            return self.distributed_update(&loss.backward()?, value, lr);
        }
        let value = if read { Some(loss.item()?) } else { None };
        if let Some(v) = value.filter(|v| !v.is_finite()) {
            return Err(self.stop_on_non_finite(v));
        }
        let grads = loss.backward()?;
        let Self { model, optimizer, .. } = self;
        for (name, param, decay) in model.params_mut().trainable_mut() {
            if let Some(g) = grads.get(param) {
                optimizer.update(name, param, g, lr, decay)?;
            }
        }
        Ok((loss.detach(), value))
    }

    /// The update of a data-parallel step: gradients and loss averaged over the ranks (in
    /// buckets, in reverse parameter order as backward produces them), then the same update on
    /// every rank. A non-finite global loss stops every rank alike, before the update. Returns the
    /// global batch's mean loss.
    fn distributed_update(&mut self, grads: &Gradients, loss: f32, lr: f32) -> Result<(Tensor, Option<f32>)> {
        let mut present = Vec::new();
        let mut values = Vec::new();
        for (i, e) in self.model.params().entries().iter().filter(|e| e.kind.trainable()).enumerate() {
            if let Some(g) = grads.get(&e.tensor) {
                present.push(i);
                values.push(g.to_vec()?);
            }
        }
        // With the loss goes the number of gradients, so ranks whose graphs differ are caught.
        let mut stats = [loss, present.len() as f32];
        let mut parts: Vec<&mut [f32]> = values.iter_mut().rev().map(|v| &mut v[..]).chain([&mut stats[..]]).collect();
        all_reduce_average_bucketed(self.comm.as_ref(), &mut parts, BUCKET_BYTES)?;
        let [loss, count] = stats;
        if count != present.len() as f32 {
            return Err(TrainError::Replicas {
                path: self.dir().display().to_string(),
                detail: format!("rank {} has {} gradients, the ranks' mean is {count}", self.comm.rank(), present.len()),
            });
        }
        if !loss.is_finite() {
            return Err(self.stop_on_non_finite(loss));
        }
        let device = self.model.device();
        let mut averaged = present.into_iter().zip(values).peekable();
        let Self { model, optimizer, .. } = self;
        for (i, (name, param, decay)) in model.params_mut().trainable_mut().enumerate() {
            if let Some((_, g)) = averaged.next_if(|(at, _)| *at == i) {
                let g = Tensor::from_slice_on(&g, param.shape(), DType::F32, &device)?;
                optimizer.update(name, param, &g, lr, decay)?;
            }
        }
        Ok((Tensor::full_on(&[], loss, DType::F32, &device)?, Some(loss)))
    }

    /// The sum of `count` over the ranks (exact: sent as two halves below 2^24 each).
    fn sum_over_ranks(&self, count: u64) -> Result<u64> {
        if self.comm.world_size() == 1 {
            return Ok(count);
        }
        let mut halves = [(count >> 12) as f32, (count & 0xfff) as f32];
        self.comm.all_reduce_sum(&mut halves)?;
        Ok(((halves[0] as u64) << 12) + halves[1] as u64)
    }

    /// The error for a non-finite loss, saying which checkpoint survives.
    fn stop_on_non_finite(&self, loss: f32) -> TrainError {
        let checkpoint = self.dir().join(MODEL_FILE);
        let kept = if checkpoint.is_file() {
            format!("the last good checkpoint {} (epoch {}) is kept", checkpoint.display(), self.state.epochs_done)
        } else {
            "no checkpoint had been written yet".to_string()
        };
        TrainError::NonFiniteLoss { epoch: self.state.epochs_done + 1, step: self.state.step, loss, kept }
    }

    /// Writes the checkpoint (on the writing process only).
    fn save_checkpoint(&self) -> Result<()> {
        if !self.writes() {
            return Ok(());
        }
        save_checkpoint(self.dir(), &self.model, &self.state, self.optimizer.state())
    }

    /// Appends one `metrics.jsonl` line: `fields` (an object) with `"kind"` added (on the writing
    /// process only).
    fn append_metrics(&self, kind: &str, mut fields: serde_json::Value) -> Result<()> {
        if !self.writes() {
            return Ok(());
        }
        if let Some(map) = fields.as_object_mut() {
            map.insert("kind".to_string(), json!(kind));
        }
        let path = self.dir().join(METRICS_FILE);
        Ok(cvn_autograd::io::append_atomically(&path, format!("{fields}\n").as_bytes())?)
    }

    /// Drops `metrics.jsonl` lines written after the checkpoint (by an interrupted run) and restores
    /// the checkpoint's epoch line if a crash lost it, so a resumed run's log reads as an
    /// uninterrupted one's.
    fn truncate_metrics(&self) -> Result<()> {
        let path = self.dir().join(METRICS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err(&path, e)),
        };
        let keep = |line: &&str| -> bool {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { return false };
            let number = |key| v.get(key).and_then(serde_json::Value::as_u64);
            match v.get("kind").and_then(serde_json::Value::as_str) {
                Some("step") => number("step").is_some_and(|s| s <= self.state.step),
                Some("epoch") => number("epoch").is_some_and(|e| e <= self.state.epochs_done as u64),
                _ => false,
            }
        };
        let mut kept: String = text.lines().filter(keep).map(|l| format!("{l}\n")).collect();
        let epoch_logged = |epoch: usize| {
            kept.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).any(|v| {
                v.get("kind").and_then(serde_json::Value::as_str) == Some("epoch")
                    && v.get("epoch").and_then(serde_json::Value::as_u64) == Some(epoch as u64)
            })
        };
        if let Some(last) = self.state.last_epoch.as_ref().filter(|m| !epoch_logged(m.epoch)) {
            let mut line = json!(last);
            if let Some(map) = line.as_object_mut() {
                map.insert("kind".to_string(), json!("epoch"));
            }
            kept.push_str(&format!("{line}\n"));
        }
        Ok(cvn_autograd::io::write_atomically(&path, kept.as_bytes())?)
    }
}

/// Test-set top-1 of `model` in deterministic mode and, for LWTA models, averaged over
/// `options.samples` stochastic passes, with the active fraction of every activation layer.
/// Each batch is loaded once and run through every pass.
pub fn evaluate(
    model: &mut Model,
    data: Arc<dyn Dataset>,
    options: &EvalOptions,
    argmax_bn: Option<&ArgmaxBatchNorm>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Evaluation> {
    let started = Instant::now();
    let device = model.device();
    let competitive = model.config().competition().competitors > 1;
    let samples = if competitive { options.samples } else { 0 };
    let seed = options.seed ^ EVAL_SEED_SALT;
    let upload = |b: &Batch| Tensor::from_slice_on(&b.images, &b.shape, DType::F32, &device);
    // The deterministic pass of a BatchNorm CVN runs on a copy whose statistics match argmax winners.
    let mut recalibrated = match argmax_bn {
        Some(stats) if ArgmaxBatchNorm::needed(model) => {
            let mut copy = model.clone();
            stats.apply(&mut copy, "argmax BatchNorm statistics")?;
            Some((copy, stats.images))
        }
        _ => None,
    };
    let total = data.len();
    let loader = BatchLoader::new(data, LoaderConfig::eval(options.batch_size), 0, 0)?;
    // Counts stay on the device until the end.
    let mut counters = Some(ActivityCounters::default());
    let mut deterministic = Tensor::counter(&device)?;
    let mut averaged = Tensor::counter(&device)?;
    let mut per_pass = (0..samples).map(|_| Tensor::counter(&device)).collect::<cvn_autograd::Result<Vec<_>>>()?;
    let mut done = 0usize;
    for (b, batch) in loader.enumerate() {
        let batch = batch?;
        let x = upload(&batch)?;
        let mut pass = |net: &mut Model, mode: LwtaMode, step: u64| -> Result<Tensor> {
            let mut ctx = Forward::new(mode, seed, step).with_counters(counters.take().unwrap_or_default());
            let logits = net.forward(&x, &mut ctx);
            counters = ctx.take_counters();
            Ok(logits?)
        };
        let deterministic_net = recalibrated.as_mut().map_or(&mut *model, |(copy, _)| copy);
        pass(deterministic_net, LwtaMode::Deterministic, 0)?.count_correct_into(&batch.labels, &mut deterministic)?;
        if samples > 0 {
            let mut probabilities: Option<Tensor> = None;
            for (p, right) in per_pass.iter_mut().enumerate() {
                // Every (batch, pass) pair draws its own noise.
                let logits = pass(model, LwtaMode::Sample, (b * samples + p) as u64)?;
                logits.count_correct_into(&batch.labels, right)?;
                let probs = logits.to_dtype(DType::F32)?.softmax()?;
                probabilities = Some(match probabilities {
                    Some(sum) => sum.add(&probs)?,
                    None => probs,
                });
            }
            if let Some(sum) = probabilities {
                sum.count_correct_into(&batch.labels, &mut averaged)?;
            }
        }
        done += batch.labels.len();
        progress(Progress::Evaluating { done, total });
    }
    let count = |t: &Tensor| -> Result<usize> { Ok(t.to_vec_u64()?[0] as usize) };
    let top1 = |correct: usize| correct as f64 / done.max(1) as f64;
    let activity = counters.map(|c| c.read()).transpose()?.unwrap_or_default();
    Ok(Evaluation {
        images: done,
        samples,
        top1_sampled: (samples > 0).then(|| count(&averaged).map(top1)).transpose()?,
        top1_per_pass: per_pass.iter().map(|c| count(c).map(top1)).collect::<Result<_>>()?,
        top1_deterministic: top1(count(&deterministic)?),
        deterministic_bn_recalibrated_on: recalibrated.map(|(_, images)| images),
        active_fraction: activity.iter().map(|(layer, a)| (layer.clone(), a.fraction())).collect(),
        argmax_win_rate: activity.iter().filter_map(|(layer, a)| Some((layer.clone(), a.argmax_win_rate()?))).collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

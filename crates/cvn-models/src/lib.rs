//! # cvn-models — competition-based vision networks and their data
//!
//! * [`Model`] — ViT/DeiT (timm names) and ResNet-18 (torchvision names) built from `cvn-autograd`
//!   ops, conventional (U = 1) or with LWTA activations (U > 1); configurations in [`ModelConfig`]
//!   and the presets [`PRESETS`].
//! * [`Forward`] — one forward pass's mode (train / sample / deterministic), noise, activation taps
//!   and sparsity counts.
//! * checkpoints — [`Model::save`], [`Model::load`]: the weights alone under timm/torchvision names
//!   with the JSON configuration; training state in [`Extras`]; a run folder's files in [`run`];
//!   PyTorch state dicts in through [`import`]; the deterministic pass's BatchNorm statistics in
//!   [`ArgmaxBatchNorm`].
//! * [`data`] — Fashion-MNIST and ImageFolder data sets, augmentation, a parallel batch loader.
//! * [`parity_checks`] — comparison with the reference fixtures `tiny_vit`, `tiny_resnet` and the
//!   PyTorch state dicts of `import/`.
//!
//! A training step:
//! ```no_run
//! # use cvn_models::{Model, Forward};
//! # use cvn_autograd::{optim::{AdamW, Optimizer}, Tape, Tensor};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut model = Model::preset("vit-fmnist", 4, 0)?;
//! let mut opt = AdamW::new(0.05);
//! # let (images, labels, step) = (vec![0.0; 2 * 784], vec![0usize, 1], 0);
//! let tape = Tape::new();
//! let x = Tensor::from_vec(images, &[2, 1, 28, 28])?.traced(&tape);
//! let loss = model.forward(&x, &mut Forward::train(7, step))?.cross_entropy(&labels, 0.1)?;
//! let grads = loss.backward()?;
//! for (name, param, decay) in model.params_mut().trainable_mut() {
//!     if let Some(g) = grads.get(param) {
//!         opt.update(name, param, g, 1e-3, decay)?;
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod argmax_bn;
pub mod checkpoint;
mod config;
pub mod data;
mod error;
mod forward;
pub mod import;
mod model;
mod nn;
mod params;
pub mod parity;
pub mod plant;
pub mod predict;
mod resnet;
pub mod rng;
pub mod run;
pub mod run_lock;
pub mod train;
mod vit;

pub use argmax_bn::{ArgmaxBatchNorm, BnRecalibration};
pub use checkpoint::Extras;
pub use config::{Competition, ModelConfig, ResNetConfig, Stem, VitConfig, LIMITS, MAX_TOKENS, PRESETS};
pub use error::{Error, Result};
pub use forward::{Activity, ActivityCounters, Forward, Tap, NOISE_SLOTS, RANK_NOISE_STRIDE};
pub use model::Model;
pub use params::{Entry, Kind, Params};
pub use parity::parity_checks;
pub use run_lock::RunLock;

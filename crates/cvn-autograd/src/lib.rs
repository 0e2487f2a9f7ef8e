//! # cvn-autograd — tensors, a tape, ops and optimisers
//!
//! The only crate that knows about storage. A [`Tensor`] is contiguous row-major f32 data on a
//! [`Device`]; see [`device`] for how a CUDA backend plugs in without touching model code.
//!
//! ## Autograd
//! Gradients are recorded on a [`Tape`] (a list of backward closures run in reverse, as dfdx
//! does). Parameters are made with [`Tensor::param`]; the *input* carries the tape:
//! ```
//! use cvn_autograd::{Tape, Tensor};
//! let w = Tensor::param(vec![0.5, -1.0], &[1, 2]).unwrap();
//! let tape = Tape::new();
//! let x = Tensor::from_vec(vec![1.0, 2.0], &[1, 2]).unwrap().traced(&tape);
//! let loss = x.linear(&w, None).unwrap().sum_all();
//! let grads = loss.backward().unwrap();
//! assert_eq!(grads.get(&w).unwrap(), &[1.0, 2.0]);
//! ```
//! Without a tape nothing is recorded (inference costs no bookkeeping).
//!
//! ## Ops (all with backward; each has a finite-difference test in `tests/gradients.rs`)
//! * matrix: [`Tensor::matmul`] (batched), [`Tensor::linear`] (`[out, in]` weights), [`Tensor::conv2d`]
//! * element-wise, broadcasting: `add`, `sub`, `mul`, `div`, `affine`/`scale`
//! * reductions: `sum_all`, `mean_all`, `sum_dim`, `mean_dim`
//! * layout: `reshape`, `permute`, `transpose`, `narrow`, [`Tensor::cat`], `index_select` (embeddings)
//! * normalisation: `layer_norm`, `batch_norm2d` (batch or running [`Statistics`], PyTorch momentum
//!   via [`BatchStats::update_running`]), `l2_normalize`
//! * `softmax`, `log_softmax`, fused multi-head attention on `[B, T, C]`
//!   ([`Tensor::multi_head_attention`], [`Tensor::packed_attention`] for timm's packed `qkv`;
//!   optional causal mask)
//! * activations: `gelu` (erf), `quick_gelu`, `relu`, [`Tensor::lwta`] (stochastic LWTA from
//!   `lwta_kernels`, tokens or NCHW [`LwtaLayout`])
//! * pooling: `max_pool2d`, `global_avg_pool2d`; regularisation: `dropout`; loss: `cross_entropy`
//!   with label smoothing
//!
//! ## Training
//! [`optim::AdamW`] and [`optim::Sgd`] follow PyTorch's update rules and keep state by parameter
//! name (savable, see [`optim::Optimizer::state`]); [`optim::Schedule`] gives cosine-with-warm-up and
//! step learning rates. [`io`] reads and atomically writes safetensors.

pub mod device;
mod error;
pub mod gradcheck;
pub mod io;
pub mod kernels;
mod ops;
pub mod optim;
pub mod shape;
mod tape;
mod tensor;

pub use device::Device;
pub use error::{Error, Result};
pub use lwta_kernels::{LwtaConfig, LwtaMode, Noise};
pub use ops::activation::LwtaLayout;
pub use ops::norm::{BatchStats, Statistics};
pub use tape::{Gradients, Tape};
pub use tensor::{Tensor, TensorId};

//! # cvn-autograd — tensors on every device, a tape, ops and optimisers
//!
//! The only crate that knows about storage.
//!
//! ## Tensors, storage, backends
//! A [`Tensor`] is a shape, an id and an `Arc` of [`storage::Storage`]: contiguous row-major
//! elements of one [`DType`] (f32, bf16, or the integer types of winners, labels and counters) on
//! one [`Device`]. `Storage` is an enum with one variant per backend — `Cpu` ([`cpu`]: host vectors,
//! rayon, SIMD, `matrixmultiply`) and `Cuda` ([`cuda`]: device buffers, cuBLAS, PTX kernels) —
//! as candle does it. Every op family lives in a folder `ops/<op>/` holding, side by side, the op
//! (`mod.rs`: shape and dtype checks, tape recording, written once), the trait of kernels it needs,
//! and that trait's CPU and CUDA implementations (`cpu.rs`, `cuda.rs`, plus `kernels.cu`, the CUDA C
//! of its kernels, and `kernels.ptx`, what NVRTC makes of it, embedded) — dfdx's layout.
//! [`storage`] explains the dispatch. Host memory is reached only through explicit copies:
//! [`Tensor::to_vec`], [`Tensor::item`], [`Tensor::to_device`].
//!
//! ## CUDA
//! [`Device::cuda`] opens a GPU through cudarc (driver and cuBLAS loaded at run time; without them
//! a clear error); [`Device::cuda_emulated`] runs the same backend — the same PTX, the same cuBLAS
//! calls — on the `ptx-emu` interpreter, so `cargo test` checks every CUDA kernel without a GPU.
//! GEMMs are `cublasGemmStridedBatchedEx` (bf16 or f32 in, f32 accumulation), convolution is
//! im2col + GEMM, LWTA runs the fused kernels of `lwta_kernels`; memory comes from a caching
//! allocator. [`cuda`] has the layout. **The CUDA backend has been tested on the PTX emulator
//! only, not on a real GPU** (no GPU was available while it was written).
//!
//! ## Autograd
//! Gradients are recorded on a [`Tape`] (a list of backward closures run in reverse, as dfdx
//! does). Backward passes call per-backend *backward kernels* (dfdx's choice, not candle's
//! composition of forward ops): the fused backward of layer norm, batch norm, softmax, attention,
//! LWTA and the loss is what makes both backends fast, and cuDNN/cuBLAS-style libraries expose
//! backward routines of their own. Gradients are tensors on their tensor's device and in its
//! dtype ([`Gradients`]); a training step never copies to the host. Parameters are made with
//! [`Tensor::param`]; the *input* carries the tape:
//! ```
//! use cvn_autograd::{Tape, Tensor};
//! let w = Tensor::param(vec![0.5, -1.0], &[1, 2]).unwrap();
//! let tape = Tape::new();
//! let x = Tensor::from_vec(vec![1.0, 2.0], &[1, 2]).unwrap().traced(&tape);
//! let loss = x.linear(&w, None).unwrap().sum_all().unwrap();
//! let grads = loss.backward().unwrap();
//! assert_eq!(grads.get(&w).unwrap().to_vec().unwrap(), vec![1.0, 2.0]);
//! ```
//! Without a tape nothing is recorded (inference costs no bookkeeping).
//!
//! ## Mixed precision
//! bf16 is a storage format: kernels compute in f32 and round results to bf16, reductions,
//! normalisations, softmax and the loss accumulate in f32. [`Tensor::to_dtype`] is differentiable,
//! so a bf16 forward pass over f32 master weights (PyTorch's bf16 autocast) gives the weights f32
//! gradients; optimiser state stays f32. Ops with several inputs require one dtype.
//!
//! ## Ops (all with backward; each has a finite-difference test in `tests/gradients.rs` and a
//! float64-reference check on every backend in the [`conformance`] suite)
//! * matrix: [`Tensor::matmul`] (batched), [`Tensor::linear`] (`[out, in]` weights), [`Tensor::conv2d`]
//! * element-wise, broadcasting: `add`, `sub`, `mul`, `div`, `affine`/`scale`
//! * reductions: `sum_all`, `mean_all`, `sum_dim`, `mean_dim`
//! * layout: `reshape`, `permute`, `transpose`, `narrow`, [`Tensor::cat`], `index_select`
//!   (embeddings), `to_dtype`
//! * normalisation: `layer_norm`, `batch_norm2d` (batch or running [`Statistics`], PyTorch momentum
//!   via [`BatchStats::update_running`]), `l2_normalize`
//! * `softmax`, `log_softmax`, fused multi-head attention on `[B, T, C]`
//!   ([`Tensor::multi_head_attention`], [`Tensor::packed_attention`] for timm's packed `qkv`;
//!   optional causal mask)
//! * activations: `gelu` (erf), `quick_gelu`, `relu`, [`Tensor::lwta`] (stochastic LWTA from
//!   `lwta_kernels`, tokens or NCHW [`LwtaLayout`])
//! * pooling: `max_pool2d`, `global_avg_pool2d`; regularisation: `dropout`; loss: `cross_entropy`
//!   with label smoothing; device-side counters ([`Tensor::counter`]) for sparsity and accuracy
//!
//! ## Training
//! [`optim::AdamW`] and [`optim::Sgd`] follow PyTorch's update rules as one fused kernel per
//! parameter and keep state by parameter name (savable, see [`optim::Optimizer::state`]);
//! [`optim::Schedule`] gives cosine-with-warm-up and step learning rates. [`io`] reads and atomically
//! writes safetensors.

pub mod conformance;
pub mod cpu;
pub mod cuda;
pub mod device;
mod dtype;
mod error;
pub mod gradcheck;
pub mod io;
mod ops;
pub mod optim;
pub mod shape;
pub mod storage;
mod tape;
mod tensor;

/// CPU kernels on plain slices, shared by the tape's ops and the benches.
pub mod kernels {
    /// The point-wise activations the LWTA benches compare against.
    pub mod activation {
        pub use crate::ops::unary::cpu::{
            erf, gelu_backward, gelu_forward, quick_gelu_backward, quick_gelu_forward, relu_backward, relu_forward,
        };
    }
}

pub use device::Device;
pub use dtype::DType;
pub use error::{Error, Result};
pub use lwta_kernels::{LwtaConfig, LwtaMode, Noise};
pub use ops::lwta::LwtaLayout;
pub use ops::norm::{BatchStats, CrossReplicaSum, Statistics};
pub use tape::{Gradients, Tape};
pub use tensor::{Tensor, TensorId};

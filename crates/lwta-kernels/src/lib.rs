//! # lwta-kernels — the one home of the stochastic LWTA math
//!
//! A *stochastic local winner-takes-all* layer groups units in blocks of `U` competitors. Per block,
//! one winner is sampled with Gumbel noise (`argmax(x + g)`) and passes its raw linear response; the
//! others output 0. Training uses the straight-through hard Gumbel-softmax: the forward pass is hard,
//! the backward pass goes through `s = softmax((x + g) / τ)`:
//!
//! `dx_j = dy_j·h_j + (s_j/τ)·(dy_j·x_j − Σ_i dy_i·x_i·s_i)` with `h` the hard one-hot.
//!
//! This crate has no tensor type: slices in, slices out, so the autograd tape, the benches and the
//! parity checks call the same functions. Its parts:
//! * [`philox`] — Philox4x32-10 and the noise *stream contract* shared by CPU and GPU;
//! * [`cpu`] — the multi-threaded single-pass CPU reference (forward, backward);
//! * [`par`] — fresh output buffers written chunk by chunk on rayon's threads (no zero-filling pass);
//! * [`simd`] — the explicit-SIMD layer the CPU kernels (and `cvn-autograd`'s activations) are
//!   written against, compiled for AVX-512, AVX2 and scalar code and picked at run time;
//! * [`fixtures`] — [`parity_checks`] against the float64 reference fixtures;
//! * [`cuda`] — the handwritten PTX kernels of `kernels/` loaded through cudarc (dynamic loading: a
//!   machine without a driver gets an `Err`, never a panic).
//!
//! ## Geometry
//! Both layouts are one geometry, [`BlockGeometry`] `{ outer, channels, inner }`, element
//! `(o, c, p)` at flat index `(o·channels + c)·inner + p`; competitors are `U` consecutive channels
//! at fixed `(o, p)`:
//! * tokens `[..., C]`: `outer` = product of the leading dims, `channels` = C, `inner` = 1;
//! * NCHW `[N, C, H, W]`: `outer` = N, `channels` = C, `inner` = H·W.
//!
//! Blocks are numbered `(o·(channels/U) + group)·inner + p`; the winner index of a block (0..U) is
//! stored as one `u8` at that number.

pub mod cpu;
pub mod cuda;
pub mod fixtures;
pub mod par;
pub mod parity;
pub mod philox;
pub mod simd;

use thiserror::Error;

/// Errors of the LWTA functions; each names what was wrong and what was expected.
#[derive(Debug, Error)]
pub enum LwtaError {
    #[error("layer `{layer}`: {channels} channels are not divisible by U = {competitors} competitors")]
    Indivisible { layer: String, channels: usize, competitors: usize },
    #[error("U = {0} competitors is out of range (1..=255; GPU kernels take up to 32)")]
    Competitors(usize),
    #[error("tau must be finite and > 0, got {0}")]
    Tau(f32),
    #[error("buffer `{name}` has {got} elements, expected {expected}")]
    Length { name: &'static str, got: usize, expected: usize },
    #[error("CUDA: {0}")]
    Cuda(String),
    /// A driver call that failed; the driver's error is the `source()`.
    #[error("CUDA: {what}")]
    Driver {
        what: String,
        #[source]
        source: cudarc::driver::DriverError,
    },
    #[error("{file}: {what}")]
    FixtureFile { file: String, what: String },
    #[error("{file}: tensor `{tensor}`: {what}")]
    Fixture { file: String, tensor: String, what: String },
}

pub type Result<T> = std::result::Result<T, LwtaError>;

pub use fixtures::parity_checks;

/// How the elements of a tensor are grouped into competition blocks (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockGeometry {
    pub outer: usize,
    pub channels: usize,
    pub inner: usize,
}

impl BlockGeometry {
    /// Token layout `[rows, channels]`.
    pub fn tokens(rows: usize, channels: usize) -> Self {
        Self { outer: rows, channels, inner: 1 }
    }

    /// NCHW layout `[n, channels, h, w]`.
    pub fn nchw(n: usize, channels: usize, h: usize, w: usize) -> Self {
        Self { outer: n, channels, inner: h * w }
    }

    pub fn len(&self) -> usize {
        self.outer * self.channels * self.inner
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of competition blocks for `u` competitors.
    pub fn blocks(&self, u: usize) -> usize {
        self.len() / u
    }

    /// Checks that `u` divides the channels; `layer` names the layer in the error.
    pub fn check(&self, u: usize, layer: &str) -> Result<()> {
        if u == 0 || u > 255 {
            return Err(LwtaError::Competitors(u));
        }
        if !self.channels.is_multiple_of(u) {
            return Err(LwtaError::Indivisible { layer: layer.to_string(), channels: self.channels, competitors: u });
        }
        Ok(())
    }
}

/// Where the competition noise comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Noise<'a> {
    /// Deterministic argmax: no noise (`g = 0`).
    None,
    /// Gumbel noise from the Philox stream `(seed, offset)` (see [`philox`]).
    Philox { seed: u64, offset: u64 },
    /// Uniforms supplied per element (same length as `x`), turned into Gumbel noise as the stream
    /// contract says. Used by the reference fixtures, which fix the draws.
    Uniforms(&'a [f32]),
}

/// The LWTA parameters that travel together through models, checkpoints and kernels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LwtaConfig {
    /// Competitors per block (U). `1` means the conventional activation (GELU/ReLU) is used instead.
    pub competitors: usize,
    /// Temperature of the relaxed backward pass while training (DISCOVER: 1.67).
    pub tau_train: f32,
    /// Temperature at inference (DISCOVER: 0.01); the hard forward value does not depend on it.
    pub tau_test: f32,
}

impl Default for LwtaConfig {
    fn default() -> Self {
        Self { competitors: 4, tau_train: 1.67, tau_test: 0.01 }
    }
}

/// How a forward pass picks winners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LwtaMode {
    /// Sample with Gumbel noise, relaxed backward at `tau_train`.
    Train,
    /// Sample with Gumbel noise at `tau_test` (stochastic inference, as DISCOVER).
    Sample,
    /// Plain argmax over each block, no noise.
    Deterministic,
}

/// Checks a buffer length; the error names the buffer (shared by the CPU and CUDA entry points).
pub(crate) fn expect_len(name: &'static str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(LwtaError::Length { name, got, expected })
    }
}

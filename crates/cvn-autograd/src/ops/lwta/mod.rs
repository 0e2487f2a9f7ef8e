//! The LWTA competition layer. Its math has one home per device: `lwta_kernels::cpu` on the CPU,
//! the fused PTX kernels of `kernels/` on CUDA; this op checks shapes and wires them to the tape.

use lwta_kernels::{BlockGeometry, Noise};

use crate::error::{shape_err, Result};
use crate::ops::check_float;
use crate::storage::{dispatch, Storage};
use crate::tensor::Tensor;

mod cpu;
mod cuda;

/// How an LWTA layer's tensor is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LwtaLayout {
    /// `[..., C]`: `U` consecutive hidden units compete (ViT MLP).
    Tokens,
    /// `[N, C, H, W]`: `U` consecutive channels compete at each pixel (ResNet).
    Nchw,
}

/// The kernels of this op family (see [`crate::storage`]).
pub(crate) trait LwtaOps: Sized {
    /// `(y, winners)`: the output and the `u8` winner index of every block.
    fn lwta_forward(&self, geom: BlockGeometry, u: usize, noise: Noise<'_>) -> Result<(Self, Self)>;
    /// The straight-through gradient at temperature `tau`, `self` being the forward's input; the
    /// noise is regenerated from the same stream, never stored.
    fn lwta_backward(&self, grad: &Self, geom: BlockGeometry, u: usize, tau: f32, noise: Noise<'_>) -> Result<Self>;
    /// The `u8` winner index of every block (no output).
    fn lwta_winners(&self, geom: BlockGeometry, u: usize, noise: Noise<'_>) -> Result<Self>;
}

impl Tensor {
    /// Stochastic local winner-takes-all over blocks of `u` consecutive channels (see `lwta_kernels`).
    ///
    /// Returns the output and the winner index of every block (a `u8` tensor on the same device).
    /// The backward pass is the straight-through relaxed one at temperature `tau`; the noise is
    /// regenerated, not stored. `layer` names the layer in errors (e.g. `C % U ≠ 0`).
    pub fn lwta(&self, layout: LwtaLayout, u: usize, tau: f32, noise: Noise<'_>, layer: &str) -> Result<(Tensor, Tensor)> {
        let geom = self.lwta_geometry(layout, u, layer)?;
        if !(tau.is_finite() && tau > 0.0) {
            return Err(lwta_kernels::LwtaError::Tau(tau).into());
        }
        let (y, winners): (Storage, Storage) = dispatch!("lwta", (self.storage()) => |x| x.lwta_forward(geom, u, noise))?;
        let owned_noise = OwnedNoise::from(noise);
        let x = self.clone();
        let winners = Tensor::from_storage(winners, vec![geom.blocks(u)]);
        let y = Tensor::from_op(y, self.shape().to_vec(), &[self], move |g, grads| {
            let noise = owned_noise.as_noise();
            let gx: Storage = dispatch!("lwta", (x.storage(), g.storage()) => |xs, gs| xs.lwta_backward(gs, geom, u, tau, noise))?;
            grads.accumulate(x.id(), Tensor::from_storage(gx, x.shape().to_vec()))
        });
        Ok((y, winners))
    }

    /// The winner index of every competition block under `noise`, without building an output
    /// (with `Noise::None`: the argmax winners, which sampled winners can be compared against).
    pub fn lwta_winners(&self, layout: LwtaLayout, u: usize, noise: Noise<'_>, layer: &str) -> Result<Tensor> {
        let geom = self.lwta_geometry(layout, u, layer)?;
        let winners: Storage = dispatch!("lwta_winners", (self.storage()) => |x| x.lwta_winners(geom, u, noise))?;
        Ok(Tensor::from_storage(winners, vec![geom.blocks(u)]))
    }

    /// The competition blocks of this tensor in `layout`, checked against `u`.
    fn lwta_geometry(&self, layout: LwtaLayout, u: usize, layer: &str) -> Result<BlockGeometry> {
        check_float("lwta", self)?;
        let geom = match (layout, self.shape()) {
            (LwtaLayout::Tokens, [.., c]) => BlockGeometry::tokens(self.len() / (*c).max(1), *c),
            (LwtaLayout::Nchw, &[n, c, h, w]) => BlockGeometry::nchw(n, c, h, w),
            _ => return shape_err("lwta", format!("layer `{layer}`: {layout:?} layout does not fit shape {:?}", self.shape())),
        };
        geom.check(u, layer)?;
        Ok(geom)
    }
}

/// A [`Noise`] the backward closure can keep after the caller's borrow ends.
enum OwnedNoise {
    None,
    Philox { seed: u64, offset: u64 },
    Uniforms(Vec<f32>),
}

impl From<Noise<'_>> for OwnedNoise {
    fn from(n: Noise<'_>) -> Self {
        match n {
            Noise::None => OwnedNoise::None,
            Noise::Philox { seed, offset } => OwnedNoise::Philox { seed, offset },
            Noise::Uniforms(u) => OwnedNoise::Uniforms(u.to_vec()),
        }
    }
}

impl OwnedNoise {
    fn as_noise(&self) -> Noise<'_> {
        match self {
            OwnedNoise::None => Noise::None,
            OwnedNoise::Philox { seed, offset } => Noise::Philox { seed: *seed, offset: *offset },
            OwnedNoise::Uniforms(u) => Noise::Uniforms(u),
        }
    }
}

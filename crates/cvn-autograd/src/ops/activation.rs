//! Point-wise activations (GELU, QuickGELU, ReLU) and the LWTA competition layer. The arithmetic
//! lives in `kernels::activation` and in `lwta_kernels`; these ops only wire it to the tape.

use lwta_kernels::{cpu as lwta_cpu, BlockGeometry, Noise};

use crate::error::{shape_err, Result};
use crate::kernels::activation as act;
use crate::tensor::Tensor;

type Forward = fn(&[f32], &mut [f32]);
type Backward = fn(&[f32], &[f32], &mut [f32]);

impl Tensor {
    fn pointwise(&self, forward: Forward, backward: Backward) -> Tensor {
        let mut out = vec![0.0; self.len()];
        forward(self.data(), &mut out);
        let x = self.clone();
        Tensor::from_op(out, self.shape().to_vec(), &[self], move |g, grads| {
            let mut gx = vec![0.0; g.len()];
            backward(x.data(), g, &mut gx);
            grads.accumulate(x.id(), gx);
            Ok(())
        })
    }

    /// GELU, erf form (timm's default).
    pub fn gelu(&self) -> Tensor {
        self.pointwise(act::gelu_forward, act::gelu_backward)
    }

    /// QuickGELU `x·σ(1.702x)` (OpenAI CLIP).
    pub fn quick_gelu(&self) -> Tensor {
        self.pointwise(act::quick_gelu_forward, act::quick_gelu_backward)
    }

    pub fn relu(&self) -> Tensor {
        self.pointwise(act::relu_forward, act::relu_backward)
    }

    /// Stochastic local winner-takes-all over blocks of `u` consecutive channels (see `lwta_kernels`).
    ///
    /// Returns the output and the winner index of every block. The backward pass is the
    /// straight-through relaxed one at temperature `tau`; the noise is regenerated, not stored.
    /// `layer` names the layer in errors (e.g. `C % U ≠ 0`).
    pub fn lwta(&self, layout: LwtaLayout, u: usize, tau: f32, noise: Noise<'_>, layer: &str) -> Result<(Tensor, Vec<u8>)> {
        let geom = self.lwta_geometry(layout, u, layer)?;
        if !(tau.is_finite() && tau > 0.0) {
            return Err(lwta_kernels::LwtaError::Tau(tau).into());
        }
        let mut out = vec![0.0; self.len()];
        let mut winners = vec![0u8; geom.blocks(u)];
        lwta_cpu::forward(self.data(), &mut out, &mut winners, geom, u, noise)?;
        let owned_noise = OwnedNoise::from(noise);
        let x = self.clone();
        let y = Tensor::from_op(out, self.shape().to_vec(), &[self], move |g, grads| {
            let mut gx = vec![0.0; g.len()];
            lwta_cpu::backward(x.data(), g, &mut gx, geom, u, tau, owned_noise.as_noise())?;
            grads.accumulate(x.id(), gx);
            Ok(())
        });
        Ok((y, winners))
    }

    /// The winner index of every competition block under `noise`, without building an output
    /// (with `Noise::None`: the argmax winners, which sampled winners can be compared against).
    pub fn lwta_winners(&self, layout: LwtaLayout, u: usize, noise: Noise<'_>, layer: &str) -> Result<Vec<u8>> {
        let geom = self.lwta_geometry(layout, u, layer)?;
        let mut winners = vec![0u8; geom.blocks(u)];
        lwta_cpu::forward(self.data(), &mut vec![0.0; self.len()], &mut winners, geom, u, noise)?;
        Ok(winners)
    }

    /// The competition blocks of this tensor in `layout`, checked against `u`.
    fn lwta_geometry(&self, layout: LwtaLayout, u: usize, layer: &str) -> Result<BlockGeometry> {
        let geom = match (layout, self.shape()) {
            (LwtaLayout::Tokens, [.., c]) => BlockGeometry::tokens(self.len() / (*c).max(1), *c),
            (LwtaLayout::Nchw, &[n, c, h, w]) => BlockGeometry::nchw(n, c, h, w),
            _ => return shape_err("lwta", format!("layer `{layer}`: {layout:?} layout does not fit shape {:?}", self.shape())),
        };
        geom.check(u, layer)?;
        Ok(geom)
    }
}

/// How an LWTA layer's tensor is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LwtaLayout {
    /// `[..., C]`: `U` consecutive hidden units compete (ViT MLP).
    Tokens,
    /// `[N, C, H, W]`: `U` consecutive channels compete at each pixel (ResNet).
    Nchw,
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

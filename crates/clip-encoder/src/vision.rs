//! `CLIPVisionTransformer`: patch embedding, class token, positions, `pre_layrnorm`, encoder,
//! `post_layernorm` on the class token.

use cvn_autograd::Tensor;

use crate::config::VisionConfig;
use crate::error::{ClipError, Result};
use crate::layers::{Encoder, LayerNorm};
use crate::weights::WeightSource;
use crate::TowerOutput;

/// `CLIPVisionEmbeddings`.
#[derive(Debug, Clone)]
pub struct VisionEmbeddings {
    /// `[D]`, prepended to the patch tokens.
    pub class_embedding: Tensor,
    /// Conv weight `[D, C, P, P]`, stride P, no bias.
    pub patch_embedding: Tensor,
    /// `[1 + (S/P)², D]`.
    pub position_embedding: Tensor,
    pub config: VisionConfig,
}

impl VisionEmbeddings {
    fn load(w: &mut impl WeightSource, name: &str, c: &VisionConfig) -> Self {
        let d = c.encoder.hidden_size;
        Self {
            class_embedding: w.tensor(&format!("{name}.class_embedding"), &[d]),
            patch_embedding: w.tensor(&format!("{name}.patch_embedding.weight"), &[d, c.num_channels, c.patch_size, c.patch_size]),
            position_embedding: w.tensor(&format!("{name}.position_embedding.weight"), &[c.num_positions(), d]),
            config: c.clone(),
        }
    }

    /// `[B, C, S, S]` pixels → `[B, 1 + (S/P)², D]` tokens.
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (d, s) = (c.encoder.hidden_size, c.image_size);
        let b = match pixels.shape() {
            &[b, ch, h, w] if ch == c.num_channels && h == s && w == s => b,
            other => {
                return Err(ClipError::input("pixel_values", format!("expected [batch, {}, {s}, {s}], got {other:?}", c.num_channels)))
            }
        };
        let patches = pixels.conv2d(&self.patch_embedding, None, c.patch_size, 0)?; // [B, D, g, g]
        let patches = patches.reshape(&[b, d, c.num_positions() - 1])?.transpose(1, 2)?; // [B, g², D]
        let class = Tensor::zeros(&[b, 1, d]).add(&self.class_embedding)?;
        Ok(Tensor::cat(&[&class, &patches], 1)?.add(&self.position_embedding)?)
    }
}

/// `CLIPVisionTransformer` (`vision_model.*`).
#[derive(Debug, Clone)]
pub struct VisionTransformer {
    pub embeddings: VisionEmbeddings,
    /// Sic: the Hugging Face name is misspelt, and the checkpoint key with it.
    pub pre_layrnorm: LayerNorm,
    pub encoder: Encoder,
    pub post_layernorm: LayerNorm,
}

impl VisionTransformer {
    pub fn load(w: &mut impl WeightSource, name: &str, c: &VisionConfig) -> Self {
        let (d, eps) = (c.encoder.hidden_size, c.encoder.layer_norm_eps);
        Self {
            embeddings: VisionEmbeddings::load(w, &format!("{name}.embeddings"), c),
            pre_layrnorm: LayerNorm::load(w, &format!("{name}.pre_layrnorm"), d, eps),
            encoder: Encoder::load(w, &format!("{name}.encoder"), &c.encoder),
            post_layernorm: LayerNorm::load(w, &format!("{name}.post_layernorm"), d, eps),
        }
    }

    /// `pixels: [B, C, S, S]` (preprocessed). `last_hidden` is the encoder output `[B, T, D]` (no
    /// final norm, as in `transformers`); `pooled` is `post_layernorm` of the class token.
    pub fn forward(&self, pixels: &Tensor) -> Result<TowerOutput> {
        let x = self.pre_layrnorm.forward(&self.embeddings.forward(pixels)?)?;
        let last_hidden = self.encoder.forward(&x, false)?;
        let (b, t, d) = (last_hidden.dim(0)?, last_hidden.dim(1)?, last_hidden.dim(2)?);
        let class_rows: Vec<usize> = (0..b).map(|i| i * t).collect();
        let pooled = self.post_layernorm.forward(&last_hidden.reshape(&[b * t, d])?.index_select(&class_rows)?)?;
        Ok(TowerOutput { last_hidden, pooled })
    }
}

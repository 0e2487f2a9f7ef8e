//! `CLIPModel`: both towers, their projections into the shared space, and `logit_scale`; batched
//! encoding of many images or texts into L2-normalised embeddings.

use std::path::Path;

use cvn_autograd::Tensor;

use crate::config::ClipConfig;
use crate::error::Result;
use crate::layers::Linear;
use crate::text::TextTransformer;
use crate::vision::VisionTransformer;
use crate::weights::{Checkpoint, RandomWeights, WeightSource};

/// Images per forward pass in [`ClipModel::encode_images`]: large enough for full-speed GEMMs,
/// small enough that ViT-L activations stay well under a gigabyte.
pub const IMAGE_BATCH: usize = 16;
/// Texts per forward pass in [`ClipModel::encode_token_ids`].
pub const TEXT_BATCH: usize = 256;

/// A CLIP model with Hugging Face parameter names (`text_model.*`, `vision_model.*`,
/// `text_projection`, `visual_projection`, `logit_scale`).
#[derive(Debug, Clone)]
pub struct ClipModel {
    pub config: ClipConfig,
    pub text_model: TextTransformer,
    pub vision_model: VisionTransformer,
    pub text_projection: Linear,
    pub visual_projection: Linear,
    /// The learnt log temperature (a 0-d tensor).
    pub logit_scale: Tensor,
}

impl ClipModel {
    /// Loads `model.safetensors` (f32, f16 or bf16) for `config`. Every missing or mis-shaped
    /// tensor is listed in one error; extra tensors are ignored.
    pub fn load(config: ClipConfig, weights: &Path) -> Result<Self> {
        Self::build(config, Checkpoint::load(weights)?)
    }

    /// A model with deterministic random parameters (benchmarks, tests).
    pub fn random(config: ClipConfig, seed: u64) -> Result<Self> {
        Self::build(config, RandomWeights::new(seed))
    }

    /// Builds the modules, asking `weights` for every parameter by name and shape.
    pub fn build(config: ClipConfig, mut weights: impl WeightSource) -> Result<Self> {
        let w = &mut weights;
        let p = config.projection_dim;
        let model = Self {
            text_model: TextTransformer::load(w, "text_model", &config.text),
            vision_model: VisionTransformer::load(w, "vision_model", &config.vision),
            text_projection: Linear::load(w, "text_projection", config.text.encoder.hidden_size, p, false),
            visual_projection: Linear::load(w, "visual_projection", config.vision.encoder.hidden_size, p, false),
            logit_scale: w.tensor("logit_scale", &[]),
            config,
        };
        weights.finish()?;
        Ok(model)
    }

    /// `logit_scale.exp()`: the factor on cosine similarities that makes logits.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale.data()[0].exp()
    }

    /// Projected (not normalised) image features `[B, P]` of preprocessed pixels `[B, C, S, S]`.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        self.visual_projection.forward(&self.vision_model.forward(pixels)?.pooled)
    }

    /// Projected (not normalised) text features `[B, P]` of equally long id rows.
    pub fn text_features(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        self.text_projection.forward(&self.text_model.forward(ids)?.pooled)
    }

    /// L2-normalised image embeddings `[N, P]`, [`IMAGE_BATCH`] images per pass.
    pub fn encode_images(&self, pixels: &Tensor) -> Result<Tensor> {
        let n = pixels.dim(0)?;
        let chunks = (0..n)
            .step_by(IMAGE_BATCH)
            .map(|start| self.image_features(&pixels.narrow(0, start, IMAGE_BATCH.min(n - start))?)?.l2_normalize().map_err(Into::into))
            .collect::<Result<Vec<_>>>()?;
        concat_rows(&chunks, self.config.projection_dim)
    }

    /// L2-normalised text embeddings `[N, P]` of tokenised texts, in input order.
    ///
    /// Texts are sorted by where they are pooled and encoded [`TEXT_BATCH`] at a time, each batch
    /// cut right after its last pooled token: thanks to the causal mask this changes nothing in the
    /// result, and short concepts ("striped", "dog") cost a few positions instead of 77.
    pub fn encode_token_ids(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let positions = ids.iter().map(|row| self.text_model.pool_position(row)).collect::<Result<Vec<_>>>()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| positions[i]);
        let p = self.config.projection_dim;
        let mut out = vec![0.0f32; ids.len() * p];
        for batch in order.chunks(TEXT_BATCH) {
            let len = batch.iter().map(|&i| positions[i] + 1).max().unwrap_or(1);
            let rows: Vec<Vec<u32>> = batch.iter().map(|&i| ids[i][..len].to_vec()).collect();
            let embeds = self.text_features(&rows)?.l2_normalize()?;
            for (&i, e) in batch.iter().zip(embeds.data().chunks_exact(p)) {
                out[i * p..(i + 1) * p].copy_from_slice(e);
            }
        }
        Ok(Tensor::from_vec(out, &[ids.len(), p])?)
    }

    /// `logit_scale · image_embeds · text_embedsᵀ` (`[images, texts]`), from normalised embeddings.
    pub fn logits_per_image(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        Ok(image_embeds.matmul(&text_embeds.transpose(0, 1)?)?.scale(self.logit_scale()))
    }
}

/// Stacks `[n_i, width]` tensors into one `[Σ n_i, width]` (also for zero tensors).
pub(crate) fn concat_rows(chunks: &[Tensor], width: usize) -> Result<Tensor> {
    if chunks.is_empty() {
        return Ok(Tensor::zeros(&[0, width]));
    }
    let refs: Vec<&Tensor> = chunks.iter().collect();
    Ok(Tensor::cat(&refs, 0)?)
}

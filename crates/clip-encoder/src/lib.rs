//! # clip-encoder — CLIP image and text towers from Hugging Face files
//!
//! Loads a standard Hugging Face CLIP repository unchanged — `config.json`, `model.safetensors`
//! (f32/f16/bf16) and `tokenizer.json` (e.g. `openai/clip-vit-base-patch16`, `-patch32`,
//! `-large-patch14`) — and encodes images and texts into L2-normalised embeddings for zero-shot
//! classification and CLIP-Dissect. Nothing is downloaded: the user points at a directory.
//!
//! * [`ClipConfig`]: the architecture from `config.json` (defaults as `transformers`).
//! * [`ClipTokenizer`]: CLIP BPE via the `tokenizers` crate, 77 ids with start/end tokens.
//! * [`ImageProcessor`]: `CLIPImageProcessor` (PIL bicubic resize, centre crop, CLIP mean/std),
//!   greyscale (Fashion-MNIST) inputs replicated to RGB.
//! * [`ClipModel`]: the towers built from `cvn_autograd` ops (inference only, no tape), modules
//!   nested like the Hugging Face names (`vision_model.encoder.layers.N.self_attn.q_proj`).
//! * [`Clip`]: all three loaded from one directory.
//! * [`parity_checks`]: agreement with `transformers` on the fixtures in `tests/fixtures`.
//!
//! ```no_run
//! # fn main() -> clip_encoder::Result<()> {
//! let clip = clip_encoder::Clip::load(std::path::Path::new("weights/clip-vit-base-patch16"))?;
//! let images = clip.encode_image_files(&["dog.jpg"])?;
//! let texts = clip.encode_texts(&["a photo of a dog", "a photo of a cat"])?;
//! let probabilities = clip.zero_shot(&images, &texts)?; // [1, 2], rows sum to 1
//! # Ok(()) }
//! ```

use std::path::Path;

use cvn_autograd::Tensor;

pub mod config;
mod error;
pub mod layers;
mod model;
mod parity;
pub mod preprocess;
pub mod text;
pub mod tokenizer;
pub mod vision;
pub mod weights;

pub use config::{Activation, ClipConfig, TextPooling};
pub use error::{ClipError, Result};
pub use model::{ClipModel, IMAGE_BATCH, TEXT_BATCH};
pub use parity::parity_checks;
pub use preprocess::ImageProcessor;
pub use tokenizer::ClipTokenizer;

/// What a tower returns: every token's final hidden state and the pooled vector.
#[derive(Debug, Clone)]
pub struct TowerOutput {
    /// `[B, T, D]`.
    pub last_hidden: Tensor,
    /// `[B, D]`, before the projection.
    pub pooled: Tensor,
}

/// The three files of a Hugging Face CLIP repository that [`Clip::load`] reads.
pub const CLIP_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// A CLIP model with its tokenizer and image preprocessing, loaded from one directory.
pub struct Clip {
    pub model: ClipModel,
    pub tokenizer: ClipTokenizer,
    pub processor: ImageProcessor,
}

impl Clip {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let [config, weights, tokenizer] = CLIP_FILES.map(|f| dir.join(f));
        if let Some(missing) = [&config, &weights, &tokenizer]
            .into_iter()
            .find(|p| !p.is_file())
        {
            return Err(ClipError::Config {
                file: missing.display().to_string(),
                detail: format!(
                    "missing: a CLIP directory holds {} from a Hugging Face CLIP repository \
                     (e.g. openai/clip-vit-base-patch16)",
                    CLIP_FILES.join(", ")
                ),
            });
        }
        let config = ClipConfig::from_file(&config)?;
        let tokenizer = ClipTokenizer::from_file(&tokenizer, config.text.max_position_embeddings)?;
        let processor = ImageProcessor::clip(config.vision.image_size);
        Ok(Self {
            model: ClipModel::load(config, &weights)?,
            tokenizer,
            processor,
        })
    }

    /// L2-normalised embeddings `[N, P]` of `texts` (tokenised in parallel, encoded in batches).
    pub fn encode_texts<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Tensor> {
        self.model
            .encode_token_ids(&self.tokenizer.encode_batch(texts)?)
    }

    /// L2-normalised embeddings `[N, P]` of image files, decoded and preprocessed
    /// [`IMAGE_BATCH`] at a time so memory stays bounded for large probe sets.
    pub fn encode_image_files(&self, paths: &[impl AsRef<Path> + Sync]) -> Result<Tensor> {
        let chunks = paths
            .chunks(IMAGE_BATCH)
            .map(|chunk| self.model.encode_images(&self.processor.load_batch(chunk)?))
            .collect::<Result<Vec<_>>>()?;
        model::concat_rows(&chunks, self.model.config.projection_dim)
    }

    /// Zero-shot probabilities `[images, texts]`: softmax over texts of the scaled similarities.
    pub fn zero_shot(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        Ok(self
            .model
            .logits_per_image(image_embeds, text_embeds)?
            .softmax()?)
    }
}

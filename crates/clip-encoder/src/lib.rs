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

use cvn_autograd::{DType, Device, Tensor};
use rayon::prelude::*;

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
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir` (f32, on the CPU).
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_on(dir, &Device::Cpu, DType::F32)
    }

    /// [`Clip::load`] with the towers stored as `dtype` (f32 or bf16) on `device`, where they run.
    /// Embeddings come back as f32 tensors on `device`.
    pub fn load_on(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let [config, weights, tokenizer] = CLIP_FILES.map(|f| dir.join(f));
        if let Some(missing) = [&config, &weights, &tokenizer].into_iter().find(|p| !p.is_file()) {
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
        Ok(Self { model: ClipModel::load_on(config, &weights, device, dtype)?, tokenizer, processor })
    }

    /// L2-normalised embeddings `[N, P]` of `texts` (tokenised in parallel, encoded in batches).
    pub fn encode_texts<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Tensor> {
        self.model.encode_token_ids(&self.tokenizer.encode_batch(texts)?)
    }

    /// L2-normalised embeddings `[N, P]` of image files (JPEG or PNG).
    pub fn encode_image_files(&self, paths: &[impl AsRef<Path> + Sync]) -> Result<Tensor> {
        self.encode_prepared(paths, |p| self.processor.load(p.as_ref()))
    }

    /// L2-normalised embeddings `[N, P]` of decoded RGB images.
    pub fn encode_rgb_images(&self, images: &[image::RgbImage]) -> Result<Tensor> {
        self.encode_prepared(images, |im| self.processor.rgb_image(im))
    }

    /// Preprocesses (in parallel) and encodes [`IMAGE_BATCH`] items at a time, so memory stays
    /// bounded for large probe sets.
    fn encode_prepared<T: Sync>(&self, items: &[T], prepare: impl Fn(&T) -> Result<Vec<f32>> + Sync) -> Result<Tensor> {
        let chunks = items
            .chunks(IMAGE_BATCH)
            .map(|chunk| {
                let pixels = chunk.par_iter().map(&prepare).collect::<Result<Vec<_>>>()?;
                self.model.encode_images(&self.processor.stack(pixels)?)
            })
            .collect::<Result<Vec<_>>>()?;
        model::concat_rows(&chunks, self.model.config.projection_dim)
    }

    /// Zero-shot probabilities `[images, texts]`: softmax over texts of the scaled similarities.
    pub fn zero_shot(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        Ok(self.model.logits_per_image(image_embeds, text_embeds)?.softmax()?)
    }
}

#[cfg(test)]
mod tests {
    use cvn_autograd::io::TensorFile;

    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

    /// A CLIP directory made of the tiny model and the fixture tokenizer.
    fn tiny_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("clip-encoder-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fixtures = Path::new(FIXTURES);
        for (from, file) in [("tiny_clip", "config.json"), ("tiny_clip", "model.safetensors"), ("clip_tokenizer", "tokenizer.json")] {
            std::fs::copy(fixtures.join(from).join(file), dir.join(file)).unwrap();
        }
        dir
    }

    #[test]
    fn a_directory_encodes_texts_and_images_end_to_end() {
        let dir = tiny_dir("e2e");
        let clip = Clip::load(&dir).unwrap();
        let io = TensorFile::load(&Path::new(FIXTURES).join("tiny_clip/io.safetensors")).unwrap();
        let texts: Vec<String> = serde_json::from_str(&io.metadata["texts"]).unwrap();
        let ours = clip.encode_texts(&texts).unwrap();
        let expected = &io.tensors["text_embeds"];
        assert_eq!(ours.shape(), expected.shape());
        assert!(ours.to_vec().unwrap().iter().zip(expected.to_vec().unwrap()).all(|(a, b)| (a - b).abs() < 1e-5));

        let image = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 128]));
        let png = dir.join("probe.png");
        image.save(&png).unwrap();
        let from_memory = clip.encode_rgb_images(&[image.clone(), image]).unwrap();
        let from_file = clip.encode_image_files(&[&png]).unwrap();
        assert_eq!(from_memory.shape(), &[2, clip.model.config.projection_dim]);
        assert_eq!(&from_memory.to_vec().unwrap()[..from_file.len()], from_file.to_vec().unwrap());

        let probabilities = clip.zero_shot(&from_file, &ours).unwrap();
        assert!((probabilities.to_vec().unwrap().iter().sum::<f32>() - 1.0).abs() < 1e-5);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_missing_file_is_named_with_what_to_provide() {
        let dir = tiny_dir("missing");
        std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
        let err = Clip::load(&dir).err().unwrap().to_string();
        assert!(err.contains("tokenizer.json") && err.contains("openai/clip-vit-base-patch16"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

//! `CLIPModel`: both towers, their projections into the shared space, and `logit_scale`; batched
//! encoding of many images or texts into L2-normalised embeddings.

use std::path::Path;

use cvn_autograd::{DType, Device, Tensor};

use crate::config::ClipConfig;
use crate::error::Result;
use crate::layers::Linear;
use crate::text::TextTransformer;
use crate::vision::VisionTransformer;
use crate::weights::{Checkpoint, OnDevice, RandomWeights, WeightSource};

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
        let checkpoint = Checkpoint::load_for(weights, &config)?;
        Self::build(config, checkpoint)
    }

    /// [`ClipModel::load`] with the parameters stored as `dtype` (f32 or bf16) on `device`; the
    /// towers then run there, in that dtype (f32 math inside every kernel).
    pub fn load_on(config: ClipConfig, weights: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let checkpoint = Checkpoint::load_for(weights, &config)?;
        Self::build(config, OnDevice::new(checkpoint, device.clone(), dtype))
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
    pub fn logit_scale(&self) -> Result<f32> {
        Ok(self.logit_scale.item()?.exp())
    }

    /// Where the parameters live.
    pub fn device(&self) -> Device {
        self.logit_scale.device()
    }

    /// The parameters' dtype (what the towers compute in, f32 math inside).
    pub fn dtype(&self) -> DType {
        self.logit_scale.dtype()
    }

    /// Projected (not normalised) image features `[B, P]` of preprocessed pixels `[B, C, S, S]`
    /// (moved to the model's device and dtype).
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        let pixels = pixels.to_device(&self.device())?.to_dtype(self.dtype())?;
        self.visual_projection.forward(&self.vision_model.forward(&pixels)?.pooled)
    }

    /// Projected (not normalised) text features `[B, P]` of equally long id rows.
    pub fn text_features(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        self.text_projection.forward(&self.text_model.forward(ids)?.pooled)
    }

    /// L2-normalised image embeddings `[N, P]` (f32, on the model's device), [`IMAGE_BATCH`]
    /// images per pass.
    pub fn encode_images(&self, pixels: &Tensor) -> Result<Tensor> {
        let n = pixels.dim(0)?;
        let chunks = (0..n)
            .step_by(IMAGE_BATCH)
            .map(|start| {
                let features = self.image_features(&pixels.narrow(0, start, IMAGE_BATCH.min(n - start))?)?;
                Ok(features.to_dtype(DType::F32)?.l2_normalize()?)
            })
            .collect::<Result<Vec<_>>>()?;
        concat_rows(&chunks, self.config.projection_dim)
    }

    /// L2-normalised text embeddings `[N, P]` (f32, on the model's device) of tokenised texts, in
    /// input order.
    ///
    /// Texts are sorted by where they are pooled and encoded [`TEXT_BATCH`] at a time, each batch
    /// cut right after its last pooled token: thanks to the causal mask this changes nothing in the
    /// result, and short concepts ("striped", "dog") cost a few positions instead of 77.
    pub fn encode_token_ids(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let positions = ids.iter().map(|row| self.text_model.pool_position(row)).collect::<Result<Vec<_>>>()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| positions[i]);
        let chunks = order
            .chunks(TEXT_BATCH)
            .map(|batch| {
                let len = batch.iter().map(|&i| positions[i] + 1).max().unwrap_or(1);
                let rows: Vec<Vec<u32>> = batch.iter().map(|&i| ids[i][..len].to_vec()).collect();
                Ok(self.text_features(&rows)?.to_dtype(DType::F32)?.l2_normalize()?)
            })
            .collect::<Result<Vec<_>>>()?;
        // Back from sorted order to input order, on the device.
        let mut rank = vec![0; ids.len()];
        order.iter().enumerate().for_each(|(r, &i)| rank[i] = r);
        let sorted = concat_rows(&chunks, self.config.projection_dim)?;
        Ok(if ids.is_empty() { sorted } else { sorted.index_select(&rank)? })
    }

    /// `logit_scale · image_embeds · text_embedsᵀ` (`[images, texts]`), from normalised embeddings.
    pub fn logits_per_image(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        Ok(image_embeds.matmul(&text_embeds.transpose(0, 1)?)?.scale(self.logit_scale()?)?)
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::path::PathBuf;

    use cvn_autograd::io::{save, Stored, TensorFile};
    use safetensors::tensor::{Dtype, TensorView};

    use super::*;

    const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny_clip");

    fn tiny_config() -> ClipConfig {
        ClipConfig::from_file(&Path::new(TINY).join("config.json")).unwrap()
    }

    fn tiny_model() -> ClipModel {
        ClipModel::load(tiny_config(), &Path::new(TINY).join("model.safetensors")).unwrap()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("clip-encoder-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("model.safetensors")
    }

    fn pixels(n: usize, model: &ClipModel) -> Tensor {
        let s = model.config.vision.image_size;
        let data = (0..n * 3 * s * s).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        Tensor::from_vec(data, &[n, 3, s, s]).unwrap()
    }

    #[test]
    fn every_missing_or_misshaped_tensor_is_listed_and_extras_are_ignored() {
        let mut tensors: BTreeMap<String, Stored> = TensorFile::load(&Path::new(TINY).join("model.safetensors"))
            .unwrap()
            .tensors
            .into_iter()
            .map(|(k, v)| (k, Stored::F32(v)))
            .collect();
        tensors.remove("text_projection.weight");
        tensors.insert("vision_model.pre_layrnorm.weight".into(), Stored::F32(Tensor::zeros(&[65])));
        tensors.insert("text_model.embeddings.position_ids".into(), Stored::I64 { shape: vec![1, 77], values: (0..77).collect() });
        let path = scratch("broken");
        save(&path, &tensors, &HashMap::new()).unwrap();
        let err = ClipModel::load(tiny_config(), &path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("`text_projection.weight`: expected [32, 64], missing"), "{err}");
        assert!(err.contains("`vision_model.pre_layrnorm.weight`: expected [64], found [65]"), "{err}");
        assert!(!err.contains("position_ids"), "{err}");
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[test]
    fn a_non_finite_weight_is_an_error_naming_the_tensor() {
        let mut file = TensorFile::load(&Path::new(TINY).join("model.safetensors")).unwrap();
        let name = "vision_model.encoder.layers.0.mlp.fc2.weight";
        let t = &file.tensors[name];
        let mut values = t.to_vec().unwrap();
        values[5] = f32::NAN;
        file.tensors.insert(name.into(), Tensor::from_vec(values, t.shape()).unwrap());
        let tensors: BTreeMap<String, Stored> = file.tensors.into_iter().map(|(k, v)| (k, Stored::F32(v))).collect();
        let path = scratch("nan");
        save(&path, &tensors, &HashMap::new()).unwrap();
        let err = ClipModel::load(tiny_config(), &path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains(&format!("`{name}`")) && err.contains("non-finite"), "{err}");
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[test]
    fn a_config_larger_than_its_weights_is_refused_before_building() {
        // 48 layers of width 1024 would take gigabytes; the file's header says no at once.
        let json = std::fs::read_to_string(Path::new(TINY).join("config.json")).unwrap();
        let mut raw: serde_json::Value = serde_json::from_str(&json).unwrap();
        raw["vision_config"]["num_hidden_layers"] = 48.into();
        raw["vision_config"]["hidden_size"] = 1024.into();
        raw["vision_config"]["intermediate_size"] = 16384.into();
        raw["vision_config"]["num_attention_heads"] = 16.into();
        let config = ClipConfig::from_json(&raw.to_string(), Path::new("config.json")).unwrap();
        let err = ClipModel::load(config, &Path::new(TINY).join("model.safetensors")).unwrap_err().to_string();
        assert!(err.contains("vision_model.encoder.layers.47.mlp.fc1.weight") && err.contains("missing or mis-shaped"), "{err}");
    }

    #[test]
    fn half_precision_checkpoints_load_as_f32() {
        let file = TensorFile::load(&Path::new(TINY).join("model.safetensors")).unwrap();
        let reference = tiny_model();
        let x = pixels(2, &reference);
        let expected = reference.encode_images(&x).unwrap();
        for (dtype, to_bytes) in [
            (Dtype::F16, (|v: f32| half::f16::from_f32(v).to_le_bytes()) as fn(f32) -> [u8; 2]),
            (Dtype::BF16, |v: f32| half::bf16::from_f32(v).to_le_bytes()),
        ] {
            let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = file
                .tensors
                .iter()
                .map(|(k, t)| (k.clone(), t.shape().to_vec(), t.to_vec().unwrap().iter().flat_map(|&v| to_bytes(v)).collect()))
                .collect();
            let views = bytes.iter().map(|(k, s, b)| (k.clone(), TensorView::new(dtype, s.clone(), b).unwrap()));
            let path = scratch(&format!("{dtype:?}"));
            std::fs::write(&path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
            let model = ClipModel::load(tiny_config(), &path).unwrap();
            let got = model.encode_images(&x).unwrap();
            let worst = got.to_vec().unwrap().iter().zip(expected.to_vec().unwrap()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 5e-2, "{dtype:?}: embeddings differ by {worst}");
            std::fs::remove_dir_all(path.parent().unwrap()).ok();
        }
    }

    #[test]
    fn batching_and_sorting_do_not_change_embeddings() {
        let model = tiny_model();
        let x = pixels(IMAGE_BATCH + 3, &model);
        let all = model.encode_images(&x).unwrap();
        let last = model.encode_images(&x.narrow(0, IMAGE_BATCH + 2, 1).unwrap()).unwrap();
        let p = model.config.projection_dim;
        let tail = &all.to_vec().unwrap()[(IMAGE_BATCH + 2) * p..];
        assert!(tail.iter().zip(last.to_vec().unwrap()).all(|(a, b)| (a - b).abs() < 1e-6));
        for row in all.to_vec().unwrap().chunks(p) {
            let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        }

        let pad = |ids: &[u32]| -> Vec<u32> { ids.iter().copied().chain(std::iter::repeat(0)).take(77).collect() };
        let (long, short) = (pad(&[49406, 320, 1125, 539, 320, 2368, 49407]), pad(&[49406, 1929, 49407]));
        let both = model.encode_token_ids(&[long.clone(), short.clone()]).unwrap();
        let swapped = model.encode_token_ids(&[short.clone(), long.clone()]).unwrap();
        let alone = model.encode_token_ids(&[short]).unwrap();
        assert_eq!(&both.to_vec().unwrap()[..p], &swapped.to_vec().unwrap()[p..]);
        assert!(both.to_vec().unwrap()[p..].iter().zip(alone.to_vec().unwrap()).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn random_models_follow_the_config() {
        let config = ClipConfig::from_json(
            r#"{"projection_dim": 8, "text_config": {"hidden_size": 16, "num_attention_heads": 2, "num_hidden_layers": 1,
                "intermediate_size": 32, "vocab_size": 100, "max_position_embeddings": 10, "eos_token_id": 2},
                "vision_config": {"hidden_size": 16, "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 32,
                "image_size": 8, "patch_size": 4, "hidden_act": "gelu"}}"#,
            Path::new("config.json"),
        )
        .unwrap();
        let model = ClipModel::random(config, 3).unwrap();
        let out = model.vision_model.forward(&pixels(2, &model)).unwrap();
        assert_eq!(out.last_hidden.shape(), &[2, 5, 16]);
        // Legacy eos id 2: pooled at the largest id.
        assert_eq!(model.text_model.pool_position(&[5, 99, 7, 99, 0]).unwrap(), 1);
        let text = model.encode_token_ids(&[vec![1, 2, 3, 50, 0, 0]]).unwrap();
        assert_eq!(text.shape(), &[1, 8]);
        let err = model.text_model.forward(&[vec![1, 2, 300]]).unwrap_err().to_string();
        assert!(err.contains("300"), "{err}");
        let err = model.vision_model.forward(&Tensor::zeros(&[1, 3, 9, 9])).unwrap_err().to_string();
        assert!(err.contains("pixel_values") && err.contains("[1, 3, 9, 9]"), "{err}");
    }

    #[test]
    fn a_sequence_without_end_of_text_is_an_error() {
        let model = tiny_model();
        let err = model.encode_token_ids(&[vec![49406, 320, 0]]).unwrap_err().to_string();
        assert!(err.contains("end-of-text token 49407"), "{err}");
    }
}

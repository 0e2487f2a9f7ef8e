//! `ClipConfig`: the architecture of a Hugging Face `CLIPModel`, read from its `config.json`.
//!
//! Missing keys take the defaults of `transformers`' `CLIPTextConfig` / `CLIPVisionConfig` /
//! `CLIPConfig`, so the trimmed configs of old Hub repositories load the way `from_pretrained` reads them.

use std::path::Path;

use serde::Deserialize;

use crate::error::{ClipError, Result};

/// The MLP non-linearity (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, the OpenAI checkpoints.
    QuickGelu,
    /// Exact (erf) GELU, e.g. LAION/OpenCLIP conversions.
    Gelu,
}

impl Activation {
    fn parse(name: &str, key: &str, file: &Path) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Self::QuickGelu),
            "gelu" => Ok(Self::Gelu),
            other => Err(ClipError::Config {
                file: file.display().to_string(),
                detail: format!("{key}.hidden_act is `{other}`, expected `quick_gelu` or `gelu`"),
            }),
        }
    }
}

/// Where the text tower reads its pooled output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextPooling {
    /// At the first position holding this end-of-text id.
    FirstEos(u32),
    /// At the largest id of the sequence: configs written before `eos_token_id` was fixed say
    /// `eos_token_id: 2`, and `transformers` then relies on `<|endoftext|>` having the largest id.
    ArgmaxId,
}

/// The largest value of each size key of `config.json`: several times the largest published CLIP
/// (ViT-bigG: width 1664, 48 layers), far below what would exhaust memory before the weights file
/// is compared with the configuration.
pub const LIMITS: [(&str, usize); 10] = [
    ("hidden_size", 8192),
    ("intermediate_size", 32_768),
    ("num_hidden_layers", 128),
    ("num_attention_heads", 256),
    ("vocab_size", 1 << 20),
    ("max_position_embeddings", 4096),
    ("image_size", 2048),
    ("patch_size", 2048),
    ("num_channels", 16),
    ("projection_dim", 8192),
];

/// Patch tokens plus the class token an image may have (a 128 × 128 patch grid).
pub const MAX_IMAGE_TOKENS: usize = 128 * 128 + 1;

/// The id `transformers` treats as "legacy config: pool at argmax of the ids".
const LEGACY_EOS_TOKEN_ID: u32 = 2;

/// One transformer encoder stack (shared by both towers).
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub activation: Activation,
    pub layer_norm_eps: f32,
}

impl EncoderConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub encoder: EncoderConfig,
    pub vocab_size: usize,
    /// The context length (77 for every CLIP release).
    pub max_position_embeddings: usize,
    pub pooling: TextPooling,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub encoder: EncoderConfig,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
}

impl VisionConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens per image: the patches plus the class token.
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    /// Width of the shared image-text embedding space.
    pub projection_dim: usize,
    /// Initial value of `logit_scale` (only used for random weights; checkpoints carry their own).
    pub logit_scale_init_value: f32,
}

#[derive(Deserialize)]
#[serde(default)]
struct RawText {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    hidden_act: String,
    layer_norm_eps: f32,
    eos_token_id: u32,
}

impl Default for RawText {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct RawVision {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_channels: usize,
    image_size: usize,
    patch_size: usize,
    hidden_act: String,
    layer_norm_eps: f32,
}

impl Default for RawVision {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct RawClip {
    text_config: Option<RawText>,
    vision_config: Option<RawVision>,
    /// Old Hub configs repeat (or override) the tower configs under `*_config_dict`; `transformers`
    /// lets these win, and so do we.
    text_config_dict: Option<RawText>,
    vision_config_dict: Option<RawVision>,
    projection_dim: usize,
    logit_scale_init_value: f32,
}

impl Default for RawClip {
    fn default() -> Self {
        Self {
            text_config: None,
            vision_config: None,
            text_config_dict: None,
            vision_config_dict: None,
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        }
    }
}

impl ClipConfig {
    /// Reads `config.json` of a Hugging Face CLIP repository.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ClipError::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses the JSON of a `config.json`; `file` only names it in errors.
    pub fn from_json(json: &str, file: &Path) -> Result<Self> {
        let raw: RawClip =
            serde_json::from_str(json).map_err(|e| ClipError::Config { file: file.display().to_string(), detail: e.to_string() })?;
        let t = raw.text_config_dict.or(raw.text_config).unwrap_or_default();
        let v = raw.vision_config_dict.or(raw.vision_config).unwrap_or_default();
        let pooling = if t.eos_token_id == LEGACY_EOS_TOKEN_ID { TextPooling::ArgmaxId } else { TextPooling::FirstEos(t.eos_token_id) };
        let config = Self {
            text: TextConfig {
                encoder: EncoderConfig {
                    hidden_size: t.hidden_size,
                    intermediate_size: t.intermediate_size,
                    num_layers: t.num_hidden_layers,
                    num_heads: t.num_attention_heads,
                    activation: Activation::parse(&t.hidden_act, "text_config", file)?,
                    layer_norm_eps: t.layer_norm_eps,
                },
                vocab_size: t.vocab_size,
                max_position_embeddings: t.max_position_embeddings,
                pooling,
            },
            vision: VisionConfig {
                encoder: EncoderConfig {
                    hidden_size: v.hidden_size,
                    intermediate_size: v.intermediate_size,
                    num_layers: v.num_hidden_layers,
                    num_heads: v.num_attention_heads,
                    activation: Activation::parse(&v.hidden_act, "vision_config", file)?,
                    layer_norm_eps: v.layer_norm_eps,
                },
                image_size: v.image_size,
                patch_size: v.patch_size,
                num_channels: v.num_channels,
            },
            projection_dim: raw.projection_dim,
            logit_scale_init_value: raw.logit_scale_init_value,
        };
        config.validate(file)?;
        Ok(config)
    }

    /// Rejects sizes the towers cannot be built from or that exceed [`LIMITS`], naming the key.
    pub fn validate(&self, file: &Path) -> Result<()> {
        let bad = |detail: String| Err(ClipError::Config { file: file.display().to_string(), detail });
        let (t, v) = (&self.text, &self.vision);
        let sizes = [
            ("text_config.hidden_size", t.encoder.hidden_size),
            ("text_config.intermediate_size", t.encoder.intermediate_size),
            ("text_config.num_hidden_layers", t.encoder.num_layers),
            ("text_config.num_attention_heads", t.encoder.num_heads),
            ("text_config.vocab_size", t.vocab_size),
            ("text_config.max_position_embeddings", t.max_position_embeddings),
            ("vision_config.hidden_size", v.encoder.hidden_size),
            ("vision_config.intermediate_size", v.encoder.intermediate_size),
            ("vision_config.num_hidden_layers", v.encoder.num_layers),
            ("vision_config.num_attention_heads", v.encoder.num_heads),
            ("vision_config.image_size", v.image_size),
            ("vision_config.patch_size", v.patch_size),
            ("vision_config.num_channels", v.num_channels),
            ("projection_dim", self.projection_dim),
        ];
        for (key, value) in sizes {
            let field = key.rsplit('.').next().unwrap_or(key);
            let max = LIMITS.iter().find(|(name, _)| *name == field).map_or(usize::MAX, |&(_, max)| max);
            if value > max {
                return bad(format!("{key} {value} exceeds the limit {max}"));
            }
        }
        for (key, eps) in [("text_config", t.encoder.layer_norm_eps), ("vision_config", v.encoder.layer_norm_eps)] {
            if !(eps.is_finite() && eps > 0.0) {
                return bad(format!("{key}.layer_norm_eps must be finite and > 0, got {eps}"));
            }
        }
        for (key, e) in [("text_config", &self.text.encoder), ("vision_config", &self.vision.encoder)] {
            if e.hidden_size == 0 || e.num_heads == 0 || e.hidden_size % e.num_heads != 0 {
                return bad(format!(
                    "{key}.hidden_size {} must be a positive multiple of num_attention_heads {}",
                    e.hidden_size, e.num_heads
                ));
            }
            if e.intermediate_size == 0 {
                return bad(format!("{key}.intermediate_size must be positive"));
            }
        }
        let v = &self.vision;
        if v.patch_size == 0 || v.image_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return bad(format!("vision_config.image_size {} must be a positive multiple of patch_size {}", v.image_size, v.patch_size));
        }
        if v.num_positions() > MAX_IMAGE_TOKENS {
            return bad(format!(
                "vision_config.image_size {} / patch_size {} makes {} tokens, more than {MAX_IMAGE_TOKENS}",
                v.image_size,
                v.patch_size,
                v.num_positions()
            ));
        }
        if v.num_channels == 0 {
            return bad("vision_config.num_channels must be positive".into());
        }
        if self.text.max_position_embeddings < 2 || self.text.vocab_size == 0 {
            return bad("text_config needs max_position_embeddings >= 2 and a vocabulary".into());
        }
        if self.projection_dim == 0 {
            return bad("projection_dim must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ClipConfig> {
        ClipConfig::from_json(json, Path::new("config.json"))
    }

    #[test]
    fn reads_the_tiny_fixture() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny_clip/config.json"));
        let c = ClipConfig::from_file(path).unwrap();
        assert_eq!(c.text.encoder.hidden_size, 64);
        assert_eq!(c.vision.patch_size, 8);
        assert_eq!(c.vision.num_positions(), 17);
        assert_eq!(c.projection_dim, 32);
        assert_eq!(c.text.pooling, TextPooling::FirstEos(49407));
        assert_eq!(c.vision.encoder.activation, Activation::QuickGelu);
    }

    #[test]
    fn empty_config_takes_transformers_defaults() {
        let c = parse("{}").unwrap();
        assert_eq!((c.vision.encoder.hidden_size, c.vision.patch_size, c.vision.image_size), (768, 32, 224));
        assert_eq!((c.text.encoder.hidden_size, c.text.encoder.num_heads), (512, 8));
        assert_eq!(c.projection_dim, 512);
    }

    #[test]
    fn legacy_eos_id_pools_at_argmax_and_config_dict_wins() {
        let c = parse(
            r#"{"text_config": {"eos_token_id": 2, "hidden_size": 512},
                "vision_config_dict": {"hidden_size": 1024, "num_attention_heads": 16, "patch_size": 14, "hidden_act": "gelu"},
                "vision_config": {"hidden_size": 768}}"#,
        )
        .unwrap();
        assert_eq!(c.text.pooling, TextPooling::ArgmaxId);
        assert_eq!(c.vision.encoder.hidden_size, 1024);
        assert_eq!(c.vision.encoder.activation, Activation::Gelu);
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = parse(r#"{"vision_config": {"hidden_act": "relu"}}"#).unwrap_err().to_string();
        assert!(err.contains("vision_config.hidden_act") && err.contains("relu"), "{err}");
        let err = parse(r#"{"text_config": {"hidden_size": 100, "num_attention_heads": 8}}"#).unwrap_err().to_string();
        assert!(err.contains("text_config.hidden_size"), "{err}");
        let err = parse(r#"{"vision_config": {"image_size": 225, "patch_size": 16}}"#).unwrap_err().to_string();
        assert!(err.contains("patch_size"), "{err}");
    }

    #[test]
    fn absurd_sizes_are_refused_before_anything_is_built() {
        for (json, key) in [
            (r#"{"text_config": {"hidden_size": 1000000000, "num_attention_heads": 8}}"#, "text_config.hidden_size"),
            (r#"{"vision_config": {"num_hidden_layers": 1000000}}"#, "vision_config.num_hidden_layers"),
            (r#"{"text_config": {"vocab_size": 4000000000}}"#, "text_config.vocab_size"),
            (r#"{"vision_config": {"image_size": 2048, "patch_size": 1}}"#, "tokens"),
        ] {
            let err = parse(json).unwrap_err().to_string();
            assert!(err.contains(key), "{json}: {err}");
        }
    }
}

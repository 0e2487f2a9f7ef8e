//! Model configurations: what a checkpoint's `config` metadata holds, so a checkpoint alone rebuilds
//! its model. The JSON is the reference fixtures' format (`{"arch": "vit", ...}`); fields the
//! fixtures leave out take the timm/torchvision defaults.

use serde::{Deserialize, Serialize};

use crate::data::synthetic_concepts::{CLASSES, IMAGE_SIDE};
use crate::error::{Error, Result};
use lwta_kernels::LwtaConfig;

/// The named models of `--model`.
pub const PRESETS: [&str; 8] =
    ["vit-fmnist", "deit-tiny", "deit-small", "deit-base", "resnet18", "resnet18-fmnist", "vit-concepts", "resnet18-concepts"];

/// The largest value of each size field a configuration may hold: far above every published ViT,
/// DeiT and ResNet-18, far below what would exhaust memory before a file is even compared with it.
pub const LIMITS: [(&str, f64); 9] = [
    ("img_size", 1024.0),
    ("patch_size", 1024.0),
    ("in_chans", 16.0),
    ("num_classes", 100_000.0),
    ("embed_dim", 8192.0),
    ("depth", 128.0),
    ("num_heads", 256.0),
    ("mlp_ratio", 16.0),
    ("widths", 8192.0),
];

/// Patch tokens plus the class token a ViT may have (a 128 × 128 patch grid).
pub const MAX_TOKENS: usize = 128 * 128 + 1;

/// The architecture and its sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch")]
pub enum ModelConfig {
    /// timm `VisionTransformer` (ViT / DeiT without distillation token).
    #[serde(rename = "vit")]
    Vit(VitConfig),
    /// torchvision ResNet-18 topology (BasicBlock × [2, 2, 2, 2]).
    #[serde(rename = "resnet18")]
    ResNet18(ResNetConfig),
}

/// The competition settings shared by every architecture (DISCOVER's values by default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Competition {
    /// U: competitors per LWTA block; 1 = the conventional network (GELU / ReLU).
    #[serde(default = "one")]
    pub competitors: usize,
    #[serde(default = "tau_train")]
    pub tau_train: f32,
    #[serde(default = "tau_test")]
    pub tau_test: f32,
}

fn one() -> usize {
    1
}
fn tau_train() -> f32 {
    LwtaConfig::default().tau_train
}
fn tau_test() -> f32 {
    LwtaConfig::default().tau_test
}
fn yes() -> bool {
    true
}
fn vit_eps() -> f32 {
    1e-6
}
fn bn_eps() -> f32 {
    1e-5
}

impl Competition {
    pub fn conventional() -> Self {
        Self { competitors: 1, tau_train: tau_train(), tau_test: tau_test() }
    }

    pub fn lwta(&self) -> LwtaConfig {
        LwtaConfig { competitors: self.competitors, tau_train: self.tau_train, tau_test: self.tau_test }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    pub img_size: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub num_classes: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: f32,
    #[serde(default = "yes")]
    pub qkv_bias: bool,
    #[serde(default = "vit_eps")]
    pub layer_norm_eps: f32,
    /// Dropout after the position embedding, the attention projection and both MLP layers (timm's
    /// `drop_rate`), training only.
    #[serde(default)]
    pub drop_rate: f32,
    #[serde(flatten)]
    pub competition: Competition,
}

impl VitConfig {
    /// Hidden width of the MLP (timm: `int(embed_dim * mlp_ratio)`).
    pub fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f32 * self.mlp_ratio) as usize
    }

    /// Patch tokens plus the class token.
    pub fn tokens(&self) -> usize {
        (self.img_size / self.patch_size).pow(2) + 1
    }
}

/// The first layers of a ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// 7×7 stride-2 convolution and 3×3 stride-2 max-pool (224 px inputs).
    #[default]
    Imagenet,
    /// 3×3 stride-1 convolution, no max-pool (28–32 px inputs).
    Small,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// Channels of layer1..layer4 (torchvision: 64, 128, 256, 512).
    pub widths: Vec<usize>,
    pub in_chans: usize,
    pub num_classes: usize,
    #[serde(default)]
    pub stem: Stem,
    #[serde(default = "bn_eps")]
    pub bn_eps: f32,
    #[serde(flatten)]
    pub competition: Competition,
}

impl ModelConfig {
    /// A named model (see [`PRESETS`]) with `competitors` LWTA competitors (1 = conventional).
    pub fn preset(name: &str, competitors: usize) -> Result<Self> {
        let competition = Competition { competitors, ..Competition::conventional() };
        let vit = |img_size, patch_size, in_chans, num_classes, embed_dim, depth, num_heads| {
            ModelConfig::Vit(VitConfig {
                img_size,
                patch_size,
                in_chans,
                num_classes,
                embed_dim,
                depth,
                num_heads,
                mlp_ratio: 4.0,
                qkv_bias: true,
                layer_norm_eps: vit_eps(),
                drop_rate: 0.0,
                competition,
            })
        };
        let resnet = |widths: [usize; 4], in_chans, num_classes, stem| {
            ModelConfig::ResNet18(ResNetConfig { widths: widths.to_vec(), in_chans, num_classes, stem, bn_eps: bn_eps(), competition })
        };
        let config = match name {
            "vit-fmnist" => vit(28, 4, 1, 10, 96, 4, 3),
            "deit-tiny" => vit(224, 16, 3, 1000, 192, 12, 3),
            "deit-small" => vit(224, 16, 3, 1000, 384, 12, 6),
            "deit-base" => vit(224, 16, 3, 1000, 768, 12, 12),
            "resnet18" => resnet([64, 128, 256, 512], 3, 1000, Stem::Imagenet),
            "resnet18-fmnist" => resnet([16, 32, 64, 128], 1, 10, Stem::Small),
            // The fmnist sizes on `synthetic-concepts`' 32 px RGB images and classes.
            "vit-concepts" => vit(IMAGE_SIDE, 4, 3, CLASSES, 96, 4, 3),
            "resnet18-concepts" => resnet([16, 32, 64, 128], 3, CLASSES, Stem::Small),
            _ => return Err(Error::UnknownModel { name: name.to_string(), available: PRESETS.join(", ") }),
        };
        config.validate()?;
        Ok(config)
    }

    /// Parses the `config` metadata of a checkpoint; `source` names it in errors.
    pub fn from_json(json: &str, source: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(json).map_err(|e| Error::Checkpoint {
            path: source.to_string(),
            detail: format!("`config` metadata is not a model configuration ({e}): {json}"),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn competition(&self) -> &Competition {
        match self {
            Self::Vit(c) => &c.competition,
            Self::ResNet18(c) => &c.competition,
        }
    }

    pub fn competition_mut(&mut self) -> &mut Competition {
        match self {
            Self::Vit(c) => &mut c.competition,
            Self::ResNet18(c) => &mut c.competition,
        }
    }

    /// The same model with another number of competitors.
    pub fn with_competitors(mut self, competitors: usize) -> Result<Self> {
        self.competition_mut().competitors = competitors;
        self.validate()?;
        Ok(self)
    }

    pub fn num_classes(&self) -> usize {
        match self {
            Self::Vit(c) => c.num_classes,
            Self::ResNet18(c) => c.num_classes,
        }
    }

    pub fn in_chans(&self) -> usize {
        match self {
            Self::Vit(c) => c.in_chans,
            Self::ResNet18(c) => c.in_chans,
        }
    }

    /// Whether the architecture has BatchNorm layers (ResNet; a ViT normalises with LayerNorm).
    pub fn has_batch_norm(&self) -> bool {
        matches!(self, Self::ResNet18(_))
    }

    /// The input side length the model needs (ViT), or `None` when any size works (ResNet).
    pub fn img_size(&self) -> Option<usize> {
        match self {
            Self::Vit(c) => Some(c.img_size),
            Self::ResNet18(_) => None,
        }
    }

    /// Checks sizes against [`LIMITS`] and that U divides the channels of every LWTA layer (the
    /// error names the first field or layer that does not fit and both numbers). A configuration
    /// read from a file passes this before anything is sized from it.
    pub fn validate(&self) -> Result<()> {
        let bad = |detail: String| Err(Error::Config { what: "model configuration", detail });
        let comp = self.competition();
        if !(comp.tau_train.is_finite() && comp.tau_train > 0.0 && comp.tau_test.is_finite() && comp.tau_test > 0.0) {
            return bad(format!("temperatures must be finite and > 0, got tau_train {} and tau_test {}", comp.tau_train, comp.tau_test));
        }
        let limits: Vec<(&str, f64)> = match self {
            Self::Vit(c) => vec![
                ("img_size", c.img_size as f64),
                ("patch_size", c.patch_size as f64),
                ("in_chans", c.in_chans as f64),
                ("num_classes", c.num_classes as f64),
                ("embed_dim", c.embed_dim as f64),
                ("depth", c.depth as f64),
                ("num_heads", c.num_heads as f64),
                ("mlp_ratio", c.mlp_ratio as f64),
            ],
            Self::ResNet18(c) => {
                let mut fields = vec![("in_chans", c.in_chans as f64), ("num_classes", c.num_classes as f64)];
                fields.extend(c.widths.iter().map(|&w| ("widths", w as f64)));
                fields
            }
        };
        for (field, value) in limits {
            let (_, max) = LIMITS.iter().find(|(name, _)| *name == field).copied().unwrap_or((field, f64::INFINITY));
            if value.is_nan() || value > max {
                return bad(format!("{field} {value} exceeds the limit {max}"));
            }
        }
        if let Self::Vit(c) = self {
            if !(c.layer_norm_eps.is_finite() && c.layer_norm_eps > 0.0) {
                return bad(format!("layer_norm_eps must be finite and > 0, got {}", c.layer_norm_eps));
            }
            if c.patch_size > 0 && (c.img_size / c.patch_size).pow(2) + 1 > MAX_TOKENS {
                return bad(format!("img_size {} / patch_size {} makes more than {MAX_TOKENS} tokens", c.img_size, c.patch_size));
            }
        }
        if let Self::ResNet18(c) = self {
            if !(c.bn_eps.is_finite() && c.bn_eps > 0.0) {
                return bad(format!("bn_eps must be finite and > 0, got {}", c.bn_eps));
            }
        }
        let check_lwta = |layer: &str, channels: usize| -> Result<()> {
            Ok(lwta_kernels::BlockGeometry::tokens(1, channels).check(comp.competitors, layer)?)
        };
        match self {
            Self::Vit(c) => {
                if [c.img_size, c.patch_size, c.in_chans, c.num_classes, c.embed_dim, c.depth, c.num_heads].contains(&0) {
                    return bad(format!("every ViT size must be > 0: {c:?}"));
                }
                if c.img_size % c.patch_size != 0 {
                    return bad(format!("img_size {} is not a multiple of patch_size {}", c.img_size, c.patch_size));
                }
                if c.embed_dim % c.num_heads != 0 {
                    return bad(format!("embed_dim {} is not divisible by num_heads {}", c.embed_dim, c.num_heads));
                }
                if !(c.mlp_ratio > 0.0 && c.mlp_hidden() > 0 && (0.0..1.0).contains(&c.drop_rate)) {
                    return bad(format!("need mlp_ratio > 0 and 0 <= drop_rate < 1, got {} and {}", c.mlp_ratio, c.drop_rate));
                }
                check_lwta("blocks.0.mlp.act", c.mlp_hidden())
            }
            Self::ResNet18(c) => {
                if c.widths.len() != 4 || c.widths.contains(&0) || c.in_chans == 0 || c.num_classes == 0 {
                    return bad(format!(
                        "ResNet-18 needs 4 widths > 0, in_chans > 0 and num_classes > 0, got widths {:?}, in_chans {}, num_classes {}",
                        c.widths, c.in_chans, c.num_classes
                    ));
                }
                check_lwta("act", c.widths[0])?;
                for (k, &w) in c.widths.iter().enumerate() {
                    check_lwta(&format!("layer{}.0.act1", k + 1), w)?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_build_and_round_trip_through_json() {
        for name in PRESETS {
            let config = ModelConfig::preset(name, 4).unwrap();
            assert_eq!(ModelConfig::from_json(&config.to_json(), "test").unwrap(), config);
            assert_eq!(config.competition().competitors, 4);
        }
        let ModelConfig::Vit(v) = ModelConfig::preset("deit-small", 1).unwrap() else { panic!("deit-small is a ViT") };
        assert_eq!((v.embed_dim, v.depth, v.num_heads, v.mlp_hidden(), v.tokens()), (384, 12, 6, 1536, 197));
    }

    #[test]
    fn fixture_style_json_takes_defaults() {
        let json =
            r#"{"arch": "resnet18", "widths": [8, 16, 32, 64], "in_chans": 3, "num_classes": 10, "bn_eps": 1e-05, "competitors": 4}"#;
        let ModelConfig::ResNet18(c) = ModelConfig::from_json(json, "fixture").unwrap() else { panic!("resnet") };
        assert_eq!((c.stem, c.competition.tau_train, c.competition.tau_test), (Stem::Imagenet, 1.67, 0.01));
    }

    #[test]
    fn errors_name_the_problem() {
        let err = ModelConfig::preset("vgg16", 1).unwrap_err().to_string();
        assert!(err.contains("unknown model `vgg16`") && err.contains("vit-fmnist"), "{err}");
        // vit-fmnist's MLP has 384 hidden units; 384 % 5 != 0.
        let err = ModelConfig::preset("vit-fmnist", 5).unwrap_err().to_string();
        assert!(err.contains("blocks.0.mlp.act") && err.contains("384") && err.contains("U = 5"), "{err}");
        let err = ModelConfig::preset("resnet18-fmnist", 3).unwrap_err().to_string();
        assert!(err.contains("`act`") && err.contains("16") && err.contains("U = 3"), "{err}");
        let err = ModelConfig::from_json(r#"{"arch": "vit"}"#, "ckpt.safetensors").unwrap_err().to_string();
        assert!(err.contains("ckpt.safetensors") && err.contains("missing field"), "{err}");
    }
}

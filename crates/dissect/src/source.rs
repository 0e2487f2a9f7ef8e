//! The small interfaces the pipeline runs against, so that the math and the report do not depend on
//! how a model, a data set or CLIP is implemented (see [`crate::integration`] for the real ones).

use image::RgbImage;
use ndarray::Array2;

use crate::annotations::ConceptAnnotations;
use crate::error::Result;

/// The probe images: what the neurons are dissected on.
pub trait ProbeSet: Sync {
    /// Identifies the images for the activation cache (changes when the images change).
    fn id(&self) -> String;

    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Class names indexed by label; empty when the set has no labels.
    fn class_names(&self) -> &[String];

    /// The class of image `index`, `None` when the set has no labels.
    fn label(&self, index: usize) -> Option<usize>;

    /// Which concepts each image shows, when the set ships such annotations.
    fn annotations(&self) -> Option<&ConceptAnnotations> {
        None
    }

    /// The original image (CLIP input, report thumbnails).
    fn image(&self, index: usize) -> Result<RgbImage>;

    /// `[C, H, W]` of the model inputs [`ProbeSet::load_input`] prepares.
    fn input_shape(&self) -> [usize; 3];

    /// Image `index` as the dissected model takes it (normalised CHW, no augmentation) into `out`.
    fn load_input(&self, index: usize, out: &mut [f32]) -> Result<()>;
}

/// One layer's output for a batch, as the model produced it (batch first, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerOutput {
    /// `[B, C, H, W]` conv maps, `[B, T, C]` tokens (token 0 is the class token) or `[B, C]`.
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The linear classifier at the end of a model, for per-example contributions.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// The classifier layer's name (`head`, `fc`); its output is the logits.
    pub layer: String,
    /// Layers whose pooled output *is* the classifier's input when conv maps are mean-pooled
    /// (ResNet: `layer4`, `avgpool`; ViT: `norm`, whose class token the head reads), so a unit's
    /// contribution to class c is `activation × weight[c, unit]`.
    pub inputs: Vec<String>,
    /// `[classes, features]`.
    pub weight: Array2<f32>,
}

/// A network whose layer outputs can be recorded on probe images.
pub trait ActivationSource {
    /// Every recordable layer, in forward order (listed in unknown-layer errors).
    fn layers(&self) -> Vec<String>;

    /// The layers dissected when none are named: the competition (activation) layers and the
    /// classifier.
    fn default_layers(&self) -> Vec<String>;

    /// Identifies the weights and how the forward pass samples (for the activation cache), e.g.
    /// `sha256(checkpoint bytes) + mode`.
    fn fingerprint(&self) -> String;

    /// The outputs of `layers` (in that order) for probe images `indices`.
    fn record(&mut self, probe: &dyn ProbeSet, indices: &[usize], layers: &[String]) -> Result<Vec<LayerOutput>>;

    /// The classifier, when the model ends in one.
    fn head(&self) -> Option<Head>;
}

/// Text embeddings (CLIP text tower): one row per text, in the order given.
pub trait TextEncoder {
    fn encode_texts(&self, texts: &[String]) -> Result<Array2<f32>>;
}

/// A CLIP model: image and text towers in one embedding space.
pub trait ClipEncoder: TextEncoder {
    /// Identifies the weights for the cache (e.g. sha256 of `model.safetensors`).
    fn fingerprint(&self) -> String;

    /// One row per image, in the order given.
    fn encode_images(&self, images: &[RgbImage]) -> Result<Array2<f32>>;
}

/// Progress of the long stages (recording, scoring); the command line draws bars from it.
pub trait Progress: Sync {
    /// A stage of `total` steps begins.
    fn start(&self, stage: &str, total: u64);
    /// `steps` more steps are done.
    fn advance(&self, steps: u64);
    /// The stage is over.
    fn finish(&self);
}

/// Progress that is not shown.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

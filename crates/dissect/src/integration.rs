//! The pipeline's interfaces ([`crate::source`]) for this workspace: networks and data sets from
//! `cvn-models`, CLIP from `clip-encoder`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clip_encoder::Clip;
use cvn_autograd::io::Integrity;
use cvn_autograd::{DType, Device, LwtaMode, Tensor};
use cvn_models::data::{synthetic_concepts, ConceptSplit, Dataset, IdxDataset, ImageFolder};
use cvn_models::rng::CounterRng;
use cvn_models::run::ArgmaxBnOrigin;
use cvn_models::train::{run_argmax_bn, run_config, TrainData};
use cvn_models::{ArgmaxBatchNorm, Forward, Model, ModelConfig};
use image::RgbImage;
use ndarray::Array2;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::annotations::{ConceptAnnotations, CONCEPTS_CSV};
use crate::cache::{file_sha256, hex, hex_sha256};
use crate::error::{DissectError, Result};
use crate::outputs::RunInfo;
use crate::source::{ActivationSource, ClipEncoder, Head, LayerOutput, ProbeSet, TextEncoder};

fn upstream(context: impl Into<String>) -> impl FnOnce(String) -> DissectError {
    let context = context.into();
    move |detail| DissectError::Upstream { context, detail }
}

/// How competition layers pick winners while recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sampling {
    /// Argmax in every block: reproducible, the default.
    #[default]
    Deterministic,
    /// Gumbel sampling at τ test (DISCOVER's stochastic inference), noise from `seed`; the noise of
    /// an image depends on its place in the batch, so the batch size is part of the cache key.
    Sample { seed: u64, batch_size: usize },
}

impl fmt::Display for Sampling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Deterministic => f.write_str("deterministic"),
            Self::Sample { seed, batch_size } => {
                write!(f, "sample(seed={seed},batch={batch_size})")
            }
        }
    }
}

/// A trained network loaded from its checkpoint.
pub struct ModelSource {
    model: Model,
    /// Identifies the weights (and the BatchNorm statistics of the pass) in the activation cache.
    weights_id: String,
    sampling: Sampling,
    /// Where a BatchNorm CVN's argmax statistics came from (deterministic recording of a run).
    batch_norm: Option<String>,
    integrity: Integrity,
    /// The model file.
    path: PathBuf,
}

impl ModelSource {
    /// Loads a model file (or an old single-file checkpoint); its bytes' sha256 identifies the
    /// weights in the activation cache. The model runs with its own BatchNorm statistics: use
    /// [`ModelSource::from_run`] for a run's deterministic pass.
    pub fn load(checkpoint: &Path, sampling: Sampling) -> Result<Self> {
        let weights_id = file_sha256(checkpoint)?;
        let (model, extras) = Model::load_checkpoint(checkpoint)
            .map_err(|e| upstream(format!("loading checkpoint {}", checkpoint.display()))(e.to_string()))?;
        Ok(Self { model, weights_id, sampling, batch_norm: None, integrity: extras.integrity, path: checkpoint.to_path_buf() })
    }

    /// Loads a run folder's model (`model.safetensors`, or an old `checkpoint.safetensors`). The
    /// deterministic pass of a BatchNorm CVN uses the run's argmax BatchNorm statistics — the
    /// stored `argmax_bn.safetensors`, as `eval --deterministic` and `predict` do, else estimated
    /// on the run's training data the same way; sampled passes use the training statistics.
    pub fn from_run(dir: &Path, sampling: Sampling) -> Result<Self> {
        let context = || format!("loading run {}", dir.display());
        let run = cvn_models::run::load_model(dir).map_err(|e| upstream(context())(e.to_string()))?;
        let mut weights_id = file_sha256(&run.path)?;
        let integrity = run.integrity;
        let mut model = run.model;
        let mut batch_norm = None;
        if sampling == Sampling::Deterministic && ArgmaxBatchNorm::needed(&model) {
            let stats = (|| -> std::result::Result<_, cvn_models::train::TrainError> {
                let config = run_config(dir)?;
                let data = TrainData::load(&config)?;
                run_argmax_bn(dir, &model, &config, &data)
            })()
            .map_err(|e| upstream(context())(e.to_string()))?;
            if let Some((stats, origin)) = stats {
                stats.apply(&mut model, &dir.display().to_string()).map_err(|e| upstream(context())(e.to_string()))?;
                let (id, note) = match origin {
                    ArgmaxBnOrigin::Stored(path) => (file_sha256(&path)?, format!("argmax BatchNorm statistics from {}", path.display())),
                    ArgmaxBnOrigin::Estimated => (
                        format!("estimated({},{})", stats.images, stats.data_source),
                        format!(
                            "argmax BatchNorm statistics estimated on {} images of {} (the run stores none)",
                            stats.images, stats.data_source
                        ),
                    ),
                };
                weights_id = format!("{weights_id}+bn:{id}");
                batch_norm = Some(note);
            }
        }
        Ok(Self { model, weights_id, sampling, batch_norm, integrity, path: run.path })
    }

    /// Where the BatchNorm statistics of a BatchNorm CVN's deterministic pass came from.
    pub fn batch_norm_note(&self) -> Option<&str> {
        self.batch_norm.as_deref()
    }

    /// How the competition layers pick winners.
    pub fn sampling(&self) -> Sampling {
        self.sampling
    }

    /// Whether the model file's content hash was checked.
    pub fn integrity(&self) -> Integrity {
        self.integrity
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// What the outputs say about the run in `dir` this model comes from: its preset and U (from
    /// the run's training configuration, else the model's own), the model file and its stored
    /// content hash, and the test accuracy of the run's `summary.json` when it has one.
    pub fn run_info(&self, dir: &Path) -> Result<RunInfo> {
        let (model, competitors) = match run_config(dir) {
            Ok(config) => (config.model, config.competitors),
            Err(_) => {
                let kind = if self.is_vit() { "vit" } else { "resnet18" };
                (format!("{kind} (no preset recorded)"), self.model.config().competition().competitors)
            }
        };
        let test = cvn_models::train::Summary::read(dir).ok().map(|s| s.test);
        Ok(RunInfo {
            run: dir.display().to_string(),
            model,
            competitors,
            checkpoint: self.path.display().to_string(),
            content_sha256: stored_content_hash(&self.path)?,
            test_top1_sampled: test.as_ref().and_then(|t| t.top1_sampled),
            test_top1_deterministic: test.map(|t| t.top1_deterministic),
        })
    }

    /// Records on `device` (the probe batches are copied there, the recordings back).
    pub fn to_device(&mut self, device: &Device) -> Result<()> {
        self.model.to_device(device).map_err(|e| upstream(format!("moving the model to {device}"))(e.to_string()))
    }

    fn is_vit(&self) -> bool {
        matches!(self.model.config(), ModelConfig::Vit(_))
    }
}

impl ActivationSource for ModelSource {
    fn layers(&self) -> Vec<String> {
        self.model.layer_names().to_vec()
    }

    /// ViT: every block's MLP activation (the competition layers) and `head`; ResNet: `layer1` …
    /// `layer4` (CLIP-Dissect's choice) and `fc`.
    fn default_layers(&self) -> Vec<String> {
        if self.is_vit() {
            let mut layers = self.model.activation_layers().to_vec();
            layers.push("head".into());
            layers
        } else {
            ["layer1", "layer2", "layer3", "layer4", "fc"].map(String::from).to_vec()
        }
    }

    fn fingerprint(&self) -> String {
        format!("{}:{}", self.weights_id, self.sampling)
    }

    fn record(&mut self, probe: &dyn ProbeSet, indices: &[usize], layers: &[String]) -> Result<Vec<LayerOutput>> {
        let [c, h, w] = probe.input_shape();
        let per_image = c * h * w;
        if per_image == 0 {
            return Err(DissectError::shape("probe images", "at least 1×1×1 values per image", format!("{c}×{h}×{w}")));
        }
        let mut inputs = vec![0.0f32; indices.len() * per_image];
        inputs.par_chunks_mut(per_image).zip(indices.par_iter()).try_for_each(|(out, &i)| probe.load_input(i, out))?;
        let x = Tensor::from_slice_on(&inputs, &[indices.len(), c, h, w], DType::F32, &self.model.device())
            .map_err(|e| upstream("building the probe batch")(e.to_string()))?;
        let (mode, seed, step) = match self.sampling {
            Sampling::Deterministic => (LwtaMode::Deterministic, 0, 0),
            Sampling::Sample { seed, batch_size } => {
                (LwtaMode::Sample, seed, indices.first().map_or(0, |&i| (i / batch_size.max(1)) as u64))
            }
        };
        let mut forward = Forward::new(mode, seed, step).with_taps(layers.iter().cloned());
        self.model.forward(&x, &mut forward).map_err(|e| match e {
            cvn_models::Error::UnknownLayer { name, available } => {
                DissectError::unknown_layer(&name, &available.split(", ").collect::<Vec<_>>())
            }
            other => upstream("forward pass over the probe images")(other.to_string()),
        })?;
        let taps = forward.take_taps();
        layers
            .iter()
            .map(|layer| {
                let tap = taps
                    .get(layer)
                    .ok_or_else(|| upstream(format!("recording `{layer}`"))("the model did not produce this layer's output".into()))?;
                let data = tap.output.to_vec().map_err(|e| upstream(format!("copying `{layer}` to the host"))(e.to_string()))?;
                Ok(LayerOutput { shape: tap.output.shape().to_vec(), data })
            })
            .collect()
    }

    fn head(&self) -> Option<Head> {
        let (layer, inputs) = if self.is_vit() { ("head", vec!["norm"]) } else { ("fc", vec!["layer4", "avgpool"]) };
        let weight = self.model.params().get(&format!("{layer}.weight"))?;
        let [rows, cols] = <[usize; 2]>::try_from(weight.shape()).ok()?;
        Some(Head {
            layer: layer.to_string(),
            inputs: inputs.into_iter().map(String::from).collect(),
            weight: Array2::from_shape_vec((rows, cols), weight.to_vec().ok()?).ok()?,
        })
    }
}

/// The `content_sha256` a safetensors file stores in its metadata (`None` when it has none).
fn stored_content_hash(path: &Path) -> Result<Option<String>> {
    let bytes = std::fs::read(path).map_err(|err| DissectError::io(path, err))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|err| DissectError::format(path, format!("not a safetensors file: {err}")))?;
    Ok(header.metadata().as_ref().and_then(|m| m.get(cvn_autograd::io::CONTENT_HASH_KEY).cloned()))
}

/// A `cvn-models` data set as probe images: labels, class names, raw images, model inputs and,
/// when known, concept annotations.
pub struct DatasetProbe {
    id: String,
    dataset: Arc<dyn Dataset>,
    labels: Vec<usize>,
    annotations: Option<ConceptAnnotations>,
}

impl DatasetProbe {
    /// An IDX split (Fashion-MNIST); its id is `name` plus the sha256 of its images and labels.
    pub fn idx(name: &str, split: IdxDataset) -> Result<Self> {
        let labels: Vec<usize> = split.labels().iter().map(|&l| l as usize).collect();
        let mut hasher = Sha256::new();
        for i in 0..split.len() {
            hasher.update(split.raw_image(i).map_err(|e| upstream(format!("reading {name}"))(e.to_string()))?.as_raw());
        }
        hasher.update(split.labels());
        Ok(Self { id: format!("{name}:{}", hex(&hasher.finalize())), dataset: Arc::new(split), labels, annotations: None })
    }

    /// An ImageFolder tree; its id is `name` plus the sha256 of every file's path, size and
    /// modification time.
    pub fn image_folder(name: &str, folder: ImageFolder) -> Result<Self> {
        let mut listing = String::new();
        for (path, label) in folder.samples() {
            let meta = std::fs::metadata(path).map_err(|err| DissectError::io(path, err))?;
            let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            listing.push_str(&format!("{}\t{label}\t{}\t{modified:?}\n", path.display(), meta.len()));
        }
        let labels = folder.samples().iter().map(|(_, l)| *l).collect();
        Ok(Self { id: format!("{name}:{}", hex_sha256(listing.as_bytes())), dataset: Arc::new(folder), labels, annotations: None })
    }

    /// An ImageFolder tree with the concept annotations of its `concepts.csv` (see
    /// [`crate::annotations`]); a folder without one is [`DatasetProbe::image_folder`].
    pub fn annotated_image_folder(name: &str, root: &Path, folder: ImageFolder) -> Result<Self> {
        let csv = root.join(CONCEPTS_CSV);
        let paths: Vec<PathBuf> = folder.samples().iter().map(|(p, _)| p.clone()).collect();
        let annotations = if csv.is_file() { Some(ConceptAnnotations::from_csv(&csv, root, &paths)?) } else { None };
        let probe = Self::image_folder(name, folder)?;
        Ok(Self { annotations, ..probe })
    }

    /// A split of the generated `synthetic-concepts` set, with its true concepts as annotations:
    /// the 21 concepts of its groups and its class (`red circle`, …), so that the classifier layer's
    /// labels can be evaluated against the class names too.
    /// Its id is the split's name plus the sha256 of its rendered images and labels, so that a
    /// change to the generator never meets stale cached activations.
    pub fn synthetic(split: ConceptSplit) -> Result<Self> {
        let scenes = (0..split.len())
            .map(|i| split.scene(i))
            .collect::<cvn_models::Result<Vec<_>>>()
            .map_err(|e| upstream(split.describe())(e.to_string()))?;
        let labels: Vec<usize> = scenes.iter().map(|s| s.class()).collect();
        let mut hasher = Sha256::new();
        for (i, &label) in labels.iter().enumerate() {
            hasher.update(split.raw_image(i).map_err(|e| upstream(split.describe())(e.to_string()))?.as_raw());
            hasher.update((label as u64).to_le_bytes());
        }
        let mut names = synthetic_concepts::concept_names();
        let classes = names.len();
        names.extend(synthetic_concepts::class_names());
        let images = scenes.iter().map(|s| [&s.concept_indices()[..], &[classes + s.class()]].concat()).collect();
        let annotations = ConceptAnnotations::new(split.describe(), names, images)?;
        let id = format!("{}:{}", split.describe(), hex(&hasher.finalize()));
        Ok(Self { id, dataset: Arc::new(split), labels, annotations: Some(annotations) })
    }

    /// Checks that the probe images fit `model` (channels, size, classes), as training checks its
    /// data ([`cvn_models::train::check_fits`]).
    pub fn check_fits(&self, model: &ModelConfig) -> Result<()> {
        cvn_models::train::check_fits(model, "probe", self.dataset.as_ref()).map_err(|e| upstream("probe set")(e.to_string()))
    }

    /// Only the first `n` images (quick runs); the id says so.
    pub fn truncated(mut self, n: usize) -> Self {
        if n < self.labels.len() {
            self.labels.truncate(n);
            self.annotations = self.annotations.map(|a| a.truncated(n));
            self.id = format!("{}:first{n}", self.id);
        }
        self
    }
}

impl ProbeSet for DatasetProbe {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn len(&self) -> usize {
        self.labels.len()
    }

    fn class_names(&self) -> &[String] {
        self.dataset.class_names()
    }

    fn label(&self, index: usize) -> Option<usize> {
        self.labels.get(index).copied()
    }

    fn annotations(&self) -> Option<&ConceptAnnotations> {
        self.annotations.as_ref()
    }

    fn image(&self, index: usize) -> Result<RgbImage> {
        self.dataset.raw_image(index).map_err(|e| upstream(format!("probe image {index}"))(e.to_string()))
    }

    fn input_shape(&self) -> [usize; 3] {
        self.dataset.sample_shape()
    }

    fn load_input(&self, index: usize, out: &mut [f32]) -> Result<()> {
        // Probe sets are built without augmentation: the generator is never drawn from.
        let mut unused = CounterRng::new(0, 0, index as u64);
        self.dataset.load_into(index, &mut unused, out).map(|_| ()).map_err(|e| upstream(format!("probe image {index}"))(e.to_string()))
    }
}

/// A CLIP model from a Hugging Face directory, identified by its weights' sha256.
pub struct ClipModelEncoder {
    clip: Clip,
    fingerprint: String,
}

impl ClipModelEncoder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`, the towers on
    /// `device` in `dtype`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let clip =
            Clip::load_on(dir, device, dtype).map_err(|e| upstream(format!("loading CLIP from {}", dir.display()))(e.to_string()))?;
        Ok(Self { clip, fingerprint: file_sha256(&dir.join("model.safetensors"))? })
    }
}

fn to_array(t: &Tensor, what: &str) -> Result<Array2<f32>> {
    let [rows, cols] = <[usize; 2]>::try_from(t.shape()).map_err(|_| DissectError::shape(what, "[N, D]", format!("{:?}", t.shape())))?;
    let values = t.to_vec().map_err(|e| upstream(format!("copying {what} to the host"))(e.to_string()))?;
    Array2::from_shape_vec((rows, cols), values).map_err(|e| DissectError::shape(what, "[N, D]", e.to_string()))
}

impl TextEncoder for ClipModelEncoder {
    fn encode_texts(&self, texts: &[String]) -> Result<Array2<f32>> {
        let t = self.clip.encode_texts(texts).map_err(|e| upstream("encoding texts with CLIP")(e.to_string()))?;
        to_array(&t, "CLIP text embeddings")
    }
}

impl ClipEncoder for ClipModelEncoder {
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn encode_images(&self, images: &[RgbImage]) -> Result<Array2<f32>> {
        let processor = &self.clip.processor;
        let pixels = images
            .par_iter()
            .map(|im| processor.rgb8(im.as_raw(), im.width() as usize, im.height() as usize))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| upstream("preprocessing probe images for CLIP")(e.to_string()))?;
        let batch = processor.stack(pixels).map_err(|e| upstream("preprocessing probe images for CLIP")(e.to_string()))?;
        let t = self.clip.model.encode_images(&batch).map_err(|e| upstream("encoding images with CLIP")(e.to_string()))?;
        to_array(&t, "CLIP image embeddings")
    }
}

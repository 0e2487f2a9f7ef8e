//! [`Model`]: a configuration, its tensors and its layers — what training, evaluation, parity and
//! dissection handle.

use std::collections::BTreeMap;

use cvn_autograd::{Device, LwtaMode, Tensor};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::forward::Forward;
use crate::params::{Builder, Kind, Params, Registry};
use crate::resnet::ResNet;
use crate::vit::VisionTransformer;

/// A ViT/DeiT or ResNet-18, conventional (U = 1) or competition-based (U > 1).
#[derive(Debug, Clone)]
pub struct Model {
    config: ModelConfig,
    params: Params,
    layers: Vec<String>,
    activations: Vec<String>,
    net: Net,
}

#[derive(Debug, Clone)]
enum Net {
    Vit(VisionTransformer),
    ResNet(ResNet),
}

impl Model {
    /// Builds the model with freshly initialised weights (timm / torchvision schemes) from `seed`.
    pub fn new(config: ModelConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut registry = Registry::default();
        let mut b = Builder::new(&mut registry, seed);
        let net = match &config {
            ModelConfig::Vit(c) => Net::Vit(VisionTransformer::new(&mut b, c)?),
            ModelConfig::ResNet18(c) => Net::ResNet(ResNet::new(&mut b, c)?),
        };
        Ok(Self { config, params: registry.params, layers: registry.layers, activations: registry.activations, net })
    }

    /// The name, shape and kind of every tensor of `config`'s model, without building it (no
    /// values are allocated): what a checkpoint is checked against before its model is built.
    pub fn expected_tensors(config: &ModelConfig) -> Result<Vec<(String, Vec<usize>, Kind)>> {
        config.validate()?;
        let mut registry = Registry { shapes_only: true, ..Registry::default() };
        let mut b = Builder::new(&mut registry, 0);
        match config {
            ModelConfig::Vit(c) => drop(VisionTransformer::new(&mut b, c)?),
            ModelConfig::ResNet18(c) => drop(ResNet::new(&mut b, c)?),
        }
        Ok(registry.shapes)
    }

    /// A named model (see [`crate::PRESETS`]) with `competitors` per LWTA block.
    pub fn preset(name: &str, competitors: usize, seed: u64) -> Result<Self> {
        Self::new(ModelConfig::preset(name, competitors)?, seed)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    /// Every layer whose output can be tapped, in forward order (`patch_embed`, `blocks.0.norm1`, …,
    /// `head`; `conv1`, …, `layer4`, `avgpool`, `fc`).
    pub fn layer_names(&self) -> &[String] {
        &self.layers
    }

    /// The activation layers (LWTA when U > 1): `blocks.N.mlp.act`; `act`, `layerK.N.act1/act2`.
    pub fn activation_layers(&self) -> &[String] {
        &self.activations
    }

    /// Checks that every name is a layer of this model; the error lists the available ones.
    pub fn check_layers<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> Result<()> {
        match names.into_iter().find(|n| !self.layers.contains(n)) {
            Some(name) => Err(Error::UnknownLayer { name: name.clone(), available: self.layers.join(", ") }),
            None => Ok(()),
        }
    }

    /// Where the model's tensors live (all on one device).
    pub fn device(&self) -> Device {
        self.params.entries().first().map_or(Device::Cpu, |e| e.tensor.device())
    }

    /// Moves every tensor to `device` (trainable ones stay trainable). Inputs must then be on
    /// `device` too.
    pub fn to_device(&mut self, device: &Device) -> Result<()> {
        for entry in self.params.entries_mut() {
            entry.tensor = entry.tensor.to_device(device)?;
        }
        Ok(())
    }

    /// Whether the model has BatchNorm layers (whose running statistics depend on the LWTA mode).
    pub fn has_batch_norm(&self) -> bool {
        self.config.has_batch_norm()
    }

    /// Re-estimates every BatchNorm's running statistics as the average of the batch statistics
    /// of `batches` with `mode`'s LWTA winners (the SWA `update_bn` recipe); returns the batches
    /// used. Why: training gathers the statistics under *sampled* winners, and argmax winners are
    /// systematically larger, so a deterministic pass through 17 BatchNorm + LWTA layers drifts
    /// further from its statistics at every layer. Models without BatchNorm are unchanged.
    pub fn recalibrate_batch_norm(
        &mut self,
        batches: impl IntoIterator<Item = Result<Tensor>>,
        mode: LwtaMode,
        seed: u64,
    ) -> Result<usize> {
        if !self.has_batch_norm() {
            return Ok(0);
        }
        for entry in self.params.entries_mut().iter_mut().filter(|e| e.kind == Kind::Counter) {
            entry.tensor.set_values(&vec![0.0; entry.tensor.len()])?;
        }
        let mut used = 0;
        for (step, x) in batches.into_iter().enumerate() {
            let mut ctx = Forward::new(mode, seed, step as u64).recalibrating_batch_norm();
            self.forward(&x?, &mut ctx)?;
            used += 1;
        }
        Ok(used)
    }

    /// The BatchNorm running statistics (`<bn>.running_mean`, `<bn>.running_var`) by name.
    pub fn batch_norm_statistics(&self) -> BTreeMap<String, Tensor> {
        self.params.entries().iter().filter(|e| e.kind == Kind::Buffer).map(|e| (e.name.clone(), e.tensor.clone())).collect()
    }

    /// Replaces the BatchNorm running statistics with `statistics` (exactly this model's names and
    /// shapes; `source` names where they came from in errors). They move to the model's device.
    pub fn set_batch_norm_statistics(&mut self, statistics: &BTreeMap<String, Tensor>, source: &str) -> Result<()> {
        let ours = self.batch_norm_statistics();
        let mut problems: Vec<String> = ours
            .iter()
            .filter_map(|(name, t)| match statistics.get(name) {
                None => Some(format!("`{name}` is missing")),
                Some(s) if s.shape() != t.shape() => Some(format!("`{name}` has shape {:?}, expected {:?}", s.shape(), t.shape())),
                Some(_) => None,
            })
            .collect();
        problems.extend(statistics.keys().filter(|n| !ours.contains_key(*n)).map(|n| format!("unexpected tensor `{n}`")));
        if !problems.is_empty() {
            return Err(Error::Checkpoint {
                path: source.to_string(),
                detail: format!("BatchNorm statistics do not match the model: {}", problems.join("; ")),
            });
        }
        let device = self.device();
        for entry in self.params.entries_mut().iter_mut().filter(|e| e.kind == Kind::Buffer) {
            entry.tensor = statistics[&entry.name].to_device(&device)?;
        }
        Ok(())
    }

    /// Logits `[N, classes]` for images `x` (`[N, C, H, W]`). `ctx` sets the mode and noise and
    /// receives the requested taps; in training mode BatchNorm running statistics are updated.
    /// To train, trace `x` on a tape first (`x.traced(&tape)`).
    pub fn forward(&mut self, x: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        self.check_layers(ctx.requested())?;
        match &self.net {
            Net::Vit(v) => v.forward(&self.params, x, ctx),
            Net::ResNet(r) => r.forward(&mut self.params, x, ctx),
        }
    }
}

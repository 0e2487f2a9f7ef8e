//! The tensors of a model, by their checkpoint names. Layers hold [`ParamId`]s into one [`Params`]
//! store, so saving, loading and the optimiser walk a single list, and names are made once, when the
//! model is built, from the module path (`blocks.3.mlp.fc1` + `weight`).

use cvn_autograd::Tensor;

use crate::error::Result;
use crate::rng::CounterRng;

/// What a stored tensor is, which decides how it is trained and saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Trained, with weight decay (linear and convolution weights).
    Weight,
    /// Trained, without weight decay (biases, norm scales, class token, position embedding — timm's
    /// and torchvision's usual exemptions).
    NoDecay,
    /// A running statistic (BatchNorm `running_mean` / `running_var`): saved, not trained.
    Buffer,
    /// An integer count saved as int64 (BatchNorm `num_batches_tracked`).
    Counter,
}

impl Kind {
    pub fn trainable(self) -> bool {
        matches!(self, Kind::Weight | Kind::NoDecay)
    }
}

/// One named tensor of a model.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub tensor: Tensor,
    pub kind: Kind,
}

/// Index of a tensor in [`Params`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParamId(usize);

/// All tensors of a model, in creation order.
#[derive(Debug, Clone, Default)]
pub struct Params {
    entries: Vec<Entry>,
}

impl Params {
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|e| e.name == name).map(|e| &e.tensor)
    }

    /// The trainable tensors with their names and whether weight decay applies — what an optimiser
    /// step walks: `opt.update(name, tensor, grads.get(tensor), lr, decay)`.
    pub fn trainable_mut(&mut self) -> impl Iterator<Item = (&str, &mut Tensor, bool)> {
        self.entries.iter_mut().filter(|e| e.kind.trainable()).map(|e| (e.name.as_str(), &mut e.tensor, e.kind == Kind::Weight))
    }

    /// Number of trainable values.
    pub fn num_trainable(&self) -> usize {
        self.entries.iter().filter(|e| e.kind.trainable()).map(|e| e.tensor.len()).sum()
    }

    pub(crate) fn entries_mut(&mut self) -> &mut [Entry] {
        &mut self.entries
    }

    pub(crate) fn at(&self, id: ParamId) -> &Tensor {
        &self.entries[id.0].tensor
    }

    pub(crate) fn at_mut(&mut self, id: ParamId) -> &mut Tensor {
        &mut self.entries[id.0].tensor
    }
}

/// How a tensor starts out.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Init {
    Const(f32),
    Normal(f32),
    /// Normal with this standard deviation, truncated at ±2·std.
    TruncNormal(f32),
    /// Uniform in ±bound.
    Uniform(f32),
}

/// Random-stream domain of weight initialisation (data uses epochs, far below it).
const INIT_DOMAIN: u64 = u32::MAX as u64;

/// What building a model produces besides its layers.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub params: Params,
    /// Tappable layer names, in forward order.
    pub layers: Vec<String>,
    /// The activation layers among them (LWTA when U > 1).
    pub activations: Vec<String>,
    /// Noise slots handed out to stochastic layers so far.
    pub slots: u64,
    /// Build without values: every tensor is an empty placeholder and only [`Registry::shapes`]
    /// is meaningful (the checkpoint loader compares a file with it before allocating a model).
    pub shapes_only: bool,
    /// Every tensor's name, shape and kind, in creation order.
    pub shapes: Vec<(String, Vec<usize>, Kind)>,
}

/// Creates tensors, layer names and noise slots under a module path while a model is built.
pub(crate) struct Builder<'a> {
    registry: &'a mut Registry,
    prefix: String,
    seed: u64,
}

impl<'a> Builder<'a> {
    pub fn new(registry: &'a mut Registry, seed: u64) -> Self {
        Self { registry, prefix: String::new(), seed }
    }

    /// A builder for the sub-module `name` (`blocks` → `blocks.0` → `blocks.0.attn`).
    pub fn sub(&mut self, name: impl std::fmt::Display) -> Builder<'_> {
        let prefix = self.path_of(&name.to_string());
        Builder { registry: &mut *self.registry, prefix, seed: self.seed }
    }

    /// A noise slot of its own for a stochastic layer (see [`crate::forward::NOISE_SLOTS`]).
    pub fn noise_slot(&mut self) -> u64 {
        self.registry.slots += 1;
        self.registry.slots - 1
    }

    fn path_of(&self, leaf: &str) -> String {
        if self.prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.prefix)
        }
    }

    /// Registers this module as a layer whose output can be tapped; returns its name.
    pub fn layer(&mut self) -> String {
        self.registry.layers.push(self.prefix.clone());
        self.prefix.clone()
    }

    /// Registers this module as an activation layer (also tappable); returns its name.
    pub fn activation_layer(&mut self) -> String {
        self.registry.activations.push(self.prefix.clone());
        self.layer()
    }

    /// Creates the tensor `<path>.<leaf>`.
    pub fn tensor(&mut self, leaf: &str, shape: &[usize], init: Init, kind: Kind) -> Result<ParamId> {
        let name = self.path_of(leaf);
        self.registry.shapes.push((name.clone(), shape.to_vec(), kind));
        if self.registry.shapes_only {
            let entries = &mut self.registry.params.entries;
            entries.push(Entry { name, tensor: Tensor::zeros(&[0]), kind });
            return Ok(ParamId(entries.len() - 1));
        }
        let n: usize = shape.iter().product();
        let mut rng = CounterRng::new(self.seed, INIT_DOMAIN, self.registry.params.entries.len() as u64);
        let data: Vec<f32> = match init {
            Init::Const(v) => vec![v; n],
            Init::Normal(std) => (0..n).map(|_| rng.normal() * std).collect(),
            Init::TruncNormal(std) => (0..n).map(|_| rng.trunc_normal(std)).collect(),
            Init::Uniform(bound) => (0..n).map(|_| rng.uniform_in(-bound, bound)).collect(),
        };
        let tensor = if kind.trainable() { Tensor::param(data, shape)? } else { Tensor::from_vec(data, shape)? };
        let entries = &mut self.registry.params.entries;
        entries.push(Entry { name, tensor, kind });
        Ok(ParamId(entries.len() - 1))
    }
}

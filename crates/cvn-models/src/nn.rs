//! The layers both architectures are made of. Each knows its checkpoint name, records its output
//! when tapped, and keeps its tensors in the model's [`Params`].

use cvn_autograd::{DType, LwtaLayout, LwtaMode, Noise, Statistics, Tensor};

use crate::config::Competition;
use crate::error::Result;
use crate::forward::Forward;
use crate::params::{Builder, Init, Kind, ParamId, Params};

/// The tensor in the dtype matrix products run in: the autocast dtype (bf16) when the pass has one
/// (weights are f32 masters; the cast is differentiable, so they receive f32 gradients — which is
/// why the layers trace a weight on its input's tape before casting it).
fn for_matmul(t: &Tensor, ctx: &Forward) -> Result<Tensor> {
    Ok(match ctx.autocast() {
        Some(dtype) => t.to_dtype(dtype)?,
        None => t.clone(),
    })
}

/// The tensor in f32, what normalisations run in under autocast (as PyTorch's autocast lists them).
fn for_norm(t: &Tensor, ctx: &Forward) -> Result<Tensor> {
    Ok(if ctx.autocast().is_some() { t.to_dtype(DType::F32)? } else { t.clone() })
}

/// `nn.Linear` (`weight [out, in]`, optional `bias [out]`).
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    name: String,
    weight: ParamId,
    bias: Option<ParamId>,
}

impl Linear {
    /// `weight_init` for the weight; the bias starts at `bias_init`.
    pub fn new(b: &mut Builder, inputs: usize, outputs: usize, weight_init: Init, bias_init: Option<Init>) -> Result<Self> {
        let weight = b.tensor("weight", &[outputs, inputs], weight_init, Kind::Weight)?;
        let bias = bias_init.map(|init| b.tensor("bias", &[outputs], init, Kind::NoDecay)).transpose()?;
        Ok(Self { name: b.layer(), weight, bias })
    }

    pub fn forward(&self, p: &Params, x: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let bias = self.bias.map(|b| for_matmul(&p.at(b).with_tape_of(x), ctx)).transpose()?;
        let y = for_matmul(x, ctx)?.linear(&for_matmul(&p.at(self.weight).with_tape_of(x), ctx)?, bias.as_ref())?;
        ctx.record(&self.name, &y);
        Ok(y)
    }
}

/// `nn.Conv2d` with square kernel, stride and zero padding.
#[derive(Debug, Clone)]
pub(crate) struct Conv2d {
    name: String,
    weight: ParamId,
    bias: Option<ParamId>,
    stride: usize,
    padding: usize,
}

/// Size and placement of a convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvShape {
    pub inputs: usize,
    pub outputs: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    pub fn new(b: &mut Builder, s: ConvShape, weight_init: Init, bias_init: Option<Init>) -> Result<Self> {
        let weight = b.tensor("weight", &[s.outputs, s.inputs, s.kernel, s.kernel], weight_init, Kind::Weight)?;
        let bias = bias_init.map(|init| b.tensor("bias", &[s.outputs], init, Kind::NoDecay)).transpose()?;
        Ok(Self { name: b.layer(), weight, bias, stride: s.stride, padding: s.padding })
    }

    pub fn forward(&self, p: &Params, x: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let bias = self.bias.map(|b| for_matmul(&p.at(b).with_tape_of(x), ctx)).transpose()?;
        let weight = for_matmul(&p.at(self.weight).with_tape_of(x), ctx)?;
        let y = for_matmul(x, ctx)?.conv2d(&weight, bias.as_ref(), self.stride, self.padding)?;
        ctx.record(&self.name, &y);
        Ok(y)
    }
}

/// `nn.LayerNorm` over the last dimension.
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    name: String,
    weight: ParamId,
    bias: ParamId,
    eps: f32,
}

impl LayerNorm {
    pub fn new(b: &mut Builder, dim: usize, eps: f32) -> Result<Self> {
        let weight = b.tensor("weight", &[dim], Init::Const(1.0), Kind::NoDecay)?;
        let bias = b.tensor("bias", &[dim], Init::Const(0.0), Kind::NoDecay)?;
        Ok(Self { name: b.layer(), weight, bias, eps })
    }

    pub fn forward(&self, p: &Params, x: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let y = for_norm(x, ctx)?.layer_norm(p.at(self.weight), p.at(self.bias), self.eps)?;
        ctx.record(&self.name, &y);
        Ok(y)
    }
}

/// `nn.BatchNorm2d` with torchvision's buffers (`running_mean`, `running_var`,
/// `num_batches_tracked`) and PyTorch's momentum 0.1.
#[derive(Debug, Clone)]
pub(crate) struct BatchNorm2d {
    name: String,
    weight: ParamId,
    bias: ParamId,
    running_mean: ParamId,
    running_var: ParamId,
    num_batches_tracked: ParamId,
    eps: f32,
}

const BN_MOMENTUM: f32 = 0.1;

impl BatchNorm2d {
    pub fn new(b: &mut Builder, channels: usize, eps: f32) -> Result<Self> {
        Ok(Self {
            weight: b.tensor("weight", &[channels], Init::Const(1.0), Kind::NoDecay)?,
            bias: b.tensor("bias", &[channels], Init::Const(0.0), Kind::NoDecay)?,
            running_mean: b.tensor("running_mean", &[channels], Init::Const(0.0), Kind::Buffer)?,
            running_var: b.tensor("running_var", &[channels], Init::Const(1.0), Kind::Buffer)?,
            num_batches_tracked: b.tensor("num_batches_tracked", &[], Init::Const(0.0), Kind::Counter)?,
            name: b.layer(),
            eps,
        })
    }

    /// Training normalises with batch statistics — this replica's batch, or with
    /// [`Forward::with_synced_batch_norm`] all replicas' batches together — and folds them into
    /// the running ones; evaluation uses the running statistics. Recalibration normalises with
    /// this replica's batch statistics but makes the running statistics the plain average over the
    /// batches since `num_batches_tracked` was reset.
    pub fn forward(&self, p: &mut Params, x: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let x = for_norm(x, ctx)?;
        let (weight, bias) = (p.at(self.weight), p.at(self.bias));
        let y = if ctx.training() || ctx.recalibrating() {
            let statistics = match ctx.synced_batch_norm() {
                Some(replicas) if !ctx.recalibrating() => Statistics::Synced(replicas),
                _ => Statistics::Batch,
            };
            let (y, stats) = x.batch_norm2d(weight, bias, statistics, self.eps)?;
            if let Some(stats) = stats {
                // Recalibration starts from reset counters and runs one batch per step, so
                // `num_batches_tracked` is the step: the running statistics become the plain
                // average of the batches' (without reading the counter back from the device).
                let momentum = if ctx.recalibrating() { 1.0 / (ctx.step as f32 + 1.0) } else { BN_MOMENTUM };
                let (mut mean, mut var) = (p.at(self.running_mean).clone(), p.at(self.running_var).clone());
                stats.update_running(&mut mean, &mut var, momentum)?;
                *p.at_mut(self.running_mean) = mean;
                *p.at_mut(self.running_var) = var;
                let counter = p.at(self.num_batches_tracked).affine(1.0, 1.0)?;
                p.at_mut(self.num_batches_tracked).assign(&counter)?;
            }
            y
        } else {
            let stats = Statistics::Running { mean: p.at(self.running_mean), var: p.at(self.running_var) };
            x.batch_norm2d(weight, bias, stats, self.eps)?.0
        };
        ctx.record(&self.name, &y);
        Ok(y)
    }
}

/// The conventional activation an LWTA layer replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conventional {
    Gelu,
    Relu,
}

/// An activation layer: the conventional one when U = 1, else stochastic LWTA over U consecutive
/// channels (`layout` says which axis holds them).
#[derive(Debug, Clone)]
pub(crate) struct Activation {
    name: String,
    conventional: Conventional,
    layout: LwtaLayout,
    competition: Competition,
    /// Noise slot of this layer (see [`crate::forward::NOISE_SLOTS`]).
    slot: u64,
}

impl Activation {
    pub fn new(b: &mut Builder, conventional: Conventional, layout: LwtaLayout, competition: Competition) -> Self {
        Self { name: b.activation_layer(), conventional, layout, competition, slot: b.noise_slot() }
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let c = self.competition;
        let y = if c.competitors == 1 {
            let y = match self.conventional {
                Conventional::Gelu => x.gelu()?,
                Conventional::Relu => x.relu()?,
            };
            ctx.record(&self.name, &y);
            y
        } else {
            let tau = if ctx.training() { c.tau_train } else { c.tau_test };
            let (y, winners) = x.lwta(self.layout, c.competitors, tau, ctx.noise(self.slot), &self.name)?;
            if ctx.mode == LwtaMode::Sample && ctx.counting() {
                let argmax = x.lwta_winners(self.layout, c.competitors, Noise::None, &self.name)?;
                ctx.count_argmax_wins(&self.name, &winners, &argmax)?;
            }
            ctx.record_winners(&self.name, &y, winners);
            y
        };
        ctx.count_activity(&self.name, &y)?;
        Ok(y)
    }
}

/// Inverted dropout while training; the identity otherwise or when `p = 0`.
#[derive(Debug, Clone)]
pub(crate) struct Dropout {
    p: f32,
    slot: u64,
}

impl Dropout {
    pub fn new(b: &mut Builder, p: f32) -> Self {
        Self { p, slot: b.noise_slot() }
    }

    pub fn forward(&self, x: Tensor, ctx: &Forward) -> Result<Tensor> {
        if !ctx.training() || self.p == 0.0 {
            return Ok(x);
        }
        Ok(x.dropout(self.p, ctx.seed, ctx.noise_offset(self.slot))?)
    }
}

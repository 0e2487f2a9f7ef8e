//! Optimisers with PyTorch's update rules (`torch.optim.AdamW`, `torch.optim.SGD`) and learning-rate
//! schedules. Each update is one fused kernel over parameter, gradient and state on the parameter's
//! device (`cpu.rs`, `cuda.rs`); state is kept by parameter name so it can be saved next to the
//! weights and a resumed run continues exactly. The step count and bias corrections live on the
//! host (they are scalars of the kernel call, no device round trip).

use std::collections::BTreeMap;

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{dtype_err, invalid, Error, Result};
use crate::storage::{mixed_devices, Storage};
use crate::tensor::Tensor;

mod cpu;
mod cuda;

/// One AdamW step's scalars (see [`OptimizerOps::adamw_step`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Zero for parameters exempt from decay.
    pub weight_decay: f32,
    /// `lr / (1 − β1^t)`.
    pub step_size: f32,
    /// `√(1 − β2^t)`.
    pub bias_correction2_sqrt: f32,
}

/// One SGD step's scalars (see [`OptimizerOps::sgd_step`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SgdStep {
    pub lr: f32,
    pub weight_decay: f32,
    pub momentum: f32,
    /// The first step of this parameter: PyTorch initialises the momentum buffer with the gradient.
    pub first: bool,
}

/// The kernels of the optimisers (see [`crate::storage`]); `self` is the f32 parameter.
pub(crate) trait OptimizerOps: Sized {
    /// `p ← p·(1 − lr·wd)`, `m ← β1·m + (1 − β1)·g`, `v ← β2·v + (1 − β2)·g²`,
    /// `p ← p − step_size·m / (√v / √(1 − β2^t) + eps)`, in one pass.
    fn adamw_step(&mut self, grad: &Self, m: &mut Self, v: &mut Self, h: &AdamStep) -> Result<()>;
    /// `d = g + wd·p`; with momentum `buf ← first ? d : momentum·buf + d`, `p ← p − lr·buf`, else
    /// `p ← p − lr·d`.
    fn sgd_step(&mut self, grad: &Self, buf: Option<&mut Self>, h: &SgdStep) -> Result<()>;
}

/// Updates one parameter at a time from its gradient.
pub trait Optimizer {
    /// Applies one step to `param` (named `name`) with learning rate `lr`; `decay` says whether
    /// weight decay applies (biases, norms and tokens are usually exempt). The gradient is a tensor
    /// on the parameter's device.
    fn update(&mut self, name: &str, param: &mut Tensor, grad: &Tensor, lr: f32, decay: bool) -> Result<()>;

    /// The optimiser state as named tensors (`<param>.<slot>`), for checkpoints.
    fn state(&self) -> BTreeMap<String, Tensor>;

    /// Restores what [`Optimizer::state`] produced (on any device: state moves to its parameter's
    /// device at the next update).
    fn load_state(&mut self, state: BTreeMap<String, Tensor>) -> Result<()>;

    /// The names [`Optimizer::state`] has for `param` once it has been updated (so a checkpoint
    /// missing one of them is known to be incomplete).
    fn state_names(&self, param: &str) -> Vec<String>;
}

fn check_grad(name: &str, param: &Tensor, grad: &Tensor) -> Result<()> {
    if grad.shape() != param.shape() {
        return invalid("optimizer", format!("gradient of `{name}` is {:?}, the parameter {:?}", grad.shape(), param.shape()));
    }
    if param.dtype() != DType::F32 || grad.dtype() != DType::F32 {
        return dtype_err(
            "optimizer",
            format!("`{name}`: parameters and gradients are f32 (master weights), got {} and {}", param.dtype(), grad.dtype()),
        );
    }
    if grad.device() != param.device() {
        return Err(mixed_devices("optimizer"));
    }
    Ok(())
}

/// State of `param` on its device, created as zeros the first time.
fn on_device(state: &mut Tensor, device: &Device) -> Result<()> {
    if &state.device() != device {
        *state = state.to_device(device)?;
    }
    Ok(())
}

/// AdamW (decoupled weight decay), as `torch.optim.AdamW`.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    slots: BTreeMap<String, AdamSlot>,
}

#[derive(Debug, Clone)]
struct AdamSlot {
    step: u64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

impl AdamW {
    pub fn new(weight_decay: f32) -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, slots: BTreeMap::new() }
    }
}

impl Optimizer for AdamW {
    fn update(&mut self, name: &str, param: &mut Tensor, grad: &Tensor, lr: f32, decay: bool) -> Result<()> {
        check_grad(name, param, grad)?;
        let device = param.device();
        let slot = match self.slots.get_mut(name) {
            Some(slot) => slot,
            None => {
                let zeros = Tensor::zeros_on(param.shape(), DType::F32, &device)?;
                self.slots.entry(name.to_string()).or_insert(AdamSlot { step: 0, exp_avg: zeros.clone(), exp_avg_sq: zeros })
            }
        };
        on_device(&mut slot.exp_avg, &device)?;
        on_device(&mut slot.exp_avg_sq, &device)?;
        slot.step += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let h = AdamStep {
            lr,
            beta1: b1,
            beta2: b2,
            eps: self.eps,
            weight_decay: if decay { self.weight_decay } else { 0.0 },
            step_size: lr / (1.0 - b1.powi(slot.step as i32)),
            bias_correction2_sqrt: (1.0 - b2.powi(slot.step as i32)).sqrt(),
        };
        let g = grad.shared_storage();
        let (m, v) = (slot.exp_avg.storage_mut()?, slot.exp_avg_sq.storage_mut()?);
        match (param.storage_mut()?, &*g, m, v) {
            (Storage::Cpu(p), Storage::Cpu(g), Storage::Cpu(m), Storage::Cpu(v)) => p.adamw_step(g, m, v, &h),
            (Storage::Cuda(p), Storage::Cuda(g), Storage::Cuda(m), Storage::Cuda(v)) => p.adamw_step(g, m, v, &h),
            _ => Err(mixed_devices("AdamW")),
        }
    }

    fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (name, s) in &self.slots {
            out.insert(format!("{name}.step"), Tensor::from_vec(vec![s.step as f32], &[1]).expect("one value"));
            out.insert(format!("{name}.exp_avg"), s.exp_avg.clone());
            out.insert(format!("{name}.exp_avg_sq"), s.exp_avg_sq.clone());
        }
        out
    }

    fn state_names(&self, param: &str) -> Vec<String> {
        ["step", "exp_avg", "exp_avg_sq"].iter().map(|slot| format!("{param}.{slot}")).collect()
    }

    fn load_state(&mut self, mut state: BTreeMap<String, Tensor>) -> Result<()> {
        self.slots.clear();
        let names: Vec<String> = state.keys().filter_map(|k| k.strip_suffix(".step").map(str::to_string)).collect();
        for name in names {
            let mut take = |slot: &str| {
                state.remove(&format!("{name}.{slot}")).ok_or_else(|| Error::Invalid {
                    op: "AdamW::load_state",
                    detail: format!("`{name}.{slot}` is missing from the optimiser state"),
                })
            };
            let step = take("step")?.to_vec()?.first().copied().unwrap_or(0.0) as u64;
            let slot = AdamSlot { step, exp_avg: take("exp_avg")?, exp_avg_sq: take("exp_avg_sq")? };
            self.slots.insert(name, slot);
        }
        Ok(())
    }
}

/// SGD with momentum and L2 weight decay, as `torch.optim.SGD` (dampening 0, no Nesterov).
#[derive(Debug, Clone)]
pub struct Sgd {
    pub momentum: f32,
    pub weight_decay: f32,
    buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    pub fn new(momentum: f32, weight_decay: f32) -> Self {
        Self { momentum, weight_decay, buffers: BTreeMap::new() }
    }
}

impl Optimizer for Sgd {
    fn update(&mut self, name: &str, param: &mut Tensor, grad: &Tensor, lr: f32, decay: bool) -> Result<()> {
        check_grad(name, param, grad)?;
        let device = param.device();
        let first = !self.buffers.contains_key(name);
        let h = SgdStep { lr, weight_decay: if decay { self.weight_decay } else { 0.0 }, momentum: self.momentum, first };
        let buf = if self.momentum == 0.0 {
            None
        } else {
            if first {
                self.buffers.insert(name.to_string(), Tensor::zeros_on(param.shape(), DType::F32, &device)?);
            }
            let buf = self.buffers.get_mut(name).expect("inserted above");
            on_device(buf, &device)?;
            Some(buf.storage_mut()?)
        };
        let g = grad.shared_storage();
        match (param.storage_mut()?, &*g, buf) {
            (Storage::Cpu(p), Storage::Cpu(g), None) => p.sgd_step(g, None, &h),
            (Storage::Cpu(p), Storage::Cpu(g), Some(Storage::Cpu(b))) => p.sgd_step(g, Some(b), &h),
            (Storage::Cuda(p), Storage::Cuda(g), None) => p.sgd_step(g, None, &h),
            (Storage::Cuda(p), Storage::Cuda(g), Some(Storage::Cuda(b))) => p.sgd_step(g, Some(b), &h),
            _ => Err(mixed_devices("SGD")),
        }
    }

    fn state(&self) -> BTreeMap<String, Tensor> {
        self.buffers.iter().map(|(k, v)| (format!("{k}.momentum_buffer"), v.clone())).collect()
    }

    fn state_names(&self, param: &str) -> Vec<String> {
        // Without momentum SGD keeps no state.
        if self.momentum == 0.0 {
            Vec::new()
        } else {
            vec![format!("{param}.momentum_buffer")]
        }
    }

    fn load_state(&mut self, state: BTreeMap<String, Tensor>) -> Result<()> {
        self.buffers = state
            .into_iter()
            .map(|(k, v)| match k.strip_suffix(".momentum_buffer") {
                Some(name) => Ok((name.to_string(), v)),
                None => invalid("Sgd::load_state", format!("unexpected state entry `{k}`")),
            })
            .collect::<Result<_>>()?;
        Ok(())
    }
}

/// Learning rate as a function of the step.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// Linear warm-up from 0 over `warmup` steps, then cosine decay to `min_lr` at `total` steps.
    Cosine { base_lr: f32, min_lr: f32, warmup: u64, total: u64 },
    /// `base_lr · gamma^(step / every)` (torch's StepLR, counted in steps).
    Step { base_lr: f32, gamma: f32, every: u64 },
}

impl Schedule {
    pub fn lr(&self, step: u64) -> f32 {
        match *self {
            Schedule::Cosine { base_lr, min_lr, warmup, total } => {
                if step < warmup {
                    base_lr * (step + 1) as f32 / warmup as f32
                } else {
                    let span = total.saturating_sub(warmup).max(1) as f32;
                    let t = ((step - warmup) as f32 / span).min(1.0);
                    min_lr + 0.5 * (base_lr - min_lr) * (1.0 + (std::f32::consts::PI * t).cos())
                }
            }
            Schedule::Step { base_lr, gamma, every } => base_lr * gamma.powi((step / every.max(1)) as i32),
        }
    }
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;

    fn param(v: f32) -> Tensor {
        Tensor::param(vec![v], &[1]).unwrap()
    }

    fn g(v: &[f32]) -> Tensor {
        Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap()
    }

    fn value(t: &Tensor) -> f32 {
        t.to_vec().unwrap()[0]
    }

    /// Hand-evaluated `torch.optim.AdamW` steps: the first bias-corrected step is `lr·sign(g)`.
    #[test]
    fn adamw_matches_pytorch_rule() {
        let mut opt = AdamW::new(0.01);
        let mut p = param(1.0);
        opt.update("w", &mut p, &g(&[0.5]), 0.1, true).unwrap();
        assert!((value(&p) - (1.0 * (1.0 - 0.001) - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 1e-6);
        // Second step with g = -0.5: m = 0.9·0.05 − 0.05 = −0.005, v = 0.999·0.00025 + 0.00025.
        let before = value(&p);
        opt.update("w", &mut p, &g(&[-0.5]), 0.1, true).unwrap();
        let (m, v) = (-0.005f32, 0.999f32 * 0.00025 + 0.00025);
        let (bc1, bc2) = (1.0 - 0.9f32.powi(2), 1.0 - 0.999f32.powi(2));
        let expected = before * (1.0 - 0.001) - 0.1 / bc1 * m / ((v.sqrt() / bc2.sqrt()) + 1e-8);
        assert!((value(&p) - expected).abs() < 1e-6, "{} vs {expected}", value(&p));
        // No decay for exempt parameters.
        let mut b = param(1.0);
        opt.update("b", &mut b, &g(&[0.0]), 0.1, false).unwrap();
        assert_eq!(value(&b), 1.0);
    }

    #[test]
    fn sgd_momentum_matches_pytorch_rule() {
        let mut opt = Sgd::new(0.9, 0.1);
        let mut p = param(1.0);
        opt.update("w", &mut p, &g(&[0.5]), 0.1, true).unwrap(); // d = 0.6, buf = 0.6
        assert!((value(&p) - 0.94).abs() < 1e-6);
        opt.update("w", &mut p, &g(&[0.5]), 0.1, true).unwrap(); // d = 0.594, buf = 0.54 + 0.594
        assert!((value(&p) - (0.94 - 0.1 * (0.9 * 0.6 + 0.5 + 0.1 * 0.94))).abs() < 1e-6);
    }

    #[test]
    fn state_round_trips_so_resumed_runs_continue_exactly() {
        let mut a = AdamW::new(0.05);
        let (mut p, mut q) = (param(1.0), param(1.0));
        a.update("w", &mut p, &g(&[0.3]), 0.01, true).unwrap();
        let mut b = AdamW::new(0.05);
        b.load_state(a.state()).unwrap();
        q.set_values(&[value(&p)]).unwrap();
        a.update("w", &mut p, &g(&[-0.2]), 0.01, true).unwrap();
        b.update("w", &mut q, &g(&[-0.2]), 0.01, true).unwrap();
        assert_eq!(p.to_vec().unwrap(), q.to_vec().unwrap());
        assert!(a.update("w", &mut p, &g(&[1.0, 2.0]), 0.01, true).unwrap_err().to_string().contains("`w`"));
    }

    #[test]
    fn schedules() {
        let s = Schedule::Cosine { base_lr: 1.0, min_lr: 0.0, warmup: 10, total: 110 };
        assert!((s.lr(0) - 0.1).abs() < 1e-6);
        assert!((s.lr(9) - 1.0).abs() < 1e-6);
        assert!((s.lr(60) - 0.5).abs() < 1e-6);
        assert!(s.lr(110).abs() < 1e-6);
        let s = Schedule::Step { base_lr: 1.0, gamma: 0.1, every: 30 };
        assert_eq!(s.lr(29), 1.0);
        assert!((s.lr(30) - 0.1).abs() < 1e-7);
    }
}

//! Optimisers with PyTorch's update rules (`torch.optim.AdamW`, `torch.optim.SGD`) and learning-rate
//! schedules. State is kept by parameter name so it can be saved next to the weights and a resumed
//! run continues exactly.

use std::collections::BTreeMap;

use crate::error::{invalid, Result};
use crate::tensor::Tensor;

/// Updates one parameter at a time from its gradient.
pub trait Optimizer {
    /// Applies one step to `param` (named `name`) with learning rate `lr`; `decay` says whether
    /// weight decay applies (biases, norms and tokens are usually exempt).
    fn update(&mut self, name: &str, param: &mut Tensor, grad: &[f32], lr: f32, decay: bool) -> Result<()>;

    /// The optimiser state as named flat tensors (`<param>.<slot>`), for checkpoints.
    fn state(&self) -> BTreeMap<String, Vec<f32>>;

    /// Restores what [`Optimizer::state`] produced.
    fn load_state(&mut self, state: BTreeMap<String, Vec<f32>>) -> Result<()>;
}

fn check_grad(name: &str, param: &Tensor, grad: &[f32]) -> Result<()> {
    if grad.len() != param.len() {
        return invalid("optimizer", format!("gradient of `{name}` has {} values, the parameter {}", grad.len(), param.len()));
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
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

impl AdamW {
    pub fn new(weight_decay: f32) -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, slots: BTreeMap::new() }
    }
}

impl Optimizer for AdamW {
    fn update(&mut self, name: &str, param: &mut Tensor, grad: &[f32], lr: f32, decay: bool) -> Result<()> {
        check_grad(name, param, grad)?;
        let slot = self.slots.entry(name.to_string()).or_insert_with(|| AdamSlot {
            step: 0,
            exp_avg: vec![0.0; grad.len()],
            exp_avg_sq: vec![0.0; grad.len()],
        });
        slot.step += 1;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let bc1 = 1.0 - b1.powi(slot.step as i32);
        let bc2_sqrt = (1.0 - b2.powi(slot.step as i32)).sqrt();
        let step_size = lr / bc1;
        let wd = if decay { self.weight_decay } else { 0.0 };
        let (m, v) = (&mut slot.exp_avg, &mut slot.exp_avg_sq);
        param.update_data(|p| {
            for i in 0..p.len() {
                p[i] *= 1.0 - lr * wd;
                m[i] = b1 * m[i] + (1.0 - b1) * grad[i];
                v[i] = b2 * v[i] + (1.0 - b2) * grad[i] * grad[i];
                p[i] -= step_size * m[i] / (v[i].sqrt() / bc2_sqrt + eps);
            }
        });
        Ok(())
    }

    fn state(&self) -> BTreeMap<String, Vec<f32>> {
        let mut out = BTreeMap::new();
        for (name, s) in &self.slots {
            out.insert(format!("{name}.step"), vec![s.step as f32]);
            out.insert(format!("{name}.exp_avg"), s.exp_avg.clone());
            out.insert(format!("{name}.exp_avg_sq"), s.exp_avg_sq.clone());
        }
        out
    }

    fn load_state(&mut self, mut state: BTreeMap<String, Vec<f32>>) -> Result<()> {
        self.slots.clear();
        let names: Vec<String> = state.keys().filter_map(|k| k.strip_suffix(".step").map(str::to_string)).collect();
        for name in names {
            let mut take = |slot: &str| {
                state.remove(&format!("{name}.{slot}")).ok_or_else(|| crate::Error::Invalid {
                    op: "AdamW::load_state",
                    detail: format!("`{name}.{slot}` is missing from the optimiser state"),
                })
            };
            let step = take("step")?.first().copied().unwrap_or(0.0) as u64;
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
    buffers: BTreeMap<String, Vec<f32>>,
}

impl Sgd {
    pub fn new(momentum: f32, weight_decay: f32) -> Self {
        Self { momentum, weight_decay, buffers: BTreeMap::new() }
    }
}

impl Optimizer for Sgd {
    fn update(&mut self, name: &str, param: &mut Tensor, grad: &[f32], lr: f32, decay: bool) -> Result<()> {
        check_grad(name, param, grad)?;
        let wd = if decay { self.weight_decay } else { 0.0 };
        let momentum = self.momentum;
        let fresh = !self.buffers.contains_key(name);
        let buf = self.buffers.entry(name.to_string()).or_insert_with(|| vec![0.0; grad.len()]);
        param.update_data(|p| {
            for i in 0..p.len() {
                let d = grad[i] + wd * p[i];
                let step = if momentum == 0.0 {
                    d
                } else {
                    // PyTorch initialises the buffer with the first gradient itself.
                    buf[i] = if fresh { d } else { momentum * buf[i] + d };
                    buf[i]
                };
                p[i] -= lr * step;
            }
        });
        Ok(())
    }

    fn state(&self) -> BTreeMap<String, Vec<f32>> {
        self.buffers.iter().map(|(k, v)| (format!("{k}.momentum_buffer"), v.clone())).collect()
    }

    fn load_state(&mut self, state: BTreeMap<String, Vec<f32>>) -> Result<()> {
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
mod tests {
    use super::*;

    fn param(v: f32) -> Tensor {
        Tensor::param(vec![v], &[1]).unwrap()
    }

    /// Hand-evaluated `torch.optim.AdamW` steps: the first bias-corrected step is `lr·sign(g)`.
    #[test]
    fn adamw_matches_pytorch_rule() {
        let mut opt = AdamW::new(0.01);
        let mut p = param(1.0);
        opt.update("w", &mut p, &[0.5], 0.1, true).unwrap();
        assert!((p.data()[0] - (1.0 * (1.0 - 0.001) - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 1e-6);
        // Second step with g = -0.5: m = 0.9·0.05 − 0.05 = −0.005, v = 0.999·0.00025 + 0.00025.
        let before = p.data()[0];
        opt.update("w", &mut p, &[-0.5], 0.1, true).unwrap();
        let (m, v) = (-0.005f32, 0.999f32 * 0.00025 + 0.00025);
        let (bc1, bc2) = (1.0 - 0.9f32.powi(2), 1.0 - 0.999f32.powi(2));
        let expected = before * (1.0 - 0.001) - 0.1 / bc1 * m / ((v.sqrt() / bc2.sqrt()) + 1e-8);
        assert!((p.data()[0] - expected).abs() < 1e-6, "{} vs {expected}", p.data()[0]);
        // No decay for exempt parameters.
        let mut b = param(1.0);
        opt.update("b", &mut b, &[0.0], 0.1, false).unwrap();
        assert_eq!(b.data()[0], 1.0);
    }

    #[test]
    fn sgd_momentum_matches_pytorch_rule() {
        let mut opt = Sgd::new(0.9, 0.1);
        let mut p = param(1.0);
        opt.update("w", &mut p, &[0.5], 0.1, true).unwrap(); // d = 0.6, buf = 0.6
        assert!((p.data()[0] - 0.94).abs() < 1e-6);
        opt.update("w", &mut p, &[0.5], 0.1, true).unwrap(); // d = 0.594, buf = 0.54 + 0.594
        assert!((p.data()[0] - (0.94 - 0.1 * (0.9 * 0.6 + 0.5 + 0.1 * 0.94))).abs() < 1e-6);
    }

    #[test]
    fn state_round_trips_so_resumed_runs_continue_exactly() {
        let mut a = AdamW::new(0.05);
        let (mut p, mut q) = (param(1.0), param(1.0));
        a.update("w", &mut p, &[0.3], 0.01, true).unwrap();
        let mut b = AdamW::new(0.05);
        b.load_state(a.state()).unwrap();
        q.update_data(|d| d[0] = p.data()[0]);
        a.update("w", &mut p, &[-0.2], 0.01, true).unwrap();
        b.update("w", &mut q, &[-0.2], 0.01, true).unwrap();
        assert_eq!(p.data(), q.data());
        assert!(a.update("w", &mut p, &[1.0, 2.0], 0.01, true).unwrap_err().to_string().contains("`w`"));
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

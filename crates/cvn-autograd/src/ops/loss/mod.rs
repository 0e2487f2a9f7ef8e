//! Regularisation and the training loss: dropout and cross-entropy with label smoothing.

use crate::dtype::DType;
use crate::error::{invalid, shape_err, Result};
use crate::ops::check_float;
use crate::storage::{dispatch, Storage};
use crate::tensor::Tensor;

mod cpu;
mod cuda;

/// The kernels of this op family (see [`crate::storage`]).
pub(crate) trait LossOps: Sized {
    /// `(loss, probs)` of `[n, c]` logits against `u32` targets: the mean smoothed cross-entropy
    /// (f32 `[1]`) and the softmax probabilities (f32 `[n, c]`), in f32 whatever the logits' dtype.
    fn cross_entropy(&self, targets: &Self, n: usize, c: usize, smoothing: f32) -> Result<(Self, Self)>;
    /// `(probs − target distribution)·grad/n` in `dtype`, `self` being the probabilities and `grad`
    /// the loss's gradient (f32 `[1]`, read on the device).
    #[allow(clippy::too_many_arguments)]
    fn cross_entropy_backward(&self, targets: &Self, grad: &Self, n: usize, c: usize, smoothing: f32, dtype: DType) -> Result<Self>;
    /// `x ⊙ mask`, the inverted-dropout mask drawn from the Philox stream `(seed, offset)`: element
    /// `e` is 0 where `uniform_at(seed, offset, e) < p`, else `1/(1 − p)`. The backward pass is the
    /// same kernel on the gradient (the mask is regenerated, never stored).
    fn dropout(&self, p: f32, seed: u64, offset: u64) -> Result<Self>;
}

impl Tensor {
    /// Mean cross-entropy of `[N, C]` logits against class indices, with PyTorch's label smoothing
    /// (the target is `(1 − ε)·onehot + ε/C`). The loss is an f32 0-d tensor on the logits' device.
    pub fn cross_entropy(&self, targets: &[usize], label_smoothing: f32) -> Result<Tensor> {
        check_float("cross_entropy", self)?;
        let &[n, c] = self.shape() else {
            return shape_err("cross_entropy", format!("logits must be [N, C], got {:?}", self.shape()));
        };
        if targets.len() != n {
            return shape_err("cross_entropy", format!("{} targets for {n} rows of logits", targets.len()));
        }
        if let Some(t) = targets.iter().find(|&&t| t >= c) {
            return invalid("cross_entropy", format!("target class {t} is out of range for {c} classes"));
        }
        if !(0.0..1.0).contains(&label_smoothing) {
            return invalid("cross_entropy", format!("label smoothing must be in [0, 1), got {label_smoothing}"));
        }
        let ids: Vec<u32> = targets.iter().map(|&t| t as u32).collect();
        let targets = Tensor::from_u32_on(&ids, &[n], &self.device())?;
        let (loss, probs): (Storage, Storage) =
            dispatch!("cross_entropy", (self.storage(), targets.storage()) => |x, t| x.cross_entropy(t, n, c, label_smoothing))?;
        let logits = self.clone();
        Ok(Tensor::from_op(loss, vec![], &[self], move |g, grads| {
            let dtype = logits.dtype();
            let gx: Storage = dispatch!(
                "cross_entropy",
                (&probs, targets.storage(), g.storage()) => |p, t, gs| p.cross_entropy_backward(t, gs, n, c, label_smoothing, dtype)
            )?;
            grads.accumulate(logits.id(), Tensor::from_storage(gx, vec![n, c]))
        }))
    }

    /// Inverted dropout: zeroes each element with probability `p` and scales survivors by `1/(1−p)`.
    /// The mask comes from the Philox stream `(seed, offset)`, so runs are reproducible.
    pub fn dropout(&self, p: f32, seed: u64, offset: u64) -> Result<Tensor> {
        check_float("dropout", self)?;
        if !(0.0..1.0).contains(&p) {
            return invalid("dropout", format!("probability must be in [0, 1), got {p}"));
        }
        if p == 0.0 {
            return Ok(self.clone());
        }
        let out: Storage = dispatch!("dropout", (self.storage()) => |x| x.dropout(p, seed, offset))?;
        let x = self.clone();
        Ok(Tensor::from_op(out, self.shape().to_vec(), &[self], move |g, grads| {
            let gx: Storage = dispatch!("dropout", (g.storage()) => |gs| gs.dropout(p, seed, offset))?;
            grads.accumulate(x.id(), Tensor::from_storage(gx, x.shape().to_vec()))
        }))
    }
}

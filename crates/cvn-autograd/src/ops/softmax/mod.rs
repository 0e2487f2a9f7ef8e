//! Softmax and log-softmax over the last dimension (f32 math whatever the storage dtype).

use std::sync::Arc;

use crate::error::{shape_err, Result};
use crate::ops::check_float;
use crate::storage::{dispatch, Storage};
use crate::tensor::Tensor;

pub(crate) mod cpu;
mod cuda;

/// The kernels of this op family (see [`crate::storage`]).
pub(crate) trait SoftmaxOps: Sized {
    /// Softmax (or, with `log`, log-softmax) of `rows` rows of `n`.
    fn softmax(&self, rows: usize, n: usize, log: bool) -> Result<Self>;
    /// `dx = y ⊙ (g − Σ g·y)` (softmax) or `dx = g − softmax · Σ g` (log-softmax), `self` being `y`.
    fn softmax_backward(&self, grad: &Self, rows: usize, n: usize, log: bool) -> Result<Self>;
}

impl Tensor {
    /// Softmax over the last dimension.
    pub fn softmax(&self) -> Result<Tensor> {
        self.softmax_op(false)
    }

    /// Log-softmax over the last dimension (stable: `x − max − ln Σ exp(x − max)`).
    pub fn log_softmax(&self) -> Result<Tensor> {
        self.softmax_op(true)
    }

    fn softmax_op(&self, log: bool) -> Result<Tensor> {
        let op = if log { "log_softmax" } else { "softmax" };
        check_float(op, self)?;
        let n = match self.shape().last() {
            Some(&n) if n > 0 => n,
            _ => return shape_err(op, format!("needs a non-empty last dimension, got {:?}", self.shape())),
        };
        let rows = self.len() / n;
        let y = Arc::new(dispatch!(op, (self.storage()) => |x| x.softmax(rows, n, log))?);
        let (x, y_saved) = (self.clone(), y.clone());
        Ok(Tensor::from_op_shared(y, self.shape().to_vec(), &[self], move |g, grads| {
            let gx: Storage = dispatch!(op, (&*y_saved, g.storage()) => |ys, gs| ys.softmax_backward(gs, rows, n, log))?;
            grads.accumulate(x.id(), Tensor::from_storage(gx, x.shape().to_vec()))
        }))
    }
}

//! Sums and means, over everything or over one dimension, and the broadcast-reduction that
//! gradients of broadcasting ops go through.

use crate::error::Result;
use crate::ops::check_float;
use crate::shape::StridedView;
use crate::storage::{dispatch, Storage};
use crate::tensor::Tensor;

mod cpu;
mod cuda;

/// The kernels of this op family (see [`crate::storage`]).
pub(crate) trait ReduceOps: Sized {
    /// `self` (of shape `from`) summed down to `to` — the same rank, each dimension equal to
    /// `from`'s or 1 — times `scale`; the result is in `self`'s dtype, accumulated in f32 or wider.
    fn sum_to(&self, from: &[usize], to: &[usize], scale: f32) -> Result<Self>;
}

/// Splits `shape` around `dim` into (outer, size of dim, inner).
pub(crate) fn split_at_dim(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (shape[..dim].iter().product(), shape[dim], shape[dim + 1..].iter().product())
}

impl Tensor {
    /// Sum of all elements (0-d).
    pub fn sum_all(&self) -> Result<Tensor> {
        self.reduce_to(vec![1; self.rank()], vec![], 1.0)
    }

    /// Mean of all elements (0-d).
    pub fn mean_all(&self) -> Result<Tensor> {
        self.reduce_to(vec![1; self.rank()], vec![], 1.0 / self.len().max(1) as f32)
    }

    /// Sum over `dim` (negative counts from the end); `keepdim` keeps it with size 1.
    pub fn sum_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.scaled_dim(dim, keepdim, false)
    }

    /// Mean over `dim`.
    pub fn mean_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.scaled_dim(dim, keepdim, true)
    }

    fn scaled_dim(&self, dim: isize, keepdim: bool, mean: bool) -> Result<Tensor> {
        let d = self.axis(dim)?;
        let size = self.shape()[d];
        let mut kept = self.shape().to_vec();
        kept[d] = 1;
        let mut shape = kept.clone();
        if !keepdim {
            shape.remove(d);
        }
        self.reduce_to(kept, shape, if mean { 1.0 / size.max(1) as f32 } else { 1.0 })
    }

    /// Sums down to `kept` (same rank, reduced dims 1) times `scale`, presented as `shape`.
    fn reduce_to(&self, kept: Vec<usize>, shape: Vec<usize>, scale: f32) -> Result<Tensor> {
        check_float("sum", self)?;
        let from = self.shape().to_vec();
        let out: Storage = dispatch!("sum", (self.storage()) => |x| x.sum_to(&from, &kept, scale))?;
        let x = self.clone();
        Ok(Tensor::from_op(out, shape, &[self], move |g, grads| {
            // Every input element receives its output's gradient times `scale`.
            let spread = g.storage().copy_strided(&StridedView::broadcast(&kept, &from))?;
            let gx = if scale == 1.0 { spread } else { dispatch!("sum", (&spread) => |s| s.affine(scale, 0.0))? };
            grads.accumulate(x.id(), Tensor::from_storage(gx, from))
        }))
    }
}

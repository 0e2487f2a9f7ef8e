//! Point-wise ops: the affine map `x·a + b` and the activations GELU, QuickGELU and ReLU.

use crate::error::Result;
use crate::ops::check_float;
use crate::storage::{dispatch, Storage};
use crate::tensor::Tensor;

pub(crate) mod cpu;
mod cuda;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnaryOp {
    /// GELU, erf form (timm's default).
    Gelu,
    /// `x·σ(1.702x)` (OpenAI CLIP).
    QuickGelu,
    Relu,
}

impl UnaryOp {
    pub(crate) fn name(self) -> &'static str {
        match self {
            UnaryOp::Gelu => "gelu",
            UnaryOp::QuickGelu => "quick_gelu",
            UnaryOp::Relu => "relu",
        }
    }
}

/// The kernels of this op family (see [`crate::storage`]).
pub(crate) trait UnaryOps: Sized {
    /// `x·a + b`.
    fn affine(&self, a: f32, b: f32) -> Result<Self>;
    fn unary(&self, op: UnaryOp) -> Result<Self>;
    /// `op'(x)·grad`, `self` being `x`.
    fn unary_grad(&self, grad: &Self, op: UnaryOp) -> Result<Self>;
}

impl Tensor {
    fn pointwise(&self, op: UnaryOp) -> Result<Tensor> {
        check_float(op.name(), self)?;
        let out: Storage = dispatch!(op.name(), (self.storage()) => |x| x.unary(op))?;
        let x = self.clone();
        Ok(Tensor::from_op(out, self.shape().to_vec(), &[self], move |g, grads| {
            let gx: Storage = dispatch!(op.name(), (x.storage(), g.storage()) => |xs, gs| xs.unary_grad(gs, op))?;
            grads.accumulate(x.id(), Tensor::from_storage(gx, x.shape().to_vec()))
        }))
    }

    /// GELU, erf form (timm's default).
    pub fn gelu(&self) -> Result<Tensor> {
        self.pointwise(UnaryOp::Gelu)
    }

    /// QuickGELU `x·σ(1.702x)` (OpenAI CLIP).
    pub fn quick_gelu(&self) -> Result<Tensor> {
        self.pointwise(UnaryOp::QuickGelu)
    }

    pub fn relu(&self) -> Result<Tensor> {
        self.pointwise(UnaryOp::Relu)
    }

    /// `self * a + b` for scalars `a`, `b` (scaling, shifting, negation).
    pub fn affine(&self, a: f32, b: f32) -> Result<Tensor> {
        check_float("affine", self)?;
        let out: Storage = dispatch!("affine", (self.storage()) => |x| x.affine(a, b))?;
        let x = self.clone();
        Ok(Tensor::from_op(out, self.shape().to_vec(), &[self], move |g, grads| {
            let gx: Storage = dispatch!("affine", (g.storage()) => |gs| gs.affine(a, 0.0))?;
            grads.accumulate(x.id(), Tensor::from_storage(gx, x.shape().to_vec()))
        }))
    }

    pub fn scale(&self, a: f32) -> Result<Tensor> {
        self.affine(a, 0.0)
    }
}

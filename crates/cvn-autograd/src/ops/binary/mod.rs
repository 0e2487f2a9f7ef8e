//! Broadcasting element-wise arithmetic: add, sub, mul, div (NumPy broadcasting rules; bf16 meeting
//! f32 is promoted to f32).

use crate::dtype::DType;
use crate::error::Result;
use crate::ops::{check_float, reduce_to_shape};
use crate::shape::{broadcast_shape, left_pad, StridedView};
use crate::storage::{dispatch, Storage};
use crate::tensor::Tensor;

mod cpu;
mod cuda;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    pub(crate) fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }
}

/// Which input a gradient is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Lhs,
    Rhs,
}

/// How both inputs map onto the broadcast output: `out` is the output shape; `lhs` and `rhs` are
/// the inputs as views of that shape (stride 0 on broadcast dimensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BroadcastLayout {
    pub out: Vec<usize>,
    pub lhs: StridedView,
    pub rhs: StridedView,
}

impl BroadcastLayout {
    pub(crate) fn new(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<Self> {
        let out = broadcast_shape(op, lhs, rhs)?;
        Ok(Self { lhs: StridedView::broadcast(lhs, &out), rhs: StridedView::broadcast(rhs, &out), out })
    }
}

/// The kernels of this op family (see [`crate::storage`]).
pub(crate) trait BinaryOps: Sized {
    /// `op(lhs, rhs)` over `layout.out`.
    fn binary(&self, rhs: &Self, op: BinaryOp, layout: &BroadcastLayout) -> Result<Self>;
    /// `self = op(self, rhs)` in place, `self` being already of the output shape (bias adds).
    fn binary_assign(&mut self, rhs: &Self, op: BinaryOp, layout: &BroadcastLayout) -> Result<()>;
    /// `∂op/∂side · grad` over the output shape, before summing broadcast dimensions away.
    fn binary_grad(&self, rhs: &Self, grad: &Self, op: BinaryOp, side: Side, layout: &BroadcastLayout) -> Result<Self>;
}

/// Mixed float inputs meet in f32 (PyTorch's type promotion: a bf16 branch added to an f32
/// residual stream gives f32); the cast is differentiable.
fn promote(op: &'static str, a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    check_float(op, a)?;
    check_float(op, b)?;
    if a.dtype() == b.dtype() {
        return Ok((a.clone(), b.clone()));
    }
    Ok((a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?))
}

fn binary(a: &Tensor, b: &Tensor, op: BinaryOp) -> Result<Tensor> {
    let (a, b) = promote(op.name(), a, b)?;
    let (a, b) = (&a, &b);
    let layout = BroadcastLayout::new(op.name(), a.shape(), b.shape())?;
    let out: Storage = dispatch!(op.name(), (a.storage(), b.storage()) => |x, y| x.binary(y, op, &layout))?;
    let (a_in, b_in) = (a.clone(), b.clone());
    let shape = layout.out.clone();
    Ok(Tensor::from_op(out, shape, &[a, b], move |g, grads| {
        for (side, input) in [(Side::Lhs, &a_in), (Side::Rhs, &b_in)] {
            if !input.requires_grad() {
                continue;
            }
            // A sum, or the minuend of a difference, passes the gradient through unchanged.
            let passes_through = op == BinaryOp::Add || (op == BinaryOp::Sub && side == Side::Lhs);
            let full = if passes_through {
                g.shared_storage()
            } else {
                let s: Storage = dispatch!(op.name(), (a_in.storage(), b_in.storage(), g.storage()) => |x, y, gs| x.binary_grad(y, gs, op, side, &layout))?;
                std::sync::Arc::new(s)
            };
            let padded = left_pad(input.shape(), layout.out.len());
            let reduced = reduce_to_shape(&full, &layout.out, &padded)?;
            grads.accumulate(input.id(), Tensor::from_storage_arc(reduced, input.shape().to_vec()))?;
        }
        Ok(())
    }))
}

impl Tensor {
    /// `self + other`, broadcasting.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        binary(self, other, BinaryOp::Add)
    }

    /// `self - other`, broadcasting.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        binary(self, other, BinaryOp::Sub)
    }

    /// `self * other`, broadcasting.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        binary(self, other, BinaryOp::Mul)
    }

    /// `self / other`, broadcasting.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        binary(self, other, BinaryOp::Div)
    }
}

use std::borrow::Cow;

use rayon::prelude::*;

use super::{BinaryOp, BinaryOps, BroadcastLayout, Side};
use crate::cpu::{CpuStorage, PAR_CHUNK};
use crate::error::Result;
use crate::shape::{for_each_mapped, strides, StridedView};
use crate::storage::BackendStorage;

impl BinaryOp {
    #[inline(always)]
    fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
        }
    }

    /// `∂/∂a · g` or `∂/∂b · g`.
    #[inline(always)]
    fn grad(self, side: Side, a: f32, b: f32, g: f32) -> f32 {
        match (self, side) {
            (BinaryOp::Add, _) | (BinaryOp::Sub, Side::Lhs) => g,
            (BinaryOp::Sub, Side::Rhs) => -g,
            (BinaryOp::Mul, Side::Lhs) => g * b,
            (BinaryOp::Mul, Side::Rhs) => g * a,
            (BinaryOp::Div, Side::Lhs) => g / b,
            (BinaryOp::Div, Side::Rhs) => -g * a / (b * b),
        }
    }
}

/// `x` seen through `view` (a broadcast of it to the output shape), as a contiguous slice:
/// borrowed when the view is `x` itself.
fn expand<'a>(x: &'a [f32], view: &StridedView) -> Cow<'a, [f32]> {
    if view.offset == 0 && view.strides == strides(&view.shape) {
        return Cow::Borrowed(&x[..view.len()]);
    }
    let mut v = vec![0.0; view.len()];
    for_each_mapped(&view.shape, &view.strides, |o, s| v[o] = x[view.offset + s]);
    Cow::Owned(v)
}

/// When `view` broadcasts a block of `period` elements over leading dimensions (a bias over rows,
/// a position embedding over images), that period.
fn row_period(view: &StridedView) -> Option<usize> {
    let first = view.strides.iter().rposition(|&s| s == 0)? + 1;
    let inner = &view.shape[first..];
    let period: usize = inner.iter().product();
    (period > 0 && view.offset == 0 && view.strides[first..] == strides(inner)[..] && view.strides[..first].iter().all(|&s| s == 0))
        .then_some(period)
}

impl BinaryOps for CpuStorage {
    fn binary(&self, rhs: &Self, op: BinaryOp, layout: &BroadcastLayout) -> Result<Self> {
        let (a, b) = (self.floats(op.name())?, rhs.floats(op.name())?);
        let ae = expand(&a, &layout.lhs);
        let out: Vec<f32> = match row_period(&layout.rhs) {
            Some(period) if matches!(ae, Cow::Borrowed(_)) => {
                let mut out = ae.into_owned();
                out.par_chunks_mut(period * (PAR_CHUNK / period).max(1))
                    .for_each(|c| c.chunks_mut(period).for_each(|r| r.iter_mut().zip(b.iter()).for_each(|(o, b)| *o = op.apply(*o, *b))));
                out
            }
            _ => {
                let be = expand(&b, &layout.rhs);
                ae.par_iter().zip(be.par_iter()).with_min_len(PAR_CHUNK).map(|(a, b)| op.apply(*a, *b)).collect()
            }
        };
        Ok(CpuStorage::from_floats(out, self.dtype()))
    }

    fn binary_assign(&mut self, rhs: &Self, op: BinaryOp, layout: &BroadcastLayout) -> Result<()> {
        let b = rhs.floats(op.name())?;
        let period = row_period(&layout.rhs);
        self.update_floats(op.name(), |out| {
            match period {
                Some(period) => out
                    .par_chunks_mut(period * (PAR_CHUNK / period).max(1))
                    .for_each(|c| c.chunks_mut(period).for_each(|r| r.iter_mut().zip(b.iter()).for_each(|(o, b)| *o = op.apply(*o, *b)))),
                _ => {
                    let be = expand(&b, &layout.rhs);
                    out.par_iter_mut().zip(be.par_iter()).with_min_len(PAR_CHUNK).for_each(|(o, b)| *o = op.apply(*o, *b));
                }
            }
            Ok(())
        })
    }

    fn binary_grad(&self, rhs: &Self, grad: &Self, op: BinaryOp, side: Side, layout: &BroadcastLayout) -> Result<Self> {
        let (a, b, g) = (self.floats(op.name())?, rhs.floats(op.name())?, grad.floats(op.name())?);
        let (ae, be) = (expand(&a, &layout.lhs), expand(&b, &layout.rhs));
        let out: Vec<f32> = g
            .par_iter()
            .zip(ae.par_iter().zip(be.par_iter()))
            .with_min_len(PAR_CHUNK)
            .map(|(g, (a, b))| op.grad(side, *a, *b, *g))
            .collect();
        Ok(CpuStorage::from_floats(out, grad.dtype()))
    }
}

//! Broadcasting element-wise arithmetic: add, sub, mul, div, and their scalar forms.

use rayon::prelude::*;

use crate::error::Result;
use crate::shape::{broadcast_shape, broadcast_strides, for_each_mapped, sum_to_shape};
use crate::tensor::Tensor;

/// Elements per rayon task for cheap element-wise loops.
pub(crate) const PAR_CHUNK: usize = 1 << 15;

#[derive(Debug, Clone, Copy)]
enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

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

    /// (∂/∂a, ∂/∂b) times the output gradient `g`.
    #[inline(always)]
    fn grads(self, a: f32, b: f32, g: f32) -> (f32, f32) {
        match self {
            BinaryOp::Add => (g, g),
            BinaryOp::Sub => (g, -g),
            BinaryOp::Mul => (g * b, g * a),
            BinaryOp::Div => (g / b, -g * a / (b * b)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }
}

/// Gathers `x` (of `shape`) into the broadcast shape `out`.
fn expand<'a>(x: &'a Tensor, out: &[usize]) -> std::borrow::Cow<'a, [f32]> {
    if x.shape() == out {
        return x.data().into();
    }
    let n: usize = out.iter().product();
    let mut v = vec![0.0; n];
    let st = broadcast_strides(x.shape(), out);
    let d = x.data();
    for_each_mapped(out, &st, |o, s| v[o] = d[s]);
    v.into()
}

fn binary(a: &Tensor, b: &Tensor, op: BinaryOp) -> Result<Tensor> {
    let out_shape = broadcast_shape(op.name(), a.shape(), b.shape())?;
    let (ae, be) = (expand(a, &out_shape), expand(b, &out_shape));
    let out: Vec<f32> = ae.par_iter().zip(be.par_iter()).with_min_len(PAR_CHUNK).map(|(a, b)| op.apply(*a, *b)).collect();
    let (a_in, b_in) = (a.clone(), b.clone());
    let shape = out_shape.clone();
    Ok(Tensor::from_op(out, out_shape, &[a, b], move |g, grads| {
        let (ae, be) = (expand(&a_in, &shape), expand(&b_in, &shape));
        // Each input's gradient is computed only when it is wanted, and reduced only when it was broadcast.
        let reduce = |grad: Vec<f32>, input: &Tensor| {
            if input.shape() == shape.as_slice() {
                grad
            } else {
                sum_to_shape(&grad, &shape, input.shape())
            }
        };
        // ∂/∂a (side 0) or ∂/∂b (side 1) times g; a sum or difference passes g itself through.
        let side_grad = |side: usize| -> Vec<f32> {
            match (op, side) {
                (BinaryOp::Add, _) | (BinaryOp::Sub, 0) => g.to_vec(),
                _ => g
                    .par_iter()
                    .zip(be.par_iter())
                    .zip(ae.par_iter())
                    .with_min_len(PAR_CHUNK)
                    .map(|((g, b), a)| {
                        let (da, db) = op.grads(*a, *b, *g);
                        if side == 0 {
                            da
                        } else {
                            db
                        }
                    })
                    .collect(),
            }
        };
        for (side, input) in [&a_in, &b_in].into_iter().enumerate() {
            if input.requires_grad() {
                grads.accumulate(input.id(), reduce(side_grad(side), input));
            }
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

    /// `self * a + b` for scalars `a`, `b` (scaling, shifting, negation).
    pub fn affine(&self, a: f32, b: f32) -> Tensor {
        let out: Vec<f32> = self.data().par_iter().with_min_len(PAR_CHUNK).map(|x| x * a + b).collect();
        let x = self.clone();
        Tensor::from_op(out, self.shape().to_vec(), &[self], move |g, grads| {
            grads.accumulate(x.id(), g.iter().map(|g| g * a).collect());
            Ok(())
        })
    }

    pub fn scale(&self, a: f32) -> Tensor {
        self.affine(a, 0.0)
    }
}

//! Multi-head scaled dot-product attention, composed from matmul, softmax and layout ops so its
//! gradient comes from theirs.

use crate::error::{shape_err, Result};
use crate::tensor::Tensor;

impl Tensor {
    /// Splits `[B, T, 3·D]` packed q/k/v projections (timm's `qkv`) into three `[B, H, T, D/H]`.
    pub fn split_heads_qkv(&self, heads: usize) -> Result<[Tensor; 3]> {
        let &[b, t, d3] = self.shape() else {
            return shape_err("split_heads_qkv", format!("needs [B, T, 3·D], got {:?}", self.shape()));
        };
        if d3 % (3 * heads.max(1)) != 0 || heads == 0 {
            return shape_err("split_heads_qkv", format!("{d3} features cannot be split into 3 × {heads} heads"));
        }
        let hd = d3 / 3 / heads;
        let qkv = self.reshape(&[b, t, 3, heads, hd])?.permute(&[2, 0, 3, 1, 4])?;
        let part = |i| qkv.narrow(0, i, 1)?.reshape(&[b, heads, t, hd]);
        Ok([part(0)?, part(1)?, part(2)?])
    }

    /// Splits `[B, T, D]` into `[B, H, T, D/H]`.
    pub fn split_heads(&self, heads: usize) -> Result<Tensor> {
        let &[b, t, d] = self.shape() else {
            return shape_err("split_heads", format!("needs [B, T, D], got {:?}", self.shape()));
        };
        if heads == 0 || d % heads != 0 {
            return shape_err("split_heads", format!("{d} features cannot be split into {heads} heads"));
        }
        self.reshape(&[b, t, heads, d / heads])?.permute(&[0, 2, 1, 3])
    }

    /// Merges `[B, H, T, Dh]` back into `[B, T, H·Dh]`.
    pub fn merge_heads(&self) -> Result<Tensor> {
        let &[b, h, t, dh] = self.shape() else {
            return shape_err("merge_heads", format!("needs [B, H, T, Dh], got {:?}", self.shape()));
        };
        self.permute(&[0, 2, 1, 3])?.reshape(&[b, t, h * dh])
    }

    /// `softmax(q·kᵀ/√d [+ causal mask])·v` on `[B, H, T, D]` tensors.
    pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Result<Tensor> {
        let &[.., t, d] = q.shape() else {
            return shape_err("attention", format!("q must be [B, H, T, D], got {:?}", q.shape()));
        };
        let scores = q.matmul(&k.transpose(-2, -1)?)?.scale(1.0 / (d as f32).sqrt());
        let scores = if causal {
            let mask: Vec<f32> = (0..t * t).map(|i| if i % t > i / t { f32::NEG_INFINITY } else { 0.0 }).collect();
            scores.add(&Tensor::from_vec(mask, &[t, t])?)?
        } else {
            scores
        };
        scores.softmax()?.matmul(v)
    }
}

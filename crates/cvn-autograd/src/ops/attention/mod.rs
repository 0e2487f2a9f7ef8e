//! Fused multi-head scaled dot-product attention on `[B, T, C]` activations.
//!
//! Heads are read and written in place through strided GEMMs, so no `[B, H, T, D]` copies are made,
//! and the packed `qkv` projection of timm (`[B, T, 3C]`: q, k, v blocks, heads inside each) is
//! consumed as it is. The softmax probabilities (f32) are kept for the backward pass.

use crate::error::{shape_err, Result};
use crate::ops::check_same_dtype;
use crate::storage::{mixed_devices, same_device, BackendStorage, Lift, Storage};
use crate::tensor::Tensor;

mod cpu;
mod cuda;

/// Where q, k or v lives: which input tensor and at which feature offset of its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Part {
    pub input: usize,
    pub offset: usize,
}

/// The geometry shared by forward and backward; `rows[i]` is the row length of input `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttentionGeom {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub heads: usize,
    pub hd: usize,
    pub causal: bool,
    pub parts: [Part; 3],
    pub rows: Vec<usize>,
}

/// The kernels of this op family (see [`crate::storage`]).
pub(crate) trait AttentionOps: Sized {
    /// `(out [B, T, C], probs f32 [B, heads, T, T])`.
    fn attention(inputs: &[&Self], g: &AttentionGeom) -> Result<(Self, Self)>;
    /// The gradient of each input (`None` where `need` is false).
    fn attention_backward(inputs: &[&Self], g: &AttentionGeom, probs: &Self, grad: &Self, need: &[bool]) -> Result<Vec<Option<Self>>>;
}

/// The inputs' backend storages (all on one device).
enum Backends<'a> {
    Cpu(Vec<&'a crate::cpu::CpuStorage>),
    Cuda(Vec<&'a crate::cuda::CudaStorage>),
}

fn backends<'a>(storages: &[&'a Storage]) -> Result<Backends<'a>> {
    if let Some(cpu) = storages.iter().map(|s| if let Storage::Cpu(c) = s { Some(c) } else { None }).collect::<Option<Vec<_>>>() {
        return Ok(Backends::Cpu(cpu));
    }
    match storages.iter().map(|s| if let Storage::Cuda(c) = s { Some(c) } else { None }).collect::<Option<Vec<_>>>() {
        Some(cuda) => {
            same_device("attention", &cuda.iter().map(|c| c.device()).collect::<Vec<_>>())?;
            Ok(Backends::Cuda(cuda))
        }
        None => Err(mixed_devices("attention")),
    }
}

fn attention(inputs: &[&Tensor], g: AttentionGeom) -> Result<Tensor> {
    check_same_dtype("attention", inputs)?;
    let storages: Vec<&Storage> = inputs.iter().map(|t| t.storage()).collect();
    let (out, probs): (Storage, Storage) = match backends(&storages)? {
        Backends::Cpu(s) => crate::cpu::CpuStorage::attention(&s, &g)?.lift(),
        Backends::Cuda(s) => crate::cuda::CudaStorage::attention(&s, &g)?.lift(),
    };
    let saved: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
    let shape = vec![g.b, g.t, g.c];
    Ok(Tensor::from_op(out, shape, inputs, move |grad, grads| {
        let need: Vec<bool> = saved.iter().map(Tensor::requires_grad).collect();
        let mut storages: Vec<&Storage> = saved.iter().map(|t| t.storage()).collect();
        storages.extend([&probs, grad.storage()]);
        let d: Vec<Option<Storage>> = match backends(&storages)? {
            Backends::Cpu(s) => {
                let (ins, rest) = s.split_at(saved.len());
                crate::cpu::CpuStorage::attention_backward(ins, &g, rest[0], rest[1], &need)?.lift()
            }
            Backends::Cuda(s) => {
                let (ins, rest) = s.split_at(saved.len());
                crate::cuda::CudaStorage::attention_backward(ins, &g, rest[0], rest[1], &need)?.lift()
            }
        };
        for (t, d) in saved.iter().zip(d) {
            if let Some(d) = d {
                grads.accumulate(t.id(), Tensor::from_storage(d, t.shape().to_vec()))?;
            }
        }
        Ok(())
    }))
}

fn geometry(
    op: &'static str,
    x: &Tensor,
    features: usize,
    heads: usize,
    causal: bool,
    parts: [Part; 3],
    rows: Vec<usize>,
) -> Result<AttentionGeom> {
    let &[b, t, _] = x.shape() else {
        return shape_err(op, format!("needs [B, T, C] inputs, got {:?}", x.shape()));
    };
    if heads == 0 || !features.is_multiple_of(heads) || t == 0 {
        return shape_err(op, format!("{features} features cannot be split into {heads} heads (shape {:?})", x.shape()));
    }
    Ok(AttentionGeom { b, t, c: features, heads, hd: features / heads, causal, parts, rows })
}

impl Tensor {
    /// Multi-head attention `softmax(q·kᵀ/√d [+ causal mask])·v` per head, on `[B, T, C]` q, k and v;
    /// the output is `[B, T, C]` with heads side by side (as `CLIPAttention` before `out_proj`).
    pub fn multi_head_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, causal: bool) -> Result<Tensor> {
        if k.shape() != q.shape() || v.shape() != q.shape() {
            return shape_err("multi_head_attention", format!("q {:?}, k {:?}, v {:?} must agree", q.shape(), k.shape(), v.shape()));
        }
        let c = *q.shape().last().unwrap_or(&0);
        let parts = [0, 1, 2].map(|input| Part { input, offset: 0 });
        let g = geometry("multi_head_attention", q, c, heads, causal, parts, vec![c; 3])?;
        attention(&[q, k, v], g)
    }

    /// The same on timm's packed projection `[B, T, 3C]` (q, k, v blocks of `C`, heads inside each).
    pub fn packed_attention(&self, heads: usize, causal: bool) -> Result<Tensor> {
        let c3 = *self.shape().last().unwrap_or(&0);
        if !c3.is_multiple_of(3) {
            return shape_err("packed_attention", format!("{c3} features are not three equal q/k/v blocks"));
        }
        let c = c3 / 3;
        let parts = [0, 1, 2].map(|i| Part { input: 0, offset: i * c });
        let g = geometry("packed_attention", self, c, heads, causal, parts, vec![c3])?;
        attention(&[self], g)
    }
}

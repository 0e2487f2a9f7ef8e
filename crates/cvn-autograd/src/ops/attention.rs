//! Fused multi-head scaled dot-product attention on `[B, T, C]` activations.
//!
//! Heads are read and written in place through strided GEMMs, so no `[B, H, T, D]` copies are made,
//! and the packed `qkv` projection of timm (`[B, T, 3C]`: q, k, v blocks, heads inside each) is
//! consumed as it is. The softmax probabilities are kept for the backward pass.

use rayon::prelude::*;

use crate::error::{shape_err, Result};
use crate::ops::matmul::{gemm, Mat};
use crate::tensor::Tensor;

/// Where q, k or v lives: which input tensor and at which feature offset of its rows.
#[derive(Debug, Clone, Copy)]
struct Part {
    input: usize,
    offset: usize,
}

/// The geometry shared by forward and backward.
#[derive(Debug, Clone, Copy)]
struct Geom {
    b: usize,
    t: usize,
    c: usize,
    heads: usize,
    hd: usize,
    causal: bool,
}

impl Geom {
    /// Head `h` of image `b` of a part, as a `[T, hd]` matrix view into rows of `row` floats.
    fn view<'a>(&self, data: &'a [f32], row: usize, part: Part, b: usize, h: usize) -> Mat<'a> {
        let start = b * self.t * row + part.offset + h * self.hd;
        let end = start + (self.t - 1) * row + self.hd;
        Mat { data: &data[start..end], rows: self.t, cols: self.hd, rs: row as isize, cs: 1 }
    }
}

/// Copies a contiguous `[T, hd]` block into head `h` of a `[T, row]` image slice.
fn scatter_head(dst: &mut [f32], row: usize, offset: usize, src: &[f32], hd: usize, accumulate: bool) {
    for (t, s) in src.chunks_exact(hd).enumerate() {
        let d = &mut dst[t * row + offset..t * row + offset + hd];
        if accumulate {
            d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
        } else {
            d.copy_from_slice(s);
        }
    }
}

fn attention(inputs: &[&Tensor], parts: [Part; 3], g: Geom) -> Result<Tensor> {
    let rows: Vec<usize> = inputs.iter().map(|t| t.shape()[2]).collect();
    let scale = 1.0 / (g.hd as f32).sqrt();
    let tt = g.t * g.t;
    let mut probs = vec![0.0f32; g.b * g.heads * tt];
    let mut out = vec![0.0f32; g.b * g.t * g.c];
    let data: Vec<&[f32]> = inputs.iter().map(|t| t.data()).collect();
    let view = |p: Part, b, h| g.view(data[p.input], rows[p.input], p, b, h);
    out.par_chunks_mut(g.t * g.c).zip(probs.par_chunks_mut(g.heads * tt)).enumerate().for_each(|(b, (o, pb))| {
        let mut head_out = vec![0.0f32; g.t * g.hd];
        for h in 0..g.heads {
            let p = &mut pb[h * tt..(h + 1) * tt];
            gemm(view(parts[0], b, h), view(parts[1], b, h).t(), p, 0.0);
            for (i, r) in p.chunks_mut(g.t).enumerate() {
                let visible = if g.causal { i + 1 } else { g.t };
                let max = r[..visible].iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) * scale;
                let mut sum = 0.0;
                for v in &mut r[..visible] {
                    *v = (*v * scale - max).exp();
                    sum += *v;
                }
                r[..visible].iter_mut().for_each(|v| *v /= sum);
                r[visible..].fill(0.0);
            }
            gemm(Mat::new(p, g.t, g.t), view(parts[2], b, h), &mut head_out, 0.0);
            scatter_head(o, g.c, h * g.hd, &head_out, g.hd, false);
        }
    });
    let saved: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
    Ok(Tensor::from_op(out, vec![g.b, g.t, g.c], inputs, move |grad, grads| {
        let data: Vec<&[f32]> = saved.iter().map(|t| t.data()).collect();
        let view = |p: Part, b, h| g.view(data[p.input], rows[p.input], p, b, h);
        let mut d_inputs: Vec<Vec<f32>> = saved.iter().map(|t| vec![0.0f32; t.len()]).collect();
        // One task per image: it owns that image's rows of every input gradient.
        let mut per_image: Vec<Vec<&mut [f32]>> = (0..g.b).map(|_| Vec::new()).collect();
        for (d, &row) in d_inputs.iter_mut().zip(&rows) {
            for (b, chunk) in d.chunks_mut(g.t * row).enumerate() {
                per_image[b].push(chunk);
            }
        }
        per_image.par_iter_mut().enumerate().for_each(|(b, dst)| {
            let (mut dp, mut tmp) = (vec![0.0f32; tt], vec![0.0f32; g.t * g.hd]);
            for h in 0..g.heads {
                let p = &probs[(b * g.heads + h) * tt..][..tt];
                let dout = Mat { data: &grad[b * g.t * g.c + h * g.hd..], rows: g.t, cols: g.hd, rs: g.c as isize, cs: 1 };
                // dV = Pᵀ·dO
                gemm(Mat::new(p, g.t, g.t).t(), dout, &mut tmp, 0.0);
                scatter_head(dst[parts[2].input], rows[parts[2].input], parts[2].offset + h * g.hd, &tmp, g.hd, true);
                // dS = P ⊙ (dP − Σ dP⊙P) · scale, with dP = dO·Vᵀ
                gemm(dout, view(parts[2], b, h).t(), &mut dp, 0.0);
                for (dr, pr) in dp.chunks_mut(g.t).zip(p.chunks(g.t)) {
                    let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
                    dr.iter_mut().zip(pr).for_each(|(d, p)| *d = p * (*d - dot) * scale);
                }
                // dQ = dS·K, dK = dSᵀ·Q
                gemm(Mat::new(&dp, g.t, g.t), view(parts[1], b, h), &mut tmp, 0.0);
                scatter_head(dst[parts[0].input], rows[parts[0].input], parts[0].offset + h * g.hd, &tmp, g.hd, true);
                gemm(Mat::new(&dp, g.t, g.t).t(), view(parts[0], b, h), &mut tmp, 0.0);
                scatter_head(dst[parts[1].input], rows[parts[1].input], parts[1].offset + h * g.hd, &tmp, g.hd, true);
            }
        });
        for (t, d) in saved.iter().zip(d_inputs) {
            if t.requires_grad() {
                grads.accumulate(t.id(), d);
            }
        }
        Ok(())
    }))
}

fn geometry(op: &'static str, x: &Tensor, features: usize, heads: usize, causal: bool) -> Result<Geom> {
    let &[b, t, _] = x.shape() else {
        return shape_err(op, format!("needs [B, T, C] inputs, got {:?}", x.shape()));
    };
    if heads == 0 || !features.is_multiple_of(heads) || t == 0 {
        return shape_err(op, format!("{features} features cannot be split into {heads} heads (shape {:?})", x.shape()));
    }
    Ok(Geom { b, t, c: features, heads, hd: features / heads, causal })
}

impl Tensor {
    /// Multi-head attention `softmax(q·kᵀ/√d [+ causal mask])·v` per head, on `[B, T, C]` q, k and v;
    /// the output is `[B, T, C]` with heads side by side (as `CLIPAttention` before `out_proj`).
    pub fn multi_head_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, causal: bool) -> Result<Tensor> {
        let g = geometry("multi_head_attention", q, *q.shape().last().unwrap_or(&0), heads, causal)?;
        if k.shape() != q.shape() || v.shape() != q.shape() {
            return shape_err("multi_head_attention", format!("q {:?}, k {:?}, v {:?} must agree", q.shape(), k.shape(), v.shape()));
        }
        let parts = [0, 1, 2].map(|input| Part { input, offset: 0 });
        attention(&[q, k, v], parts, g)
    }

    /// The same on timm's packed projection `[B, T, 3C]` (q, k, v blocks of `C`, heads inside each).
    pub fn packed_attention(&self, heads: usize, causal: bool) -> Result<Tensor> {
        let c3 = *self.shape().last().unwrap_or(&0);
        if !c3.is_multiple_of(3) {
            return shape_err("packed_attention", format!("{c3} features are not three equal q/k/v blocks"));
        }
        let g = geometry("packed_attention", self, c3 / 3, heads, causal)?;
        let parts = [0, 1, 2].map(|i| Part { input: 0, offset: i * g.c });
        attention(&[self], parts, g)
    }
}

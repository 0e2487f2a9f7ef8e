//! Softmax and log-softmax over the last dimension, and L2 normalisation of rows.

use rayon::prelude::*;

use crate::error::{shape_err, Result};
use crate::tensor::Tensor;

/// Rows per rayon task for row-wise ops.
const ROWS_PER_TASK: usize = 64;

fn last_dim(t: &Tensor, op: &'static str) -> Result<usize> {
    match t.shape().last() {
        Some(&n) if n > 0 => Ok(n),
        _ => shape_err(op, format!("needs a non-empty last dimension, got {:?}", t.shape())),
    }
}

impl Tensor {
    /// Softmax over the last dimension.
    pub fn softmax(&self) -> Result<Tensor> {
        let n = last_dim(self, "softmax")?;
        let mut out = self.to_vec();
        out.par_chunks_mut(n * ROWS_PER_TASK).for_each(|c| {
            for r in c.chunks_mut(n) {
                let max = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                r.iter_mut().for_each(|v| {
                    *v = (*v - max).exp();
                    sum += *v;
                });
                r.iter_mut().for_each(|v| *v /= sum);
            }
        });
        let x = self.clone();
        let y = std::sync::Arc::new(out);
        let y_saved = y.clone();
        Ok(Tensor::from_op_shared(y, self.shape().to_vec(), &[self], move |g, grads| {
            // dx = y ⊙ (g − Σ g·y)
            let mut gx = vec![0.0; g.len()];
            gx.par_chunks_mut(n * ROWS_PER_TASK).enumerate().for_each(|(c, dst)| {
                let base = c * n * ROWS_PER_TASK;
                for (r, d) in dst.chunks_mut(n).enumerate() {
                    let o = base + r * n;
                    let (yr, gr) = (&y_saved[o..o + n], &g[o..o + n]);
                    let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                    d.iter_mut().zip(yr.iter().zip(gr)).for_each(|(d, (y, g))| *d = y * (g - dot));
                }
            });
            grads.accumulate(x.id(), gx);
            Ok(())
        }))
    }

    /// Log-softmax over the last dimension (stable: `x − max − ln Σ exp(x − max)`).
    pub fn log_softmax(&self) -> Result<Tensor> {
        let n = last_dim(self, "log_softmax")?;
        let mut out = self.to_vec();
        out.par_chunks_mut(n * ROWS_PER_TASK).for_each(|c| {
            for r in c.chunks_mut(n) {
                let max = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let lse = max + r.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
                r.iter_mut().for_each(|v| *v -= lse);
            }
        });
        let x = self.clone();
        let y = std::sync::Arc::new(out);
        let y_saved = y.clone();
        Ok(Tensor::from_op_shared(y, self.shape().to_vec(), &[self], move |g, grads| {
            // dx = g − softmax · Σ g
            let mut gx = vec![0.0; g.len()];
            for ((d, yr), gr) in gx.chunks_mut(n).zip(y_saved.chunks(n)).zip(g.chunks(n)) {
                let sum: f32 = gr.iter().sum();
                d.iter_mut().zip(yr.iter().zip(gr)).for_each(|(d, (y, g))| *d = g - y.exp() * sum);
            }
            grads.accumulate(x.id(), gx);
            Ok(())
        }))
    }

    /// Divides each row (last dimension) by its L2 norm (CLIP embeddings).
    pub fn l2_normalize(&self) -> Result<Tensor> {
        let n = last_dim(self, "l2_normalize")?;
        let norms: Vec<f32> = self.data().chunks(n).map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12)).collect();
        let out: Vec<f32> = self.data().chunks(n).zip(&norms).flat_map(|(r, s)| r.iter().map(move |v| v / s)).collect();
        let x = self.clone();
        let y = std::sync::Arc::new(out);
        let y_saved = y.clone();
        Ok(Tensor::from_op_shared(y, self.shape().to_vec(), &[self], move |g, grads| {
            // dx = (g − y·(g·y)) / ‖x‖
            let mut gx = vec![0.0; g.len()];
            for (((d, yr), gr), s) in gx.chunks_mut(n).zip(y_saved.chunks(n)).zip(g.chunks(n)).zip(&norms) {
                let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                d.iter_mut().zip(yr.iter().zip(gr)).for_each(|(d, (y, g))| *d = (g - y * dot) / s);
            }
            grads.accumulate(x.id(), gx);
            Ok(())
        }))
    }
}

//! Regularisation and the training loss: dropout and cross-entropy with label smoothing.

use lwta_kernels::philox::uniform_at;

use crate::error::{invalid, shape_err, Result};
use crate::tensor::Tensor;

impl Tensor {
    /// Mean cross-entropy of `[N, C]` logits against class indices, with PyTorch's label smoothing
    /// (the target is `(1 − ε)·onehot + ε/C`).
    pub fn cross_entropy(&self, targets: &[usize], label_smoothing: f32) -> Result<Tensor> {
        let &[n, c] = self.shape() else {
            return shape_err("cross_entropy", format!("logits must be [N, C], got {:?}", self.shape()));
        };
        if targets.len() != n {
            return shape_err("cross_entropy", format!("{} targets for {n} rows of logits", targets.len()));
        }
        if let Some(t) = targets.iter().find(|&&t| t >= c) {
            return invalid("cross_entropy", format!("target class {t} is out of range for {c} classes"));
        }
        if !(0.0..1.0).contains(&label_smoothing) {
            return invalid("cross_entropy", format!("label smoothing must be in [0, 1), got {label_smoothing}"));
        }
        let eps = label_smoothing;
        let mut probs = vec![0.0f32; n * c];
        let mut total = 0.0f64;
        for ((row, p), &t) in self.data().chunks(c).zip(probs.chunks_mut(c)).zip(targets) {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
            let lse = max + sum.ln();
            let mean_logp = row.iter().map(|v| v - lse).sum::<f32>() / c as f32;
            total += (-(1.0 - eps) * (row[t] - lse) - eps * mean_logp) as f64;
            p.iter_mut().zip(row).for_each(|(p, v)| *p = (v - lse).exp());
        }
        let (logits, targets) = (self.clone(), targets.to_vec());
        Ok(Tensor::from_op(vec![(total / n as f64) as f32], vec![], &[self], move |g, grads| {
            let scale = g[0] / n as f32;
            let mut gx = probs;
            for (p, &t) in gx.chunks_mut(c).zip(&targets) {
                p.iter_mut().for_each(|v| *v -= eps / c as f32);
                p[t] -= 1.0 - eps;
                p.iter_mut().for_each(|v| *v *= scale);
            }
            grads.accumulate(logits.id(), gx);
            Ok(())
        }))
    }

    /// Inverted dropout: zeroes each element with probability `p` and scales survivors by `1/(1−p)`.
    /// The mask comes from the Philox stream `(seed, offset)`, so runs are reproducible.
    pub fn dropout(&self, p: f32, seed: u64, offset: u64) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return invalid("dropout", format!("probability must be in [0, 1), got {p}"));
        }
        if p == 0.0 {
            return Ok(self.clone());
        }
        let scale = 1.0 / (1.0 - p);
        let mask: Vec<f32> = (0..self.len() as u64).map(|e| if uniform_at(seed, offset, e) < p { 0.0 } else { scale }).collect();
        let out = self.data().iter().zip(&mask).map(|(x, m)| x * m).collect();
        let x = self.clone();
        Ok(Tensor::from_op(out, self.shape().to_vec(), &[self], move |g, grads| {
            grads.accumulate(x.id(), g.iter().zip(&mask).map(|(g, m)| g * m).collect());
            Ok(())
        }))
    }
}

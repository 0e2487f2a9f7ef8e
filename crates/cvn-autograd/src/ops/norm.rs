//! Normalisation: layer norm over the last dimension, batch norm over NCHW channels.

use rayon::prelude::*;

use crate::error::{shape_err, Result};
use crate::tensor::Tensor;

impl Tensor {
    /// Layer norm over the last dimension with affine `weight`/`bias` of that size (as `nn.LayerNorm`).
    pub fn layer_norm(&self, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
        let n = *self.shape().last().unwrap_or(&0);
        if n == 0 || weight.shape() != [n] || bias.shape() != [n] {
            return shape_err(
                "layer_norm",
                format!("input {:?} needs weight and bias [{n}], got {:?} and {:?}", self.shape(), weight.shape(), bias.shape()),
            );
        }
        let rows = self.len() / n;
        let (w, b) = (weight.data(), bias.data());
        let mut out = vec![0.0f32; self.len()];
        let mut xhat = vec![0.0f32; self.len()];
        let mut rstd = vec![0.0f32; rows];
        out.par_chunks_mut(n)
            .zip(xhat.par_chunks_mut(n))
            .zip(rstd.par_iter_mut())
            .zip(self.data().par_chunks(n))
            .with_min_len(32)
            .for_each(|(((o, xh), rs), x)| {
                let mean = x.iter().sum::<f32>() / n as f32;
                let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
                *rs = 1.0 / (var + eps).sqrt();
                for i in 0..n {
                    xh[i] = (x[i] - mean) * *rs;
                    o[i] = xh[i] * w[i] + b[i];
                }
            });
        let (x_in, w_in, b_in) = (self.clone(), weight.clone(), bias.clone());
        Ok(Tensor::from_op(out, self.shape().to_vec(), &[self, weight, bias], move |g, grads| {
            let w = w_in.data();
            if x_in.requires_grad() {
                // dx = rstd · (dxh − mean(dxh) − xh·mean(dxh·xh)), dxh = g·w
                let mut gx = vec![0.0f32; g.len()];
                gx.par_chunks_mut(n).zip(g.par_chunks(n)).zip(xhat.par_chunks(n)).zip(rstd.par_iter()).with_min_len(32).for_each(
                    |(((d, g), xh), rs)| {
                        let (mut m1, mut m2) = (0.0f32, 0.0f32);
                        for i in 0..n {
                            let dxh = g[i] * w[i];
                            m1 += dxh;
                            m2 += dxh * xh[i];
                        }
                        let (m1, m2) = (m1 / n as f32, m2 / n as f32);
                        for i in 0..n {
                            d[i] = rs * (g[i] * w[i] - m1 - xh[i] * m2);
                        }
                    },
                );
                grads.accumulate(x_in.id(), gx);
            }
            if w_in.requires_grad() || b_in.requires_grad() {
                let (mut gw, mut gb) = (vec![0.0f32; n], vec![0.0f32; n]);
                for (g, xh) in g.chunks(n).zip(xhat.chunks(n)) {
                    for i in 0..n {
                        gw[i] += g[i] * xh[i];
                        gb[i] += g[i];
                    }
                }
                if w_in.requires_grad() {
                    grads.accumulate(w_in.id(), gw);
                }
                if b_in.requires_grad() {
                    grads.accumulate(b_in.id(), gb);
                }
            }
            Ok(())
        }))
    }

    /// 2-D batch norm over `[N, C, H, W]` (as `nn.BatchNorm2d`).
    ///
    /// `Statistics::Batch` normalises with the batch's statistics and returns them (mean and the
    /// *unbiased* variance, which is what PyTorch folds into the running variance);
    /// `Statistics::Running` uses the given running mean/var (evaluation).
    pub fn batch_norm2d(&self, weight: &Tensor, bias: &Tensor, stats: Statistics<'_>, eps: f32) -> Result<(Tensor, Option<BatchStats>)> {
        let [n, c, h, w] = *self.shape() else {
            return shape_err("batch_norm2d", format!("needs [N, C, H, W], got {:?}", self.shape()));
        };
        let hw = h * w;
        for (name, t) in [("weight", weight), ("bias", bias)] {
            if t.shape() != [c] {
                return shape_err("batch_norm2d", format!("{name} {:?} should be [{c}]", t.shape()));
            }
        }
        let count = (n * hw) as f64;
        let x = self.data();
        let (mean, var, batch) = match stats {
            Statistics::Running { mean, var } => {
                if mean.shape() != [c] || var.shape() != [c] {
                    return shape_err("batch_norm2d", format!("running stats {:?}/{:?} should be [{c}]", mean.shape(), var.shape()));
                }
                (mean.to_vec(), var.to_vec(), None)
            }
            Statistics::Batch => {
                if n * hw < 2 {
                    return shape_err("batch_norm2d", "training needs more than one value per channel");
                }
                let sums: Vec<(f64, f64)> = (0..c)
                    .into_par_iter()
                    .map(|ch| {
                        let (mut s, mut s2) = (0.0f64, 0.0f64);
                        for i in 0..n {
                            for &v in &x[(i * c + ch) * hw..(i * c + ch + 1) * hw] {
                                s += v as f64;
                                s2 += (v as f64) * (v as f64);
                            }
                        }
                        (s, s2)
                    })
                    .collect();
                let mean: Vec<f32> = sums.iter().map(|(s, _)| (s / count) as f32).collect();
                let var_biased: Vec<f32> = sums.iter().map(|(s, s2)| ((s2 / count) - (s / count).powi(2)).max(0.0) as f32).collect();
                let var_unbiased = var_biased.iter().map(|v| (*v as f64 * count / (count - 1.0)) as f32).collect();
                (mean.clone(), var_biased, Some(BatchStats { mean, var_unbiased }))
            }
        };
        let rstd: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        let (wd, bd) = (weight.data(), bias.data());
        let mut out = vec![0.0f32; x.len()];
        out.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(plane, (o, xs))| {
            let ch = plane % c;
            let (scale, shift) = (wd[ch] * rstd[ch], bd[ch] - mean[ch] * wd[ch] * rstd[ch]);
            o.iter_mut().zip(xs).for_each(|(o, v)| *o = v * scale + shift);
        });
        let training = batch.is_some();
        let (x_in, w_in, b_in) = (self.clone(), weight.clone(), bias.clone());
        let y = Tensor::from_op(out, self.shape().to_vec(), &[self, weight, bias], move |g, grads| {
            let x = x_in.data();
            let w = w_in.data();
            // Per channel: Σg and Σg·x̂.
            let sums: Vec<(f32, f32)> = (0..c)
                .into_par_iter()
                .map(|ch| {
                    let (mut sg, mut sgx) = (0.0f64, 0.0f64);
                    for i in 0..n {
                        let r = (i * c + ch) * hw..(i * c + ch + 1) * hw;
                        for (gv, xv) in g[r.clone()].iter().zip(&x[r]) {
                            sg += *gv as f64;
                            sgx += (*gv as f64) * ((xv - mean[ch]) * rstd[ch]) as f64;
                        }
                    }
                    (sg as f32, sgx as f32)
                })
                .collect();
            if x_in.requires_grad() {
                let mut gx = vec![0.0f32; x.len()];
                gx.par_chunks_mut(hw).enumerate().for_each(|(plane, d)| {
                    let ch = plane % c;
                    let (sg, sgx) = sums[ch];
                    let k = w[ch] * rstd[ch];
                    let r = plane * hw..(plane + 1) * hw;
                    for ((d, gv), xv) in d.iter_mut().zip(&g[r.clone()]).zip(&x[r]) {
                        *d = if training {
                            let xh = (xv - mean[ch]) * rstd[ch];
                            k * (gv - sg / count as f32 - xh * sgx / count as f32)
                        } else {
                            k * gv
                        };
                    }
                });
                grads.accumulate(x_in.id(), gx);
            }
            if w_in.requires_grad() {
                grads.accumulate(w_in.id(), sums.iter().map(|s| s.1).collect());
            }
            if b_in.requires_grad() {
                grads.accumulate(b_in.id(), sums.iter().map(|s| s.0).collect());
            }
            Ok(())
        });
        Ok((y, batch))
    }
}

/// Which statistics batch norm normalises with.
#[derive(Debug, Clone, Copy)]
pub enum Statistics<'a> {
    /// The current batch's (training).
    Batch,
    /// Running estimates (evaluation).
    Running { mean: &'a Tensor, var: &'a Tensor },
}

/// A batch's per-channel statistics, to fold into running estimates.
#[derive(Debug, Clone)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    pub var_unbiased: Vec<f32>,
}

impl BatchStats {
    /// PyTorch's update: `running = (1 − momentum)·running + momentum·batch`.
    pub fn update_running(&self, running_mean: &mut Tensor, running_var: &mut Tensor, momentum: f32) {
        running_mean.update_data(|m| m.iter_mut().zip(&self.mean).for_each(|(r, b)| *r = (1.0 - momentum) * *r + momentum * b));
        running_var.update_data(|v| v.iter_mut().zip(&self.var_unbiased).for_each(|(r, b)| *r = (1.0 - momentum) * *r + momentum * b));
    }
}

use rayon::prelude::*;

use super::{BnGeom, NormOps};
use crate::cpu::CpuStorage;
use crate::error::Result;
use crate::storage::BackendStorage;

/// Rows per rayon task for row-wise loops.
const ROWS_PER_TASK: usize = 32;

impl NormOps for CpuStorage {
    fn layer_norm(&self, weight: &Self, bias: &Self, rows: usize, n: usize, eps: f32) -> Result<(Self, Self, Self)> {
        let (x, w, b) = (self.floats("layer_norm")?, weight.floats("layer_norm")?, bias.floats("layer_norm")?);
        let mut out = vec![0.0f32; rows * n];
        let mut mean = vec![0.0f32; rows];
        let mut rstd = vec![0.0f32; rows];
        out.par_chunks_mut(n).zip(mean.par_iter_mut().zip(rstd.par_iter_mut())).zip(x.par_chunks(n)).with_min_len(ROWS_PER_TASK).for_each(
            |((o, (mu, rs)), x)| {
                *mu = x.iter().sum::<f32>() / n as f32;
                let var = x.iter().map(|v| (v - *mu) * (v - *mu)).sum::<f32>() / n as f32;
                *rs = 1.0 / (var + eps).sqrt();
                for i in 0..n {
                    o[i] = (x[i] - *mu) * *rs * w[i] + b[i];
                }
            },
        );
        Ok((CpuStorage::from_floats(out, self.dtype()), CpuStorage::F32(mean), CpuStorage::F32(rstd)))
    }

    fn layer_norm_backward(
        &self,
        weight: &Self,
        mean: &Self,
        rstd: &Self,
        grad: &Self,
        rows: usize,
        n: usize,
        need: [bool; 3],
    ) -> Result<(Option<Self>, Option<Self>, Option<Self>)> {
        let (x, w, g) = (self.floats("layer_norm")?, weight.floats("layer_norm")?, grad.floats("layer_norm")?);
        let (mean, rstd) = (mean.floats("layer_norm")?, rstd.floats("layer_norm")?);
        let xhat = |r: usize, i: usize| (x[r * n + i] - mean[r]) * rstd[r];
        let gx = need[0].then(|| {
            // dx = rstd · (dxh − mean(dxh) − xh·mean(dxh·xh)), dxh = g·w
            let mut gx = vec![0.0f32; rows * n];
            gx.par_chunks_mut(n).zip(g.par_chunks(n)).enumerate().with_min_len(ROWS_PER_TASK).for_each(|(r, (d, g))| {
                let (mut m1, mut m2) = (0.0f32, 0.0f32);
                for i in 0..n {
                    let dxh = g[i] * w[i];
                    m1 += dxh;
                    m2 += dxh * xhat(r, i);
                }
                let (m1, m2) = (m1 / n as f32, m2 / n as f32);
                for i in 0..n {
                    d[i] = rstd[r] * (g[i] * w[i] - m1 - xhat(r, i) * m2);
                }
            });
            CpuStorage::from_floats(gx, grad.dtype())
        });
        let (gw, gb) = if need[1] || need[2] {
            let (mut gw, mut gb) = (vec![0.0f32; n], vec![0.0f32; n]);
            for (r, g) in g.chunks(n).enumerate() {
                for i in 0..n {
                    gw[i] += g[i] * xhat(r, i);
                    gb[i] += g[i];
                }
            }
            let dtype = weight.dtype();
            (need[1].then(|| CpuStorage::from_floats(gw, dtype)), need[2].then(|| CpuStorage::from_floats(gb, dtype)))
        } else {
            (None, None)
        };
        Ok((gx, gw, gb))
    }

    fn batch_norm_stats(&self, g: BnGeom) -> Result<(Self, Self)> {
        let x = self.floats("batch_norm2d")?;
        let BnGeom { n, c, hw } = g;
        let count = g.count() as f64;
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
        let mean = sums.iter().map(|(s, _)| (s / count) as f32).collect();
        let var = sums.iter().map(|(s, s2)| ((s2 / count) - (s / count).powi(2)).max(0.0) as f32).collect();
        Ok((CpuStorage::F32(mean), CpuStorage::F32(var)))
    }

    fn batch_norm(&self, weight: &Self, bias: &Self, mean: &Self, var: &Self, g: BnGeom, eps: f32) -> Result<Self> {
        let x = self.floats("batch_norm2d")?;
        let (wd, bd) = (weight.floats("batch_norm2d")?, bias.floats("batch_norm2d")?);
        let (mean, var) = (mean.floats("batch_norm2d")?, var.floats("batch_norm2d")?);
        let mut out = vec![0.0f32; x.len()];
        out.par_chunks_mut(g.hw.max(1)).zip(x.par_chunks(g.hw.max(1))).enumerate().for_each(|(plane, (o, xs))| {
            let ch = plane % g.c;
            let rstd = 1.0 / (var[ch] + eps).sqrt();
            let (scale, shift) = (wd[ch] * rstd, bd[ch] - mean[ch] * wd[ch] * rstd);
            o.iter_mut().zip(xs).for_each(|(o, v)| *o = v * scale + shift);
        });
        Ok(CpuStorage::from_floats(out, self.dtype()))
    }

    fn batch_norm_backward(
        &self,
        weight: &Self,
        mean: &Self,
        var: &Self,
        grad: &Self,
        g: BnGeom,
        eps: f32,
        training: bool,
        need: [bool; 3],
    ) -> Result<(Option<Self>, Option<Self>, Option<Self>)> {
        let (x, w, gr) = (self.floats("batch_norm2d")?, weight.floats("batch_norm2d")?, grad.floats("batch_norm2d")?);
        let (mean, var) = (mean.floats("batch_norm2d")?, var.floats("batch_norm2d")?);
        let BnGeom { n, c, hw } = g;
        let count = g.count() as f32;
        let rstd: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        // Per channel: Σg and Σg·x̂.
        let sums: Vec<(f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mut sg, mut sgx) = (0.0f64, 0.0f64);
                for i in 0..n {
                    let r = (i * c + ch) * hw..(i * c + ch + 1) * hw;
                    for (gv, xv) in gr[r.clone()].iter().zip(&x[r]) {
                        sg += *gv as f64;
                        sgx += (*gv as f64) * ((xv - mean[ch]) * rstd[ch]) as f64;
                    }
                }
                (sg as f32, sgx as f32)
            })
            .collect();
        let gx = need[0].then(|| {
            let mut gx = vec![0.0f32; x.len()];
            gx.par_chunks_mut(hw.max(1)).enumerate().for_each(|(plane, d)| {
                let ch = plane % c;
                let (sg, sgx) = sums[ch];
                let k = w[ch] * rstd[ch];
                let r = plane * hw..(plane + 1) * hw;
                for ((d, gv), xv) in d.iter_mut().zip(&gr[r.clone()]).zip(&x[r]) {
                    *d = if training {
                        let xh = (xv - mean[ch]) * rstd[ch];
                        k * (gv - sg / count - xh * sgx / count)
                    } else {
                        k * gv
                    };
                }
            });
            CpuStorage::from_floats(gx, grad.dtype())
        });
        let dtype = weight.dtype();
        let gw = need[1].then(|| CpuStorage::from_floats(sums.iter().map(|s| s.1).collect(), dtype));
        let gb = need[2].then(|| CpuStorage::from_floats(sums.iter().map(|s| s.0).collect(), dtype));
        Ok((gx, gw, gb))
    }

    fn batch_norm_update_running(&mut self, running_var: &mut Self, mean: &Self, var: &Self, count: usize, momentum: f32) -> Result<()> {
        let (mean, var) = (mean.floats("update_running")?, var.floats("update_running")?);
        let unbiased = count as f64 / (count as f64 - 1.0).max(1.0);
        self.update_floats("update_running", |m| {
            m.iter_mut().zip(mean.iter()).for_each(|(r, b)| *r = (1.0 - momentum) * *r + momentum * b);
            Ok(())
        })?;
        running_var.update_floats("update_running", |v| {
            v.iter_mut().zip(var.iter()).for_each(|(r, b)| *r = (1.0 - momentum) * *r + momentum * (*b as f64 * unbiased) as f32);
            Ok(())
        })
    }

    fn l2_normalize(&self, rows: usize, n: usize) -> Result<(Self, Self)> {
        let x = self.floats("l2_normalize")?;
        let norms: Vec<f32> = x.chunks(n).map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12)).collect();
        let out: Vec<f32> = x.chunks(n).zip(&norms).flat_map(|(r, s)| r.iter().map(move |v| v / s)).collect();
        debug_assert_eq!(norms.len(), rows);
        Ok((CpuStorage::from_floats(out, self.dtype()), CpuStorage::F32(norms)))
    }

    fn l2_normalize_backward(&self, norms: &Self, grad: &Self, _rows: usize, n: usize) -> Result<Self> {
        let (y, norms, g) = (self.floats("l2_normalize")?, norms.floats("l2_normalize")?, grad.floats("l2_normalize")?);
        let mut gx = vec![0.0; g.len()];
        for (((d, yr), gr), s) in gx.chunks_mut(n).zip(y.chunks(n)).zip(g.chunks(n)).zip(norms.iter()) {
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            d.iter_mut().zip(yr.iter().zip(gr)).for_each(|(d, (y, g))| *d = (g - y * dot) / s);
        }
        Ok(CpuStorage::from_floats(gx, grad.dtype()))
    }
}

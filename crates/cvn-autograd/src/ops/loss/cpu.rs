use lwta_kernels::philox::uniform_at;
use rayon::prelude::*;

use super::LossOps;
use crate::cpu::{CpuStorage, PAR_CHUNK};
use crate::dtype::DType;
use crate::error::{dtype_err, Result};
use crate::ops::softmax::cpu::log_sum_exp;
use crate::storage::BackendStorage;

fn labels(t: &CpuStorage) -> Result<&[u32]> {
    match t {
        CpuStorage::U32(v) => Ok(v),
        other => dtype_err("cross_entropy", format!("targets must be u32, got {}", other.dtype())),
    }
}

impl LossOps for CpuStorage {
    fn cross_entropy(&self, targets: &Self, _n: usize, c: usize, smoothing: f32) -> Result<(Self, Self)> {
        let (x, targets) = (self.floats("cross_entropy")?, labels(targets)?);
        let eps = smoothing;
        let mut probs = vec![0.0f32; x.len()];
        let mut total = 0.0f64;
        for ((row, p), &t) in x.chunks(c).zip(probs.chunks_mut(c)).zip(targets) {
            let lse = log_sum_exp(row);
            let mean_logp = row.iter().map(|v| v - lse).sum::<f32>() / c as f32;
            total += (-(1.0 - eps) * (row[t as usize] - lse) - eps * mean_logp) as f64;
            p.iter_mut().zip(row).for_each(|(p, v)| *p = lwta_kernels::simd::exp_f32(v - lse));
        }
        let n = targets.len().max(1);
        Ok((CpuStorage::F32(vec![(total / n as f64) as f32]), CpuStorage::F32(probs)))
    }

    fn cross_entropy_backward(&self, targets: &Self, grad: &Self, n: usize, c: usize, smoothing: f32, dtype: DType) -> Result<Self> {
        let (targets, g) = (labels(targets)?, grad.floats("cross_entropy")?);
        let scale = g[0] / n as f32;
        let mut gx = self.floats("cross_entropy")?.into_owned();
        for (p, &t) in gx.chunks_mut(c).zip(targets) {
            p.iter_mut().for_each(|v| *v -= smoothing / c as f32);
            p[t as usize] -= 1.0 - smoothing;
            p.iter_mut().for_each(|v| *v *= scale);
        }
        Ok(CpuStorage::from_floats(gx, dtype))
    }

    fn dropout(&self, p: f32, seed: u64, offset: u64) -> Result<Self> {
        let x = self.floats("dropout")?;
        let scale = 1.0 / (1.0 - p);
        let out = x
            .par_iter()
            .enumerate()
            .with_min_len(PAR_CHUNK)
            .map(|(e, v)| v * if uniform_at(seed, offset, e as u64) < p { 0.0 } else { scale })
            .collect();
        Ok(CpuStorage::from_floats(out, self.dtype()))
    }
}

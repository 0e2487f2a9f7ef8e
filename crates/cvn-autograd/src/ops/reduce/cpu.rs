use rayon::prelude::*;

use super::{split_at_dim, ReduceOps};
use crate::cpu::CpuStorage;
use crate::error::{shape_err, Result};
use crate::shape::{broadcast_strides, for_each_mapped, trailing_match};
use crate::storage::BackendStorage;

impl ReduceOps for CpuStorage {
    fn sum_to(&self, from: &[usize], to: &[usize], scale: f32) -> Result<Self> {
        if from.len() != to.len() || from.iter().zip(to).any(|(f, t)| *t != *f && *t != 1) {
            return shape_err("sum", format!("cannot sum {from:?} down to {to:?}"));
        }
        let x = self.floats("sum")?;
        let n: usize = to.iter().product();
        let reduced: Vec<usize> = (0..from.len()).filter(|&d| from[d] != to[d]).collect();
        let out = if n == 1 {
            // Everything into one value: in f64, so long sums keep their precision, over fixed
            // chunks summed in order, so the result does not depend on thread scheduling.
            let partial: Vec<f64> = x.par_chunks(1 << 15).map(|c| c.iter().map(|&v| v as f64).sum::<f64>()).collect();
            vec![(partial.iter().sum::<f64>() * scale as f64) as f32]
        } else if let [d] = reduced[..] {
            sum_one_dim(&x, split_at_dim(from, d), scale)
        } else {
            let mut acc = vec![0.0f32; n];
            if trailing_match(from, to) {
                // `to` is a trailing block of `from` (a bias over rows): add the rows up.
                for chunk in x.chunks_exact(n) {
                    acc.iter_mut().zip(chunk).for_each(|(a, g)| *a += g);
                }
            } else {
                let st = broadcast_strides(to, from);
                for_each_mapped(from, &st, |o, s| acc[s] += x[o]);
            }
            if scale != 1.0 {
                acc.iter_mut().for_each(|v| *v *= scale);
            }
            acc
        };
        Ok(CpuStorage::from_floats(out, self.dtype()))
    }
}

/// Sum over the middle of `(outer, size, inner)`, times `scale`.
fn sum_one_dim(x: &[f32], (outer, size, inner): (usize, usize, usize), scale: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; outer * inner];
    out.par_chunks_mut(inner.max(1)).enumerate().with_min_len((1 << 14) / (size * inner).max(1) + 1).for_each(|(o, dst)| {
        for s in 0..size {
            let src = &x[(o * size + s) * inner..(o * size + s + 1) * inner];
            dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
        }
        dst.iter_mut().for_each(|v| *v *= scale);
    });
    out
}

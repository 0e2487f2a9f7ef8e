use lwta_kernels::philox::ln_f32;
use lwta_kernels::simd::{self, load_padded, store_partial, Simd};
use rayon::prelude::*;

use super::SoftmaxOps;
use crate::cpu::CpuStorage;
use crate::error::Result;
use crate::storage::BackendStorage;

/// Rows per rayon task for row-wise ops.
const ROWS_PER_TASK: usize = 64;

/// `row[i] = exp(row[i]·scale − shift)`, vectorised with the workspace's one SIMD `exp`.
struct ExpShifted<'a> {
    row: &'a mut [f32],
    scale: f32,
    shift: f32,
}

impl simd::Kernel for ExpShifted<'_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let (scale, shift) = (s.splat(self.scale), s.splat(self.shift));
        for i in (0..self.row.len()).step_by(S::LANES) {
            let end = (i + S::LANES).min(self.row.len());
            let v = load_padded(s, &self.row[i..end], 0.0);
            store_partial(s, &mut self.row[i..end], simd::exp(s, s.sub(s.mul(v, scale), shift)));
        }
    }
}

/// `row ← softmax(row·scale)` in place (`scale > 0`); the shared row kernel of softmax, attention
/// and the loss.
pub(crate) fn softmax_row(row: &mut [f32], scale: f32) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) * scale;
    simd::run(ExpShifted { row: &mut *row, scale, shift: max });
    let sum: f32 = row.iter().sum();
    row.iter_mut().for_each(|v| *v /= sum);
}

/// `ln Σ exp(row)`, stably.
pub(crate) fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let sum: f32 = row.iter().map(|v| simd::exp_f32(v - max)).sum();
    max + ln_f32(sum)
}

impl SoftmaxOps for CpuStorage {
    fn softmax(&self, _rows: usize, n: usize, log: bool) -> Result<Self> {
        let mut out = self.floats("softmax")?.into_owned();
        out.par_chunks_mut(n * ROWS_PER_TASK).for_each(|c| {
            for r in c.chunks_mut(n) {
                if log {
                    let lse = log_sum_exp(r);
                    r.iter_mut().for_each(|v| *v -= lse);
                } else {
                    softmax_row(r, 1.0);
                }
            }
        });
        Ok(CpuStorage::from_floats(out, self.dtype()))
    }

    fn softmax_backward(&self, grad: &Self, _rows: usize, n: usize, log: bool) -> Result<Self> {
        let (y, g) = (self.floats("softmax")?, grad.floats("softmax")?);
        let mut gx = vec![0.0; g.len()];
        gx.par_chunks_mut(n * ROWS_PER_TASK).zip(y.par_chunks(n * ROWS_PER_TASK).zip(g.par_chunks(n * ROWS_PER_TASK))).for_each(
            |(dst, (yc, gc))| {
                for ((d, yr), gr) in dst.chunks_mut(n).zip(yc.chunks(n)).zip(gc.chunks(n)) {
                    if log {
                        let sum: f32 = gr.iter().sum();
                        d.iter_mut().zip(yr.iter().zip(gr)).for_each(|(d, (y, g))| *d = g - simd::exp_f32(*y) * sum);
                    } else {
                        let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                        d.iter_mut().zip(yr.iter().zip(gr)).for_each(|(d, (y, g))| *d = y * (g - dot));
                    }
                }
            },
        );
        Ok(CpuStorage::from_floats(gx, grad.dtype()))
    }
}

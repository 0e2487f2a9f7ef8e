use rayon::prelude::*;

use super::{AdamStep, OptimizerOps, SgdStep};
use crate::cpu::CpuStorage;
use crate::error::Result;

/// Elements per rayon task (a few arithmetic operations per element).
const CHUNK: usize = 1 << 14;

impl OptimizerOps for CpuStorage {
    fn adamw_step(&mut self, grad: &Self, m: &mut Self, v: &mut Self, h: &AdamStep) -> Result<()> {
        let g = grad.floats("AdamW")?;
        let (m, v) = (m.f32_mut("AdamW")?, v.f32_mut("AdamW")?);
        let p = self.f32_mut("AdamW")?;
        let AdamStep { lr, beta1: b1, beta2: b2, eps, weight_decay: wd, step_size, bias_correction2_sqrt: bc2 } = *h;
        p.par_chunks_mut(CHUNK).zip(m.par_chunks_mut(CHUNK)).zip(v.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK))).for_each(
            |((p, m), (v, g))| {
                for i in 0..p.len() {
                    p[i] *= 1.0 - lr * wd;
                    m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                    v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                    p[i] -= step_size * m[i] / (v[i].sqrt() / bc2 + eps);
                }
            },
        );
        Ok(())
    }

    fn sgd_step(&mut self, grad: &Self, buf: Option<&mut Self>, h: &SgdStep) -> Result<()> {
        let g = grad.floats("SGD")?;
        let SgdStep { lr, weight_decay: wd, momentum, first } = *h;
        let p = self.f32_mut("SGD")?;
        match buf {
            None => p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(p, g)| {
                for i in 0..p.len() {
                    p[i] -= lr * (g[i] + wd * p[i]);
                }
            }),
            Some(buf) => {
                let buf = buf.f32_mut("SGD")?;
                p.par_chunks_mut(CHUNK).zip(buf.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK))).for_each(|(p, (b, g))| {
                    for i in 0..p.len() {
                        let d = g[i] + wd * p[i];
                        b[i] = if first { d } else { momentum * b[i] + d };
                        p[i] -= lr * b[i];
                    }
                })
            }
        }
        Ok(())
    }
}

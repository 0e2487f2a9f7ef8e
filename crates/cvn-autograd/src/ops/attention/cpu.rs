use rayon::prelude::*;

use super::{AttentionGeom, AttentionOps, Part};
use crate::cpu::gemm::{gemm, Mat};
use crate::cpu::CpuStorage;
use crate::error::Result;
use crate::ops::softmax::cpu::softmax_row;
use crate::storage::BackendStorage;

impl AttentionGeom {
    /// Head `h` of image `b` of a part, as a `[T, hd]` matrix view into rows of `row` floats.
    fn view<'a>(&self, data: &'a [f32], part: Part, b: usize, h: usize) -> Mat<'a> {
        let row = self.rows[part.input];
        Mat::strided(&data[b * self.t * row + part.offset + h * self.hd..], self.t, self.hd, row, 1)
    }
}

/// Copies (or adds) a contiguous `[T, hd]` block into head columns `offset..` of a `[T, row]` slice.
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

impl AttentionOps for CpuStorage {
    fn attention(inputs: &[&Self], g: &AttentionGeom) -> Result<(Self, Self)> {
        let data: Vec<_> = inputs.iter().map(|s| s.floats("attention")).collect::<Result<_>>()?;
        let scale = 1.0 / (g.hd as f32).sqrt();
        let tt = g.t * g.t;
        let mut probs = vec![0.0f32; g.b * g.heads * tt];
        let mut out = vec![0.0f32; g.b * g.t * g.c];
        let view = |p: Part, b, h| g.view(&data[p.input], p, b, h);
        out.par_chunks_mut(g.t * g.c).zip(probs.par_chunks_mut(g.heads * tt)).enumerate().try_for_each(|(b, (o, pb))| -> Result<()> {
            let mut head_out = vec![0.0f32; g.t * g.hd];
            for h in 0..g.heads {
                let p = &mut pb[h * tt..(h + 1) * tt];
                gemm(view(g.parts[0], b, h), view(g.parts[1], b, h).t(), p, 0.0)?;
                for (i, r) in p.chunks_mut(g.t).enumerate() {
                    let visible = if g.causal { i + 1 } else { g.t };
                    softmax_row(&mut r[..visible], scale);
                    r[visible..].fill(0.0);
                }
                gemm(Mat::new(p, g.t, g.t), view(g.parts[2], b, h), &mut head_out, 0.0)?;
                scatter_head(o, g.c, h * g.hd, &head_out, g.hd, false);
            }
            Ok(())
        })?;
        Ok((CpuStorage::from_floats(out, inputs[0].dtype()), CpuStorage::F32(probs)))
    }

    fn attention_backward(inputs: &[&Self], g: &AttentionGeom, probs: &Self, grad: &Self, need: &[bool]) -> Result<Vec<Option<Self>>> {
        let data: Vec<_> = inputs.iter().map(|s| s.floats("attention")).collect::<Result<_>>()?;
        let (probs, grad) = (probs.floats("attention")?, grad.floats("attention")?);
        let scale = 1.0 / (g.hd as f32).sqrt();
        let tt = g.t * g.t;
        let view = |p: Part, b, h| g.view(&data[p.input], p, b, h);
        let mut d_inputs: Vec<Vec<f32>> = data.iter().map(|d| vec![0.0f32; d.len()]).collect();
        // One task per image: it owns that image's rows of every input gradient.
        let mut per_image: Vec<Vec<&mut [f32]>> = (0..g.b).map(|_| Vec::new()).collect();
        for (d, &row) in d_inputs.iter_mut().zip(&g.rows) {
            for (b, chunk) in d.chunks_mut(g.t * row).enumerate() {
                per_image[b].push(chunk);
            }
        }
        let [pq, pk, pv] = g.parts;
        per_image.par_iter_mut().enumerate().try_for_each(|(b, dst)| -> Result<()> {
            let (mut dp, mut tmp) = (vec![0.0f32; tt], vec![0.0f32; g.t * g.hd]);
            for h in 0..g.heads {
                let p = &probs[(b * g.heads + h) * tt..][..tt];
                let dout = Mat::strided(&grad[b * g.t * g.c + h * g.hd..], g.t, g.hd, g.c, 1);
                // dV = Pᵀ·dO
                gemm(Mat::new(p, g.t, g.t).t(), dout, &mut tmp, 0.0)?;
                scatter_head(dst[pv.input], g.rows[pv.input], pv.offset + h * g.hd, &tmp, g.hd, true);
                // dS = P ⊙ (dP − Σ dP⊙P) · scale, with dP = dO·Vᵀ
                gemm(dout, view(pv, b, h).t(), &mut dp, 0.0)?;
                for (dr, pr) in dp.chunks_mut(g.t).zip(p.chunks(g.t)) {
                    let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
                    dr.iter_mut().zip(pr).for_each(|(d, p)| *d = p * (*d - dot) * scale);
                }
                // dQ = dS·K, dK = dSᵀ·Q
                gemm(Mat::new(&dp, g.t, g.t), view(pk, b, h), &mut tmp, 0.0)?;
                scatter_head(dst[pq.input], g.rows[pq.input], pq.offset + h * g.hd, &tmp, g.hd, true);
                gemm(Mat::new(&dp, g.t, g.t).t(), view(pq, b, h), &mut tmp, 0.0)?;
                scatter_head(dst[pk.input], g.rows[pk.input], pk.offset + h * g.hd, &tmp, g.hd, true);
            }
            Ok(())
        })?;
        Ok(d_inputs
            .into_iter()
            .zip(inputs.iter().zip(need))
            .map(|(d, (s, &need))| need.then(|| CpuStorage::from_floats(d, s.dtype())))
            .collect())
    }
}

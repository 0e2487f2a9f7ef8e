//! Attention as cuBLAS GEMMs and the softmax kernels: per head, `S = Q·Kᵀ` (batched over the
//! images, heads read in place through strides), the scaled, optionally causal softmax over the
//! f32 score rows, `O = P·V` written into the head's columns. bf16 inputs are widened to f32
//! first and the results rounded once, as the CPU backend computes.

use super::{AttentionGeom, AttentionOps, Part};
use crate::cuda::{CudaStorage, Operand, RowMajor, RowMajorMut};
use crate::dtype::DType;
use crate::error::Result;
use crate::storage::{BackendDevice, BackendStorage};

/// An input as f32: itself, or its widened copy.
enum Wide<'a> {
    Same(&'a CudaStorage),
    Widened(CudaStorage),
}

impl std::ops::Deref for Wide<'_> {
    type Target = CudaStorage;
    fn deref(&self) -> &CudaStorage {
        match self {
            Wide::Same(s) => s,
            Wide::Widened(s) => s,
        }
    }
}

fn f32_copy(s: &CudaStorage) -> Result<Wide<'_>> {
    Ok(if s.dtype() == DType::F32 { Wide::Same(s) } else { Wide::Widened(s.cast(DType::F32)?) })
}

fn finish(s: CudaStorage, dtype: DType) -> Result<CudaStorage> {
    if dtype == DType::F32 {
        Ok(s)
    } else {
        s.cast(dtype)
    }
}

impl AttentionGeom {
    /// Head `h` of a part: `[T, hd]` matrices, one per image.
    fn head(&self, part: Part, h: usize) -> Operand {
        let row = self.rows[part.input];
        Operand { offset: part.offset + h * self.hd, row_stride: row, col_stride: 1, batch_stride: self.t * row }
    }

    /// Head `h`'s `[T, T]` blocks of `[B, heads, T, T]` scores.
    fn scores(&self, h: usize) -> Operand {
        Operand::rows(self.t, self.heads * self.t * self.t).at(h * self.t * self.t)
    }

    /// Head `h`'s columns of the `[B, T, C]` output.
    fn out_head(&self, h: usize) -> Operand {
        Operand { offset: h * self.hd, row_stride: self.c, col_stride: 1, batch_stride: self.t * self.c }
    }

    fn causal_t(&self) -> usize {
        if self.causal {
            self.t
        } else {
            0
        }
    }
}

impl AttentionOps for CudaStorage {
    fn attention(inputs: &[&Self], g: &AttentionGeom) -> Result<(Self, Self)> {
        let dtype = inputs[0].dtype();
        let wide: Vec<Wide<'_>> = inputs.iter().map(|s| f32_copy(s)).collect::<Result<_>>()?;
        let dev = inputs[0].dev();
        let (b, t, hd) = (g.b, g.t, g.hd);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut probs = dev.alloc(DType::F32, b * g.heads * t * t)?;
        let mut out = dev.alloc(DType::F32, b * t * g.c)?;
        let [pq, pk, pv] = g.parts;
        for h in 0..g.heads {
            let (q, k) = (
                RowMajor { storage: &wide[pq.input], view: g.head(pq, h) },
                RowMajor { storage: &wide[pk.input], view: g.head(pk, h).t() },
            );
            dev.gemm(b, t, t, hd, q, k, RowMajorMut { storage: &mut probs, view: g.scores(h) }, 0.0)?;
        }
        probs.softmax_rows(&probs, b * g.heads * t, t, false, scale, g.causal_t())?;
        for h in 0..g.heads {
            let (p, v) = (RowMajor { storage: &probs, view: g.scores(h) }, RowMajor { storage: &wide[pv.input], view: g.head(pv, h) });
            dev.gemm(b, t, hd, t, p, v, RowMajorMut { storage: &mut out, view: g.out_head(h) }, 0.0)?;
        }
        Ok((finish(out, dtype)?, probs))
    }

    fn attention_backward(inputs: &[&Self], g: &AttentionGeom, probs: &Self, grad: &Self, need: &[bool]) -> Result<Vec<Option<Self>>> {
        let dtype = inputs[0].dtype();
        let wide: Vec<Wide<'_>> = inputs.iter().map(|s| f32_copy(s)).collect::<Result<_>>()?;
        let dout = f32_copy(grad)?;
        let dev = inputs[0].dev();
        let (b, t, hd) = (g.b, g.t, g.hd);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut d: Vec<CudaStorage> = inputs.iter().map(|s| dev.zeros(DType::F32, s.len())).collect::<Result<_>>()?;
        let [pq, pk, pv] = g.parts;
        let mut dp = dev.alloc(DType::F32, b * g.heads * t * t)?;
        for h in 0..g.heads {
            let go = RowMajor { storage: &dout, view: g.out_head(h) };
            if need[pv.input] {
                // dV = Pᵀ·dO
                let p = RowMajor { storage: probs, view: g.scores(h).t() };
                dev.gemm(b, t, hd, t, p, go, RowMajorMut { storage: &mut d[pv.input], view: g.head(pv, h) }, 1.0)?;
            }
            // dP = dO·Vᵀ
            let v = RowMajor { storage: &wide[pv.input], view: g.head(pv, h).t() };
            dev.gemm(b, t, t, hd, go, v, RowMajorMut { storage: &mut dp, view: g.scores(h) }, 0.0)?;
        }
        // dS = P ⊙ (dP − Σ dP⊙P)·scale, in place
        probs.softmax_rows_backward(&dp, &dp, b * g.heads * t, t, false, scale)?;
        for h in 0..g.heads {
            if need[pq.input] {
                // dQ = dS·K
                let (ds, k) = (RowMajor { storage: &dp, view: g.scores(h) }, RowMajor { storage: &wide[pk.input], view: g.head(pk, h) });
                dev.gemm(b, t, hd, t, ds, k, RowMajorMut { storage: &mut d[pq.input], view: g.head(pq, h) }, 1.0)?;
            }
            if need[pk.input] {
                // dK = dSᵀ·Q
                let (ds, q) =
                    (RowMajor { storage: &dp, view: g.scores(h).t() }, RowMajor { storage: &wide[pq.input], view: g.head(pq, h) });
                dev.gemm(b, t, hd, t, ds, q, RowMajorMut { storage: &mut d[pk.input], view: g.head(pk, h) }, 1.0)?;
            }
        }
        d.into_iter().zip(need).map(|(s, &need)| if need { finish(s, dtype).map(Some) } else { Ok(None) }).collect()
    }
}

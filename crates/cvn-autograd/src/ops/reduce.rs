//! Sums and means, over everything or over one dimension.

use crate::error::Result;
use crate::tensor::Tensor;

/// Splits `shape` around `dim` into (outer, size of dim, inner).
pub(crate) fn split_at_dim(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (shape[..dim].iter().product(), shape[dim], shape[dim + 1..].iter().product())
}

impl Tensor {
    /// Sum of all elements (0-d).
    pub fn sum_all(&self) -> Tensor {
        self.scaled_total(1.0)
    }

    /// Mean of all elements (0-d).
    pub fn mean_all(&self) -> Tensor {
        self.scaled_total(1.0 / self.len().max(1) as f32)
    }

    fn scaled_total(&self, scale: f32) -> Tensor {
        let total = self.data().iter().map(|&v| v as f64).sum::<f64>() as f32 * scale;
        let (x, n) = (self.clone(), self.len());
        Tensor::from_op(vec![total], vec![], &[self], move |g, grads| {
            grads.accumulate(x.id(), vec![g[0] * scale; n]);
            Ok(())
        })
    }

    /// Sum over `dim` (negative counts from the end); `keepdim` keeps it with size 1.
    pub fn sum_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.scaled_dim(dim, keepdim, false)
    }

    /// Mean over `dim`.
    pub fn mean_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.scaled_dim(dim, keepdim, true)
    }

    fn scaled_dim(&self, dim: isize, keepdim: bool, mean: bool) -> Result<Tensor> {
        let d = self.axis(dim)?;
        let (outer, size, inner) = split_at_dim(self.shape(), d);
        let scale = if mean { 1.0 / size.max(1) as f32 } else { 1.0 };
        let x = self.data();
        let mut out = vec![0.0f32; outer * inner];
        for o in 0..outer {
            let dst = &mut out[o * inner..(o + 1) * inner];
            for s in 0..size {
                let src = &x[(o * size + s) * inner..(o * size + s + 1) * inner];
                dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
            }
            dst.iter_mut().for_each(|v| *v *= scale);
        }
        let mut shape = self.shape().to_vec();
        if keepdim {
            shape[d] = 1;
        } else {
            shape.remove(d);
        }
        let input = self.clone();
        Ok(Tensor::from_op(out, shape, &[self], move |g, grads| {
            let mut gx = vec![0.0f32; outer * size * inner];
            for o in 0..outer {
                for s in 0..size {
                    let dst = &mut gx[(o * size + s) * inner..(o * size + s + 1) * inner];
                    dst.iter_mut().zip(&g[o * inner..(o + 1) * inner]).for_each(|(a, b)| *a = b * scale);
                }
            }
            grads.accumulate(input.id(), gx);
            Ok(())
        }))
    }
}

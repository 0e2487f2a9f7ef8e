//! Pooling: max-pool (ResNet stem) and global average pool (ResNet head).

use rayon::prelude::*;

use crate::error::{shape_err, Result};
use crate::tensor::Tensor;

impl Tensor {
    /// Max-pool over `[N, C, H, W]` with a square window, stride and implicit −∞ padding (as
    /// `nn.MaxPool2d`). The gradient goes to the first maximum of each window.
    pub fn max_pool2d(&self, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
        let &[n, c, h, w] = self.shape() else {
            return shape_err("max_pool2d", format!("needs [N, C, H, W], got {:?}", self.shape()));
        };
        if kernel == 0 || stride == 0 || 2 * padding > kernel || h + 2 * padding < kernel || w + 2 * padding < kernel {
            return shape_err("max_pool2d", format!("kernel {kernel}, stride {stride}, padding {padding} do not fit {:?}", self.shape()));
        }
        let ho = (h + 2 * padding - kernel) / stride + 1;
        let wo = (w + 2 * padding - kernel) / stride + 1;
        let x = self.data();
        let mut out = vec![0.0f32; n * c * ho * wo];
        let mut argmax = vec![0u32; out.len()];
        out.par_chunks_mut(ho * wo).zip(argmax.par_chunks_mut(ho * wo)).enumerate().for_each(|(plane, (o, a))| {
            let src = &x[plane * h * w..(plane + 1) * h * w];
            for oy in 0..ho {
                for ox in 0..wo {
                    let (mut best, mut at, mut found) = (f32::NEG_INFINITY, 0usize, false);
                    for ky in 0..kernel {
                        let iy = (oy * stride + ky) as isize - padding as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..kernel {
                            let ix = (ox * stride + kx) as isize - padding as isize;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let i = iy as usize * w + ix as usize;
                            if !found || src[i] > best {
                                (best, at, found) = (src[i], i, true);
                            }
                        }
                    }
                    o[oy * wo + ox] = best;
                    a[oy * wo + ox] = at as u32;
                }
            }
        });
        let input = self.clone();
        Ok(Tensor::from_op(out, vec![n, c, ho, wo], &[self], move |g, grads| {
            let mut gx = vec![0.0f32; n * c * h * w];
            gx.par_chunks_mut(h * w).enumerate().for_each(|(plane, d)| {
                let r = plane * ho * wo..(plane + 1) * ho * wo;
                for (gv, &i) in g[r.clone()].iter().zip(&argmax[r]) {
                    d[i as usize] += gv;
                }
            });
            grads.accumulate(input.id(), gx);
            Ok(())
        }))
    }

    /// Mean over the spatial dims of `[N, C, H, W]`, giving `[N, C]`.
    pub fn global_avg_pool2d(&self) -> Result<Tensor> {
        let &[n, c, h, w] = self.shape() else {
            return shape_err("global_avg_pool2d", format!("needs [N, C, H, W], got {:?}", self.shape()));
        };
        self.reshape(&[n, c, h * w])?.mean_dim(-1, false)
    }
}

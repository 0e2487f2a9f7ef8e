//! Pooling: max-pool (ResNet stem) and global average pool (ResNet head).

use crate::error::{shape_err, Result};
use crate::ops::check_float;
use crate::storage::{dispatch, Storage};
use crate::tensor::Tensor;

mod cpu;
mod cuda;

/// A square max-pool window over `[N, C, H, W]` planes (`planes = N·C`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolGeom {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub ho: usize,
    pub wo: usize,
}

/// The kernels of this op family (see [`crate::storage`]).
pub(crate) trait PoolOps: Sized {
    fn max_pool2d(&self, g: &PoolGeom) -> Result<Self>;
    /// Each window's gradient goes to its first maximum (found again from `self`, the input).
    fn max_pool2d_backward(&self, grad: &Self, g: &PoolGeom) -> Result<Self>;
}

impl Tensor {
    /// Max-pool over `[N, C, H, W]` with a square window, stride and implicit −∞ padding (as
    /// `nn.MaxPool2d`). The gradient goes to the first maximum of each window.
    pub fn max_pool2d(&self, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
        check_float("max_pool2d", self)?;
        let &[n, c, h, w] = self.shape() else {
            return shape_err("max_pool2d", format!("needs [N, C, H, W], got {:?}", self.shape()));
        };
        if kernel == 0 || stride == 0 || 2 * padding > kernel || h + 2 * padding < kernel || w + 2 * padding < kernel {
            return shape_err("max_pool2d", format!("kernel {kernel}, stride {stride}, padding {padding} do not fit {:?}", self.shape()));
        }
        let ho = (h + 2 * padding - kernel) / stride + 1;
        let wo = (w + 2 * padding - kernel) / stride + 1;
        let g = PoolGeom { planes: n * c, h, w, kernel, stride, padding, ho, wo };
        let out: Storage = dispatch!("max_pool2d", (self.storage()) => |x| x.max_pool2d(&g))?;
        let input = self.clone();
        Ok(Tensor::from_op(out, vec![n, c, ho, wo], &[self], move |grad, grads| {
            let gx: Storage = dispatch!("max_pool2d", (input.storage(), grad.storage()) => |x, gs| x.max_pool2d_backward(gs, &g))?;
            grads.accumulate(input.id(), Tensor::from_storage(gx, input.shape().to_vec()))
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

//! 2-D convolution (groups = 1, dilation = 1, as ResNet and CLIP use). On the CPU: per image, im2col
//! into an L2-sized buffer + one GEMM (images in parallel; the weight gradient accumulates over
//! chunks of images in order); on CUDA: im2col/col2im kernels + cuBLAS.

use crate::error::{shape_err, Result};
use crate::ops::{check_same_dtype, reduce_to_shape};
use crate::storage::{dispatch, Storage};
use crate::tensor::Tensor;

mod cpu;
mod cuda;

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub o: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
}

/// Images per CUDA chunk keep the unfolded columns around this many floats, so the GEMM is large
/// enough to run at full speed and memory stays bounded at ImageNet sizes.
const COL_BUDGET: usize = 1 << 23;

impl ConvGeom {
    /// Images per CUDA chunk (see [`COL_BUDGET`]).
    pub(crate) fn chunk(&self) -> usize {
        (COL_BUDGET / (self.ckk() * self.hwo()).max(1)).clamp(1, self.n.max(1))
    }

    pub(crate) fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }

    pub(crate) fn hwo(&self) -> usize {
        self.ho * self.wo
    }
}

/// The kernels of this op family (see [`crate::storage`]).
pub(crate) trait ConvOps: Sized {
    /// `[N, O, Ho, Wo]` from input `self` `[N, C, H, W]`, `weight` `[O, C, kh, kw]`, `bias` `[O]`.
    fn conv2d(&self, weight: &Self, bias: Option<&Self>, g: &ConvGeom) -> Result<Self>;
    /// `(dx, dw)` from the output gradient, each computed only when asked for.
    fn conv2d_backward(&self, weight: &Self, grad: &Self, g: &ConvGeom, need_x: bool, need_w: bool)
        -> Result<(Option<Self>, Option<Self>)>;
}

impl Tensor {
    /// Convolution of `[N, C, H, W]` with `weight [O, C, kh, kw]`, optional `bias [O]`, square
    /// stride and zero padding (as `nn.Conv2d` with groups = 1, dilation = 1).
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
        let (&[n, c, h, w], &[o, wc, kh, kw]) = (self.shape(), weight.shape()) else {
            return shape_err("conv2d", format!("input {:?} must be [N,C,H,W] and weight {:?} [O,C,kh,kw]", self.shape(), weight.shape()));
        };
        if wc != c || stride == 0 || h + 2 * padding < kh || w + 2 * padding < kw {
            return shape_err(
                "conv2d",
                format!("input {:?} does not fit weight {:?} with stride {stride}, padding {padding}", self.shape(), weight.shape()),
            );
        }
        let mut inputs = vec![self, weight];
        if let Some(b) = bias {
            if b.shape() != [o] {
                return shape_err("conv2d", format!("bias {:?} should be [{o}]", b.shape()));
            }
            inputs.push(b);
        }
        check_same_dtype("conv2d", &inputs)?;
        let ho = (h + 2 * padding - kh) / stride + 1;
        let wo = (w + 2 * padding - kw) / stride + 1;
        let g = ConvGeom { n, c, o, h, w, kh, kw, stride, pad: padding, ho, wo };
        let out: Storage = match bias {
            Some(b) => dispatch!("conv2d", (self.storage(), weight.storage(), b.storage()) => |x, wt, bs| x.conv2d(wt, Some(bs), &g))?,
            None => dispatch!("conv2d", (self.storage(), weight.storage()) => |x, wt| x.conv2d(wt, None, &g))?,
        };
        let (x_in, w_in, b_in) = (self.clone(), weight.clone(), bias.cloned());
        Ok(Tensor::from_op(out, vec![n, o, ho, wo], &inputs, move |grad, grads| {
            let (need_x, need_w) = (x_in.requires_grad(), w_in.requires_grad());
            let (gx, gw): (Option<Storage>, Option<Storage>) = dispatch!(
                "conv2d",
                (x_in.storage(), w_in.storage(), grad.storage()) => |x, wt, gs| x.conv2d_backward(wt, gs, &g, need_x, need_w)
            )?;
            if let Some(gx) = gx {
                grads.accumulate(x_in.id(), Tensor::from_storage(gx, x_in.shape().to_vec()))?;
            }
            if let Some(gw) = gw {
                grads.accumulate(w_in.id(), Tensor::from_storage(gw, w_in.shape().to_vec()))?;
            }
            if let Some(bt) = b_in.filter(|b| b.requires_grad()) {
                let gb = reduce_to_shape(&grad.shared_storage(), &[n, o, ho * wo], &[1, o, 1])?;
                grads.accumulate(bt.id(), Tensor::from_storage_arc(gb, vec![o]))?;
            }
            Ok(())
        }))
    }
}

//! Convolution as im2col + one cuBLAS GEMM per chunk of images (chunks bounded by `COL_BUDGET`, so
//! the unfolded columns stay bounded), col2im for the input gradient; GEMM outputs are f32 and
//! rounded once where they are stored.

use super::{ConvGeom, ConvOps};
use crate::cuda::{arg, entry, CudaStorage, KArg, Module, Operand, RowMajor, RowMajorMut};
use crate::dtype::DType;
use crate::error::{shape_err, Result};
use crate::shape::StridedView;
use crate::storage::{BackendDevice, BackendStorage};

impl ConvGeom {
    /// The `Conv` struct of `kernels.cu`.
    fn arg(&self) -> KArg {
        arg::u64s(&[self.c, self.o, self.h, self.w, self.kh, self.kw, self.stride, self.pad, self.ho, self.wo])
    }

    fn check(&self, x: &CudaStorage, w: &CudaStorage) -> Result<()> {
        if x.len() != self.n * self.c * self.h * self.w || w.len() != self.o * self.ckk() || x.dtype() != w.dtype() {
            return shape_err("conv2d", format!("{self:?} does not fit input {x:?} and weight {w:?}"));
        }
        Ok(())
    }
}

/// `ptr` advanced by `elements` of `dtype`.
fn at(s: &CudaStorage, elements: usize) -> KArg {
    KArg::U64(s.ptr() + (elements * s.dtype().size()) as u64)
}

impl CudaStorage {
    /// Unfolds images `start..start + images` of `self` into `col` (`[C·kh·kw, images·Ho·Wo]`).
    fn im2col(&self, g: &ConvGeom, start: usize, images: usize, col: &CudaStorage) -> Result<()> {
        let n = g.ckk() * images * g.hwo();
        let args = [at(self, start * g.c * g.h * g.w), arg::ptr(col), g.arg(), arg::n(images)];
        // SAFETY: the chunk's images lie inside `self` (start + images ≤ N) and `col` holds n.
        unsafe { self.launch_elementwise(Module::Conv, &entry("conv2d", "im2col", self.dtype())?, n, &args) }
    }
}

impl ConvOps for CudaStorage {
    fn conv2d(&self, weight: &Self, bias: Option<&Self>, g: &ConvGeom) -> Result<Self> {
        g.check(self, weight)?;
        if let Some(b) = bias {
            if b.len() != g.o || b.dtype() != self.dtype() {
                return shape_err("conv2d", format!("bias {b:?} should be {} × {}", g.o, self.dtype()));
            }
        }
        let dev = self.dev();
        let out = dev.alloc(self.dtype(), g.n * g.o * g.hwo())?;
        let chunk = g.chunk();
        let col = dev.alloc(self.dtype(), g.ckk() * chunk * g.hwo())?;
        let mut tmp = dev.alloc(DType::F32, g.o * chunk * g.hwo())?;
        for start in (0..g.n).step_by(chunk.max(1)) {
            let b = chunk.min(g.n - start);
            let cols = b * g.hwo();
            if cols == 0 {
                continue;
            }
            self.im2col(g, start, b, &col)?;
            let (w, c) =
                (RowMajor { storage: weight, view: Operand::rows(g.ckk(), 0) }, RowMajor { storage: &col, view: Operand::rows(cols, 0) });
            if g.ckk() == 0 {
                tmp.zero()?;
            } else {
                dev.gemm(1, g.o, cols, g.ckk(), w, c, RowMajorMut { storage: &mut tmp, view: Operand::rows(cols, 0) }, 0.0)?;
            }
            let (bias_ptr, has_bias) = match bias {
                Some(b) => (arg::ptr(b), 1),
                None => (KArg::U64(0), 0),
            };
            let args = [arg::ptr(&tmp), bias_ptr, at(&out, start * g.o * g.hwo()), g.arg(), arg::n(b), KArg::I32(has_bias)];
            // SAFETY: tmp holds O·cols values, the chunk's outputs lie inside `out`, bias has O.
            unsafe { self.launch_elementwise(Module::Conv, &entry("conv2d", "conv_out", self.dtype())?, b * g.o * g.hwo(), &args) }?;
        }
        Ok(out)
    }

    fn conv2d_backward(
        &self,
        weight: &Self,
        grad: &Self,
        g: &ConvGeom,
        need_x: bool,
        need_w: bool,
    ) -> Result<(Option<Self>, Option<Self>)> {
        g.check(self, weight)?;
        if grad.len() != g.n * g.o * g.hwo() || grad.dtype() != self.dtype() {
            return shape_err("conv2d", format!("gradient {grad:?} does not fit {g:?}"));
        }
        let dev = self.dev();
        let chunk = g.chunk();
        let mut gw = if need_w { Some(dev.zeros(DType::F32, g.o * g.ckk())?) } else { None };
        let gx = if need_x { Some(dev.alloc(self.dtype(), self.len())?) } else { None };
        let mut gt = dev.alloc(self.dtype(), g.o * chunk * g.hwo())?;
        let col = dev.alloc(self.dtype(), g.ckk() * chunk * g.hwo())?;
        let mut gcol = dev.alloc(DType::F32, g.ckk() * chunk * g.hwo())?;
        for start in (0..g.n).step_by(chunk.max(1)) {
            let b = chunk.min(g.n - start);
            let cols = b * g.hwo();
            if cols == 0 {
                continue;
            }
            // [b, O, HWo] → [O, b·HWo]
            let view =
                StridedView { shape: vec![g.o, b, g.hwo()], strides: vec![g.hwo(), g.o * g.hwo(), 1], offset: start * g.o * g.hwo() };
            grad.copy_view_into(&view, &mut gt)?;
            let gmat = RowMajor { storage: &gt, view: Operand::rows(cols, 0) };
            if let Some(gw) = gw.as_mut() {
                self.im2col(g, start, b, &col)?;
                let colt = RowMajor { storage: &col, view: Operand::rows(cols, 0).t() };
                dev.gemm(1, g.o, g.ckk(), cols, gmat, colt, RowMajorMut { storage: gw, view: Operand::rows(g.ckk(), 0) }, 1.0)?;
            }
            if let Some(gx) = gx.as_ref() {
                if g.o == 0 {
                    gcol.zero()?;
                } else {
                    let wt = RowMajor { storage: weight, view: Operand::rows(g.ckk(), 0).t() };
                    dev.gemm(1, g.ckk(), cols, g.o, wt, gmat, RowMajorMut { storage: &mut gcol, view: Operand::rows(cols, 0) }, 0.0)?;
                }
                let args = [arg::ptr(&gcol), at(gx, start * g.c * g.h * g.w), g.arg(), arg::n(b)];
                // SAFETY: gcol holds C·kh·kw·cols values; the chunk's images lie inside gx.
                unsafe { self.launch_elementwise(Module::Conv, &entry("conv2d", "col2im", self.dtype())?, b * g.c * g.h * g.w, &args) }?;
            }
        }
        let gw = match gw {
            Some(w) if weight.dtype() != DType::F32 => Some(w.cast(weight.dtype())?),
            other => other,
        };
        Ok((gx, gw))
    }
}

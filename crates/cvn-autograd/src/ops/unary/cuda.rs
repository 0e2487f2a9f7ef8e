use super::{UnaryOp, UnaryOps};
use crate::cuda::{arg, entry, CudaStorage, KArg, Module};
use crate::error::{dtype_err, Result};
use crate::storage::BackendStorage;

/// The `op` codes of `kernels.cu`.
fn op_code(op: UnaryOp) -> KArg {
    KArg::I32(match op {
        UnaryOp::Gelu => 0,
        UnaryOp::QuickGelu => 1,
        UnaryOp::Relu => 2,
    })
}

impl UnaryOps for CudaStorage {
    fn affine(&self, a: f32, b: f32) -> Result<Self> {
        let out = self.alloc_like(self.dtype(), self.len())?;
        let name = entry("affine", "affine", self.dtype())?;
        let args = [arg::ptr(self), arg::ptr(&out), arg::n(self.len()), KArg::F32(a), KArg::F32(b)];
        // SAFETY: both buffers hold len elements.
        unsafe { self.launch_elementwise(Module::Unary, &name, self.len(), &args) }?;
        Ok(out)
    }

    fn unary(&self, op: UnaryOp) -> Result<Self> {
        let out = self.alloc_like(self.dtype(), self.len())?;
        let name = entry(op.name(), "unary", self.dtype())?;
        // SAFETY: both buffers hold len elements.
        unsafe {
            self.launch_elementwise(Module::Unary, &name, self.len(), &[arg::ptr(self), arg::ptr(&out), arg::n(self.len()), op_code(op)])
        }?;
        Ok(out)
    }

    fn unary_grad(&self, grad: &Self, op: UnaryOp) -> Result<Self> {
        if grad.len() != self.len() || grad.dtype() != self.dtype() {
            return dtype_err(op.name(), format!("gradient {grad:?} does not match the input {self:?}"));
        }
        let out = self.alloc_like(grad.dtype(), self.len())?;
        let name = entry(op.name(), "unary_grad", self.dtype())?;
        let args = [arg::ptr(self), arg::ptr(grad), arg::ptr(&out), arg::n(self.len()), op_code(op)];
        // SAFETY: all three hold len elements of one dtype.
        unsafe { self.launch_elementwise(Module::Unary, &name, self.len(), &args) }?;
        Ok(out)
    }
}

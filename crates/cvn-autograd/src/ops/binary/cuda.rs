use super::{BinaryOp, BinaryOps, BroadcastLayout, Side};
use crate::cuda::{arg, entry, CudaStorage, KArg, Module};
use crate::error::{dtype_err, Result};
use crate::shape::StridedView;
use crate::storage::BackendStorage;

/// The `op` codes of `kernels.cu`.
fn op_code(op: BinaryOp) -> KArg {
    KArg::I32(match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
    })
}

fn same_dtype(op: BinaryOp, a: &CudaStorage, b: &CudaStorage) -> Result<()> {
    if a.dtype() != b.dtype() {
        return dtype_err(op.name(), format!("inputs are {} and {}", a.dtype(), b.dtype()));
    }
    Ok(())
}

/// Both views must lie inside their storages before a kernel reads through them.
fn check_layout(op: BinaryOp, a: &CudaStorage, b: &CudaStorage, layout: &BroadcastLayout) -> Result<usize> {
    crate::cpu::check_view(op.name(), &layout.lhs, a.len())?;
    crate::cpu::check_view(op.name(), &layout.rhs, b.len())?;
    Ok(layout.out.iter().product())
}

impl BinaryOps for CudaStorage {
    fn binary(&self, rhs: &Self, op: BinaryOp, layout: &BroadcastLayout) -> Result<Self> {
        same_dtype(op, self, rhs)?;
        let n = check_layout(op, self, rhs, layout)?;
        let out = self.alloc_like(self.dtype(), n)?;
        let name = entry(op.name(), "binary", self.dtype())?;
        let args = [
            arg::ptr(self),
            arg::ptr(rhs),
            arg::ptr(&out),
            arg::view(op.name(), &layout.lhs)?,
            arg::view(op.name(), &layout.rhs)?,
            arg::n(n),
            op_code(op),
        ];
        // SAFETY: the views lie inside the inputs (checked) and `out` holds the n outputs.
        unsafe { self.launch_elementwise(Module::Binary, &name, n, &args) }?;
        Ok(out)
    }

    fn binary_assign(&mut self, rhs: &Self, op: BinaryOp, layout: &BroadcastLayout) -> Result<()> {
        same_dtype(op, self, rhs)?;
        let n = check_layout(op, self, rhs, layout)?;
        if n != self.len() {
            return dtype_err(op.name(), format!("in-place output of {} elements for a {:?} result", self.len(), layout.out));
        }
        let name = entry(op.name(), "binary", self.dtype())?;
        let own = StridedView::contiguous(&layout.out);
        let args = [
            arg::ptr(self),
            arg::ptr(rhs),
            arg::ptr(self),
            arg::view(op.name(), &own)?,
            arg::view(op.name(), &layout.rhs)?,
            arg::n(n),
            op_code(op),
        ];
        // SAFETY: as in `binary`; the kernel reads each element of `self` before writing it.
        unsafe { self.launch_elementwise(Module::Binary, &name, n, &args) }
    }

    fn binary_grad(&self, rhs: &Self, grad: &Self, op: BinaryOp, side: Side, layout: &BroadcastLayout) -> Result<Self> {
        same_dtype(op, self, rhs)?;
        same_dtype(op, self, grad)?;
        let n = check_layout(op, self, rhs, layout)?;
        if grad.len() != n {
            return dtype_err(op.name(), format!("gradient of {} elements for a {:?} result", grad.len(), layout.out));
        }
        let out = self.alloc_like(grad.dtype(), n)?;
        let name = entry(op.name(), "binary_grad", self.dtype())?;
        let args = [
            arg::ptr(self),
            arg::ptr(rhs),
            arg::ptr(grad),
            arg::ptr(&out),
            arg::view(op.name(), &layout.lhs)?,
            arg::view(op.name(), &layout.rhs)?,
            arg::n(n),
            op_code(op),
            KArg::I32(if side == Side::Lhs { 0 } else { 1 }),
        ];
        // SAFETY: as in `binary`; `grad` holds n elements.
        unsafe { self.launch_elementwise(Module::Binary, &name, n, &args) }?;
        Ok(out)
    }
}

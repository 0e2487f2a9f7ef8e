//! Tensor ops, one folder per family: `mod.rs` holds the op's shape checks, tape recording and the
//! trait of kernels it needs; `cpu.rs` and `cuda.rs` implement that trait for each backend (see
//! [`crate::storage`]).

use std::sync::Arc;

use crate::cpu::Cpu;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{dtype_err, Result};
use crate::storage::{dispatch, BackendDevice, Storage};
use crate::tensor::Tensor;

pub(crate) mod attention;
pub(crate) mod binary;
pub(crate) mod conv;
pub(crate) mod layout;
pub(crate) mod loss;
pub(crate) mod lwta;
pub(crate) mod matmul;
pub(crate) mod metrics;
pub(crate) mod norm;
pub(crate) mod pool;
pub(crate) mod reduce;
pub(crate) mod softmax;
pub(crate) mod unary;

/// Float inputs only (integer tensors carry indices and counts, no gradients).
pub(crate) fn check_float(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        dtype_err(op, format!("needs a float tensor, got {}", t.dtype()))
    }
}

/// All inputs float and of one dtype (mixed precision casts explicitly, with `to_dtype`).
pub(crate) fn check_same_dtype(op: &'static str, tensors: &[&Tensor]) -> Result<DType> {
    let dtype = tensors[0].dtype();
    for t in tensors {
        check_float(op, t)?;
        if t.dtype() != dtype {
            return dtype_err(op, format!("inputs are {dtype} and {}; cast one with `to_dtype`", t.dtype()));
        }
    }
    Ok(dtype)
}

/// A gradient of broadcast shape `from` summed down to `to` (same rank), shared when nothing is
/// broadcast.
pub(crate) fn reduce_to_shape(g: &Arc<Storage>, from: &[usize], to: &[usize]) -> Result<Arc<Storage>> {
    if from == to {
        return Ok(g.clone());
    }
    let s: Storage = dispatch!("sum", (&**g) => |x| crate::ops::reduce::ReduceOps::sum_to(x, from, to, 1.0))?;
    Ok(Arc::new(s))
}

/// Zeros on `device` (for gradients that only part of an input receives).
pub(crate) fn zeros_storage(device: &Device, dtype: DType, len: usize) -> Result<Storage> {
    Ok(match device {
        Device::Cpu => Storage::Cpu(Cpu.zeros(dtype, len)?),
        Device::Cuda(d) => Storage::Cuda(d.zeros(dtype, len)?),
    })
}

//! Counters that stay on the device: active (non-zero) outputs, equal winner indices and correct
//! predictions are added into a `u64` counter tensor, read on the host only when a result is
//! reported (`to_vec_u64`), so evaluation and training never wait on the host per batch.

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{dtype_err, shape_err, Result};
use crate::ops::check_float;
use crate::storage::dispatch;
use crate::tensor::Tensor;

mod cpu;
mod cuda;

/// The kernels of this op family (see [`crate::storage`]); `self` is a `u64 [1]` counter.
pub(crate) trait MetricOps: Sized {
    /// Adds the number of non-zero elements of the float tensor `x`.
    fn add_nonzero(&mut self, x: &Self) -> Result<()>;
    /// Adds the number of positions where the `u8` tensors `a` and `b` agree.
    fn add_equal(&mut self, a: &Self, b: &Self) -> Result<()>;
    /// Adds the number of rows of `[n, c]` logits whose first maximum is the row's `u32` label.
    fn add_correct(&mut self, logits: &Self, labels: &Self, n: usize, c: usize) -> Result<()>;
}

impl Tensor {
    /// A zero `u64 [1]` counter on `device`.
    pub fn counter(device: &Device) -> Result<Tensor> {
        Tensor::zeros_on(&[1], DType::U64, device)
    }

    fn check_counter(&self) -> Result<()> {
        if self.dtype() != DType::U64 || self.len() != 1 {
            return dtype_err("counter", format!("a counter is a u64 [1] tensor, got {} {:?}", self.dtype(), self.shape()));
        }
        Ok(())
    }

    /// Adds the number of non-zero elements of `self` into `counter`.
    pub fn count_nonzero_into(&self, counter: &mut Tensor) -> Result<()> {
        counter.check_counter()?;
        check_float("count_nonzero", self)?;
        dispatch!("count_nonzero", mut counter.storage_mut()?, (self.storage()) => |c, x| c.add_nonzero(x))
    }

    /// Adds the number of positions where the `u8` tensors `self` and `other` agree (winners).
    pub fn count_equal_into(&self, other: &Tensor, counter: &mut Tensor) -> Result<()> {
        counter.check_counter()?;
        if self.dtype() != DType::U8 || other.dtype() != DType::U8 || self.len() != other.len() {
            return dtype_err(
                "count_equal",
                format!(
                    "needs two u8 tensors of one length, got {} × {} and {} × {}",
                    self.len(),
                    self.dtype(),
                    other.len(),
                    other.dtype()
                ),
            );
        }
        dispatch!("count_equal", mut counter.storage_mut()?, (self.storage(), other.storage()) => |c, a, b| c.add_equal(a, b))
    }

    /// Adds the number of rows of these `[N, C]` logits whose largest entry (the first on ties) is
    /// the row's label.
    pub fn count_correct_into(&self, labels: &[usize], counter: &mut Tensor) -> Result<()> {
        counter.check_counter()?;
        check_float("count_correct", self)?;
        let &[n, c] = self.shape() else {
            return shape_err("count_correct", format!("logits must be [N, C], got {:?}", self.shape()));
        };
        if labels.len() != n {
            return shape_err("count_correct", format!("{} labels for {n} rows of logits", labels.len()));
        }
        let ids: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        let labels = Tensor::from_u32_on(&ids, &[n], &self.device())?;
        dispatch!("count_correct", mut counter.storage_mut()?, (self.storage(), labels.storage()) => |k, x, l| k.add_correct(x, l, n, c))
    }
}

use super::MetricOps;
use crate::cuda::{arg, entry, CudaStorage, Module};
use crate::dtype::DType;
use crate::error::{dtype_err, Result};
use crate::storage::BackendStorage;

fn check_counter(c: &CudaStorage) -> Result<()> {
    if c.dtype() != DType::U64 || c.len() != 1 {
        return dtype_err("counter", format!("a counter is a u64 [1] tensor, got {c:?}"));
    }
    Ok(())
}

impl MetricOps for CudaStorage {
    fn add_nonzero(&mut self, x: &Self) -> Result<()> {
        check_counter(self)?;
        // SAFETY: x holds len elements; the counter one u64.
        unsafe {
            x.launch_elementwise(
                Module::Metrics,
                &entry("count_nonzero", "count_nonzero", x.dtype())?,
                x.len(),
                &[arg::ptr(x), arg::ptr(self), arg::n(x.len())],
            )
        }
    }

    fn add_equal(&mut self, a: &Self, b: &Self) -> Result<()> {
        check_counter(self)?;
        if a.dtype() != DType::U8 || b.dtype() != DType::U8 || a.len() != b.len() {
            return dtype_err("count_equal", format!("needs two u8 tensors of one length, got {a:?} and {b:?}"));
        }
        // SAFETY: a and b hold len bytes; the counter one u64.
        unsafe {
            a.launch_elementwise(Module::Metrics, "count_equal_u8", a.len(), &[arg::ptr(a), arg::ptr(b), arg::ptr(self), arg::n(a.len())])
        }
    }

    fn add_correct(&mut self, logits: &Self, labels: &Self, n: usize, c: usize) -> Result<()> {
        check_counter(self)?;
        if labels.dtype() != DType::U32 || labels.len() != n || logits.len() != n * c {
            return dtype_err("count_correct", format!("logits {logits:?} and labels {labels:?} do not fit [{n}, {c}]"));
        }
        let args = [arg::ptr(logits), arg::ptr(labels), arg::ptr(self), arg::n(n), arg::n(c)];
        // SAFETY: sizes checked above.
        unsafe { logits.launch_elementwise(Module::Metrics, &entry("count_correct", "count_correct", logits.dtype())?, n, &args) }
    }
}

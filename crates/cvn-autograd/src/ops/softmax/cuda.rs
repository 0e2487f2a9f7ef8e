use super::SoftmaxOps;
use crate::cuda::{arg, entry, CudaDevice, CudaStorage, KArg, Module};
use crate::error::{shape_err, Result};
use crate::storage::BackendStorage;

impl CudaStorage {
    /// `out ← softmax(self·scale)` (or log-softmax) over `rows` rows of `n`; with `causal_t > 0`
    /// row `r` sees its first `r % causal_t + 1` entries (attention's mask). `out` may be `self`
    /// (each row is read before it is written).
    pub(crate) fn softmax_rows(&self, out: &CudaStorage, rows: usize, n: usize, log: bool, scale: f32, causal_t: usize) -> Result<()> {
        if self.len() != rows * n || out.len() != rows * n || out.dtype() != self.dtype() {
            return shape_err("softmax", format!("{rows} rows of {n} from {self:?} into {out:?}"));
        }
        if rows == 0 {
            return Ok(());
        }
        let args = [arg::ptr(self), arg::ptr(out), arg::n(n), KArg::I32(log as i32), KArg::F32(scale), arg::n(causal_t)];
        // SAFETY: both hold rows·n elements (checked); one CTA per row.
        unsafe { self.dev().launch(Module::Softmax, &entry("softmax", "softmax", self.dtype())?, CudaDevice::rows(rows, n), &args) }
    }

    /// `dx ← y ⊙ (g − Σ g·y)·scale` (or the log-softmax gradient), `self` being `y`; `dx` may be `g`.
    pub(crate) fn softmax_rows_backward(
        &self,
        g: &CudaStorage,
        dx: &CudaStorage,
        rows: usize,
        n: usize,
        log: bool,
        scale: f32,
    ) -> Result<()> {
        if [self, g, dx].iter().any(|s| s.len() != rows * n || s.dtype() != self.dtype()) {
            return shape_err("softmax", format!("{rows} rows of {n}: {self:?}, {g:?}, {dx:?}"));
        }
        if rows == 0 {
            return Ok(());
        }
        let args = [arg::ptr(self), arg::ptr(g), arg::ptr(dx), arg::n(n), KArg::I32(log as i32), KArg::F32(scale)];
        // SAFETY: all hold rows·n elements (checked); one CTA per row.
        unsafe { self.dev().launch(Module::Softmax, &entry("softmax", "softmax_bwd", self.dtype())?, CudaDevice::rows(rows, n), &args) }
    }
}

impl SoftmaxOps for CudaStorage {
    fn softmax(&self, rows: usize, n: usize, log: bool) -> Result<Self> {
        let out = self.alloc_like(self.dtype(), rows * n)?;
        self.softmax_rows(&out, rows, n, log, 1.0, 0)?;
        Ok(out)
    }

    fn softmax_backward(&self, grad: &Self, rows: usize, n: usize, log: bool) -> Result<Self> {
        let dx = self.alloc_like(grad.dtype(), rows * n)?;
        self.softmax_rows_backward(grad, &dx, rows, n, log, 1.0)?;
        Ok(dx)
    }
}

use super::LossOps;
use crate::cuda::{arg, entry, CudaDevice, CudaStorage, Grid, KArg, Module, THREADS};
use crate::dtype::DType;
use crate::error::{dtype_err, shape_err, Result};
use crate::storage::BackendStorage;

fn check_targets(t: &CudaStorage, n: usize) -> Result<()> {
    if t.dtype() != DType::U32 || t.len() != n {
        return dtype_err("cross_entropy", format!("targets must be {n} × u32, got {t:?}"));
    }
    Ok(())
}

impl LossOps for CudaStorage {
    fn cross_entropy(&self, targets: &Self, n: usize, c: usize, smoothing: f32) -> Result<(Self, Self)> {
        check_targets(targets, n)?;
        if self.len() != n * c {
            return shape_err("cross_entropy", format!("logits {self:?} are not [{n}, {c}]"));
        }
        let dev = self.dev();
        let (probs, rows, loss) = (dev.alloc(DType::F32, n * c)?, dev.alloc(DType::F32, n)?, dev.alloc(DType::F32, 1)?);
        if n > 0 {
            let args = [arg::ptr(self), arg::ptr(targets), arg::ptr(&probs), arg::ptr(&rows), arg::n(c), KArg::F32(smoothing)];
            // SAFETY: n·c logits and probabilities, n targets (the op layer checked them < c), n row losses.
            unsafe { dev.launch(Module::Loss, &entry("cross_entropy", "ce_rows", self.dtype())?, CudaDevice::rows(n, c), &args) }?;
        }
        let grid = Grid { x: 1, y: 1, threads: (n.next_power_of_two() as u32).clamp(32, THREADS), shared: 0 };
        // SAFETY: n row losses, one loss.
        unsafe { dev.launch(Module::Loss, "ce_mean", grid, &[arg::ptr(&rows), arg::ptr(&loss), arg::n(n)]) }?;
        Ok((loss, probs))
    }

    fn cross_entropy_backward(&self, targets: &Self, grad: &Self, n: usize, c: usize, smoothing: f32, dtype: DType) -> Result<Self> {
        check_targets(targets, n)?;
        if self.len() != n * c || self.dtype() != DType::F32 || grad.len() != 1 || grad.dtype() != DType::F32 {
            return shape_err("cross_entropy", format!("probabilities {self:?} and loss gradient {grad:?} do not fit [{n}, {c}]"));
        }
        let dx = self.alloc_like(dtype, n * c)?;
        let args = [arg::ptr(self), arg::ptr(targets), arg::ptr(grad), arg::ptr(&dx), arg::n(n), arg::n(c), KArg::F32(smoothing)];
        // SAFETY: sizes checked above.
        unsafe { self.launch_elementwise(Module::Loss, &entry("cross_entropy", "ce_bwd", dtype)?, n * c, &args) }?;
        Ok(dx)
    }

    fn dropout(&self, p: f32, seed: u64, offset: u64) -> Result<Self> {
        let out = self.alloc_like(self.dtype(), self.len())?;
        let args = [
            arg::ptr(self),
            arg::ptr(&out),
            arg::n(self.len()),
            KArg::F32(p),
            KArg::F32(1.0 / (1.0 - p)),
            KArg::U64(seed),
            KArg::U64(offset),
        ];
        // SAFETY: both hold len elements.
        unsafe { self.launch_elementwise(Module::Loss, &entry("dropout", "dropout", self.dtype())?, self.len(), &args) }?;
        Ok(out)
    }
}

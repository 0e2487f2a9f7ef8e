use super::{PoolGeom, PoolOps};
use crate::cuda::{arg, entry, CudaStorage, KArg, Module};
use crate::error::{shape_err, Result};
use crate::storage::BackendStorage;

impl PoolGeom {
    /// The `Pool` struct of `kernels.cu`.
    fn arg(&self) -> KArg {
        arg::u64s(&[self.planes, self.h, self.w, self.kernel, self.stride, self.padding, self.ho, self.wo])
    }
}

fn expect(s: &CudaStorage, len: usize, what: &str) -> Result<()> {
    if s.len() != len {
        return shape_err("max_pool2d", format!("{what} {s:?} should hold {len} elements"));
    }
    Ok(())
}

impl PoolOps for CudaStorage {
    fn max_pool2d(&self, g: &PoolGeom) -> Result<Self> {
        expect(self, g.planes * g.h * g.w, "the input")?;
        let n = g.planes * g.ho * g.wo;
        let out = self.alloc_like(self.dtype(), n)?;
        // SAFETY: planes·H·W inputs, planes·Ho·Wo outputs.
        unsafe {
            self.launch_elementwise(
                Module::Pool,
                &entry("max_pool2d", "max_pool", self.dtype())?,
                n,
                &[arg::ptr(self), arg::ptr(&out), g.arg()],
            )
        }?;
        Ok(out)
    }

    fn max_pool2d_backward(&self, grad: &Self, g: &PoolGeom) -> Result<Self> {
        expect(self, g.planes * g.h * g.w, "the input")?;
        expect(grad, g.planes * g.ho * g.wo, "the gradient")?;
        let dx = self.alloc_like(grad.dtype(), self.len())?;
        let args = [arg::ptr(self), arg::ptr(grad), arg::ptr(&dx), g.arg()];
        // SAFETY: sizes checked above.
        unsafe { self.launch_elementwise(Module::Pool, &entry("max_pool2d", "max_pool_bwd", self.dtype())?, self.len(), &args) }?;
        Ok(dx)
    }
}

use lwta_kernels::{cpu as lwta_cpu, BlockGeometry, Noise};

use super::LwtaOps;
use crate::cpu::CpuStorage;
use crate::error::Result;
use crate::storage::BackendStorage;

impl LwtaOps for CpuStorage {
    fn lwta_forward(&self, geom: BlockGeometry, u: usize, noise: Noise<'_>) -> Result<(Self, Self)> {
        let x = self.floats("lwta")?;
        let (y, winners) = lwta_cpu::forward_to_vec(&x, geom, u, noise)?;
        Ok((CpuStorage::from_floats(y, self.dtype()), CpuStorage::U8(winners)))
    }

    fn lwta_backward(&self, grad: &Self, geom: BlockGeometry, u: usize, tau: f32, noise: Noise<'_>) -> Result<Self> {
        let (x, g) = (self.floats("lwta")?, grad.floats("lwta")?);
        let dx = lwta_cpu::backward_to_vec(&x, &g, geom, u, tau, noise)?;
        Ok(CpuStorage::from_floats(dx, grad.dtype()))
    }

    fn lwta_winners(&self, geom: BlockGeometry, u: usize, noise: Noise<'_>) -> Result<Self> {
        let x = self.floats("lwta_winners")?;
        Ok(CpuStorage::U8(lwta_cpu::forward_to_vec(&x, geom, u, noise)?.1))
    }
}

use lwta_kernels::{cpu as lwta_cpu, BlockGeometry, Noise};

use super::LwtaOps;
use crate::cpu::CpuStorage;
use crate::error::Result;
use crate::storage::BackendStorage;

impl LwtaOps for CpuStorage {
    fn lwta_forward(&self, geom: BlockGeometry, u: usize, noise: Noise<'_>) -> Result<(Self, Self)> {
        let x = self.floats("lwta")?;
        let mut y = vec![0.0; x.len()];
        let mut winners = vec![0u8; geom.blocks(u)];
        lwta_cpu::forward(&x, &mut y, &mut winners, geom, u, noise)?;
        Ok((CpuStorage::from_floats(y, self.dtype()), CpuStorage::U8(winners)))
    }

    fn lwta_backward(&self, grad: &Self, geom: BlockGeometry, u: usize, tau: f32, noise: Noise<'_>) -> Result<Self> {
        let (x, g) = (self.floats("lwta")?, grad.floats("lwta")?);
        let mut dx = vec![0.0; x.len()];
        lwta_cpu::backward(&x, &g, &mut dx, geom, u, tau, noise)?;
        Ok(CpuStorage::from_floats(dx, grad.dtype()))
    }

    fn lwta_winners(&self, geom: BlockGeometry, u: usize, noise: Noise<'_>) -> Result<Self> {
        let x = self.floats("lwta_winners")?;
        let mut winners = vec![0u8; geom.blocks(u)];
        lwta_cpu::forward(&x, &mut vec![0.0; x.len()], &mut winners, geom, u, noise)?;
        Ok(CpuStorage::U8(winners))
    }
}

//! LWTA on CUDA: the fused kernels of `kernels/lwta_{f32,bf16}.ptx`, launched by the plans of
//! `lwta_kernels::cuda::plan` (the same plans the LWTA crate's own GPU path and its emulator
//! tests use), so the LWTA math keeps one home per device.

use half::bf16;
use lwta_kernels::cuda::plan::{self, KernelArg, Launch, Occupancy};
use lwta_kernels::cuda::Element;
use lwta_kernels::{BlockGeometry, LwtaError, Noise};

use super::LwtaOps;
use crate::cuda::{CudaStorage, Grid, KArg, Module};
use crate::dtype::DType;
use crate::error::{dtype_err, Result};
use crate::storage::BackendStorage;

/// Grid size in multiples of the CTAs resident at once (lwta_kernels' default for GPUs).
const WAVES: u32 = 8;

fn module<T: Element>() -> Module {
    if T::BYTES == 4 {
        Module::LwtaF32
    } else {
        Module::LwtaBf16
    }
}

fn karg(a: &KernelArg) -> KArg {
    match *a {
        KernelArg::U32(v) => KArg::U32(v),
        KernelArg::U64(v) => KArg::U64(v),
        KernelArg::F32(v) => KArg::F32(v),
        KernelArg::RoundKeys(keys) => KArg::Bytes(keys.iter().flat_map(|k| k.to_le_bytes()).collect()),
    }
}

/// Runs `make`'s plan (built for this device's occupancy) on the device.
fn run<T: Element>(dev_of: &CudaStorage, make: impl FnOnce(&Occupancy) -> lwta_kernels::Result<Option<Launch>>) -> Result<()> {
    let dev = dev_of.dev();
    let blocks = |kernel: plan::Kernel, threads: u32, shared: u32| {
        dev.blocks_per_sm(module::<T>(), &kernel.entry::<T>(), threads, shared).map_err(|e| LwtaError::Cuda(e.to_string()))
    };
    let occupancy = Occupancy { sm_slots: dev.sm_count().saturating_mul(WAVES), blocks_per_sm: &blocks };
    let Some(launch) = make(&occupancy)? else { return Ok(()) };
    let args: Vec<KArg> = launch.args.iter().map(karg).collect();
    let grid = Grid { x: launch.grid, y: 1, threads: launch.threads, shared: launch.shared_bytes };
    // SAFETY: the plan's arguments match its entry (lwta_kernels builds them for it) and its
    // pointers are the callers' buffers, checked to hold the geometry's elements and blocks.
    unsafe { dev.launch(module::<T>(), &launch.kernel.entry::<T>(), grid, &args) }
}

fn check(x: &CudaStorage, geom: BlockGeometry, others: &[&CudaStorage]) -> Result<()> {
    for s in std::iter::once(&x).chain(others) {
        if s.len() != geom.len() || s.dtype() != x.dtype() {
            return dtype_err("lwta", format!("{s:?} does not match the {}-element input {x:?}", geom.len()));
        }
    }
    Ok(())
}

impl CudaStorage {
    fn lwta_forward_typed<T: Element>(&self, geom: BlockGeometry, u: usize, noise: Noise<'_>) -> Result<(Self, Self)> {
        let y = self.alloc_like(self.dtype(), self.len())?;
        let winners = self.alloc_like(DType::U8, geom.blocks(u))?;
        check(self, geom, &[&y])?;
        run::<T>(self, |occ| plan::forward::<T>(geom, u, noise, self.ptr(), y.ptr(), winners.ptr(), occ))?;
        Ok((y, winners))
    }

    fn lwta_backward_typed<T: Element>(&self, grad: &Self, geom: BlockGeometry, u: usize, tau: f32, noise: Noise<'_>) -> Result<Self> {
        let dx = self.alloc_like(grad.dtype(), self.len())?;
        check(self, geom, &[grad, &dx])?;
        run::<T>(self, |occ| plan::backward::<T>(geom, u, tau, noise, self.ptr(), grad.ptr(), dx.ptr(), occ))?;
        Ok(dx)
    }
}

impl LwtaOps for CudaStorage {
    fn lwta_forward(&self, geom: BlockGeometry, u: usize, noise: Noise<'_>) -> Result<(Self, Self)> {
        match self.dtype() {
            DType::F32 => self.lwta_forward_typed::<f32>(geom, u, noise),
            DType::BF16 => self.lwta_forward_typed::<bf16>(geom, u, noise),
            other => dtype_err("lwta", format!("needs a float tensor, got {other}")),
        }
    }

    fn lwta_backward(&self, grad: &Self, geom: BlockGeometry, u: usize, tau: f32, noise: Noise<'_>) -> Result<Self> {
        match self.dtype() {
            DType::F32 => self.lwta_backward_typed::<f32>(grad, geom, u, tau, noise),
            DType::BF16 => self.lwta_backward_typed::<bf16>(grad, geom, u, tau, noise),
            other => dtype_err("lwta", format!("needs a float tensor, got {other}")),
        }
    }

    /// The forward kernel with a scratch output: the winners are what it computes first anyway.
    fn lwta_winners(&self, geom: BlockGeometry, u: usize, noise: Noise<'_>) -> Result<Self> {
        Ok(self.lwta_forward(geom, u, noise)?.1)
    }
}

//! Devices: where tensors live and kernels run.
//!
//! A [`Device`] is a cheap-to-clone handle. `Device::Cpu` needs no state; `Device::Cuda` carries
//! its context — the CUDA context and stream, the cuBLAS handle, the loaded kernel modules and the
//! caching allocator — or, for machines without a GPU, the PTX emulator standing in for the driver
//! and cuBLAS (see [`crate::cuda`]). Opening the same GPU twice gives the same device (one
//! context, one allocator). Tensors made on a device stay there; ops on tensors of different
//! devices are an error, and [`crate::Tensor::to_device`] moves data explicitly.

use std::fmt;

use crate::cuda::CudaDevice;
use crate::error::{Error, Result};

/// Where a tensor lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(CudaDevice),
}

impl Device {
    /// Opens GPU `ordinal` (loads the driver and cuBLAS; kernels load on first use). A machine
    /// without an NVIDIA driver or cuBLAS gets [`Error::DeviceUnavailable`] saying which, never a
    /// panic; the CPU is unaffected.
    pub fn cuda(ordinal: usize) -> Result<Self> {
        Ok(Device::Cuda(CudaDevice::new(ordinal)?))
    }

    /// The CUDA backend on the PTX emulator: every kernel of the CUDA backend runs interpreted on
    /// the CPU (`ptx-emu`), GEMMs on the host with cuBLAS's contract. Slow (tens of millions of
    /// emulated instructions per second); for tests and kernel development on machines without a
    /// GPU. One per process.
    pub fn cuda_emulated() -> Result<Self> {
        Ok(Device::Cuda(CudaDevice::emulated()?))
    }

    /// Parses `cpu`, `cuda`, `cuda:N` or `cuda-emulated` (CLI flags) and opens the device.
    pub fn open(name: &str) -> Result<Self> {
        match name {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Self::cuda(0),
            "cuda-emulated" => Self::cuda_emulated(),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Self::cuda(n),
                _ => Err(Error::Invalid {
                    op: "--device",
                    detail: format!("unknown device `{other}`, expected cpu, cuda, cuda:N or cuda-emulated"),
                }),
            },
        }
    }

    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// Waits until every kernel queued on the device has finished (for timing; results never need
    /// it, host copies synchronise themselves).
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(d) => d.synchronize(),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(d) => write!(f, "{d}"),
        }
    }
}

//! Devices and storage.
//!
//! Storage is an enum with one variant per backend, the way candle does it: every op matches on it and
//! calls that backend's kernel. Today there is one backend, the CPU (`Vec<f32>`, rayon + blocked
//! GEMM). A CUDA backend plugs in by
//! 1. adding `Storage::Cuda(cudarc::driver::CudaSlice<f32>)` (and a bf16 twin),
//! 2. giving each op in `ops/` a `cuda` arm next to its CPU arm (the LWTA arm calls
//!    `lwta_kernels::cuda`, matmul/linear call cuBLAS),
//! 3. mapping `Device::Cuda` to a context instead of the error below.
//!
//! Model code only ever sees `Tensor` and `Device`, so none of it changes.

use crate::error::{Error, Result};

/// Where a tensor lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// A CUDA device by ordinal. Tensors cannot live there yet: asking for it is a clean error.
    Cuda(usize),
}

impl Device {
    /// Parses `cpu`, `cuda` or `cuda:N` (CLI flags).
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => other.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Device::Cuda).ok_or_else(|| Error::Invalid {
                op: "--device",
                detail: format!("unknown device `{other}`, expected cpu, cuda or cuda:N"),
            }),
        }
    }

    /// Checks that tensors can be created on this device.
    pub fn ensure_available(self) -> Result<Self> {
        match self {
            Device::Cpu => Ok(self),
            Device::Cuda(n) => Err(Error::DeviceUnavailable {
                device: format!("cuda:{n}"),
                reason: "the tensor backend has no CUDA storage yet; only the LWTA kernels run on \
                         the GPU (`cargo xtask parity --device cuda`, `cargo xtask bench --device cuda`)"
                    .into(),
            }),
        }
    }
}

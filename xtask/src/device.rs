//! `--device` and `--precision`, shared by the subcommands that run models.

use anyhow::Context;
use cvn_autograd::{DType, Device};

#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Where to run: cpu, cuda (GPU 0), cuda:N, or cuda-emulated (the CUDA backend's kernels
    /// interpreted on the CPU: slow, for tests and kernel development).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, or bf16: matrix products and convolutions (CLIP: whole towers) in bf16 with f32 master
    /// weights and f32 normalisations, softmax and loss, as PyTorch's bf16 autocast.
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    pub precision: String,
}

impl DeviceArgs {
    /// Opens the device; a machine without a usable one gets one line saying why.
    pub fn open(&self) -> anyhow::Result<Device> {
        Device::open(&self.device).with_context(|| format!("--device {}", self.device))
    }

    /// The autocast dtype (`None` for f32).
    pub fn autocast(&self) -> Option<DType> {
        (self.precision == "bf16").then_some(DType::BF16)
    }

    /// The dtype models stored in half precision use (CLIP towers).
    pub fn dtype(&self) -> DType {
        self.autocast().unwrap_or(DType::F32)
    }
}

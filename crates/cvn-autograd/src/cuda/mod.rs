//! The CUDA backend (placeholder while the backend is being written: no CUDA device can be opened
//! yet, so no CUDA storage can exist).

use std::convert::Infallible;
use std::fmt;

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::StridedView;
use crate::storage::{BackendDevice, BackendStorage};

/// A CUDA device handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaDevice {
    never: Infallible,
}

/// Elements on a CUDA device.
#[derive(Debug)]
pub struct CudaStorage {
    pub(crate) never: Infallible,
}

fn unavailable(device: String) -> Error {
    Error::DeviceUnavailable { device, reason: "the CUDA backend is not part of this build yet".into() }
}

impl CudaDevice {
    pub(crate) fn new(ordinal: usize) -> Result<Self> {
        Err(unavailable(format!("cuda:{ordinal}")))
    }

    pub(crate) fn emulated() -> Result<Self> {
        Err(unavailable("cuda-emulated".into()))
    }

    pub(crate) fn synchronize(&self) -> Result<()> {
        match self.never {}
    }
}

impl fmt::Display for CudaDevice {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.never {}
    }
}

impl BackendStorage for CudaStorage {
    fn dtype(&self) -> DType {
        match self.never {}
    }
    fn len(&self) -> usize {
        match self.never {}
    }
    fn device(&self) -> Device {
        match self.never {}
    }
    fn try_clone(&self) -> Result<Self> {
        match self.never {}
    }
    fn to_f32_vec(&self) -> Result<Vec<f32>> {
        match self.never {}
    }
    fn to_u8_vec(&self) -> Result<Vec<u8>> {
        match self.never {}
    }
    fn to_u32_vec(&self) -> Result<Vec<u32>> {
        match self.never {}
    }
    fn to_u64_vec(&self) -> Result<Vec<u64>> {
        match self.never {}
    }
    fn cast(&self, _: DType) -> Result<Self> {
        match self.never {}
    }
    fn add_assign(&mut self, _: &Self) -> Result<()> {
        match self.never {}
    }
    fn copy_strided(&self, _: &StridedView) -> Result<Self> {
        match self.never {}
    }
    fn copy_into(&mut self, _: &StridedView, _: &Self) -> Result<()> {
        match self.never {}
    }
}

impl BackendDevice for CudaDevice {
    type Storage = CudaStorage;
    fn zeros(&self, _: DType, _: usize) -> Result<CudaStorage> {
        match self.never {}
    }
    fn full(&self, _: DType, _: usize, _: f32) -> Result<CudaStorage> {
        match self.never {}
    }
    fn from_f32(&self, _: &[f32], _: DType) -> Result<CudaStorage> {
        match self.never {}
    }
    fn from_u8(&self, _: &[u8]) -> Result<CudaStorage> {
        match self.never {}
    }
    fn from_u32(&self, _: &[u32]) -> Result<CudaStorage> {
        match self.never {}
    }
}

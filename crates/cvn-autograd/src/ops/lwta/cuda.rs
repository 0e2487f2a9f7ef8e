//! Placeholder: replaced by the CUDA kernels.
#![allow(unused_variables)]

use super::*;
use crate::cuda::CudaStorage;
use crate::error::Result;
use lwta_kernels::{BlockGeometry, Noise};

impl LwtaOps for CudaStorage {
    fn lwta_forward(&self, geom: BlockGeometry, u: usize, noise: Noise<'_>) -> Result<(Self, Self)> {
        match self.never {}
    }
    fn lwta_backward(&self, grad: &Self, geom: BlockGeometry, u: usize, tau: f32, noise: Noise<'_>) -> Result<Self> {
        match self.never {}
    }
    fn lwta_winners(&self, geom: BlockGeometry, u: usize, noise: Noise<'_>) -> Result<Self> {
        match self.never {}
    }
}

//! Placeholder: replaced by the CUDA kernels.
#![allow(unused_variables)]

use super::*;
use crate::cuda::CudaStorage;
use crate::error::Result;

impl ReduceOps for CudaStorage {
    fn sum_to(&self, from: &[usize], to: &[usize], scale: f32) -> Result<Self> {
        match self.never {}
    }
}

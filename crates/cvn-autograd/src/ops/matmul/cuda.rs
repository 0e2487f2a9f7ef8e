//! Placeholder: replaced by the CUDA kernels.
#![allow(unused_variables)]

use super::*;
use crate::cuda::CudaStorage;
use crate::error::Result;

impl MatmulOps for CudaStorage {
    fn gemm(&self, rhs: &Self, spec: &GemmSpec) -> Result<Self> {
        match self.never {}
    }
}

//! Placeholder: replaced by the CUDA kernels.
#![allow(unused_variables)]

use super::*;
use crate::cuda::CudaStorage;
use crate::error::Result;

impl AttentionOps for CudaStorage {
    fn attention(inputs: &[&Self], g: &AttentionGeom) -> Result<(Self, Self)> {
        match inputs[0].never {}
    }
    fn attention_backward(inputs: &[&Self], g: &AttentionGeom, probs: &Self, grad: &Self, need: &[bool]) -> Result<Vec<Option<Self>>> {
        match inputs[0].never {}
    }
}

//! Placeholder: replaced by the CUDA kernels.
#![allow(unused_variables)]

use super::*;
use crate::cuda::CudaStorage;
use crate::error::Result;

impl NormOps for CudaStorage {
    fn layer_norm(&self, weight: &Self, bias: &Self, rows: usize, n: usize, eps: f32) -> Result<(Self, Self, Self)> {
        match self.never {}
    }
    fn layer_norm_backward(
        &self,
        weight: &Self,
        mean: &Self,
        rstd: &Self,
        grad: &Self,
        rows: usize,
        n: usize,
        need: [bool; 3],
    ) -> Result<(Option<Self>, Option<Self>, Option<Self>)> {
        match self.never {}
    }
    fn batch_norm_stats(&self, g: BnGeom) -> Result<(Self, Self)> {
        match self.never {}
    }
    fn batch_norm(&self, weight: &Self, bias: &Self, mean: &Self, var: &Self, g: BnGeom, eps: f32) -> Result<Self> {
        match self.never {}
    }
    fn batch_norm_backward(
        &self,
        weight: &Self,
        mean: &Self,
        var: &Self,
        grad: &Self,
        g: BnGeom,
        eps: f32,
        training: bool,
        need: [bool; 3],
    ) -> Result<(Option<Self>, Option<Self>, Option<Self>)> {
        match self.never {}
    }
    fn batch_norm_update_running(&mut self, running_var: &mut Self, mean: &Self, var: &Self, count: usize, momentum: f32) -> Result<()> {
        match self.never {}
    }
    fn l2_normalize(&self, rows: usize, n: usize) -> Result<(Self, Self)> {
        match self.never {}
    }
    fn l2_normalize_backward(&self, norms: &Self, grad: &Self, rows: usize, n: usize) -> Result<Self> {
        match self.never {}
    }
}

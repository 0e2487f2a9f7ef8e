//! The CPU backend: host vectors, multi-threaded (rayon) and vectorised kernels.
//!
//! Kernels compute in f32 on slices. A bf16 tensor is widened to f32 for the kernel and its result
//! rounded back ([`CpuStorage::floats`], [`CpuStorage::from_floats`]): the same numbers the CUDA
//! backend's f32-math-on-bf16-storage kernels give, without a second set of CPU kernels. The op
//! kernels live beside their ops (`ops/<op>/cpu.rs`); this module holds the storage and the
//! memory kernels every op uses.

use std::borrow::Cow;

use half::bf16;
use rayon::prelude::*;

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{dtype_err, Result};
use crate::shape::{for_each_mapped, StridedView};
use crate::storage::{BackendDevice, BackendStorage};

pub mod gemm;
pub mod heap;

/// Elements per rayon task for cheap element-wise loops.
pub(crate) const PAR_CHUNK: usize = 1 << 15;

/// Host memory of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum CpuStorage {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    U8(Vec<u8>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

/// The CPU as a device (it has no state).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu;

impl CpuStorage {
    /// The float elements as f32: borrowed for f32 storage, widened for bf16.
    pub(crate) fn floats(&self, op: &'static str) -> Result<Cow<'_, [f32]>> {
        match self {
            CpuStorage::F32(v) => Ok(Cow::Borrowed(v)),
            CpuStorage::BF16(v) => Ok(Cow::Owned(widen(v))),
            other => dtype_err(op, format!("needs a float tensor, got {}", other.dtype())),
        }
    }

    /// f32 results stored as `dtype` (bf16 rounded to nearest even).
    pub(crate) fn from_floats(values: Vec<f32>, dtype: DType) -> Self {
        match dtype {
            DType::BF16 => CpuStorage::BF16(narrow(&values)),
            _ => CpuStorage::F32(values),
        }
    }

    /// The f32 elements, mutably (optimiser state and parameters are f32).
    pub(crate) fn f32_mut(&mut self, op: &'static str) -> Result<&mut Vec<f32>> {
        match self {
            CpuStorage::F32(v) => Ok(v),
            other => dtype_err(op, format!("needs an f32 tensor, got {}", other.dtype())),
        }
    }

    /// Applies `f` to the elements as f32 in place (bf16 widened and rounded back).
    pub(crate) fn update_floats(&mut self, op: &'static str, f: impl FnOnce(&mut [f32]) -> Result<()>) -> Result<()> {
        match self {
            CpuStorage::F32(v) => f(v),
            CpuStorage::BF16(v) => {
                let mut wide = widen(v);
                f(&mut wide)?;
                *v = narrow(&wide);
                Ok(())
            }
            other => dtype_err(op, format!("needs a float tensor, got {}", other.dtype())),
        }
    }

    fn copy_view<T: Copy + Send + Sync + Default>(src: &[T], view: &StridedView) -> Vec<T> {
        let mut out = vec![T::default(); view.len()];
        let src = &src[view.offset..];
        if view.strides == crate::shape::strides(&view.shape) {
            let n = out.len();
            out.copy_from_slice(&src[..n]);
        } else {
            for_each_mapped(&view.shape, &view.strides, |o, s| out[o] = src[s]);
        }
        out
    }

    fn write_view<T: Copy>(dst: &mut [T], view: &StridedView, src: &[T]) {
        let dst = &mut dst[view.offset..];
        for_each_mapped(&view.shape, &view.strides, |o, d| dst[d] = src[o]);
    }
}

pub(crate) fn widen(v: &[bf16]) -> Vec<f32> {
    v.par_iter().with_min_len(PAR_CHUNK).map(|x| x.to_f32()).collect()
}

pub(crate) fn narrow(v: &[f32]) -> Vec<bf16> {
    v.par_iter().with_min_len(PAR_CHUNK).map(|x| bf16::from_f32(*x)).collect()
}

macro_rules! each_dtype {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            CpuStorage::F32($v) => $body,
            CpuStorage::BF16($v) => $body,
            CpuStorage::U8($v) => $body,
            CpuStorage::U32($v) => $body,
            CpuStorage::U64($v) => $body,
        }
    };
}

impl BackendStorage for CpuStorage {
    fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::U8(_) => DType::U8,
            CpuStorage::U32(_) => DType::U32,
            CpuStorage::U64(_) => DType::U64,
        }
    }

    fn len(&self) -> usize {
        each_dtype!(self, v => v.len())
    }

    fn device(&self) -> Device {
        Device::Cpu
    }

    fn try_clone(&self) -> Result<Self> {
        Ok(self.clone())
    }

    fn to_f32_vec(&self) -> Result<Vec<f32>> {
        Ok(self.floats("to_vec")?.into_owned())
    }

    fn to_u8_vec(&self) -> Result<Vec<u8>> {
        match self {
            CpuStorage::U8(v) => Ok(v.clone()),
            other => dtype_err("to_u8_vec", format!("needs a u8 tensor, got {}", other.dtype())),
        }
    }

    fn to_u32_vec(&self) -> Result<Vec<u32>> {
        match self {
            CpuStorage::U32(v) => Ok(v.clone()),
            other => dtype_err("to_u32_vec", format!("needs a u32 tensor, got {}", other.dtype())),
        }
    }

    fn to_u64_vec(&self) -> Result<Vec<u64>> {
        match self {
            CpuStorage::U64(v) => Ok(v.clone()),
            other => dtype_err("to_u64_vec", format!("needs a u64 tensor, got {}", other.dtype())),
        }
    }

    fn cast(&self, dtype: DType) -> Result<Self> {
        if !dtype.is_float() {
            return dtype_err("to_dtype", format!("casts go between float types, not to {dtype}"));
        }
        Ok(match (self, dtype) {
            (CpuStorage::F32(v), DType::F32) => CpuStorage::F32(v.clone()),
            (CpuStorage::BF16(v), DType::BF16) => CpuStorage::BF16(v.clone()),
            _ => CpuStorage::from_floats(self.floats("to_dtype")?.into_owned(), dtype),
        })
    }

    fn add_assign(&mut self, rhs: &Self) -> Result<()> {
        match (self, rhs) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) if a.len() == b.len() => {
                a.par_iter_mut().zip(b.par_iter()).with_min_len(PAR_CHUNK).for_each(|(a, b)| *a += b);
                Ok(())
            }
            (CpuStorage::U64(a), CpuStorage::U64(b)) if a.len() == b.len() => {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                Ok(())
            }
            (a @ CpuStorage::BF16(_), b @ CpuStorage::BF16(_)) if a.len() == b.len() => {
                let b = b.floats("add_assign")?;
                a.update_floats("add_assign", |a| {
                    a.iter_mut().zip(b.iter()).for_each(|(a, b)| *a += b);
                    Ok(())
                })
            }
            (a, b) => dtype_err(
                "add_assign",
                format!("needs equal float or u64 tensors, got {} × {} and {} × {}", a.len(), a.dtype(), b.len(), b.dtype()),
            ),
        }
    }

    fn copy_strided(&self, view: &StridedView) -> Result<Self> {
        check_view("copy_strided", view, self.len())?;
        Ok(match self {
            CpuStorage::F32(v) => CpuStorage::F32(Self::copy_view(v, view)),
            CpuStorage::BF16(v) => CpuStorage::BF16(Self::copy_view(v, view)),
            CpuStorage::U8(v) => CpuStorage::U8(Self::copy_view(v, view)),
            CpuStorage::U32(v) => CpuStorage::U32(Self::copy_view(v, view)),
            CpuStorage::U64(v) => CpuStorage::U64(Self::copy_view(v, view)),
        })
    }

    fn copy_into(&mut self, view: &StridedView, src: &Self) -> Result<()> {
        check_view("copy_into", view, self.len())?;
        if src.len() != view.len() {
            return dtype_err("copy_into", format!("source has {} elements, the view {}", src.len(), view.len()));
        }
        match (self, src) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => Self::write_view(d, view, s),
            (CpuStorage::BF16(d), CpuStorage::BF16(s)) => Self::write_view(d, view, s),
            (CpuStorage::U8(d), CpuStorage::U8(s)) => Self::write_view(d, view, s),
            (CpuStorage::U32(d), CpuStorage::U32(s)) => Self::write_view(d, view, s),
            (CpuStorage::U64(d), CpuStorage::U64(s)) => Self::write_view(d, view, s),
            (d, s) => return dtype_err("copy_into", format!("cannot copy {} into {}", s.dtype(), d.dtype())),
        }
        Ok(())
    }
}

/// A view must stay inside its storage (every backend checks this before touching memory).
pub(crate) fn check_view(op: &'static str, view: &StridedView, len: usize) -> Result<()> {
    if view.strides.len() != view.shape.len() || view.extent() > len {
        return Err(crate::Error::Shape { op, detail: format!("view {view:?} reaches outside {len} elements") });
    }
    Ok(())
}

impl BackendDevice for Cpu {
    type Storage = CpuStorage;

    fn zeros(&self, dtype: DType, len: usize) -> Result<CpuStorage> {
        Ok(match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; len]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; len]),
            DType::U8 => CpuStorage::U8(vec![0; len]),
            DType::U32 => CpuStorage::U32(vec![0; len]),
            DType::U64 => CpuStorage::U64(vec![0; len]),
        })
    }

    fn full(&self, dtype: DType, len: usize, value: f32) -> Result<CpuStorage> {
        match dtype {
            DType::F32 => Ok(CpuStorage::F32(vec![value; len])),
            DType::BF16 => Ok(CpuStorage::BF16(vec![bf16::from_f32(value); len])),
            other => dtype_err("full", format!("needs a float dtype, got {other}")),
        }
    }

    fn from_f32(&self, data: &[f32], dtype: DType) -> Result<CpuStorage> {
        match dtype {
            DType::F32 => Ok(CpuStorage::F32(data.to_vec())),
            DType::BF16 => Ok(CpuStorage::BF16(narrow(data))),
            other => dtype_err("from_f32", format!("needs a float dtype, got {other}")),
        }
    }

    fn from_u8(&self, data: &[u8]) -> Result<CpuStorage> {
        Ok(CpuStorage::U8(data.to_vec()))
    }

    fn from_u32(&self, data: &[u32]) -> Result<CpuStorage> {
        Ok(CpuStorage::U32(data.to_vec()))
    }
}

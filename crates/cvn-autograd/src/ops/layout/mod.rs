//! Ops that move data without arithmetic: reshape, permute/transpose, narrow, cat, index_select,
//! and the dtype cast.

use crate::dtype::DType;
use crate::error::{shape_err, Result};
use crate::ops::reduce::split_at_dim;
use crate::ops::{check_float, zeros_storage};
use crate::shape::{strides, StridedView};
use crate::storage::{dispatch, Storage};
use crate::tensor::Tensor;

mod cpu;
mod cuda;

/// The kernels of this op family (see [`crate::storage`]); permutations, slices and concatenation
/// are strided copies ([`crate::storage::BackendStorage::copy_strided`] / `copy_into`).
pub(crate) trait LayoutOps: Sized {
    /// Rows `ids` of a table of rows of `row` elements.
    fn index_select(&self, row: usize, ids: &[u32]) -> Result<Self>;
    /// The adjoint: `self` (rows for `ids`) added into `rows` zero rows of `row` elements.
    fn index_add(&self, rows: usize, row: usize, ids: &[u32]) -> Result<Self>;
}

/// The view of `narrow(dim, start, len)` on a contiguous tensor of `shape`.
fn narrow_view(shape: &[usize], d: usize, start: usize, len: usize) -> StridedView {
    let mut out = shape.to_vec();
    out[d] = len;
    StridedView { strides: strides(shape), offset: start * strides(shape)[d], shape: out }
}

impl Tensor {
    /// Same data, new shape (no copy). One dimension may be `usize::MAX` to be inferred.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let mut shape = shape.to_vec();
        if let Some(i) = shape.iter().position(|&d| d == usize::MAX) {
            let known: usize = shape.iter().filter(|&&d| d != usize::MAX).product();
            if known == 0 || !self.len().is_multiple_of(known) {
                return shape_err("reshape", format!("cannot infer a dimension of {:?} for {} elements", shape, self.len()));
            }
            shape[i] = self.len() / known;
        }
        if shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) != Some(self.len()) {
            return shape_err("reshape", format!("{:?} ({} elements) cannot become {shape:?}", self.shape(), self.len()));
        }
        let x = self.clone();
        Ok(Tensor::from_op_shared(self.shared_storage(), shape, &[self], move |g, grads| {
            grads.accumulate(x.id(), Tensor::from_storage_arc(g.shared_storage(), x.shape().to_vec()))
        }))
    }

    /// Reorders dimensions: output dim `i` is input dim `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
            return shape_err("permute", format!("{perm:?} is not a permutation of the {rank} dims of {:?}", self.shape()));
        }
        let st = strides(self.shape());
        let out_shape: Vec<usize> = perm.iter().map(|&p| self.shape()[p]).collect();
        let view = StridedView { shape: out_shape.clone(), strides: perm.iter().map(|&p| st[p]).collect(), offset: 0 };
        let out = self.storage().copy_strided(&view)?;
        let mut inverse = vec![0; rank];
        perm.iter().enumerate().for_each(|(i, &p)| inverse[p] = i);
        let x = self.clone();
        Ok(Tensor::from_op(out, out_shape.clone(), &[self], move |g, grads| {
            let out_strides = strides(&out_shape);
            let back = StridedView { shape: x.shape().to_vec(), strides: inverse.iter().map(|&i| out_strides[i]).collect(), offset: 0 };
            grads.accumulate(x.id(), Tensor::from_storage(g.storage().copy_strided(&back)?, x.shape().to_vec()))
        }))
    }

    /// Swaps two dimensions.
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (self.axis(a)?, self.axis(b)?);
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// The slice `start..start + len` of dimension `dim`.
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let d = self.axis(dim)?;
        if start.checked_add(len).is_none_or(|end| end > self.shape()[d]) {
            return shape_err("narrow", format!("{start}..{start}+{len} is outside dim {d} of {:?}", self.shape()));
        }
        let view = narrow_view(self.shape(), d, start, len);
        let out = self.storage().copy_strided(&view)?;
        let x = self.clone();
        Ok(Tensor::from_op(out, view.shape.clone(), &[self], move |g, grads| {
            let mut gx = zeros_storage(&x.device(), g.dtype(), x.len())?;
            gx.copy_into(&view, g.storage())?;
            grads.accumulate(x.id(), Tensor::from_storage(gx, x.shape().to_vec()))
        }))
    }

    /// Concatenates tensors along `dim`; all other dims and the device must agree (mixed float
    /// dtypes are promoted to f32).
    pub fn cat(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        let Some(first) = tensors.first() else {
            return shape_err("cat", "needs at least one tensor");
        };
        let d = first.axis(dim)?;
        for t in tensors {
            let ok = t.rank() == first.rank() && t.shape().iter().zip(first.shape()).enumerate().all(|(i, (a, b))| i == d || a == b);
            if !ok {
                return shape_err("cat", format!("{:?} does not match {:?} outside dim {d}", t.shape(), first.shape()));
            }
        }
        // Mixed float dtypes meet in f32 (PyTorch's promotion: a bf16 branch joining f32 tokens).
        if tensors.iter().any(|t| t.dtype() != first.dtype()) {
            let promoted = tensors.iter().map(|t| t.to_dtype(DType::F32)).collect::<Result<Vec<_>>>()?;
            return Tensor::cat(&promoted.iter().collect::<Vec<_>>(), dim);
        }
        let dtype = first.dtype();
        let mut shape = first.shape().to_vec();
        shape[d] = tensors.iter().map(|t| t.shape()[d]).sum();
        let mut out = zeros_storage(&first.device(), dtype, shape.iter().product())?;
        let mut views = Vec::with_capacity(tensors.len());
        let mut start = 0;
        for t in tensors {
            let view = narrow_view(&shape, d, start, t.shape()[d]);
            out.copy_into(&view, t.storage())?;
            start += t.shape()[d];
            views.push(view);
        }
        let inputs: Vec<Tensor> = tensors.iter().map(|t| (*t).clone()).collect();
        Ok(Tensor::from_op(out, shape, tensors, move |g, grads| {
            for (t, view) in inputs.iter().zip(&views) {
                if t.requires_grad() {
                    grads.accumulate(t.id(), Tensor::from_storage(g.storage().copy_strided(view)?, t.shape().to_vec()))?;
                }
            }
            Ok(())
        }))
    }

    /// Rows of a `[rows, ...]` table picked by `ids` (embedding lookup); output `[ids.len(), ...]`.
    pub fn index_select(&self, ids: &[usize]) -> Result<Tensor> {
        check_float("index_select", self)?;
        let Some(&rows) = self.shape().first() else {
            return shape_err("index_select", "needs a table of rank ≥ 1");
        };
        if let Some(bad) = ids.iter().find(|&&i| i >= rows) {
            return shape_err("index_select", format!("index {bad} is out of range for {rows} rows"));
        }
        let (_, _, row) = split_at_dim(self.shape(), 0);
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        let out: Storage = dispatch!("index_select", (self.storage()) => |t| t.index_select(row, &ids))?;
        let mut shape = self.shape().to_vec();
        shape[0] = ids.len();
        let x = self.clone();
        Ok(Tensor::from_op(out, shape, &[self], move |g, grads| {
            let gx: Storage = dispatch!("index_select", (g.storage()) => |gs| gs.index_add(rows, row, &ids))?;
            grads.accumulate(x.id(), Tensor::from_storage(gx, x.shape().to_vec()))
        }))
    }

    /// The same values as `dtype` (f32 ↔ bf16, rounded to nearest even). Differentiable: the
    /// gradient is cast back, so f32 master weights used in bf16 receive f32 gradients.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        check_float("to_dtype", self)?;
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let out = self.storage().cast(dtype)?;
        let x = self.clone();
        Ok(Tensor::from_op(out, self.shape().to_vec(), &[self], move |g, grads| {
            grads.accumulate(x.id(), Tensor::from_storage(g.storage().cast(x.dtype())?, x.shape().to_vec()))
        }))
    }
}

//! Ops that move data without arithmetic: reshape, permute/transpose, narrow, cat, index_select.

use crate::error::{shape_err, Result};
use crate::ops::reduce::split_at_dim;
use crate::shape::{for_each_mapped, strides};
use crate::tensor::Tensor;

/// Copies `x` (of `shape`) into the order given by `perm`.
fn permute_data(x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let st = strides(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let src_strides: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    let mut out = vec![0.0; x.len()];
    for_each_mapped(&out_shape, &src_strides, |o, s| out[o] = x[s]);
    out
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
        if shape.iter().product::<usize>() != self.len() {
            return shape_err("reshape", format!("{:?} ({} elements) cannot become {shape:?}", self.shape(), self.len()));
        }
        let x = self.clone();
        Ok(Tensor::from_op_shared(self.shared_data(), shape, &[self], move |g, grads| {
            grads.accumulate(x.id(), g.to_vec());
            Ok(())
        }))
    }

    /// Reorders dimensions: output dim `i` is input dim `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
            return shape_err("permute", format!("{perm:?} is not a permutation of the {rank} dims of {:?}", self.shape()));
        }
        let shape = self.shape().to_vec();
        let out = permute_data(self.data(), &shape, perm);
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let mut inverse = vec![0; rank];
        perm.iter().enumerate().for_each(|(i, &p)| inverse[p] = i);
        let x = self.clone();
        Ok(Tensor::from_op(out, out_shape.clone(), &[self], move |g, grads| {
            grads.accumulate(x.id(), permute_data(g, &out_shape, &inverse));
            Ok(())
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
        let (outer, size, inner) = split_at_dim(self.shape(), d);
        if start + len > size {
            return shape_err("narrow", format!("{start}..{} is outside dim {d} of {:?}", start + len, self.shape()));
        }
        let x = self.data();
        let mut out = Vec::with_capacity(outer * len * inner);
        for o in 0..outer {
            out.extend_from_slice(&x[(o * size + start) * inner..(o * size + start + len) * inner]);
        }
        let mut shape = self.shape().to_vec();
        shape[d] = len;
        let input = self.clone();
        Ok(Tensor::from_op(out, shape, &[self], move |g, grads| {
            let mut gx = vec![0.0; outer * size * inner];
            for o in 0..outer {
                gx[(o * size + start) * inner..(o * size + start + len) * inner]
                    .copy_from_slice(&g[o * len * inner..(o + 1) * len * inner]);
            }
            grads.accumulate(input.id(), gx);
            Ok(())
        }))
    }

    /// Concatenates tensors along `dim`; all other dims must agree.
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
        let (outer, _, inner) = split_at_dim(first.shape(), d);
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape()[d]).collect();
        let total: usize = sizes.iter().sum();
        let mut out = Vec::with_capacity(outer * total * inner);
        for o in 0..outer {
            for (t, &s) in tensors.iter().zip(&sizes) {
                out.extend_from_slice(&t.data()[o * s * inner..(o + 1) * s * inner]);
            }
        }
        let mut shape = first.shape().to_vec();
        shape[d] = total;
        let inputs: Vec<Tensor> = tensors.iter().map(|t| (*t).clone()).collect();
        Ok(Tensor::from_op(out, shape, tensors, move |g, grads| {
            let mut offset = 0;
            for (t, &s) in inputs.iter().zip(&sizes) {
                if t.requires_grad() {
                    let mut gt = Vec::with_capacity(outer * s * inner);
                    for o in 0..outer {
                        let base = (o * total + offset) * inner;
                        gt.extend_from_slice(&g[base..base + s * inner]);
                    }
                    grads.accumulate(t.id(), gt);
                }
                offset += s;
            }
            Ok(())
        }))
    }

    /// Rows of a `[rows, ...]` table picked by `ids` (embedding lookup); output `[ids.len(), ...]`.
    pub fn index_select(&self, ids: &[usize]) -> Result<Tensor> {
        let rows = *self.shape().first().unwrap_or(&0);
        let row = self.len() / rows.max(1);
        if let Some(bad) = ids.iter().find(|&&i| i >= rows) {
            return shape_err("index_select", format!("index {bad} is out of range for {rows} rows"));
        }
        let table = self.data();
        let mut out = Vec::with_capacity(ids.len() * row);
        ids.iter().for_each(|&i| out.extend_from_slice(&table[i * row..(i + 1) * row]));
        let mut shape = self.shape().to_vec();
        if shape.is_empty() {
            return shape_err("index_select", "needs a table of rank ≥ 1");
        }
        shape[0] = ids.len();
        let (x, ids) = (self.clone(), ids.to_vec());
        Ok(Tensor::from_op(out, shape, &[self], move |g, grads| {
            let mut gx = vec![0.0; rows * row];
            for (k, &i) in ids.iter().enumerate() {
                gx[i * row..(i + 1) * row].iter_mut().zip(&g[k * row..(k + 1) * row]).for_each(|(a, b)| *a += b);
            }
            grads.accumulate(x.id(), gx);
            Ok(())
        }))
    }
}

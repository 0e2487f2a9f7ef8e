//! Matrix products: batched `matmul` and `linear` (PyTorch weight layout `[out, in]`), on the blocked,
//! multi-threaded `matrixmultiply` GEMM. Transposes are strides, never copies.

use rayon::prelude::*;

use crate::error::{shape_err, Result};
use crate::tensor::Tensor;

/// A row-major matrix view, possibly transposed: element (i, j) at `i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: isize,
    pub cs: isize,
}

impl<'a> Mat<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols as isize, cs: 1 }
    }

    pub fn t(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
}

/// `c = a·b + beta·c` through a raw pointer to `a.rows × b.cols` row-major elements.
///
/// # Safety
/// `c` must point to that many writable floats, initialised unless `beta` is 0 (then sgemm only
/// writes them); the views' extents were checked by the callers' shape validation.
unsafe fn sgemm(a: Mat, b: Mat, c: *mut f32, beta: f32) {
    matrixmultiply::sgemm(
        a.rows,
        a.cols,
        b.cols,
        1.0,
        a.data.as_ptr(),
        a.rs,
        a.cs,
        b.data.as_ptr(),
        b.rs,
        b.cs,
        beta,
        c,
        b.cols as isize,
        1,
    )
}

/// `c = a·b + beta·c` with `c` row-major `[a.rows, b.cols]`.
pub(crate) fn gemm(a: Mat, b: Mat, c: &mut [f32], beta: f32) {
    debug_assert_eq!(a.cols, b.rows);
    debug_assert_eq!(c.len(), a.rows * b.cols);
    if a.rows == 0 || b.cols == 0 {
        return;
    }
    if a.cols == 0 {
        // BLAS semantics: β = 0 never reads C (it may hold anything, NaN included).
        if beta == 0.0 {
            c.fill(0.0);
        } else {
            c.iter_mut().for_each(|v| *v *= beta);
        }
        return;
    }
    // SAFETY: `c` holds rows × cols initialised elements.
    unsafe { sgemm(a, b, c.as_mut_ptr(), beta) }
}

/// `a·b` into a new row-major vector, without zero-filling it first (β = 0 never reads C).
pub(crate) fn gemm_new(a: Mat, b: Mat) -> Vec<f32> {
    let n = a.rows * b.cols;
    if a.cols == 0 || n == 0 {
        return vec![0.0; n];
    }
    let mut c = Vec::with_capacity(n);
    // SAFETY: capacity for `n` floats; with β = 0 sgemm writes all of them before `set_len`.
    unsafe {
        sgemm(a, b, c.as_mut_ptr(), 0.0);
        c.set_len(n);
    }
    c
}

/// Runs `batch` independent GEMMs, in parallel when they are small enough not to be threaded inside.
fn batched(batch: usize, m: usize, n: usize, out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    if batch <= 1 || m * n >= 1 << 16 {
        out.chunks_mut(m * n).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        out.par_chunks_mut(m * n).enumerate().for_each(|(i, c)| f(i, c));
    }
}

impl Tensor {
    /// Batched matrix product: `[..., m, k] · [..., k, n]` with equal leading dims, or `[..., m, k] · [k, n]`.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        let (a_shape, b_shape) = (self.shape(), other.shape());
        if a_shape.len() < 2 || b_shape.len() < 2 {
            return shape_err("matmul", format!("needs matrices, got {a_shape:?} and {b_shape:?}"));
        }
        let (m, k) = (a_shape[a_shape.len() - 2], a_shape[a_shape.len() - 1]);
        let (k2, n) = (b_shape[b_shape.len() - 2], b_shape[b_shape.len() - 1]);
        let batch_a = &a_shape[..a_shape.len() - 2];
        let shared_b = b_shape.len() == 2;
        if k != k2 || (!shared_b && batch_a != &b_shape[..b_shape.len() - 2]) {
            return shape_err("matmul", format!("cannot multiply {a_shape:?} by {b_shape:?}"));
        }
        let batch: usize = batch_a.iter().product();
        let mut out_shape = batch_a.to_vec();
        out_shape.extend([m, n]);
        if shared_b {
            // One GEMM over all rows: [(batch·m), k] · [k, n].
            let out = gemm_new(Mat::new(self.data(), batch * m, k), Mat::new(other.data(), k, n));
            return Ok(self.record_matmul(other, out, out_shape, batch, m, k, n, true));
        }
        let mut out = vec![0.0; batch * m * n];
        let (a, b) = (self.data(), other.data());
        batched(batch, m, n, &mut out, |i, c| {
            gemm(Mat::new(&a[i * m * k..(i + 1) * m * k], m, k), Mat::new(&b[i * k * n..(i + 1) * k * n], k, n), c, 0.0)
        });
        Ok(self.record_matmul(other, out, out_shape, batch, m, k, n, false))
    }

    #[allow(clippy::too_many_arguments)]
    fn record_matmul(
        &self,
        other: &Tensor,
        out: Vec<f32>,
        out_shape: Vec<usize>,
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
        shared_b: bool,
    ) -> Tensor {
        let (a_in, b_in) = (self.clone(), other.clone());
        Tensor::from_op(out, out_shape, &[self, other], move |g, grads| {
            let (a, b) = (a_in.data(), b_in.data());
            if a_in.requires_grad() {
                // dA = dC · Bᵀ
                let ga = if shared_b {
                    gemm_new(Mat::new(g, batch * m, n), Mat::new(b, k, n).t())
                } else {
                    let mut ga = vec![0.0; batch * m * k];
                    batched(batch, m, k, &mut ga, |i, c| {
                        gemm(Mat::new(&g[i * m * n..(i + 1) * m * n], m, n), Mat::new(&b[i * k * n..(i + 1) * k * n], k, n).t(), c, 0.0)
                    });
                    ga
                };
                grads.accumulate(a_in.id(), ga);
            }
            if b_in.requires_grad() {
                // dB = Aᵀ · dC (summed over the batch when B is shared)
                let gb = if shared_b {
                    gemm_new(Mat::new(a, batch * m, k).t(), Mat::new(g, batch * m, n))
                } else {
                    let mut gb = vec![0.0; batch * k * n];
                    batched(batch, k, n, &mut gb, |i, c| {
                        gemm(Mat::new(&a[i * m * k..(i + 1) * m * k], m, k).t(), Mat::new(&g[i * m * n..(i + 1) * m * n], m, n), c, 0.0)
                    });
                    gb
                };
                grads.accumulate(b_in.id(), gb);
            }
            Ok(())
        })
    }

    /// `x · wᵀ + b` over the last dimension, with `w` in PyTorch's `[out, in]` layout.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let x_shape = self.shape();
        let (Some(&in_f), [out_f, in_w]) = (x_shape.last(), weight.shape()) else {
            return shape_err("linear", format!("input {x_shape:?} and weight {:?} ([out, in])", weight.shape()));
        };
        let out_f = *out_f;
        if in_f != *in_w {
            return shape_err("linear", format!("input has {in_f} features, weight {:?} expects {in_w}", weight.shape()));
        }
        if let Some(b) = bias {
            if b.shape() != [out_f] {
                return shape_err("linear", format!("bias {:?} should be [{out_f}]", b.shape()));
            }
        }
        let rows = self.len() / in_f.max(1);
        let mut out = gemm_new(Mat::new(self.data(), rows, in_f), Mat::new(weight.data(), out_f, in_f).t());
        if let Some(b) = bias {
            out.par_chunks_mut(out_f.max(1) * 64).for_each(|c| {
                c.chunks_mut(out_f.max(1)).for_each(|r| r.iter_mut().zip(b.data()).for_each(|(o, b)| *o += b));
            });
        }
        let mut shape = x_shape.to_vec();
        *shape.last_mut().expect("rank ≥ 1 checked above") = out_f;
        let (x, w, b) = (self.clone(), weight.clone(), bias.cloned());
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(Tensor::from_op(out, shape, &inputs, move |g, grads| {
            if x.requires_grad() {
                let gx = gemm_new(Mat::new(g, rows, out_f), Mat::new(w.data(), out_f, in_f));
                grads.accumulate(x.id(), gx);
            }
            if w.requires_grad() {
                let gw = gemm_new(Mat::new(g, rows, out_f).t(), Mat::new(x.data(), rows, in_f));
                grads.accumulate(w.id(), gw);
            }
            if let Some(b) = b.filter(|b| b.requires_grad()) {
                let mut gb = vec![0.0f32; out_f];
                for r in g.chunks_exact(out_f) {
                    gb.iter_mut().zip(r).for_each(|(a, v)| *a += v);
                }
                grads.accumulate(b.id(), gb);
            }
            Ok(())
        }))
    }
}

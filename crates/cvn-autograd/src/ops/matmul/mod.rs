//! Matrix products: batched `matmul` and `linear` (PyTorch weight layout `[out, in]`). Every
//! product — forward and backward, transposes included — is one call of the backend's strided,
//! batched GEMM ([`MatmulOps::gemm`]: `matrixmultiply` on the CPU, cuBLAS on CUDA); transposes are
//! strides, never copies.

use crate::error::{shape_err, Result};
use crate::ops::binary::{BinaryOp, BroadcastLayout};
use crate::ops::{check_same_dtype, reduce_to_shape};
use crate::storage::{dispatch, Storage};
use crate::tensor::Tensor;

mod cpu;
mod cuda;

/// One operand of a batched product: matrix `bi` starts at `offset + bi·batch_stride`, its element
/// `(i, j)` at `+ i·row_stride + j·col_stride`; one of the two strides is 1 (row-major or
/// transposed), as BLAS needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GemmOperand {
    pub offset: usize,
    pub row_stride: usize,
    pub col_stride: usize,
    pub batch_stride: usize,
}

impl GemmOperand {
    /// Row-major `[rows, cols]` matrices one after another.
    pub(crate) fn rows(cols: usize, batch_stride: usize) -> Self {
        Self { offset: 0, row_stride: cols, col_stride: 1, batch_stride }
    }

    /// The transposes of row-major `[rows, cols]` matrices: `[cols, rows]` views.
    pub(crate) fn transposed(cols: usize, batch_stride: usize) -> Self {
        Self { offset: 0, row_stride: 1, col_stride: cols, batch_stride }
    }

    /// One past the largest element a `rows × cols` operand of `batch` matrices touches.
    pub(crate) fn extent(&self, batch: usize, rows: usize, cols: usize) -> usize {
        if batch == 0 || rows == 0 || cols == 0 {
            return 0;
        }
        self.offset + (batch - 1) * self.batch_stride + (rows - 1) * self.row_stride + (cols - 1) * self.col_stride + 1
    }
}

/// `C[bi] = A[bi]·B[bi]` for `bi < batch`: `A` is `m × k`, `B` is `k × n`, `C` contiguous
/// `[batch, m, n]` in `A`'s dtype (f32 accumulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GemmSpec {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: GemmOperand,
    pub b: GemmOperand,
}

impl GemmSpec {
    /// Checks that both operands lie inside their storages and one stride of each is 1.
    pub(crate) fn check(&self, a_len: usize, b_len: usize) -> Result<()> {
        let unit = |o: &GemmOperand| o.row_stride == 1 || o.col_stride == 1;
        if !unit(&self.a)
            || !unit(&self.b)
            || self.a.extent(self.batch, self.m, self.k) > a_len
            || self.b.extent(self.batch, self.k, self.n) > b_len
        {
            return shape_err("gemm", format!("{self:?} does not fit operands of {a_len} and {b_len} elements"));
        }
        Ok(())
    }
}

/// The kernels of this op family (see [`crate::storage`]).
pub(crate) trait MatmulOps: Sized {
    /// The product described by `spec` (`self` is `A`, `rhs` is `B`).
    fn gemm(&self, rhs: &Self, spec: &GemmSpec) -> Result<Self>;
}

fn gemm(a: &Storage, b: &Storage, spec: GemmSpec) -> Result<Storage> {
    spec.check(a.len(), b.len())?;
    dispatch!("matmul", (a, b) => |x, y| x.gemm(y, &spec))
}

impl Tensor {
    /// Batched matrix product: `[..., m, k] · [..., k, n]` with equal leading dims, or `[..., m, k] · [k, n]`.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        check_same_dtype("matmul", &[self, other])?;
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
        // A shared right operand makes one GEMM over all rows: [(batch·m), k] · [k, n].
        let (gb, gm) = if shared_b { (1, batch * m) } else { (batch, m) };
        let b_batch = if shared_b { 0 } else { k * n };
        let spec = GemmSpec { batch: gb, m: gm, n, k, a: GemmOperand::rows(k, m * k), b: GemmOperand::rows(n, b_batch) };
        let out = gemm(self.storage(), other.storage(), spec)?;
        let (a_in, b_in) = (self.clone(), other.clone());
        Ok(Tensor::from_op(out, out_shape, &[self, other], move |g, grads| {
            if a_in.requires_grad() {
                // dA = dC · Bᵀ
                let spec =
                    GemmSpec { batch: gb, m: gm, n: k, k: n, a: GemmOperand::rows(n, m * n), b: GemmOperand::transposed(n, b_batch) };
                let ga = gemm(g.storage(), b_in.storage(), spec)?;
                grads.accumulate(a_in.id(), Tensor::from_storage(ga, a_in.shape().to_vec()))?;
            }
            if b_in.requires_grad() {
                // dB = Aᵀ · dC (summed over the batch when B is shared: one GEMM over all rows)
                let spec = if shared_b {
                    GemmSpec { batch: 1, m: k, n, k: batch * m, a: GemmOperand::transposed(k, 0), b: GemmOperand::rows(n, 0) }
                } else {
                    GemmSpec { batch, m: k, n, k: m, a: GemmOperand::transposed(k, m * k), b: GemmOperand::rows(n, m * n) }
                };
                let gb_ = gemm(a_in.storage(), g.storage(), spec)?;
                grads.accumulate(b_in.id(), Tensor::from_storage(gb_, b_in.shape().to_vec()))?;
            }
            Ok(())
        }))
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
        let mut inputs = vec![self, weight];
        if let Some(b) = bias {
            if b.shape() != [out_f] {
                return shape_err("linear", format!("bias {:?} should be [{out_f}]", b.shape()));
            }
            inputs.push(b);
        }
        check_same_dtype("linear", &inputs)?;
        let rows = self.len() / in_f.max(1);
        let spec = GemmSpec { batch: 1, m: rows, n: out_f, k: in_f, a: GemmOperand::rows(in_f, 0), b: GemmOperand::transposed(in_f, 0) };
        let mut out = gemm(self.storage(), weight.storage(), spec)?;
        let bias_layout = BroadcastLayout::new("linear", &[rows, out_f], &[out_f])?;
        if let Some(b) = bias {
            dispatch!("linear", mut &mut out, (b.storage()) => |o, bs| o.binary_assign(bs, BinaryOp::Add, &bias_layout))?;
        }
        let mut shape = x_shape.to_vec();
        *shape.last_mut().expect("rank ≥ 1 checked above") = out_f;
        let (x, w, b) = (self.clone(), weight.clone(), bias.cloned());
        Ok(Tensor::from_op(out, shape, &inputs, move |g, grads| {
            if x.requires_grad() {
                let spec = GemmSpec { batch: 1, m: rows, n: in_f, k: out_f, a: GemmOperand::rows(out_f, 0), b: GemmOperand::rows(in_f, 0) };
                grads.accumulate(x.id(), Tensor::from_storage(gemm(g.storage(), w.storage(), spec)?, x.shape().to_vec()))?;
            }
            if w.requires_grad() {
                let spec =
                    GemmSpec { batch: 1, m: out_f, n: in_f, k: rows, a: GemmOperand::transposed(out_f, 0), b: GemmOperand::rows(in_f, 0) };
                grads.accumulate(w.id(), Tensor::from_storage(gemm(g.storage(), x.storage(), spec)?, w.shape().to_vec()))?;
            }
            if let Some(b) = b.filter(|b| b.requires_grad()) {
                let gb = reduce_to_shape(&g.shared_storage(), &[rows, out_f], &[1, out_f])?;
                grads.accumulate(b.id(), Tensor::from_storage_arc(gb, vec![out_f]))?;
            }
            Ok(())
        }))
    }
}

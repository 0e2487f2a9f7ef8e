use super::{GemmOperand, GemmSpec, MatmulOps};
use crate::cuda::{CudaStorage, Operand, RowMajor, RowMajorMut};
use crate::error::Result;
use crate::storage::BackendStorage;

fn operand(o: &GemmOperand) -> Operand {
    Operand { offset: o.offset, row_stride: o.row_stride, col_stride: o.col_stride, batch_stride: o.batch_stride }
}

impl MatmulOps for CudaStorage {
    /// One `cublasGemmStridedBatchedEx` (bf16 or f32 in, f32 accumulation, C in A's dtype).
    fn gemm(&self, rhs: &Self, spec: &GemmSpec) -> Result<Self> {
        let GemmSpec { batch, m, n, k, .. } = *spec;
        let mut out = self.alloc_like(self.dtype(), batch * m * n)?;
        if k == 0 {
            out.zero()?;
            return Ok(out);
        }
        let c = Operand::rows(n, m * n);
        self.dev().gemm(
            batch,
            m,
            n,
            k,
            RowMajor { storage: self, view: operand(&spec.a) },
            RowMajor { storage: rhs, view: operand(&spec.b) },
            RowMajorMut { storage: &mut out, view: c },
            0.0,
        )?;
        Ok(out)
    }
}

use rayon::prelude::*;

use super::{GemmOperand, GemmSpec, MatmulOps};
use crate::cpu::gemm::{gemm, matmul, Mat, SPLIT_MACS};
use crate::cpu::CpuStorage;
use crate::error::Result;
use crate::storage::BackendStorage;

fn view<'a>(data: &'a [f32], o: &GemmOperand, bi: usize, rows: usize, cols: usize) -> Mat<'a> {
    // An empty operand may start past the end; the GEMM checks every view it is given.
    let start = (o.offset + bi * o.batch_stride).min(data.len());
    Mat::strided(&data[start..], rows, cols, o.row_stride, o.col_stride)
}

impl MatmulOps for CpuStorage {
    fn gemm(&self, rhs: &Self, spec: &GemmSpec) -> Result<Self> {
        let (a, b) = (self.floats("matmul")?, rhs.floats("matmul")?);
        let GemmSpec { batch, m, n, k, .. } = *spec;
        let out = if batch == 1 {
            matmul(view(&a, &spec.a, 0, m, k), view(&b, &spec.b, 0, k, n))?
        } else {
            let mut out = vec![0.0; batch * m * n];
            let one = |(bi, c): (usize, &mut [f32])| gemm(view(&a, &spec.a, bi, m, k), view(&b, &spec.b, bi, k, n), c, 0.0);
            // Small products run side by side; large ones are split over the threads inside the GEMM.
            if m * n * k >= SPLIT_MACS {
                out.chunks_mut((m * n).max(1)).enumerate().try_for_each(one)?;
            } else {
                out.par_chunks_mut((m * n).max(1)).enumerate().try_for_each(one)?;
            }
            out
        };
        Ok(CpuStorage::from_floats(out, self.dtype()))
    }
}

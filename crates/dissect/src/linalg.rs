//! The one matrix product of the crate: `matrixmultiply::sgemm` (threaded) behind a checked, safe
//! interface over strided views of row-major buffers.

/// A matrix inside a slice: `rows × cols`, element `(i, j)` at `i·row_stride + j·col_stride`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operand<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Operand<'a> {
    /// A row-major `rows × cols` matrix.
    pub(crate) fn matrix(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose (`cols × rows`) of a row-major `rows × cols` matrix, without copying.
    pub(crate) fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows: cols, cols: rows, row_stride: 1, col_stride: cols }
    }

    /// One past the largest index the view touches (0 when empty).
    fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1
        }
    }
}

/// `a · b` as a row-major `a.rows × b.cols` buffer.
///
/// Panics if the inner dimensions differ or a view reaches past its slice: both are bugs of the
/// caller inside this crate (public functions check user shapes before building operands).
pub(crate) fn matmul(a: Operand, b: Operand) -> Vec<f32> {
    assert_eq!(a.cols, b.rows, "matmul: inner dimensions differ");
    assert!(a.extent() <= a.data.len() && b.extent() <= b.data.len(), "matmul: view outside its buffer");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let mut out = vec![0.0f32; m * n];
    if m == 0 || n == 0 || k == 0 {
        return out;
    }
    // SAFETY: every index sgemm reads lies within the extents checked above; `out` is exactly
    // m × n with row stride n.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            0.0,
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_with_transposed_views() {
        // a = [[1, 2, 3], [4, 5, 6]] (2×3), b = [[1, 0], [0, 1], [1, 1]] (3×2).
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        assert_eq!(matmul(Operand::matrix(&a, 2, 3), Operand::matrix(&b, 3, 2)), vec![4.0, 5.0, 10.0, 11.0]);
        // aᵀ a (3×3) from the same buffer twice.
        let ata = matmul(Operand::transposed(&a, 2, 3), Operand::matrix(&a, 2, 3));
        assert_eq!(ata, vec![17.0, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0]);
        // a bᵀ where b is stored as 2×3 rows.
        let rows = [1.0, 1.0, 1.0, 0.0, 1.0, 0.0];
        assert_eq!(matmul(Operand::matrix(&a, 2, 3), Operand::transposed(&rows, 2, 3)), vec![6.0, 2.0, 15.0, 5.0]);
    }
}

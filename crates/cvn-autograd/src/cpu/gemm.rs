//! The workspace's one CPU matrix product: `matrixmultiply::sgemm` (blocked, multi-threaded)
//! behind a checked interface over strided views of row-major buffers. Every view is checked
//! against its slice before the unsafe call, so no caller can make it read or write out of bounds.
//! `dissect` uses it too.

use crate::error::{shape_err, Result};

/// A matrix inside a slice: `rows × cols`, element `(i, j)` at `i·row_stride + j·col_stride`.
/// The fields are private: a view is made by [`Mat::new`] or [`Mat::strided`] and checked when used.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows × cols` matrix at the start of `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// A general strided view (e.g. one attention head inside `[T, C]` rows).
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Self {
        Self { data, rows, cols, row_stride, col_stride }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// One past the largest index the view touches (0 when empty).
    fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1
        }
    }

    fn check(&self, which: &str) -> Result<()> {
        if self.extent() > self.data.len() {
            return shape_err(
                "gemm",
                format!(
                    "{which} view {}×{} (strides {}, {}) reaches past its {} elements",
                    self.rows,
                    self.cols,
                    self.row_stride,
                    self.col_stride,
                    self.data.len()
                ),
            );
        }
        Ok(())
    }
}

/// `c = a·b + beta·c` with `c` row-major `[a.rows, b.cols]`. With `beta = 0`, `c` is never read
/// (it may hold anything, NaN included), as in BLAS.
pub fn gemm(a: Mat, b: Mat, c: &mut [f32], beta: f32) -> Result<()> {
    a.check("a")?;
    b.check("b")?;
    if a.cols != b.rows || c.len() != a.rows * b.cols {
        return shape_err("gemm", format!("[{}, {}] · [{}, {}] into {} elements", a.rows, a.cols, b.rows, b.cols, c.len()));
    }
    if a.rows == 0 || b.cols == 0 {
        return Ok(());
    }
    if a.cols == 0 {
        if beta == 0.0 {
            c.fill(0.0);
        } else {
            c.iter_mut().for_each(|v| *v *= beta);
        }
        return Ok(());
    }
    // SAFETY: both views lie inside their slices (checked above) and `c` holds exactly
    // a.rows × b.cols elements with row stride b.cols.
    unsafe { sgemm(a, b, c.as_mut_ptr(), beta) };
    Ok(())
}

/// `a·b` into a new row-major vector (never zero-filled first: β = 0 writes every element).
pub fn matmul(a: Mat, b: Mat) -> Result<Vec<f32>> {
    a.check("a")?;
    b.check("b")?;
    if a.cols != b.rows {
        return shape_err("matmul", format!("[{}, {}] · [{}, {}]", a.rows, a.cols, b.rows, b.cols));
    }
    let n = a.rows * b.cols;
    if a.cols == 0 || n == 0 {
        return Ok(vec![0.0; n]);
    }
    let mut c = Vec::with_capacity(n);
    // SAFETY: views checked above; capacity for `n` floats, all written by sgemm (β = 0) before
    // `set_len`.
    unsafe {
        sgemm(a, b, c.as_mut_ptr(), 0.0);
        c.set_len(n);
    }
    Ok(c)
}

/// # Safety
/// The views must lie inside their slices and `c` must point to `a.rows × b.cols` writable floats
/// (initialised unless `beta` is 0).
unsafe fn sgemm(a: Mat, b: Mat, c: *mut f32, beta: f32) {
    matrixmultiply::sgemm(
        a.rows,
        a.cols,
        b.cols,
        1.0,
        a.data.as_ptr(),
        a.row_stride as isize,
        a.col_stride as isize,
        b.data.as_ptr(),
        b.row_stride as isize,
        b.col_stride as isize,
        beta,
        c,
        b.cols as isize,
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_with_transposed_and_strided_views() {
        // a = [[1, 2, 3], [4, 5, 6]] (2×3), b = [[1, 0], [0, 1], [1, 1]] (3×2).
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        assert_eq!(matmul(Mat::new(&a, 2, 3), Mat::new(&b, 3, 2)).unwrap(), vec![4.0, 5.0, 10.0, 11.0]);
        // aᵀ·a (3×3) from the same buffer twice.
        let ata = matmul(Mat::new(&a, 2, 3).t(), Mat::new(&a, 2, 3)).unwrap();
        assert_eq!(ata, vec![17.0, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0]);
        // column 1 of a as a 2×1 view
        assert_eq!(matmul(Mat::strided(&a[1..], 2, 1, 3, 1), Mat::new(&[2.0], 1, 1)).unwrap(), vec![4.0, 10.0]);
        let mut c = vec![1.0; 4];
        gemm(Mat::new(&a, 2, 3), Mat::new(&b, 3, 2), &mut c, 1.0).unwrap();
        assert_eq!(c, vec![5.0, 6.0, 11.0, 12.0]);
    }

    #[test]
    fn views_outside_their_slices_are_errors_not_reads() {
        let a = [1.0; 5];
        assert!(matmul(Mat::new(&a, 2, 3), Mat::new(&a, 3, 1)).is_err());
        assert!(matmul(Mat::strided(&a, 2, 2, 4, 1), Mat::new(&a, 2, 1)).is_err());
        assert!(gemm(Mat::new(&a, 1, 2), Mat::new(&a, 2, 2), &mut [0.0; 3], 0.0).is_err());
        assert!(matmul(Mat::new(&a, 1, 2), Mat::new(&a, 3, 1)).is_err());
    }
}

//! The workspace's one CPU matrix product: `matrixmultiply::sgemm` (blocked, single-threaded)
//! behind a checked interface over strided views of row-major buffers. Every view is checked
//! against its slice before the unsafe call, so no caller can make it read or write out of bounds.
//! `dissect` uses it too.
//!
//! Threads come from rayon, the pool every other kernel uses (matrixmultiply's own pool spun
//! against it): a large product called from outside the pool is cut into row (or column) slices
//! of the output, one per rayon thread. Inside a pool task — one image of a convolution, one
//! image's attention — the caller already runs products side by side, so the product stays on
//! its thread. Every output element is the same sum in the same order whichever way the product
//! is cut, so results do not depend on the number of threads.

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

/// Products with fewer multiply-adds run unsplit: below this, packing the shared operand once
/// per slice costs more than the second thread saves.
pub(crate) const SPLIT_MACS: usize = 1 << 21;
/// The fewest output rows (or columns) a slice gets, a few micro-kernel tiles.
const MIN_SLICE: usize = 64;

/// The raw output: `rows × cols` floats, row stride `row_stride`, at `ptr`.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    row_stride: usize,
}

// SAFETY: slices of one product write disjoint rows or columns of the output (see `sgemm`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// # Safety
/// The views must lie inside their slices and `c` must point to `a.rows × b.cols` writable floats
/// (initialised unless `beta` is 0).
unsafe fn sgemm(a: Mat, b: Mat, c: *mut f32, beta: f32) {
    let (m, n) = (a.rows, b.cols);
    let threads = rayon::current_num_threads();
    let parts = if threads < 2 || m * a.cols * n < SPLIT_MACS || rayon::current_thread_index().is_some() {
        1
    } else {
        threads.min(m.max(n) / MIN_SLICE).max(1)
    };
    sgemm_split(a, b, c, beta, parts)
}

/// [`sgemm`] cut into `parts` slices of the output's longer side (so the operand packed once per
/// slice is the smaller one), run as rayon tasks.
///
/// # Safety
/// As [`sgemm`].
unsafe fn sgemm_split(a: Mat, b: Mat, c: *mut f32, beta: f32, parts: usize) {
    let (m, n) = (a.rows, b.cols);
    let out = Out { ptr: c, row_stride: n };
    if parts <= 1 {
        return sgemm_slice(a, b, out, 0..m, 0..n, beta);
    }
    let (long, cut_rows) = if m >= n { (m, true) } else { (n, false) };
    let step = long.div_ceil(parts);
    rayon::scope(|scope| {
        for start in (0..long).step_by(step) {
            let span = start..(start + step).min(long);
            let (rows, cols) = if cut_rows { (span, 0..n) } else { (0..m, span) };
            // SAFETY: the slices' output rows (or columns) are disjoint and inside `c`.
            scope.spawn(move |_| unsafe { sgemm_slice(a, b, out, rows, cols, beta) });
        }
    });
}

/// Output rows `rows` × columns `cols` of `a·b + beta·c`.
///
/// # Safety
/// As [`sgemm`], with the ranges inside `a.rows` and `b.cols`; no other thread may touch these
/// output elements meanwhile.
unsafe fn sgemm_slice(a: Mat, b: Mat, out: Out, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>, beta: f32) {
    matrixmultiply::sgemm(
        rows.len(),
        a.cols,
        cols.len(),
        1.0,
        a.data.as_ptr().add(rows.start * a.row_stride),
        a.row_stride as isize,
        a.col_stride as isize,
        b.data.as_ptr().add(cols.start * b.col_stride),
        b.row_stride as isize,
        b.col_stride as isize,
        beta,
        out.ptr.add(rows.start * out.row_stride + cols.start),
        out.row_stride as isize,
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

    /// A float64 reference product.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for p in 0..k {
                for j in 0..n {
                    c[i * n + j] += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
            }
        }
        c
    }

    #[test]
    fn split_products_are_right_and_do_not_depend_on_the_cut() {
        // Tall (rows cut) and wide (columns cut, through a transposed view), with β = 0 and with
        // β = 1 accumulation; odd sizes so the last slice is short.
        for &(m, k, n) in &[(517, 97, 131), (67, 129, 601)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 613) as f32 / 613.0 - 0.5).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 104_729) % 331) as f32 / 331.0 - 0.5).collect();
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let want = reference(&a, &b, m, k, n);
            let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
            for parts in [1, 2, 3, 7] {
                let mut c = vec![f32::NAN; m * n];
                let mut acc = vec![1.0f32; m * n];
                // SAFETY: the views are the whole buffers; `c` and `acc` hold m × n floats.
                unsafe {
                    sgemm_split(Mat::new(&a, m, k), Mat::new(&bt, n, k).t(), c.as_mut_ptr(), 0.0, parts);
                    sgemm_split(Mat::new(&a, m, k), Mat::new(&b, k, n), acc.as_mut_ptr(), 1.0, parts);
                }
                for (i, w) in want.iter().enumerate() {
                    assert!((c[i] as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()), "{m}×{k}×{n}/{parts} element {i}: {} vs {w}", c[i]);
                    assert!((acc[i] as f64 - (w + 1.0)).abs() <= 1e-4 * (2.0 + w.abs()), "{m}×{k}×{n}/{parts} β=1 element {i}");
                }
                match &first {
                    None => first = Some((c, acc)),
                    Some((c1, acc1)) => {
                        assert!(c == *c1 && acc == *acc1, "{m}×{k}×{n}: {parts} slices changed the bits");
                    }
                }
            }
            // The public entry point (which splits these sizes from outside the pool) agrees.
            assert!(m * k * n >= SPLIT_MACS);
            assert!(matmul(Mat::new(&a, m, k), Mat::new(&bt, n, k).t()).unwrap() == first.unwrap().0);
        }
    }
}

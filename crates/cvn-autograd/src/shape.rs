//! Shape arithmetic: broadcasting (NumPy rules) and the index maps that ops share.

use crate::error::{shape_err, Result};

/// Broadcast shape of `a` and `b`, aligning trailing dimensions.
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => shape_err(op, format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// Row-major strides of `shape` as seen from a broadcast output of rank `rank` (0 on broadcast dims).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let rank = out.len();
    let mut strides = vec![0; rank];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        let o = i + rank - shape.len();
        strides[o] = if shape[i] == 1 && out[o] != 1 { 0 } else { s };
        s *= shape[i];
    }
    strides
}

/// Row-major contiguous strides.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Calls `f(out_index, source_index)` for every element of `out`, where the source has `src_strides`
/// (e.g. broadcast strides). Walks the innermost dimension as a run so the common cases stay cheap.
pub fn for_each_mapped(out: &[usize], src_strides: &[usize], mut f: impl FnMut(usize, usize)) {
    let n: usize = out.iter().product();
    if n == 0 {
        return;
    }
    let rank = out.len();
    if rank == 0 {
        f(0, 0);
        return;
    }
    let inner = out[rank - 1];
    let inner_stride = src_strides[rank - 1];
    let mut idx = vec![0usize; rank];
    let mut base = 0usize;
    let mut o = 0usize;
    while o < n {
        for j in 0..inner {
            f(o + j, base + j * inner_stride);
        }
        o += inner;
        // advance the outer multi-index
        let mut d = rank - 1;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            base += src_strides[d];
            if idx[d] < out[d] {
                break;
            }
            base -= src_strides[d] * out[d];
            idx[d] = 0;
        }
    }
}

/// A view of contiguous storage as another shape: element `i` (a multi-index over `shape`) is
/// source element `offset + Σ i_d·strides_d`. Broadcasting (stride 0), permutations and slices are
/// all views; [`crate::storage::Storage::copy_strided`] makes one contiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StridedView {
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub offset: usize,
}

impl StridedView {
    /// The contiguous layout of `shape` itself.
    pub fn contiguous(shape: &[usize]) -> Self {
        Self { shape: shape.to_vec(), strides: strides(shape), offset: 0 }
    }

    /// `source` (of its own shape) broadcast to `out` (NumPy rules, already checked).
    pub fn broadcast(source: &[usize], out: &[usize]) -> Self {
        Self { shape: out.to_vec(), strides: broadcast_strides(source, out), offset: 0 }
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One past the largest source index the view reads (0 when empty).
    pub fn extent(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        self.offset + self.shape.iter().zip(&self.strides).map(|(d, s)| (d - 1) * s).sum::<usize>() + 1
    }
}

/// `shape` with the leading 1s that make it `rank` long (the broadcast alignment).
pub fn left_pad(shape: &[usize], rank: usize) -> Vec<usize> {
    let mut out = vec![1; rank.saturating_sub(shape.len())];
    out.extend_from_slice(shape);
    out
}

/// True when `shape`, with leading 1s stripped, equals the trailing dims of `out`.
pub fn trailing_match(out: &[usize], shape: &[usize]) -> bool {
    let first = shape.iter().position(|&d| d != 1).unwrap_or(shape.len());
    out.ends_with(&shape[first..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_rules() {
        assert_eq!(broadcast_shape("t", &[2, 1, 3], &[4, 1]).unwrap(), vec![2, 4, 3]);
        assert!(broadcast_shape("t", &[2, 3], &[4]).is_err());
        assert_eq!(broadcast_strides(&[1, 3], &[2, 3]), vec![0, 1]);
    }

    #[test]
    fn views_know_their_extent() {
        let v = StridedView { shape: vec![2, 3], strides: vec![1, 2], offset: 4 };
        assert_eq!(v.extent(), 4 + 1 + 4 + 1);
        assert_eq!(StridedView::broadcast(&[3], &[2, 3]).strides, vec![0, 1]);
        assert_eq!(StridedView::contiguous(&[2, 0, 3]).extent(), 0);
        assert!(trailing_match(&[4, 2, 3], &[1, 3]));
        assert_eq!(left_pad(&[3], 3), vec![1, 1, 3]);
    }
}

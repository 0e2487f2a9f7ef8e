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

/// Sums a gradient of broadcast shape `out` down to the shape `shape` it was broadcast from.
pub fn sum_to_shape(grad: &[f32], out: &[usize], shape: &[usize]) -> Vec<f32> {
    if out == shape {
        return grad.to_vec();
    }
    let n: usize = shape.iter().product();
    let mut acc = vec![0.0f32; n];
    // Fast path: `shape` is a trailing block of `out` (bias over rows).
    if trailing_match(out, shape) {
        for chunk in grad.chunks_exact(n.max(1)) {
            acc.iter_mut().zip(chunk).for_each(|(a, g)| *a += g);
        }
        return acc;
    }
    let st = broadcast_strides(shape, out);
    for_each_mapped(out, &st, |o, s| acc[s] += grad[o]);
    acc
}

/// True when `shape`, with leading 1s stripped, equals the trailing dims of `out`.
fn trailing_match(out: &[usize], shape: &[usize]) -> bool {
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
    fn sum_to_shape_reduces_broadcast_dims() {
        let g: Vec<f32> = (0..12).map(|x| x as f32).collect();
        assert_eq!(sum_to_shape(&g, &[2, 2, 3], &[3]), vec![18.0, 22.0, 26.0]);
        assert_eq!(sum_to_shape(&g, &[2, 2, 3], &[1, 2, 1]), vec![0. + 1. + 2. + 6. + 7. + 8., 3. + 4. + 5. + 9. + 10. + 11.]);
        assert_eq!(sum_to_shape(&g, &[2, 2, 3], &[2, 1, 1]), vec![15.0, 51.0]);
    }
}

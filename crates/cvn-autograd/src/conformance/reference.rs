//! The float64 reference of every op: plain loops over row-major arrays, written once, used only
//! to check the backends. Gradients come from central differences of these forwards (exact to
//! ~1e-10 in f64) except where an op's backward is not its forward's derivative (LWTA's
//! straight-through estimator), which has its own reference here.

use crate::shape::{broadcast_shape, broadcast_strides, for_each_mapped, strides};

/// A row-major f64 array.
#[derive(Debug, Clone, PartialEq)]
pub struct Arr {
    pub shape: Vec<usize>,
    pub v: Vec<f64>,
}

impl Arr {
    pub fn new(shape: &[usize], v: Vec<f64>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), v.len());
        Self { shape: shape.to_vec(), v }
    }

    pub fn zeros(shape: &[usize]) -> Self {
        Self::new(shape, vec![0.0; shape.iter().product()])
    }

    fn map(&self, f: impl Fn(f64) -> f64) -> Arr {
        Arr::new(&self.shape, self.v.iter().map(|&x| f(x)).collect())
    }
}

/// Broadcasting element-wise `f(a, b)`.
pub fn binary(a: &Arr, b: &Arr, f: impl Fn(f64, f64) -> f64) -> Arr {
    let out = broadcast_shape("reference", &a.shape, &b.shape).expect("the case's shapes broadcast");
    let (sa, sb) = (broadcast_strides(&a.shape, &out), broadcast_strides(&b.shape, &out));
    let mut ia = vec![0; out.iter().product()];
    for_each_mapped(&out, &sa, |o, s| ia[o] = s);
    let mut v = vec![0.0; ia.len()];
    for_each_mapped(&out, &sb, |o, s| v[o] = f(a.v[ia[o]], b.v[s]));
    Arr::new(&out, v)
}

pub fn affine(x: &Arr, a: f64, b: f64) -> Arr {
    x.map(|v| v * a + b)
}

/// erf to ~1e-14: Maclaurin series below 2.5, the continued fraction of erfc above.
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    let value = if a < 2.5 {
        let (mut sum, mut term, mut n) = (a, a, 0.0);
        while term.abs() > 1e-18 {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let mut fraction = a;
        for k in (1..200).rev() {
            fraction = a + (k as f64 / 2.0) / fraction;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / fraction
    };
    value.copysign(x)
}

pub fn gelu(x: &Arr) -> Arr {
    x.map(|v| 0.5 * v * (1.0 + erf(v / 2f64.sqrt())))
}

pub fn quick_gelu(x: &Arr) -> Arr {
    x.map(|v| v / (1.0 + (-1.702 * v).exp()))
}

pub fn relu(x: &Arr) -> Arr {
    x.map(|v| v.max(0.0))
}

/// Sum down to `to` (same rank, reduced dims 1), times `scale`.
pub fn sum_to(x: &Arr, to: &[usize], scale: f64) -> Arr {
    let st = broadcast_strides(to, &x.shape);
    let mut out = Arr::zeros(to);
    for_each_mapped(&x.shape, &st, |o, s| out.v[s] += x.v[o]);
    out.v.iter_mut().for_each(|v| *v *= scale);
    out
}

pub fn permute(x: &Arr, perm: &[usize]) -> Arr {
    let st = strides(&x.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let src: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    let mut v = vec![0.0; x.v.len()];
    for_each_mapped(&shape, &src, |o, s| v[o] = x.v[s]);
    Arr::new(&shape, v)
}

/// `(outer, size, inner)` around `dim`.
fn split(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (shape[..dim].iter().product(), shape[dim], shape[dim + 1..].iter().product())
}

pub fn narrow(x: &Arr, dim: usize, start: usize, len: usize) -> Arr {
    let (outer, size, inner) = split(&x.shape, dim);
    let mut v = Vec::new();
    for o in 0..outer {
        v.extend_from_slice(&x.v[(o * size + start) * inner..(o * size + start + len) * inner]);
    }
    let mut shape = x.shape.clone();
    shape[dim] = len;
    Arr::new(&shape, v)
}

pub fn cat(xs: &[&Arr], dim: usize) -> Arr {
    let (outer, _, inner) = split(&xs[0].shape, dim);
    let mut v = Vec::new();
    for o in 0..outer {
        for x in xs {
            let s = x.shape[dim];
            v.extend_from_slice(&x.v[o * s * inner..(o + 1) * s * inner]);
        }
    }
    let mut shape = xs[0].shape.clone();
    shape[dim] = xs.iter().map(|x| x.shape[dim]).sum();
    Arr::new(&shape, v)
}

pub fn index_select(x: &Arr, ids: &[usize]) -> Arr {
    let row: usize = x.shape[1..].iter().product();
    let v = ids.iter().flat_map(|&i| x.v[i * row..(i + 1) * row].iter().copied()).collect();
    let mut shape = x.shape.clone();
    shape[0] = ids.len();
    Arr::new(&shape, v)
}

/// `[..., m, k] · [..., k, n]` (equal batch dims) or `[..., m, k] · [k, n]`.
pub fn matmul(a: &Arr, b: &Arr) -> Arr {
    let (ra, rb) = (a.shape.len(), b.shape.len());
    let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
    let batch: usize = a.shape[..ra - 2].iter().product();
    let shared = rb == 2;
    let mut v = vec![0.0; batch * m * n];
    for bi in 0..batch {
        let b_off = if shared { 0 } else { bi * k * n };
        for i in 0..m {
            for j in 0..n {
                v[(bi * m + i) * n + j] = (0..k).map(|p| a.v[(bi * m + i) * k + p] * b.v[b_off + p * n + j]).sum();
            }
        }
    }
    let mut shape = a.shape[..ra - 2].to_vec();
    shape.extend([m, n]);
    Arr::new(&shape, v)
}

/// `x · wᵀ + b` over the last dimension.
pub fn linear(x: &Arr, w: &Arr, b: Option<&Arr>) -> Arr {
    let (out_f, in_f) = (w.shape[0], w.shape[1]);
    let rows = x.v.len() / in_f.max(1);
    let mut v = vec![0.0; rows * out_f];
    for r in 0..rows {
        for o in 0..out_f {
            v[r * out_f + o] = (0..in_f).map(|i| x.v[r * in_f + i] * w.v[o * in_f + i]).sum::<f64>() + b.map_or(0.0, |b| b.v[o]);
        }
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("rank ≥ 1") = out_f;
    Arr::new(&shape, v)
}

pub fn conv2d(x: &Arr, w: &Arr, b: Option<&Arr>, stride: usize, pad: usize) -> Arr {
    let [n, c, h, wd] = x.shape[..] else { unreachable!("conv input is NCHW") };
    let [o, _, kh, kw] = w.shape[..] else { unreachable!("conv weight is OCHW") };
    let (ho, wo) = ((h + 2 * pad - kh) / stride + 1, (wd + 2 * pad - kw) / stride + 1);
    let mut out = Arr::zeros(&[n, o, ho, wo]);
    for bi in 0..n {
        for oc in 0..o {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = b.map_or(0.0, |b| b.v[oc]);
                    for ic in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let (iy, ix) = ((oy * stride + ky) as isize - pad as isize, (ox * stride + kx) as isize - pad as isize);
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    acc += x.v[((bi * c + ic) * h + iy as usize) * wd + ix as usize]
                                        * w.v[((oc * c + ic) * kh + ky) * kw + kx];
                                }
                            }
                        }
                    }
                    out.v[((bi * o + oc) * ho + oy) * wo + ox] = acc;
                }
            }
        }
    }
    out
}

pub fn layer_norm(x: &Arr, w: &Arr, b: &Arr, eps: f64) -> Arr {
    let n = *x.shape.last().expect("rank ≥ 1");
    let mut v = x.v.clone();
    for row in v.chunks_mut(n) {
        let mean = row.iter().sum::<f64>() / n as f64;
        let var = row.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        for (i, x) in row.iter_mut().enumerate() {
            *x = (*x - mean) / (var + eps).sqrt() * w.v[i] + b.v[i];
        }
    }
    Arr::new(&x.shape, v)
}

/// Per-channel (mean, biased variance) of NCHW `x`.
pub fn channel_stats(x: &Arr) -> (Vec<f64>, Vec<f64>) {
    let [n, c, h, w] = x.shape[..] else { unreachable!("batch norm input is NCHW") };
    let count = (n * h * w) as f64;
    let at = |i: usize, ch: usize| &x.v[(i * c + ch) * h * w..(i * c + ch + 1) * h * w];
    let mean: Vec<f64> = (0..c).map(|ch| (0..n).flat_map(|i| at(i, ch)).sum::<f64>() / count).collect();
    let var = (0..c).map(|ch| (0..n).flat_map(|i| at(i, ch)).map(|v| (v - mean[ch]).powi(2)).sum::<f64>() / count).collect();
    (mean, var)
}

/// Batch norm with the given per-channel statistics.
pub fn batch_norm(x: &Arr, w: &Arr, b: &Arr, mean: &[f64], var: &[f64], eps: f64) -> Arr {
    let [_, c, h, wd] = x.shape[..] else { unreachable!("batch norm input is NCHW") };
    let mut out = x.clone();
    for (plane, chunk) in out.v.chunks_mut(h * wd).enumerate() {
        let ch = plane % c;
        chunk.iter_mut().for_each(|v| *v = (*v - mean[ch]) / (var[ch] + eps).sqrt() * w.v[ch] + b.v[ch]);
    }
    out
}

pub fn l2_normalize(x: &Arr) -> Arr {
    let n = *x.shape.last().expect("rank ≥ 1");
    let mut v = x.v.clone();
    for row in v.chunks_mut(n) {
        let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= norm);
    }
    Arr::new(&x.shape, v)
}

pub fn softmax(x: &Arr, log: bool) -> Arr {
    let n = *x.shape.last().expect("rank ≥ 1");
    let mut v = x.v.clone();
    for row in v.chunks_mut(n) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v));
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        row.iter_mut().for_each(|v| *v = if log { *v - lse } else { (*v - lse).exp() });
    }
    Arr::new(&x.shape, v)
}

/// Multi-head attention of `[B, T, C]` q, k, v (heads side by side).
pub fn attention(q: &Arr, k: &Arr, v: &Arr, heads: usize, causal: bool) -> Arr {
    let [b, t, c] = q.shape[..] else { unreachable!("attention inputs are [B, T, C]") };
    let hd = c / heads;
    let mut out = Arr::zeros(&[b, t, c]);
    for bi in 0..b {
        for h in 0..heads {
            for i in 0..t {
                let at = |x: &Arr, row: usize, d: usize| x.v[(bi * t + row) * c + h * hd + d];
                let visible = if causal { i + 1 } else { t };
                let scores: Vec<f64> =
                    (0..visible).map(|j| (0..hd).map(|d| at(q, i, d) * at(k, j, d)).sum::<f64>() / (hd as f64).sqrt()).collect();
                let max = scores.iter().fold(f64::NEG_INFINITY, |m, s| m.max(*s));
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for d in 0..hd {
                    out.v[(bi * t + i) * c + h * hd + d] = (0..visible).map(|j| e[j] / sum * at(v, j, d)).sum();
                }
            }
        }
    }
    out
}

pub fn max_pool2d(x: &Arr, kernel: usize, stride: usize, pad: usize) -> Arr {
    let [n, c, h, w] = x.shape[..] else { unreachable!("pool input is NCHW") };
    let (ho, wo) = ((h + 2 * pad - kernel) / stride + 1, (w + 2 * pad - kernel) / stride + 1);
    let mut out = Arr::zeros(&[n, c, ho, wo]);
    for p in 0..n * c {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut best = f64::NEG_INFINITY;
                for ky in 0..kernel {
                    for kx in 0..kernel {
                        let (iy, ix) = ((oy * stride + ky) as isize - pad as isize, (ox * stride + kx) as isize - pad as isize);
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            best = best.max(x.v[(p * h + iy as usize) * w + ix as usize]);
                        }
                    }
                }
                out.v[(p * ho + oy) * wo + ox] = best;
            }
        }
    }
    out
}

/// Mean smoothed cross-entropy of `[N, C]` logits (a 0-d array).
pub fn cross_entropy(x: &Arr, targets: &[usize], eps: f64) -> Arr {
    let c = x.shape[1];
    let logp = softmax(x, true);
    let total: f64 = logp.v.chunks(c).zip(targets).map(|(row, &t)| -(1.0 - eps) * row[t] - eps * row.iter().sum::<f64>() / c as f64).sum();
    Arr::new(&[], vec![total / targets.len() as f64])
}

/// The LWTA forward with Gumbel noise `g` (f32, as the stream contract makes it): per block of `u`
/// competitors along `channels` (stride `inner`), the first maximum of `x + g` in f32 keeps its
/// value. Returns the output and the winners.
pub fn lwta_forward(x: &Arr, g: &[f32], outer: usize, channels: usize, inner: usize, u: usize) -> (Arr, Vec<usize>) {
    let mut y = Arr::zeros(&x.shape);
    let mut winners = Vec::new();
    for o in 0..outer {
        for group in 0..channels / u {
            for p in 0..inner {
                let at = |j: usize| (o * channels + group * u + j) * inner + p;
                let logit = |j: usize| x.v[at(j)] as f32 + g[at(j)];
                let best = (1..u).fold(0, |b, j| if logit(j) > logit(b) { j } else { b });
                y.v[at(best)] = x.v[at(best)];
                winners.push(best);
            }
        }
    }
    (y, winners)
}

/// The straight-through gradient: `dx_j = dy_j·h_j + (s_j/τ)·(dy_j·x_j − Σ_i dy_i·x_i·s_i)`,
/// `s = softmax((x + g)/τ)`, `h` the forward's one-hot.
#[allow(clippy::too_many_arguments)]
pub fn lwta_backward(
    x: &Arr,
    dy: &Arr,
    g: &[f32],
    winners: &[usize],
    outer: usize,
    channels: usize,
    inner: usize,
    u: usize,
    tau: f64,
) -> Arr {
    let mut dx = Arr::zeros(&x.shape);
    let mut block = 0;
    for o in 0..outer {
        for group in 0..channels / u {
            for p in 0..inner {
                let at = |j: usize| (o * channels + group * u + j) * inner + p;
                let z: Vec<f64> = (0..u).map(|j| (x.v[at(j)] + g[at(j)] as f64) / tau).collect();
                let max = z.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v));
                let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                let s: Vec<f64> = e.iter().map(|v| v / sum).collect();
                let dot: f64 = (0..u).map(|i| dy.v[at(i)] * x.v[at(i)] * s[i]).sum();
                for (j, sj) in s.iter().enumerate() {
                    let hard = if winners[block] == j { dy.v[at(j)] } else { 0.0 };
                    dx.v[at(j)] = hard + sj / tau * (dy.v[at(j)] * x.v[at(j)] - dot);
                }
                block += 1;
            }
        }
    }
    dx
}

/// `Σ r ⊙ f(inputs)` differentiated by central differences with respect to every input element.
pub fn vjp(inputs: &[Arr], r: &Arr, f: &dyn Fn(&[Arr]) -> Arr) -> Vec<Arr> {
    let loss = |xs: &[Arr]| -> f64 { f(xs).v.iter().zip(&r.v).map(|(a, b)| a * b).sum() };
    let mut grads = Vec::with_capacity(inputs.len());
    for i in 0..inputs.len() {
        let mut g = Arr::zeros(&inputs[i].shape);
        for j in 0..inputs[i].v.len() {
            // A step relative to the value keeps the difference exact to ~1e-10.
            let h = 1e-6 * inputs[i].v[j].abs().max(1.0);
            let mut xs = inputs.to_vec();
            xs[i].v[j] += h;
            let up = loss(&xs);
            xs[i].v[j] -= 2.0 * h;
            let down = loss(&xs);
            g.v[j] = (up - down) / (2.0 * h);
        }
        grads.push(g);
    }
    grads
}

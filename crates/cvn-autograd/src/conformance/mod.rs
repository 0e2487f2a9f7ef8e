//! # conformance — one suite, every backend
//!
//! Every op's forward and backward, on random and hand-picked shapes (odd and empty sizes,
//! broadcasting), in f32 and bf16, against a plain float64 reference of the op ([`reference`]) on
//! the same inputs (rounded to the dtype first, so the reference sees what the kernel saw). One body
//! of code for all backends, as burn's backend tests and dfdx's `TestDevice` do: [`run`] takes a
//! [`Device`]. `cargo test conformance` runs it on the CPU and on the emulated CUDA backend; on a
//! GPU machine `cargo xtask parity --device cuda` runs it on the hardware.
//!
//! Tolerances: a value passes when `|got − want| ≤ rtol·(|want| + rms(want))` — relative to the
//! value, with the tensor's root-mean-square as the floor where cancellation makes single values
//! tiny. `rtol` is 1e-5 for f32 and 2⁻⁷ for bf16 (one rounding of the inputs, one of the result);
//! cases whose conditioning needs more say so by a factor and why. Integer results (winners,
//! counters) must be exact.

use crate::device::Device;
use crate::dtype::DType;
use crate::error::Result;
use crate::tape::Tape;
use crate::tensor::Tensor;
use crate::{LwtaLayout, Noise, Statistics};

pub mod reference;

use reference::Arr;

/// The result of one case on one device and dtype.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `op/shape-description dtype`, e.g. `add [2,1,5]+[3,1] bf16`.
    pub case: String,
    pub passed: bool,
    /// The worst `error / tolerance` over the outputs and gradients checked (≤ 1 passes).
    pub worst: f64,
    /// What failed, or what was checked.
    pub detail: String,
}

/// An input of a case: host values and whether a gradient is checked for it.
#[derive(Clone)]
struct Input {
    shape: Vec<usize>,
    values: Vec<f32>,
    differentiable: bool,
}

impl Input {
    /// Values in [-1, 1) from `seed`.
    fn random(shape: &[usize], seed: u64) -> Self {
        let n = shape.iter().product();
        Self { shape: shape.to_vec(), values: crate::gradcheck::test_values(n, seed), differentiable: true }
    }

    /// Values in [0.5, 1.5) (denominators, variances).
    fn positive(shape: &[usize], seed: u64) -> Self {
        let mut x = Self::random(shape, seed);
        x.values.iter_mut().for_each(|v| *v = 1.0 + 0.5 * *v);
        x
    }

    /// Pairwise distinct values (max-pool windows, so no tie decides a gradient).
    fn distinct(shape: &[usize], seed: u64) -> Self {
        let n: usize = shape.iter().product();
        let values = (0..n).map(|i| ((i as u64 * 7919 + seed * 104_729) % n.max(1) as u64) as f32 / n.max(1) as f32 * 2.0 - 1.0).collect();
        Self { shape: shape.to_vec(), values, differentiable: true }
    }

    fn scaled(mut self, a: f32) -> Self {
        self.values.iter_mut().for_each(|v| *v *= a);
        self
    }

    fn constant(mut self) -> Self {
        self.differentiable = false;
        self
    }
}

type DeviceOp = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;
type ReferenceOp = Box<dyn Fn(&[Arr]) -> Arr>;
type ReferenceGrad = Box<dyn Fn(&[Arr], &Arr) -> Vec<Arr>>;

/// How a case's input gradients are checked.
enum Grads {
    /// Against central differences of the reference forward.
    FiniteDifferences,
    /// Against an explicit reference (an estimator that is not the forward's derivative).
    Explicit(ReferenceGrad),
}

struct Case {
    name: String,
    inputs: Vec<Input>,
    op: DeviceOp,
    reference: ReferenceOp,
    grads: Grads,
    /// Tolerance multiplier for ill-conditioned cases (documented where set).
    slack: f64,
}

fn case(
    name: impl Into<String>,
    inputs: Vec<Input>,
    op: impl Fn(&[Tensor]) -> Result<Tensor> + 'static,
    reference: impl Fn(&[Arr]) -> Arr + 'static,
) -> Case {
    Case { name: name.into(), inputs, op: Box::new(op), reference: Box::new(reference), grads: Grads::FiniteDifferences, slack: 1.0 }
}

impl Case {
    fn slack(mut self, factor: f64) -> Self {
        self.slack = factor;
        self
    }

    fn grads(mut self, grads: Grads) -> Self {
        self.grads = grads;
        self
    }
}

fn shape_name(shapes: &[&[usize]]) -> String {
    shapes.iter().map(|s| format!("{s:?}").replace(' ', "")).collect::<Vec<_>>().join("+")
}

/// Rounds host values to what `dtype` stores.
fn round_to(values: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::BF16 => values.iter().map(|v| half::bf16::from_f32(*v).to_f32()).collect(),
        _ => values.to_vec(),
    }
}

fn arr(shape: &[usize], values: &[f32]) -> Arr {
    Arr::new(shape, values.iter().map(|&v| v as f64).collect())
}

/// Compares `got` with `want`; returns the worst error/tolerance ratio and a description of the
/// worst element.
fn compare(what: &str, got: &[f32], want: &Arr, rtol: f64) -> (f64, String) {
    if got.len() != want.v.len() {
        return (f64::INFINITY, format!("{what}: {} values, expected {}", got.len(), want.v.len()));
    }
    let rms = (want.v.iter().map(|v| v * v).sum::<f64>() / want.v.len().max(1) as f64).sqrt();
    let mut worst = (0.0f64, String::new());
    for (i, (&g, &w)) in got.iter().zip(&want.v).enumerate() {
        let tol = rtol * (w.abs() + rms) + f64::MIN_POSITIVE;
        let ratio = if g.is_nan() && w.is_nan() {
            0.0
        } else {
            ((g as f64 - w).abs() / tol).max(if g.is_finite() == w.is_finite() { 0.0 } else { f64::INFINITY })
        };
        if ratio > worst.0 || ratio.is_nan() {
            worst = (if ratio.is_nan() { f64::INFINITY } else { ratio }, format!("{what}[{i}] = {g}, expected {w}"));
        }
    }
    worst
}

fn run_case(c: &Case, device: &Device, dtype: DType) -> Result<Outcome> {
    let rtol = c.slack * if dtype == DType::BF16 { 1.0 / 128.0 } else { 1e-5 };
    let name = format!("{} {dtype}", c.name);
    let host: Vec<Vec<f32>> = c.inputs.iter().map(|i| round_to(&i.values, dtype)).collect();
    let tape = Tape::new();
    let tensors = c
        .inputs
        .iter()
        .zip(&host)
        .map(|(i, v)| {
            let t = Tensor::from_slice_on(v, &i.shape, dtype, device)?;
            Ok(if i.differentiable { t.requiring_grad().traced(&tape) } else { t })
        })
        .collect::<Result<Vec<_>>>()?;
    let out = (c.op)(&tensors)?;
    let refs: Vec<Arr> = c.inputs.iter().zip(&host).map(|(i, v)| arr(&i.shape, v)).collect();
    let want = (c.reference)(&refs);
    if out.shape() != want.shape.as_slice() {
        return Ok(Outcome {
            case: name,
            passed: false,
            worst: f64::INFINITY,
            detail: format!("shape {:?}, expected {:?}", out.shape(), want.shape),
        });
    }
    let mut worst = compare("forward", &out.to_vec()?, &want, rtol);
    let want_grads = match &c.grads {
        _ if !c.inputs.iter().any(|i| i.differentiable) || out.tape().is_none() => None,
        grads => {
            let r = round_to(&crate::gradcheck::test_values(out.len(), 77), out.dtype());
            let r_dev = Tensor::from_slice_on(&r, out.shape(), out.dtype(), device)?;
            let got = out.backward_with(&r_dev)?;
            let r = arr(out.shape(), &r);
            let want = match grads {
                Grads::Explicit(f) => f(&refs, &r),
                _ => reference::vjp(&refs, &r, &*c.reference),
            };
            Some((got, want))
        }
    };
    if let Some((got, want)) = want_grads {
        for (k, (t, w)) in tensors.iter().zip(&want).enumerate() {
            if !c.inputs[k].differentiable {
                continue;
            }
            let g = match got.get(t) {
                Some(g) => g.to_vec()?,
                None => vec![0.0; t.len()],
            };
            let this = compare(&format!("d input {k}"), &g, w, rtol);
            if this.0 > worst.0 {
                worst = this;
            }
        }
    }
    let passed = worst.0 <= 1.0;
    let detail = if passed { format!("worst {:.2} of tolerance", worst.0) } else { worst.1 };
    Ok(Outcome { case: name, passed, worst: worst.0, detail })
}

/// Runs every case on `device`, in every dtype the case takes. Cases that fail with an error
/// (rather than a wrong value) are outcomes too, so one broken kernel does not hide the others.
pub fn run(device: &Device) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for c in cases() {
        for dtype in [DType::F32, DType::BF16] {
            outcomes.push(run_case(&c, device, dtype).unwrap_or_else(|e| Outcome {
                case: format!("{} {dtype}", c.name),
                passed: false,
                worst: f64::INFINITY,
                detail: format!("error: {e}"),
            }));
        }
    }
    outcomes.extend(exact_checks(device));
    outcomes
}

/// Deterministic pseudo-random shapes: `count` pairs that broadcast (dims 0–4, ranks 0–4).
fn broadcast_pairs(count: usize, seed: u64) -> Vec<(Vec<usize>, Vec<usize>)> {
    let mut s = seed;
    let mut next = |m: usize| {
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((s >> 33) % m as u64) as usize
    };
    (0..count)
        .map(|_| {
            let rank = next(5);
            let out: Vec<usize> = (0..rank).map(|_| [1, 2, 3, 4, 5, 0][next(6)]).collect();
            let pick = |keep: bool, d: usize| if keep { d } else { 1 };
            let a: Vec<usize> = out.iter().map(|&d| pick(next(3) > 0, d)).collect();
            let b_rank = next(rank + 1);
            let b: Vec<usize> = out[rank - b_rank..].iter().map(|&d| pick(next(3) > 0, d)).collect();
            (a, b)
        })
        .collect()
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut pairs: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![3, 4], vec![4]),
        (vec![2, 1, 5], vec![3, 1]),
        (vec![4], vec![2, 3, 4]),
        (vec![0, 3], vec![3]),
        (vec![], vec![5]),
        (vec![7], vec![7]),
    ];
    pairs.extend(broadcast_pairs(8, 2024));
    for (k, (a, b)) in pairs.iter().enumerate() {
        let shapes = shape_name(&[a, b]);
        let seed = 10 + 2 * k as u64;
        let ins = || vec![Input::random(a, seed), Input::random(b, seed + 1)];
        cases.push(case(format!("add {shapes}"), ins(), |x| x[0].add(&x[1]), |r| reference::binary(&r[0], &r[1], |a, b| a + b)));
        cases.push(case(format!("sub {shapes}"), ins(), |x| x[0].sub(&x[1]), |r| reference::binary(&r[0], &r[1], |a, b| a - b)));
        cases.push(case(format!("mul {shapes}"), ins(), |x| x[0].mul(&x[1]), |r| reference::binary(&r[0], &r[1], |a, b| a * b)));
        cases.push(case(
            format!("div {shapes}"),
            vec![Input::random(a, seed), Input::positive(b, seed + 1)],
            |x| x[0].div(&x[1]),
            |r| reference::binary(&r[0], &r[1], |a, b| a / b),
        ));
    }
    for shape in [vec![0], vec![1], vec![17], vec![3, 129]] {
        let s = shape_name(&[&shape]);
        let x = || vec![Input::random(&shape, 40).scaled(3.0)];
        cases.push(case(format!("affine {s}"), x(), |x| x[0].affine(-1.5, 0.25), |r| reference::affine(&r[0], -1.5, 0.25)));
        cases.push(case(format!("gelu {s}"), x(), |x| x[0].gelu(), |r| reference::gelu(&r[0])));
        cases.push(case(format!("quick_gelu {s}"), x(), |x| x[0].quick_gelu(), |r| reference::quick_gelu(&r[0])));
        cases.push(case(format!("relu {s}"), x(), |x| x[0].relu(), |r| reference::relu(&r[0])));
    }
    for shape in [vec![5, 7, 3], vec![1], vec![0, 3], vec![33, 65]] {
        let s = shape_name(&[&shape]);
        let rank = shape.len();
        let x = || vec![Input::random(&shape, 50)];
        let ones = vec![1; rank];
        let n: usize = shape.iter().product();
        cases.push(case(format!("sum_all {s}"), x(), |x| x[0].sum_all(), move |r| reshape(reference::sum_to(&r[0], &ones, 1.0), &[])));
        let ones = vec![1; rank];
        cases.push(case(
            format!("mean_all {s}"),
            x(),
            |x| x[0].mean_all(),
            move |r| reshape(reference::sum_to(&r[0], &ones, 1.0 / n.max(1) as f64), &[]),
        ));
        for d in 0..rank {
            let mut kept = shape.clone();
            kept[d] = 1;
            let size = shape[d];
            let dropped: Vec<usize> = shape.iter().enumerate().filter(|(i, _)| *i != d).map(|(_, &v)| v).collect();
            let k = kept.clone();
            cases.push(case(
                format!("sum_dim {s} dim {d}"),
                x(),
                move |x| x[0].sum_dim(d as isize, false),
                move |r| reshape(reference::sum_to(&r[0], &k, 1.0), &dropped),
            ));
            cases.push(case(
                format!("mean_dim {s} dim {d} keepdim"),
                x(),
                move |x| x[0].mean_dim(d as isize, true),
                move |r| reference::sum_to(&r[0], &kept, 1.0 / size.max(1) as f64),
            ));
        }
    }
    layout_cases(&mut cases);
    matrix_cases(&mut cases);
    norm_cases(&mut cases);
    other_cases(&mut cases);
    cases
}

fn reshape(mut a: Arr, shape: &[usize]) -> Arr {
    a.shape = shape.to_vec();
    a
}

fn layout_cases(cases: &mut Vec<Case>) {
    cases.push(case(
        "reshape [2,6]->[3,4]",
        vec![Input::random(&[2, 6], 30)],
        |x| x[0].reshape(&[3, usize::MAX]),
        |r| reshape(r[0].clone(), &[3, 4]),
    ));
    for (shape, perm) in
        [(vec![2, 3, 4], vec![2, 0, 1]), (vec![5, 1, 3], vec![1, 2, 0]), (vec![3, 0, 2], vec![2, 1, 0]), (vec![7, 9], vec![1, 0])]
    {
        let p = perm.clone();
        cases.push(case(
            format!("permute {} {perm:?}", shape_name(&[&shape])),
            vec![Input::random(&shape, 31)],
            move |x| x[0].permute(&p),
            move |r| reference::permute(&r[0], &perm),
        ));
    }
    cases.push(case(
        "transpose [2,3,4] 0,-1",
        vec![Input::random(&[2, 3, 4], 32)],
        |x| x[0].transpose(0, -1),
        |r| reference::permute(&r[0], &[2, 1, 0]),
    ));
    for (shape, dim, start, len) in [(vec![2, 5, 3], 1, 1, 3), (vec![4, 6], 0, 3, 1), (vec![3, 4], 1, 4, 0), (vec![9], 0, 0, 9)] {
        cases.push(case(
            format!("narrow {} dim {dim} {start}+{len}", shape_name(&[&shape])),
            vec![Input::random(&shape, 33)],
            move |x| x[0].narrow(dim as isize, start, len),
            move |r| reference::narrow(&r[0], dim, start, len),
        ));
    }
    for (shapes, dim) in
        [(vec![vec![2, 2, 3], vec![2, 1, 3]], 1), (vec![vec![1, 4], vec![3, 4], vec![0, 4]], 0), (vec![vec![2, 3], vec![2, 5]], 1)]
    {
        let refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
        let inputs = shapes.iter().enumerate().map(|(i, s)| Input::random(s, 34 + i as u64)).collect();
        cases.push(case(
            format!("cat {} dim {dim}", shape_name(&refs)),
            inputs,
            move |x| Tensor::cat(&x.iter().collect::<Vec<_>>(), dim as isize),
            move |r| reference::cat(&r.iter().collect::<Vec<_>>(), dim),
        ));
    }
    for (shape, ids) in [(vec![4, 3], vec![2, 0, 2, 3]), (vec![6, 2, 2], vec![5]), (vec![3, 5], vec![])] {
        let i2 = ids.clone();
        cases.push(case(
            format!("index_select {} {ids:?}", shape_name(&[&shape])),
            vec![Input::random(&shape, 36)],
            move |x| x[0].index_select(&i2),
            move |r| reference::index_select(&r[0], &ids),
        ));
    }
    // bf16 → f32 is exact and f32 → bf16 rounds once: both are within the bf16 tolerance.
    cases.push(case("to_dtype [3,5] -> f32", vec![Input::random(&[3, 5], 37)], |x| x[0].to_dtype(DType::F32), |r| r[0].clone()));
    cases.push(
        case("to_dtype [3,5] -> bf16", vec![Input::random(&[3, 5], 38)], |x| x[0].to_dtype(DType::BF16), |r| r[0].clone())
            .slack_for_bf16_cast(),
    );
}

impl Case {
    /// A cast to bf16 rounds the f32 inputs: the f32 run is held to bf16's tolerance.
    fn slack_for_bf16_cast(self) -> Self {
        self.slack(1.0 / 128.0 / 1e-5)
    }
}

fn matrix_cases(cases: &mut Vec<Case>) {
    for (a, b) in [
        (vec![2, 3, 4], vec![2, 4, 5]),
        (vec![2, 3, 4], vec![4, 5]),
        (vec![1, 1], vec![1, 1]),
        (vec![5, 0], vec![0, 3]),
        (vec![0, 3], vec![3, 2]),
        (vec![3, 2, 7, 9], vec![3, 2, 9, 6]),
        (vec![17, 33], vec![33, 9]),
    ] {
        cases.push(case(
            format!("matmul {}", shape_name(&[&a, &b])),
            vec![Input::random(&a, 60), Input::random(&b, 61)],
            |x| x[0].matmul(&x[1]),
            |r| reference::matmul(&r[0], &r[1]),
        ));
    }
    for (x, out, bias) in
        [(vec![2, 3, 4], 5, true), (vec![3, 4], 2, false), (vec![1, 1], 1, true), (vec![0, 6], 3, true), (vec![9, 31], 17, true)]
    {
        let in_f = *x.last().expect("rank ≥ 1");
        let mut inputs = vec![Input::random(&x, 62), Input::random(&[out, in_f], 63)];
        if bias {
            inputs.push(Input::random(&[out], 64));
        }
        cases.push(case(
            format!("linear {} -> {out}{}", shape_name(&[&x]), if bias { " +bias" } else { "" }),
            inputs,
            |x| x[0].linear(&x[1], x.get(2)),
            |r| reference::linear(&r[0], &r[1], r.get(2)),
        ));
    }
    for (x, w, bias, stride, pad) in [
        (vec![2, 2, 4, 4], vec![3, 2, 3, 3], true, 1, 1),
        (vec![1, 3, 5, 5], vec![2, 3, 3, 3], false, 2, 0),
        (vec![2, 1, 7, 6], vec![4, 1, 1, 1], true, 1, 0),
        (vec![1, 2, 6, 5], vec![2, 2, 5, 5], false, 1, 2),
        (vec![1, 2, 3, 3], vec![1, 2, 3, 3], true, 3, 1),
    ] {
        let mut inputs = vec![Input::random(&x, 80), Input::random(&w, 81)];
        if bias {
            inputs.push(Input::random(&[w[0]], 82));
        }
        cases.push(case(
            format!("conv2d {} s{stride} p{pad}{}", shape_name(&[&x, &w]), if bias { " +bias" } else { "" }),
            inputs,
            move |x| x[0].conv2d(&x[1], x.get(2), stride, pad),
            move |r| reference::conv2d(&r[0], &r[1], r.get(2), stride, pad),
        ));
    }
    for (b, t, c, heads, causal) in [(2, 3, 4, 2, false), (1, 4, 4, 2, true), (2, 5, 6, 3, true), (1, 1, 2, 1, false)] {
        let shape = [b, t, c];
        cases.push(case(
            format!("multi_head_attention [{b},{t},{c}] heads {heads}{}", if causal { " causal" } else { "" }),
            vec![Input::random(&shape, 90), Input::random(&shape, 91), Input::random(&shape, 92)],
            move |x| Tensor::multi_head_attention(&x[0], &x[1], &x[2], heads, causal),
            move |r| reference::attention(&r[0], &r[1], &r[2], heads, causal),
        ));
    }
    cases.push(case(
        "packed_attention [2,3,12] heads 2",
        vec![Input::random(&[2, 3, 12], 93)],
        |x| x[0].packed_attention(2, false),
        |r| {
            let part = |i: usize| reference::narrow(&r[0], 2, i * 4, 4);
            reference::attention(&part(0), &part(1), &part(2), 2, false)
        },
    ));
}

fn norm_cases(cases: &mut Vec<Case>) {
    for shape in [vec![3, 5], vec![2, 3, 7], vec![1, 33], vec![4, 1]] {
        let n = *shape.last().expect("rank ≥ 1");
        cases.push(
            case(
                format!("layer_norm {}", shape_name(&[&shape])),
                vec![Input::random(&shape, 100), Input::positive(&[n], 101), Input::random(&[n], 102)],
                |x| x[0].layer_norm(&x[1], &x[2], 1e-5),
                |r| reference::layer_norm(&r[0], &r[1], &r[2], 1e-5),
            )
            // Normalising subtracts the row mean: the gradient cancels to ~n·eps of its terms.
            .slack(4.0),
        );
    }
    for shape in [vec![3, 2, 2, 3], vec![2, 3, 1, 1], vec![1, 4, 3, 5]] {
        let c = shape[1];
        cases.push(
            case(
                format!("batch_norm2d train {}", shape_name(&[&shape])),
                vec![Input::random(&shape, 103), Input::positive(&[c], 104), Input::random(&[c], 105)],
                |x| Ok(x[0].batch_norm2d(&x[1], &x[2], Statistics::Batch, 1e-5)?.0),
                |r| {
                    let (mean, var) = reference::channel_stats(&r[0]);
                    reference::batch_norm(&r[0], &r[1], &r[2], &mean, &var, 1e-5)
                },
            )
            .slack(4.0),
        );
        cases.push(case(
            format!("batch_norm2d eval {}", shape_name(&[&shape])),
            vec![
                Input::random(&shape, 106),
                Input::positive(&[c], 107),
                Input::random(&[c], 108),
                Input::random(&[c], 109).constant(),
                Input::positive(&[c], 110).constant(),
            ],
            |x| Ok(x[0].batch_norm2d(&x[1], &x[2], Statistics::Running { mean: &x[3], var: &x[4] }, 1e-5)?.0),
            |r| reference::batch_norm(&r[0], &r[1], &r[2], &r[3].v, &r[4].v, 1e-5),
        ));
    }
    for shape in [vec![3, 4], vec![1, 1], vec![2, 65]] {
        cases.push(case(
            format!("l2_normalize {}", shape_name(&[&shape])),
            vec![Input::random(&shape, 111)],
            |x| x[0].l2_normalize(),
            |r| reference::l2_normalize(&r[0]),
        ));
    }
    for shape in [vec![3, 7], vec![2, 1], vec![4, 33], vec![2, 3, 5]] {
        let s = shape_name(&[&shape]);
        let x = || vec![Input::random(&shape, 112).scaled(3.0)];
        // The backward reads the stored output (bf16 when the input is, as in PyTorch) and
        // subtracts Σ g·y: its rounding shows in the small entries.
        cases.push(case(format!("softmax {s}"), x(), |x| x[0].softmax(), |r| reference::softmax(&r[0], false)).slack(4.0));
        cases.push(case(format!("log_softmax {s}"), x(), |x| x[0].log_softmax(), |r| reference::softmax(&r[0], true)));
    }
}

fn other_cases(cases: &mut Vec<Case>) {
    for (shape, k, s, p) in [(vec![2, 2, 5, 5], 3, 2, 1), (vec![1, 3, 4, 4], 2, 2, 0), (vec![1, 1, 3, 7], 3, 1, 1)] {
        cases.push(case(
            format!("max_pool2d {} k{k} s{s} p{p}", shape_name(&[&shape])),
            vec![Input::distinct(&shape, 120)],
            move |x| x[0].max_pool2d(k, s, p),
            move |r| reference::max_pool2d(&r[0], k, s, p),
        ));
    }
    cases.push(case(
        "global_avg_pool2d [2,3,2,2]",
        vec![Input::random(&[2, 3, 2, 2], 121)],
        |x| x[0].global_avg_pool2d(),
        |r| reshape(reference::sum_to(&r[0], &[2, 3, 1, 1], 0.25), &[2, 3]),
    ));
    for (n, c, eps) in [(4, 5, 0.0), (3, 10, 0.1), (1, 1, 0.0)] {
        let targets: Vec<usize> = (0..n).map(|i| (i * 7 + 3) % c).collect();
        let t2 = targets.clone();
        cases.push(case(
            format!("cross_entropy [{n},{c}] smoothing {eps}"),
            vec![Input::random(&[n, c], 122).scaled(3.0)],
            move |x| x[0].cross_entropy(&t2, eps),
            move |r| reference::cross_entropy(&r[0], &targets, eps as f64),
        ));
    }
    for shape in [vec![64], vec![3, 33]] {
        let (p, seed, offset) = (0.3f32, 7u64, 1u64);
        cases.push(case(
            format!("dropout {} p {p}", shape_name(&[&shape])),
            vec![Input::random(&shape, 123)],
            move |x| x[0].dropout(p, seed, offset),
            move |r| {
                let mut out = r[0].clone();
                for (e, v) in out.v.iter_mut().enumerate() {
                    *v *= if lwta_kernels::philox::uniform_at(seed, offset, e as u64) < p { 0.0 } else { 1.0 / (1.0 - p as f64) };
                }
                out
            },
        ));
    }
    lwta_cases(cases);
}

/// LWTA with Philox noise: the reference takes the stream contract's noise and the
/// straight-through backward. Responses are scaled up so the sampled winner is decided by a margin
/// the bf16 rounding of `x` cannot flip.
fn lwta_cases(cases: &mut Vec<Case>) {
    for (shape, layout, u, noise) in [
        (vec![3, 8], LwtaLayout::Tokens, 4, true),
        (vec![2, 3, 12], LwtaLayout::Tokens, 2, true),
        (vec![5, 6], LwtaLayout::Tokens, 3, false),
        (vec![2, 4, 3, 3], LwtaLayout::Nchw, 2, true),
        (vec![1, 8, 2, 4], LwtaLayout::Nchw, 4, false),
    ] {
        let (outer, channels, inner) = match layout {
            LwtaLayout::Tokens => (shape[..shape.len() - 1].iter().product(), shape[shape.len() - 1], 1),
            LwtaLayout::Nchw => (shape[0], shape[1], shape[2] * shape[3]),
        };
        let n: usize = shape.iter().product();
        let (seed, offset, tau) = (5u64, 9u64, 1.67f32);
        let mut g = vec![0.0f32; n];
        if noise {
            lwta_kernels::philox::gumbel_noise(seed, offset, 0, &mut g);
        }
        let noise_of = move || if noise { Noise::Philox { seed, offset } } else { Noise::None };
        let (g1, g2) = (g.clone(), g);
        let name = format!("lwta {layout:?} {} U={u}{}", shape_name(&[&shape]), if noise { " philox" } else { " argmax" });
        cases.push(
            case(
                name,
                vec![Input::distinct(&shape, 130).scaled(8.0)],
                move |x| Ok(x[0].lwta(layout, u, tau, noise_of(), "conformance")?.0),
                move |r| reference::lwta_forward(&r[0], &g1, outer, channels, inner, u).0,
            )
            .grads(Grads::Explicit(Box::new(move |r, dy| {
                let (_, winners) = reference::lwta_forward(&r[0], &g2, outer, channels, inner, u);
                vec![reference::lwta_backward(&r[0], dy, &g2, &winners, outer, channels, inner, u, tau as f64)]
            }))),
        );
    }
}

/// A named check of one device: `Ok(Ok(detail))` passed, `Ok(Err(why))` failed.
type ExactCheck = Box<dyn Fn(&Device) -> Result<std::result::Result<String, String>>>;

/// Results that must be exact: winner indices, device counters, optimiser steps (checked in f32
/// against PyTorch's update rules evaluated in f64).
fn exact_checks(device: &Device) -> Vec<Outcome> {
    let checks: Vec<(&str, ExactCheck)> = vec![
        ("lwta winners", Box::new(check_winners)),
        ("counters", Box::new(check_counters)),
        ("adamw", Box::new(check_adamw)),
        ("sgd", Box::new(check_sgd)),
        ("batch_norm running update", Box::new(check_running_update)),
    ];
    checks
        .into_iter()
        .map(|(name, f)| {
            let (passed, detail) = match f(device) {
                Ok(Ok(detail)) => (true, detail),
                Ok(Err(detail)) => (false, detail),
                Err(e) => (false, format!("error: {e}")),
            };
            Outcome { case: name.to_string(), passed, worst: if passed { 0.0 } else { f64::INFINITY }, detail }
        })
        .collect()
}

fn check_winners(device: &Device) -> Result<std::result::Result<String, String>> {
    let shape = [2, 4, 3, 3];
    let x = Input::distinct(&shape, 131).scaled(8.0);
    let t = Tensor::from_slice_on(&x.values, &shape, DType::F32, device)?;
    let mut g = vec![0.0f32; x.values.len()];
    lwta_kernels::philox::gumbel_noise(3, 4, 0, &mut g);
    let (_, want) = reference::lwta_forward(&arr(&shape, &x.values), &g, 2, 4, 9, 2);
    let sampled = t.lwta_winners(LwtaLayout::Nchw, 2, Noise::Philox { seed: 3, offset: 4 }, "conformance")?.to_vec_u8()?;
    let (_, from_forward) = t.lwta(LwtaLayout::Nchw, 2, 1.0, Noise::Philox { seed: 3, offset: 4 }, "conformance")?;
    let got: Vec<usize> = sampled.iter().map(|&w| w as usize).collect();
    Ok(if got == want && from_forward.to_vec_u8()? == sampled {
        Ok(format!("{} winners exact", got.len()))
    } else {
        Err(format!("winners {got:?}, expected {want:?}"))
    })
}

fn check_counters(device: &Device) -> Result<std::result::Result<String, String>> {
    let x = Tensor::from_slice_on(&[0.0, 1.5, -2.0, 0.0, 0.0, 3.0, 1.0], &[7], DType::F32, device)?;
    let logits = Tensor::from_slice_on(&[0.1, 0.9, 0.5, 0.5, 2.0, -1.0], &[3, 2], DType::BF16, device)?;
    let a = x.lwta_winners(LwtaLayout::Tokens, 1, Noise::None, "c")?;
    let mut nonzero = Tensor::counter(device)?;
    x.count_nonzero_into(&mut nonzero)?;
    x.count_nonzero_into(&mut nonzero)?;
    let mut equal = Tensor::counter(device)?;
    a.count_equal_into(&a, &mut equal)?;
    let mut correct = Tensor::counter(device)?;
    // Row 1 ties: the first maximum (class 0) is the prediction.
    logits.count_correct_into(&[1, 0, 1], &mut correct)?;
    let got = (nonzero.to_vec_u64()?[0], equal.to_vec_u64()?[0], correct.to_vec_u64()?[0]);
    Ok(if got == (8, 7, 2) {
        Ok("nonzero 8, equal 7, correct 2".into())
    } else {
        Err(format!("(nonzero, equal, correct) = {got:?}, expected (8, 7, 2)"))
    })
}

/// Runs `steps` optimiser steps on `device` and on the host in f64, and compares.
fn check_optimizer(
    device: &Device,
    mut opt: Box<dyn crate::optim::Optimizer>,
    mut reference: impl FnMut(&mut [f64], &[f64], u64),
) -> Result<std::result::Result<String, String>> {
    let n = 37;
    let mut p = Tensor::from_slice_on(&crate::gradcheck::test_values(n, 140), &[n], DType::F32, device)?.requiring_grad();
    let mut want: Vec<f64> = p.to_vec()?.iter().map(|&v| v as f64).collect();
    for step in 1..=3u64 {
        let g = crate::gradcheck::test_values(n, 140 + step);
        opt.update("w", &mut p, &Tensor::from_slice_on(&g, &[n], DType::F32, device)?, 0.01, true)?;
        reference(&mut want, &g.iter().map(|&v| v as f64).collect::<Vec<_>>(), step);
    }
    let (ratio, detail) = compare("param", &p.to_vec()?, &Arr::new(&[n], want), 1e-5);
    Ok(if ratio <= 1.0 { Ok(format!("3 steps, worst {ratio:.2} of tolerance")) } else { Err(detail) })
}

fn check_adamw(device: &Device) -> Result<std::result::Result<String, String>> {
    let (b1, b2, eps, wd, lr) = (0.9f64, 0.999f64, 1e-8f64, 0.05f64, 0.01f64);
    let (mut m, mut v) = (vec![0.0f64; 37], vec![0.0f64; 37]);
    check_optimizer(device, Box::new(crate::optim::AdamW::new(wd as f32)), move |p, g, t| {
        for i in 0..p.len() {
            p[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let (mh, vh) = (m[i] / (1.0 - b1.powi(t as i32)), v[i] / (1.0 - b2.powi(t as i32)));
            p[i] -= lr * mh / (vh.sqrt() + eps);
        }
    })
}

fn check_sgd(device: &Device) -> Result<std::result::Result<String, String>> {
    let (momentum, wd, lr) = (0.9f64, 5e-4f64, 0.01f64);
    let mut buf = vec![0.0f64; 37];
    check_optimizer(device, Box::new(crate::optim::Sgd::new(momentum as f32, wd as f32)), move |p, g, t| {
        for i in 0..p.len() {
            let d = g[i] + wd * p[i];
            buf[i] = if t == 1 { d } else { momentum * buf[i] + d };
            p[i] -= lr * buf[i];
        }
    })
}

fn check_running_update(device: &Device) -> Result<std::result::Result<String, String>> {
    let x = Input::random(&[3, 2, 2, 2], 150);
    let t = Tensor::from_slice_on(&x.values, &x.shape, DType::F32, device)?;
    let (w, b) = (Tensor::full_on(&[2], 1.0, DType::F32, device)?, Tensor::full_on(&[2], 0.0, DType::F32, device)?);
    let (_, stats) = t.batch_norm2d(&w, &b, Statistics::Batch, 1e-5)?;
    let stats = stats.expect("training returns the batch statistics");
    let (mut rm, mut rv) = (Tensor::full_on(&[2], 0.5, DType::F32, device)?, Tensor::full_on(&[2], 2.0, DType::F32, device)?);
    stats.update_running(&mut rm, &mut rv, 0.1)?;
    let (mean, var) = reference::channel_stats(&arr(&x.shape, &x.values));
    let count = 12.0;
    let want_m: Vec<f64> = mean.iter().map(|m| 0.9 * 0.5 + 0.1 * m).collect();
    let want_v: Vec<f64> = var.iter().map(|v| 0.9 * 2.0 + 0.1 * v * count / (count - 1.0)).collect();
    let (em, dm) = compare("running_mean", &rm.to_vec()?, &Arr::new(&[2], want_m), 1e-5);
    let (ev, dv) = compare("running_var", &rv.to_vec()?, &Arr::new(&[2], want_v), 1e-5);
    Ok(if em <= 1.0 && ev <= 1.0 { Ok("running mean and unbiased variance".into()) } else { Err(format!("{dm}; {dv}")) })
}

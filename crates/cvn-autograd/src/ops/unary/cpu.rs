//! Point-wise activation kernels (forward and backward) on slices: multi-threaded in chunks and
//! vectorised through `lwta_kernels::simd` (the workspace's one SIMD layer), so they are the fair
//! baseline the LWTA benches compare against (public as [`crate::kernels::activation`]).
//!
//! The slices must have equal lengths (the tape's ops guarantee it; a mismatch is a programming
//! error and panics with the lengths).

use lwta_kernels::par;
use lwta_kernels::simd::{self, load_padded, store_partial, Scalar, Simd};
use rayon::prelude::*;

use super::{UnaryOp, UnaryOps};
use crate::cpu::{CpuStorage, PAR_CHUNK};
use crate::error::{shape_err, Result};
use crate::storage::BackendStorage;

impl UnaryOps for CpuStorage {
    fn affine(&self, a: f32, b: f32) -> Result<Self> {
        let x = self.floats("affine")?;
        let out = x.par_iter().with_min_len(PAR_CHUNK).map(|x| x * a + b).collect();
        Ok(CpuStorage::from_floats(out, self.dtype()))
    }

    fn unary(&self, op: UnaryOp) -> Result<Self> {
        let x = self.floats(op.name())?;
        let y = match op {
            UnaryOp::Gelu => forward_to_vec(Gelu, &x),
            UnaryOp::QuickGelu => forward_to_vec(QuickGelu, &x),
            UnaryOp::Relu => forward_to_vec(Relu, &x),
        };
        Ok(CpuStorage::from_floats(y, self.dtype()))
    }

    fn unary_grad(&self, grad: &Self, op: UnaryOp) -> Result<Self> {
        let (x, g) = (self.floats(op.name())?, grad.floats(op.name())?);
        if x.len() != g.len() {
            return shape_err(op.name(), format!("backward: {} inputs, {} gradient elements", x.len(), g.len()));
        }
        let dx = match op {
            UnaryOp::Gelu => backward_to_vec(Gelu, &x, &g),
            UnaryOp::QuickGelu => backward_to_vec(QuickGelu, &x, &g),
            UnaryOp::Relu => backward_to_vec(Relu, &x, &g),
        };
        Ok(CpuStorage::from_floats(dx, grad.dtype()))
    }
}

/// Elements per rayon task: large enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 1 << 14;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π), the normal density's constant.
const INV_SQRT_2PI: f32 = 0.398_942_3;
/// QuickGELU's slope (OpenAI CLIP).
const QUICK_GELU_SLOPE: f32 = 1.702;

/// GELU, erf form: `0.5·x·(1 + erf(x/√2))` (PyTorch's and timm's default).
pub fn gelu_forward(x: &[f32], y: &mut [f32]) {
    forward(Gelu, x, y);
}

/// `dx = dy · (Φ(x) + x·φ(x))`.
pub fn gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    backward(Gelu, x, dy, dx);
}

/// QuickGELU `x·σ(1.702x)` (OpenAI CLIP).
pub fn quick_gelu_forward(x: &[f32], y: &mut [f32]) {
    forward(QuickGelu, x, y);
}

/// `dx = dy · (σ + 1.702·x·σ·(1 − σ))` with `σ = σ(1.702x)`.
pub fn quick_gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    backward(QuickGelu, x, dy, dx);
}

/// `max(x, 0)` (NaN stays NaN, as in PyTorch).
pub fn relu_forward(x: &[f32], y: &mut [f32]) {
    forward(Relu, x, y);
}

/// `dx = dy` where `x > 0`, else 0.
pub fn relu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    backward(Relu, x, dy, dx);
}

/// The error function of one value (see [`erf_simd`]).
pub fn erf(x: f32) -> f32 {
    erf_simd(Scalar, x)
}

/// The error function, branch-free, within 1e-7 of the exact value (tested against an f64
/// reference): Cephes `erff` — `x·T(x²)` for `|x| < 1`, evaluated as `x + x·(T(x²) − 1)` so the
/// rounding falls on the small correction, and `1 − e^{−x²}/|x|·P(1/x²)` (`P` on `[1, 2)`, `R`
/// beyond) with the sign of `x` — both halves evaluated and the right one selected.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' literals, digit for digit
pub fn erf_simd<S: Simd>(s: S, x: S::F) -> S::F {
    const T: [f32; 7] = [
        7.853861353153693e-5,
        -8.010193625184903e-4,
        5.188327685732524e-3,
        -2.685381193529856e-2,
        1.128358514861418e-1,
        -3.761262582423300e-1,
        1.28379165726710e-1, // 1.128379165726710 − 1
    ];
    const P: [f32; 9] = [
        2.326819970068386e-2,
        -1.387039388740657e-1,
        3.687424674597105e-1,
        -5.824733027278666e-1,
        6.210004621745983e-1,
        -4.944515323274145e-1,
        3.404879937665872e-1,
        -2.741127028184656e-1,
        5.638259427386472e-1,
    ];
    // R has one coefficient fewer; a leading 0 lets both share one evaluation.
    const R: [f32; 9] = [
        0.0,
        -1.047766399936249e+1,
        1.297719955372516e+1,
        -7.495518717768503e+0,
        2.921019019210786e+0,
        -1.015265279202700e+0,
        4.218463358204948e-1,
        -2.820767439740514e-1,
        5.641895067754075e-1,
    ];
    let sign = s.and_i(s.to_bits(x), s.splat_i(0x8000_0000));
    let a = s.from_bits(s.xor_i(s.to_bits(x), sign));
    let z = s.mul(x, x);

    let mut small = s.splat(T[0]);
    for c in &T[1..] {
        small = s.add(s.mul(small, z), s.splat(*c));
    }
    let small = s.add(x, s.mul(x, small));

    let w = s.div(s.splat(1.0), z);
    let near = s.lt(a, s.splat(2.0));
    let mut tail = s.select(near, s.splat(P[0]), s.splat(R[0]));
    for (p, r) in P[1..].iter().zip(&R[1..]) {
        tail = s.add(s.mul(tail, w), s.select(near, s.splat(*p), s.splat(*r)));
    }
    let erfc = s.div(s.mul(simd::exp(s, s.sub(s.splat(0.0), z)), tail), a);
    let large = s.from_bits(s.or_i(s.to_bits(s.sub(s.splat(1.0), erfc)), sign));
    s.select(s.lt(a, s.splat(1.0)), small, large)
}

/// `(σ(t), 1 − σ(t))` with `σ(t) = 1 / (1 + e^{−t})`; `1 − σ` as `e^{−t}·σ`, without cancellation.
#[inline(always)]
fn sigmoid<S: Simd>(s: S, t: S::F) -> (S::F, S::F) {
    let e = simd::exp(s, s.sub(s.splat(0.0), t));
    let sig = s.div(s.splat(1.0), s.add(s.splat(1.0), e));
    (sig, s.mul(e, sig))
}

/// A point-wise activation: its value and its derivative, on vectors.
trait Pointwise: Copy + Send + Sync {
    fn value<S: Simd>(self, s: S, x: S::F) -> S::F;
    fn derivative<S: Simd>(self, s: S, x: S::F) -> S::F;
}

#[derive(Clone, Copy)]
struct Gelu;

impl Pointwise for Gelu {
    #[inline(always)]
    fn value<S: Simd>(self, s: S, x: S::F) -> S::F {
        let cdf = s.add(s.splat(1.0), erf_simd(s, s.mul(x, s.splat(FRAC_1_SQRT_2))));
        s.mul(s.mul(s.splat(0.5), x), cdf)
    }

    #[inline(always)]
    fn derivative<S: Simd>(self, s: S, x: S::F) -> S::F {
        let cdf = s.mul(s.splat(0.5), s.add(s.splat(1.0), erf_simd(s, s.mul(x, s.splat(FRAC_1_SQRT_2)))));
        let density = s.mul(s.splat(INV_SQRT_2PI), simd::exp(s, s.mul(s.splat(-0.5), s.mul(x, x))));
        s.add(cdf, s.mul(x, density))
    }
}

#[derive(Clone, Copy)]
struct QuickGelu;

impl Pointwise for QuickGelu {
    #[inline(always)]
    fn value<S: Simd>(self, s: S, x: S::F) -> S::F {
        s.mul(x, sigmoid(s, s.mul(x, s.splat(QUICK_GELU_SLOPE))).0)
    }

    #[inline(always)]
    fn derivative<S: Simd>(self, s: S, x: S::F) -> S::F {
        let (sig, rest) = sigmoid(s, s.mul(x, s.splat(QUICK_GELU_SLOPE)));
        let slope = s.mul(s.mul(s.splat(QUICK_GELU_SLOPE), x), s.mul(sig, rest));
        s.add(sig, slope)
    }
}

#[derive(Clone, Copy)]
struct Relu;

impl Pointwise for Relu {
    #[inline(always)]
    fn value<S: Simd>(self, s: S, x: S::F) -> S::F {
        s.select(s.lt(x, s.splat(0.0)), s.splat(0.0), x)
    }

    #[inline(always)]
    fn derivative<S: Simd>(self, s: S, x: S::F) -> S::F {
        s.keep(s.lt(s.splat(0.0), x), s.splat(1.0))
    }
}

fn forward<A: Pointwise>(a: A, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "activation forward: x and y lengths differ");
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| simd::run(Forward { a, x, y }));
}

/// [`forward`] into a new vector (`lwta_kernels::par`: no zero-filling pass first).
fn forward_to_vec<A: Pointwise>(a: A, x: &[f32]) -> Vec<f32> {
    par::collect_chunks(x.len(), CHUNK, x.par_chunks(CHUNK), |x, y| simd::run(Forward { a, x, y }))
}

/// [`backward`] into a new vector; `dy` has `x`'s length (checked by the caller).
fn backward_to_vec<A: Pointwise>(a: A, x: &[f32], dy: &[f32]) -> Vec<f32> {
    par::collect_chunks(x.len(), CHUNK, x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)), |(x, dy), dx| simd::run(Backward { a, x, dy, dx }))
}

fn backward<A: Pointwise>(a: A, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert!(x.len() == dy.len() && x.len() == dx.len(), "activation backward: x, dy and dx lengths differ");
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .for_each(|(dx, (x, dy))| simd::run(Backward { a, x, dy, dx }));
}

struct Forward<'a, A> {
    a: A,
    x: &'a [f32],
    y: &'a mut [f32],
}

impl<A: Pointwise> simd::Kernel for Forward<'_, A> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        for i in (0..self.x.len()).step_by(S::LANES) {
            let end = (i + S::LANES).min(self.x.len());
            let v = self.a.value(s, load_padded(s, &self.x[i..end], 0.0));
            store_partial(s, &mut self.y[i..end], v);
        }
    }
}

struct Backward<'a, A> {
    a: A,
    x: &'a [f32],
    dy: &'a [f32],
    dx: &'a mut [f32],
}

impl<A: Pointwise> simd::Kernel for Backward<'_, A> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        for i in (0..self.x.len()).step_by(S::LANES) {
            let end = (i + S::LANES).min(self.x.len());
            let slope = self.a.derivative(s, load_padded(s, &self.x[i..end], 0.0));
            store_partial(s, &mut self.dx[i..end], s.mul(load_padded(s, &self.dy[i..end], 0.0), slope));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::conformance::reference::erf as erf64;

    #[test]
    fn erf_is_within_1e_minus_7_everywhere() {
        let mut worst = (0.0, 0.0);
        for i in -1_000_000..=1_000_000 {
            let x = i as f32 * 8e-6;
            let err = (erf(x) as f64 - erf64(x as f64)).abs();
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 < 1e-7, "erf is {:e} off at {}", worst.0, worst.1);
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-30.0), -1.0);
    }

    /// The vectorised kernels (whatever instruction set this CPU runs) against f64 formulas, on
    /// enough values to fill several chunks and a partial vector.
    #[test]
    fn kernels_match_f64_formulas() {
        let x: Vec<f32> = (0..40_003).map(|i| (i as f32 - 20_000.0) * 4e-4).collect();
        let dy: Vec<f32> = (0..x.len()).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        type Formula = fn(f64) -> f64;
        type Forward = fn(&[f32], &mut [f32]);
        type Backward = fn(&[f32], &[f32], &mut [f32]);
        type Case = (&'static str, Forward, Backward, Formula, Formula);
        let cases: [Case; 3] = [
            (
                "gelu",
                gelu_forward,
                gelu_backward,
                |x| 0.5 * x * (1.0 + erf64(x / 2f64.sqrt())),
                |x| 0.5 * (1.0 + erf64(x / 2f64.sqrt())) + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt(),
            ),
            (
                "quick_gelu",
                quick_gelu_forward,
                quick_gelu_backward,
                |x| x / (1.0 + (-1.702 * x).exp()),
                |x| {
                    let s = 1.0 / (1.0 + (-1.702 * x).exp());
                    s + 1.702 * x * s * (1.0 - s)
                },
            ),
            ("relu", relu_forward, relu_backward, |x| x.max(0.0), |x| if x > 0.0 { 1.0 } else { 0.0 }),
        ];
        for (name, fwd, bwd, value, slope) in cases {
            fwd(&x, &mut y);
            bwd(&x, &dy, &mut dx);
            for i in 0..x.len() {
                let (xv, g) = (x[i] as f64, dy[i] as f64);
                let v = value(xv);
                assert!((y[i] as f64 - v).abs() <= 3e-7 * v.abs().max(1.0), "{name}({xv}) = {} vs {v}", y[i]);
                let d = g * slope(xv);
                assert!((dx[i] as f64 - d).abs() <= 5e-7 * d.abs().max(1.0), "{name}'({xv})·{g} = {} vs {d}", dx[i]);
            }
        }
    }

    /// The ops' outputs (new vectors, chunk by chunk) are the slice kernels' bits, over several
    /// chunks and a partial one.
    #[test]
    fn to_vec_gives_the_slice_kernels_bits() {
        let x: Vec<f32> = (0..3 * CHUNK + 77).map(|i| (i as f32 - 25_000.0) * 3e-4).collect();
        let dy: Vec<f32> = (0..x.len()).map(|i| 0.5 + (i % 5) as f32 * 0.3).collect();
        let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        gelu_forward(&x, &mut y);
        gelu_backward(&x, &dy, &mut dx);
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&forward_to_vec(Gelu, &x)), bits(&y));
        assert_eq!(bits(&backward_to_vec(Gelu, &x, &dy)), bits(&dx));
        relu_forward(&x, &mut y);
        assert_eq!(bits(&forward_to_vec(Relu, &x)), bits(&y));
    }

    /// Backward against central differences of the forward kernels themselves.
    #[test]
    fn backward_matches_finite_differences() {
        let x: Vec<f32> = (-50..50).map(|i| i as f32 * 0.1 + 0.05).collect();
        type Pair = (fn(&[f32], &mut [f32]), fn(&[f32], &[f32], &mut [f32]));
        let pairs: [Pair; 3] = [(gelu_forward, gelu_backward), (quick_gelu_forward, quick_gelu_backward), (relu_forward, relu_backward)];
        for (fwd, bwd) in pairs {
            let mut dx = vec![0.0; x.len()];
            bwd(&x, &vec![1.0; x.len()], &mut dx);
            let h = 1e-2f32;
            let (xp, xm): (Vec<f32>, Vec<f32>) = (x.iter().map(|v| v + h).collect(), x.iter().map(|v| v - h).collect());
            let (mut yp, mut ym) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            fwd(&xp, &mut yp);
            fwd(&xm, &mut ym);
            for i in 0..x.len() {
                let numeric = (yp[i] as f64 - ym[i] as f64) / (2.0 * h as f64);
                assert!((numeric - dx[i] as f64).abs() < 1e-4, "x={} numeric {numeric} analytic {}", x[i], dx[i]);
            }
        }
    }

    /// The vector paths give the scalar path's bits.
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.013).collect();
        struct Values<'a>(&'a [f32]);
        impl simd::Kernel for Values<'_> {
            type Output = Vec<f32>;
            #[inline(always)]
            fn run<S: Simd>(self, s: S) -> Vec<f32> {
                let mut out = vec![0.0; self.0.len() * 3];
                for i in (0..self.0.len()).step_by(S::LANES) {
                    let end = (i + S::LANES).min(self.0.len());
                    let v = load_padded(s, &self.0[i..end], 0.0);
                    store_partial(s, &mut out[i..end], Gelu.value(s, v));
                    store_partial(s, &mut out[self.0.len() + i..][..end - i], Gelu.derivative(s, v));
                    store_partial(s, &mut out[2 * self.0.len() + i..][..end - i], QuickGelu.derivative(s, v));
                }
                out
            }
        }
        let reference = simd::Kernel::run(Values(&x), Scalar);
        for isa in simd::supported() {
            let got = simd::run_on(isa, Values(&x)).unwrap_or_else(|_| panic!("{isa:?} is supported"));
            assert!(got.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?}");
        }
    }
}

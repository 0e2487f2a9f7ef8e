//! Finite-difference gradient checking, public so every crate that adds a differentiable piece can
//! test it the same way.

use crate::error::Result;
use crate::tape::Tape;
use crate::tensor::Tensor;

/// Deterministic pseudo-random values in `[-1, 1)` (SplitMix64), for test inputs.
pub fn test_values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

/// Worst relative error between the tape's gradients of `f` and central differences, for each
/// input (on the inputs' device and dtype). The scalar checked is `Σ f(inputs) ⊙ r` with fixed random `r`, so every output element
/// matters. `step` is the finite-difference step.
pub fn max_gradient_error(inputs: &[Tensor], step: f32, f: impl Fn(&[Tensor]) -> Result<Tensor>) -> Result<Vec<f32>> {
    let params: Vec<Tensor> = inputs.iter().map(Tensor::requiring_grad).collect();
    let tape = Tape::new();
    let traced: Vec<Tensor> = params.iter().map(|p| p.traced(&tape)).collect();
    let out = f(&traced)?;
    let weights = Tensor::from_vec(test_values(out.len(), 99), out.shape())?;
    let weights = weights.to_dtype(out.dtype())?.to_device(&out.device())?;
    let loss = out.mul(&weights)?.sum_all()?;
    let grads = loss.backward()?;
    let weight_values = weights.to_vec()?;
    let scalar = |xs: &[Tensor]| -> Result<f64> {
        let o = f(xs)?.to_vec()?;
        Ok(o.iter().zip(&weight_values).map(|(a, b)| *a as f64 * *b as f64).sum())
    };
    let mut errors = Vec::new();
    for (i, p) in traced.iter().enumerate() {
        let analytic = match grads.get(p) {
            Some(g) => g.to_vec()?,
            None => vec![0.0; p.len()],
        };
        let mut worst = 0.0f32;
        for j in 0..p.len() {
            let probe = |delta: f32| -> Result<f64> {
                let mut xs: Vec<Tensor> = inputs.to_vec();
                let mut d = xs[i].to_vec()?;
                d[j] += delta;
                xs[i] = Tensor::from_slice_on(&d, p.shape(), p.dtype(), &p.device())?;
                scalar(&xs)
            };
            let numeric = ((probe(step)? - probe(-step)?) / (2.0 * step as f64)) as f32;
            let scale = numeric.abs().max(analytic[j].abs()).max(1e-2);
            worst = worst.max((numeric - analytic[j]).abs() / scale);
        }
        errors.push(worst);
    }
    Ok(errors)
}

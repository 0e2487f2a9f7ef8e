//! Shared by the integration tests: inputs and a plain per-block f64 transcription of the LWTA
//! formulas (the oracle the kernels are compared against).
#![allow(dead_code)] // each test binary uses its own subset

use lwta_kernels::philox::{gumbel_from_uniform, uniform_at};
use lwta_kernels::{BlockGeometry, Noise};

/// Deterministic pseudo-random values in [-2, 2) (a different Philox stream than the noise's).
pub fn values(len: usize, seed: u64) -> Vec<f32> {
    (0..len as u64).map(|e| 4.0 * uniform_at(seed, 99, e) - 2.0).collect()
}

/// Per block: flat indices of its competitors, in order.
pub fn blocks(geom: BlockGeometry, u: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for o in 0..geom.outer {
        for group in 0..geom.channels / u {
            for p in 0..geom.inner {
                out.push((0..u).map(|j| (o * geom.channels + group * u + j) * geom.inner + p).collect());
            }
        }
    }
    out
}

/// The noise of element `e` exactly as the stream contract defines it.
pub fn gumbel(noise: Noise, e: usize) -> f32 {
    match noise {
        Noise::None => 0.0,
        Noise::Philox { seed, offset } => gumbel_from_uniform(uniform_at(seed, offset, e as u64)),
        Noise::Uniforms(u) => gumbel_from_uniform(u[e]),
    }
}

/// The formulas, block by block: (y, winners, dx).
pub fn reference(x: &[f32], dy: &[f32], geom: BlockGeometry, u: usize, tau: f64, noise: Noise) -> (Vec<f64>, Vec<u8>, Vec<f64>) {
    let (mut y, mut winners, mut dx) = (vec![0.0; x.len()], Vec::new(), vec![0.0; x.len()]);
    for block in blocks(geom, u) {
        let z: Vec<f32> = block.iter().map(|&e| x[e] + gumbel(noise, e)).collect();
        let win = (0..u).fold(0, |w, j| if z[j] > z[w] { j } else { w });
        winners.push(win as u8);
        let max = z[win] as f64;
        let exps: Vec<f64> = z.iter().map(|&z| ((z as f64 - max) / tau).exp()).collect();
        let total: f64 = exps.iter().sum();
        let s: Vec<f64> = exps.iter().map(|e| e / total).collect();
        let a: f64 = block.iter().zip(&s).map(|(&e, s)| dy[e] as f64 * x[e] as f64 * s).sum();
        for (j, &e) in block.iter().enumerate() {
            let hard = if j == win { 1.0 } else { 0.0 };
            y[e] = hard * x[e] as f64;
            dx[e] = dy[e] as f64 * hard + s[j] / tau * (dy[e] as f64 * x[e] as f64 - a);
        }
    }
    (y, winners, dx)
}

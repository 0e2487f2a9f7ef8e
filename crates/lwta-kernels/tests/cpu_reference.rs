//! The vectorised CPU kernels against a plain per-block f64 transcription of the formulas, on both
//! layouts, many `U` (specialised and generic copies) and sizes that leave partial tiles, chunks
//! and Philox groups.

use lwta_kernels::cpu::{backward, forward};
use lwta_kernels::philox::{gumbel_from_uniform, uniform_at};
use lwta_kernels::{BlockGeometry, Noise};

/// Deterministic pseudo-random values in [-2, 2) (a different Philox stream than the noise's).
fn values(len: usize, seed: u64) -> Vec<f32> {
    (0..len as u64).map(|e| 4.0 * uniform_at(seed, 99, e) - 2.0).collect()
}

/// Per block: flat indices of its competitors, in order.
fn blocks(geom: BlockGeometry, u: usize) -> Vec<Vec<usize>> {
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
fn gumbel(noise: Noise, e: usize) -> f32 {
    match noise {
        Noise::None => 0.0,
        Noise::Philox { seed, offset } => gumbel_from_uniform(uniform_at(seed, offset, e as u64)),
        Noise::Uniforms(u) => gumbel_from_uniform(u[e]),
    }
}

/// The formulas, block by block: (y, winners, dx).
fn reference(x: &[f32], dy: &[f32], geom: BlockGeometry, u: usize, tau: f64, noise: Noise) -> (Vec<f64>, Vec<u8>, Vec<f64>) {
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

fn check(geom: BlockGeometry, u: usize, tau: f32, noise: Noise) {
    let x = values(geom.len(), 1);
    let dy = values(geom.len(), 2);
    let (ry, rwin, rdx) = reference(&x, &dy, geom, u, tau as f64, noise);
    let (mut y, mut winners, mut dx) = (vec![f32::NAN; x.len()], vec![u8::MAX; geom.blocks(u)], vec![f32::NAN; x.len()]);
    forward(&x, &mut y, &mut winners, geom, u, noise).unwrap();
    backward(&x, &dy, &mut dx, geom, u, tau, noise).unwrap();
    let case = format!("{geom:?} U={u} tau={tau} {noise:?}");
    assert_eq!(winners, rwin, "{case}");
    for e in 0..x.len() {
        assert_eq!(y[e] as f64, ry[e], "{case}: y[{e}]");
        let err = (dx[e] as f64 - rdx[e]).abs();
        assert!(err <= 2e-6 * (1.0 + rdx[e].abs()) / tau.min(1.0) as f64, "{case}: dx[{e}] = {} vs {}", dx[e], rdx[e]);
    }
}

#[test]
fn token_layout_matches_the_formulas() {
    for u in [1, 2, 3, 4, 5, 8, 12, 16, 32] {
        for rows in [1, 7, 300] {
            let geom = BlockGeometry::tokens(rows, 4 * u);
            check(geom, u, 1.67, Noise::Philox { seed: 5, offset: 3 });
            check(geom, u, 0.67, Noise::None);
        }
    }
}

#[test]
fn nchw_layout_matches_the_formulas() {
    for u in [1, 2, 3, 4, 8, 16] {
        for (h, w) in [(1, 1), (1, 3), (3, 5), (28, 28)] {
            let geom = BlockGeometry::nchw(3, 2 * u, h, w);
            check(geom, u, 1.67, Noise::Philox { seed: 5, offset: 3 });
            check(geom, u, 0.01, Noise::None);
        }
    }
}

#[test]
fn supplied_uniforms_match_the_formulas() {
    let geom = BlockGeometry::nchw(2, 8, 5, 7);
    let uniforms: Vec<f32> = (0..geom.len() as u64).map(|e| uniform_at(77, 0, e)).collect();
    check(geom, 4, 1.67, Noise::Uniforms(&uniforms));
    check(BlockGeometry::tokens(35, 8), 4, 0.67, Noise::Uniforms(&uniforms[..280]));
}

/// Large enough for several rayon chunks, with a partial last chunk.
#[test]
fn multi_chunk_tensors_match_the_formulas() {
    check(BlockGeometry::tokens(1000, 76), 4, 1.67, Noise::Philox { seed: 1, offset: 1 << 40 });
    check(BlockGeometry::nchw(5, 16, 30, 30), 4, 1.67, Noise::Philox { seed: u64::MAX, offset: 9 });
}

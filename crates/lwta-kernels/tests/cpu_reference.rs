//! The vectorised CPU kernels against a plain per-block f64 transcription of the formulas, on both
//! layouts, many `U` (the U = 4 token path, gathered tiles, channel rows) and sizes that leave
//! partial vectors, tiles, chunks and Philox groups.

mod common;

use common::{reference, values};
use lwta_kernels::cpu::{backward, forward};
use lwta_kernels::philox::uniform_at;
use lwta_kernels::{BlockGeometry, Noise};

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

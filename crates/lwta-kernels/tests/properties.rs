//! Properties of the CPU kernels: the sampling statistics (Gumbel-max draws winners with
//! probability softmax(x)), exact sparsity, layout independence, the backward as the derivative it
//! claims to be, the edge cases, and the errors.

mod common;

use common::{blocks, gumbel, values};
use lwta_kernels::cpu::{backward, forward};
use lwta_kernels::philox::uniform_at;
use lwta_kernels::{BlockGeometry, LwtaError, Noise};

/// Upper `1e-4` quantile of the chi-square distribution with `k` degrees of freedom
/// (Wilson–Hilferty; within 1% for k ≥ 1).
fn chi_square_bound(k: usize) -> f64 {
    let k = k as f64;
    let z = 3.719; // standard normal 1 − 1e-4 quantile
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

/// Every block gets the same logits; over many Philox offsets the winners' frequencies must
/// match softmax(logits) (Gumbel-max). Seeds are fixed, so the outcome is deterministic.
#[test]
fn winner_frequencies_follow_softmax() {
    let cases: [(&[f32], bool); 4] = [
        (&[0.5, -0.3, 1.2, 0.0], false),
        (&[0.5, -0.3, 1.2, 0.0], true),
        (&[0.2, -1.0], false),
        (&[1.0, 0.0, -1.0, 2.0, 0.5, 0.5, -2.0, 0.3], true),
    ];
    for (logits, nchw) in cases {
        let u = logits.len();
        let geom = if nchw { BlockGeometry::nchw(4, u, 16, 16) } else { BlockGeometry::tokens(1024, u) };
        let x: Vec<f32> = (0..geom.len()).map(|e| if nchw { logits[(e / geom.inner) % u] } else { logits[e % u] }).collect();
        let mut counts = vec![0u64; u];
        let (mut y, mut winners) = (vec![0.0; x.len()], vec![0; geom.blocks(u)]);
        for offset in 0..100 {
            forward(&x, &mut y, &mut winners, geom, u, Noise::Philox { seed: 2024, offset }).unwrap();
            for &w in &winners {
                counts[w as usize] += 1;
            }
        }
        let n: u64 = counts.iter().sum();
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let chi2: f64 = logits
            .iter()
            .zip(&counts)
            .map(|(&l, &c)| {
                let expected = n as f64 * (l as f64).exp() / z;
                (c as f64 - expected).powi(2) / expected
            })
            .sum();
        let bound = chi_square_bound(u - 1);
        assert!(chi2 < bound, "U={u} nchw={nchw}: chi² = {chi2:.1} ≥ {bound:.1}, counts {counts:?}");
    }
}

/// The same draws must also be independent of the block's position: a chi-square test that
/// the winner is uniform when all logits are equal, on one offset over many blocks.
#[test]
fn equal_logits_give_uniform_winners() {
    let (u, geom) = (4, BlockGeometry::tokens(200_000, 4));
    let x = vec![0.25; geom.len()];
    let (mut y, mut winners) = (vec![0.0; x.len()], vec![0; geom.blocks(u)]);
    forward(&x, &mut y, &mut winners, geom, u, Noise::Philox { seed: 1, offset: 0 }).unwrap();
    let mut counts = [0u64; 4];
    winners.iter().for_each(|&w| counts[w as usize] += 1);
    let expected = winners.len() as f64 / 4.0;
    let chi2: f64 = counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
    assert!(chi2 < chi_square_bound(3), "chi² = {chi2:.1}, counts {counts:?}");
}

#[test]
fn exactly_one_unit_per_block_passes_its_input() {
    for (geom, u) in [(BlockGeometry::tokens(513, 16), 4), (BlockGeometry::tokens(99, 24), 8), (BlockGeometry::nchw(3, 12, 9, 9), 3)] {
        // Non-zero inputs, so a passed unit is never mistaken for a silenced one.
        let x: Vec<f32> = values(geom.len(), 3).into_iter().map(|v| if v == 0.0 { 1.0 } else { v }).collect();
        let (mut y, mut winners) = (vec![f32::NAN; x.len()], vec![u8::MAX; geom.blocks(u)]);
        forward(&x, &mut y, &mut winners, geom, u, Noise::Philox { seed: 5, offset: 6 }).unwrap();
        let active = y.iter().filter(|&&v| v != 0.0).count();
        assert_eq!(active * u, x.len(), "{geom:?} U={u}: sparsity is not 1/U");
        for (block, members) in blocks(geom, u).iter().enumerate() {
            for (j, &e) in members.iter().enumerate() {
                let expected = if j == winners[block] as usize { x[e] } else { 0.0 };
                assert_eq!(y[e].to_bits(), expected.to_bits(), "{geom:?} U={u}: block {block}, element {e}");
            }
        }
    }
}

/// NCHW data permuted to tokens `[N, H, W, C]` (with its draws permuted alike) gives the permuted
/// outputs, bit for bit: the layouts only change where the competitors live.
#[test]
fn token_and_nchw_layouts_agree() {
    let (n, c, h, w, u) = (3, 8, 5, 7, 4);
    let nchw = BlockGeometry::nchw(n, c, h, w);
    let tokens = BlockGeometry::tokens(n * h * w, c);
    let to_tokens = |v: &[f32]| -> Vec<f32> {
        let mut out = vec![0.0; v.len()];
        for (e, &value) in v.iter().enumerate() {
            let (img, ch, p) = (e / (c * h * w), (e / (h * w)) % c, e % (h * w));
            out[(img * h * w + p) * c + ch] = value;
        }
        out
    };
    let (x, dy) = (values(nchw.len(), 1), values(nchw.len(), 2));
    let uniforms: Vec<f32> = (0..nchw.len() as u64).map(|e| uniform_at(8, 0, e)).collect();
    let (xt, dyt, ut) = (to_tokens(&x), to_tokens(&dy), to_tokens(&uniforms));
    for (noise, noise_t) in [(Noise::Uniforms(&uniforms), Noise::Uniforms(&ut)), (Noise::None, Noise::None)] {
        let run = |geom: BlockGeometry, x: &[f32], dy: &[f32], noise: Noise| {
            let (mut y, mut winners, mut dx) = (vec![0.0; x.len()], vec![0; geom.blocks(u)], vec![0.0; x.len()]);
            forward(x, &mut y, &mut winners, geom, u, noise).unwrap();
            backward(x, dy, &mut dx, geom, u, 0.67, noise).unwrap();
            (y, winners, dx)
        };
        let (y, winners, dx) = run(nchw, &x, &dy, noise);
        let (yt, winners_t, dxt) = run(tokens, &xt, &dyt, noise_t);
        assert_eq!(to_tokens(&y), yt);
        assert_eq!(to_tokens(&dx), dxt);
        // NCHW block (img, group, p) is token block ((img·HW + p)·C/U + group).
        for (b, &win) in winners.iter().enumerate() {
            let (img, group, p) = (b / (c / u * h * w), (b / (h * w)) % (c / u), b % (h * w));
            assert_eq!(win, winners_t[(img * h * w + p) * (c / u) + group], "block {b}");
        }
    }
}

/// The straight-through gradient is `dy⊙h + ∇F − dy⊙s` with `F(x) = Σ_i dy_i·x_i·s_i(x)` for the
/// fixed noise: ∇F by central differences of F evaluated in f64 (from the f32 logits), `h` from the
/// forward pass, `s` the softmax — so the regenerated noise, the winner and the relaxed softmax are
/// all checked against a derivative, not against a transcription of the formula.
#[test]
fn backward_is_the_straight_through_derivative() {
    let cases = [
        (BlockGeometry::tokens(40, 8), 4, 1.67),
        (BlockGeometry::tokens(30, 9), 3, 0.67),
        (BlockGeometry::nchw(2, 4, 7, 7), 2, 1.67),
        (BlockGeometry::nchw(2, 8, 12, 12), 4, 0.67),
    ];
    for (geom, u, tau) in cases {
        let (x, dy) = (values(geom.len(), 4), values(geom.len(), 5));
        let noise = Noise::Philox { seed: 77, offset: 3 };
        let (mut y, mut winners, mut dx) = (vec![0.0; x.len()], vec![0; geom.blocks(u)], vec![0.0; x.len()]);
        forward(&x, &mut y, &mut winners, geom, u, noise).unwrap();
        backward(&x, &dy, &mut dx, geom, u, tau, noise).unwrap();
        let tau = tau as f64;
        for (b, members) in blocks(geom, u).iter().enumerate() {
            let g: Vec<f64> = members.iter().map(|&e| gumbel(noise, e) as f64).collect();
            let xs: Vec<f64> = members.iter().map(|&e| x[e] as f64).collect();
            let dys: Vec<f64> = members.iter().map(|&e| dy[e] as f64).collect();
            let softmax = |xs: &[f64]| -> Vec<f64> {
                let z: Vec<f64> = xs.iter().zip(&g).map(|(x, g)| (x + g) / tau).collect();
                let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = z.iter().map(|z| (z - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                e.iter().map(|e| e / sum).collect()
            };
            let f = |xs: &[f64]| -> f64 { softmax(xs).iter().zip(xs).zip(&dys).map(|((s, x), dy)| dy * x * s).sum() };
            let s = softmax(&xs);
            for j in 0..u {
                let step = 1e-5;
                let (mut plus, mut minus) = (xs.clone(), xs.clone());
                plus[j] += step;
                minus[j] -= step;
                let grad_f = (f(&plus) - f(&minus)) / (2.0 * step);
                let hard = if winners[b] as usize == j { 1.0 } else { 0.0 };
                let expected = dys[j] * hard + grad_f - dys[j] * s[j];
                let got = dx[members[j]] as f64;
                assert!(
                    (got - expected).abs() <= 2e-5 * (1.0 + expected.abs()),
                    "{geom:?} U={u}: block {b}, competitor {j}: {got} vs {expected}"
                );
            }
        }
    }
}

#[test]
fn one_competitor_is_the_identity() {
    for geom in [BlockGeometry::tokens(33, 5), BlockGeometry::nchw(2, 3, 4, 4)] {
        let (x, dy) = (values(geom.len(), 6), values(geom.len(), 7));
        let (mut y, mut winners, mut dx) = (vec![0.0; x.len()], vec![9; geom.blocks(1)], vec![0.0; x.len()]);
        forward(&x, &mut y, &mut winners, geom, 1, Noise::Philox { seed: 1, offset: 1 }).unwrap();
        backward(&x, &dy, &mut dx, geom, 1, 1.67, Noise::Philox { seed: 1, offset: 1 }).unwrap();
        assert_eq!(y, x);
        assert!(winners.iter().all(|&w| w == 0));
        assert_eq!(dx, dy);
    }
}

#[test]
fn without_noise_the_first_maximum_wins() {
    let x = [1.0, 3.0, 3.0, 2.0, -1.0, -1.0, -1.0, -1.0, 0.0, 5.0, 0.0, 5.0];
    let (mut y, mut winners) = (vec![0.0; 12], vec![0; 3]);
    forward(&x, &mut y, &mut winners, BlockGeometry::tokens(3, 4), 4, Noise::None).unwrap();
    assert_eq!(winners, [1, 0, 1]);
    assert_eq!(y, [0.0, 3.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0]);
}

#[test]
fn bad_arguments_are_errors_that_name_the_problem() {
    let geom = BlockGeometry::tokens(4, 8);
    let (x, mut y, mut dx, mut winners) = (vec![0.0; 32], vec![0.0; 32], vec![0.0; 32], vec![0; 8]);
    let length = |e: LwtaError| match e {
        LwtaError::Length { name, got, expected } => (name, got, expected),
        other => panic!("expected a length error, got {other}"),
    };
    let err = forward(&x[..31], &mut y, &mut winners, geom, 4, Noise::None).unwrap_err();
    assert_eq!(length(err), ("x", 31, 32));
    let err = forward(&x, &mut y[..30], &mut winners, geom, 4, Noise::None).unwrap_err();
    assert_eq!(length(err), ("y", 30, 32));
    let err = forward(&x, &mut y, &mut winners[..7], geom, 4, Noise::None).unwrap_err();
    assert_eq!(length(err), ("winners", 7, 8));
    let err = forward(&x, &mut y, &mut winners, geom, 4, Noise::Uniforms(&[0.5; 31])).unwrap_err();
    assert_eq!(length(err), ("uniforms", 31, 32));
    let err = backward(&x, &x[..2], &mut dx, geom, 4, 1.0, Noise::None).unwrap_err();
    assert_eq!(length(err), ("dy", 2, 32));
    let err = backward(&x, &x, &mut dx[..1], geom, 4, 1.0, Noise::None).unwrap_err();
    assert_eq!(length(err), ("dx", 1, 32));

    let err = forward(&x, &mut y, &mut winners, BlockGeometry::tokens(8, 4), 3, Noise::None).unwrap_err();
    assert!(matches!(err, LwtaError::Indivisible { channels: 4, competitors: 3, .. }), "{err}");
    assert!(err.to_string().contains("4 channels are not divisible by U = 3"), "{err}");
    assert!(matches!(forward(&x, &mut y, &mut winners, geom, 0, Noise::None), Err(LwtaError::Competitors(0))));
    assert!(matches!(forward(&x, &mut y, &mut winners, geom, 256, Noise::None), Err(LwtaError::Competitors(256))));
    for tau in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(matches!(backward(&x, &x, &mut dx, geom, 4, tau, Noise::None), Err(LwtaError::Tau(_))), "tau {tau}");
    }
    // Empty tensors are fine.
    forward(&[], &mut [], &mut [], BlockGeometry::tokens(0, 8), 4, Noise::None).unwrap();
}

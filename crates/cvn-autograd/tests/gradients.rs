//! Finite-difference checks of every op's backward pass.

use cvn_autograd::gradcheck::{max_gradient_error, test_values};
use cvn_autograd::{LwtaLayout, Noise, Result, Statistics, Tape, Tensor};

const STEP: f32 = 1e-2;
const TOL: f32 = 2e-2;

fn t(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(test_values(shape.iter().product(), seed), shape).unwrap()
}

fn check(name: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let errors = max_gradient_error(inputs, STEP, f).unwrap();
    for (i, e) in errors.iter().enumerate() {
        assert!(*e < TOL, "{name}: input {i} gradient error {e}");
    }
}

#[test]
fn broadcasting_arithmetic() {
    check("add", &[t(&[2, 3, 4], 1), t(&[4], 2)], |x| x[0].add(&x[1]));
    check("sub", &[t(&[2, 1, 4], 3), t(&[3, 1], 4)], |x| x[0].sub(&x[1]));
    check("mul", &[t(&[2, 3, 4], 5), t(&[1, 3, 1], 6)], |x| x[0].mul(&x[1]));
    let den = Tensor::from_vec(test_values(6, 7).iter().map(|v| v + 2.0).collect(), &[2, 3]).unwrap();
    check("div", &[t(&[2, 3], 8), den], |x| x[0].div(&x[1]));
    check("affine", &[t(&[5], 9)], |x| x[0].affine(-1.5, 0.25));
}

#[test]
fn matrix_products() {
    check("matmul batched", &[t(&[2, 3, 4], 10), t(&[2, 4, 5], 11)], |x| x[0].matmul(&x[1]));
    check("matmul shared rhs", &[t(&[2, 3, 4], 12), t(&[4, 5], 13)], |x| x[0].matmul(&x[1]));
    check("linear", &[t(&[2, 3, 4], 14), t(&[5, 4], 15), t(&[5], 16)], |x| x[0].linear(&x[1], Some(&x[2])));
    check("linear no bias", &[t(&[3, 4], 17), t(&[2, 4], 18)], |x| x[0].linear(&x[1], None));
}

#[test]
fn reductions() {
    check("sum_all", &[t(&[3, 4], 20)], |x| x[0].sum_all());
    check("mean_all", &[t(&[3, 4], 21)], |x| x[0].mean_all());
    check("sum_dim", &[t(&[2, 3, 4], 22)], |x| x[0].sum_dim(1, false));
    check("mean_dim keepdim", &[t(&[2, 3, 4], 23)], |x| x[0].mean_dim(-1, true));
}

#[test]
fn layout_ops() {
    check("reshape", &[t(&[2, 6], 30)], |x| x[0].reshape(&[3, usize::MAX]));
    check("permute", &[t(&[2, 3, 4], 31)], |x| x[0].permute(&[2, 0, 1]));
    check("transpose", &[t(&[2, 3, 4], 32)], |x| x[0].transpose(0, -1));
    check("narrow", &[t(&[2, 5, 3], 33)], |x| x[0].narrow(1, 1, 3));
    check("cat", &[t(&[2, 2, 3], 34), t(&[2, 1, 3], 35)], |x| Tensor::cat(&[&x[0], &x[1]], 1));
    check("index_select", &[t(&[4, 3], 36)], |x| x[0].index_select(&[2, 0, 2, 3]));
}

#[test]
fn normalisation_and_softmax() {
    check("layer_norm", &[t(&[3, 5], 40), t(&[5], 41), t(&[5], 42)], |x| x[0].layer_norm(&x[1], &x[2], 1e-5));
    check("batch_norm2d train", &[t(&[3, 2, 2, 3], 43), t(&[2], 44), t(&[2], 45)], |x| {
        Ok(x[0].batch_norm2d(&x[1], &x[2], Statistics::Batch, 1e-5)?.0)
    });
    let (rm, rv) = (t(&[2], 46), Tensor::from_vec(vec![0.5, 2.0], &[2]).unwrap());
    check("batch_norm2d eval", &[t(&[2, 2, 2, 2], 47), t(&[2], 48), t(&[2], 49)], |x| {
        Ok(x[0].batch_norm2d(&x[1], &x[2], Statistics::Running { mean: &rm, var: &rv }, 1e-5)?.0)
    });
    check("softmax", &[t(&[3, 4], 50)], |x| x[0].softmax());
    check("log_softmax", &[t(&[3, 4], 51)], |x| x[0].log_softmax());
    check("l2_normalize", &[t(&[3, 4], 52)], |x| x[0].l2_normalize());
}

#[test]
fn attention() {
    check("multi_head_attention", &[t(&[2, 3, 4], 60), t(&[2, 3, 4], 61), t(&[2, 3, 4], 62)], |x| {
        Tensor::multi_head_attention(&x[0], &x[1], &x[2], 2, false)
    });
    check("causal attention", &[t(&[1, 4, 4], 63), t(&[1, 4, 4], 64), t(&[1, 4, 4], 65)], |x| {
        Tensor::multi_head_attention(&x[0], &x[1], &x[2], 2, true)
    });
    check("packed attention", &[t(&[2, 3, 12], 66)], |x| x[0].packed_attention(2, false));
}

/// The fused attention equals the textbook composition of primitive ops, head by head.
#[test]
fn fused_attention_matches_composition() {
    let (b, tk, heads, hd) = (2, 5, 3, 4);
    let c = heads * hd;
    let qkv = t(&[b, tk, 3 * c], 67);
    let fused = qkv.packed_attention(heads, true).unwrap();
    let head = |part: usize, h: usize| qkv.narrow(2, part * c + h * hd, hd).unwrap();
    let mask: Vec<f32> = (0..tk * tk).map(|i| if i % tk > i / tk { f32::NEG_INFINITY } else { 0.0 }).collect();
    let mask = Tensor::from_vec(mask, &[tk, tk]).unwrap();
    let outs: Vec<Tensor> = (0..heads)
        .map(|h| {
            let scores = head(0, h).matmul(&head(1, h).transpose(1, 2).unwrap()).unwrap().scale(1.0 / (hd as f32).sqrt()).unwrap();
            scores.add(&mask).unwrap().softmax().unwrap().matmul(&head(2, h)).unwrap()
        })
        .collect();
    let composed = Tensor::cat(&outs.iter().collect::<Vec<_>>(), 2).unwrap();
    for (a, e) in fused.to_vec().unwrap().iter().zip(composed.to_vec().unwrap()) {
        assert!((a - e).abs() < 1e-5, "{a} vs {e}");
    }
}

#[test]
fn activations() {
    check("gelu", &[t(&[4, 5], 70).scale(3.0).unwrap()], |x| x[0].gelu());
    check("quick_gelu", &[t(&[4, 5], 71).scale(3.0).unwrap()], |x| x[0].quick_gelu());
    check("relu", &[t(&[4, 5], 72)], |x| x[0].relu());
}

#[test]
fn convolution_and_pooling() {
    check("conv2d stride 1 pad 1", &[t(&[2, 2, 4, 4], 80), t(&[3, 2, 3, 3], 81), t(&[3], 82)], |x| x[0].conv2d(&x[1], Some(&x[2]), 1, 1));
    check("conv2d stride 2 no pad", &[t(&[1, 3, 5, 5], 83), t(&[2, 3, 3, 3], 84)], |x| x[0].conv2d(&x[1], None, 2, 0));
    // Distinct values 0.04 apart, so the finite-difference step never changes a window's maximum.
    let distinct: Vec<f32> = (0..100).map(|i| ((i * 37) % 100) as f32 * 0.04 - 2.0).collect();
    check("max_pool2d", &[Tensor::from_vec(distinct, &[2, 2, 5, 5]).unwrap()], |x| x[0].max_pool2d(3, 2, 1));
    check("global_avg_pool2d", &[t(&[2, 3, 2, 2], 86)], |x| x[0].global_avg_pool2d());
}

#[test]
fn losses() {
    check("cross_entropy", &[t(&[4, 5], 90)], |x| x[0].cross_entropy(&[0, 4, 2, 2], 0.0));
    check("cross_entropy smoothed", &[t(&[4, 5], 91)], |x| x[0].cross_entropy(&[1, 3, 0, 2], 0.1));
    check("dropout", &[t(&[64], 92)], |x| x[0].dropout(0.3, 7, 1));
}

/// The LWTA op must hand the tape exactly the reference backward of `lwta_kernels` (whose
/// straight-through formula is checked by finite differences in that crate).
#[test]
fn lwta_op_uses_the_reference_backward() {
    let x = t(&[3, 8], 100).requiring_grad();
    let tape = Tape::new();
    let noise = Noise::Philox { seed: 5, offset: 9 };
    let (y, winners) = x.traced(&tape).lwta(LwtaLayout::Tokens, 4, 1.67, noise, "test").unwrap();
    assert_eq!(winners.len(), 6);
    let dy = t(&[3, 8], 101);
    let grads = y.backward_with(&dy).unwrap();
    let geom = lwta_kernels::BlockGeometry::tokens(3, 8);
    let mut expected = vec![0.0; 24];
    lwta_kernels::cpu::backward(&x.to_vec().unwrap(), &dy.to_vec().unwrap(), &mut expected, geom, 4, 1.67, noise).unwrap();
    let got = grads.get(&x).unwrap().to_vec().unwrap();
    for (a, b) in got.iter().zip(&expected) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
    }
    let active = y.to_vec().unwrap().iter().filter(|v| **v != 0.0).count();
    assert_eq!(active, 6, "exactly one winner per block of 4");
}

#[test]
fn lwta_rejects_indivisible_channels_naming_the_layer() {
    let err = t(&[2, 6], 1).lwta(LwtaLayout::Tokens, 4, 1.0, Noise::None, "blocks.0.mlp.act").unwrap_err().to_string();
    assert!(err.contains("blocks.0.mlp.act") && err.contains('6') && err.contains('4'), "{err}");
}

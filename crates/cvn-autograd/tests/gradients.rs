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

/// Two replicas in one process: each calls `sum_in_place` from its own thread; the sum waits
/// for both, then adds replica 0's values and replica 1's in that order (the same on both).
struct PairSum {
    rank: usize,
    shared: std::sync::Arc<(std::sync::Barrier, std::sync::Mutex<[Vec<f64>; 2]>)>,
}

impl cvn_autograd::CrossReplicaSum for PairSum {
    fn sum_in_place(&self, values: &mut [f64]) -> Result<()> {
        let (barrier, slots) = &*self.shared;
        slots.lock().unwrap()[self.rank] = values.to_vec();
        barrier.wait();
        {
            let s = slots.lock().unwrap();
            for (i, v) in values.iter_mut().enumerate() {
                *v = s[0][i] + s[1][i];
            }
        }
        barrier.wait();
        Ok(())
    }
}

/// Batch `[N, C, H, W]` values split into two halves along N, weight, bias, output probe.
struct TwoReplicas {
    shape: [usize; 4],
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    probe: Vec<f32>,
}

/// Per replica: (y, loss = Σ y·probe, and with `grads` the gradients of x, w, b).
type ReplicaOut = (Vec<f32>, f64, Option<[Vec<f32>; 3]>);

impl TwoReplicas {
    fn half(&self, r: usize) -> (Vec<f32>, Vec<f32>, [usize; 4]) {
        let [n, c, h, w] = self.shape;
        let per = c * h * w;
        let rows = if r == 0 { 0..n / 2 } else { n / 2..n };
        let shape = [rows.len(), c, h, w];
        (self.x[rows.start * per..rows.end * per].to_vec(), self.probe[rows.start * per..rows.end * per].to_vec(), shape)
    }

    fn run(&self, grads: bool) -> [ReplicaOut; 2] {
        let shared = std::sync::Arc::new((std::sync::Barrier::new(2), std::sync::Mutex::new([Vec::new(), Vec::new()])));
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|r| {
                    let replicas: std::sync::Arc<dyn cvn_autograd::CrossReplicaSum> =
                        std::sync::Arc::new(PairSum { rank: r, shared: shared.clone() });
                    let (x, probe, shape) = self.half(r);
                    let (w, b) = (self.w.clone(), self.b.clone());
                    s.spawn(move || -> Result<ReplicaOut> {
                        let c = shape[1];
                        let tape = Tape::new();
                        let x = Tensor::from_vec(x, &shape)?.requiring_grad().traced(&tape);
                        let w = Tensor::from_vec(w, &[c])?.requiring_grad().traced(&tape);
                        let b = Tensor::from_vec(b, &[c])?.requiring_grad().traced(&tape);
                        let (y, _) = x.batch_norm2d(&w, &b, Statistics::Synced(&replicas), 1e-5)?;
                        let loss = y.mul(&Tensor::from_vec(probe, &shape)?)?.sum_all()?;
                        let y_values = y.to_vec()?;
                        let loss_value = y_values.iter().zip(self.half(r).1).map(|(a, p)| *a as f64 * p as f64).sum();
                        let g = if grads {
                            let g = loss.backward()?;
                            let get = |t: &Tensor| g.get(t).expect("a gradient").to_vec();
                            Some([get(&x)?, get(&w)?, get(&b)?])
                        } else {
                            None
                        };
                        Ok((y_values, loss_value, g))
                    })
                })
                .collect();
            let mut outs = handles.into_iter().map(|h| h.join().unwrap().unwrap());
            [outs.next().unwrap(), outs.next().unwrap()]
        })
    }
}

/// Synced batch norm over two halves of a batch equals batch-statistics batch norm over the
/// whole batch (outputs, running statistics' inputs and the gradients of the summed loss), and
/// its gradients match central differences of that summed loss.
#[test]
fn synced_batch_norm_over_two_replicas() {
    let shape = [4, 3, 2, 3];
    let len: usize = shape.iter().product();
    // An offset per channel, so the replica means differ and the between-replica term matters.
    let x: Vec<f32> = test_values(len, 70)
        .iter()
        .enumerate()
        .map(|(i, v)| v + ((i / 6) % 3) as f32 * 0.7 + if i < len / 2 { 0.5 } else { 0.0 })
        .collect();
    let pair = TwoReplicas {
        shape,
        x: x.clone(),
        w: t(&[3], 71).to_vec().unwrap(),
        b: t(&[3], 72).to_vec().unwrap(),
        probe: test_values(len, 73),
    };
    let [a, b] = pair.run(true);

    // The whole batch in one process.
    let tape = Tape::new();
    let xw = Tensor::from_vec(x, &shape).unwrap().requiring_grad().traced(&tape);
    let ww = Tensor::from_vec(pair.w.clone(), &[3]).unwrap().requiring_grad().traced(&tape);
    let bw = Tensor::from_vec(pair.b.clone(), &[3]).unwrap().requiring_grad().traced(&tape);
    let (y, _) = xw.batch_norm2d(&ww, &bw, Statistics::Batch, 1e-5).unwrap();
    let loss = y.mul(&Tensor::from_vec(pair.probe.clone(), &shape).unwrap()).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let close = |what: &str, got: &[f32], want: &[f32]| {
        assert_eq!(got.len(), want.len());
        for (i, (p, q)) in got.iter().zip(want).enumerate() {
            assert!((p - q).abs() <= 2e-5 * (1.0 + q.abs()), "{what}[{i}]: synced {p}, whole batch {q}");
        }
    };
    let cat = |p: &[f32], q: &[f32]| -> Vec<f32> { p.iter().chain(q).copied().collect() };
    close("y", &cat(&a.0, &b.0), &y.to_vec().unwrap());
    let (ga, gb) = (a.2.unwrap(), b.2.unwrap());
    close("dx", &cat(&ga[0], &gb[0]), &g.get(&xw).unwrap().to_vec().unwrap());
    let sum = |p: &[f32], q: &[f32]| -> Vec<f32> { p.iter().zip(q).map(|(p, q)| p + q).collect() };
    close("dweight", &sum(&ga[1], &gb[1]), &g.get(&ww).unwrap().to_vec().unwrap());
    close("dbias", &sum(&ga[2], &gb[2]), &g.get(&bw).unwrap().to_vec().unwrap());

    // Central differences of the summed loss, every element of x, w and b.
    let analytic = [cat(&ga[0], &gb[0]), sum(&ga[1], &gb[1]), sum(&ga[2], &gb[2])];
    for (which, an) in analytic.iter().enumerate() {
        for j in 0..an.len() {
            let probe = |delta: f32| {
                let mut p = TwoReplicas { shape, x: pair.x.clone(), w: pair.w.clone(), b: pair.b.clone(), probe: pair.probe.clone() };
                [&mut p.x, &mut p.w, &mut p.b][which][j] += delta;
                let [a, b] = p.run(false);
                a.1 + b.1
            };
            let numeric = ((probe(STEP) - probe(-STEP)) / (2.0 * STEP as f64)) as f32;
            let err = (numeric - an[j]).abs() / numeric.abs().max(an[j].abs()).max(1e-2);
            assert!(err < TOL, "synced batch_norm2d: input {which}[{j}] numeric {numeric} analytic {}", an[j]);
        }
    }
}

//! One training step (forward, backward, optimiser) of the CPU default models, in images/s.
//! PyTorch anchors on this machine (2 threads, `../shared/ANCHORS.md`): ViT-fmnist batch 128
//! GELU 331 images/s, DISCOVER's LWTA 144; ResNet-18-fmnist batch 64 ReLU 302, DISCOVER 154.

use criterion::{criterion_group, Criterion, Throughput};
use cvn_autograd::gradcheck::test_values;
use cvn_autograd::optim::{AdamW, Optimizer};
use cvn_autograd::{Tape, Tensor};
use cvn_models::{Forward, Model};

fn step(model: &mut Model, opt: &mut AdamW, images: &Tensor, labels: &[usize], step: u64) {
    let tape = Tape::new();
    let x = images.traced(&tape);
    let loss = model.forward(&x, &mut Forward::train(7, step)).unwrap().cross_entropy(labels, 0.1).unwrap();
    let grads = loss.backward().unwrap();
    for (name, param, decay) in model.params_mut().trainable_mut() {
        if let Some(g) = grads.get(param) {
            opt.update(name, param, g, 1e-3, decay).unwrap();
        }
    }
}

fn train_steps(c: &mut Criterion) {
    let mut g = c.benchmark_group("train_step");
    g.sample_size(10);
    for &(preset, batch) in &[("vit-fmnist", 128usize), ("resnet18-fmnist", 64)] {
        for u in [1usize, 4] {
            let mut model = Model::preset(preset, u, 0).unwrap();
            let mut opt = AdamW::new(0.05);
            let images = Tensor::from_vec(test_values(batch * 784, 1), &[batch, 1, 28, 28]).unwrap();
            let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
            let mut n = 0;
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_function(format!("{preset} U={u} batch {batch}"), |b| {
                b.iter(|| {
                    n += 1;
                    step(&mut model, &mut opt, &images, &labels, n)
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, train_steps);
fn main() {
    // As every binary of the project does (cvn_autograd::cpu::heap).
    cvn_autograd::cpu::heap::keep_freed_buffers();
    benches();
    Criterion::default().configure_from_args().final_summary();
}

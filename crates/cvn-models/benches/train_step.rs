//! Training throughput of whole models on Fashion-MNIST-shaped input (28×28×1, 10 classes): one
//! step = forward, backward and the optimiser update, as in `cargo xtask train`. Criterion reports
//! the throughput in "elements" = images/s; compare with `shared/ANCHORS.md` (PyTorch, 2 threads:
//! ViT GELU 331, CVN 144 images/s at batch 128; ResNet ReLU 302, CVN 154 at batch 64).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use cvn_autograd::optim::{AdamW, Optimizer};
use cvn_autograd::{gradcheck::test_values, Tape, Tensor};
use cvn_models::{Forward, Model};

fn train_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("train_step");
    g.sample_size(10);
    for (name, competitors, batch) in
        [("vit-fmnist", 4, 128), ("vit-fmnist", 1, 128), ("resnet18-fmnist", 4, 64), ("resnet18-fmnist", 1, 64)]
    {
        let mut model = Model::preset(name, competitors, 0).unwrap();
        let mut opt = AdamW::new(0.05);
        let images = Tensor::from_vec(test_values(batch * 28 * 28, 1), &[batch, 1, 28, 28]).unwrap();
        let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
        let mut step = 0;
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("{name} U={competitors} batch {batch}"), |b| {
            b.iter(|| {
                let tape = Tape::new();
                let logits = model.forward(&images.traced(&tape), &mut Forward::train(1, step)).unwrap();
                let grads = logits.cross_entropy(&labels, 0.1).unwrap().backward().unwrap();
                for (name, param, decay) in model.params_mut().trainable_mut() {
                    if let Some(grad) = grads.get(param) {
                        opt.update(name, param, grad, 1e-3, decay).unwrap();
                    }
                }
                step += 1;
            })
        });
    }
    g.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);

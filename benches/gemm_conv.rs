//! GEMM and convolution throughput of the CPU backend (GFLOP/s are printed by criterion as
//! throughput in "elements" = FLOPs).

use criterion::{criterion_group, Criterion, Throughput};
use cvn_autograd::gradcheck::test_values;
use cvn_autograd::{Tape, Tensor};

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(test_values(shape.iter().product(), seed), shape).unwrap()
}

fn gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    for &(m, k, n) in &[(1024usize, 1024usize, 1024usize), (6400, 96, 384), (6400, 384, 96)] {
        let (a, w) = (tensor(&[m, k], 1), tensor(&[n, k], 2));
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        g.bench_function(format!("linear {m}x{k} · ({n}x{k})ᵀ"), |b| b.iter(|| a.linear(&w, None).unwrap()));
    }
    g.finish();
}

fn conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv2d");
    g.sample_size(10);
    // ResNet-18-fmnist layer1 conv: 64 images, 16 → 16 channels, 28×28, 3×3.
    let (x, w) = (tensor(&[64, 16, 28, 28], 3), tensor(&[16, 16, 3, 3], 4).requiring_grad());
    let flops = 2 * 64 * 16 * 28 * 28 * 16 * 9;
    g.throughput(Throughput::Elements(flops as u64));
    g.bench_function("fwd 64x16x28x28 k3", |b| b.iter(|| x.conv2d(&w, None, 1, 1).unwrap()));
    g.throughput(Throughput::Elements(3 * flops as u64));
    g.bench_function("fwd+bwd 64x16x28x28 k3", |b| {
        b.iter(|| {
            let tape = Tape::new();
            let y = x.traced(&tape).conv2d(&w, None, 1, 1).unwrap();
            y.sum_all().unwrap().backward().unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, gemm, conv);
fn main() {
    // As every binary of the project does (cvn_autograd::cpu::heap).
    cvn_autograd::cpu::heap::keep_freed_buffers();
    benches();
    Criterion::default().configure_from_args().final_summary();
}

//! The LWTA CPU kernels against the activation they replace, on the same tensor, plus a plain
//! copy of that tensor as the memory floor (`../shared/ANCHORS.md`, CPU table):
//! * tokens 128×50×384, U = 4 — against GELU (ViT MLP);
//! * NCHW 128×16×28×28, U = 4 — against ReLU (ResNet).
//!
//! Train mode: Philox noise, τ = 1.67; "fwd+bwd" is a forward pass then a backward pass.
//! `CVN_SIMD=avx2` caps the instruction set (the anchors' machine has AVX2, not AVX-512).
//!
//! `cargo bench --bench lwta_cpu -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use cvn_autograd::kernels::activation::{gelu_backward, gelu_forward, relu_backward, relu_forward};
use lwta_kernels::{cpu, simd, BlockGeometry, Noise};
use rayon::prelude::*;

const U: usize = 4;
const TAU: f32 = 1.67;

type Forward = fn(&[f32], &mut [f32]);
type Backward = fn(&[f32], &[f32], &mut [f32]);

/// Deterministic values in [-2, 2) (the LWTA noise stream with another seed, as plain numbers).
fn values(len: usize, seed: u64) -> Vec<f32> {
    (0..len as u64).map(|e| 4.0 * lwta_kernels::philox::uniform_at(seed, 0, e) - 2.0).collect()
}

/// The memory floor: read the tensor once, write it once, on the same threads and chunking.
fn copy(x: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(1 << 14).zip(x.par_chunks(1 << 14)).for_each(|(y, x)| y.copy_from_slice(x));
}

fn compare(c: &mut Criterion, name: &str, geom: BlockGeometry, baseline: (&str, Forward, Backward)) {
    let n = geom.len();
    let (x, dy) = (values(n, 1), values(n, 2));
    let (mut y, mut dx, mut winners) = (vec![0.0; n], vec![0.0; n], vec![0u8; geom.blocks(U)]);
    let noise = Noise::Philox { seed: 7, offset: 1 };
    let (label, act_forward, act_backward) = baseline;

    let mut g = c.benchmark_group(format!("{name} ({:?})", simd::isa()));
    g.throughput(Throughput::Bytes((2 * n * 4) as u64));
    g.bench_function("copy", |b| b.iter(|| copy(&x, &mut y)));
    g.bench_function(BenchmarkId::new(label, "fwd"), |b| b.iter(|| act_forward(&x, &mut y)));
    g.bench_function(BenchmarkId::new("lwta", "fwd"), |b| b.iter(|| cpu::forward(&x, &mut y, &mut winners, geom, U, noise).unwrap()));
    g.throughput(Throughput::Bytes((5 * n * 4) as u64));
    g.bench_function(BenchmarkId::new(label, "fwd+bwd"), |b| {
        b.iter(|| {
            act_forward(&x, &mut y);
            act_backward(&x, &dy, &mut dx);
        })
    });
    g.bench_function(BenchmarkId::new("lwta", "fwd+bwd"), |b| {
        b.iter(|| {
            cpu::forward(&x, &mut y, &mut winners, geom, U, noise).unwrap();
            cpu::backward(&x, &dy, &mut dx, geom, U, TAU, noise).unwrap();
        })
    });
    g.finish();
}

fn lwta_cpu(c: &mut Criterion) {
    compare(c, "tokens 128x50x384 U=4", BlockGeometry::tokens(128 * 50, 384), ("gelu", gelu_forward, gelu_backward));
    compare(c, "nchw 128x16x28x28 U=4", BlockGeometry::nchw(128, 16, 28, 28), ("relu", relu_forward, relu_backward));
}

criterion_group!(benches, lwta_cpu);
fn main() {
    // As every binary of the project does (cvn_autograd::cpu::heap).
    cvn_autograd::cpu::heap::keep_freed_buffers();
    benches();
    Criterion::default().configure_from_args().final_summary();
}

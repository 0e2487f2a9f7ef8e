//! CLIP-Dissect similarity at the size of the speed target: N = 10,000 probe images ×
//! M = 5,000 concepts × K = 256 neurons. CLIP-Dissect's `soft_wpmi` takes 1.10 s on this machine
//! (PyTorch CPU, 2 threads); the target is ≤ 0.11 s.

use criterion::{criterion_group, Criterion};
use dissect::similarity::{self, SoftWpmiParams, WpmiParams};
use ndarray::Array2;

const IMAGES: usize = 10_000;
const CONCEPTS: usize = 5_000;
const NEURONS: usize = 256;

/// Deterministic uniform values in `[lo, hi)` (xorshift64*), so every run measures the same input.
fn uniform_matrix(rows: usize, cols: usize, lo: f32, hi: f32, mut state: u64) -> Array2<f32> {
    Array2::from_shape_simple_fn((rows, cols), || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let bits = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * bits
    })
}

fn bench(c: &mut Criterion) {
    // Image–text cosines of CLIP sit around 0.1–0.35; activations are arbitrary.
    let clip = uniform_matrix(IMAGES, CONCEPTS, 0.1, 0.35, 0x9e37_79b9_7f4a_7c15);
    let target = uniform_matrix(IMAGES, NEURONS, -1.0, 3.0, 0xd1b5_4a32_d192_ed03);
    let mut group = c.benchmark_group(format!("dissect_similarity/N{IMAGES}xM{CONCEPTS}xK{NEURONS}"));
    group.sample_size(10);
    group
        .bench_function("soft_wpmi", |b| b.iter(|| similarity::soft_wpmi(clip.view(), target.view(), &SoftWpmiParams::default()).unwrap()));
    group.bench_function("wpmi", |b| b.iter(|| similarity::wpmi(clip.view(), target.view(), &WpmiParams::default()).unwrap()));
    group.bench_function("cos", |b| b.iter(|| similarity::cos(clip.view(), target.view()).unwrap()));
    group.finish();
}

criterion_group!(benches, bench);
fn main() {
    // As every binary of the project does (cvn_autograd::cpu::heap).
    cvn_autograd::cpu::heap::keep_freed_buffers();
    benches();
    Criterion::default().configure_from_args().final_summary();
}

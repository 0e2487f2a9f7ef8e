// temporary development timing; the real bench is benches/dissect_similarity.rs
use dissect::similarity::{self, SoftWpmiParams, WpmiParams};
use ndarray::Array2;
fn uniform_matrix(rows: usize, cols: usize, lo: f32, hi: f32, mut state: u64) -> Array2<f32> {
    Array2::from_shape_simple_fn((rows, cols), || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let bits = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * bits
    })
}
fn main() {
    let which = std::env::args().nth(1).unwrap_or("soft".into());
    let reps: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(5);
    let clip = uniform_matrix(10000, 5000, 0.1, 0.35, 0x9e37_79b9_7f4a_7c15);
    let target = uniform_matrix(10000, 256, -1.0, 3.0, 0xd1b5_4a32_d192_ed03);
    let t = std::time::Instant::now();
    for _ in 0..reps {
        let r = match which.as_str() {
            "soft" => similarity::soft_wpmi(clip.view(), target.view(), &SoftWpmiParams::default())
                .unwrap(),
            "wpmi" => similarity::wpmi(clip.view(), target.view(), &WpmiParams::default()).unwrap(),
            "none" => ndarray::Array2::zeros((1, 1)),
            "bw" => {
                use rayon::prelude::*;
                let s: f32 = clip
                    .as_slice()
                    .unwrap()
                    .par_chunks(1 << 16)
                    .map(|c| {
                        c.iter()
                            .fold([0f32; 16], |mut a, &x| {
                                a[0] += x;
                                a
                            })
                            .iter()
                            .sum::<f32>()
                    })
                    .sum();
                ndarray::Array2::from_elem((1, 1), s)
            }
            "bw1" => {
                let s: f32 = clip
                    .as_slice()
                    .unwrap()
                    .chunks_exact(16)
                    .fold([0f32; 16], |mut a, c| {
                        for i in 0..16 {
                            a[i] += c[i];
                        }
                        a
                    })
                    .iter()
                    .sum();
                ndarray::Array2::from_elem((1, 1), s)
            }
            _ => similarity::cos(clip.view(), target.view()).unwrap(),
        };
        std::hint::black_box(r);
    }
    eprintln!("{which}: {:?} per call", t.elapsed() / reps as u32);
}

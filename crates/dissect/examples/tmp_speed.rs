// temporary development timing; the real bench is benches/dissect_similarity.rs
use dissect::similarity::{self, SoftWpmiParams, WpmiParams};
use ndarray::Array2;
fn uniform_matrix(rows: usize, cols: usize, lo: f32, hi: f32, mut state: u64) -> Array2<f32> {
    Array2::from_shape_simple_fn((rows, cols), || {
        state ^= state >> 12; state ^= state << 25; state ^= state >> 27;
        let bits = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * bits
    })
}
fn main() {
    let clip = uniform_matrix(10000, 5000, 0.1, 0.35, 0x9e37_79b9_7f4a_7c15);
    let target = uniform_matrix(10000, 256, -1.0, 3.0, 0xd1b5_4a32_d192_ed03);
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let r = similarity::soft_wpmi(clip.view(), target.view(), &SoftWpmiParams::default()).unwrap();
        println!("soft_wpmi {:?} {}", t.elapsed(), r[[0, 0]]);
    }
    let t = std::time::Instant::now();
    let _ = similarity::wpmi(clip.view(), target.view(), &WpmiParams::default()).unwrap();
    println!("wpmi {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let _ = similarity::cos(clip.view(), target.view()).unwrap();
    println!("cos {:?}", t.elapsed());
}

//! Counter-based randomness for data loading and weight initialisation.
//!
//! Every draw of stream `stream` in domain `domain` comes from Philox4x32-10 with the host key of
//! the seed and the domain's high word (`lwta_kernels::philox::host_key`: never the noise stream's
//! key) and counter = `[draw, domain lo, stream lo, stream hi]`. For data, the domain is the epoch and the stream
//! the sample index, so draws depend only on `(seed, epoch, index)`: batches can be prepared in
//! parallel and in any order, and a resumed run draws exactly what the interrupted one would have —
//! there is no generator state to save. Weight initialisation uses its own domain, one stream per
//! tensor.

use lwta_kernels::philox::{host_key, philox4x32_10, uniform_from_bits};

/// One random stream — see the module docs.
#[derive(Debug, Clone)]
pub struct CounterRng {
    key: [u32; 2],
    domain: u32,
    stream: u64,
    block: u32,
    lanes: [u32; 4],
    used: usize,
}

/// Stream number reserved for an epoch's shuffle (no sample has this index).
const SHUFFLE_STREAM: u64 = u64::MAX;

impl CounterRng {
    pub fn new(seed: u64, domain: u64, stream: u64) -> Self {
        // The domain's high word goes into the key, so every u64 domain is a stream family of its own.
        Self { key: host_key(seed, (domain >> 32) as u32), domain: domain as u32, stream, block: 0, lanes: [0; 4], used: 4 }
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.used == 4 {
            let counter = [self.block, self.domain, self.stream as u32, (self.stream >> 32) as u32];
            self.lanes = philox4x32_10(counter, self.key);
            self.block = self.block.wrapping_add(1);
            self.used = 0;
        }
        self.used += 1;
        self.lanes[self.used - 1]
    }

    /// Uniform in `[0, 1)` with 23 bits of resolution.
    pub fn uniform(&mut self) -> f32 {
        uniform_from_bits(self.next_u32())
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform_in(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Integer in `0..n` (`n > 0`), by 64-bit multiply-shift (bias below 2^-32·n).
    pub fn below(&mut self, n: usize) -> usize {
        let wide = ((self.next_u32() as u64) << 32) | self.next_u32() as u64;
        ((wide as u128 * n as u128) >> 64) as usize
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u32() & 1 == 1
    }

    /// Standard normal (Box–Muller; `1 - u` keeps the logarithm's argument in `(0, 1]`).
    pub fn normal(&mut self) -> f32 {
        let (u1, u2) = (1.0 - self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    /// Normal with standard deviation `std`, redrawn until within ±2·std (timm's `trunc_normal_`
    /// with its default bounds at std 0.02).
    pub fn trunc_normal(&mut self, std: f32) -> f32 {
        loop {
            let z = self.normal();
            if z.abs() <= 2.0 {
                return z * std;
            }
        }
    }
}

/// The order in which epoch `epoch` visits `n` samples (Fisher–Yates on the shuffle stream).
pub fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = CounterRng::new(seed, epoch, SHUFFLE_STREAM);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let draw = |seed, domain, stream| {
            let mut r = CounterRng::new(seed, domain, stream);
            (0..9).map(|_| r.next_u32()).collect::<Vec<_>>()
        };
        assert_eq!(draw(1, 2, 3), draw(1, 2, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 2, 4));
        assert_ne!(draw(1, 2, 3), draw(1, 3, 3));
        assert_ne!(draw(1, 2, 3), draw(2, 2, 3));
        // Domains differing only above bit 31 are distinct too (no silent truncation to u32).
        assert_ne!(draw(1, 2, 3), draw(1, 2 + (1 << 32), 3));
        assert_ne!(draw(1, 0, 3), draw(1, 1 << 40, 3));
    }

    #[test]
    fn data_draws_are_independent_of_the_noise_stream() {
        // Epoch 0's draws for sample s have counter [draw, 0, s, 0]: the counter of noise element
        // 4·draw at offset s. With one key for both, they were the same numbers.
        for (seed, sample) in [(0u64, 0u64), (7, 1), (123_456_789, 5)] {
            let mut data = CounterRng::new(seed, 0, sample);
            let drawn: Vec<u32> = (0..4).map(|_| data.next_u32()).collect();
            let noise = philox4x32_10([0, 0, sample as u32, (sample >> 32) as u32], [seed as u32, (seed >> 32) as u32]);
            assert_ne!(drawn, noise, "seed {seed}, sample {sample}");
        }
    }

    #[test]
    fn below_covers_the_range_evenly() {
        let mut rng = CounterRng::new(0, 0, 0);
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[rng.below(5)] += 1;
        }
        // Each bucket expects 10,000; 5 standard deviations is about 450.
        assert!(counts.iter().all(|&c| (9_550..=10_450).contains(&c)), "{counts:?}");
    }

    #[test]
    fn normal_has_unit_moments_and_truncation_holds() {
        let mut rng = CounterRng::new(9, 0, 0);
        let z: Vec<f64> = (0..40_000).map(|_| rng.normal() as f64).collect();
        let mean = z.iter().sum::<f64>() / z.len() as f64;
        let var = z.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / z.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.03, "mean {mean} var {var}");
        assert!((0..1000).all(|_| rng.trunc_normal(0.5).abs() <= 1.0));
    }

    #[test]
    fn permutation_is_a_seeded_shuffle() {
        let p = permutation(100, 7, 0);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(p, (0..100).collect::<Vec<_>>());
        assert_eq!(p, permutation(100, 7, 0));
        assert_ne!(p, permutation(100, 7, 1));
    }
}

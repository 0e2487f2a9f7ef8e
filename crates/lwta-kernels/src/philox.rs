//! Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", Random123).
//!
//! # The LWTA noise stream contract
//! The CPU reference and the PTX kernels must draw *the same* noise so that the backward pass can
//! regenerate it instead of storing it, and so GPU results can be checked against the CPU. For a
//! tensor `x` whose elements are numbered by their flat memory index `e` (row-major, as stored):
//!
//! * key     = `[seed as u32, (seed >> 32) as u32]`
//! * counter = `[(e / 4) as u32, ((e / 4) >> 32) as u32, offset as u32, (offset >> 32) as u32]`
//! * the uniform of element `e` is lane `e % 4` of `philox4x32_10(counter, key)`, mapped by
//!   [`uniform_from_bits`]: `(bits >> 8) * 2^-24`, exactly representable in f32, in `[0, 1)`;
//! * its Gumbel noise is [`gumbel_from_uniform`]: `g = -ln(-ln(u + 1e-8) + 1e-8)` in f32.
//!
//! `seed` identifies the run, `offset` one LWTA call (layer × step), so no two calls share noise.

/// Philox multipliers and Weyl key increments (Random123).
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Ten rounds of Philox4x32 on `counter` with `key`.
#[inline(always)]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    philox_rounds(counter.map(|c| [c]), key).map(|[lane]| lane)
}

/// Philox4x32-10 on `N` counters at once, as a structure of arrays (`counters[word][k]` is word
/// `word` of counter `k`), so that the rounds vectorise across counters. The one implementation of
/// the rounds: [`philox4x32_10`] is its `N = 1` case.
#[inline(always)]
fn philox_rounds<const N: usize>(counters: [[u32; N]; 4], key: [u32; 2]) -> [[u32; N]; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = counters;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        for k in 0..N {
            let p0 = (M0 as u64) * (c0[k] as u64);
            let p1 = (M1 as u64) * (c2[k] as u64);
            let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
            let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
            (c0[k], c1[k], c2[k], c3[k]) = (hi1 ^ c1[k] ^ k0, lo1, hi0 ^ c3[k] ^ k1, lo0);
        }
    }
    [c0, c1, c2, c3]
}

/// Random123's `kat_vectors` for Philox4x32-10: `(counter, key, output)`.
pub const KNOWN_ANSWERS: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
    ([0; 4], [0; 2], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
    ([u32::MAX; 4], [u32::MAX; 2], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
    (
        [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
        [0xa4093822, 0x299f31d0],
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    ),
];

/// Maps 32 random bits to a uniform in `[0, 1)` with 24 bits of resolution (exact in f32).
#[inline(always)]
pub fn uniform_from_bits(bits: u32) -> f32 {
    (bits >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Gumbel(0, 1) noise from a uniform, with DISCOVER's guards against `ln(0)`:
/// `g = -ln(-ln(u + 1e-8) + 1e-8)`, both logarithms by [`ln_f32`] so the PTX kernels get the same bits.
#[inline(always)]
pub fn gumbel_from_uniform(u: f32) -> f32 {
    -ln_f32(-ln_f32(u + 1e-8) + 1e-8)
}

/// Natural logarithm of a normal positive `x`: Cephes `logf`, evaluated with *separate* rounded
/// multiplies and adds in exactly this order (never `mul_add`, and Rust does not contract `a * b + c`).
///
/// Why not `f32::ln`: libm's `ln` neither vectorises nor has a PTX twin. This one is branch-free
/// (the mantissa fold is a select), so the CPU loops vectorise, and `kernels/` evaluates the same
/// sequence with `mul.rn.f32` / `add.rn.f32` / `sub.rn.f32` (which ptxas never contracts into FMA):
/// CPU and GPU noise agree bit for bit. Within 1 ulp of the exact logarithm (tested against f64 `ln`).
///
/// Zero, negative, subnormal, infinite and NaN inputs give meaningless results; the noise
/// stream never produces them (`u + 1e-8 ∈ [1e-8, 1]`, `-ln(..) + 1e-8 > 0`).
#[inline(always)]
#[allow(clippy::excessive_precision)] // the literals are the spec's, digit for digit
pub fn ln_f32(x: f32) -> f32 {
    const SQRT_HALF: f32 = 0.70710678;
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 126;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000); // x = m·2^e, m in [0.5, 1)
    // Fold m into [sqrt(1/2), sqrt(2)) - 1 as a select, so the loop stays branch-free.
    let fold = m < SQRT_HALF;
    e -= fold as i32;
    let m = if fold { m + m - 1.0 } else { m - 1.0 };
    let z = m * m;
    let mut y = 7.0376836292e-2_f32;
    y = y * m + -1.1514610310e-1;
    y = y * m + 1.1676998740e-1;
    y = y * m + -1.2420140846e-1;
    y = y * m + 1.4249322787e-1;
    y = y * m + -1.6668057665e-1;
    y = y * m + 2.0000714765e-1;
    y = y * m + -2.4999993993e-1;
    y = y * m + 3.3333331174e-1;
    y = y * m * z;
    let ef = e as f32;
    y = y + -2.12194440e-4 * ef;
    y = y + -0.5 * z;
    let r = m + y;
    r + 0.693_359_375 * ef
}

/// The four uniforms of the counter group holding element `e / 4` (see the stream contract).
#[inline(always)]
pub fn uniforms_of_group(seed: u64, offset: u64, group: u64) -> [f32; 4] {
    let key = [seed as u32, (seed >> 32) as u32];
    let counter = [group as u32, (group >> 32) as u32, offset as u32, (offset >> 32) as u32];
    philox4x32_10(counter, key).map(uniform_from_bits)
}

/// Counter groups per Philox batch in [`gumbel_noise`]: enough to fill AVX2/AVX-512 registers.
const BATCH_GROUPS: usize = 16;

/// Writes the Gumbel noise of elements `start .. start + out.len()` of the stream `(seed, offset)`
/// into `out` — exactly `gumbel_from_uniform(uniform_at(seed, offset, e))` for each element `e`,
/// but with Philox run on [`BATCH_GROUPS`] counters at once so the whole path vectorises.
#[inline(always)]
pub fn gumbel_noise(seed: u64, offset: u64, start: u64, out: &mut [f32]) {
    let key = [seed as u32, (seed >> 32) as u32];
    let mut bits = [0u32; 4 * BATCH_GROUPS];
    let mut element = start;
    let mut done = 0;
    while done < out.len() {
        let first_group = element / 4;
        let mut counters = [[0u32; BATCH_GROUPS]; 4];
        for k in 0..BATCH_GROUPS {
            let group = first_group + k as u64;
            counters[0][k] = group as u32;
            counters[1][k] = (group >> 32) as u32;
            counters[2][k] = offset as u32;
            counters[3][k] = (offset >> 32) as u32;
        }
        let lanes = philox_rounds(counters, key);
        for k in 0..BATCH_GROUPS {
            for lane in 0..4 {
                bits[4 * k + lane] = lanes[lane][k];
            }
        }
        // Only the first batch can start inside a group.
        let skip = (element % 4) as usize;
        let n = (bits.len() - skip).min(out.len() - done);
        for (g, &b) in out[done..done + n].iter_mut().zip(&bits[skip..skip + n]) {
            *g = gumbel_from_uniform(uniform_from_bits(b));
        }
        done += n;
        element += n as u64;
    }
}

/// The uniform of a single element `e` of the stream `(seed, offset)`.
#[inline]
pub fn uniform_at(seed: u64, offset: u64, e: u64) -> f32 {
    uniforms_of_group(seed, offset, e / 4)[(e % 4) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        for (counter, key, expected) in KNOWN_ANSWERS {
            assert_eq!(philox4x32_10(counter, key), expected);
        }
    }

    #[test]
    fn uniforms_are_in_unit_interval_and_distinct_per_offset() {
        let a: Vec<f32> = (0..64).map(|e| uniform_at(7, 0, e)).collect();
        let b: Vec<f32> = (0..64).map(|e| uniform_at(7, 1, e)).collect();
        assert!(a.iter().all(|u| (0.0..1.0).contains(u)));
        assert_ne!(a, b);
        assert_eq!(uniform_from_bits(u32::MAX), 1.0 - 1.0 / 16_777_216.0);
    }

    /// Distance in f32 ulps (of the exact value) between `approx` and the exact `exact`.
    fn ulps(approx: f32, exact: f64) -> f64 {
        let rounded = (exact as f32).abs();
        let ulp = (f32::from_bits(rounded.to_bits() + 1) - rounded) as f64;
        (approx as f64 - exact).abs() / ulp
    }

    /// Every 61st f32 in [1e-8, 1e4] (about 16 million values, all exponents and mantissas).
    #[test]
    fn ln_f32_is_within_one_ulp_of_f64_ln() {
        let (lo, hi) = (1e-8_f32.to_bits(), 1e4_f32.to_bits());
        let mut worst = (0.0, 0.0f32);
        for bits in (lo..=hi).step_by(61).chain([1.0f32.to_bits(), 1.0f32.to_bits() - 1, 1.0f32.to_bits() + 1]) {
            let x = f32::from_bits(bits);
            let err = ulps(ln_f32(x), (x as f64).ln());
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 <= 1.0, "ln_f32 is {} ulps off at x = {:e}", worst.0, worst.1);
        assert_eq!(ln_f32(1.0), 0.0);
    }

    #[test]
    fn gumbel_noise_matches_the_scalar_stream_for_any_start_and_length() {
        for start in [0u64, 1, 3, 4, 5, 63, 64, 65, (1 << 34) - 2] {
            for len in [0usize, 1, 3, 4, 17, 64, 65, 200] {
                let mut fast = vec![f32::NAN; len];
                gumbel_noise(11, 1 << 33, start, &mut fast);
                for (i, g) in fast.iter().enumerate() {
                    let e = start + i as u64;
                    let expected = gumbel_from_uniform(uniform_at(11, 1 << 33, e));
                    assert_eq!(g.to_bits(), expected.to_bits(), "start {start}, element {e}");
                }
            }
        }
    }

    #[test]
    fn gumbel_noise_is_finite_at_the_ends_of_the_uniform_range() {
        for u in [0.0, uniform_from_bits(u32::MAX)] {
            let g = gumbel_from_uniform(u);
            assert!(g.is_finite(), "u = {u} gives {g}");
            // The same f32 steps with libm's logarithm (near u = 1 the f32 rounding of `u + 1e-8`
            // itself moves g by 1%, so f64 is not the right yardstick here).
            let libm = -(-(u + 1e-8).ln() + 1e-8).ln();
            assert!((g - libm).abs() <= 1e-6 * libm.abs(), "u = {u}: {g} vs {libm}");
        }
    }
}

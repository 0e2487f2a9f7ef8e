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
    let [mut c0, mut c1, mut c2, mut c3] = counter;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        let p0 = (M0 as u64) * (c0 as u64);
        let p1 = (M1 as u64) * (c2 as u64);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
    }
    [c0, c1, c2, c3]
}

/// Maps 32 random bits to a uniform in `[0, 1)` with 24 bits of resolution (exact in f32).
#[inline(always)]
pub fn uniform_from_bits(bits: u32) -> f32 {
    (bits >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Gumbel(0, 1) noise from a uniform, with DISCOVER's guards against `ln(0)`.
#[inline(always)]
pub fn gumbel_from_uniform(u: f32) -> f32 {
    -(-(u + 1e-8).ln() + 1e-8).ln()
}

/// The four uniforms of the counter group holding element `e / 4` (see the stream contract).
#[inline(always)]
pub fn uniforms_of_group(seed: u64, offset: u64, group: u64) -> [f32; 4] {
    let key = [seed as u32, (seed >> 32) as u32];
    let counter = [group as u32, (group >> 32) as u32, offset as u32, (offset >> 32) as u32];
    philox4x32_10(counter, key).map(uniform_from_bits)
}

/// The uniform of a single element `e` of the stream `(seed, offset)`.
#[inline]
pub fn uniform_at(seed: u64, offset: u64, e: u64) -> f32 {
    uniforms_of_group(seed, offset, e / 4)[(e % 4) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123 `kat_vectors` for philox4x32_10.
    #[test]
    fn known_answers() {
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniforms_are_in_unit_interval_and_distinct_per_offset() {
        let a: Vec<f32> = (0..64).map(|e| uniform_at(7, 0, e)).collect();
        let b: Vec<f32> = (0..64).map(|e| uniform_at(7, 1, e)).collect();
        assert!(a.iter().all(|u| (0.0..1.0).contains(u)));
        assert_ne!(a, b);
        assert_eq!(uniform_from_bits(u32::MAX), 1.0 - 1.0 / 16_777_216.0);
    }
}

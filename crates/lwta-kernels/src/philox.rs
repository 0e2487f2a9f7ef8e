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
//!   [`uniform_from_bits`]: `(bits & 0x7f_ffff) * 2^-23`, exactly representable in f32, in `[0, 1)`;
//! * its Gumbel noise is [`gumbel_from_uniform`]: `g = -ln(-ln(u + 1e-8) + 1e-8)` in f32, with
//!   both logarithms computed by [`ln_f32`] (specified operation by operation, so the PTX
//!   kernels reproduce every bit).
//!
//! `seed` identifies the run, `offset` one LWTA call (layer × step), so no two calls share noise.
//! Dropout draws from the same stream, at offsets of its own. In data-parallel training, rank `r`
//! adds `r · 2^48` to every offset (`cvn_models::RANK_NOISE_STRIDE`): each rank draws different
//! noise for its shard of the batch, and rank 0 — like a single process — adds nothing.
//!
//! # Key domains
//! Noise (LWTA, dropout) uses the run's seed itself as the key, as above (the reference fixtures
//! and the PTX kernels, which take the key from the host, depend on it). Every other draw of a run
//! — data order, augmentation, weight initialisation, dissection's baselines — uses a key derived
//! with [`host_key`]: Philox of `[HOST_KEY_TAG, domain >> 32, 0, 0]` under the seed. A derived key
//! differs from the seed (and between domains) except with probability 2^-64, so host draws and
//! noise never share a stream even where their counters coincide.
//!
//! Every function here is written once, generic over [`Simd`]; the scalar entry points are its
//! one-lane instances, so the vector paths cannot drift from the contract.

use crate::simd::{self, Scalar, Simd, MAX_LANES};

/// Philox multipliers and Weyl key increments (Random123).
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Ten rounds of Philox4x32 on `counter` with `key`.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    philox_rounds(Scalar, counter, key)
}

/// Philox4x32-10 on `S::LANES` counters at once (`counters[word]` holds that word of every counter).
#[inline(always)]
fn philox_rounds<S: Simd>(s: S, counters: [S::I; 4], key: [u32; 2]) -> [S::I; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = counters;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        let (hi0, lo0) = s.mul_wide(c0, M0);
        let (hi1, lo1) = s.mul_wide(c2, M1);
        (c0, c1, c2, c3) = (s.xor_i(s.xor_i(hi1, c1), s.splat_i(k0)), lo1, s.xor_i(s.xor_i(hi0, c3), s.splat_i(k1)), lo0);
    }
    [c0, c1, c2, c3]
}

/// The tag of host-side keys ("HOST"): see the module docs' key domains.
pub const HOST_KEY_TAG: u32 = 0x484f_5354;

/// The key of run `seed`'s host-side draws whose domain has high word `domain_hi` (see the module
/// docs' key domains); noise uses `[seed as u32, (seed >> 32) as u32]` instead.
pub fn host_key(seed: u64, domain_hi: u32) -> [u32; 2] {
    let [k0, k1, _, _] = philox4x32_10([HOST_KEY_TAG, domain_hi, 0, 0], [seed as u32, (seed >> 32) as u32]);
    [k0, k1]
}

/// Random123's `kat_vectors` for Philox4x32-10: `(counter, key, output)`.
pub const KNOWN_ANSWERS: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
    ([0; 4], [0; 2], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
    ([u32::MAX; 4], [u32::MAX; 2], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
    ([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]),
];

/// Maps 32 random bits to a uniform in `[0, 1)` with 23 bits of resolution (exact in f32).
///
/// Why 23 bits and not 24: `float(0x3f80_0000 | low 23 bits) − 1` needs no int-to-float
/// conversion, which runs at 16 per clock per SM on sm_90 and was a tenth of the GPU kernels'
/// issue slots. The tail this gives up is `u > 1 − 2^-23`, i.e. Gumbel noise above 15.9.
#[inline]
pub fn uniform_from_bits(bits: u32) -> f32 {
    uniform(Scalar, bits)
}

#[inline(always)]
fn uniform<S: Simd>(s: S, bits: S::I) -> S::F {
    let one_plus_u = s.from_bits(s.or_i(s.and_i(bits, s.splat_i(0x007f_ffff)), s.splat_i(0x3f80_0000)));
    s.sub(one_plus_u, s.splat(1.0))
}

/// Gumbel(0, 1) noise from a uniform, with DISCOVER's guards against `ln(0)`:
/// `g = -ln(-ln(u + 1e-8) + 1e-8)`, both logarithms by [`ln_f32`] so the PTX kernels get the same bits.
#[inline]
pub fn gumbel_from_uniform(u: f32) -> f32 {
    gumbel(Scalar, u)
}

/// [`gumbel_from_uniform`] on a vector.
#[inline(always)]
pub fn gumbel<S: Simd>(s: S, u: S::F) -> S::F {
    let inner = ln(s, s.add(u, s.splat(1e-8)));
    negate(s, ln(s, s.add(negate(s, inner), s.splat(1e-8))))
}

/// `-x`, exactly (flips the sign bit).
#[inline(always)]
fn negate<S: Simd>(s: S, x: S::F) -> S::F {
    s.from_bits(s.xor_i(s.to_bits(x), s.splat_i(0x8000_0000)))
}

/// Natural logarithm of a normal positive `x`, as the PTX kernels compute it, bit for bit:
/// `x = (1 + f)·2^e` with `1 + f ∈ [2/3, 4/3)`, `ln x = e·ln 2 + f + f²·q(f)`, `q` a degree-7
/// minimax polynomial evaluated by Horner with fused multiply-adds (`fma.rn.f32` in PTX).
///
/// Why this form: 4 integer and 11 floating-point instructions (Cephes `logf` needs ~30), and two
/// logarithms per element are most of the noise's arithmetic, which is what bounds the GPU kernels
/// (`kernels/NOTES.md`). Every step is an exact bit operation or one IEEE rounding, so the CPU
/// paths (scalar `mul_add`, AVX2/AVX-512 FMA) and the GPU agree exactly. Within ~1 ulp of the
/// exact logarithm (tested against f64 `ln`).
///
/// Zero, negative, subnormal, infinite and NaN inputs give meaningless results; the noise
/// stream never produces them (`u + 1e-8 ∈ [1e-8, 1]`, `-ln(..) + 1e-8 > 0`).
// `always`: callers compiled for AVX2/AVX-512 (soft-WPMI's multiversioned loops) must get the
// `mul_add`s as FMA instructions; a call to this function compiled without FMA runs libm's
// software `fmaf` (11% of a soft-WPMI run in `perf`).
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    ln(Scalar, x)
}

/// [`ln_f32`] on a vector.
#[inline(always)]
pub fn ln<S: Simd>(s: S, x: S::F) -> S::F {
    /// `q(f) ≈ (ln(1 + f) − f) / f²` on `[−1/3, 1/3)`, highest power first (f32 bit patterns).
    const Q: [u32; 8] = [0x3e0f_99c9, 0xbe1d_959e, 0x3e0f_52d6, 0xbe28_1923, 0x3e4c_e9f7, 0xbe80_0a42, 0x3eaa_aa7e, 0xbeff_ffeb];
    /// ln 2 · 2^-23 (the f32 ln 2 with its exponent lowered by 23: exact).
    const LN2_PER_EXPONENT_STEP: u32 = 0x33b1_7218;
    // t = bits − bits(2/3): its top 9 bits are e's (two's complement), so masking them off the
    // bits of x leaves 1 + f = x·2^−e; e·2^23 as an integer converts to f32 exactly.
    let bits = s.to_bits(x);
    let exponent_bits = s.and_i(s.sub_i(bits, s.splat_i(0x3f2a_aaab)), s.splat_i(0xff80_0000));
    let f = s.sub(s.from_bits(s.sub_i(bits, exponent_bits)), s.splat(1.0));
    let mut q = s.splat(f32::from_bits(Q[0]));
    for c in &Q[1..] {
        q = s.fma(q, f, s.splat(f32::from_bits(*c)));
    }
    let ln_mantissa = s.fma(s.mul(f, f), q, f);
    s.fma(s.i32_to_f32(exponent_bits), s.splat(f32::from_bits(LN2_PER_EXPONENT_STEP)), ln_mantissa)
}

/// The four uniforms of the counter group holding element `e / 4` (see the stream contract).
#[inline]
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

/// Writes the Gumbel noise of elements `start .. start + out.len()` of the stream `(seed, offset)`
/// into `out`: exactly `gumbel_from_uniform(uniform_at(seed, offset, e))` for each element `e`,
/// computed with the best vector instructions available.
pub fn gumbel_noise(seed: u64, offset: u64, start: u64, out: &mut [f32]) {
    struct Fill<'a>(u64, u64, u64, &'a mut [f32]);
    impl simd::Kernel for Fill<'_> {
        type Output = ();
        #[inline(always)]
        fn run<S: Simd>(self, s: S) {
            gumbel_noise_with(s, self.0, self.1, self.2, self.3)
        }
    }
    simd::run(Fill(seed, offset, start, out))
}

/// [`gumbel_noise`] inside a kernel already specialised for `S`.
#[inline(always)]
pub fn gumbel_noise_with<S: Simd>(s: S, seed: u64, offset: u64, start: u64, out: &mut [f32]) {
    noise_into(s, seed, offset, start, None, out)
}

/// The logits `x + g` of elements `start .. start + out.len()` into `out` (`x.len() = out.len()`):
/// bit for bit `x[i] + gumbel_noise(..)[i]`, in one pass (the noise never goes through memory).
#[inline(always)]
pub(crate) fn gumbel_logits_with<S: Simd>(s: S, seed: u64, offset: u64, start: u64, x: &[f32], out: &mut [f32]) {
    noise_into(s, seed, offset, start, Some(x), out)
}

/// The noise of elements `start ..` into `out`, plus `addend` where given.
#[inline(always)]
fn noise_into<S: Simd>(s: S, seed: u64, offset: u64, start: u64, addend: Option<&[f32]>, out: &mut [f32]) {
    let key = [seed as u32, (seed >> 32) as u32];
    let batch = 4 * S::LANES;
    let mut partial = [0.0f32; 4 * MAX_LANES];
    let (mut element, mut done) = (start, 0);
    while done < out.len() {
        let skip = (element % 4) as usize;
        let n = (batch - skip).min(out.len() - done);
        if skip == 0 && n == batch {
            noise_batch(s, key, offset, element / 4, addend.map(|x| &x[done..done + batch]), &mut out[done..done + batch]);
        } else {
            noise_batch(s, key, offset, element / 4, None, &mut partial[..batch]);
            let (dst, g) = (&mut out[done..done + n], &partial[skip..skip + n]);
            match addend {
                Some(x) => dst.iter_mut().zip(&x[done..done + n]).zip(g).for_each(|((d, x), g)| *d = g + x),
                None => dst.copy_from_slice(g),
            }
        }
        done += n;
        element += n as u64;
    }
}

/// The noise of the `4·S::LANES` elements of counters `first .. first + S::LANES`, in memory order
/// (plus `addend`, `4·S::LANES` elements, where given).
#[inline(always)]
fn noise_batch<S: Simd>(s: S, key: [u32; 2], offset: u64, first: u64, addend: Option<&[f32]>, out: &mut [f32]) {
    let words = s.interleave4(counter_words(s, key, offset, first));
    for (v, bits) in words.into_iter().enumerate() {
        let g = gumbel(s, uniform(s, bits));
        let value = match addend {
            Some(x) => s.add(g, s.load(&x[v * S::LANES..])),
            None => g,
        };
        s.store(&mut out[v * S::LANES..], value);
    }
}

/// The noise of counters `first .. first + S::LANES` of the stream `(seed, offset)` as four
/// vectors: vector `l` holds element `4k + l` of counter `k`, i.e. for tokens with `U = 4` (one
/// counter per block) competitor `l` of `S::LANES` consecutive blocks.
#[inline(always)]
pub fn gumbel_by_lane<S: Simd>(s: S, seed: u64, offset: u64, first: u64) -> [S::F; 4] {
    let words = counter_words(s, [seed as u32, (seed >> 32) as u32], offset, first);
    // Written out: a closure would be compiled without the kernel's target features.
    [gumbel(s, uniform(s, words[0])), gumbel(s, uniform(s, words[1])), gumbel(s, uniform(s, words[2])), gumbel(s, uniform(s, words[3]))]
}

/// Philox on counters `first .. first + S::LANES` (`words[l]` holds word `l` of each).
#[inline(always)]
fn counter_words<S: Simd>(s: S, key: [u32; 2], offset: u64, first: u64) -> [S::I; 4] {
    let low = first as u32;
    let (c0, c1) = if low.checked_add(S::LANES as u32 - 1).is_some() {
        (s.add_i(s.splat_i(low), s.iota()), s.splat_i((first >> 32) as u32))
    } else {
        // The low word wraps inside this batch (only past 2^34 elements): per-counter high words.
        let (mut lo, mut hi) = ([0u32; MAX_LANES], [0u32; MAX_LANES]);
        for k in 0..S::LANES {
            let counter = first + k as u64;
            (lo[k], hi[k]) = (counter as u32, (counter >> 32) as u32);
        }
        (s.load_i(&lo), s.load_i(&hi))
    };
    let counters = [c0, c1, s.splat_i(offset as u32), s.splat_i((offset >> 32) as u32)];
    philox_rounds(s, counters, key)
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
        assert_eq!(uniform_from_bits(u32::MAX), 1.0 - 1.0 / 8_388_608.0);
        assert_eq!(uniform_from_bits(0xff80_0000), 0.0);
        assert_eq!(uniform_from_bits(1), 1.0 / 8_388_608.0);
    }

    /// Distance in f32 ulps (of the exact value) between `approx` and the exact `exact`.
    fn ulps(approx: f32, exact: f64) -> f64 {
        let rounded = (exact as f32).abs();
        let ulp = (f32::from_bits(rounded.to_bits() + 1) - rounded) as f64;
        (approx as f64 - exact).abs() / ulp
    }

    /// Every 61st f32 in [1e-8, 1e4] (about 16 million values, all exponents and mantissas).
    #[test]
    fn ln_f32_is_within_about_one_ulp_of_f64_ln() {
        let (lo, hi) = (1e-8_f32.to_bits(), 1e4_f32.to_bits());
        let mut worst = (0.0, 0.0f32);
        for bits in (lo..=hi).step_by(61).chain([1.0f32.to_bits(), 1.0f32.to_bits() - 1, 1.0f32.to_bits() + 1]) {
            let x = f32::from_bits(bits);
            let err = ulps(ln_f32(x), (x as f64).ln());
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 <= 1.1, "ln_f32 is {} ulps off at x = {:e}", worst.0, worst.1);
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

    /// The fused logits are `x + g` bit for bit on every instruction set, for starts inside a
    /// counter and partial batches.
    #[test]
    fn fused_logits_are_x_plus_the_noise_on_every_instruction_set() {
        struct Logits<'a>(u64, &'a [f32], &'a mut [f32]);
        impl simd::Kernel for Logits<'_> {
            type Output = ();
            #[inline(always)]
            fn run<S: Simd>(self, s: S) {
                gumbel_logits_with(s, 11, 5, self.0, self.1, self.2)
            }
        }
        for start in [0u64, 1, 3, 4, 5, 63, 64, 65] {
            for len in [0usize, 1, 3, 4, 17, 64, 65, 200] {
                let x: Vec<f32> = (0..len).map(|i| i as f32 * 0.37 - 20.0).collect();
                let mut g = vec![0.0; len];
                gumbel_noise(11, 5, start, &mut g);
                for isa in simd::supported() {
                    let mut z = vec![f32::NAN; len];
                    simd::run_with(isa, Logits(start, &x, &mut z));
                    for i in 0..len {
                        assert_eq!(z[i].to_bits(), (x[i] + g[i]).to_bits(), "{isa:?}, start {start}, element {i}");
                    }
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

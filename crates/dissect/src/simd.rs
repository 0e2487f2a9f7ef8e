//! Vectorisable scalar math and a run-time CPU-feature dispatch for the hot loops.
//!
//! The similarity functions spend their time in `exp` over N×M matrices. libm's `expf` is a call
//! the compiler cannot vectorise, so [`exp_f32`] is the Cephes `expf` polynomial written with plain
//! arithmetic and bit casts only; inside a function compiled for AVX-512 or AVX2 (see
//! [`multiversion!`]) the loops around it become 16- or 8-wide. It keeps Cephes' accuracy (about 1 ulp), which is what the
//! parity with PyTorch's vectorised `exp` needs.

/// `e^x` in f32 for every input: about 1 ulp in the normal range, IEEE-like at the edges (0 below
/// ≈ −104, +∞ above ≈ 88.72, NaN in → NaN out). Branch-free so that loops over it vectorise.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' literals, digit for digit
pub(crate) fn exp_f32(x: f32) -> f32 {
    // Adding 1.5·2^23 rounds to the nearest integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact (Cephes' C1, C2).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const LOWEST: f32 = -103.972_08; // below: the result rounds to 0
    const HIGHEST: f32 = 88.722_83; // above: the result overflows

    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let ni = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let z = r * r;
    let mut y = 1.987_569_2e-4_f32;
    y = y * r + 1.398_199_9e-3;
    y = y * r + 8.333_452e-3;
    y = y * r + 4.166_579_6e-2;
    y = y * r + 1.666_666_5e-1;
    y = y * r + 5.000_000_1e-1;
    y = y * z + r + 1.0;
    // 2^n in two factors so that every n in [-150, 128] keeps both exponents normal.
    let half = ni >> 1;
    let scale_a = f32::from_bits((half.wrapping_add(127) as u32).wrapping_shl(23));
    let scale_b = f32::from_bits((ni.wrapping_sub(half).wrapping_add(127) as u32).wrapping_shl(23));
    let value = y * scale_a * scale_b;
    if x < LOWEST {
        0.0
    } else if x > HIGHEST {
        f32::INFINITY
    } else {
        value
    }
}

/// Defines a function whose body is compiled three times — for the baseline target, with AVX2+FMA
/// and with AVX-512 — and picks the widest the CPU has at run time. Only the instruction selection
/// changes: Rust never contracts `a * b + c` into an FMA on its own, so all versions round exactly
/// alike.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512dq") && std::arch::is_x86_feature_detected!("avx512vl") {
                    // SAFETY: the CPU has the features `avx512` was compiled for (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `avx2` was compiled for (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm_to_two_ulp_over_the_whole_range() {
        let mut worst = 0.0f64;
        let mut x = -103.0f32;
        while x < 88.7 {
            let got = exp_f32(x) as f64;
            let want = (x as f64).exp();
            // Relative error in units of f32 epsilon; subnormal results are compared absolutely.
            let err = (got - want).abs() / want.max(f32::MIN_POSITIVE as f64) / f32::EPSILON as f64;
            worst = worst.max(err);
            x += 0.0137;
        }
        assert!(worst < 2.0, "worst error {worst} ulp");
    }

    #[test]
    fn exp_edges_follow_ieee() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(88.7).is_finite());
    }
}

//! Loops that the compiler vectorises: a branch-free `exp`, and running a kernel compiled for the
//! widest vector instructions the CPU has.
//!
//! The crate builds for the baseline x86-64 (SSE2), so without help the hot loops would use 4-wide
//! SSE. [`run`] detects AVX2 at run time and calls the kernel through a copy compiled with it
//! (8-wide, plus integer vector ops for Philox and the `ln`/`exp` bit tricks). Results do not depend
//! on the path taken: every operation is IEEE-rounded and Rust never contracts `a * b + c` into an
//! FMA, so the AVX2 and SSE2 copies give identical bits. Shared with `cvn-autograd`'s activation
//! kernels, so there is one vectorisable `exp` and one dispatcher in the workspace.

/// Work whose loops should be compiled for the best vector instruction set available.
pub trait Kernel {
    type Output;
    /// The body. Implementations mark it `#[inline(always)]` (and the helpers it calls), so that it
    /// is compiled into [`run`]'s instruction-set-specific copies instead of called from them.
    fn run(self) -> Self::Output;
}

/// Runs `kernel` with the widest vector instructions this CPU supports.
#[inline]
pub fn run<K: Kernel>(kernel: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: `run_avx2` only requires AVX2, which the CPU was just found to support.
        return unsafe { run_avx2(kernel) };
    }
    kernel.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_avx2<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}

/// `e^x` in f32, branch-free (Cephes `expf`: Cody–Waite reduction by ln 2, degree-5 polynomial,
/// exponent assembled from bits), within about 1 ulp. Below −87 it returns 0 (the true value is
/// under 1.7e-38) and above 88 it returns +∞ (true overflow is at 88.72): the callers (softmax with
/// arguments ≤ 0, sigmoid, `exp(-x²)`) never need those ranges. NaN gives an unspecified value.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' literals, digit for digit
pub fn exp_f32(x: f32) -> f32 {
    const LOG2_E: f32 = 1.44269504088896341;
    const LN2_HI: f32 = 0.693359375;
    const LN2_LO: f32 = -2.12194440e-4;
    // Adding 1.5·2^23 rounds to the nearest integer and leaves that integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let (lo, hi) = (-87.0, 88.0);
    let xc = x.max(lo).min(hi);
    let t = xc * LOG2_E + ROUND;
    let n = t - ROUND;
    let n_int = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.9875691500e-4_f32;
    p = p * r + 1.3981999507e-3;
    p = p * r + 8.3334519073e-3;
    p = p * r + 4.1665795894e-2;
    p = p * r + 1.6666665459e-1;
    p = p * r + 5.0000001201e-1;
    let e_r = p * (r * r) + r + 1.0;
    let two_n = f32::from_bits(((n_int + 127) as u32) << 23);
    let v = e_r * two_n;
    let v = if x < lo { 0.0 } else { v };
    if x > hi {
        f32::INFINITY
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_within_two_ulps_of_f64_exp() {
        let mut worst = (0.0, 0.0);
        for i in 0..=2_000_000 {
            let x = -87.0 + 175.0 * i as f32 / 2_000_000.0;
            let exact = (x as f64).exp();
            let got = exp_f32(x) as f64;
            let ulp = {
                let r = exact as f32;
                (f32::from_bits(r.to_bits() + 1) - r) as f64
            };
            let err = (got - exact).abs() / ulp;
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 <= 2.0, "exp_f32 is {} ulps off at {}", worst.0, worst.1);
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert_eq!(exp_f32(1000.0), f32::INFINITY);
    }

    struct SumOfExps<'a>(&'a [f32]);

    impl Kernel for SumOfExps<'_> {
        type Output = f32;
        #[inline(always)]
        fn run(self) -> f32 {
            self.0.iter().map(|&x| exp_f32(x)).sum()
        }
    }

    /// The dispatched copy and the baseline copy must agree bit for bit.
    #[test]
    fn dispatched_kernel_equals_the_baseline_kernel() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.05).collect();
        let via_run = run(SumOfExps(&xs));
        let baseline = SumOfExps(&xs).run();
        assert_eq!(via_run.to_bits(), baseline.to_bits());
    }
}

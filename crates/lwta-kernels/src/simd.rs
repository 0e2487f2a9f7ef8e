//! A small explicit-SIMD layer: one generic kernel, compiled for AVX-512, AVX2 or plain scalar
//! code and picked at run time.
//!
//! Why not auto-vectorisation: the element-wise math here (`ln`, `exp`, `erf`, Philox) is long
//! chains of dependent operations. Auto-vectorised loops run one vector at a time, so they wait on
//! latency, and the compiler would not keep several vectors in registers without spilling
//! (measured: 1.5–2× slower than below). So kernels are written once against the [`Simd`] trait,
//! whose vectors are *four* hardware registers wide: every step issues four independent
//! instructions. [`run`] picks the implementation:
//! * [`Avx512`]: 4 × 16 f32 lanes; [`Avx2`]: 4 × 8 lanes (x86-64, detected at run time);
//! * [`Scalar`]: one lane of plain Rust arithmetic — the portable fallback, and the definition
//!   the tests compare the vector paths against.
//!
//! Results do not depend on the path: every operation is an IEEE-rounded add/sub/mul/div/fma or
//! exact bit manipulation, in the same order (an FMA only where a kernel calls [`Simd::fma`]; Rust
//! never contracts `a * b + c` on its own), so all three paths give identical bits. Set `CVN_SIMD=avx2` or `CVN_SIMD=scalar` to cap the instruction set (e.g. to
//! time the AVX2 path on an AVX-512 machine).
//!
//! Shared with `cvn-autograd`'s activation kernels, so the workspace has one dispatcher and one
//! vector `exp`.

use std::sync::OnceLock;

/// Widest vector this module uses, in f32 lanes (AVX-512, four registers).
pub const MAX_LANES: usize = 64;

/// Operations on vectors of `LANES` f32 (`F`), u32/i32 (`I`) and lane masks (`M`).
///
/// Integer vectors are two's complement, so u32 and i32 share them; `i32_to_f32` reads lanes as
/// i32, shifts are logical. A value of an implementing type proves the CPU can run its code.
#[allow(clippy::wrong_self_convention)] // `from_bits` mirrors `f32::from_bits`, on vectors
pub trait Simd: Copy + Send + Sync {
    const LANES: usize;
    type F: Copy;
    type I: Copy;
    type M: Copy;

    fn splat(self, v: f32) -> Self::F;
    /// The first `LANES` values of `src` (panics if shorter: a caller bug, never data-dependent).
    fn load(self, src: &[f32]) -> Self::F;
    /// Writes `LANES` values at the start of `dst` (panics if shorter).
    fn store(self, dst: &mut [f32], v: Self::F);
    fn add(self, a: Self::F, b: Self::F) -> Self::F;
    fn sub(self, a: Self::F, b: Self::F) -> Self::F;
    fn mul(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a·b + c` with one rounding (IEEE fused multiply-add, as PTX `fma.rn.f32`).
    fn fma(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    fn div(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a < b ? a : b` per lane (so a NaN in `a` gives `b`).
    fn min(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a > b ? a : b` per lane (so a NaN in `a` gives `b`).
    fn max(self, a: Self::F, b: Self::F) -> Self::F;
    fn lt(self, a: Self::F, b: Self::F) -> Self::M;
    fn eq(self, a: Self::F, b: Self::F) -> Self::M;
    /// `m ? a : b` per lane.
    fn select(self, m: Self::M, a: Self::F, b: Self::F) -> Self::F;
    /// Lanes of `a` where `m` is set, +0.0 elsewhere.
    fn keep(self, m: Self::M, a: Self::F) -> Self::F;
    fn to_bits(self, a: Self::F) -> Self::I;
    fn from_bits(self, a: Self::I) -> Self::F;
    fn i32_to_f32(self, a: Self::I) -> Self::F;
    /// −1 (all bits set) where `m` is set, 0 elsewhere.
    fn mask_to_i(self, m: Self::M) -> Self::I;

    fn splat_i(self, v: u32) -> Self::I;
    /// The first `LANES` values of `src` (panics if shorter).
    fn load_i(self, src: &[u32]) -> Self::I;
    fn add_i(self, a: Self::I, b: Self::I) -> Self::I;
    fn sub_i(self, a: Self::I, b: Self::I) -> Self::I;
    fn and_i(self, a: Self::I, b: Self::I) -> Self::I;
    fn or_i(self, a: Self::I, b: Self::I) -> Self::I;
    fn xor_i(self, a: Self::I, b: Self::I) -> Self::I;
    fn shr_i<const N: u32>(self, a: Self::I) -> Self::I;
    fn shl_i<const N: u32>(self, a: Self::I) -> Self::I;
    /// The 64-bit products `a·b` per lane, as `(high 32 bits, low 32 bits)`.
    fn mul_wide(self, a: Self::I, b: u32) -> (Self::I, Self::I);
    /// `0, 1, …, LANES − 1`.
    fn iota(self) -> Self::I;
    /// `base[idx]` per lane, with `idx` clamped to `base.len() − 1` (so it can never read outside
    /// `base`; `base` must not be empty).
    fn gather(self, base: &[f32], idx: Self::I) -> Self::F;
    /// From "lane `l` of counter `k`" (four vectors, `r[l]` holding counters `0..LANES`) to memory
    /// order: element `4k + l` of the result (vector `(4k + l) / LANES`).
    fn interleave4(self, r: [Self::I; 4]) -> [Self::I; 4];
    /// The inverse of [`Simd::interleave4`]: four vectors in memory order to `r[l][k]` = element `4k + l`.
    fn deinterleave4(self, m: [Self::I; 4]) -> [Self::I; 4];
    /// Writes lanes holding small non-negative integers (as f32, e.g. winner indices) as bytes to the
    /// first `LANES` entries of `dst` (panics if shorter).
    fn store_indices(self, dst: &mut [u8], v: Self::F);
}

/// Work to compile once per instruction set.
pub trait Kernel {
    type Output;
    /// The body, generic over the vector implementation. Implementations mark it
    /// `#[inline(always)]` so it is compiled into [`run`]'s instruction-set-specific copies.
    fn run<S: Simd>(self, s: S) -> Self::Output;
}

/// The instruction sets [`run`] chooses from, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

/// The instruction set [`run`] uses: the best this CPU has, capped by `CVN_SIMD` if set.
pub fn isa() -> Isa {
    static CHOSEN: OnceLock<Isa> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let cap = match std::env::var("CVN_SIMD").as_deref() {
            Ok("scalar") => Isa::Scalar,
            Ok("avx2") => Isa::Avx2,
            _ => Isa::Avx512,
        };
        supported().into_iter().filter(|&i| i <= cap).max().unwrap_or(Isa::Scalar)
    })
}

/// The instruction sets this CPU can run.
pub fn supported() -> Vec<Isa> {
    let mut out = vec![Isa::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        if Avx2::detect().is_some() {
            out.push(Isa::Avx2);
        }
        if Avx512::detect().is_some() {
            out.push(Isa::Avx512);
        }
    }
    out
}

/// Runs `kernel` with the instruction set of [`isa`].
#[inline]
pub fn run<K: Kernel>(kernel: K) -> K::Output {
    run_with(isa(), kernel)
}

/// Runs `kernel` with `isa`, or with [`Scalar`] if this CPU lacks it.
#[inline]
pub fn run_with<K: Kernel>(isa: Isa, kernel: K) -> K::Output {
    run_on(isa, kernel).unwrap_or_else(|kernel| kernel.run(Scalar))
}

/// Runs `kernel` with `isa`, or gives it back if this CPU lacks it (tests compare the paths).
#[inline]
pub fn run_on<K: Kernel>(isa: Isa, kernel: K) -> Result<K::Output, K> {
    match isa {
        Isa::Scalar => Ok(kernel.run(Scalar)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => match Avx2::detect() {
            // SAFETY: the token proves the CPU supports AVX2.
            Some(s) => Ok(unsafe { run_avx2(kernel, s) }),
            None => Err(kernel),
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => match Avx512::detect() {
            // SAFETY: the token proves the CPU supports AVX-512F.
            Some(s) => Ok(unsafe { run_avx512(kernel, s) }),
            None => Err(kernel),
        },
        #[cfg(not(target_arch = "x86_64"))]
        _ => Err(kernel),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(kernel: K, s: Avx2) -> K::Output {
    kernel.run(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<K: Kernel>(kernel: K, s: Avx512) -> K::Output {
    kernel.run(s)
}

/// Loads `src` (at most `LANES` values), the missing lanes set to `pad`.
#[inline(always)]
pub fn load_padded<S: Simd>(s: S, src: &[f32], pad: f32) -> S::F {
    if src.len() >= S::LANES {
        return s.load(src);
    }
    let mut tmp = [pad; MAX_LANES];
    tmp[..src.len()].copy_from_slice(src);
    s.load(&tmp)
}

/// Stores the first `dst.len()` (at most `LANES`) lanes of `v`.
#[inline(always)]
pub fn store_partial<S: Simd>(s: S, dst: &mut [f32], v: S::F) {
    if dst.len() >= S::LANES {
        return s.store(dst, v);
    }
    let mut tmp = [0.0; MAX_LANES];
    s.store(&mut tmp, v);
    let n = dst.len();
    dst.copy_from_slice(&tmp[..n]);
}

/// `e^x` of one value (see [`exp`]). Always inlined, so that loops compiled for AVX2/AVX-512
/// (dissect's multiversioned kernels) vectorise through it.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    exp(Scalar, x)
}

/// `e^x` in f32, branch-free (Cephes `expf`: Cody–Waite reduction by ln 2, degree-5 polynomial,
/// exponent assembled from bits), within 2 ulp. Below −87 it returns 0 (the true value is under
/// 1.7e-38) and above 88 it returns +∞ (true overflow is at 88.72): the callers (softmax with
/// arguments ≤ 0, sigmoid, `exp(-x²)`) never need those ranges. NaN gives an unspecified value.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' literals, digit for digit
pub fn exp<S: Simd>(s: S, x: S::F) -> S::F {
    const LN2_HI: f32 = 0.693359375;
    const LN2_LO: f32 = -2.12194440e-4;
    const POLY: [f32; 5] = [1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1];
    // Adding 1.5·2^23 rounds to the nearest integer and leaves that integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LO: f32 = -87.0;
    const HI: f32 = 88.0;
    let xc = s.min(s.max(x, s.splat(LO)), s.splat(HI));
    let t = s.add(s.mul(xc, s.splat(std::f32::consts::LOG2_E)), s.splat(ROUND));
    let n = s.sub(t, s.splat(ROUND));
    // 2^n: the integer sits in the low bits of t; (t_bits − ROUND_bits + 127) << 23.
    let biased = s.add_i(s.to_bits(t), s.splat_i(127u32.wrapping_sub(ROUND.to_bits())));
    let two_n = s.from_bits(s.shl_i::<23>(biased));
    let r = s.sub(s.sub(xc, s.mul(n, s.splat(LN2_HI))), s.mul(n, s.splat(LN2_LO)));
    let mut p = s.splat(1.9875691500e-4);
    for c in POLY {
        p = s.add(s.mul(p, r), s.splat(c));
    }
    let e_r = s.add(s.add(s.mul(p, s.mul(r, r)), r), s.splat(1.0));
    let v = s.mul(e_r, two_n);
    let v = s.select(s.lt(x, s.splat(LO)), s.splat(0.0), v);
    s.select(s.lt(s.splat(HI), x), s.splat(f32::INFINITY), v)
}

/// One lane of plain Rust arithmetic: the portable path and the reference for the others.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scalar;

impl Simd for Scalar {
    const LANES: usize = 1;
    type F = f32;
    type I = u32;
    type M = bool;

    #[inline(always)]
    fn splat(self, v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn load(self, src: &[f32]) -> f32 {
        src[0]
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32], v: f32) {
        dst[0] = v;
    }
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn fma(self, a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn div(self, a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    fn min(self, a: f32, b: f32) -> f32 {
        if a < b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn max(self, a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn lt(self, a: f32, b: f32) -> bool {
        a < b
    }
    #[inline(always)]
    fn eq(self, a: f32, b: f32) -> bool {
        a == b
    }
    #[inline(always)]
    fn select(self, m: bool, a: f32, b: f32) -> f32 {
        if m {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn keep(self, m: bool, a: f32) -> f32 {
        if m {
            a
        } else {
            0.0
        }
    }
    #[inline(always)]
    fn to_bits(self, a: f32) -> u32 {
        a.to_bits()
    }
    #[inline(always)]
    fn from_bits(self, a: u32) -> f32 {
        f32::from_bits(a)
    }
    #[inline(always)]
    fn i32_to_f32(self, a: u32) -> f32 {
        a as i32 as f32
    }
    #[inline(always)]
    fn mask_to_i(self, m: bool) -> u32 {
        if m {
            u32::MAX
        } else {
            0
        }
    }
    #[inline(always)]
    fn splat_i(self, v: u32) -> u32 {
        v
    }
    #[inline(always)]
    fn load_i(self, src: &[u32]) -> u32 {
        src[0]
    }
    #[inline(always)]
    fn add_i(self, a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
    #[inline(always)]
    fn sub_i(self, a: u32, b: u32) -> u32 {
        a.wrapping_sub(b)
    }
    #[inline(always)]
    fn and_i(self, a: u32, b: u32) -> u32 {
        a & b
    }
    #[inline(always)]
    fn or_i(self, a: u32, b: u32) -> u32 {
        a | b
    }
    #[inline(always)]
    fn xor_i(self, a: u32, b: u32) -> u32 {
        a ^ b
    }
    #[inline(always)]
    fn shr_i<const N: u32>(self, a: u32) -> u32 {
        a >> N
    }
    #[inline(always)]
    fn shl_i<const N: u32>(self, a: u32) -> u32 {
        a << N
    }
    #[inline(always)]
    fn mul_wide(self, a: u32, b: u32) -> (u32, u32) {
        let p = a as u64 * b as u64;
        ((p >> 32) as u32, p as u32)
    }
    #[inline(always)]
    fn iota(self) -> u32 {
        0
    }
    #[inline(always)]
    fn gather(self, base: &[f32], idx: u32) -> f32 {
        base[(idx as usize).min(base.len() - 1)]
    }
    #[inline(always)]
    fn interleave4(self, r: [u32; 4]) -> [u32; 4] {
        r
    }
    #[inline(always)]
    fn deinterleave4(self, m: [u32; 4]) -> [u32; 4] {
        m
    }
    #[inline(always)]
    fn store_indices(self, dst: &mut [u8], v: f32) {
        dst[0] = v as u8;
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! SAFETY (for every `unsafe` block in this module): a value of [`Avx2`] / [`Avx512`] is only
    //! made by `detect`, after the CPU was found to support the instruction set, so its
    //! intrinsics can run. Loads and stores go through slices checked to hold `LANES` values, and
    //! gathers clamp their indices to the slice, so no access leaves its slice.

    use std::arch::x86_64::*;

    use super::Simd;

    /// Four registers per vector: the kernels' steps are chains of dependent operations, and four
    /// independent chains per step hide their latency.
    const REGS: usize = 4;

    /// `[e(0), e(1), e(2), e(3)]` with `i` bound to the register index, written out so that the
    /// intrinsics sit directly in the (always inlined) method body: a closure would be compiled
    /// without the target feature and turn every intrinsic into a call.
    macro_rules! regs {
        (|$i:ident| $e:expr) => {
            [
                {
                    let $i = 0;
                    $e
                },
                {
                    let $i = 1;
                    $e
                },
                {
                    let $i = 2;
                    $e
                },
                {
                    let $i = 3;
                    $e
                },
            ]
        };
    }

    /// AVX2: 4 × 8 lanes.
    #[derive(Debug, Clone, Copy)]
    pub struct Avx2(());

    impl Avx2 {
        pub fn detect() -> Option<Self> {
            (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Avx2(()))
        }
    }

    impl Simd for Avx2 {
        const LANES: usize = 8 * REGS;
        type F = [__m256; REGS];
        type I = [__m256i; REGS];
        type M = [__m256; REGS];

        #[inline(always)]
        fn splat(self, v: f32) -> Self::F {
            [unsafe { _mm256_set1_ps(v) }; REGS]
        }
        #[inline(always)]
        fn load(self, src: &[f32]) -> Self::F {
            let src = &src[..Self::LANES];
            unsafe { regs!(|r| _mm256_loadu_ps(src.as_ptr().add(8 * r))) }
        }
        #[inline(always)]
        fn store(self, dst: &mut [f32], v: Self::F) {
            let dst = &mut dst[..Self::LANES];
            for (r, v) in v.into_iter().enumerate() {
                unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(8 * r), v) }
            }
        }
        #[inline(always)]
        fn add(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm256_add_ps(a[i], b[i])) }
        }
        #[inline(always)]
        fn sub(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm256_sub_ps(a[i], b[i])) }
        }
        #[inline(always)]
        fn mul(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm256_mul_ps(a[i], b[i])) }
        }
        #[inline(always)]
        fn fma(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm256_fmadd_ps(a[i], b[i], c[i])) }
        }
        #[inline(always)]
        fn div(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm256_div_ps(a[i], b[i])) }
        }
        #[inline(always)]
        fn min(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm256_min_ps(a[i], b[i])) }
        }
        #[inline(always)]
        fn max(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm256_max_ps(a[i], b[i])) }
        }
        #[inline(always)]
        fn lt(self, a: Self::F, b: Self::F) -> Self::M {
            unsafe { regs!(|i| _mm256_cmp_ps::<_CMP_LT_OQ>(a[i], b[i])) }
        }
        #[inline(always)]
        fn eq(self, a: Self::F, b: Self::F) -> Self::M {
            unsafe { regs!(|i| _mm256_cmp_ps::<_CMP_EQ_OQ>(a[i], b[i])) }
        }
        #[inline(always)]
        fn select(self, m: Self::M, a: Self::F, b: Self::F) -> Self::F {
            unsafe { regs!(|r| _mm256_blendv_ps(b[r], a[r], m[r])) }
        }
        #[inline(always)]
        fn keep(self, m: Self::M, a: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm256_and_ps(m[i], a[i])) }
        }
        #[inline(always)]
        fn to_bits(self, a: Self::F) -> Self::I {
            unsafe { regs!(|i| _mm256_castps_si256(a[i])) }
        }
        #[inline(always)]
        fn from_bits(self, a: Self::I) -> Self::F {
            unsafe { regs!(|i| _mm256_castsi256_ps(a[i])) }
        }
        #[inline(always)]
        fn i32_to_f32(self, a: Self::I) -> Self::F {
            unsafe { regs!(|i| _mm256_cvtepi32_ps(a[i])) }
        }
        #[inline(always)]
        fn mask_to_i(self, m: Self::M) -> Self::I {
            self.to_bits(m)
        }
        #[inline(always)]
        fn splat_i(self, v: u32) -> Self::I {
            [unsafe { _mm256_set1_epi32(v as i32) }; REGS]
        }
        #[inline(always)]
        fn load_i(self, src: &[u32]) -> Self::I {
            let src = &src[..Self::LANES];
            unsafe { regs!(|r| _mm256_loadu_si256(src.as_ptr().add(8 * r).cast())) }
        }
        #[inline(always)]
        fn add_i(self, a: Self::I, b: Self::I) -> Self::I {
            unsafe { regs!(|i| _mm256_add_epi32(a[i], b[i])) }
        }
        #[inline(always)]
        fn sub_i(self, a: Self::I, b: Self::I) -> Self::I {
            unsafe { regs!(|i| _mm256_sub_epi32(a[i], b[i])) }
        }
        #[inline(always)]
        fn and_i(self, a: Self::I, b: Self::I) -> Self::I {
            unsafe { regs!(|i| _mm256_and_si256(a[i], b[i])) }
        }
        #[inline(always)]
        fn or_i(self, a: Self::I, b: Self::I) -> Self::I {
            unsafe { regs!(|i| _mm256_or_si256(a[i], b[i])) }
        }
        #[inline(always)]
        fn xor_i(self, a: Self::I, b: Self::I) -> Self::I {
            unsafe { regs!(|i| _mm256_xor_si256(a[i], b[i])) }
        }
        #[inline(always)]
        fn shr_i<const N: u32>(self, a: Self::I) -> Self::I {
            unsafe { regs!(|i| _mm256_srlv_epi32(a[i], _mm256_set1_epi32(N as i32))) }
        }
        #[inline(always)]
        fn shl_i<const N: u32>(self, a: Self::I) -> Self::I {
            unsafe { regs!(|i| _mm256_sllv_epi32(a[i], _mm256_set1_epi32(N as i32))) }
        }
        #[inline(always)]
        fn mul_wide(self, a: Self::I, b: u32) -> (Self::I, Self::I) {
            // _mm256_mul_epu32 multiplies the even 32-bit lanes into 64-bit products.
            unsafe {
                let b = _mm256_set1_epi32(b as i32);
                let even = regs!(|i| _mm256_mul_epu32(a[i], b));
                let odd = regs!(|i| _mm256_mul_epu32(_mm256_srli_epi64::<32>(a[i]), b));
                let hi = regs!(|i| _mm256_blend_epi32::<0b1010_1010>(_mm256_srli_epi64::<32>(even[i]), odd[i]));
                let lo = regs!(|i| _mm256_blend_epi32::<0b1010_1010>(even[i], _mm256_slli_epi64::<32>(odd[i])));
                (hi, lo)
            }
        }
        #[inline(always)]
        fn iota(self) -> Self::I {
            unsafe {
                let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                regs!(|r| _mm256_add_epi32(lanes, _mm256_set1_epi32(8 * r)))
            }
        }
        #[inline(always)]
        fn gather(self, base: &[f32], idx: Self::I) -> Self::F {
            unsafe {
                let last = _mm256_set1_epi32((base.len() - 1) as i32);
                regs!(|i| _mm256_i32gather_ps::<4>(base.as_ptr(), _mm256_min_epu32(idx[i], last)))
            }
        }
        #[inline(always)]
        fn interleave4(self, r: [Self::I; 4]) -> [Self::I; 4] {
            // Register q of every input holds counters 8q..8q+7, i.e. elements 32q..32q+31: a 4×8
            // transpose of those four registers gives output vector q in memory order.
            unsafe { regs!(|q| transpose_4x8(r[0][q], r[1][q], r[2][q], r[3][q])) }
        }
        #[inline(always)]
        fn deinterleave4(self, m: [Self::I; 4]) -> [Self::I; 4] {
            // Vector q (32 elements = counters 8q..8q+7) transposes into register q of each output.
            let t = unsafe { regs!(|q| untranspose_4x8(m[q][0], m[q][1], m[q][2], m[q][3])) };
            [regs!(|q| t[q][0]), regs!(|q| t[q][1]), regs!(|q| t[q][2]), regs!(|q| t[q][3])]
        }
        #[inline(always)]
        fn store_indices(self, dst: &mut [u8], v: Self::F) {
            let dst = &mut dst[..Self::LANES];
            for (r, v) in v.into_iter().enumerate() {
                unsafe {
                    // 8 i32 → bytes: pack to i16 and u8 within each 128-bit half, then join the halves.
                    let i = _mm256_cvttps_epi32(v);
                    let b = _mm256_packus_epi16(_mm256_packs_epi32(i, i), _mm256_setzero_si256());
                    let joined = _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b));
                    _mm_storel_epi64(dst.as_mut_ptr().add(8 * r).cast(), joined);
                }
            }
        }
    }

    /// The inverse of [`transpose_4x8`]: 32 words in memory order → word `l` of counters 0..8.
    #[inline(always)]
    unsafe fn untranspose_4x8(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> [__m256i; 4] {
        unsafe {
            let t0 = _mm256_permute2x128_si256::<0x20>(a, c); // counters 0 | 4
            let t1 = _mm256_permute2x128_si256::<0x31>(a, c); // counters 1 | 5
            let t2 = _mm256_permute2x128_si256::<0x20>(b, d); // counters 2 | 6
            let t3 = _mm256_permute2x128_si256::<0x31>(b, d); // counters 3 | 7
            let u0 = _mm256_unpacklo_epi32(t0, t1);
            let u1 = _mm256_unpackhi_epi32(t0, t1);
            let u2 = _mm256_unpacklo_epi32(t2, t3);
            let u3 = _mm256_unpackhi_epi32(t2, t3);
            [_mm256_unpacklo_epi64(u0, u2), _mm256_unpackhi_epi64(u0, u2), _mm256_unpacklo_epi64(u1, u3), _mm256_unpackhi_epi64(u1, u3)]
        }
    }

    /// Four registers holding word `l` of counters 0..8 → the 32 words in memory order.
    #[inline(always)]
    unsafe fn transpose_4x8(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> [__m256i; 4] {
        unsafe {
            let t0 = _mm256_unpacklo_epi32(a, b);
            let t1 = _mm256_unpackhi_epi32(a, b);
            let t2 = _mm256_unpacklo_epi32(c, d);
            let t3 = _mm256_unpackhi_epi32(c, d);
            let u0 = _mm256_unpacklo_epi64(t0, t2); // counters 0 | 4
            let u1 = _mm256_unpackhi_epi64(t0, t2); // counters 1 | 5
            let u2 = _mm256_unpacklo_epi64(t1, t3); // counters 2 | 6
            let u3 = _mm256_unpackhi_epi64(t1, t3); // counters 3 | 7
            [
                _mm256_permute2x128_si256::<0x20>(u0, u1),
                _mm256_permute2x128_si256::<0x20>(u2, u3),
                _mm256_permute2x128_si256::<0x31>(u0, u1),
                _mm256_permute2x128_si256::<0x31>(u2, u3),
            ]
        }
    }

    /// AVX-512F: 4 × 16 lanes.
    #[derive(Debug, Clone, Copy)]
    pub struct Avx512(());

    impl Avx512 {
        pub fn detect() -> Option<Self> {
            is_x86_feature_detected!("avx512f").then_some(Avx512(()))
        }
    }

    impl Simd for Avx512 {
        const LANES: usize = 16 * REGS;
        type F = [__m512; REGS];
        type I = [__m512i; REGS];
        type M = [__mmask16; REGS];

        #[inline(always)]
        fn splat(self, v: f32) -> Self::F {
            [unsafe { _mm512_set1_ps(v) }; REGS]
        }
        #[inline(always)]
        fn load(self, src: &[f32]) -> Self::F {
            let src = &src[..Self::LANES];
            unsafe { regs!(|r| _mm512_loadu_ps(src.as_ptr().add(16 * r))) }
        }
        #[inline(always)]
        fn store(self, dst: &mut [f32], v: Self::F) {
            let dst = &mut dst[..Self::LANES];
            for (r, v) in v.into_iter().enumerate() {
                unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(16 * r), v) }
            }
        }
        #[inline(always)]
        fn add(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm512_add_ps(a[i], b[i])) }
        }
        #[inline(always)]
        fn sub(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm512_sub_ps(a[i], b[i])) }
        }
        #[inline(always)]
        fn mul(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm512_mul_ps(a[i], b[i])) }
        }
        #[inline(always)]
        fn fma(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm512_fmadd_ps(a[i], b[i], c[i])) }
        }
        #[inline(always)]
        fn div(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm512_div_ps(a[i], b[i])) }
        }
        #[inline(always)]
        fn min(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm512_min_ps(a[i], b[i])) }
        }
        #[inline(always)]
        fn max(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm512_max_ps(a[i], b[i])) }
        }
        #[inline(always)]
        fn lt(self, a: Self::F, b: Self::F) -> Self::M {
            unsafe { regs!(|i| _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a[i], b[i])) }
        }
        #[inline(always)]
        fn eq(self, a: Self::F, b: Self::F) -> Self::M {
            unsafe { regs!(|i| _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a[i], b[i])) }
        }
        #[inline(always)]
        fn select(self, m: Self::M, a: Self::F, b: Self::F) -> Self::F {
            unsafe { regs!(|r| _mm512_mask_blend_ps(m[r], b[r], a[r])) }
        }
        #[inline(always)]
        fn keep(self, m: Self::M, a: Self::F) -> Self::F {
            unsafe { regs!(|i| _mm512_maskz_mov_ps(m[i], a[i])) }
        }
        #[inline(always)]
        fn to_bits(self, a: Self::F) -> Self::I {
            unsafe { regs!(|i| _mm512_castps_si512(a[i])) }
        }
        #[inline(always)]
        fn from_bits(self, a: Self::I) -> Self::F {
            unsafe { regs!(|i| _mm512_castsi512_ps(a[i])) }
        }
        #[inline(always)]
        fn i32_to_f32(self, a: Self::I) -> Self::F {
            unsafe { regs!(|i| _mm512_cvtepi32_ps(a[i])) }
        }
        #[inline(always)]
        fn mask_to_i(self, m: Self::M) -> Self::I {
            unsafe { regs!(|i| _mm512_maskz_set1_epi32(m[i], -1)) }
        }
        #[inline(always)]
        fn splat_i(self, v: u32) -> Self::I {
            [unsafe { _mm512_set1_epi32(v as i32) }; REGS]
        }
        #[inline(always)]
        fn load_i(self, src: &[u32]) -> Self::I {
            let src = &src[..Self::LANES];
            unsafe { regs!(|r| _mm512_loadu_si512(src.as_ptr().add(16 * r).cast())) }
        }
        #[inline(always)]
        fn add_i(self, a: Self::I, b: Self::I) -> Self::I {
            unsafe { regs!(|i| _mm512_add_epi32(a[i], b[i])) }
        }
        #[inline(always)]
        fn sub_i(self, a: Self::I, b: Self::I) -> Self::I {
            unsafe { regs!(|i| _mm512_sub_epi32(a[i], b[i])) }
        }
        #[inline(always)]
        fn and_i(self, a: Self::I, b: Self::I) -> Self::I {
            unsafe { regs!(|i| _mm512_and_si512(a[i], b[i])) }
        }
        #[inline(always)]
        fn or_i(self, a: Self::I, b: Self::I) -> Self::I {
            unsafe { regs!(|i| _mm512_or_si512(a[i], b[i])) }
        }
        #[inline(always)]
        fn xor_i(self, a: Self::I, b: Self::I) -> Self::I {
            unsafe { regs!(|i| _mm512_xor_si512(a[i], b[i])) }
        }
        #[inline(always)]
        fn shr_i<const N: u32>(self, a: Self::I) -> Self::I {
            unsafe { regs!(|i| _mm512_srli_epi32::<N>(a[i])) }
        }
        #[inline(always)]
        fn shl_i<const N: u32>(self, a: Self::I) -> Self::I {
            unsafe { regs!(|i| _mm512_slli_epi32::<N>(a[i])) }
        }
        #[inline(always)]
        fn mul_wide(self, a: Self::I, b: u32) -> (Self::I, Self::I) {
            // _mm512_mul_epu32 multiplies the even 32-bit lanes into 64-bit products.
            unsafe {
                let b = _mm512_set1_epi32(b as i32);
                let even = regs!(|i| _mm512_mul_epu32(a[i], b));
                let odd = regs!(|i| _mm512_mul_epu32(_mm512_srli_epi64::<32>(a[i]), b));
                let hi = regs!(|i| _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64::<32>(even[i]), odd[i]));
                let lo = regs!(|i| _mm512_mask_blend_epi32(0xAAAA, even[i], _mm512_slli_epi64::<32>(odd[i])));
                (hi, lo)
            }
        }
        #[inline(always)]
        fn iota(self) -> Self::I {
            unsafe {
                let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
                regs!(|r| _mm512_add_epi32(lanes, _mm512_set1_epi32(16 * r)))
            }
        }
        #[inline(always)]
        fn gather(self, base: &[f32], idx: Self::I) -> Self::F {
            unsafe {
                let last = _mm512_set1_epi32((base.len() - 1) as i32);
                regs!(|i| _mm512_i32gather_ps::<4>(_mm512_min_epu32(idx[i], last), base.as_ptr()))
            }
        }
        #[inline(always)]
        fn interleave4(self, r: [Self::I; 4]) -> [Self::I; 4] {
            // Register q of every input holds counters 16q..16q+15, i.e. elements 64q..64q+63: a
            // 4×16 transpose of those four registers gives output vector q in memory order.
            unsafe { regs!(|q| transpose_4x16(r[0][q], r[1][q], r[2][q], r[3][q])) }
        }
        #[inline(always)]
        fn deinterleave4(self, m: [Self::I; 4]) -> [Self::I; 4] {
            // Vector q (64 elements = counters 16q..16q+15) transposes into register q of each output.
            let t = unsafe { regs!(|q| untranspose_4x16(m[q][0], m[q][1], m[q][2], m[q][3])) };
            [regs!(|q| t[q][0]), regs!(|q| t[q][1]), regs!(|q| t[q][2]), regs!(|q| t[q][3])]
        }
        #[inline(always)]
        fn store_indices(self, dst: &mut [u8], v: Self::F) {
            let dst = &mut dst[..Self::LANES];
            for (r, v) in v.into_iter().enumerate() {
                unsafe {
                    let bytes = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v));
                    _mm_storeu_si128(dst.as_mut_ptr().add(16 * r).cast(), bytes);
                }
            }
        }
    }

    /// The inverse of [`transpose_4x16`]: 64 words in memory order → word `l` of counters 0..16.
    #[inline(always)]
    unsafe fn untranspose_4x16(a: __m512i, b: __m512i, c: __m512i, d: __m512i) -> [__m512i; 4] {
        unsafe {
            // Register r holds counters 4r..4r+3, one per 128-bit block; first make block k of u_i
            // hold counter 4k + i, then transpose the 4×4 words inside every block.
            let p = _mm512_shuffle_i32x4::<0b01_00_01_00>(a, b); // counters 0 1 4 5
            let q = _mm512_shuffle_i32x4::<0b01_00_01_00>(c, d); // counters 8 9 12 13
            let r = _mm512_shuffle_i32x4::<0b11_10_11_10>(a, b); // counters 2 3 6 7
            let t = _mm512_shuffle_i32x4::<0b11_10_11_10>(c, d); // counters 10 11 14 15
            let u0 = _mm512_shuffle_i32x4::<0b10_00_10_00>(p, q); // counters 0 4 8 12
            let u1 = _mm512_shuffle_i32x4::<0b11_01_11_01>(p, q); // counters 1 5 9 13
            let u2 = _mm512_shuffle_i32x4::<0b10_00_10_00>(r, t); // counters 2 6 10 14
            let u3 = _mm512_shuffle_i32x4::<0b11_01_11_01>(r, t); // counters 3 7 11 15
            let t0 = _mm512_unpacklo_epi32(u0, u1);
            let t1 = _mm512_unpackhi_epi32(u0, u1);
            let t2 = _mm512_unpacklo_epi32(u2, u3);
            let t3 = _mm512_unpackhi_epi32(u2, u3);
            [_mm512_unpacklo_epi64(t0, t2), _mm512_unpackhi_epi64(t0, t2), _mm512_unpacklo_epi64(t1, t3), _mm512_unpackhi_epi64(t1, t3)]
        }
    }

    /// Four registers holding word `l` of counters 0..16 → the 64 words in memory order.
    #[inline(always)]
    unsafe fn transpose_4x16(a: __m512i, b: __m512i, c: __m512i, d: __m512i) -> [__m512i; 4] {
        unsafe {
            let t0 = _mm512_unpacklo_epi32(a, b);
            let t1 = _mm512_unpackhi_epi32(a, b);
            let t2 = _mm512_unpacklo_epi32(c, d);
            let t3 = _mm512_unpackhi_epi32(c, d);
            // In 128-bit block k, u_i holds counter 4k + i.
            let u0 = _mm512_unpacklo_epi64(t0, t2);
            let u1 = _mm512_unpackhi_epi64(t0, t2);
            let u2 = _mm512_unpacklo_epi64(t1, t3);
            let u3 = _mm512_unpackhi_epi64(t1, t3);
            let a = _mm512_shuffle_i32x4::<0b01_00_01_00>(u0, u1); // counters 0 4 1 5
            let b = _mm512_shuffle_i32x4::<0b01_00_01_00>(u2, u3); // counters 2 6 3 7
            let c = _mm512_shuffle_i32x4::<0b11_10_11_10>(u0, u1); // counters 8 12 9 13
            let d = _mm512_shuffle_i32x4::<0b11_10_11_10>(u2, u3); // counters 10 14 11 15
            [
                _mm512_shuffle_i32x4::<0b10_00_10_00>(a, b), // counters 0 1 2 3
                _mm512_shuffle_i32x4::<0b11_01_11_01>(a, b), // counters 4 5 6 7
                _mm512_shuffle_i32x4::<0b10_00_10_00>(c, d), // counters 8 9 10 11
                _mm512_shuffle_i32x4::<0b11_01_11_01>(c, d), // counters 12 13 14 15
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulps_of_f64_exp() {
        let mut worst = (0.0, 0.0);
        for i in 0..=2_000_000 {
            let x = -87.0 + 175.0 * i as f32 / 2_000_000.0;
            let exact = (x as f64).exp();
            let rounded = exact as f32;
            let ulp = (f32::from_bits(rounded.to_bits() + 1) - rounded) as f64;
            let err = (exp_f32(x) as f64 - exact).abs() / ulp;
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 <= 2.0, "exp is {} ulps off at {}", worst.0, worst.1);
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert_eq!(exp_f32(1000.0), f32::INFINITY);
    }

    /// Exercises every primitive on `values` and returns all results as bits, so the instruction
    /// sets can be compared with the scalar definition.
    struct Primitives<'a>(&'a [f32]);

    impl Kernel for Primitives<'_> {
        type Output = Vec<u32>;
        #[inline(always)]
        fn run<S: Simd>(self, s: S) -> Vec<u32> {
            let mut out = Vec::new();
            let mut push = |v: S::F| {
                let mut tmp = [0.0; MAX_LANES];
                s.store(&mut tmp, v);
                out.extend(tmp[..S::LANES].iter().map(|x| x.to_bits()));
            };
            for chunk in self.0.chunks_exact(4 * S::LANES) {
                let a = s.load(chunk);
                let b = s.load(&chunk[S::LANES..]);
                push(exp(s, a));
                push(s.div(s.min(a, b), s.max(a, b)));
                push(s.select(s.lt(a, b), s.sub(a, b), s.mul(a, b)));
                push(s.keep(s.eq(a, s.splat(1.5)), b));
                push(s.i32_to_f32(s.shr_i::<9>(s.to_bits(a))));
                push(s.from_bits(s.shl_i::<1>(s.or_i(s.and_i(s.to_bits(a), s.mask_to_i(s.lt(a, b))), s.splat_i(3)))));
                let (hi, lo) = s.mul_wide(s.to_bits(a), 0xD251_1F53);
                push(s.from_bits(s.xor_i(hi, s.add_i(lo, s.iota()))));
                let idx = s.and_i(s.to_bits(b), s.splat_i(0x3ff)); // clamped to the chunk
                push(s.gather(chunk, idx));
                let memory = [0, 1, 2, 3].map(|v| s.to_bits(s.load(&chunk[v * S::LANES..])));
                for v in s.interleave4(memory) {
                    push(s.from_bits(v));
                }
                for v in s.deinterleave4(memory) {
                    push(s.from_bits(v));
                }
                let round_trip = s.deinterleave4(s.interleave4(memory));
                for (v, m) in round_trip.into_iter().zip(memory) {
                    push(s.sub(s.from_bits(v), s.from_bits(m)));
                }
                let mut bytes = [0u8; MAX_LANES];
                s.store_indices(&mut bytes, s.min(s.max(a, s.splat(0.0)), s.splat(200.0)));
                push(s.i32_to_f32(s.load_i(&bytes.map(u32::from))));
            }
            out
        }
    }

    #[test]
    fn every_instruction_set_matches_the_scalar_definition() {
        let values: Vec<f32> = (0..4 * MAX_LANES * 3).map(|i| ((i * 7919) % 1000) as f32 * 0.25 - 100.0).collect();
        // The scalar path processes "vectors" of one lane: its interleaves are identities, so the
        // scalar results are rebuilt per instruction set from per-lane definitions below instead.
        for isa in supported() {
            let got = run_on(isa, Primitives(&values)).unwrap_or_else(|_| panic!("{isa:?} is supported"));
            let lanes = match isa {
                Isa::Scalar => 1,
                Isa::Avx2 => 32,
                Isa::Avx512 => 64,
            };
            let expected = expected_primitives(&values, lanes);
            assert_eq!(got.len(), expected.len(), "{isa:?}");
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                assert_eq!(g, e, "{isa:?}: result {i} (vector {} lane {})", i / lanes, i % lanes);
            }
        }
    }

    /// What [`Primitives`] must return with `lanes` lanes, computed lane by lane with [`Scalar`].
    fn expected_primitives(values: &[f32], lanes: usize) -> Vec<u32> {
        let s = Scalar;
        let mut out = Vec::new();
        for chunk in values.chunks_exact(4 * lanes) {
            let (a, b) = (&chunk[..lanes], &chunk[lanes..2 * lanes]);
            let each = |f: &dyn Fn(usize) -> f32| (0..lanes).map(|i| f(i).to_bits()).collect::<Vec<_>>();
            out.extend(each(&|i| exp(s, a[i])));
            out.extend(each(&|i| s.div(s.min(a[i], b[i]), s.max(a[i], b[i]))));
            out.extend(each(&|i| s.select(a[i] < b[i], a[i] - b[i], a[i] * b[i])));
            out.extend(each(&|i| if a[i] == 1.5 { b[i] } else { 0.0 }));
            out.extend(each(&|i| s.i32_to_f32(a[i].to_bits() >> 9)));
            out.extend(each(&|i| f32::from_bits(((a[i].to_bits() & s.mask_to_i(a[i] < b[i])) | 3) << 1)));
            out.extend(each(&|i| {
                let (hi, lo) = s.mul_wide(a[i].to_bits(), 0xD251_1F53);
                f32::from_bits(hi ^ lo.wrapping_add(i as u32))
            }));
            out.extend(each(&|i| chunk[((b[i].to_bits() & 0x3ff) as usize).min(chunk.len() - 1)]));
            // interleave4: output element e = word (e % 4) of counter (e / 4) = chunk[(e % 4)·lanes + e / 4].
            out.extend((0..4 * lanes).map(|e| chunk[(e % 4) * lanes + e / 4].to_bits()));
            // deinterleave4: output r[l][k] = memory element 4k + l.
            out.extend((0..4 * lanes).map(|i| chunk[4 * (i % lanes) + i / lanes].to_bits()));
            out.extend((0..4 * lanes).map(|_| 0.0f32.to_bits()));
            out.extend(each(&|i| (a[i].clamp(0.0, 200.0) as u8) as f32));
        }
        out
    }
}

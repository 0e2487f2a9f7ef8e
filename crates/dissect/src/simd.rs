//! A run-time CPU-feature dispatch for the similarity loops.
//!
//! The similarity functions spend their time in `exp` over N×M matrices. The workspace's one `exp`
//! (`lwta_kernels::simd::exp_f32`, Cephes `expf`, branch-free) is plain arithmetic and bit casts,
//! so inside a function compiled for AVX-512 or AVX2 by [`multiversion!`] the loops around it
//! become 16- or 8-wide without hand-written vector code.

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

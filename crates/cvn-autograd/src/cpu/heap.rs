//! The allocator setting a training or dissection process wants. Every op allocates its output
//! (and backward its gradients) afresh; a training step of a small model frees and re-allocates
//! hundreds of megabytes. glibc serves blocks of 128 KiB and more (a threshold that adapts up to
//! 32 MiB) with `mmap` and returns them with `munmap`, so each step paid for page faults and
//! zeroing of memory it had just given back (a quarter to a third of a `vit-fmnist` step in
//! `perf`). Raising the mmap threshold to 32 MiB and the trim threshold to 1 GiB keeps freed
//! buffers in the heap, where the next step's allocations of the same sizes find them.

/// Largest block glibc keeps in its heap instead of giving it its own mapping.
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of the heap that glibc keeps rather than returning to the system.
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Makes glibc keep freed tensor buffers for reuse (see the module comment). Call it once at the
/// start of a binary, before the work begins; a library does not change the process's allocator
/// behind its caller's back. Returns whether the setting took effect: `false` on other C
/// libraries (nothing is changed there).
pub fn keep_freed_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; both values are within glibc's limits
        // (the mmap threshold's maximum is 32 MiB on 64-bit).
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_setting() {
        assert!(super::keep_freed_buffers());
    }
}

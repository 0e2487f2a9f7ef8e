//! The caching allocator: freed device buffers go to free lists keyed by their rounded size and
//! are handed out again, so a training step in steady state calls no `cuMemAlloc` (PyTorch's
//! caching allocator does the same). All work runs on the device's one stream, so a buffer freed
//! while kernels that use it are still queued can be reused at once: whatever runs next on the
//! stream runs after them.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Sizes up to 1 MiB round up to 512 bytes; larger ones to an eighth of their power of two, so
/// at most 12.5% is wasted while similar sizes share a list.
pub(crate) fn rounded(bytes: usize) -> usize {
    const SMALL: usize = 1 << 20;
    if bytes <= SMALL {
        return bytes.div_ceil(512).max(1) * 512;
    }
    let step = bytes.next_power_of_two() / 8;
    bytes.div_ceil(step) * step
}

/// Where fresh memory comes from (the gpu layer; a counting fake in the tests).
pub(crate) trait RawAlloc {
    fn raw_alloc(&self, bytes: usize) -> Result<u64>;
    /// # Safety
    /// `ptr` came from `raw_alloc` and nothing uses it any more.
    unsafe fn raw_free(&self, ptr: u64) -> Result<()>;
}

/// Counters of the allocator (for tests and `CudaDevice::memory_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Allocations served from a free list.
    pub hits: u64,
    /// Allocations that went to the driver.
    pub misses: u64,
    /// Bytes held by live buffers (rounded sizes).
    pub in_use_bytes: usize,
    /// Bytes held in the free lists.
    pub cached_bytes: usize,
}

#[derive(Default)]
struct Pools {
    free: HashMap<usize, Vec<u64>>,
    stats: MemoryStats,
}

#[derive(Default)]
pub(crate) struct Allocator {
    pools: Mutex<Pools>,
}

impl Allocator {
    fn pools(&self) -> Result<std::sync::MutexGuard<'_, Pools>> {
        self.pools.lock().map_err(|_| Error::Cuda { what: "the caching allocator was poisoned by a panic".into(), source: None })
    }

    /// A buffer of at least `bytes` (`bytes > 0`): a cached one of the same rounded size, else a
    /// fresh one; when the device is out of memory, the cache is returned to the driver and the
    /// allocation tried once more.
    pub(crate) fn alloc(&self, raw: &dyn RawAlloc, bytes: usize) -> Result<u64> {
        let size = rounded(bytes);
        let mut pools = self.pools()?;
        if let Some(ptr) = pools.free.get_mut(&size).and_then(Vec::pop) {
            pools.stats.hits += 1;
            pools.stats.cached_bytes -= size;
            pools.stats.in_use_bytes += size;
            return Ok(ptr);
        }
        let ptr = match raw.raw_alloc(size) {
            Ok(ptr) => ptr,
            Err(_) => {
                Self::release_cached(&mut pools, raw)?;
                raw.raw_alloc(size)?
            }
        };
        pools.stats.misses += 1;
        pools.stats.in_use_bytes += size;
        Ok(ptr)
    }

    /// Takes back a buffer of `bytes` (as asked for) into its free list.
    pub(crate) fn release(&self, ptr: u64, bytes: usize) {
        let size = rounded(bytes);
        // A poisoned lock only loses the buffer to the cache (the driver frees it at exit).
        if let Ok(mut pools) = self.pools.lock() {
            pools.free.entry(size).or_default().push(ptr);
            pools.stats.in_use_bytes -= size;
            pools.stats.cached_bytes += size;
        }
    }

    /// Returns every cached buffer to the driver.
    pub(crate) fn empty_cache(&self, raw: &dyn RawAlloc) -> Result<()> {
        let mut pools = self.pools()?;
        Self::release_cached(&mut pools, raw)
    }

    fn release_cached(pools: &mut Pools, raw: &dyn RawAlloc) -> Result<()> {
        for (size, ptrs) in pools.free.drain() {
            for ptr in ptrs {
                // SAFETY: cached buffers belong to no storage any more.
                unsafe { raw.raw_free(ptr) }?;
                pools.stats.cached_bytes -= size;
            }
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        self.pools.lock().map(|p| p.stats).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;

    /// Hands out increasing addresses, remembers what is live, fails above a byte limit.
    #[derive(Default)]
    struct Fake {
        next: Cell<u64>,
        live: RefCell<HashMap<u64, usize>>,
        limit: Cell<usize>,
        calls: Cell<usize>,
    }

    impl RawAlloc for Fake {
        fn raw_alloc(&self, bytes: usize) -> Result<u64> {
            self.calls.set(self.calls.get() + 1);
            let used: usize = self.live.borrow().values().sum();
            if self.limit.get() != 0 && used + bytes > self.limit.get() {
                return Err(Error::Cuda { what: "out of memory".into(), source: None });
            }
            let ptr = self.next.get() + 0x1000;
            self.next.set(ptr + bytes as u64);
            self.live.borrow_mut().insert(ptr, bytes);
            Ok(ptr)
        }
        unsafe fn raw_free(&self, ptr: u64) -> Result<()> {
            self.live.borrow_mut().remove(&ptr).map(drop).ok_or(Error::Cuda { what: format!("double free of {ptr:#x}"), source: None })
        }
    }

    #[test]
    fn sizes_round_to_shared_classes() {
        assert_eq!(rounded(1), 512);
        assert_eq!(rounded(512), 512);
        assert_eq!(rounded(513), 1024);
        assert_eq!(rounded(1 << 20), 1 << 20);
        // 1 MiB + 1 rounds to the next eighth of 2 MiB
        assert_eq!(rounded((1 << 20) + 1), (1 << 20) + (1 << 18));
        for bytes in [3usize << 20, 5_000_001, 123_456_789] {
            let r = rounded(bytes);
            assert!(r >= bytes && (r - bytes) * 8 <= r, "{bytes} -> {r}");
        }
    }

    #[test]
    fn freed_buffers_are_reused_without_new_allocations() {
        let (fake, pool) = (Fake::default(), Allocator::default());
        // a "training step": the same sizes every time
        let sizes = [4096usize, 100, 700_000, 3 << 20, 100];
        for step in 0..5 {
            let ptrs: Vec<u64> = sizes.iter().map(|&b| pool.alloc(&fake, b).unwrap()).collect();
            let distinct: std::collections::HashSet<_> = ptrs.iter().collect();
            assert_eq!(distinct.len(), ptrs.len(), "a live buffer was handed out twice");
            for (&p, &b) in ptrs.iter().zip(&sizes) {
                pool.release(p, b);
            }
            assert_eq!(fake.calls.get(), sizes.len(), "step {step} went to the driver");
        }
        let stats = pool.stats();
        assert_eq!((stats.misses, stats.hits, stats.in_use_bytes), (5, 20, 0));
        assert_eq!(stats.cached_bytes, fake.live.borrow().values().sum::<usize>());
        pool.empty_cache(&fake).unwrap();
        assert!(fake.live.borrow().is_empty());
        assert_eq!(pool.stats().cached_bytes, 0);
    }

    #[test]
    fn different_size_classes_do_not_share() {
        let (fake, pool) = (Fake::default(), Allocator::default());
        let a = pool.alloc(&fake, 512).unwrap();
        pool.release(a, 512);
        let b = pool.alloc(&fake, 1024).unwrap();
        assert_ne!(a, b);
        assert_eq!(pool.alloc(&fake, 300).unwrap(), a, "300 bytes round to 512: the cached buffer");
        pool.release(b, 1024);
    }

    #[test]
    fn out_of_memory_returns_the_cache_and_retries() {
        let (fake, pool) = (Fake::default(), Allocator::default());
        fake.limit.set(2048);
        let a = pool.alloc(&fake, 1024).unwrap();
        pool.release(a, 1024);
        // 1024 cached + 2048 asked > limit: the cached buffer goes back to the driver first
        let b = pool.alloc(&fake, 2048).unwrap();
        assert!(!fake.live.borrow().contains_key(&a));
        assert_eq!(pool.stats().cached_bytes, 0);
        // still too much: the error reaches the caller
        assert!(pool.alloc(&fake, 512).is_err());
        pool.release(b, 2048);
    }
}

//! Emulated device global memory: allocations at distinct addresses with red zones between them,
//! byte-granular "written" tracking for initcheck, and the generic-address windows of the other
//! state spaces.

use crate::error::Error;

/// Generic-address windows of the per-CTA and per-thread spaces: `cvta.shared` adds
/// [`SHARED_WINDOW`] to a shared-space address, and a generic access inside a window goes to that
/// space. Each window spans [`WINDOW_BYTES`]; global allocations lie above all of them.
pub(crate) const SHARED_WINDOW: u64 = 1 << 40;
pub(crate) const LOCAL_WINDOW: u64 = 2 << 40;
pub(crate) const CONST_WINDOW: u64 = 3 << 40;
pub(crate) const PARAM_WINDOW: u64 = 4 << 40;
pub(crate) const WINDOW_BYTES: u64 = 1 << 32;

/// First address handed out by [`Memory::alloc`].
const USER_BASE: u64 = 1 << 44;
/// Module-scope `.global` variables of module `id` live at `MODULE_BASE + (id << 32)`, so their
/// addresses are known when the module is decoded.
const MODULE_BASE: u64 = 0x7000_0000_0000;
/// cudaMalloc's alignment.
const ALIGN: u64 = 256;
/// Unmapped bytes after every allocation: a kernel that runs past the end of one buffer faults
/// instead of silently reading the next.
const RED_ZONE: u64 = 4096;
/// What fresh allocations hold (all-ones: NaN as f32, -1 as an integer), so a read of memory
/// nobody wrote stands out even with initcheck off.
const POISON: u8 = 0xFF;

pub(crate) fn module_globals_base(module_id: u64) -> u64 {
    MODULE_BASE + (module_id << 32)
}

struct Allocation {
    base: u64,
    data: Vec<u8>,
    /// Per byte: written by the host or a kernel (initcheck).
    written: Vec<bool>,
}

impl Allocation {
    fn end(&self) -> u64 {
        self.base + self.data.len() as u64
    }
}

/// Emulated device global memory (see the crate docs). Addresses are 256-byte aligned, never 0,
/// and never reused after [`Memory::free`]; any address inside an allocation may be used
/// (sub-views), and every access is bounds-checked.
pub struct Memory {
    /// Sorted by base address.
    allocations: Vec<Allocation>,
    /// Freed `(base, bytes)` ranges, to say "freed" when a kernel touches one.
    freed: Vec<(u64, u64)>,
    next: u64,
    initcheck: bool,
}

impl Default for Memory {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").field("allocations", &self.allocations.len()).field("initcheck", &self.initcheck).finish()
    }
}

impl Memory {
    /// Empty memory with initcheck on.
    pub fn new() -> Memory {
        Memory { allocations: Vec::new(), freed: Vec::new(), next: USER_BASE, initcheck: true }
    }

    /// Turns initcheck (a kernel reading global bytes nothing wrote is an error) on or off.
    pub fn set_initcheck(&mut self, on: bool) {
        self.initcheck = on;
    }

    pub fn initcheck(&self) -> bool {
        self.initcheck
    }

    /// Allocates `bytes` (contents uninitialised, like `cudaMalloc`) and returns the address.
    pub fn alloc(&mut self, bytes: usize) -> Result<u64, Error> {
        let base = self.next;
        let span = (bytes as u64).checked_next_multiple_of(ALIGN).and_then(|s| s.checked_add(RED_ZONE));
        match span.and_then(|s| base.checked_add(s)) {
            Some(next) if next <= MODULE_BASE => self.next = next,
            _ => return Err(Error::Memory(format!("cannot allocate {bytes} bytes: the emulated address space is exhausted"))),
        }
        // below any module's globals, which may already be placed
        let index = self.allocations.partition_point(|a| a.base < base);
        let (mut data, mut written) = (Vec::new(), Vec::new());
        let no_room = |_| Error::Memory(format!("cannot allocate {bytes} bytes: the host is out of memory"));
        data.try_reserve_exact(bytes).map_err(no_room)?;
        written.try_reserve_exact(bytes).map_err(no_room)?;
        data.resize(bytes, POISON);
        written.resize(bytes, false);
        self.allocations.insert(index, Allocation { base, data, written });
        Ok(base)
    }

    /// Frees the allocation that starts at `addr`.
    pub fn free(&mut self, addr: u64) -> Result<(), Error> {
        match self.allocations.binary_search_by_key(&addr, |a| a.base) {
            Ok(index) if addr < MODULE_BASE => {
                let allocation = self.allocations.remove(index);
                self.freed.push((allocation.base, allocation.data.len() as u64));
                Ok(())
            }
            _ => Err(Error::Memory(format!("free({addr:#x}): {}", self.describe_miss(addr, 1, "not the start of an allocation")))),
        }
    }

    /// Copies `bytes` to `addr` (host to device) and marks them written.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Error> {
        let (index, offset) = self.host_range(addr, bytes.len(), "write")?;
        let allocation = &mut self.allocations[index];
        allocation.data[offset..offset + bytes.len()].copy_from_slice(bytes);
        allocation.written[offset..offset + bytes.len()].fill(true);
        Ok(())
    }

    /// Reads `len` bytes at `addr` (device to host). Unwritten bytes read as whatever is there.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, Error> {
        let mut out = vec![0; len];
        self.read_into(addr, &mut out)?;
        Ok(out)
    }

    /// Reads `out.len()` bytes at `addr` into `out`.
    pub fn read_into(&self, addr: u64, out: &mut [u8]) -> Result<(), Error> {
        let (index, offset) = self.host_range(addr, out.len(), "read")?;
        out.copy_from_slice(&self.allocations[index].data[offset..offset + out.len()]);
        Ok(())
    }

    /// Sets `len` bytes at `addr` to `byte` (`cudaMemset`) and marks them written.
    pub fn fill(&mut self, addr: u64, byte: u8, len: usize) -> Result<(), Error> {
        let (index, offset) = self.host_range(addr, len, "fill")?;
        let allocation = &mut self.allocations[index];
        allocation.data[offset..offset + len].fill(byte);
        allocation.written[offset..offset + len].fill(true);
        Ok(())
    }

    /// Copies `len` bytes from `src` to `dst` (device to device; the ranges may overlap). The
    /// destination bytes count as written where the source bytes were.
    pub fn copy(&mut self, dst: u64, src: u64, len: usize) -> Result<(), Error> {
        let (si, so) = self.host_range(src, len, "copy from")?;
        let (di, d_off) = self.host_range(dst, len, "copy to")?;
        let data = self.allocations[si].data[so..so + len].to_vec();
        let written = self.allocations[si].written[so..so + len].to_vec();
        let target = &mut self.allocations[di];
        target.data[d_off..d_off + len].copy_from_slice(&data);
        target.written[d_off..d_off + len].copy_from_slice(&written);
        Ok(())
    }

    fn host_range(&self, addr: u64, len: usize, what: &str) -> Result<(usize, usize), Error> {
        self.locate(addr, len).map_err(|detail| Error::Memory(format!("{what} of {len} bytes at {addr:#x}: {detail}")))
    }

    /// The allocation holding all of `[addr, addr + len)` and the offset of `addr` in it; else a
    /// sentence saying what the range missed.
    pub(crate) fn locate(&self, addr: u64, len: usize) -> Result<(usize, usize), String> {
        let index = self.allocations.partition_point(|a| a.base <= addr);
        if index > 0 {
            let allocation = &self.allocations[index - 1];
            if addr.checked_add(len as u64).is_some_and(|end| end <= allocation.end()) {
                return Ok((index - 1, (addr - allocation.base) as usize));
            }
        }
        Err(self.describe_miss(addr, len, "no allocation holds it"))
    }

    fn describe_miss(&self, addr: u64, len: usize, default: &str) -> String {
        if let Some(&(base, bytes)) = self.freed.iter().find(|&&(base, bytes)| addr >= base && addr < base + bytes.max(1)) {
            return format!("inside allocation {base:#x} ({bytes} bytes), which was freed");
        }
        let index = self.allocations.partition_point(|a| a.base <= addr);
        if index > 0 {
            let a = &self.allocations[index - 1];
            if addr.saturating_add(len as u64) <= a.end() {
                return format!("{default} (it lies inside allocation {:#x}, {} bytes)", a.base, a.data.len());
            }
            if addr < a.end() {
                let past = addr + len as u64 - a.end();
                return format!("runs {past} bytes past the end of allocation {:#x} ({} bytes)", a.base, a.data.len());
            }
            if addr - a.end() < RED_ZONE {
                return format!("{} bytes past the end of allocation {:#x} ({} bytes)", addr - a.end(), a.base, a.data.len());
            }
        }
        if let Some(a) = self.allocations.get(index) {
            if a.base - addr <= RED_ZONE {
                return format!("{} bytes before allocation {:#x} ({} bytes)", a.base - addr, a.base, a.data.len());
            }
        }
        default.to_string()
    }

    /// Reads for a kernel: `Err` names the miss, or the first unwritten byte under initcheck.
    pub(crate) fn kernel_read(&self, addr: u64, out: &mut [u8]) -> Result<(), KernelAccess> {
        let (index, offset) = self.locate(addr, out.len()).map_err(KernelAccess::OutOfBounds)?;
        let allocation = &self.allocations[index];
        if self.initcheck {
            if let Some(unwritten) = allocation.written[offset..offset + out.len()].iter().position(|w| !w) {
                return Err(KernelAccess::Uninitialised(format!(
                    "byte {} of allocation {:#x} ({} bytes) was never written",
                    offset + unwritten,
                    allocation.base,
                    allocation.data.len()
                )));
            }
        }
        out.copy_from_slice(&allocation.data[offset..offset + out.len()]);
        Ok(())
    }

    /// Writes for a kernel.
    pub(crate) fn kernel_write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), KernelAccess> {
        let (index, offset) = self.locate(addr, bytes.len()).map_err(KernelAccess::OutOfBounds)?;
        let allocation = &mut self.allocations[index];
        allocation.data[offset..offset + bytes.len()].copy_from_slice(bytes);
        allocation.written[offset..offset + bytes.len()].fill(true);
        Ok(())
    }

    /// Places module `id`'s `.global` variables (their initial bytes, zero where the PTX has no
    /// initialiser) on first use; later launches see what earlier ones left there, as on a GPU.
    pub(crate) fn ensure_module_globals(&mut self, module_id: u64, image: &[u8]) {
        let base = module_globals_base(module_id);
        if image.is_empty() || self.allocations.binary_search_by_key(&base, |a| a.base).is_ok() {
            return;
        }
        let index = self.allocations.partition_point(|a| a.base < base);
        self.allocations.insert(index, Allocation { base, data: image.to_vec(), written: vec![true; image.len()] });
    }
}

/// Why a kernel's global access failed.
pub(crate) enum KernelAccess {
    OutOfBounds(String),
    Uninitialised(String),
}

//! The CUDA backend: device buffers, PTX kernels compiled from CUDA C, cuBLAS GEMMs.
//!
//! ## Layout
//! * `gpu`: the *gpu layer*, the one interface the backend uses (allocate, copy, launch a PTX
//!   entry, strided-batched GEMM), with two implementations: `real` (cudarc: the driver and
//!   cuBLAS, loaded at run time) and `emulated` (`ptx-emu` interprets the same PTX; the GEMM is
//!   cuBLAS's contract computed on the host). [`crate::Device::cuda`] opens the first,
//!   [`crate::Device::cuda_emulated`] the second, so CI runs every kernel of this backend
//!   without a GPU.
//! * `alloc`: the caching allocator (free lists by rounded size; no `cuMemAlloc` per op in steady
//!   state).
//! * this module: [`CudaDevice`] (an `Arc` handle: the gpu layer, its stream, cuBLAS handle and
//!   loaded modules live behind it, plus the allocator) and [`CudaStorage`] (a device buffer, its
//!   dtype and length) with the storage kernels of `kernels.cu` (casts, fills, strided copies,
//!   accumulation).
//! * the op kernels live beside their ops: `ops/<op>/cuda.rs` launches the entries of
//!   `ops/<op>/kernels.cu`. Every `.cu` includes `common.cuh` (bf16 load/store, strided views,
//!   block reductions), is compiled by NVRTC 12.4 to the `kernels.ptx` beside it at development
//!   time (`cargo xtask build-kernels --regenerate`; without the flag the command fails when a
//!   checked-in PTX is stale, and it assembles all PTX with ptxas for sm_80 and sm_90, failing on
//!   spills), and the PTX is embedded with `include_str!`: no compiler at run time. A new kernel
//!   family adds its file to `gpu::Module`.
//! * LWTA runs the fused kernels of `kernels/lwta_*.ptx` through `lwta_kernels::cuda::plan`, the
//!   one home of the LWTA math on GPUs.
//!
//! bf16 is stored as u16 bits; every kernel computes in f32 and rounds to nearest even on store.
//! Everything is queued on one stream per device, so results need no synchronisation except at
//! host copies, which synchronise themselves.
//!
//! **Tested on the PTX emulator only.** No GPU has run this backend yet (the development and CI
//! machines have none): the conformance suite and the model tests pass on the emulated device,
//! which runs the same PTX and the same GEMM calls; the driver and cuBLAS calls of `real.rs` wait
//! for a first run on hardware (`cargo xtask parity --device cuda`).

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use half::bf16;

use crate::cpu::check_view;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{dtype_err, Error, Result};
use crate::shape::{strides, StridedView};
use crate::storage::{BackendDevice, BackendStorage};

mod alloc;
mod emulated;
pub(crate) mod gpu;
mod real;

pub use alloc::MemoryStats;
use alloc::{Allocator, RawAlloc};
use gpu::Gpu;
pub(crate) use gpu::{GemmCall, GemmMat, GemmType, Grid, KArg, Module};

/// Most dimensions a strided view passed to a kernel may have (`MAX_DIMS` in `common.cuh`).
pub(crate) const MAX_DIMS: usize = 8;
/// Threads per CTA of element-wise and row kernels (`THREADS` in `common.cuh`).
pub(crate) const THREADS: u32 = 256;
/// Grid cap of element-wise kernels: they stride over the rest.
const MAX_GRID: u64 = 4096;

struct Inner {
    gpu: Box<dyn Gpu>,
    pool: Allocator,
    label: String,
    /// The GPU's ordinal; `None` for the emulated device.
    ordinal: Option<usize>,
}

impl RawAlloc for Inner {
    fn raw_alloc(&self, bytes: usize) -> Result<u64> {
        self.gpu.alloc(bytes)
    }
    unsafe fn raw_free(&self, ptr: u64) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.gpu.free(ptr) }
    }
}

/// A CUDA device handle: cheap to clone (an `Arc`); every handle of one GPU (or of the emulated
/// device) is the same device.
#[derive(Clone)]
pub struct CudaDevice {
    inner: Arc<Inner>,
}

impl PartialEq for CudaDevice {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for CudaDevice {}

impl fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CudaDevice({})", self.inner.label)
    }
}

impl fmt::Display for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.label)
    }
}

/// Devices opened so far, one per GPU (and one emulated), kept for the process: tensors of two
/// handles of one GPU must meet.
type Opened = Mutex<Vec<(Option<usize>, CudaDevice)>>;

fn opened() -> &'static Opened {
    static OPENED: OnceLock<Opened> = OnceLock::new();
    OPENED.get_or_init(|| Mutex::new(Vec::new()))
}

fn open(ordinal: Option<usize>, make: impl FnOnce() -> Result<(Box<dyn Gpu>, String)>) -> Result<CudaDevice> {
    let mut opened = opened().lock().map_err(|_| Error::Cuda { what: "the device table was poisoned by a panic".into(), source: None })?;
    if let Some((_, d)) = opened.iter().find(|(o, _)| *o == ordinal) {
        return Ok(d.clone());
    }
    let (gpu, label) = make()?;
    let device = CudaDevice { inner: Arc::new(Inner { gpu, pool: Allocator::default(), label, ordinal }) };
    opened.push((ordinal, device.clone()));
    Ok(device)
}

impl CudaDevice {
    pub(crate) fn new(ordinal: usize) -> Result<Self> {
        let label = format!("cuda:{ordinal}");
        real::check_libraries().map_err(|reason| Error::DeviceUnavailable { device: label.clone(), reason })?;
        open(Some(ordinal), || Ok((Box::new(real::RealGpu::new(ordinal)?) as Box<dyn Gpu>, label)))
    }

    pub(crate) fn emulated() -> Result<Self> {
        open(None, || Ok((Box::new(emulated::EmulatedGpu::new()) as Box<dyn Gpu>, "cuda-emulated".to_string())))
    }

    pub(crate) fn synchronize(&self) -> Result<()> {
        self.inner.gpu.synchronize()
    }

    /// The GPU's ordinal (`cuda:N`), or `None` for the emulated device.
    pub fn ordinal(&self) -> Option<usize> {
        self.inner.ordinal
    }

    /// The caching allocator's counters.
    pub fn memory_stats(&self) -> MemoryStats {
        self.inner.pool.stats()
    }

    /// Returns the allocator's cached buffers to the driver.
    pub fn empty_cache(&self) -> Result<()> {
        self.synchronize()?;
        self.inner.pool.empty_cache(&*self.inner)
    }

    /// An uninitialised buffer of `len` elements of `dtype`.
    pub(crate) fn alloc(&self, dtype: DType, len: usize) -> Result<CudaStorage> {
        let bytes = len * dtype.size();
        let ptr = if bytes == 0 { 0 } else { self.inner.pool.alloc(&*self.inner, bytes)? };
        Ok(CudaStorage { buf: Buffer { ptr, bytes, device: self.clone() }, dtype, len })
    }

    pub(crate) fn sm_count(&self) -> u32 {
        self.inner.gpu.sm_count()
    }

    pub(crate) fn blocks_per_sm(&self, module: Module, entry: &str, threads: u32, shared: u32) -> Result<u32> {
        self.inner.gpu.blocks_per_sm(module, entry, threads, shared)
    }

    /// Queues `entry` of `module`.
    ///
    /// # Safety
    /// As [`gpu::Gpu::launch`]: the arguments match the entry's parameters and every pointer
    /// covers what the kernel touches.
    pub(crate) unsafe fn launch(&self, module: Module, entry: &str, grid: Grid, args: &[KArg]) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.inner.gpu.launch(module, entry, grid, args) }
    }

    /// Queues a GEMM.
    ///
    /// # Safety
    /// As [`gpu::Gpu::gemm`].
    pub(crate) unsafe fn gemm_call(&self, call: &GemmCall) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.inner.gpu.gemm(call) }
    }

    /// Row-major `C[bi] = A[bi]·B[bi] (+ beta·C[bi])` for `bi < batch`, as one cuBLAS call (see
    /// [`RowMajor`]); `C` must have unit column stride. cuBLAS is column-major, so this computes
    /// `Cᵀ = Bᵀ·Aᵀ`: the operands swap and each row-major view becomes a (transposed)
    /// column-major one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        &self,
        batch: usize,
        m: usize,
        n: usize,
        k: usize,
        a: RowMajor<'_>,
        b: RowMajor<'_>,
        c: RowMajorMut<'_>,
        beta: f32,
    ) -> Result<()> {
        let too_small = |what: &str, s: &CudaStorage, o: &Operand, rows, cols| {
            let extent = o.extent(batch, rows, cols);
            (extent > s.len)
                .then(|| Error::Shape { op: "gemm", detail: format!("{what} view {o:?} reaches {extent} of {} elements", s.len) })
        };
        if let Some(e) = too_small("A", a.storage, &a.view, m, k)
            .or(too_small("B", b.storage, &b.view, k, n))
            .or(too_small("C", c.storage, &c.view, m, n))
        {
            return Err(e);
        }
        if c.view.col_stride != 1 && n > 1 {
            return Err(Error::Shape { op: "gemm", detail: format!("C must have unit column stride, got {:?}", c.view) });
        }
        if batch == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        let ty = |s: &CudaStorage| match s.dtype {
            DType::F32 => Ok(GemmType::F32),
            DType::BF16 => Ok(GemmType::BF16),
            other => dtype_err("gemm", format!("needs f32 or bf16 operands, got {other}")),
        };
        let mat = |s: &CudaStorage, o: &Operand, rows: usize, cols: usize| -> Result<GemmMat> {
            let (trans, ld) = column_major(rows, cols, o.row_stride, o.col_stride)
                .ok_or_else(|| Error::Shape { op: "gemm", detail: format!("operand {o:?} has no unit stride") })?;
            Ok(GemmMat { ptr: s.ptr() + (o.offset * s.dtype.size()) as u64, ty: ty(s)?, ld, stride: o.batch_stride, trans })
        };
        let (ga, gb) = (mat(a.storage, &a.view, m, k)?, mat(b.storage, &b.view, k, n)?);
        if ga.ty != gb.ty {
            return dtype_err("gemm", "operands of one GEMM must have one dtype");
        }
        let gc = GemmMat {
            ptr: c.storage.ptr() + (c.view.offset * c.storage.dtype.size()) as u64,
            ty: ty(c.storage)?,
            ld: if m <= 1 { c.view.row_stride.max(n).max(1) } else { c.view.row_stride },
            stride: c.view.batch_stride,
            trans: false,
        };
        let call = GemmCall { m: n, n: m, k, batch, alpha: 1.0, beta, a: gb, b: ga, c: gc };
        // SAFETY: every operand's extent lies inside its storage (checked above), and the storages
        // live on this device until the call has run (they outlive this borrow; frees are
        // stream-ordered).
        unsafe { self.gemm_call(&call) }
    }

    /// One thread per element, grid-stride.
    pub(crate) fn elementwise(n: usize) -> Grid {
        let blocks = (n as u64).div_ceil(THREADS as u64).clamp(1, MAX_GRID) as u32;
        Grid { x: blocks, y: 1, threads: THREADS, shared: 0 }
    }

    /// One CTA per row of `n` elements: as many threads as a row has (a power of two, 32 to 256).
    pub(crate) fn rows(rows: usize, n: usize) -> Grid {
        Grid { x: rows as u32, y: 1, threads: (n.next_power_of_two() as u32).clamp(32, THREADS), shared: 0 }
    }
}

/// `(transposed, leading dimension)` of the column-major operand that is the transpose of a
/// row-major `rows × cols` view with these strides, or `None` when neither stride is usable.
/// A stride of a dimension of size 1 is never read, so it may be anything.
pub(crate) fn column_major(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Option<(bool, usize)> {
    if col_stride == 1 || cols <= 1 {
        let ld = if rows <= 1 { row_stride.max(cols).max(1) } else { row_stride };
        if ld >= cols.max(1) {
            return Some((false, ld));
        }
    }
    if row_stride == 1 || rows <= 1 {
        let ld = if cols <= 1 { col_stride.max(rows).max(1) } else { col_stride };
        if ld >= rows.max(1) {
            return Some((true, ld));
        }
    }
    None
}

/// A strided batch of matrices inside a storage (elements): matrix `bi` at `offset +
/// bi·batch_stride`, element `(i, j)` at `+ i·row_stride + j·col_stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Operand {
    pub offset: usize,
    pub row_stride: usize,
    pub col_stride: usize,
    pub batch_stride: usize,
}

impl Operand {
    /// Row-major `[rows, cols]` matrices `batch_stride` apart.
    pub(crate) fn rows(cols: usize, batch_stride: usize) -> Self {
        Self { offset: 0, row_stride: cols, col_stride: 1, batch_stride }
    }

    pub(crate) fn at(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    /// The transposed view of the same matrices.
    pub(crate) fn t(self) -> Self {
        Self { row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    fn extent(&self, batch: usize, rows: usize, cols: usize) -> usize {
        if batch == 0 || rows == 0 || cols == 0 {
            return 0;
        }
        self.offset + (batch - 1) * self.batch_stride + (rows - 1) * self.row_stride + (cols - 1) * self.col_stride + 1
    }
}

/// A GEMM input: a storage and the view of it.
#[derive(Clone, Copy)]
pub(crate) struct RowMajor<'a> {
    pub storage: &'a CudaStorage,
    pub view: Operand,
}

/// A GEMM output.
pub(crate) struct RowMajorMut<'a> {
    pub storage: &'a mut CudaStorage,
    pub view: Operand,
}

/// Device memory of one storage; returned to the device's caching allocator when dropped.
struct Buffer {
    ptr: u64,
    bytes: usize,
    device: CudaDevice,
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.device.inner.pool.release(self.ptr, self.bytes);
        }
    }
}

/// Elements on a CUDA device: `len` elements of `dtype` (bf16 as u16 bits).
pub struct CudaStorage {
    buf: Buffer,
    dtype: DType,
    len: usize,
}

impl fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CudaStorage({} × {} on {})", self.len, self.dtype, self.buf.device)
    }
}

/// Kernel arguments.
pub(crate) mod arg {
    use super::*;

    pub(crate) fn ptr(s: &CudaStorage) -> KArg {
        KArg::U64(s.ptr())
    }

    pub(crate) fn n(v: usize) -> KArg {
        KArg::U64(v as u64)
    }

    /// A [`StridedView`] as the `View` struct of `common.cuh` (rank, shape[8], strides[8], offset).
    pub(crate) fn view(op: &'static str, v: &StridedView) -> Result<KArg> {
        if v.shape.len() > MAX_DIMS {
            return Err(Error::Shape {
                op,
                detail: format!("the CUDA kernels take views of at most {MAX_DIMS} dimensions, got {:?}", v.shape),
            });
        }
        let mut words = [0u64; 2 + 2 * MAX_DIMS];
        words[0] = v.shape.len() as u64;
        for (d, (&size, &stride)) in v.shape.iter().zip(&v.strides).enumerate() {
            words[1 + d] = size as u64;
            words[1 + MAX_DIMS + d] = stride as u64;
        }
        words[1 + 2 * MAX_DIMS] = v.offset as u64;
        Ok(KArg::Bytes(words.iter().flat_map(|w| w.to_le_bytes()).collect()))
    }

    /// A struct of `u64` fields (`Conv`, `Pool` in the `.cu` files).
    pub(crate) fn u64s(fields: &[usize]) -> KArg {
        KArg::Bytes(fields.iter().flat_map(|&w| (w as u64).to_le_bytes()).collect())
    }
}

/// The kernel name for a float dtype: `name_f32` or `name_bf16`.
pub(crate) fn entry(op: &'static str, name: &str, dtype: DType) -> Result<String> {
    match dtype {
        DType::F32 | DType::BF16 => Ok(format!("{name}_{}", dtype.name())),
        other => dtype_err(op, format!("needs a float tensor, got {other}")),
    }
}

impl CudaStorage {
    pub(crate) fn ptr(&self) -> u64 {
        self.buf.ptr
    }

    pub(crate) fn dev(&self) -> &CudaDevice {
        &self.buf.device
    }

    /// A new uninitialised storage on the same device.
    pub(crate) fn alloc_like(&self, dtype: DType, len: usize) -> Result<Self> {
        self.dev().alloc(dtype, len)
    }

    pub(crate) fn check_float(&self, op: &'static str) -> Result<()> {
        if self.dtype.is_float() {
            Ok(())
        } else {
            dtype_err(op, format!("needs a float tensor, got {}", self.dtype))
        }
    }

    /// Queues an element-wise kernel over `n` elements (nothing when `n` is 0).
    ///
    /// # Safety
    /// As [`CudaDevice::launch`].
    pub(crate) unsafe fn launch_elementwise(&self, module: Module, entry: &str, n: usize, args: &[KArg]) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        // SAFETY: forwarded contract.
        unsafe { self.dev().launch(module, entry, CudaDevice::elementwise(n), args) }
    }

    fn bytes(&self) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.len * self.dtype.size()];
        if !out.is_empty() {
            self.dev().inner.gpu.dtoh(self.ptr(), &mut out)?;
        }
        Ok(out)
    }

    fn upload(device: &CudaDevice, dtype: DType, len: usize, bytes: &[u8]) -> Result<Self> {
        let s = device.alloc(dtype, len)?;
        if !bytes.is_empty() {
            device.inner.gpu.htod(s.ptr(), bytes)?;
        }
        Ok(s)
    }

    /// Copies `len` elements from `src` at element `src_offset` into `self` at `dst_offset`.
    pub(crate) fn copy_range_from(&mut self, dst_offset: usize, src: &CudaStorage, src_offset: usize, len: usize) -> Result<()> {
        if self.dtype != src.dtype || dst_offset + len > self.len || src_offset + len > src.len {
            return Err(Error::Shape {
                op: "copy",
                detail: format!("{len} elements from {src:?}@{src_offset} into {self:?}@{dst_offset}"),
            });
        }
        let size = self.dtype.size();
        if len > 0 {
            self.dev().inner.gpu.dtod(self.ptr() + (dst_offset * size) as u64, src.ptr() + (src_offset * size) as u64, len * size)?;
        }
        Ok(())
    }

    /// Writes the elements of `self` seen through `view` contiguously at the start of `dst`.
    pub(crate) fn copy_view_into(&self, view: &StridedView, dst: &mut CudaStorage) -> Result<()> {
        check_view("copy_strided", view, self.len)?;
        if dst.dtype != self.dtype || dst.len < view.len() {
            return dtype_err("copy_strided", format!("{} elements of {self:?} into {dst:?}", view.len()));
        }
        let entry = format!("copy_strided_{}", copy_suffix(self.dtype));
        let args = [arg::ptr(self), arg::ptr(dst), arg::view("copy_strided", view)?, arg::n(0), arg::n(view.len())];
        // SAFETY: the view lies inside `self` (checked) and `dst` holds at least `view.len()` elements.
        unsafe { self.launch_elementwise(Module::Storage, &entry, view.len(), &args) }
    }

    /// Sets every byte to 0.
    pub(crate) fn zero(&mut self) -> Result<()> {
        let bytes = self.len * self.dtype.size();
        if bytes > 0 {
            self.dev().inner.gpu.memset(self.ptr(), 0, bytes)?;
        }
        Ok(())
    }
}

/// The element type of a strided copy by size.
fn copy_suffix(dtype: DType) -> &'static str {
    match dtype.size() {
        1 => "u8",
        2 => "u16",
        4 => "u32",
        _ => "u64",
    }
}

impl BackendStorage for CudaStorage {
    fn dtype(&self) -> DType {
        self.dtype
    }

    fn len(&self) -> usize {
        self.len
    }

    fn device(&self) -> Device {
        Device::Cuda(self.dev().clone())
    }

    fn try_clone(&self) -> Result<Self> {
        let mut out = self.alloc_like(self.dtype, self.len)?;
        out.copy_range_from(0, self, 0, self.len)?;
        Ok(out)
    }

    fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let bytes = self.bytes()?;
        match self.dtype {
            DType::F32 => Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
            DType::BF16 => Ok(bytes.chunks_exact(2).map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()).collect()),
            other => dtype_err("to_vec", format!("needs a float tensor, got {other}")),
        }
    }

    fn to_u8_vec(&self) -> Result<Vec<u8>> {
        match self.dtype {
            DType::U8 => self.bytes(),
            other => dtype_err("to_u8_vec", format!("needs a u8 tensor, got {other}")),
        }
    }

    fn to_u32_vec(&self) -> Result<Vec<u32>> {
        match self.dtype {
            DType::U32 => Ok(self.bytes()?.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
            other => dtype_err("to_u32_vec", format!("needs a u32 tensor, got {other}")),
        }
    }

    fn to_u64_vec(&self) -> Result<Vec<u64>> {
        match self.dtype {
            DType::U64 => Ok(self.bytes()?.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).collect()),
            other => dtype_err("to_u64_vec", format!("needs a u64 tensor, got {other}")),
        }
    }

    fn cast(&self, dtype: DType) -> Result<Self> {
        if !dtype.is_float() {
            return dtype_err("to_dtype", format!("casts go between float types, not to {dtype}"));
        }
        self.check_float("to_dtype")?;
        if dtype == self.dtype {
            return self.try_clone();
        }
        let out = self.alloc_like(dtype, self.len)?;
        let name = if dtype == DType::BF16 { "cast_f32_bf16" } else { "cast_bf16_f32" };
        // SAFETY: both buffers hold `len` elements of the entry's types.
        unsafe { self.launch_elementwise(Module::Storage, name, self.len, &[arg::ptr(self), arg::ptr(&out), arg::n(self.len)]) }?;
        Ok(out)
    }

    fn add_assign(&mut self, rhs: &Self) -> Result<()> {
        let name = match (self.dtype, rhs.dtype) {
            (DType::F32, DType::F32) => "add_assign_f32",
            (DType::BF16, DType::BF16) => "add_assign_bf16",
            (DType::U64, DType::U64) => "add_assign_u64",
            _ => "",
        };
        if name.is_empty() || self.len != rhs.len {
            return dtype_err(
                "add_assign",
                format!("needs equal float or u64 tensors, got {} × {} and {} × {}", self.len, self.dtype, rhs.len, rhs.dtype),
            );
        }
        // SAFETY: both hold `len` elements of the entry's type.
        unsafe { self.launch_elementwise(Module::Storage, name, self.len, &[arg::ptr(self), arg::ptr(rhs), arg::n(self.len)]) }
    }

    fn copy_strided(&self, view: &StridedView) -> Result<Self> {
        check_view("copy_strided", view, self.len)?;
        let mut out = self.alloc_like(self.dtype, view.len())?;
        if view.strides == strides(&view.shape) {
            out.copy_range_from(0, self, view.offset, view.len())?;
        } else {
            self.copy_view_into(view, &mut out)?;
        }
        Ok(out)
    }

    fn copy_into(&mut self, view: &StridedView, src: &Self) -> Result<()> {
        check_view("copy_into", view, self.len)?;
        if src.len != view.len() {
            return dtype_err("copy_into", format!("source has {} elements, the view {}", src.len, view.len()));
        }
        if src.dtype != self.dtype {
            return dtype_err("copy_into", format!("cannot copy {} into {}", src.dtype, self.dtype));
        }
        if view.strides == strides(&view.shape) {
            return self.copy_range_from(view.offset, src, 0, view.len());
        }
        let entry = format!("copy_into_{}", copy_suffix(self.dtype));
        let args = [arg::ptr(src), arg::ptr(self), arg::view("copy_into", view)?, arg::n(view.len())];
        // SAFETY: as in copy_strided, the other way round.
        unsafe { self.launch_elementwise(Module::Storage, &entry, view.len(), &args) }
    }
}

impl BackendDevice for CudaDevice {
    type Storage = CudaStorage;

    fn zeros(&self, dtype: DType, len: usize) -> Result<CudaStorage> {
        let mut s = self.alloc(dtype, len)?;
        s.zero()?;
        Ok(s)
    }

    fn full(&self, dtype: DType, len: usize, value: f32) -> Result<CudaStorage> {
        let s = self.alloc(dtype, len)?;
        let (name, bits) = match dtype {
            DType::F32 => ("fill_u32", KArg::U32(value.to_bits())),
            DType::BF16 => ("fill_u16", KArg::U16(bf16::from_f32(value).to_bits())),
            other => return dtype_err("full", format!("needs a float dtype, got {other}")),
        };
        // SAFETY: `s` holds `len` elements of the entry's type.
        unsafe { s.launch_elementwise(Module::Storage, name, len, &[arg::ptr(&s), bits, arg::n(len)]) }?;
        Ok(s)
    }

    fn from_f32(&self, data: &[f32], dtype: DType) -> Result<CudaStorage> {
        let bytes: Vec<u8> = match dtype {
            DType::F32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::BF16 => data.iter().flat_map(|v| bf16::from_f32(*v).to_bits().to_le_bytes()).collect(),
            other => return dtype_err("from_f32", format!("needs a float dtype, got {other}")),
        };
        CudaStorage::upload(self, dtype, data.len(), &bytes)
    }

    fn from_u8(&self, data: &[u8]) -> Result<CudaStorage> {
        CudaStorage::upload(self, DType::U8, data.len(), data)
    }

    fn from_u32(&self, data: &[u32]) -> Result<CudaStorage> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        CudaStorage::upload(self, DType::U32, data.len(), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    #[test]
    fn without_a_driver_opening_a_gpu_is_one_clear_error() {
        match Device::cuda(0) {
            Ok(d) => assert_eq!(d.to_string(), "cuda:0"),
            Err(Error::DeviceUnavailable { device, reason }) => {
                assert_eq!(device, "cuda:0");
                assert!(!reason.is_empty());
            }
            // a driver without a usable GPU fails later, in the driver calls
            Err(other) => assert!(matches!(other, Error::Cuda { .. }), "{other}"),
        }
    }

    #[test]
    fn the_emulated_device_is_one_device() {
        assert_eq!(CudaDevice::emulated().unwrap(), CudaDevice::emulated().unwrap());
    }

    #[test]
    fn steady_state_steps_allocate_nothing_new() {
        // a private emulated device, so no other test shares its allocator
        let dev = CudaDevice {
            inner: Arc::new(Inner {
                gpu: Box::new(emulated::EmulatedGpu::new()),
                pool: Allocator::default(),
                label: "test".into(),
                ordinal: None,
            }),
        };
        let device = Device::Cuda(dev.clone());
        let x = Tensor::from_slice_on(&[1.0, -2.0, 3.0], &[3], DType::F32, &device).unwrap();
        let step = || x.relu().unwrap().scale(2.0).unwrap().to_vec().unwrap();
        assert_eq!(step(), vec![2.0, 0.0, 6.0]);
        let warm = dev.memory_stats();
        for _ in 0..3 {
            assert_eq!(step(), vec![2.0, 0.0, 6.0]);
        }
        let after = dev.memory_stats();
        assert_eq!(after.misses, warm.misses, "{warm:?} -> {after:?}");
        assert_eq!(after.hits, warm.hits + 6);
        drop(x);
        dev.empty_cache().unwrap();
        assert_eq!(dev.memory_stats().cached_bytes, 0);
    }

    #[test]
    fn row_major_views_map_to_cublas_operands() {
        // row-major 3×4: Cᵀ operand not transposed, ld = row stride
        assert_eq!(column_major(3, 4, 4, 1), Some((false, 4)));
        // its transpose view (4×3, strides 1, 4): transposed, ld 4
        assert_eq!(column_major(4, 3, 1, 4), Some((true, 4)));
        // a head inside wider rows: ld is the full row
        assert_eq!(column_major(5, 8, 24, 1), Some((false, 24)));
        // single rows and columns take any stride
        assert_eq!(column_major(1, 6, 0, 1), Some((false, 6)));
        assert_eq!(column_major(6, 1, 3, 7), Some((false, 3)));
        assert_eq!(column_major(3, 4, 2, 2), None);
    }
}

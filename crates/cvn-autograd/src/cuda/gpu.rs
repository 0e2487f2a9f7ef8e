//! The gpu layer: the few things the CUDA backend asks of a GPU — memory, copies, launching a
//! PTX entry, a strided-batched GEMM — behind one trait with two implementations: [`super::real`]
//! (the driver and cuBLAS through cudarc) and [`super::emulated`] (`ptx-emu` for the PTX, the
//! host for cuBLAS's GEMM contract). Everything above this trait is the same code on both, so the
//! emulated device tests exactly the kernels, launch configurations and GEMM calls a GPU runs.

use crate::error::Result;

/// A kernel module: the PTX of one op family (`ops/<op>/kernels.ptx`, generated from the
/// `kernels.cu` beside it and embedded), or one of the LWTA kernel files of `kernels/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Module {
    Storage,
    Binary,
    Unary,
    Reduce,
    Layout,
    Conv,
    Norm,
    Softmax,
    Pool,
    Loss,
    Metrics,
    Optim,
    LwtaF32,
    LwtaBf16,
}

impl Module {
    /// The embedded PTX and the file it comes from (for errors).
    fn source(self) -> (&'static str, &'static str) {
        match self {
            Module::Storage => (include_str!("kernels.ptx"), "cuda/kernels.ptx"),
            Module::Binary => (include_str!("../ops/binary/kernels.ptx"), "ops/binary/kernels.ptx"),
            Module::Unary => (include_str!("../ops/unary/kernels.ptx"), "ops/unary/kernels.ptx"),
            Module::Reduce => (include_str!("../ops/reduce/kernels.ptx"), "ops/reduce/kernels.ptx"),
            Module::Layout => (include_str!("../ops/layout/kernels.ptx"), "ops/layout/kernels.ptx"),
            Module::Conv => (include_str!("../ops/conv/kernels.ptx"), "ops/conv/kernels.ptx"),
            Module::Norm => (include_str!("../ops/norm/kernels.ptx"), "ops/norm/kernels.ptx"),
            Module::Softmax => (include_str!("../ops/softmax/kernels.ptx"), "ops/softmax/kernels.ptx"),
            Module::Pool => (include_str!("../ops/pool/kernels.ptx"), "ops/pool/kernels.ptx"),
            Module::Loss => (include_str!("../ops/loss/kernels.ptx"), "ops/loss/kernels.ptx"),
            Module::Metrics => (include_str!("../ops/metrics/kernels.ptx"), "ops/metrics/kernels.ptx"),
            Module::Optim => (include_str!("../optim/kernels.ptx"), "optim/kernels.ptx"),
            Module::LwtaF32 => (lwta_kernels::cuda::PTX_F32, "kernels/lwta_f32.ptx"),
            Module::LwtaBf16 => (lwta_kernels::cuda::PTX_BF16, "kernels/lwta_bf16.ptx"),
        }
    }

    pub(crate) fn ptx(self) -> &'static str {
        self.source().0
    }

    pub(crate) fn file(self) -> &'static str {
        self.source().1
    }
}

/// One kernel argument, in the entry's `.param` order and size (`Bytes`: a by-value struct such
/// as `View`, in its C layout).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KArg {
    U16(u16),
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
    F64(f64),
    Bytes(Vec<u8>),
}

/// Grid (x, y), threads per CTA and dynamic shared bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grid {
    pub x: u32,
    pub y: u32,
    pub threads: u32,
    pub shared: u32,
}

/// Element types of a GEMM operand (cuBLAS's `CUDA_R_32F`, `CUDA_R_16BF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GemmType {
    F32,
    BF16,
}

impl GemmType {
    pub(crate) fn bytes(self) -> usize {
        match self {
            GemmType::F32 => 4,
            GemmType::BF16 => 2,
        }
    }
}

/// One column-major operand of `cublasGemmStridedBatchedEx`: matrix `i` at `ptr + i·stride`
/// elements, leading dimension `ld`, transposed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GemmMat {
    pub ptr: u64,
    pub ty: GemmType,
    pub ld: usize,
    pub stride: usize,
    pub trans: bool,
}

/// `cublasGemmStridedBatchedEx` with f32 compute (`CUBLAS_COMPUTE_32F`): for every batch
/// `C = alpha·op(A)·op(B) + beta·C`, column-major, `op(A)` `m × k`, `op(B)` `k × n`, `C` `m × n`.
/// With `beta = 0`, `C` is not read. `C.trans` must be false.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GemmCall {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub alpha: f32,
    pub beta: f32,
    pub a: GemmMat,
    pub b: GemmMat,
    pub c: GemmMat,
}

impl GemmCall {
    /// cuBLAS's argument checks (`CUBLAS_STATUS_INVALID_VALUE`), so the emulated device refuses
    /// what the library would.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        let rows = |mat: &GemmMat, r: usize, c: usize| if mat.trans { c } else { r };
        let need = [
            (rows(&self.a, self.m, self.k), self.a.ld, "lda"),
            (rows(&self.b, self.k, self.n), self.b.ld, "ldb"),
            (self.m, self.c.ld, "ldc"),
        ];
        for (r, ld, name) in need {
            if ld < r.max(1) {
                return Err(format!("{name} = {ld} < {}", r.max(1)));
            }
        }
        if self.c.trans {
            return Err("C cannot be transposed".into());
        }
        let big = [self.m, self.n, self.k, self.batch, self.a.ld, self.b.ld, self.c.ld];
        if big.iter().any(|&v| v > i32::MAX as usize) {
            return Err(format!("a dimension exceeds i32: {big:?}"));
        }
        Ok(())
    }
}

/// What the CUDA backend needs of a GPU. Addresses are device pointers (`CUdeviceptr`).
pub(crate) trait Gpu: Send + Sync {
    /// A fresh device allocation (the caching allocator calls this only on a miss).
    fn alloc(&self, bytes: usize) -> Result<u64>;
    /// Returns an allocation to the driver.
    ///
    /// # Safety
    /// `ptr` came from [`Gpu::alloc`] and nothing uses it any more.
    unsafe fn free(&self, ptr: u64) -> Result<()>;
    fn htod(&self, dst: u64, src: &[u8]) -> Result<()>;
    /// Waits for the queued work, then copies.
    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()>;
    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()>;
    fn memset(&self, dst: u64, byte: u8, bytes: usize) -> Result<()>;
    /// Queues `entry` of `module`.
    ///
    /// # Safety
    /// The arguments match the entry's parameters, and every pointer among them addresses live
    /// device memory covering what the kernel touches for these arguments.
    unsafe fn launch(&self, module: Module, entry: &str, grid: Grid, args: &[KArg]) -> Result<()>;
    /// Queues a GEMM.
    ///
    /// # Safety
    /// The three operands address live device memory covering every element the call touches.
    unsafe fn gemm(&self, call: &GemmCall) -> Result<()>;
    /// Streaming multiprocessors (the LWTA plans size their grids by it).
    fn sm_count(&self) -> u32;
    /// CTAs of `entry` one SM holds at `threads` threads and `shared` dynamic shared bytes.
    fn blocks_per_sm(&self, module: Module, entry: &str, threads: u32, shared: u32) -> Result<u32>;
    fn synchronize(&self) -> Result<()>;
}

//! The gpu layer on a real GPU: cudarc with dynamic loading (the driver and cuBLAS are found at
//! run time, so this builds everywhere), one context and stream per device, the embedded PTX
//! JIT-compiled by the driver once per module, and cuBLAS's `cublasGemmStridedBatchedEx`.
//!
//! Untested on hardware so far: CI and the development machines have no GPU, so only the
//! emulated gpu layer ([`super::emulated`]) runs in the tests; this file is the same contract
//! written against the driver API.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{result as drv, sys, CudaContext, CudaFunction, CudaModule, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use super::gpu::{GemmCall, GemmType, Gpu, Grid, KArg, Module};
use crate::error::{Error, Result};

/// PTX ISA of the embedded kernels' oldest file (kernels/lwta_*.ptx, 7.8) and NVRTC 12.4's
/// output (8.4): a driver for CUDA 12.4 or newer JIT-compiles both.
const MIN_DRIVER_VERSION: i32 = 12_040;

fn cuda_err(what: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Cuda { what: what.into(), source: Some(Box::new(e)) }
}

/// A by-value struct parameter: the driver copies as many bytes as the entry's parameter has.
#[repr(C, align(8))]
struct ParamBlock([u8; 512]);
// SAFETY: plain bytes, aligned like the largest member of any parameter struct (u64).
unsafe impl DeviceRepr for ParamBlock {}

pub(crate) struct RealGpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    functions: Mutex<HashMap<(Module, String), CudaFunction>>,
    modules: Mutex<HashMap<Module, Arc<CudaModule>>>,
    sm_count: u32,
}

/// Why no GPU can be opened, before any call that would panic on a missing library.
pub(crate) fn check_libraries() -> std::result::Result<(), String> {
    // SAFETY: only try to dlopen the libraries by their usual names.
    if !unsafe { sys::is_culib_present() } {
        return Err("no NVIDIA driver library (libcuda.so) found".into());
    }
    // SAFETY: as above.
    if !unsafe { blas_sys::is_culib_present() } {
        return Err("the NVIDIA driver is present but cuBLAS (libcublas.so, e.g. `pip install nvidia-cublas-cu12`) is not".into());
    }
    let mut version = 0i32;
    // SAFETY: the driver library is present; this only writes the int it is given.
    unsafe { sys::cuDriverGetVersion(&mut version) }.result().map_err(|e| format!("asking the driver for its version: {e}"))?;
    if version < MIN_DRIVER_VERSION {
        return Err(format!("the driver supports CUDA {}.{}; the kernels need 12.4 or newer", version / 1000, (version % 1000) / 10));
    }
    Ok(())
}

impl RealGpu {
    pub(crate) fn new(ordinal: usize) -> Result<Self> {
        let ctx = CudaContext::new(ordinal).map_err(|e| cuda_err(format!("opening GPU {ordinal}"), e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| cuda_err("reading the compute capability", e))?;
        if major < 8 {
            return Err(Error::DeviceUnavailable {
                device: format!("cuda:{ordinal}"),
                reason: format!("compute capability {major}.{minor}; the kernels need sm_80 or newer (bf16)"),
            });
        }
        let sm_count = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| cuda_err("reading the multiprocessor count", e))?;
        let stream = ctx.new_stream().map_err(|e| cuda_err("creating a stream", e))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| cuda_err("creating the cuBLAS handle", e))?;
        Ok(Self {
            ctx,
            stream,
            blas,
            functions: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            sm_count: u32::try_from(sm_count).unwrap_or(1).max(1),
        })
    }

    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| cuda_err("binding the context", e))
    }

    fn function(&self, module: Module, entry: &str) -> Result<CudaFunction> {
        let poisoned = || Error::Cuda { what: "the kernel cache was poisoned by a panic".into(), source: None };
        let key = (module, entry.to_string());
        if let Some(f) = self.functions.lock().map_err(|_| poisoned())?.get(&key) {
            return Ok(f.clone());
        }
        let loaded = {
            let mut modules = self.modules.lock().map_err(|_| poisoned())?;
            match modules.get(&module) {
                Some(m) => m.clone(),
                None => {
                    let m = self
                        .ctx
                        .load_module(Ptx::from_src(module.ptx()))
                        .map_err(|e| cuda_err(format!("JIT-compiling {}", module.file()), e))?;
                    modules.insert(module, m.clone());
                    m
                }
            }
        };
        let f = loaded.load_function(entry).map_err(|e| cuda_err(format!("finding {entry} in {}", module.file()), e))?;
        self.functions.lock().map_err(|_| poisoned())?.insert(key, f.clone());
        Ok(f)
    }
}

fn data_type(t: GemmType) -> blas_sys::cudaDataType {
    match t {
        GemmType::F32 => blas_sys::cudaDataType::CUDA_R_32F,
        GemmType::BF16 => blas_sys::cudaDataType::CUDA_R_16BF,
    }
}

fn op(trans: bool) -> blas_sys::cublasOperation_t {
    if trans {
        blas_sys::cublasOperation_t::CUBLAS_OP_T
    } else {
        blas_sys::cublasOperation_t::CUBLAS_OP_N
    }
}

impl Gpu for RealGpu {
    fn alloc(&self, bytes: usize) -> Result<u64> {
        self.bind()?;
        // SAFETY: a plain allocation of `bytes`; the caching allocator owns the pointer.
        unsafe { drv::malloc_sync(bytes) }.map_err(|e| cuda_err(format!("cuMemAlloc of {bytes} bytes"), e))
    }

    unsafe fn free(&self, ptr: u64) -> Result<()> {
        self.synchronize()?;
        // SAFETY: the caller guarantees `ptr` came from `alloc` and is unused; queued work is done.
        unsafe { drv::free_sync(ptr) }.map_err(|e| cuda_err("cuMemFree", e))
    }

    fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.bind()?;
        // SAFETY: `dst` covers `src.len()` bytes (the callers copy into buffers of that size);
        // the stream is synchronised before `src` can go away.
        unsafe { drv::memcpy_htod_async(dst, src, self.stream.cu_stream()) }.map_err(|e| cuda_err("copying to the GPU", e))?;
        self.synchronize()
    }

    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        self.bind()?;
        // SAFETY: `src` covers `dst.len()` bytes; synchronised before `dst` is read.
        unsafe { drv::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }.map_err(|e| cuda_err("copying from the GPU", e))?;
        self.synchronize()
    }

    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: both cover `bytes` (the callers' buffers).
        unsafe { drv::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }.map_err(|e| cuda_err("copying on the GPU", e))
    }

    fn memset(&self, dst: u64, byte: u8, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: `dst` covers `bytes`.
        unsafe { drv::memset_d8_async(dst, byte, bytes, self.stream.cu_stream()) }.map_err(|e| cuda_err("cuMemsetD8", e))
    }

    unsafe fn launch(&self, module: Module, entry: &str, grid: Grid, args: &[KArg]) -> Result<()> {
        self.bind()?;
        let f = self.function(module, entry)?;
        if grid.shared > 48 * 1024 {
            f.set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, grid.shared as i32)
                .map_err(|e| cuda_err(format!("allowing {} shared bytes for {entry}", grid.shared), e))?;
        }
        let blocks: Vec<ParamBlock> = args
            .iter()
            .map(|a| {
                let mut block = ParamBlock([0; 512]);
                let bytes: Vec<u8> = match a {
                    KArg::U16(v) => v.to_le_bytes().to_vec(),
                    KArg::U32(v) => v.to_le_bytes().to_vec(),
                    KArg::I32(v) => v.to_le_bytes().to_vec(),
                    KArg::U64(v) => v.to_le_bytes().to_vec(),
                    KArg::F32(v) => v.to_le_bytes().to_vec(),
                    KArg::F64(v) => v.to_le_bytes().to_vec(),
                    KArg::Bytes(b) => b.clone(),
                };
                let n = bytes.len().min(block.0.len());
                block.0[..n].copy_from_slice(&bytes[..n]);
                block
            })
            .collect();
        let mut builder = self.stream.launch_builder(&f);
        for block in &blocks {
            builder.arg(block);
        }
        let cfg = LaunchConfig { grid_dim: (grid.x, grid.y, 1), block_dim: (grid.threads, 1, 1), shared_mem_bytes: grid.shared };
        // SAFETY: the caller guarantees the arguments match the entry and the pointers are live.
        unsafe { builder.launch(cfg) }.map_err(|e| cuda_err(format!("launching {entry} of {}", module.file()), e))?;
        Ok(())
    }

    unsafe fn gemm(&self, call: &GemmCall) -> Result<()> {
        call.check().map_err(|e| Error::Cuda { what: format!("cuBLAS: invalid GEMM arguments: {e}"), source: None })?;
        self.bind()?;
        let (alpha, beta) = (call.alpha, call.beta);
        // SAFETY: the caller guarantees the operands cover what the call touches; the dimensions
        // fit i32 (checked); alpha and beta are f32 host values, as CUBLAS_COMPUTE_32F reads them.
        unsafe {
            blas::gemm_strided_batched_ex(
                *self.blas.handle(),
                op(call.a.trans),
                op(call.b.trans),
                call.m as i32,
                call.n as i32,
                call.k as i32,
                (&alpha) as *const f32 as *const c_void,
                call.a.ptr as *const c_void,
                data_type(call.a.ty),
                call.a.ld as i32,
                call.a.stride as i64,
                call.b.ptr as *const c_void,
                data_type(call.b.ty),
                call.b.ld as i32,
                call.b.stride as i64,
                (&beta) as *const f32 as *const c_void,
                call.c.ptr as *mut c_void,
                data_type(call.c.ty),
                call.c.ld as i32,
                call.c.stride as i64,
                call.batch as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| cuda_err("cublasGemmStridedBatchedEx", e))
    }

    fn sm_count(&self) -> u32 {
        self.sm_count
    }

    fn blocks_per_sm(&self, module: Module, entry: &str, threads: u32, shared: u32) -> Result<u32> {
        self.function(module, entry)?
            .occupancy_max_active_blocks_per_multiprocessor(threads, shared as usize, None)
            .map_err(|e| cuda_err(format!("occupancy of {entry}"), e))
    }

    fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| cuda_err("synchronising the stream", e))
    }
}

//! The handwritten PTX kernels of `kernels/` (f32 and bf16 storage, f32 arithmetic), loaded
//! through cudarc with dynamic loading: this module builds everywhere, and a machine without an
//! NVIDIA driver gets an `Err` from [`LwtaCuda::new`], never a panic.
//!
//! The kernels compute exactly what [`crate::cpu`] computes: the same Philox stream and the same
//! logarithm (bit-identical noise), the first maximum of `x + g` as winner, and the
//! straight-through backward with the reference's roundings except in `exp` (the hardware `ex2`
//! on an exactly split argument), so `dx` agrees to ~1e-6 relative, not bitwise. Two kernel
//! shapes per direction and dtype (see the header of `kernels/lwta_f32.ptx` and
//! `kernels/NOTES.md`):
//! * *quad*, 16-byte (bf16: 8-byte) accesses: NCHW with `inner % 4 == 0` (4 adjacent pixels per
//!   thread, one Philox call for their 4 noises) and tokens with `U % 4 == 0`;
//! * *scalar*, any geometry (one block at a time per thread, one Philox call per element).
//!
//! Launches size the grid to 8× what is resident on the GPU at once and the threads stride over
//! the rest: persistent threads (1×) pay the parameter prologue only once, but on an H100 the
//! SMs then drift apart and the last ones run half empty (achieved occupancy 50% of 75%); 8
//! waves let the hardware rebalance, −6 to −12% time (`cargo xtask bench --sweep-waves`).
//!
//! The modules are JIT-compiled by the driver once per context and cached for the process;
//! `LWTA_PTX_DIR` swaps in edited PTX files without a rebuild.
//! [`parity`] checks the kernels against the CPU reference on a GPU.

use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{sys, CudaContext, CudaFunction, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use half::bf16;

use crate::{expect_len, BlockGeometry, LwtaError, Noise, Result};

pub mod parity;
pub mod plan;

use plan::{Kernel, KernelArg, Occupancy};

/// The embedded kernels (`kernels/lwta_f32.ptx`, `kernels/lwta_bf16.ptx`).
pub const PTX_F32: &str = include_str!("../../../../kernels/lwta_f32.ptx");
pub const PTX_BF16: &str = include_str!("../../../../kernels/lwta_bf16.ptx");

/// The `.version` the PTX files declare, and the first driver (`cuDriverGetVersion` encoding,
/// 1000·major + 10·minor) that JIT-compiles it: PTX ISA 7.8 shipped with CUDA 11.8.
const PTX_ISA: &str = "7.8";
const MIN_DRIVER_VERSION: i32 = 11_080;
/// The PTX targets sm_80 (bf16 conversions need it).
const MIN_COMPUTE_CAPABILITY: (i32, i32) = (8, 0);
/// Grid size in multiples of the resident CTAs (see [`LwtaCuda::with_waves`]).
const DEFAULT_WAVES: u32 = 8;

/// Most competitors a GPU block may have (the backward's shared-memory stash is sized for it).
pub const MAX_COMPETITORS: usize = 32;

/// A storage type the kernels read and write: `f32` or `half::bf16` (arithmetic is f32).
pub trait Element: DeviceRepr + Copy + Send + Sync + sealed::Sealed {
    /// Bytes per element.
    const BYTES: u64;
    /// Suffix of the PTX entry points (`lwta_fwd_quad_<suffix>`), also the dtype's name.
    const SUFFIX: &'static str;
    /// Rounds to nearest even, as the kernels store.
    fn from_f32(value: f32) -> Self;
    fn to_f32(self) -> f32;
    #[doc(hidden)]
    fn kernels(kernels: &Kernels) -> &DtypeKernels;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
}

impl Element for f32 {
    const BYTES: u64 = 4;
    const SUFFIX: &'static str = "f32";
    fn from_f32(value: f32) -> Self {
        value
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn kernels(kernels: &Kernels) -> &DtypeKernels {
        &kernels.f32
    }
}

impl Element for bf16 {
    const BYTES: u64 = 2;
    const SUFFIX: &'static str = "bf16";
    fn from_f32(value: f32) -> Self {
        bf16::from_f32(value)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn kernels(kernels: &Kernels) -> &DtypeKernels {
        &kernels.bf16
    }
}

/// The loaded entry points of one PTX module.
#[doc(hidden)]
pub struct DtypeKernels {
    fwd_quad: CudaFunction,
    bwd_quad: CudaFunction,
    fwd_scalar: CudaFunction,
    bwd_scalar: CudaFunction,
}

impl DtypeKernels {
    fn function(&self, kernel: Kernel) -> &CudaFunction {
        match kernel {
            Kernel::ForwardQuad => &self.fwd_quad,
            Kernel::BackwardQuad => &self.bwd_quad,
            Kernel::ForwardScalar => &self.fwd_scalar,
            Kernel::BackwardScalar => &self.bwd_scalar,
        }
    }
}

/// Both modules, loaded into one context.
#[doc(hidden)]
pub struct Kernels {
    f32: DtypeKernels,
    bf16: DtypeKernels,
    /// Streaming multiprocessors: the kernels loop over their items (grid stride), so a launch
    /// needs only as many CTAs as fit on the GPU at once.
    sm_count: u32,
}

/// LWTA on one CUDA stream. Cheap to clone; the kernels are shared per context.
#[derive(Clone)]
pub struct LwtaCuda {
    stream: Arc<CudaStream>,
    kernels: Arc<Kernels>,
    waves: u32,
}

impl std::fmt::Debug for LwtaCuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LwtaCuda").field("device", &self.stream.context().ordinal()).finish()
    }
}

impl LwtaCuda {
    /// Opens GPU `ordinal` (its primary context and default stream) and loads the kernels.
    /// Errors, without touching CUDA further, when no driver library is installed or the
    /// driver is too old for the PTX.
    pub fn new(ordinal: usize) -> Result<Self> {
        check_driver()?;
        let ctx = CudaContext::new(ordinal).map_err(|e| cuda_err(&format!("opening GPU {ordinal}"), e))?;
        Self::with_stream(ctx.default_stream())
    }

    /// Runs on `stream` (whose context already exists); loads the kernels on first use in that
    /// context.
    pub fn with_stream(stream: Arc<CudaStream>) -> Result<Self> {
        check_driver()?;
        let kernels = kernels_for(stream.context())?;
        Ok(Self { stream, kernels, waves: DEFAULT_WAVES })
    }

    /// Launches up to `waves` × the CTAs resident at once (at least 1); the threads stride over
    /// whatever is left. 1 = persistent threads (each pays the parameter prologue once); more
    /// waves let the hardware balance CTAs across SMs. For `cargo xtask bench --sweep-waves`.
    pub fn with_waves(mut self, waves: u32) -> Self {
        self.waves = waves.max(1);
        self
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Forward pass (asynchronous on the stream): `y = x·onehot(winner)` and the winner index of
    /// every block, as [`crate::cpu::forward`]. `noise` must be [`Noise::None`] or
    /// [`Noise::Philox`].
    pub fn forward<T: Element>(
        &self,
        x: &impl DevicePtr<T>,
        y: &mut impl DevicePtrMut<T>,
        winners: &mut impl DevicePtrMut<u8>,
        geom: BlockGeometry,
        u: usize,
        noise: Noise,
    ) -> Result<()> {
        check_call(geom, u, "lwta_kernels::cuda::forward")?;
        expect_len("x", x.len(), geom.len())?;
        expect_len("y", y.len(), geom.len())?;
        expect_len("winners", winners.len(), geom.blocks(u))?;
        let blocks_per_sm = self.blocks_per_sm::<T>();
        let occupancy = Occupancy { sm_slots: self.kernels.sm_count.saturating_mul(self.waves), blocks_per_sm: &blocks_per_sm };
        if geom.is_empty() {
            // nothing to launch; the plan still checks the arguments
            return plan::forward::<T>(geom, u, noise, 0, 0, 0, &occupancy).map(drop);
        }
        let stream = &*self.stream;
        let (x_ptr, _x_sync) = x.device_ptr(stream);
        let (y_ptr, _y_sync) = y.device_ptr_mut(stream);
        let (w_ptr, _w_sync) = winners.device_ptr_mut(stream);
        let Some(launch) = plan::forward::<T>(geom, u, noise, x_ptr, y_ptr, w_ptr, &occupancy)? else {
            return Ok(());
        };
        // SAFETY: the argument list matches the entry's .param list (types and order), every
        // pointer covers the `geom.len()` elements / `geom.blocks(u)` bytes the plan addresses
        // (lengths checked above), and the pointers stay alive until the guards drop after launch.
        unsafe { self.launch::<T>(&launch) }
    }

    /// Backward pass (asynchronous on the stream) at temperature `tau`, regenerating the
    /// forward's noise, as [`crate::cpu::backward`].
    #[allow(clippy::too_many_arguments)]
    pub fn backward<T: Element>(
        &self,
        x: &impl DevicePtr<T>,
        dy: &impl DevicePtr<T>,
        dx: &mut impl DevicePtrMut<T>,
        geom: BlockGeometry,
        u: usize,
        tau: f32,
        noise: Noise,
    ) -> Result<()> {
        check_call(geom, u, "lwta_kernels::cuda::backward")?;
        if !(tau.is_finite() && tau > 0.0) {
            return Err(LwtaError::Tau(tau));
        }
        expect_len("x", x.len(), geom.len())?;
        expect_len("dy", dy.len(), geom.len())?;
        expect_len("dx", dx.len(), geom.len())?;
        let blocks_per_sm = self.blocks_per_sm::<T>();
        let occupancy = Occupancy { sm_slots: self.kernels.sm_count.saturating_mul(self.waves), blocks_per_sm: &blocks_per_sm };
        if geom.is_empty() {
            // nothing to launch; the plan still checks the arguments
            return plan::backward::<T>(geom, u, tau, noise, 0, 0, 0, &occupancy).map(drop);
        }
        let stream = &*self.stream;
        let (x_ptr, _x_sync) = x.device_ptr(stream);
        let (dy_ptr, _dy_sync) = dy.device_ptr(stream);
        let (dx_ptr, _dx_sync) = dx.device_ptr_mut(stream);
        let Some(launch) = plan::backward::<T>(geom, u, tau, noise, x_ptr, dy_ptr, dx_ptr, &occupancy)? else {
            return Ok(());
        };
        // SAFETY: as in `forward`; the dynamic shared memory is the stash the entry addresses
        // (2 · slots · ntid · slot bytes).
        unsafe { self.launch::<T>(&launch) }
    }

    /// How many CTAs of a kernel one SM holds at `(threads, dynamic shared bytes)`.
    fn blocks_per_sm<T: Element>(&self) -> impl Fn(Kernel, u32, u32) -> Result<u32> + '_ {
        let functions = T::kernels(&self.kernels);
        move |kernel, threads, shared| {
            functions
                .function(kernel)
                .occupancy_max_active_blocks_per_multiprocessor(threads, shared as usize, None)
                .map_err(|e| cuda_err("querying the kernels' occupancy", e))
        }
    }

    /// Launches a plan on the stream.
    ///
    /// # Safety
    /// The plan's pointers must address live device memory covering what its kernel touches.
    unsafe fn launch<T: Element>(&self, launch: &plan::Launch) -> Result<()> {
        let function = T::kernels(&self.kernels).function(launch.kernel);
        let mut builder = self.stream.launch_builder(function);
        for arg in &launch.args {
            match arg {
                KernelArg::U32(v) => builder.arg(v),
                KernelArg::U64(v) => builder.arg(v),
                KernelArg::F32(v) => builder.arg(v),
                KernelArg::RoundKeys(v) => builder.arg(v),
            };
        }
        let cfg = LaunchConfig { grid_dim: (launch.grid, 1, 1), block_dim: (launch.threads, 1, 1), shared_mem_bytes: launch.shared_bytes };
        // SAFETY: the caller guarantees the pointers; the plan's arguments match the entry.
        unsafe { builder.launch(cfg) }.map_err(|e| cuda_err(&format!("launching {}", launch.kernel.entry::<T>()), e))?;
        Ok(())
    }
}

pub(crate) fn check_call(geom: BlockGeometry, u: usize, layer: &str) -> Result<()> {
    geom.check(u, layer)?;
    if u > MAX_COMPETITORS {
        return Err(LwtaError::Competitors(u));
    }
    Ok(())
}

fn cuda_err(what: &str, err: cudarc::driver::DriverError) -> LwtaError {
    LwtaError::Driver { what: what.to_string(), source: err }
}

/// Fails, before any other CUDA call, when no driver library can be loaded or the driver is
/// older than the PTX needs.
fn check_driver() -> Result<()> {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    if !unsafe { sys::is_culib_present() } {
        return Err(LwtaError::Cuda(
            "no NVIDIA driver library (libcuda.so / nvcuda.dll) found: the LWTA GPU kernels need an NVIDIA GPU and driver; use the CPU path (lwta_kernels::cpu)".into(),
        ));
    }
    let mut version = 0i32;
    // SAFETY: the library is present; cuDriverGetVersion only writes the int it is given.
    unsafe { sys::cuDriverGetVersion(&mut version) }.result().map_err(|e| cuda_err("asking the driver for its version", e))?;
    if version < MIN_DRIVER_VERSION {
        return Err(LwtaError::Cuda(format!(
            "the NVIDIA driver supports CUDA {} ({version}), but kernels/lwta_*.ptx is PTX ISA {PTX_ISA}, which needs a driver for CUDA {} ({MIN_DRIVER_VERSION}) or newer",
            cuda_version(version),
            cuda_version(MIN_DRIVER_VERSION),
        )));
    }
    Ok(())
}

fn cuda_version(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// Loaded kernels per context, keyed by the context handle (a cached module keeps its context
/// alive, so a handle is never reused while its entry exists).
type KernelCache = Mutex<Vec<(usize, Arc<Kernels>)>>;

/// The kernels of `ctx`, loading both modules on first use (one JIT per context and process).
fn kernels_for(ctx: &Arc<CudaContext>) -> Result<Arc<Kernels>> {
    static CACHE: OnceLock<KernelCache> = OnceLock::new();
    let key = ctx.cu_ctx() as usize;
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    let mut cache = cache.lock().map_err(|_| LwtaError::Cuda("the LWTA kernel cache was poisoned by a panic".into()))?;
    if let Some((_, kernels)) = cache.iter().find(|(k, _)| *k == key) {
        return Ok(kernels.clone());
    }
    let (major, minor) = ctx.compute_capability().map_err(|e| cuda_err("reading the compute capability", e))?;
    if (major, minor) < MIN_COMPUTE_CAPABILITY {
        let name = ctx.name().unwrap_or_else(|_| format!("GPU {}", ctx.ordinal()));
        return Err(LwtaError::Cuda(format!(
            "{name} has compute capability {major}.{minor}; the LWTA kernels target sm_{}{} or newer",
            MIN_COMPUTE_CAPABILITY.0, MIN_COMPUTE_CAPABILITY.1
        )));
    }
    let sm_count = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| cuda_err("reading the multiprocessor count", e))?;
    let kernels = Arc::new(Kernels {
        f32: load(ctx, &ptx_source(PTX_F32, "f32")?, "f32")?,
        bf16: load(ctx, &ptx_source(PTX_BF16, "bf16")?, "bf16")?,
        sm_count: u32::try_from(sm_count).unwrap_or(1).max(1),
    });
    cache.push((key, kernels.clone()));
    Ok(kernels)
}

/// Environment variable naming a folder whose `lwta_f32.ptx` / `lwta_bf16.ptx` replace the
/// embedded kernels: kernel developers time an edited PTX file with the release binary, no rebuild.
pub const PTX_DIR_VAR: &str = "LWTA_PTX_DIR";

/// The embedded PTX, or the file in `$LWTA_PTX_DIR` when that is set.
fn ptx_source(embedded: &'static str, suffix: &str) -> Result<std::borrow::Cow<'static, str>> {
    match std::env::var_os(PTX_DIR_VAR) {
        None => Ok(embedded.into()),
        Some(dir) => {
            let path = std::path::Path::new(&dir).join(format!("lwta_{suffix}.ptx"));
            std::fs::read_to_string(&path)
                .map(Into::into)
                .map_err(|e| LwtaError::Cuda(format!("{PTX_DIR_VAR} is set, but {} cannot be read: {e}", path.display())))
        }
    }
}

fn load(ctx: &Arc<CudaContext>, src: &str, suffix: &str) -> Result<DtypeKernels> {
    let file = format!("kernels/lwta_{suffix}.ptx");
    let module = ctx.load_module(Ptx::from_src(src)).map_err(|e| {
        let hint = if e.0 == sys::cudaError_enum::CUDA_ERROR_UNSUPPORTED_PTX_VERSION {
            format!(" (the file is PTX ISA {PTX_ISA}; the driver's JIT does not accept it)")
        } else {
            String::new()
        };
        cuda_err(&format!("JIT-compiling {file}{hint}"), e)
    })?;
    let function = |kind: &str| {
        let name = format!("lwta_{kind}_{suffix}");
        module.load_function(&name).map_err(|e| cuda_err(&format!("finding entry {name} in {file}"), e))
    };
    Ok(DtypeKernels {
        fwd_quad: function("fwd_quad")?,
        bwd_quad: function("bwd_quad")?,
        fwd_scalar: function("fwd_scalar")?,
        bwd_scalar: function("bwd_scalar")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without a GPU (CI, this project's build machines) opening one is an error
    /// that says why; with a GPU it succeeds. Either way it must not panic.
    #[test]
    fn opening_a_gpu_returns_a_result() {
        match LwtaCuda::new(0) {
            Ok(cuda) => assert_eq!(cuda.stream().context().ordinal(), 0),
            Err(LwtaError::Cuda(message)) => assert!(!message.is_empty()),
            Err(LwtaError::Driver { what, .. }) => assert!(!what.is_empty()),
            Err(other) => panic!("unexpected error kind: {other}"),
        }
    }

    #[test]
    fn without_a_driver_the_error_names_the_missing_library() {
        // SAFETY: only probes for the library.
        if unsafe { sys::is_culib_present() } {
            return; // a machine with a driver: covered by the GPU parity run instead
        }
        let err = LwtaCuda::new(0).unwrap_err().to_string();
        assert!(err.contains("no NVIDIA driver library"), "{err}");
    }
}

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

const PTX_F32: &str = include_str!("../../../../kernels/lwta_f32.ptx");
const PTX_BF16: &str = include_str!("../../../../kernels/lwta_bf16.ptx");

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

/// Threads per CTA when shared memory does not limit it.
const THREADS: u32 = 128;
/// Dynamic shared memory a CTA may use without opting in to more.
const STASH_BYTES: u32 = 48 * 1024;

/// Philox4x32 Weyl key increments (see [`crate::philox`]).
const KEY_STEP: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];

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
        let stream = &*self.stream;
        let (keys, offset, use_noise) = philox_args(noise)?;
        if geom.is_empty() {
            return Ok(());
        }
        let (x_ptr, _x_sync) = x.device_ptr(stream);
        let (y_ptr, _y_sync) = y.device_ptr_mut(stream);
        let (w_ptr, _w_sync) = winners.device_ptr_mut(stream);
        let functions = T::kernels(&self.kernels);
        let plan = Plan::new::<T>(geom, u, &[x_ptr, y_ptr], Some(w_ptr))?;
        let (off_lo, off_hi) = (offset as u32, (offset >> 32) as u32);
        let mut launch = match &plan {
            Plan::Quad(q) => {
                let mut b = stream.launch_builder(&functions.fwd_quad);
                b.arg(&x_ptr).arg(&y_ptr).arg(&w_ptr);
                q.push(&mut b);
                b
            }
            Plan::Scalar(s) => {
                let mut b = stream.launch_builder(&functions.fwd_scalar);
                b.arg(&x_ptr).arg(&y_ptr).arg(&w_ptr);
                s.push(&mut b);
                b
            }
        };
        launch.arg(&use_noise).arg(&keys).arg(&off_lo).arg(&off_hi);
        let function = match &plan {
            Plan::Quad(_) => &functions.fwd_quad,
            Plan::Scalar(_) => &functions.fwd_scalar,
        };
        let cfg = plan.config(function, self.kernels.sm_count.saturating_mul(self.waves), THREADS, 0)?;
        // SAFETY: the argument list matches the entry's .param list (types and order), every
        // pointer covers the `geom.len()` elements / `geom.blocks(u)` bytes the plan addresses
        // (lengths checked above), and the pointers stay alive until the guards drop after launch.
        unsafe { launch.launch(cfg) }.map_err(|e| cuda_err(&format!("launching lwta_fwd_{}_{}", plan.shape(), T::SUFFIX), e))?;
        Ok(())
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
        let stream = &*self.stream;
        let (keys, offset, use_noise) = philox_args(noise)?;
        if geom.is_empty() {
            return Ok(());
        }
        let (x_ptr, _x_sync) = x.device_ptr(stream);
        let (dy_ptr, _dy_sync) = dy.device_ptr(stream);
        let (dx_ptr, _dx_sync) = dx.device_ptr_mut(stream);
        let functions = T::kernels(&self.kernels);
        let plan = Plan::new::<T>(geom, u, &[x_ptr, dy_ptr, dx_ptr], None)?;
        let (off_lo, off_hi) = (offset as u32, (offset >> 32) as u32);
        // The kernels round (v - max)·(1/τ) exactly as the CPU reference does.
        let inv_tau = 1.0 / tau;
        let (mut launch, stash_per_thread) = match &plan {
            Plan::Quad(q) => {
                let mut b = stream.launch_builder(&functions.bwd_quad);
                b.arg(&x_ptr).arg(&dy_ptr).arg(&dx_ptr);
                q.push(&mut b);
                (b, 2 * 16 * q.chunks)
            }
            Plan::Scalar(s) => {
                let mut b = stream.launch_builder(&functions.bwd_scalar);
                b.arg(&x_ptr).arg(&dy_ptr).arg(&dx_ptr);
                s.push(&mut b);
                (b, 2 * 4 * s.u)
            }
        };
        launch.arg(&use_noise).arg(&keys).arg(&off_lo).arg(&off_hi).arg(&inv_tau);
        // Largest multiple of 32 threads whose stash fits; U ≤ 32 keeps it ≥ 32.
        let threads = (STASH_BYTES / stash_per_thread / 32 * 32).clamp(32, THREADS);
        let function = match &plan {
            Plan::Quad(_) => &functions.bwd_quad,
            Plan::Scalar(_) => &functions.bwd_scalar,
        };
        let cfg = plan.config(function, self.kernels.sm_count.saturating_mul(self.waves), threads, threads * stash_per_thread)?;
        // SAFETY: as in `forward`; the dynamic shared memory is the stash the entry addresses
        // (2 · slots · ntid · slot bytes).
        unsafe { launch.launch(cfg) }.map_err(|e| cuda_err(&format!("launching lwta_bwd_{}_{}", plan.shape(), T::SUFFIX), e))?;
        Ok(())
    }
}

/// Which kernel shape runs, with its geometry parameters (see the PTX entry comments).
enum Plan {
    Quad(QuadArgs),
    Scalar(ScalarArgs),
}

struct QuadArgs {
    items: u32,
    plane_quads: u32,
    plane_elems: u64,
    chunk_stride: u64,
    chunks: u32,
    tokens: u32,
}

struct ScalarArgs {
    items: u32,
    inner: u32,
    plane_elems: u64,
    u: u32,
}

impl Plan {
    /// The quad kernels when the layout allows 4-element chunks and every pointer is aligned for
    /// them (NCHW also writes its 4 winners as one u32); the scalar kernels otherwise.
    fn new<T: Element>(geom: BlockGeometry, u: usize, data: &[u64], winners: Option<u64>) -> Result<Self> {
        let too_big = || LwtaError::Cuda(format!("{} blocks exceed the kernels' 32-bit block index", geom.blocks(u)));
        let (inner, blocks) = (geom.inner as u64, geom.blocks(u) as u64);
        let aligned = data.iter().all(|p| p.is_multiple_of(4 * T::BYTES));
        let tokens = geom.inner == 1;
        if aligned && tokens && u.is_multiple_of(4) {
            return Ok(Plan::Quad(QuadArgs {
                items: u32::try_from(blocks).map_err(|_| too_big())?,
                plane_quads: 1,
                plane_elems: u as u64,
                chunk_stride: 4,
                chunks: (u / 4) as u32,
                tokens: 1,
            }));
        }
        if aligned && !tokens && inner.is_multiple_of(4) && winners.is_none_or(|w| w.is_multiple_of(4)) {
            return Ok(Plan::Quad(QuadArgs {
                items: u32::try_from(blocks / 4).map_err(|_| too_big())?,
                plane_quads: u32::try_from(inner / 4).map_err(|_| too_big())?,
                plane_elems: u as u64 * inner,
                chunk_stride: inner,
                chunks: u as u32,
                tokens: 0,
            }));
        }
        Ok(Plan::Scalar(ScalarArgs {
            items: u32::try_from(blocks).map_err(|_| too_big())?,
            inner: u32::try_from(inner).map_err(|_| too_big())?,
            plane_elems: u as u64 * inner,
            u: u as u32,
        }))
    }

    fn shape(&self) -> &'static str {
        match self {
            Plan::Quad(_) => "quad",
            Plan::Scalar(_) => "scalar",
        }
    }

    /// One CTA per item batch up to what is resident on the GPU at once (the kernels stride
    /// over the rest), so the per-thread prologue is paid once and no partial wave trails.
    fn config(&self, function: &CudaFunction, sm_slots: u32, threads: u32, shared_mem_bytes: u32) -> Result<LaunchConfig> {
        let items = match self {
            Plan::Quad(q) => q.items,
            Plan::Scalar(s) => s.items,
        };
        let per_sm = function
            .occupancy_max_active_blocks_per_multiprocessor(threads, shared_mem_bytes as usize, None)
            .map_err(|e| cuda_err("querying the kernels' occupancy", e))?
            .max(1);
        let ctas = items.div_ceil(threads).min(sm_slots.saturating_mul(per_sm).max(1));
        // The kernels step a 32-bit item index by the grid's thread count: it must not wrap.
        if u64::from(items) + u64::from(ctas) * u64::from(threads) > u64::from(u32::MAX) {
            return Err(LwtaError::Cuda(format!("{items} work items exceed the kernels' 32-bit index")));
        }
        Ok(LaunchConfig { grid_dim: (ctas, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes })
    }
}

impl QuadArgs {
    fn push<'a>(&'a self, b: &mut cudarc::driver::LaunchArgs<'a>) {
        b.arg(&self.items).arg(&self.plane_quads).arg(&self.plane_elems).arg(&self.chunk_stride).arg(&self.chunks).arg(&self.tokens);
    }
}

impl ScalarArgs {
    fn push<'a>(&'a self, b: &mut cudarc::driver::LaunchArgs<'a>) {
        b.arg(&self.items).arg(&self.inner).arg(&self.plane_elems).arg(&self.u);
    }
}

/// `(round keys, offset, noise flag)`: the 10 Philox round keys `seed + r·(W0, W1)` as the PTX
/// reads them, so the key schedule costs the kernels nothing.
fn philox_args(noise: Noise) -> Result<([u32; 20], u64, u32)> {
    match noise {
        Noise::None => Ok(([0; 20], 0, 0)),
        Noise::Philox { seed, offset } => {
            let mut keys = [0u32; 20];
            for round in 0..10u32 {
                keys[2 * round as usize] = (seed as u32).wrapping_add(round.wrapping_mul(KEY_STEP[0]));
                keys[2 * round as usize + 1] = ((seed >> 32) as u32).wrapping_add(round.wrapping_mul(KEY_STEP[1]));
            }
            Ok((keys, offset, 1))
        }
        Noise::Uniforms(_) => Err(LwtaError::Cuda(
            "the GPU kernels draw their noise from the Philox stream; supplied uniforms (Noise::Uniforms) are CPU-only".into(),
        )),
    }
}

fn check_call(geom: BlockGeometry, u: usize, layer: &str) -> Result<()> {
    geom.check(u, layer)?;
    if u > MAX_COMPETITORS {
        return Err(LwtaError::Competitors(u));
    }
    Ok(())
}

fn cuda_err(what: &str, err: cudarc::driver::DriverError) -> LwtaError {
    LwtaError::Cuda(format!("{what}: {err}"))
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

    #[test]
    fn round_keys_follow_the_philox_key_schedule() {
        let seed = 0x0123_4567_89ab_cdef_u64;
        let (keys, offset, flag) = philox_args(Noise::Philox { seed, offset: 7 }).unwrap();
        assert_eq!((offset, flag), (7, 1));
        let (mut k0, mut k1) = (seed as u32, (seed >> 32) as u32);
        for round in 0..10 {
            assert_eq!([keys[2 * round], keys[2 * round + 1]], [k0, k1]);
            k0 = k0.wrapping_add(KEY_STEP[0]);
            k1 = k1.wrapping_add(KEY_STEP[1]);
        }
        assert!(philox_args(Noise::Uniforms(&[0.5])).is_err());
    }

    #[test]
    fn plans_pick_vector_kernels_only_when_layout_and_alignment_allow() {
        let nchw = BlockGeometry::nchw(2, 8, 4, 3);
        assert!(matches!(
            Plan::new::<f32>(nchw, 4, &[256, 512], Some(1024)).unwrap(),
            Plan::Quad(QuadArgs { items: 12, plane_quads: 3, chunks: 4, tokens: 0, .. })
        ));
        // a view starting 1 element in is not 16-byte aligned
        assert!(matches!(Plan::new::<f32>(nchw, 4, &[260, 512], Some(1024)).unwrap(), Plan::Scalar(_)));
        // NCHW writes 4 winner bytes at once
        assert!(matches!(Plan::new::<f32>(nchw, 4, &[256, 512], Some(1025)).unwrap(), Plan::Scalar(_)));
        let odd_pixels = BlockGeometry::nchw(2, 8, 7, 7);
        assert!(matches!(
            Plan::new::<bf16>(odd_pixels, 2, &[256, 512], Some(1024)).unwrap(),
            Plan::Scalar(ScalarArgs { items: 392, inner: 49, .. })
        ));
        let tokens = BlockGeometry::tokens(5, 24);
        assert!(matches!(
            Plan::new::<bf16>(tokens, 12, &[256, 264], None).unwrap(),
            Plan::Quad(QuadArgs { items: 10, chunks: 3, tokens: 1, .. })
        ));
        assert!(matches!(Plan::new::<f32>(tokens, 6, &[256, 512], None).unwrap(), Plan::Scalar(_)));
    }
}

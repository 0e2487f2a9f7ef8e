//! Storage: where a tensor's elements live, and the contract every backend fulfils.
//!
//! [`Storage`] is an enum with one variant per backend (`Cpu`, `Cuda`), as candle does it. Each op
//! family declares its kernels as a trait in its folder (`ops/<op>/mod.rs`, e.g.
//! `ops::softmax::SoftmaxOps`) and implements it for both backend storages side by side
//! (`ops/<op>/cpu.rs`, `ops/<op>/cuda.rs`); [`Backend`] names every such trait, so a backend that
//! misses a kernel does not compile. The op's shape checks and tape recording are written once, in
//! `mod.rs`, above the backends; [`dispatch!`] routes the call to the storage's backend (and refuses
//! storages on different devices).
//!
//! Host memory is reached only through explicit copies ([`Storage::to_f32_vec`] and friends).
//!
//! The CUDA storage ([`crate::cuda::CudaStorage`]) is a buffer from its device's caching
//! allocator plus a dtype and length; its kernels are the PTX embedded from each op's
//! `kernels.cu`, launched through the device's gpu layer (a real GPU, or the PTX emulator for
//! `Device::cuda_emulated`).

use crate::cpu::CpuStorage;
use crate::cuda::CudaStorage;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::StridedView;

/// A tensor's elements on one device.
#[derive(Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
}

/// What every backend's storage provides besides the op kernels: identity, host copies, casts,
/// in-place accumulation and strided copies (the layout ops and broadcasting are built on them).
pub(crate) trait BackendStorage: Sized + Send + Sync + std::fmt::Debug {
    fn dtype(&self) -> DType;
    fn len(&self) -> usize;
    fn device(&self) -> Device;
    /// A copy on the same device.
    fn try_clone(&self) -> Result<Self>;
    /// Float elements as f32 on the host (bf16 widened exactly).
    fn to_f32_vec(&self) -> Result<Vec<f32>>;
    fn to_u8_vec(&self) -> Result<Vec<u8>>;
    fn to_u32_vec(&self) -> Result<Vec<u32>>;
    fn to_u64_vec(&self) -> Result<Vec<u64>>;
    /// Float ↔ float conversion (bf16 rounded to nearest even).
    fn cast(&self, dtype: DType) -> Result<Self>;
    /// `self += rhs`, same dtype and length (gradient accumulation, counters).
    fn add_assign(&mut self, rhs: &Self) -> Result<()>;
    /// The elements of `self` seen through `view` (shape, strides, offset), made contiguous.
    fn copy_strided(&self, view: &StridedView) -> Result<Self>;
    /// Writes the contiguous `src` into the strided `view` of `self`.
    fn copy_into(&mut self, view: &StridedView, src: &Self) -> Result<()>;
}

/// Storage made on a device from host data. (`from_*` take the device: the storage is made on it.)
#[allow(clippy::wrong_self_convention)]
pub(crate) trait BackendDevice {
    type Storage: BackendStorage;
    fn zeros(&self, dtype: DType, len: usize) -> Result<Self::Storage>;
    /// `len` copies of `value` in a float dtype.
    fn full(&self, dtype: DType, len: usize, value: f32) -> Result<Self::Storage>;
    /// f32 host values stored as `dtype` (a float type).
    fn from_f32(&self, data: &[f32], dtype: DType) -> Result<Self::Storage>;
    fn from_u8(&self, data: &[u8]) -> Result<Self::Storage>;
    fn from_u32(&self, data: &[u32]) -> Result<Self::Storage>;
}

/// Every kernel family a backend must implement (see the module docs): a contract, never a bound —
/// the impls below stop compiling when a backend misses a family.
#[allow(dead_code)]
pub(crate) trait Backend:
    BackendStorage
    + crate::ops::binary::BinaryOps
    + crate::ops::unary::UnaryOps
    + crate::ops::lwta::LwtaOps
    + crate::ops::reduce::ReduceOps
    + crate::ops::layout::LayoutOps
    + crate::ops::matmul::MatmulOps
    + crate::ops::conv::ConvOps
    + crate::ops::norm::NormOps
    + crate::ops::softmax::SoftmaxOps
    + crate::ops::attention::AttentionOps
    + crate::ops::pool::PoolOps
    + crate::ops::loss::LossOps
    + crate::ops::metrics::MetricOps
    + crate::optim::OptimizerOps
{
}

impl Backend for CpuStorage {}
impl Backend for CudaStorage {}

/// Every kernel trait, so [`dispatch!`] bodies can call any kernel.
pub(crate) mod kernels {
    pub(crate) use crate::ops::binary::BinaryOps;
    pub(crate) use crate::ops::conv::ConvOps;
    pub(crate) use crate::ops::layout::LayoutOps;
    pub(crate) use crate::ops::loss::LossOps;
    pub(crate) use crate::ops::lwta::LwtaOps;
    pub(crate) use crate::ops::matmul::MatmulOps;
    pub(crate) use crate::ops::metrics::MetricOps;
    pub(crate) use crate::ops::norm::NormOps;
    pub(crate) use crate::ops::pool::PoolOps;
    pub(crate) use crate::ops::reduce::ReduceOps;
    pub(crate) use crate::ops::softmax::SoftmaxOps;
    pub(crate) use crate::ops::unary::UnaryOps;
    pub(crate) use crate::storage::BackendStorage;
}

/// Turns what a backend kernel returns into what the op layer handles: backend storages become
/// [`Storage`], containers of them are mapped element-wise, host values pass through.
pub(crate) trait Lift {
    type Out;
    fn lift(self) -> Self::Out;
}

impl Lift for CpuStorage {
    type Out = Storage;
    fn lift(self) -> Storage {
        Storage::Cpu(self)
    }
}

impl Lift for CudaStorage {
    type Out = Storage;
    fn lift(self) -> Storage {
        Storage::Cuda(self)
    }
}

impl Lift for () {
    type Out = ();
    fn lift(self) {}
}

impl<A: Lift> Lift for Option<A> {
    type Out = Option<A::Out>;
    fn lift(self) -> Self::Out {
        self.map(Lift::lift)
    }
}

impl<A: Lift> Lift for Vec<A> {
    type Out = Vec<A::Out>;
    fn lift(self) -> Self::Out {
        self.into_iter().map(Lift::lift).collect()
    }
}

impl<A: Lift, B: Lift> Lift for (A, B) {
    type Out = (A::Out, B::Out);
    fn lift(self) -> Self::Out {
        (self.0.lift(), self.1.lift())
    }
}

impl<A: Lift, B: Lift, C: Lift> Lift for (A, B, C) {
    type Out = (A::Out, B::Out, C::Out);
    fn lift(self) -> Self::Out {
        (self.0.lift(), self.1.lift(), self.2.lift())
    }
}

/// Runs a kernel on the backend of its input storages: `dispatch!((a, b) => |x, y| x.op(y, …))`
/// binds `x`, `y` to the backend storages (all on one device, else an error naming `op`) and lifts
/// the kernel's `Result<T>` into the op layer's types ([`Lift`]). `dispatch!(mut a, (b) => …)`
/// binds the first storage mutably (in-place kernels).
macro_rules! dispatch {
    ($op:expr, ($($s:expr),+) => |$($x:ident),+| $body:expr) => {{
        #[allow(unused_imports)]
        use $crate::storage::kernels::*;
        #[allow(unused_parens)]
        match ($($s),+) {
            ($($crate::storage::Storage::Cpu($x)),+) => $body.map($crate::storage::Lift::lift),
            ($($crate::storage::Storage::Cuda($x)),+) => {
                $crate::storage::same_device($op, &[$($crate::storage::BackendStorage::device($x)),+])?;
                $body.map($crate::storage::Lift::lift)
            }
            #[allow(unreachable_patterns)]
            _ => Err($crate::storage::mixed_devices($op)),
        }
    }};
    ($op:expr, mut $m:expr, ($($s:expr),*) => |$mx:ident $(, $x:ident)*| $body:expr) => {{
        #[allow(unused_imports)]
        use $crate::storage::kernels::*;
        #[allow(unused_parens)]
        match ($m, $($s),*) {
            ($crate::storage::Storage::Cpu($mx), $($crate::storage::Storage::Cpu($x)),*) => $body.map($crate::storage::Lift::lift),
            ($crate::storage::Storage::Cuda($mx), $($crate::storage::Storage::Cuda($x)),*) => {
                $crate::storage::same_device($op, &[$crate::storage::BackendStorage::device(&*$mx) $(, $crate::storage::BackendStorage::device($x))*])?;
                $body.map($crate::storage::Lift::lift)
            }
            #[allow(unreachable_patterns)]
            _ => Err($crate::storage::mixed_devices($op)),
        }
    }};
}
pub(crate) use dispatch;

pub(crate) fn same_device(op: &'static str, devices: &[Device]) -> Result<()> {
    match devices.iter().find(|d| **d != devices[0]) {
        Some(other) => Err(Error::Device { op, detail: format!("inputs live on {} and {other}", devices[0]) }),
        None => Ok(()),
    }
}

pub(crate) fn mixed_devices(op: &'static str) -> Error {
    Error::Device { op, detail: "inputs live on different devices (CPU and CUDA); move them with `to_device` first".into() }
}

/// Dispatches a [`BackendStorage`] method (the enum forwards every one of them).
macro_rules! forward {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            Storage::Cpu($s) => $body,
            Storage::Cuda($s) => $body,
        }
    };
}

impl Storage {
    pub fn dtype(&self) -> DType {
        forward!(self, s => s.dtype())
    }

    pub fn len(&self) -> usize {
        forward!(self, s => s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn device(&self) -> Device {
        forward!(self, s => s.device())
    }

    pub fn try_clone(&self) -> Result<Self> {
        dispatch!("clone", (self) => |s| s.try_clone())
    }

    /// Float elements copied to the host as f32.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        forward!(self, s => s.to_f32_vec())
    }

    pub fn to_u8_vec(&self) -> Result<Vec<u8>> {
        forward!(self, s => s.to_u8_vec())
    }

    pub fn to_u32_vec(&self) -> Result<Vec<u32>> {
        forward!(self, s => s.to_u32_vec())
    }

    pub fn to_u64_vec(&self) -> Result<Vec<u64>> {
        forward!(self, s => s.to_u64_vec())
    }

    pub(crate) fn cast(&self, dtype: DType) -> Result<Self> {
        dispatch!("to_dtype", (self) => |s| s.cast(dtype))
    }

    pub(crate) fn add_assign(&mut self, rhs: &Storage) -> Result<()> {
        dispatch!("add_assign", mut self, (rhs) => |s, r| s.add_assign(r))
    }

    pub(crate) fn copy_strided(&self, view: &StridedView) -> Result<Self> {
        dispatch!("copy_strided", (self) => |s| s.copy_strided(view))
    }

    pub(crate) fn copy_into(&mut self, view: &StridedView, src: &Storage) -> Result<()> {
        dispatch!("copy_into", mut self, (src) => |s, x| s.copy_into(view, x))
    }
}

//! The tensor: contiguous row-major storage on a device behind an `Arc`, a shape, an id, and
//! optionally the tape of the computation it belongs to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::cpu::{Cpu, CpuStorage};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{dtype_err, shape_err, Result};
use crate::storage::{BackendDevice, Storage};
use crate::tape::{Gradients, Tape};

/// Identifies a tensor in a [`Gradients`] map. Clones share it; every op output gets a fresh one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(usize);

impl TensorId {
    fn fresh() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

#[derive(Debug)]
struct Inner {
    id: TensorId,
    shape: Vec<usize>,
    storage: Arc<Storage>,
    tape: Option<Tape>,
    requires_grad: bool,
}

/// A tensor. Cloning is cheap (shared storage); ops never mutate their inputs.
#[derive(Debug, Clone)]
pub struct Tensor {
    inner: Arc<Inner>,
}

fn element_count(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).map_or_else(|| shape_err(op, format!("shape {shape:?} overflows")), Ok)
}

impl Tensor {
    /// A constant f32 tensor (no gradient) on the CPU from data and shape.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        let n = element_count("from_vec", shape)?;
        if n != data.len() {
            return shape_err("from_vec", format!("shape {shape:?} needs {n} elements, got {}", data.len()));
        }
        Ok(Self::from_storage(Storage::Cpu(CpuStorage::F32(data)), shape.to_vec()))
    }

    /// Host f32 values as a `dtype` tensor on `device` (one host-to-device copy).
    pub fn from_slice_on(data: &[f32], shape: &[usize], dtype: DType, device: &Device) -> Result<Self> {
        let n = element_count("from_slice_on", shape)?;
        if n != data.len() {
            return shape_err("from_slice_on", format!("shape {shape:?} needs {n} elements, got {}", data.len()));
        }
        let storage = match device {
            Device::Cpu => Storage::Cpu(Cpu.from_f32(data, dtype)?),
            Device::Cuda(d) => Storage::Cuda(d.from_f32(data, dtype)?),
        };
        Ok(Self::from_storage(storage, shape.to_vec()))
    }

    /// Class labels or indices as a `u32` tensor on `device`.
    pub fn from_u32_on(data: &[u32], shape: &[usize], device: &Device) -> Result<Self> {
        let n = element_count("from_u32_on", shape)?;
        if n != data.len() {
            return shape_err("from_u32_on", format!("shape {shape:?} needs {n} elements, got {}", data.len()));
        }
        let storage = match device {
            Device::Cpu => Storage::Cpu(Cpu.from_u32(data)?),
            Device::Cuda(d) => Storage::Cuda(d.from_u32(data)?),
        };
        Ok(Self::from_storage(storage, shape.to_vec()))
    }

    /// A trainable f32 parameter on the CPU: its gradient is computed whenever a taped computation
    /// uses it.
    pub fn param(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        Ok(Self::from_vec(data, shape)?.requiring_grad())
    }

    /// f32 zeros on the CPU.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, 0.0)
    }

    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, 1.0)
    }

    /// f32 `value`s on the CPU.
    pub fn full(shape: &[usize], value: f32) -> Self {
        Self::from_storage(Storage::Cpu(CpuStorage::F32(vec![value; shape.iter().product()])), shape.to_vec())
    }

    /// A 0-d f32 tensor on the CPU.
    pub fn scalar(value: f32) -> Self {
        Self::full(&[], value)
    }

    /// Zeros of `dtype` on `device`.
    pub fn zeros_on(shape: &[usize], dtype: DType, device: &Device) -> Result<Self> {
        let n = element_count("zeros_on", shape)?;
        let storage = match device {
            Device::Cpu => Storage::Cpu(Cpu.zeros(dtype, n)?),
            Device::Cuda(d) => Storage::Cuda(d.zeros(dtype, n)?),
        };
        Ok(Self::from_storage(storage, shape.to_vec()))
    }

    /// `value`s of the float `dtype` on `device`.
    pub fn full_on(shape: &[usize], value: f32, dtype: DType, device: &Device) -> Result<Self> {
        let n = element_count("full_on", shape)?;
        let storage = match device {
            Device::Cpu => Storage::Cpu(Cpu.full(dtype, n, value)?),
            Device::Cuda(d) => Storage::Cuda(d.full(dtype, n, value)?),
        };
        Ok(Self::from_storage(storage, shape.to_vec()))
    }

    /// A tensor (no tape, no gradient) around storage an op made.
    pub(crate) fn from_storage(storage: Storage, shape: Vec<usize>) -> Self {
        Self::from_storage_arc(Arc::new(storage), shape)
    }

    /// [`Tensor::from_storage`] for storage shared with another tensor.
    pub(crate) fn from_storage_arc(storage: Arc<Storage>, shape: Vec<usize>) -> Self {
        Self::new(storage, shape, None, false)
    }

    fn new(storage: Arc<Storage>, shape: Vec<usize>, tape: Option<Tape>, requires_grad: bool) -> Self {
        Self { inner: Arc::new(Inner { id: TensorId::fresh(), shape, storage, tape, requires_grad }) }
    }

    /// The same data marked as needing a gradient (a fresh id).
    pub fn requiring_grad(&self) -> Self {
        Self::new(self.inner.storage.clone(), self.inner.shape.clone(), self.inner.tape.clone(), true)
    }

    /// The same tensor (same id, so its gradient is found under it) recording every op it flows
    /// through on `tape`.
    ///
    /// Ops record when one of their inputs carries a tape. An op whose inputs are all untraced
    /// parameters (e.g. expanding a class token) records nothing, so trace such a parameter with
    /// [`Tensor::with_tape_of`] the activation it will meet.
    pub fn traced(&self, tape: &Tape) -> Self {
        let i = &self.inner;
        let inner = Inner {
            id: i.id,
            shape: i.shape.clone(),
            storage: i.storage.clone(),
            tape: Some(tape.clone()),
            requires_grad: i.requires_grad,
        };
        Self { inner: Arc::new(inner) }
    }

    /// This tensor traced on `other`'s tape, if `other` has one (for parameter-only sub-expressions).
    pub fn with_tape_of(&self, other: &Tensor) -> Self {
        match other.tape() {
            Some(tape) if self.tape().is_none() => self.traced(tape),
            _ => self.clone(),
        }
    }

    /// The same data cut off from any tape (no gradient flows back through it).
    pub fn detach(&self) -> Self {
        Self::new(self.inner.storage.clone(), self.inner.shape.clone(), None, false)
    }

    /// A copy on `device` (host ↔ device transfer; the same tensor when it is already there). The
    /// copy keeps `requires_grad` but not the tape: move parameters and inputs, not intermediates.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        if &self.device() == device {
            return Ok(self.clone());
        }
        let s = self.storage();
        let storage = match (device, s.dtype()) {
            (Device::Cpu, DType::F32 | DType::BF16) => Storage::Cpu(Cpu.from_f32(&s.to_f32_vec()?, s.dtype())?),
            (Device::Cpu, DType::U8) => Storage::Cpu(CpuStorage::U8(s.to_u8_vec()?)),
            (Device::Cpu, DType::U32) => Storage::Cpu(CpuStorage::U32(s.to_u32_vec()?)),
            (Device::Cpu, DType::U64) => Storage::Cpu(CpuStorage::U64(s.to_u64_vec()?)),
            (Device::Cuda(d), DType::F32 | DType::BF16) => Storage::Cuda(d.from_f32(&s.to_f32_vec()?, s.dtype())?),
            (Device::Cuda(d), DType::U8) => Storage::Cuda(d.from_u8(&s.to_u8_vec()?)?),
            (Device::Cuda(d), DType::U32) => Storage::Cuda(d.from_u32(&s.to_u32_vec()?)?),
            (Device::Cuda(_), DType::U64) => return dtype_err("to_device", "counters stay on the device they count on"),
        };
        Ok(Self::new(Arc::new(storage), self.shape().to_vec(), None, self.requires_grad()))
    }

    pub fn id(&self) -> TensorId {
        self.inner.id
    }

    pub fn shape(&self) -> &[usize] {
        &self.inner.shape
    }

    /// Size of dimension `dim`; negative counts from the end.
    pub fn dim(&self, dim: isize) -> Result<usize> {
        Ok(self.shape()[self.axis(dim)?])
    }

    pub fn rank(&self) -> usize {
        self.inner.shape.len()
    }

    pub fn len(&self) -> usize {
        self.inner.storage.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn device(&self) -> Device {
        self.inner.storage.device()
    }

    pub fn dtype(&self) -> DType {
        self.inner.storage.dtype()
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    pub(crate) fn shared_storage(&self) -> Arc<Storage> {
        self.inner.storage.clone()
    }

    /// The float elements copied to the host as f32, row-major (bf16 widened exactly). On a GPU
    /// this waits for the queued work: call it where host values are needed, not per op.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.storage().to_f32_vec()
    }

    /// The elements of a `u8` tensor (LWTA winners) copied to the host.
    pub fn to_vec_u8(&self) -> Result<Vec<u8>> {
        self.storage().to_u8_vec()
    }

    /// The elements of a `u32` tensor copied to the host.
    pub fn to_vec_u32(&self) -> Result<Vec<u32>> {
        self.storage().to_u32_vec()
    }

    /// The elements of a `u64` tensor (a counter) copied to the host.
    pub fn to_vec_u64(&self) -> Result<Vec<u64>> {
        self.storage().to_u64_vec()
    }

    /// The single value of a one-element float tensor, copied to the host.
    pub fn item(&self) -> Result<f32> {
        match self.to_vec()?.as_slice() {
            [v] => Ok(*v),
            d => shape_err("item", format!("needs exactly one element, tensor has {}", d.len())),
        }
    }

    pub fn tape(&self) -> Option<&Tape> {
        self.inner.tape.as_ref()
    }

    pub fn requires_grad(&self) -> bool {
        self.inner.requires_grad
    }

    /// Runs the tape backwards from this tensor (usually a scalar loss), seeding its gradient with
    /// ones, and returns all gradients.
    pub fn backward(&self) -> Result<Gradients> {
        let seed = Tensor::full_on(self.shape(), 1.0, self.dtype(), &self.device())?;
        self.backward_with(&seed)
    }

    /// Runs the tape backwards from this tensor with `grad` as its gradient (same shape).
    pub fn backward_with(&self, grad: &Tensor) -> Result<Gradients> {
        if grad.shape() != self.shape() || grad.dtype() != self.dtype() {
            return shape_err(
                "backward",
                format!("the seed gradient is {:?} {}, the tensor {:?} {}", grad.shape(), grad.dtype(), self.shape(), self.dtype()),
            );
        }
        match self.tape() {
            Some(tape) => tape.backward(self, grad.detach()),
            None => shape_err("backward", "the tensor carries no tape: trace the input with `traced(&tape)`"),
        }
    }

    /// Overwrites the elements with host values, keeping id, shape, dtype and device (loading
    /// weights, resetting counters). Copies first when the storage is shared, so other holders
    /// never see the change.
    pub fn set_values(&mut self, values: &[f32]) -> Result<()> {
        if values.len() != self.len() {
            return shape_err("set_values", format!("{} values for a tensor of {} elements", values.len(), self.len()));
        }
        let fresh = Tensor::from_slice_on(values, self.shape(), self.dtype(), &self.device())?;
        self.assign(&fresh)
    }

    /// Takes `other`'s elements (same shape, dtype and device), keeping this tensor's id: running
    /// statistics and optimiser results replace a tensor's data without renaming it.
    pub fn assign(&mut self, other: &Tensor) -> Result<()> {
        if other.shape() != self.shape() || other.dtype() != self.dtype() || other.device() != self.device() {
            return shape_err(
                "assign",
                format!(
                    "{:?} {} on {} cannot replace {:?} {} on {}",
                    other.shape(),
                    other.dtype(),
                    other.device(),
                    self.shape(),
                    self.dtype(),
                    self.device()
                ),
            );
        }
        unique_inner(&mut self.inner).storage = other.shared_storage();
        Ok(())
    }

    /// The storage, unshared (copied when another tensor holds it), for in-place kernels
    /// (optimisers, gradient accumulation). The id stays.
    pub(crate) fn storage_mut(&mut self) -> Result<&mut Storage> {
        let inner = unique_inner(&mut self.inner);
        if Arc::get_mut(&mut inner.storage).is_none() {
            inner.storage = Arc::new(inner.storage.try_clone()?);
        }
        Ok(Arc::get_mut(&mut inner.storage).expect("a freshly created Arc is unique"))
    }

    /// `self += other` in place (same shape, dtype and device).
    pub(crate) fn add_assign(&mut self, other: &Tensor) -> Result<()> {
        if other.shape() != self.shape() {
            return shape_err("accumulate", format!("{:?} into {:?}", other.shape(), self.shape()));
        }
        let rhs = other.shared_storage();
        self.storage_mut()?.add_assign(&rhs)
    }

    /// Resolves a possibly negative axis.
    pub fn axis(&self, dim: isize) -> Result<usize> {
        let rank = self.rank() as isize;
        let d = if dim < 0 { dim + rank } else { dim };
        if d < 0 || d >= rank {
            return shape_err("axis", format!("axis {dim} is out of range for shape {:?}", self.shape()));
        }
        Ok(d as usize)
    }

    /// Builds an op output: records `backward` on the tape when some input needs a gradient and
    /// some input carries a tape (which the output then carries too). `backward` receives the
    /// output's gradient and the gradient map.
    pub(crate) fn from_op(
        storage: Storage,
        shape: Vec<usize>,
        inputs: &[&Tensor],
        backward: impl FnOnce(Tensor, &mut Gradients) -> Result<()> + Send + 'static,
    ) -> Tensor {
        Self::from_op_shared(Arc::new(storage), shape, inputs, backward)
    }

    /// [`Tensor::from_op`] for outputs that share an input's storage (reshape).
    pub(crate) fn from_op_shared(
        storage: Arc<Storage>,
        shape: Vec<usize>,
        inputs: &[&Tensor],
        backward: impl FnOnce(Tensor, &mut Gradients) -> Result<()> + Send + 'static,
    ) -> Tensor {
        let requires_grad = inputs.iter().any(|t| t.requires_grad());
        let tape = inputs.iter().find_map(|t| t.tape()).cloned();
        match tape {
            Some(tape) if requires_grad => {
                let out = Self::new(storage, shape, Some(tape.clone()), true);
                tape.push(out.id(), Box::new(backward));
                out
            }
            // Nothing to differentiate yet (the input batch, cast or reshaped before it meets a
            // parameter): the output carries the tape on without recording.
            tape => Self::new(storage, shape, tape, false),
        }
    }
}

/// `Arc::make_mut` for the tensor's header, which is not `Clone` because the id must stay put.
fn unique_inner(this: &mut Arc<Inner>) -> &mut Inner {
    if Arc::get_mut(this).is_none() {
        let i = &**this;
        *this = Arc::new(Inner {
            id: i.id,
            shape: i.shape.clone(),
            storage: i.storage.clone(),
            tape: i.tape.clone(),
            requires_grad: i.requires_grad,
        });
    }
    Arc::get_mut(this).expect("a freshly created Arc is unique")
}

//! The tensor: contiguous row-major f32 data behind an `Arc`, a shape, an id, and optionally the
//! tape of the computation it belongs to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::device::Device;
use crate::error::{shape_err, Result};
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
    data: Arc<Vec<f32>>,
    tape: Option<Tape>,
    requires_grad: bool,
}

/// An f32 tensor. Cloning is cheap (shared data).
#[derive(Debug, Clone)]
pub struct Tensor {
    inner: Arc<Inner>,
}

impl Tensor {
    /// A constant tensor (no gradient) from data and shape.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return shape_err("from_vec", format!("shape {shape:?} needs {n} elements, got {}", data.len()));
        }
        Ok(Self::new(Arc::new(data), shape.to_vec(), None, false))
    }

    /// A trainable parameter: its gradient is computed whenever a taped computation uses it.
    pub fn param(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        Ok(Self::from_vec(data, shape)?.requiring_grad())
    }

    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, 0.0)
    }

    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, 1.0)
    }

    pub fn full(shape: &[usize], value: f32) -> Self {
        Self::new(Arc::new(vec![value; shape.iter().product()]), shape.to_vec(), None, false)
    }

    /// A 0-d tensor.
    pub fn scalar(value: f32) -> Self {
        Self::new(Arc::new(vec![value]), vec![], None, false)
    }

    /// Creates a tensor on `device` (fails cleanly for devices without a backend).
    pub fn from_vec_on(data: Vec<f32>, shape: &[usize], device: Device) -> Result<Self> {
        device.ensure_available()?;
        Self::from_vec(data, shape)
    }

    pub(crate) fn new(data: Arc<Vec<f32>>, shape: Vec<usize>, tape: Option<Tape>, requires_grad: bool) -> Self {
        Self { inner: Arc::new(Inner { id: TensorId::fresh(), shape, data, tape, requires_grad }) }
    }

    /// The same data marked as needing a gradient (a fresh id).
    pub fn requiring_grad(&self) -> Self {
        Self::new(self.inner.data.clone(), self.inner.shape.clone(), self.inner.tape.clone(), true)
    }

    /// The same tensor (same id, so its gradient is found under it) recording every op it flows
    /// through on `tape`.
    ///
    /// Ops record when one of their inputs carries a tape. An op whose inputs are all untraced
    /// parameters (e.g. expanding a class token) records nothing, so trace such a parameter with
    /// [`Tensor::with_tape_of`] the activation it will meet.
    pub fn traced(&self, tape: &Tape) -> Self {
        let i = &self.inner;
        let inner =
            Inner { id: i.id, shape: i.shape.clone(), data: i.data.clone(), tape: Some(tape.clone()), requires_grad: i.requires_grad };
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
        Self::new(self.inner.data.clone(), self.inner.shape.clone(), None, false)
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
        self.inner.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn device(&self) -> Device {
        Device::Cpu
    }

    /// The data, row-major.
    pub fn data(&self) -> &[f32] {
        &self.inner.data
    }

    pub fn to_vec(&self) -> Vec<f32> {
        self.inner.data.to_vec()
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        match self.data() {
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

    /// Runs the tape backwards from this tensor (usually a scalar loss) and returns all gradients.
    pub fn backward(&self) -> Result<Gradients> {
        match self.tape() {
            Some(tape) => tape.backward(self),
            None => shape_err("backward", "the tensor carries no tape: trace the input with `traced(&tape)`"),
        }
    }

    /// Mutates the data in place, keeping the id (optimisers, running statistics). Copies first when
    /// the data is shared, so other holders never see the change.
    pub fn update_data(&mut self, f: impl FnOnce(&mut [f32])) {
        let inner = unique_inner(&mut self.inner);
        f(Arc::make_mut(&mut inner.data).as_mut_slice());
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
    /// carries a tape. `backward` receives the output gradient and the gradient map.
    pub(crate) fn from_op(
        data: Vec<f32>,
        shape: Vec<usize>,
        inputs: &[&Tensor],
        backward: impl FnOnce(&[f32], &mut Gradients) -> Result<()> + Send + 'static,
    ) -> Tensor {
        Self::from_op_shared(Arc::new(data), shape, inputs, backward)
    }

    pub(crate) fn from_op_shared(
        data: Arc<Vec<f32>>,
        shape: Vec<usize>,
        inputs: &[&Tensor],
        backward: impl FnOnce(&[f32], &mut Gradients) -> Result<()> + Send + 'static,
    ) -> Tensor {
        let requires_grad = inputs.iter().any(|t| t.requires_grad());
        let tape = inputs.iter().find_map(|t| t.tape()).cloned();
        match tape {
            Some(tape) if requires_grad => {
                let out = Self::new(data, shape, Some(tape.clone()), true);
                let id = out.id();
                tape.push(Box::new(move |grads: &mut Gradients| match grads.take(id) {
                    Some(g) => backward(&g, grads),
                    None => Ok(()),
                }));
                out
            }
            _ => Self::new(data, shape, None, false),
        }
    }

    pub(crate) fn shared_data(&self) -> Arc<Vec<f32>> {
        self.inner.data.clone()
    }
}

/// `Arc::make_mut` for the tensor's header, which is not `Clone` because the id must stay put.
fn unique_inner(this: &mut Arc<Inner>) -> &mut Inner {
    if Arc::get_mut(this).is_none() {
        let i = &**this;
        *this = Arc::new(Inner {
            id: i.id,
            shape: i.shape.clone(),
            data: i.data.clone(),
            tape: i.tape.clone(),
            requires_grad: i.requires_grad,
        });
    }
    Arc::get_mut(this).expect("a freshly created Arc is unique")
}

//! The tape: a list of backward closures, run in reverse (as dfdx does).
//!
//! A tensor that carries a [`Tape`] records, for every op it flows through, one closure that turns
//! the gradient of the op's output into gradients of its inputs. Parameters do not carry the tape —
//! the input batch does — so one tape per training step records exactly the ops of that step.
//! Gradients are tensors on their tensor's device and in its dtype; nothing leaves the device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::tensor::{Tensor, TensorId};

type BackwardFn = Box<dyn FnOnce(Tensor, &mut Gradients) -> Result<()> + Send>;

/// A shared, append-only list of backward closures.
#[derive(Clone, Default)]
pub struct Tape(Arc<Mutex<Vec<(TensorId, BackwardFn)>>>);

impl std::fmt::Debug for Tape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tape({} ops)", self.len())
    }
}

impl Tape {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of recorded ops.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(TensorId, BackwardFn)>> {
        // A poisoned tape only means a closure panicked earlier; its list is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the backward closure of the op whose output is `output`.
    pub(crate) fn push(&self, output: TensorId, f: BackwardFn) {
        self.lock().push((output, f));
    }

    fn take(&self) -> Vec<(TensorId, BackwardFn)> {
        std::mem::take(&mut *self.lock())
    }

    /// Runs the recorded closures in reverse, seeding the gradient of `output` with `seed`.
    pub(crate) fn backward(&self, output: &Tensor, seed: Tensor) -> Result<Gradients> {
        let mut grads = Gradients::default();
        grads.accumulate(output.id(), seed)?;
        for (id, f) in self.take().into_iter().rev() {
            // An op output's gradient is needed once: take it out, so intermediate gradients are
            // freed as soon as they have been used.
            if let Some(g) = grads.map.remove(&id) {
                f(g, &mut grads)?;
            }
        }
        Ok(grads)
    }
}

/// Gradients by tensor id, as tensors on the device (and in the dtype) of the tensor they belong to.
#[derive(Debug, Default)]
pub struct Gradients {
    map: HashMap<TensorId, Tensor>,
}

impl Gradients {
    /// The gradient of a tensor that required one (a parameter), if it influenced the output.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.map.get(&t.id())
    }

    /// Adds `grad` into the gradient of `id` (copy-on-write: a gradient passed through unchanged by
    /// one op may be shared with another entry).
    pub(crate) fn accumulate(&mut self, id: TensorId, grad: Tensor) -> Result<()> {
        match self.map.get_mut(&id) {
            Some(g) => g.add_assign(&grad),
            None => {
                self.map.insert(id, grad.detach());
                Ok(())
            }
        }
    }
}

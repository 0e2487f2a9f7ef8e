//! The tape: a list of backward closures, run in reverse (as dfdx does).
//!
//! A tensor that carries a [`Tape`] records, for every op it flows through, one closure that turns
//! the gradient of the op's output into gradients of its inputs. Parameters do not carry the tape —
//! the input batch does — so one tape per training step records exactly the ops of that step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::tensor::{Tensor, TensorId};

type BackwardFn = Box<dyn FnOnce(&mut Gradients) -> Result<()> + Send>;

/// A shared, append-only list of backward closures.
#[derive(Clone, Default)]
pub struct Tape(Arc<Mutex<Vec<BackwardFn>>>);

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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<BackwardFn>> {
        // A poisoned tape only means a closure panicked earlier; its list is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, f: BackwardFn) {
        self.lock().push(f);
    }

    fn take(&self) -> Vec<BackwardFn> {
        std::mem::take(&mut *self.lock())
    }

    /// Runs the recorded closures in reverse, seeding the gradient of `output` with ones.
    pub(crate) fn backward(&self, output: &Tensor) -> Result<Gradients> {
        let mut grads = Gradients::default();
        grads.accumulate(output.id(), vec![1.0; output.len()]);
        for f in self.take().into_iter().rev() {
            f(&mut grads)?;
        }
        Ok(grads)
    }
}

/// Gradients by tensor id. Gradients of intermediate tensors are dropped as soon as they are used.
#[derive(Debug, Default)]
pub struct Gradients {
    map: HashMap<TensorId, Vec<f32>>,
}

impl Gradients {
    /// The gradient of a tensor that required one (a parameter), if it influenced the output.
    pub fn get(&self, t: &Tensor) -> Option<&[f32]> {
        self.map.get(&t.id()).map(Vec::as_slice)
    }

    /// Removes and returns a gradient (used for op outputs, whose gradient is needed once).
    pub(crate) fn take(&mut self, id: TensorId) -> Option<Vec<f32>> {
        self.map.remove(&id)
    }

    /// Adds `grad` into the gradient of `id`.
    pub(crate) fn accumulate(&mut self, id: TensorId, grad: Vec<f32>) {
        match self.map.get_mut(&id) {
            Some(g) => {
                use rayon::prelude::*;
                g.par_iter_mut().zip(grad.par_iter()).with_min_len(1 << 15).for_each(|(a, b)| *a += b)
            }
            None => {
                self.map.insert(id, grad);
            }
        }
    }

    /// Global L2 norm over the given tensors' gradients (for clipping and logging).
    pub fn global_norm<'a>(&self, tensors: impl IntoIterator<Item = &'a Tensor>) -> f32 {
        tensors
            .into_iter()
            .filter_map(|t| self.get(t))
            .map(|g| g.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>())
            .sum::<f64>()
            .sqrt() as f32
    }
}

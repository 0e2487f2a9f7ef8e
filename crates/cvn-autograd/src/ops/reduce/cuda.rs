use super::ReduceOps;
use crate::cuda::{arg, entry, CudaDevice, CudaStorage, KArg, Module};
use crate::error::{shape_err, Result};
use crate::shape::{strides, StridedView};
use crate::storage::BackendStorage;

/// Sums shorter than this run one thread per output; longer ones one CTA per output.
const THREAD_PER_OUTPUT_BELOW: usize = 256;

impl ReduceOps for CudaStorage {
    fn sum_to(&self, from: &[usize], to: &[usize], scale: f32) -> Result<Self> {
        if from.len() != to.len() || from.iter().zip(to).any(|(f, t)| *t != *f && *t != 1) || from.iter().product::<usize>() != self.len() {
            return shape_err("sum", format!("cannot sum {from:?} down to {to:?}"));
        }
        let st = strides(from);
        // Output o reads kept(o) + reduced(r): `kept` walks the output dims, `reduced` the rest.
        let kept = StridedView { shape: to.to_vec(), strides: st.clone(), offset: 0 };
        let red_shape: Vec<usize> = from.iter().zip(to).map(|(&f, &t)| if t == f { 1 } else { f }).collect();
        let reduced = StridedView { shape: red_shape, strides: st, offset: 0 };
        let (outputs, count) = (kept.len(), reduced.len());
        let out = self.alloc_like(self.dtype(), outputs)?;
        if outputs == 0 {
            return Ok(out);
        }
        let (kept, reduced) = (arg::view("sum", &kept)?, arg::view("sum", &reduced)?);
        if count < THREAD_PER_OUTPUT_BELOW {
            let name = entry("sum", "sum_to_thread", self.dtype())?;
            let args = [arg::ptr(self), arg::ptr(&out), kept, reduced, arg::n(outputs), arg::n(count), KArg::F32(scale)];
            // SAFETY: the views address `from`'s elements (= self.len(), checked); out holds `outputs`.
            unsafe { self.launch_elementwise(Module::Reduce, &name, outputs, &args) }?;
        } else {
            let name = entry("sum", "sum_to_block", self.dtype())?;
            let args = [arg::ptr(self), arg::ptr(&out), kept, reduced, arg::n(count), KArg::F32(scale)];
            // SAFETY: as above; one CTA per output.
            unsafe { self.dev().launch(Module::Reduce, &name, CudaDevice::rows(outputs, count), &args) }?;
        }
        Ok(out)
    }
}

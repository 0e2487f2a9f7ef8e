use super::{AdamStep, OptimizerOps, SgdStep};
use crate::cuda::{arg, CudaStorage, KArg, Module};
use crate::dtype::DType;
use crate::error::{dtype_err, Result};
use crate::storage::BackendStorage;

fn check(op: &'static str, p: &CudaStorage, others: &[&CudaStorage]) -> Result<()> {
    for s in std::iter::once(&p).chain(others) {
        if s.dtype() != DType::F32 || s.len() != p.len() {
            return dtype_err(op, format!("parameter, gradient and state must be f32 of one length, got {p:?} and {s:?}"));
        }
    }
    Ok(())
}

impl OptimizerOps for CudaStorage {
    fn adamw_step(&mut self, grad: &Self, m: &mut Self, v: &mut Self, h: &AdamStep) -> Result<()> {
        check("AdamW", self, &[grad, m, v])?;
        let AdamStep { lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt } = *h;
        let args = [
            arg::ptr(self),
            arg::ptr(grad),
            arg::ptr(m),
            arg::ptr(v),
            arg::n(self.len()),
            KArg::F32(lr),
            KArg::F32(beta1),
            KArg::F32(beta2),
            KArg::F32(eps),
            KArg::F32(weight_decay),
            KArg::F32(step_size),
            KArg::F32(bias_correction2_sqrt),
        ];
        // SAFETY: four f32 buffers of one length (checked).
        unsafe { self.launch_elementwise(Module::Optim, "adamw_f32", self.len(), &args) }
    }

    fn sgd_step(&mut self, grad: &Self, buf: Option<&mut Self>, h: &SgdStep) -> Result<()> {
        let SgdStep { lr, weight_decay, momentum, first } = *h;
        let (buf_ptr, has_buf) = match &buf {
            Some(b) => {
                check("SGD", self, &[grad, b])?;
                (arg::ptr(b), 1)
            }
            None => {
                check("SGD", self, &[grad])?;
                (KArg::U64(0), 0)
            }
        };
        let args = [
            arg::ptr(self),
            arg::ptr(grad),
            buf_ptr,
            arg::n(self.len()),
            KArg::F32(lr),
            KArg::F32(weight_decay),
            KArg::F32(momentum),
            KArg::I32(first as i32),
            KArg::I32(has_buf),
        ];
        // SAFETY: f32 buffers of one length (checked); buf is only read when present.
        unsafe { self.launch_elementwise(Module::Optim, "sgd_f32", self.len(), &args) }
    }
}

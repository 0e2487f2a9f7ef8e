use super::{BnGeom, NormOps};
use crate::cuda::{arg, entry, CudaDevice, CudaStorage, Grid, KArg, Module, THREADS};
use crate::dtype::DType;
use crate::error::{dtype_err, shape_err, Result};
use crate::ops::reduce::ReduceOps;
use crate::storage::BackendStorage;

/// Rows each CTA of the weight/bias-gradient kernel sums (its partial sums are then reduced).
const ROWS_PER_CHUNK: usize = 64;

fn expect(op: &'static str, what: &str, s: &CudaStorage, len: usize, dtype: DType) -> Result<()> {
    if s.len() != len || s.dtype() != dtype {
        return shape_err(op, format!("{what} should be {len} × {dtype}, got {s:?}"));
    }
    Ok(())
}

/// f32 results stored as `dtype`.
fn as_dtype(s: CudaStorage, dtype: DType) -> Result<CudaStorage> {
    if s.dtype() == dtype {
        Ok(s)
    } else {
        s.cast(dtype)
    }
}

/// `sums[start..start + len]` as its own f32 storage.
fn slice(sums: &CudaStorage, start: usize, len: usize) -> Result<CudaStorage> {
    let mut out = sums.alloc_like(DType::F32, len)?;
    out.copy_range_from(0, sums, start, len)?;
    Ok(out)
}

impl NormOps for CudaStorage {
    fn layer_norm(&self, weight: &Self, bias: &Self, rows: usize, n: usize, eps: f32) -> Result<(Self, Self, Self)> {
        let op = "layer_norm";
        expect(op, "the input", self, rows * n, self.dtype())?;
        expect(op, "the weight", weight, n, self.dtype())?;
        expect(op, "the bias", bias, n, self.dtype())?;
        let y = self.alloc_like(self.dtype(), rows * n)?;
        let (mean, rstd) = (self.alloc_like(DType::F32, rows)?, self.alloc_like(DType::F32, rows)?);
        if rows > 0 {
            let args = [
                arg::ptr(self),
                arg::ptr(weight),
                arg::ptr(bias),
                arg::ptr(&y),
                arg::ptr(&mean),
                arg::ptr(&rstd),
                arg::n(n),
                KArg::F32(eps),
            ];
            // SAFETY: rows·n inputs and outputs, n weights, rows statistics (checked and allocated).
            unsafe { self.dev().launch(Module::Norm, &entry(op, "layer_norm", self.dtype())?, CudaDevice::rows(rows, n), &args) }?;
        }
        Ok((y, mean, rstd))
    }

    fn layer_norm_backward(
        &self,
        weight: &Self,
        mean: &Self,
        rstd: &Self,
        grad: &Self,
        rows: usize,
        n: usize,
        need: [bool; 3],
    ) -> Result<(Option<Self>, Option<Self>, Option<Self>)> {
        let op = "layer_norm";
        expect(op, "the input", self, rows * n, self.dtype())?;
        expect(op, "the gradient", grad, rows * n, self.dtype())?;
        expect(op, "the weight", weight, n, self.dtype())?;
        expect(op, "the mean", mean, rows, DType::F32)?;
        expect(op, "rstd", rstd, rows, DType::F32)?;
        let gx = if need[0] {
            let dx = self.alloc_like(grad.dtype(), rows * n)?;
            if rows > 0 {
                let args = [arg::ptr(self), arg::ptr(weight), arg::ptr(mean), arg::ptr(rstd), arg::ptr(grad), arg::ptr(&dx), arg::n(n)];
                // SAFETY: as in the forward.
                unsafe { self.dev().launch(Module::Norm, &entry(op, "layer_norm_dx", self.dtype())?, CudaDevice::rows(rows, n), &args) }?;
            }
            Some(dx)
        } else {
            None
        };
        if !(need[1] || need[2]) {
            return Ok((gx, None, None));
        }
        let per_chunk = ROWS_PER_CHUNK.max(rows.div_ceil(65_535));
        let chunks = rows.div_ceil(per_chunk).max(1);
        let (mut pw, mut pb) = (self.dev().alloc(DType::F32, chunks * n)?, self.dev().alloc(DType::F32, chunks * n)?);
        if rows == 0 {
            pw.zero()?;
            pb.zero()?;
        } else {
            let grid = Grid { x: n.div_ceil(THREADS as usize) as u32, y: chunks as u32, threads: THREADS, shared: 0 };
            let args = [
                arg::ptr(self),
                arg::ptr(mean),
                arg::ptr(rstd),
                arg::ptr(grad),
                arg::ptr(&pw),
                arg::ptr(&pb),
                arg::n(rows),
                arg::n(n),
                arg::n(per_chunk),
            ];
            // SAFETY: the partial sums hold chunks·n values; the inputs as in the forward.
            unsafe { self.dev().launch(Module::Norm, &entry(op, "layer_norm_wb", self.dtype())?, grid, &args) }?;
        }
        let dtype = weight.dtype();
        let gw = if need[1] { Some(as_dtype(pw.sum_to(&[chunks, n], &[1, n], 1.0)?, dtype)?) } else { None };
        let gb = if need[2] { Some(as_dtype(pb.sum_to(&[chunks, n], &[1, n], 1.0)?, dtype)?) } else { None };
        Ok((gx, gw, gb))
    }

    fn batch_norm_stats(&self, g: BnGeom) -> Result<(Self, Self)> {
        let op = "batch_norm2d";
        expect(op, "the input", self, g.n * g.c * g.hw, self.dtype())?;
        let (mean, var) = (self.alloc_like(DType::F32, g.c)?, self.alloc_like(DType::F32, g.c)?);
        if g.c > 0 {
            let args = [arg::ptr(self), arg::ptr(&mean), arg::ptr(&var), arg::n(g.n), arg::n(g.c), arg::n(g.hw)];
            // SAFETY: N·C·HW inputs, C statistics.
            unsafe { self.dev().launch(Module::Norm, &entry(op, "bn_stats", self.dtype())?, CudaDevice::rows(g.c, g.count()), &args) }?;
        }
        Ok((mean, var))
    }

    fn batch_norm(&self, weight: &Self, bias: &Self, mean: &Self, var: &Self, g: BnGeom, eps: f32) -> Result<Self> {
        let op = "batch_norm2d";
        let total = g.n * g.c * g.hw;
        expect(op, "the input", self, total, self.dtype())?;
        expect(op, "the weight", weight, g.c, self.dtype())?;
        expect(op, "the bias", bias, g.c, self.dtype())?;
        expect(op, "the mean", mean, g.c, DType::F32)?;
        expect(op, "the variance", var, g.c, DType::F32)?;
        let y = self.alloc_like(self.dtype(), total)?;
        let args = [
            arg::ptr(self),
            arg::ptr(weight),
            arg::ptr(bias),
            arg::ptr(mean),
            arg::ptr(var),
            arg::ptr(&y),
            arg::n(g.c),
            arg::n(g.hw),
            arg::n(total),
            KArg::F32(eps),
        ];
        // SAFETY: sizes checked above.
        unsafe { self.launch_elementwise(Module::Norm, &entry(op, "bn_apply", self.dtype())?, total, &args) }?;
        Ok(y)
    }

    fn batch_norm_backward(
        &self,
        weight: &Self,
        mean: &Self,
        var: &Self,
        grad: &Self,
        g: BnGeom,
        eps: f32,
        training: bool,
        need: [bool; 3],
    ) -> Result<(Option<Self>, Option<Self>, Option<Self>)> {
        let op = "batch_norm2d";
        let total = g.n * g.c * g.hw;
        expect(op, "the input", self, total, self.dtype())?;
        expect(op, "the gradient", grad, total, self.dtype())?;
        expect(op, "the weight", weight, g.c, self.dtype())?;
        expect(op, "the mean", mean, g.c, DType::F32)?;
        expect(op, "the variance", var, g.c, DType::F32)?;
        // sums[ch] = Σg, sums[C + ch] = Σg·x̂
        let sums = self.alloc_like(DType::F32, 2 * g.c)?;
        if g.c > 0 {
            let args = [
                arg::ptr(self),
                arg::ptr(grad),
                arg::ptr(mean),
                arg::ptr(var),
                arg::ptr(&sums),
                arg::n(g.n),
                arg::n(g.c),
                arg::n(g.hw),
                KArg::F32(eps),
            ];
            // SAFETY: sizes checked above; 2·C sums.
            unsafe { self.dev().launch(Module::Norm, &entry(op, "bn_sums", self.dtype())?, CudaDevice::rows(g.c, g.count()), &args) }?;
        }
        let gx = if need[0] {
            let dx = self.alloc_like(grad.dtype(), total)?;
            let args = [
                arg::ptr(self),
                arg::ptr(grad),
                arg::ptr(weight),
                arg::ptr(mean),
                arg::ptr(var),
                arg::ptr(&sums),
                arg::ptr(&dx),
                arg::n(g.c),
                arg::n(g.hw),
                arg::n(total),
                KArg::F32(eps),
                KArg::I32(training as i32),
                KArg::F32(g.count() as f32),
            ];
            // SAFETY: as above.
            unsafe { self.launch_elementwise(Module::Norm, &entry(op, "bn_dx", self.dtype())?, total, &args) }?;
            Some(dx)
        } else {
            None
        };
        let dtype = weight.dtype();
        let gw = if need[1] { Some(as_dtype(slice(&sums, g.c, g.c)?, dtype)?) } else { None };
        let gb = if need[2] { Some(as_dtype(slice(&sums, 0, g.c)?, dtype)?) } else { None };
        Ok((gx, gw, gb))
    }

    fn batch_norm_update_running(&mut self, running_var: &mut Self, mean: &Self, var: &Self, count: usize, momentum: f32) -> Result<()> {
        let op = "update_running";
        let c = self.len();
        self.check_float(op)?;
        if running_var.dtype() != self.dtype() {
            return dtype_err(op, format!("running mean {self:?} and variance {running_var:?} differ"));
        }
        expect(op, "the running variance", running_var, c, self.dtype())?;
        expect(op, "the batch mean", mean, c, DType::F32)?;
        expect(op, "the batch variance", var, c, DType::F32)?;
        let unbiased = count as f64 / (count as f64 - 1.0).max(1.0);
        let args =
            [arg::ptr(self), arg::ptr(running_var), arg::ptr(mean), arg::ptr(var), arg::n(c), KArg::F32(momentum), KArg::F64(unbiased)];
        // SAFETY: four buffers of C elements (checked).
        unsafe { self.launch_elementwise(Module::Norm, &entry(op, "bn_running", self.dtype())?, c, &args) }
    }

    fn l2_normalize(&self, rows: usize, n: usize) -> Result<(Self, Self)> {
        let op = "l2_normalize";
        expect(op, "the input", self, rows * n, self.dtype())?;
        let (y, norms) = (self.alloc_like(self.dtype(), rows * n)?, self.alloc_like(DType::F32, rows)?);
        if rows > 0 {
            // SAFETY: rows·n values, rows norms.
            unsafe {
                self.dev().launch(
                    Module::Norm,
                    &entry(op, "l2_normalize", self.dtype())?,
                    CudaDevice::rows(rows, n),
                    &[arg::ptr(self), arg::ptr(&y), arg::ptr(&norms), arg::n(n)],
                )
            }?;
        }
        Ok((y, norms))
    }

    fn l2_normalize_backward(&self, norms: &Self, grad: &Self, rows: usize, n: usize) -> Result<Self> {
        let op = "l2_normalize";
        expect(op, "the output", self, rows * n, self.dtype())?;
        expect(op, "the gradient", grad, rows * n, self.dtype())?;
        expect(op, "the norms", norms, rows, DType::F32)?;
        let dx = self.alloc_like(grad.dtype(), rows * n)?;
        if rows > 0 {
            let args = [arg::ptr(self), arg::ptr(norms), arg::ptr(grad), arg::ptr(&dx), arg::n(n)];
            // SAFETY: sizes checked above.
            unsafe { self.dev().launch(Module::Norm, &entry(op, "l2_normalize_bwd", self.dtype())?, CudaDevice::rows(rows, n), &args) }?;
        }
        Ok(dx)
    }
}

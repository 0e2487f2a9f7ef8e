//! Normalisation: layer norm over the last dimension, batch norm over NCHW channels, L2
//! normalisation of rows. Statistics are f32 whatever the input dtype.

use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{shape_err, Result};
use crate::ops::{check_float, check_same_dtype};
use crate::storage::{dispatch, Storage};
use crate::tensor::Tensor;

mod cpu;
mod cuda;

/// `[N, C, H·W]` of a batch-norm input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BnGeom {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

impl BnGeom {
    /// Values per channel.
    pub(crate) fn count(&self) -> usize {
        self.n * self.hw
    }
}

/// The kernels of this op family (see [`crate::storage`]).
pub(crate) trait NormOps: Sized {
    /// `(y, mean, rstd)` over `rows` rows of `n`; `mean` and `rstd` are f32 `[rows]`.
    fn layer_norm(&self, weight: &Self, bias: &Self, rows: usize, n: usize, eps: f32) -> Result<(Self, Self, Self)>;
    /// `(dx, dweight, dbias)` (those asked for in `need`), `self` being the input.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_backward(
        &self,
        weight: &Self,
        mean: &Self,
        rstd: &Self,
        grad: &Self,
        rows: usize,
        n: usize,
        need: [bool; 3],
    ) -> Result<(Option<Self>, Option<Self>, Option<Self>)>;
    /// Per channel: the mean and the biased variance (f32 `[C]`, accumulated in f64).
    fn batch_norm_stats(&self, g: BnGeom) -> Result<(Self, Self)>;
    /// `(x − mean)·rsqrt(var + eps)·weight + bias` per channel.
    fn batch_norm(&self, weight: &Self, bias: &Self, mean: &Self, var: &Self, g: BnGeom, eps: f32) -> Result<Self>;
    /// `(dx, dweight, dbias)`; with `training` the statistics are the batch's (their gradient flows).
    #[allow(clippy::too_many_arguments)]
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
    ) -> Result<(Option<Self>, Option<Self>, Option<Self>)>;
    /// PyTorch's running update, `self` being the running mean:
    /// `running = (1 − momentum)·running + momentum·batch`, the variance made unbiased
    /// (`var·count/(count − 1)`) first.
    fn batch_norm_update_running(&mut self, running_var: &mut Self, mean: &Self, var: &Self, count: usize, momentum: f32) -> Result<()>;
    /// `(y, norms)`: rows divided by their L2 norm (at least 1e-12); `norms` f32 `[rows]`.
    fn l2_normalize(&self, rows: usize, n: usize) -> Result<(Self, Self)>;
    /// `dx = (g − y·(g·y)) / ‖x‖`, `self` being `y`.
    fn l2_normalize_backward(&self, norms: &Self, grad: &Self, rows: usize, n: usize) -> Result<Self>;
}

fn last_dim(t: &Tensor, op: &'static str) -> Result<usize> {
    match t.shape().last() {
        Some(&n) if n > 0 => Ok(n),
        _ => shape_err(op, format!("needs a non-empty last dimension, got {:?}", t.shape())),
    }
}

impl Tensor {
    /// Layer norm over the last dimension with affine `weight`/`bias` of that size (as `nn.LayerNorm`).
    pub fn layer_norm(&self, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
        let n = *self.shape().last().unwrap_or(&0);
        if n == 0 || weight.shape() != [n] || bias.shape() != [n] {
            return shape_err(
                "layer_norm",
                format!("input {:?} needs weight and bias [{n}], got {:?} and {:?}", self.shape(), weight.shape(), bias.shape()),
            );
        }
        check_same_dtype("layer_norm", &[self, weight, bias])?;
        let rows = self.len() / n;
        let (y, mean, rstd): (Storage, Storage, Storage) =
            dispatch!("layer_norm", (self.storage(), weight.storage(), bias.storage()) => |x, w, b| x.layer_norm(w, b, rows, n, eps))?;
        let (x_in, w_in, b_in) = (self.clone(), weight.clone(), bias.clone());
        Ok(Tensor::from_op(y, self.shape().to_vec(), &[self, weight, bias], move |g, grads| {
            let need = [x_in.requires_grad(), w_in.requires_grad(), b_in.requires_grad()];
            let (gx, gw, gb): (Option<Storage>, Option<Storage>, Option<Storage>) = dispatch!(
                "layer_norm",
                (x_in.storage(), w_in.storage(), &mean, &rstd, g.storage()) => |x, w, m, r, gs| x.layer_norm_backward(w, m, r, gs, rows, n, need)
            )?;
            for (t, gt) in [(&x_in, gx), (&w_in, gw), (&b_in, gb)] {
                if let Some(gt) = gt {
                    grads.accumulate(t.id(), Tensor::from_storage(gt, t.shape().to_vec()))?;
                }
            }
            Ok(())
        }))
    }

    /// 2-D batch norm over `[N, C, H, W]` (as `nn.BatchNorm2d`).
    ///
    /// `Statistics::Batch` normalises with the batch's statistics and returns them (to fold into
    /// running estimates with [`BatchStats::update_running`]); `Statistics::Running` uses the given
    /// running mean/var (evaluation).
    pub fn batch_norm2d(&self, weight: &Tensor, bias: &Tensor, stats: Statistics<'_>, eps: f32) -> Result<(Tensor, Option<BatchStats>)> {
        let [n, c, h, w] = *self.shape() else {
            return shape_err("batch_norm2d", format!("needs [N, C, H, W], got {:?}", self.shape()));
        };
        for (name, t) in [("weight", weight), ("bias", bias)] {
            if t.shape() != [c] {
                return shape_err("batch_norm2d", format!("{name} {:?} should be [{c}]", t.shape()));
            }
        }
        check_same_dtype("batch_norm2d", &[self, weight, bias])?;
        let g = BnGeom { n, c, hw: h * w };
        let (mean, var, batch) = match stats {
            Statistics::Running { mean, var } => {
                if mean.shape() != [c] || var.shape() != [c] {
                    return shape_err("batch_norm2d", format!("running stats {:?}/{:?} should be [{c}]", mean.shape(), var.shape()));
                }
                for t in [mean, var] {
                    check_float("batch_norm2d", t)?;
                }
                (Arc::new(mean.storage().cast(DType::F32)?), Arc::new(var.storage().cast(DType::F32)?), None)
            }
            Statistics::Batch => {
                if g.count() < 2 {
                    return shape_err("batch_norm2d", "training needs more than one value per channel");
                }
                let (mean, var): (Storage, Storage) = dispatch!("batch_norm2d", (self.storage()) => |x| x.batch_norm_stats(g))?;
                let (mean, var) = (Arc::new(mean), Arc::new(var));
                let stats = BatchStats {
                    mean: Tensor::from_storage_arc(mean.clone(), vec![c]),
                    var: Tensor::from_storage_arc(var.clone(), vec![c]),
                    count: g.count(),
                };
                (mean, var, Some(stats))
            }
        };
        let out: Storage = dispatch!(
            "batch_norm2d",
            (self.storage(), weight.storage(), bias.storage(), &*mean, &*var) => |x, wt, bs, m, v| x.batch_norm(wt, bs, m, v, g, eps)
        )?;
        let training = batch.is_some();
        let (x_in, w_in, b_in) = (self.clone(), weight.clone(), bias.clone());
        let y = Tensor::from_op(out, self.shape().to_vec(), &[self, weight, bias], move |grad, grads| {
            let need = [x_in.requires_grad(), w_in.requires_grad(), b_in.requires_grad()];
            let (gx, gw, gb): (Option<Storage>, Option<Storage>, Option<Storage>) = dispatch!(
                "batch_norm2d",
                (x_in.storage(), w_in.storage(), &*mean, &*var, grad.storage()) => |x, wt, m, v, gs| x.batch_norm_backward(wt, m, v, gs, g, eps, training, need)
            )?;
            for (t, gt) in [(&x_in, gx), (&w_in, gw), (&b_in, gb)] {
                if let Some(gt) = gt {
                    grads.accumulate(t.id(), Tensor::from_storage(gt, t.shape().to_vec()))?;
                }
            }
            Ok(())
        });
        Ok((y, batch))
    }

    /// Divides each row (last dimension) by its L2 norm (CLIP embeddings).
    pub fn l2_normalize(&self) -> Result<Tensor> {
        let n = last_dim(self, "l2_normalize")?;
        check_float("l2_normalize", self)?;
        let rows = self.len() / n;
        let (y, norms): (Storage, Storage) = dispatch!("l2_normalize", (self.storage()) => |x| x.l2_normalize(rows, n))?;
        let y = Arc::new(y);
        let (x, y_saved) = (self.clone(), y.clone());
        Ok(Tensor::from_op_shared(y, self.shape().to_vec(), &[self], move |g, grads| {
            let gx: Storage =
                dispatch!("l2_normalize", (&*y_saved, &norms, g.storage()) => |ys, ns, gs| ys.l2_normalize_backward(ns, gs, rows, n))?;
            grads.accumulate(x.id(), Tensor::from_storage(gx, x.shape().to_vec()))
        }))
    }
}

/// Which statistics batch norm normalises with.
#[derive(Debug, Clone, Copy)]
pub enum Statistics<'a> {
    /// The current batch's (training).
    Batch,
    /// Running estimates (evaluation).
    Running { mean: &'a Tensor, var: &'a Tensor },
}

/// A batch's per-channel statistics (f32 tensors `[C]` on the batch's device), to fold into
/// running estimates.
#[derive(Debug, Clone)]
pub struct BatchStats {
    pub mean: Tensor,
    /// The biased variance (what the batch was normalised with).
    pub var: Tensor,
    /// Values per channel.
    pub count: usize,
}

impl BatchStats {
    /// PyTorch's update: `running = (1 − momentum)·running + momentum·batch`, with the unbiased
    /// batch variance. Runs on the device; the tensors keep their ids.
    pub fn update_running(&self, running_mean: &mut Tensor, running_var: &mut Tensor, momentum: f32) -> Result<()> {
        let c = self.mean.len();
        if running_mean.shape() != [c] || running_var.shape() != [c] {
            return shape_err(
                "update_running",
                format!("running stats {:?}/{:?} should be [{c}]", running_mean.shape(), running_var.shape()),
            );
        }
        let (mean, var) = (self.mean.shared_storage(), self.var.shared_storage());
        let count = self.count;
        let rv = running_var.storage_mut()?;
        let rm = running_mean.storage_mut()?;
        match (rm, rv, &*mean, &*var) {
            (Storage::Cpu(rm), Storage::Cpu(rv), Storage::Cpu(m), Storage::Cpu(v)) => {
                rm.batch_norm_update_running(rv, m, v, count, momentum)
            }
            (Storage::Cuda(rm), Storage::Cuda(rv), Storage::Cuda(m), Storage::Cuda(v)) => {
                rm.batch_norm_update_running(rv, m, v, count, momentum)
            }
            _ => Err(crate::storage::mixed_devices("update_running")),
        }
    }
}

//! Normalisation: layer norm over the last dimension, batch norm over NCHW channels, L2
//! normalisation of rows. Statistics are f32 whatever the input dtype. Batch norm can also
//! normalise with statistics summed over the replicas of a data-parallel job
//! ([`Statistics::Synced`], PyTorch's `SyncBatchNorm`).

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
    /// running mean/var (evaluation). `Statistics::Synced` normalises with the statistics of the
    /// batches of all replicas together (one [`CrossReplicaSum`] in the forward, one in the
    /// backward), as `nn.SyncBatchNorm`: see [`Statistics::Synced`].
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
        let (mean, var, batch, synced) = match stats {
            Statistics::Running { mean, var } => {
                if mean.shape() != [c] || var.shape() != [c] {
                    return shape_err("batch_norm2d", format!("running stats {:?}/{:?} should be [{c}]", mean.shape(), var.shape()));
                }
                for t in [mean, var] {
                    check_float("batch_norm2d", t)?;
                }
                (Arc::new(mean.storage().cast(DType::F32)?), Arc::new(var.storage().cast(DType::F32)?), None, None)
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
                (mean, var, Some(stats), None)
            }
            Statistics::Synced(replicas) => {
                let (mean, var): (Storage, Storage) = dispatch!("batch_norm2d", (self.storage()) => |x| x.batch_norm_stats(g))?;
                let (mean, var, count) = synced_stats(replicas.as_ref(), &mean, &var, g)?;
                let dev = self.device();
                let (mean, var) = (host_storage(mean, DType::F32, &dev)?, host_storage(var, DType::F32, &dev)?);
                let stats = BatchStats {
                    mean: Tensor::from_storage_arc(mean.clone(), vec![c]),
                    var: Tensor::from_storage_arc(var.clone(), vec![c]),
                    count,
                };
                (mean, var, Some(stats), Some((replicas.clone(), count)))
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
            let (gx, gw, gb) = match &synced {
                None => dispatch!(
                    "batch_norm2d",
                    (x_in.storage(), w_in.storage(), &*mean, &*var, grad.storage()) => |x, wt, m, v, gs| x.batch_norm_backward(wt, m, v, gs, g, eps, training, need)
                )?,
                Some((replicas, count)) => synced_backward(replicas.as_ref(), *count, &x_in, &w_in, &mean, &var, &grad, g, eps, need)?,
            };
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

/// Element-wise sums over the replicas of a data-parallel job (an all-reduce), for
/// [`Statistics::Synced`]. Implemented over MPI/NCCL by `cvn-dist`; this crate knows no engine.
pub trait CrossReplicaSum: Send + Sync {
    /// Replaces `values` by their element-wise sum over all replicas. Every replica calls it the
    /// same number of times with the same length, and all get the same result.
    fn sum_in_place(&self, values: &mut [f64]) -> Result<()>;
}

/// Which statistics batch norm normalises with.
#[derive(Clone, Copy)]
pub enum Statistics<'a> {
    /// The current batch's (training).
    Batch,
    /// Running estimates (evaluation).
    Running { mean: &'a Tensor, var: &'a Tensor },
    /// The batches of all replicas together (training, `nn.SyncBatchNorm`): each replica's
    /// per-channel count, `count·mean`, `count·var` and `count·mean²` (from its f32 statistics,
    /// in f64) are summed in one call, the global mean and biased variance normalise, and the
    /// returned [`BatchStats`] carry them with the global count (so the running variance is the
    /// unbiased global one). The backward sums each replica's per-channel `Σdy` and `Σdy·x̂` in
    /// one more call, so `dx` is the exact gradient of the loss summed over all replicas through
    /// the global statistics; `dweight`/`dbias` stay this replica's own (the data-parallel
    /// gradient average combines them like any other gradient). On CUDA the kernels are the same
    /// as for `Batch`; only the `[C]`-sized sums travel through host memory.
    Synced(&'a Arc<dyn CrossReplicaSum>),
}

impl std::fmt::Debug for Statistics<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Batch => f.write_str("Batch"),
            Self::Running { mean, var } => f.debug_struct("Running").field("mean", mean).field("var", var).finish(),
            Self::Synced(_) => f.write_str("Synced"),
        }
    }
}

/// `values` (f32 on the host) as a `dtype` storage on `device`.
fn host_storage(values: Vec<f32>, dtype: DType, device: &crate::device::Device) -> Result<Arc<Storage>> {
    let n = values.len();
    let t = Tensor::from_vec(values, &[n])?.to_device(device)?;
    Ok(Arc::new(t.storage().cast(dtype)?))
}

/// The global per-channel mean and biased variance and the global count from this replica's
/// `mean`/`var` over `g.count()` values. The within-replica variances are summed apart from the
/// spread of the replica means (`Σn·mean²/N − mean²`), so the f32 variances never go through an
/// `E[x²] − mean²` cancellation.
fn synced_stats(replicas: &dyn CrossReplicaSum, mean: &Storage, var: &Storage, g: BnGeom) -> Result<(Vec<f32>, Vec<f32>, usize)> {
    let c = g.c;
    let (m, v) = (mean.to_f32_vec()?, var.to_f32_vec()?);
    let n = g.count() as f64;
    let mut sums = vec![0.0f64; 1 + 3 * c];
    sums[0] = n;
    if g.count() > 0 {
        for ch in 0..c {
            let (m, v) = (m[ch] as f64, v[ch] as f64);
            sums[1 + ch] = n * m;
            sums[1 + c + ch] = n * v;
            sums[1 + 2 * c + ch] = n * m * m;
        }
    }
    replicas.sum_in_place(&mut sums)?;
    let total = sums[0];
    if !(total >= 2.0 && total.fract() == 0.0) {
        return shape_err("batch_norm2d", format!("synced training needs more than one value per channel over all replicas, got {total}"));
    }
    let mean: Vec<f64> = (0..c).map(|ch| sums[1 + ch] / total).collect();
    let var = (0..c).map(|ch| (sums[1 + c + ch] / total + (sums[1 + 2 * c + ch] / total - mean[ch] * mean[ch]).max(0.0)) as f32).collect();
    Ok((mean.into_iter().map(|m| m as f32).collect(), var, total as usize))
}

/// The backward of [`Statistics::Synced`]. The kernels' evaluation-mode backward gives
/// `k·dy` (`k = weight·rstd`) and this replica's `Σdy·x̂` (dweight) and `Σdy` (dbias); with their
/// sums over the replicas `S₁ = ΣΣdy`, `S₂ = ΣΣdy·x̂` the exact
/// `dx = k·(dy − S₁/N − x̂·S₂/N)` is `k·dy` plus the per-channel affine `β·x + α`,
/// `β = −k·rstd·S₂/N`, `α = −k·S₁/N − β·mean`, which the forward kernel evaluates (mean 0,
/// variance 1, eps 0). The sums are taken even when `dx` is not needed, so every replica makes
/// the same calls.
#[allow(clippy::too_many_arguments)]
fn synced_backward(
    replicas: &dyn CrossReplicaSum,
    count: usize,
    x: &Tensor,
    weight: &Tensor,
    mean: &Storage,
    var: &Storage,
    grad: &Tensor,
    g: BnGeom,
    eps: f32,
    need: [bool; 3],
) -> Result<(Option<Storage>, Option<Storage>, Option<Storage>)> {
    let (gx, gw, gb): (Option<Storage>, Option<Storage>, Option<Storage>) = dispatch!(
        "batch_norm2d",
        (x.storage(), weight.storage(), mean, var, grad.storage()) => |xs, wt, m, v, gs| xs.batch_norm_backward(wt, m, v, gs, g, eps, false, [need[0], true, true])
    )?;
    let missing =
        || crate::error::Error::Shape { op: "batch_norm2d", detail: "the backward kernel returned no weight/bias gradient".into() };
    let (gw, gb) = (gw.ok_or_else(missing)?, gb.ok_or_else(missing)?);
    let c = g.c;
    let mut sums: Vec<f64> = gb.to_f32_vec()?.iter().chain(&gw.to_f32_vec()?).map(|v| *v as f64).collect();
    replicas.sum_in_place(&mut sums)?;
    let gx = match gx {
        Some(mut gx) => {
            let (w, m, v) = (weight.storage().to_f32_vec()?, mean.to_f32_vec()?, var.to_f32_vec()?);
            let n = count as f64;
            let (mut beta, mut alpha) = (vec![0.0f32; c], vec![0.0f32; c]);
            for ch in 0..c {
                let rstd = 1.0 / (v[ch] as f64 + eps as f64).sqrt();
                let k = w[ch] as f64 * rstd;
                let b = -k * rstd * sums[c + ch] / n;
                beta[ch] = b as f32;
                alpha[ch] = (-k * sums[ch] / n - b * m[ch] as f64) as f32;
            }
            let dev = x.device();
            let (beta, alpha) = (host_storage(beta, weight.dtype(), &dev)?, host_storage(alpha, weight.dtype(), &dev)?);
            let (zeros, ones) = (host_storage(vec![0.0; c], DType::F32, &dev)?, host_storage(vec![1.0; c], DType::F32, &dev)?);
            let correction: Storage = dispatch!(
                "batch_norm2d",
                (x.storage(), &*beta, &*alpha, &*zeros, &*ones) => |xs, bt, al, z, o| xs.batch_norm(bt, al, z, o, g, 0.0)
            )?;
            gx.add_assign(&correction)?;
            Some(gx)
        }
        None => None,
    };
    Ok((gx, need[1].then_some(gw), need[2].then_some(gb)))
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

//! The state of one forward pass: how LWTA picks winners, where its noise comes from, the autocast
//! dtype, which layer outputs to record (taps) and whether to count active units (sparsity).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cvn_autograd::{CrossReplicaSum, DType, LwtaMode, Noise, Tensor};

use crate::error::Result;

/// Noise slots per step: the Philox offset of a stochastic layer is `step · NOISE_SLOTS + slot`,
/// `slot` being fixed per layer when the model is built, so every layer and every step (or
/// stochastic evaluation pass) draws fresh noise and a run is reproducible from its seed.
pub const NOISE_SLOTS: u64 = 1 << 16;

/// Offset stride between the ranks of a data-parallel run: rank `r` adds `r · RANK_NOISE_STRIDE`
/// to every offset, so each rank draws its own noise for its own samples while rank 0 draws what a
/// single process draws. Steps stay below it for 2^32 steps (`step · NOISE_SLOTS < 2^48`).
pub const RANK_NOISE_STRIDE: u64 = 1 << 48;

/// A recorded layer output (on the model's device; copy it to the host with `to_vec`).
#[derive(Debug, Clone)]
pub struct Tap {
    pub output: Tensor,
    /// For LWTA layers, the winner index (0..U) of every competition block (a `u8` tensor, see
    /// `lwta_kernels`).
    pub winners: Option<Tensor>,
}

/// Active (non-zero) outputs of one activation layer, summed over the passes that counted them,
/// and for LWTA layers in stochastic evaluation how many competitions the noise left to the
/// strongest unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    pub active: u64,
    pub total: u64,
    /// Competition blocks counted in sampled passes.
    pub competitions: u64,
    /// Of those, the blocks whose sampled winner is the argmax winner.
    pub argmax_won: u64,
}

impl Activity {
    /// Fraction of outputs that are non-zero (1/U for an LWTA layer).
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.active as f64 / self.total as f64
        }
    }

    /// Fraction of sampled competitions won by the unit with the largest response: 1/U when the
    /// noise decides them all, 1 when the responses do. `None` without sampled passes.
    pub fn argmax_win_rate(&self) -> Option<f64> {
        (self.competitions > 0).then(|| self.argmax_won as f64 / self.competitions as f64)
    }

    /// Adds the counts of another pass (or batch) over the same layer.
    pub fn add(&mut self, other: &Activity) {
        self.active += other.active;
        self.total += other.total;
        self.competitions += other.competitions;
        self.argmax_won += other.argmax_won;
    }
}

/// Active-output and argmax-win counts of one activation layer, on the device where they were
/// counted (read with [`ActivityCounters::read`]).
#[derive(Debug, Clone)]
struct LayerCounters {
    active: Tensor,
    total: u64,
    competitions: u64,
    argmax_won: Option<Tensor>,
}

/// Device-side [`Activity`] counts per activation layer, accumulated over the passes that carry them
/// ([`Forward::with_counters`]); nothing is copied to the host until [`ActivityCounters::read`].
#[derive(Debug, Clone, Default)]
pub struct ActivityCounters {
    layers: BTreeMap<String, LayerCounters>,
}

impl ActivityCounters {
    /// The counts, copied to the host.
    pub fn read(&self) -> Result<BTreeMap<String, Activity>> {
        let count = |t: &Tensor| -> Result<u64> { Ok(t.to_vec_u64()?[0]) };
        self.layers
            .iter()
            .map(|(layer, c)| {
                let argmax_won = c.argmax_won.as_ref().map(count).transpose()?.unwrap_or(0);
                Ok((layer.clone(), Activity { active: count(&c.active)?, total: c.total, competitions: c.competitions, argmax_won }))
            })
            .collect()
    }

    fn layer(&mut self, layer: &str, like: &Tensor) -> Result<&mut LayerCounters> {
        if !self.layers.contains_key(layer) {
            let fresh = LayerCounters { active: Tensor::counter(&like.device())?, total: 0, competitions: 0, argmax_won: None };
            self.layers.insert(layer.to_string(), fresh);
        }
        Ok(self.layers.get_mut(layer).expect("inserted above"))
    }
}

/// Settings and recordings of a forward pass.
#[derive(Debug, Clone)]
pub struct Forward {
    /// `Train`: batch statistics (and running-stat updates) in BatchNorm (the global batch's with
    /// [`Forward::with_synced_batch_norm`]), dropout, LWTA sampled at
    /// τ train. `Sample`: evaluation with LWTA sampled at τ test. `Deterministic`: evaluation with
    /// argmax winners.
    pub mode: LwtaMode,
    pub seed: u64,
    /// Training step, or stochastic evaluation pass: selects fresh noise (see [`NOISE_SLOTS`]).
    pub step: u64,
    /// Rank of a data-parallel training process (see [`RANK_NOISE_STRIDE`]); 0 otherwise.
    pub rank: u64,
    requested: BTreeSet<String>,
    taps: BTreeMap<String, Tap>,
    sparsity: Option<ActivityCounters>,
    recalibrating: bool,
    autocast: Option<DType>,
    synced_bn: Option<SyncedBatchNorm>,
}

/// The cross-replica sum of a pass whose BatchNorm layers are synchronised
/// ([`Forward::with_synced_batch_norm`]); a type of its own only to give `Forward` its `Debug`.
#[derive(Clone)]
struct SyncedBatchNorm(Arc<dyn CrossReplicaSum>);

impl std::fmt::Debug for SyncedBatchNorm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncedBatchNorm")
    }
}

impl Forward {
    pub fn new(mode: LwtaMode, seed: u64, step: u64) -> Self {
        Self {
            mode,
            seed,
            step,
            rank: 0,
            requested: BTreeSet::new(),
            taps: BTreeMap::new(),
            sparsity: None,
            recalibrating: false,
            autocast: None,
            synced_bn: None,
        }
    }

    pub fn train(seed: u64, step: u64) -> Self {
        Self::new(LwtaMode::Train, seed, step)
    }

    /// Noise of data-parallel rank `rank` (see [`RANK_NOISE_STRIDE`]).
    pub fn on_rank(mut self, rank: usize) -> Self {
        self.rank = rank as u64;
        self
    }

    pub fn deterministic() -> Self {
        Self::new(LwtaMode::Deterministic, 0, 0)
    }

    /// Records the outputs of these layers (names as [`crate::Model::layer_names`] lists them).
    pub fn with_taps<S: Into<String>>(mut self, layers: impl IntoIterator<Item = S>) -> Self {
        self.requested.extend(layers.into_iter().map(Into::into));
        self
    }

    /// Counts active outputs of every activation layer.
    pub fn with_sparsity(self) -> Self {
        self.with_counters(ActivityCounters::default())
    }

    /// Counts active outputs into `counters` (carried from earlier passes; take them back with
    /// [`Forward::take_counters`]).
    pub fn with_counters(mut self, counters: ActivityCounters) -> Self {
        self.sparsity = Some(counters);
        self
    }

    /// Mixed precision (PyTorch's autocast): matrix products and convolutions run in `dtype`
    /// (bf16) over f32 master weights; normalisations, softmax and the loss stay f32.
    pub fn with_autocast(mut self, dtype: DType) -> Self {
        self.autocast = Some(dtype);
        self
    }

    /// The autocast dtype of this pass, if any.
    pub fn autocast(&self) -> Option<DType> {
        self.autocast
    }

    pub fn training(&self) -> bool {
        self.mode == LwtaMode::Train
    }

    /// BatchNorm normalises with batch statistics and averages them into its running ones,
    /// whatever the LWTA mode (see [`crate::Model::recalibrate_batch_norm`]).
    pub fn recalibrating_batch_norm(mut self) -> Self {
        self.recalibrating = true;
        self
    }

    pub(crate) fn recalibrating(&self) -> bool {
        self.recalibrating
    }

    /// Synchronised BatchNorm (PyTorch's `SyncBatchNorm`) for a training pass of one replica of a
    /// data-parallel job: every BatchNorm layer normalises with the statistics of all replicas'
    /// batches together, summed by `replicas`, and folds those global statistics into its running
    /// ones, so every replica's running statistics are the same. Evaluation and recalibration
    /// passes ignore it. Every replica must run the same layers in the same order (one sum per
    /// BatchNorm layer forward and one backward).
    pub fn with_synced_batch_norm(mut self, replicas: Arc<dyn CrossReplicaSum>) -> Self {
        self.synced_bn = Some(SyncedBatchNorm(replicas));
        self
    }

    /// The cross-replica sum of synchronised BatchNorm, if this pass has one.
    pub(crate) fn synced_batch_norm(&self) -> Option<&Arc<dyn CrossReplicaSum>> {
        self.synced_bn.as_ref().map(|s| &s.0)
    }

    pub fn requested(&self) -> &BTreeSet<String> {
        &self.requested
    }

    /// The recordings of the last pass(es), by layer name.
    pub fn taps(&self) -> &BTreeMap<String, Tap> {
        &self.taps
    }

    /// Takes the recordings out, leaving the requests in place for the next batch.
    pub fn take_taps(&mut self) -> BTreeMap<String, Tap> {
        std::mem::take(&mut self.taps)
    }

    /// Active-unit counts per activation layer (copied to the host), when enabled with
    /// [`Forward::with_sparsity`] or [`Forward::with_counters`].
    pub fn sparsity(&self) -> Result<Option<BTreeMap<String, Activity>>> {
        self.sparsity.as_ref().map(ActivityCounters::read).transpose()
    }

    /// The device-side counters, to carry into the next pass.
    pub fn take_counters(&mut self) -> Option<ActivityCounters> {
        self.sparsity.take()
    }

    pub(crate) fn wants(&self, layer: &str) -> bool {
        self.requested.contains(layer)
    }

    pub(crate) fn record(&mut self, layer: &str, output: &Tensor) {
        if self.wants(layer) {
            self.taps.insert(layer.to_string(), Tap { output: output.clone(), winners: None });
        }
    }

    pub(crate) fn record_winners(&mut self, layer: &str, output: &Tensor, winners: Tensor) {
        if self.wants(layer) {
            self.taps.insert(layer.to_string(), Tap { output: output.clone(), winners: Some(winners) });
        }
    }

    pub(crate) fn count_activity(&mut self, layer: &str, output: &Tensor) -> Result<()> {
        if let Some(counters) = &mut self.sparsity {
            let entry = counters.layer(layer, output)?;
            output.count_nonzero_into(&mut entry.active)?;
            entry.total += output.len() as u64;
        }
        Ok(())
    }

    /// Whether this pass counts activity (see [`Forward::with_sparsity`]).
    pub(crate) fn counting(&self) -> bool {
        self.sparsity.is_some()
    }

    /// Counts how many of a sampled LWTA layer's competitions the argmax unit won.
    pub(crate) fn count_argmax_wins(&mut self, layer: &str, sampled: &Tensor, argmax: &Tensor) -> Result<()> {
        if let Some(counters) = &mut self.sparsity {
            let entry = counters.layer(layer, sampled)?;
            entry.competitions += sampled.len() as u64;
            let won = match &mut entry.argmax_won {
                Some(won) => won,
                None => entry.argmax_won.insert(Tensor::counter(&sampled.device())?),
            };
            sampled.count_equal_into(argmax, won)?;
        }
        Ok(())
    }

    /// The Philox offset of the stochastic layer with noise slot `slot` in this pass.
    pub(crate) fn noise_offset(&self, slot: u64) -> u64 {
        self.rank.wrapping_mul(RANK_NOISE_STRIDE).wrapping_add(self.step.wrapping_mul(NOISE_SLOTS)).wrapping_add(slot)
    }

    /// LWTA noise of the layer with noise slot `slot`: none in deterministic mode.
    pub(crate) fn noise(&self, slot: u64) -> Noise<'static> {
        match self.mode {
            LwtaMode::Deterministic => Noise::None,
            LwtaMode::Train | LwtaMode::Sample => Noise::Philox { seed: self.seed, offset: self.noise_offset(slot) },
        }
    }
}

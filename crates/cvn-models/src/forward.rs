//! The state of one forward pass: how LWTA picks winners, where its noise comes from, which layer
//! outputs to record (taps) and whether to count active units (sparsity).

use std::collections::{BTreeMap, BTreeSet};

use cvn_autograd::{LwtaMode, Noise, Tensor};

/// Noise slots per step: the Philox offset of a stochastic layer is `step · NOISE_SLOTS + slot`,
/// `slot` being fixed per layer when the model is built, so every layer and every step (or
/// stochastic evaluation pass) draws fresh noise and a run is reproducible from its seed.
pub const NOISE_SLOTS: u64 = 1 << 16;

/// A recorded layer output.
#[derive(Debug, Clone)]
pub struct Tap {
    pub output: Tensor,
    /// For LWTA layers, the winner index (0..U) of every competition block (see `lwta_kernels`).
    pub winners: Option<Vec<u8>>,
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

/// Settings and recordings of a forward pass. Reuse one across batches to accumulate sparsity.
#[derive(Debug, Clone)]
pub struct Forward {
    /// `Train`: batch statistics (and running-stat updates) in BatchNorm, dropout, LWTA sampled at
    /// τ train. `Sample`: evaluation with LWTA sampled at τ test. `Deterministic`: evaluation with
    /// argmax winners.
    pub mode: LwtaMode,
    pub seed: u64,
    /// Training step, or stochastic evaluation pass: selects fresh noise (see [`NOISE_SLOTS`]).
    pub step: u64,
    requested: BTreeSet<String>,
    taps: BTreeMap<String, Tap>,
    sparsity: Option<BTreeMap<String, Activity>>,
    recalibrating: bool,
}

impl Forward {
    pub fn new(mode: LwtaMode, seed: u64, step: u64) -> Self {
        Self { mode, seed, step, requested: BTreeSet::new(), taps: BTreeMap::new(), sparsity: None, recalibrating: false }
    }

    pub fn train(seed: u64, step: u64) -> Self {
        Self::new(LwtaMode::Train, seed, step)
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
    pub fn with_sparsity(mut self) -> Self {
        self.sparsity = Some(BTreeMap::new());
        self
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

    /// Active-unit counts per activation layer, when enabled with [`Forward::with_sparsity`].
    pub fn sparsity(&self) -> Option<&BTreeMap<String, Activity>> {
        self.sparsity.as_ref()
    }

    pub(crate) fn wants(&self, layer: &str) -> bool {
        self.requested.contains(layer)
    }

    pub(crate) fn record(&mut self, layer: &str, output: &Tensor) {
        if self.wants(layer) {
            self.taps.insert(layer.to_string(), Tap { output: output.clone(), winners: None });
        }
    }

    pub(crate) fn record_winners(&mut self, layer: &str, output: &Tensor, winners: Vec<u8>) {
        if self.wants(layer) {
            self.taps.insert(layer.to_string(), Tap { output: output.clone(), winners: Some(winners) });
        }
    }

    pub(crate) fn count_activity(&mut self, layer: &str, output: &Tensor) {
        if let Some(map) = &mut self.sparsity {
            let active = output.data().iter().filter(|v| **v != 0.0).count() as u64;
            let entry = map.entry(layer.to_string()).or_default();
            entry.active += active;
            entry.total += output.len() as u64;
        }
    }

    /// Whether this pass counts activity (see [`Forward::with_sparsity`]).
    pub(crate) fn counting(&self) -> bool {
        self.sparsity.is_some()
    }

    /// Counts how many of a sampled LWTA layer's competitions the argmax unit won.
    pub(crate) fn count_argmax_wins(&mut self, layer: &str, sampled: &[u8], argmax: &[u8]) {
        if let Some(map) = &mut self.sparsity {
            let entry = map.entry(layer.to_string()).or_default();
            entry.competitions += sampled.len() as u64;
            entry.argmax_won += sampled.iter().zip(argmax).filter(|(s, a)| s == a).count() as u64;
        }
    }

    /// The Philox offset of the stochastic layer with noise slot `slot` in this pass.
    pub(crate) fn noise_offset(&self, slot: u64) -> u64 {
        self.step.wrapping_mul(NOISE_SLOTS).wrapping_add(slot)
    }

    /// LWTA noise of the layer with noise slot `slot`: none in deterministic mode.
    pub(crate) fn noise(&self, slot: u64) -> Noise<'static> {
        match self.mode {
            LwtaMode::Deterministic => Noise::None,
            LwtaMode::Train | LwtaMode::Sample => Noise::Philox { seed: self.seed, offset: self.noise_offset(slot) },
        }
    }
}

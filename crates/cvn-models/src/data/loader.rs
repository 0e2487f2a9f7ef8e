//! The batch loader: a worker thread assembles upcoming batches (samples prepared in parallel with
//! rayon) into a small bounded queue while the caller trains on the current one.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Dataset;
use crate::error::{config_err, Result};
use crate::rng::{permutation, CounterRng};

/// How an epoch is cut into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Visit samples in a seeded random order (training) or in order (evaluation).
    pub shuffle: bool,
    /// Skip the last, smaller batch (training, so BatchNorm never sees a batch of one).
    pub drop_last: bool,
    /// Seeds the shuffle and every sample's augmentation (see [`CounterRng`]).
    pub seed: u64,
    /// Batches prepared ahead of the one being consumed.
    pub prefetch: usize,
}

impl LoaderConfig {
    pub fn train(batch_size: usize, seed: u64) -> Self {
        Self { batch_size, shuffle: true, drop_last: true, seed, prefetch: 2 }
    }

    pub fn eval(batch_size: usize) -> Self {
        Self { batch_size, shuffle: false, drop_last: false, seed: 0, prefetch: 2 }
    }

    /// Batches in one epoch over `len` samples.
    pub fn batches_per_epoch(&self, len: usize) -> usize {
        if self.batch_size == 0 {
            0
        } else if self.drop_last {
            len / self.batch_size
        } else {
            len.div_ceil(self.batch_size)
        }
    }
}

/// Which part of every batch a loader yields: rank `rank` of `world` data-parallel ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
}

impl Shard {
    /// The whole batch (one process).
    pub const WHOLE: Shard = Shard { rank: 0, world: 1 };
}

/// One batch: `images` is `shape = [N, C, H, W]` row-major; `indices` are the samples' positions in
/// the data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub shape: [usize; 4],
    pub labels: Vec<usize>,
    pub indices: Vec<usize>,
}

/// Iterates over the batches of one epoch; dropping it stops the worker.
pub struct BatchLoader {
    receiver: Option<Receiver<Result<Batch>>>,
    worker: Option<JoinHandle<()>>,
    remaining: usize,
}

impl BatchLoader {
    /// The batches of epoch `epoch`, starting at batch `start_batch` (to resume mid-epoch: the
    /// order and augmentation depend only on seed, epoch and sample, so skipped batches cost nothing).
    pub fn new(dataset: Arc<dyn Dataset>, config: LoaderConfig, epoch: u64, start_batch: usize) -> Result<Self> {
        Self::sharded(dataset, config, epoch, start_batch, Shard::WHOLE)
    }

    /// [`BatchLoader::new`] for one rank of a data-parallel run: `config.batch_size` is the global
    /// batch, and this rank gets its `shard.rank`-th contiguous slice of every global batch, so
    /// the ranks together see exactly the batches of one process with the global batch.
    pub fn sharded(dataset: Arc<dyn Dataset>, config: LoaderConfig, epoch: u64, start_batch: usize, shard: Shard) -> Result<Self> {
        if config.batch_size == 0 {
            return config_err("batch size", "must be at least 1");
        }
        if shard.world == 0 || shard.rank >= shard.world || !config.batch_size.is_multiple_of(shard.world) {
            return config_err(
                "batch size",
                format!("global batch {} cannot be split evenly over {} ranks (rank {})", config.batch_size, shard.world, shard.rank),
            );
        }
        if dataset.is_empty() {
            return config_err("data set", "has no samples");
        }
        let order = if config.shuffle { permutation(dataset.len(), config.seed, epoch) } else { (0..dataset.len()).collect() };
        let total = config.batches_per_epoch(dataset.len());
        let remaining = total.saturating_sub(start_batch);
        let (sender, receiver) = sync_channel(config.prefetch.max(1));
        let worker = std::thread::Builder::new()
            .name("batch-loader".into())
            .spawn(move || {
                let per_rank = config.batch_size / shard.world;
                for b in start_batch..total {
                    let start = (b * config.batch_size + shard.rank * per_rank).min(order.len());
                    let end = (start + per_rank).min(order.len());
                    let batch = assemble(dataset.as_ref(), &order[start..end], config.seed, epoch);
                    let failed = batch.is_err();
                    // A closed channel means the consumer is gone: stop quietly.
                    if sender.send(batch).is_err() || failed {
                        return;
                    }
                }
            })
            .or_else(|e| config_err("batch loader", format!("cannot start its thread: {e}")))?;
        Ok(Self { receiver: Some(receiver), worker: Some(worker), remaining })
    }
}

/// Prepares the samples `indices` in parallel into one batch.
fn assemble(dataset: &dyn Dataset, indices: &[usize], seed: u64, epoch: u64) -> Result<Batch> {
    let [c, h, w] = dataset.sample_shape();
    let sample_len = c * h * w;
    let mut images = vec![0.0f32; indices.len() * sample_len];
    let mut labels = vec![0usize; indices.len()];
    images.par_chunks_mut(sample_len).zip(labels.par_iter_mut()).zip(indices.par_iter()).try_for_each(
        |((out, label), &index)| -> Result<()> {
            *label = dataset.load_into(index, &mut CounterRng::new(seed, epoch, index as u64), out)?;
            Ok(())
        },
    )?;
    Ok(Batch { images, shape: [indices.len(), c, h, w], labels, indices: indices.to_vec() })
}

impl Iterator for BatchLoader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.receiver.as_ref()?.recv().ok();
        match &item {
            Some(Ok(_)) => self.remaining = self.remaining.saturating_sub(1),
            // After an error (or the end) nothing more comes.
            _ => self.remaining = 0,
        }
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

impl Drop for BatchLoader {
    fn drop(&mut self) {
        // Closing the channel first makes a worker blocked on `send` return.
        self.receiver.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{FashionMnist, PadCropFlip};

    fn embedded_train(n: usize, augment: PadCropFlip) -> Arc<dyn Dataset> {
        Arc::new(FashionMnist::embedded().unwrap().train.truncated(n).with_augment(augment))
    }

    #[test]
    fn eval_epoch_visits_every_sample_in_order() {
        let set = embedded_train(70, PadCropFlip::default());
        let batches: Vec<Batch> = BatchLoader::new(set.clone(), LoaderConfig::eval(32), 0, 0).unwrap().map(Result::unwrap).collect();
        assert_eq!(batches.iter().map(|b| b.shape[0]).collect::<Vec<_>>(), [32, 32, 6]);
        assert_eq!(batches[2].shape, [6, 1, 28, 28]);
        let indices: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
        assert_eq!(indices, (0..70).collect::<Vec<_>>());
        let mut one = vec![0.0; 784];
        let label = set.load_into(40, &mut CounterRng::new(0, 0, 40), &mut one).unwrap();
        assert_eq!((batches[1].labels[8], &batches[1].images[8 * 784..9 * 784]), (label, &one[..]));
    }

    #[test]
    fn train_epochs_are_shuffled_reproducible_and_resumable() {
        let set = embedded_train(100, PadCropFlip { pad: 2, flip: true });
        let config = LoaderConfig::train(16, 5);
        let epoch = |e, start| -> Vec<Batch> { BatchLoader::new(set.clone(), config, e, start).unwrap().map(Result::unwrap).collect() };
        let first = epoch(0, 0);
        assert_eq!(first.len(), 6, "drop_last keeps 6 full batches of 16 out of 100");
        assert_ne!(first[0].indices, (0..16).collect::<Vec<_>>());
        assert_eq!(first, epoch(0, 0));
        assert_eq!(&first[2..], &epoch(0, 2)[..]);
        assert_ne!(first[0].indices, epoch(1, 0)[0].indices);
    }

    #[test]
    fn shards_of_a_global_batch_are_its_contiguous_slices() {
        let set = embedded_train(100, PadCropFlip { pad: 2, flip: true });
        let config = LoaderConfig::train(16, 5);
        let whole: Vec<Batch> = BatchLoader::new(set.clone(), config, 1, 0).unwrap().map(Result::unwrap).collect();
        let shard = |rank| -> Vec<Batch> {
            BatchLoader::sharded(set.clone(), config, 1, 0, Shard { rank, world: 2 }).unwrap().map(Result::unwrap).collect()
        };
        let (first, second) = (shard(0), shard(1));
        assert_eq!((first.len(), second.len()), (whole.len(), whole.len()));
        for ((w, a), b) in whole.iter().zip(&first).zip(&second) {
            assert_eq!([&a.indices[..], &b.indices[..]].concat(), w.indices);
            assert_eq!([&a.images[..], &b.images[..]].concat(), w.images, "augmentation follows the sample, not the rank");
            assert_eq!(a.shape[0], 8);
        }
        let err = BatchLoader::sharded(set, config, 1, 0, Shard { rank: 0, world: 3 }).err().unwrap().to_string();
        assert!(err.contains("global batch 16 cannot be split evenly over 3 ranks"), "{err}");
    }

    #[test]
    fn dropping_early_stops_the_worker_and_bad_settings_fail() {
        let set = embedded_train(200, PadCropFlip::default());
        let mut loader = BatchLoader::new(set.clone(), LoaderConfig::eval(10), 0, 0).unwrap();
        assert_eq!(loader.size_hint(), (0, Some(20)));
        assert!(loader.next().is_some());
        drop(loader);
        let mut config = LoaderConfig::eval(0);
        assert!(BatchLoader::new(set.clone(), config, 0, 0).is_err());
        config.batch_size = 8;
        assert_eq!(BatchLoader::new(set, config, 0, 99).unwrap().count(), 0);
    }
}

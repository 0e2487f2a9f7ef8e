//! Training runs on small slices of the embedded Fashion-MNIST: loss goes down, run files are
//! written, resuming is exact, a non-finite loss stops cleanly, and bad settings are named.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cvn_models::data::{Dataset, FashionMnist, IdxDataset};
use cvn_models::rng::CounterRng;
use cvn_models::run::{ARGMAX_BN_FILE, LEGACY_CHECKPOINT_FILE, MODEL_FILE, TRAINING_STATE_FILE};
use cvn_models::train::{
    evaluate, load_run, run_config, EpochMetrics, EvalOptions, Summary, TrainConfig, TrainData, TrainError, Trainer, METRICS_FILE,
};
use cvn_models::Model;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cvn-models-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A small configuration: `train` training and `test` test images of the embedded subset.
fn tiny(model: &str, competitors: usize, epochs: usize, train: usize, test: usize) -> (TrainConfig, TrainData) {
    let mut config = TrainConfig::for_model(model, competitors, epochs).unwrap();
    config.batch_size = 32;
    config.eval_batch_size = 64;
    config.samples = 2;
    config.log_every = 2;
    config.train_limit = Some(train);
    let fm = FashionMnist::embedded().unwrap();
    let data = TrainData {
        train: Arc::new(fm.train.with_augment(config.augment).truncated(train)),
        test: Arc::new(fm.test.truncated(test)),
        source: fm.source.to_string(),
        notes: Vec::new(),
    };
    (config, data)
}

fn nothing(_: cvn_models::train::Progress) {}

fn epoch_lines(dir: &Path) -> Vec<EpochMetrics> {
    std::fs::read_to_string(dir.join(METRICS_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "epoch")
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

#[test]
fn training_reduces_loss_and_summarises_the_run() {
    let dir = temp_dir("loss");
    let (config, data) = tiny("vit-fmnist", 4, 3, 320, 128);
    let mut trainer = Trainer::start(config, data, &dir).unwrap();
    let summary = trainer.run(&mut nothing).unwrap();

    let epochs = epoch_lines(&dir);
    assert_eq!(epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(epochs[2].train_loss < epochs[0].train_loss - 0.05, "loss did not go down: {epochs:?}");
    assert!(epochs.iter().all(|e| e.test_top1.is_some_and(|t| (0.0..=1.0).contains(&t))));
    let metrics = std::fs::read_to_string(dir.join(METRICS_FILE)).unwrap();
    assert_eq!(metrics.lines().filter(|l| l.contains(r#""kind":"step""#)).count(), 3 * 10 / 2, "a step line every 2 of 10 steps per epoch");

    assert_eq!(Summary::read(&dir).unwrap(), summary);
    assert_eq!((summary.epochs, summary.steps, summary.train_images), (3, 30, 3 * 320));
    assert!(summary.images_per_sec > 0.0 && summary.wall_seconds >= summary.train_seconds);
    assert!(summary.data_source.contains("embedded"));
    let test = &summary.test;
    assert_eq!((test.images, test.samples, test.top1_per_pass.len()), (128, 2, 2));
    assert!(test.top1_sampled.is_some_and(|t| t > 0.15), "better than chance after 3 epochs: {test:?}");
    // LWTA keeps exactly one winner of every U = 4 units (the winner's value is never exactly 0).
    let model = trainer.model();
    assert_eq!(test.active_fraction.keys().collect::<Vec<_>>(), model.activation_layers().iter().collect::<Vec<_>>());
    for (layer, fraction) in &test.active_fraction {
        assert!((fraction - 0.25).abs() < 1e-4, "{layer}: {fraction}");
    }
    assert_eq!(test.argmax_win_rate.keys().collect::<Vec<_>>(), model.activation_layers().iter().collect::<Vec<_>>());
    assert!(test.argmax_win_rate.values().all(|r| (0.2..=1.0).contains(r)), "{:?}", test.argmax_win_rate);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The argmax win rate of the stochastic passes: 1/U when every competition is a tie (the noise
/// decides), 1 when the responses dwarf the Gumbel noise.
#[test]
fn argmax_win_rate_tells_noise_decided_from_response_decided_competitions() {
    let test: Arc<dyn Dataset> = Arc::new(FashionMnist::embedded().unwrap().test.truncated(64));
    let options = EvalOptions { samples: 3, batch_size: 32, seed: 1 };
    for (fc1_scale, expected, tolerance) in [(0.0, 0.25, 0.01), (1e4, 1.0, 0.002)] {
        let mut model = Model::preset("vit-fmnist", 4, 0).unwrap();
        for (name, tensor, _) in model.params_mut().trainable_mut() {
            if name.ends_with("mlp.fc1.weight") || name.ends_with("mlp.fc1.bias") {
                let scaled: Vec<f32> = tensor.to_vec().unwrap().iter().map(|v| v * fc1_scale).collect();
                tensor.set_values(&scaled).unwrap();
            }
        }
        let eval = evaluate(&mut model, test.clone(), &options, None, &mut nothing).unwrap();
        assert_eq!(eval.argmax_win_rate.len(), 4);
        for (layer, rate) in &eval.argmax_win_rate {
            assert!((rate - expected).abs() < tolerance, "fc1 × {fc1_scale}, {layer}: {rate}, expected {expected}");
        }
    }
}

#[test]
fn conventional_twin_is_evaluated_deterministically_only() {
    let dir = temp_dir("twin");
    let (config, data) = tiny("vit-fmnist", 1, 1, 64, 64);
    let summary = Trainer::start(config, data, &dir).unwrap().run(&mut nothing).unwrap();
    assert_eq!((summary.test.samples, summary.test.top1_sampled), (0, None));
    // GELU outputs are almost never exactly zero.
    assert!(summary.test.active_fraction.values().all(|f| *f > 0.99), "{:?}", summary.test.active_fraction);
    assert!(summary.test.argmax_win_rate.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every tensor of two runs' checkpoints, optimiser state included, bit for bit.
fn assert_same_checkpoints(a: &Path, b: &Path) {
    for file in [MODEL_FILE, TRAINING_STATE_FILE] {
        let read = |p: &Path| cvn_autograd::io::TensorFile::load(&p.join(file)).unwrap().tensors;
        let (a, b) = (read(a), read(b));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        // The weights alone in the model file, the optimiser state in the other.
        assert_eq!(a.keys().any(|k| k.starts_with("optimizer.")), file == TRAINING_STATE_FILE, "{file}");
        for (name, t) in &a {
            assert_eq!(t.to_vec().unwrap(), b[name].to_vec().unwrap(), "{file}: {name} differs");
        }
    }
}

/// The old single-file layout of `run`: model tensors, optimiser state and trainer metadata in
/// `checkpoint.safetensors` (vit-fmnist: no int64 counters).
fn write_legacy_checkpoint(run: &Path, legacy: &Path) {
    let mut tensors = std::collections::BTreeMap::new();
    let mut metadata = std::collections::HashMap::new();
    for file in [MODEL_FILE, TRAINING_STATE_FILE] {
        let f = cvn_autograd::io::TensorFile::load(&run.join(file)).unwrap();
        tensors.extend(f.tensors.into_iter().map(|(k, t)| (k, cvn_autograd::io::Stored::F32(t))));
        metadata.extend(f.metadata);
    }
    metadata.remove("epochs_done");
    std::fs::create_dir_all(legacy).unwrap();
    cvn_autograd::io::save(&legacy.join(LEGACY_CHECKPOINT_FILE), &tensors, &metadata).unwrap();
}

#[test]
fn resuming_continues_exactly() {
    // ViT with AdamW and cosine warm-up; ResNet with SGD momentum, step decay and BatchNorm buffers.
    for (model, u, train) in [("vit-fmnist", 4, 96), ("resnet18-fmnist", 2, 48)] {
        let straight = temp_dir(&format!("straight-{model}"));
        let (mut config, data) = tiny(model, u, 2, train, 32);
        config.batch_size = 16;
        if let cvn_models::train::ScheduleConfig::Step { every_epochs, .. } = &mut config.schedule {
            *every_epochs = 1.0;
        }
        let full = Trainer::start(config.clone(), data.clone(), &straight).unwrap().run(&mut nothing).unwrap();

        let resumed = temp_dir(&format!("resumed-{model}"));
        let mut first = Trainer::start(config.clone(), data.clone(), &resumed).unwrap();
        first.train(1, &mut nothing).unwrap();
        drop(first);
        assert_eq!(run_config(&resumed).unwrap(), config);
        let mut second = Trainer::resume(&resumed, run_config(&resumed).unwrap(), data).unwrap();
        assert_eq!(second.epochs_done(), 1);
        let rest = second.run(&mut nothing).unwrap();

        assert_same_checkpoints(&straight, &resumed);
        // A ResNet CVN stores its argmax BatchNorm statistics once, at the end, and evaluates with them.
        let argmax_bn = |dir: &Path| cvn_autograd::io::TensorFile::load(&dir.join(ARGMAX_BN_FILE)).ok();
        let is_resnet = model.starts_with("resnet");
        assert_eq!(argmax_bn(&straight).is_some(), is_resnet, "{model}");
        assert_eq!(full.test.deterministic_bn_recalibrated_on, argmax_bn(&straight).map(|f| f.metadata["images"].parse().unwrap()));
        if let (Some(a), Some(b)) = (argmax_bn(&straight), argmax_bn(&resumed)) {
            let values =
                |f: &cvn_autograd::io::TensorFile| f.tensors.iter().map(|(k, t)| (k.clone(), t.to_vec().unwrap())).collect::<Vec<_>>();
            assert_eq!(values(&a), values(&b));
        }
        assert_eq!(
            epoch_lines(&straight).iter().map(|e| e.train_loss).collect::<Vec<_>>(),
            epoch_lines(&resumed).iter().map(|e| e.train_loss).collect::<Vec<_>>()
        );
        let results = |s: &Summary| (s.steps, s.test.top1_sampled, s.test.top1_per_pass.clone(), s.test.top1_deterministic);
        assert_eq!(results(&full), results(&rest), "{model}");
        std::fs::remove_dir_all(&straight).unwrap();
        std::fs::remove_dir_all(&resumed).unwrap();
    }
}

#[test]
fn old_single_file_runs_still_evaluate_and_resume() {
    let (mut config, data) = tiny("vit-fmnist", 4, 2, 64, 32);
    config.batch_size = 16;
    let straight = temp_dir("legacy-straight");
    let full = Trainer::start(config.clone(), data.clone(), &straight).unwrap().run(&mut nothing).unwrap();
    let half = temp_dir("legacy-half");
    Trainer::start(config.clone(), data.clone(), &half).unwrap().train(1, &mut nothing).unwrap();
    let legacy = temp_dir("legacy");
    write_legacy_checkpoint(&half, &legacy);

    assert_eq!(run_config(&legacy).unwrap(), config);
    let (run, _, _) = load_run(&legacy, None).unwrap();
    assert!(run.path.ends_with(LEGACY_CHECKPOINT_FILE));
    let expected = Model::load(&half.join(MODEL_FILE)).unwrap();
    for (a, b) in run.model.params().entries().iter().zip(expected.params().entries()) {
        assert_eq!((&a.name, a.tensor.to_vec().unwrap()), (&b.name, b.tensor.to_vec().unwrap()));
    }
    let rest = Trainer::resume(&legacy, config, data).unwrap().run(&mut nothing).unwrap();
    assert_eq!((rest.steps, rest.test.top1_per_pass.clone()), (full.steps, full.test.top1_per_pass.clone()));
    assert_same_checkpoints(&straight, &legacy);
    assert!(!legacy.join(LEGACY_CHECKPOINT_FILE).exists(), "training on writes the new layout and drops the old file");
    for dir in [straight, half, legacy] {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Fashion-MNIST images whose pixels are all NaN (what a corrupt pipeline would feed).
struct NanImages(IdxDataset);

impl Dataset for NanImages {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn class_names(&self) -> &[String] {
        self.0.class_names()
    }
    fn sample_shape(&self) -> [usize; 3] {
        self.0.sample_shape()
    }
    fn load_into(&self, index: usize, rng: &mut CounterRng, out: &mut [f32]) -> cvn_models::Result<usize> {
        let label = self.0.load_into(index, rng, out)?;
        out.fill(f32::NAN);
        Ok(label)
    }
    fn raw_image(&self, index: usize) -> cvn_models::Result<image::RgbImage> {
        self.0.raw_image(index)
    }
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = temp_dir("nan");
    let (config, data) = tiny("vit-fmnist", 2, 3, 64, 32);
    let mut trainer = Trainer::start(config.clone(), data.clone(), &dir).unwrap();
    trainer.train(1, &mut nothing).unwrap();
    drop(trainer);
    let good = std::fs::read(dir.join(MODEL_FILE)).unwrap();

    let fm = FashionMnist::embedded().unwrap();
    let poisoned = TrainData { train: Arc::new(NanImages(fm.train.truncated(64))), ..data.clone() };
    let mut trainer = Trainer::resume(&dir, config.clone(), poisoned.clone()).unwrap();
    let err = trainer.run(&mut nothing).unwrap_err();
    // The run's lock goes with the trainer.
    drop(trainer);
    assert!(matches!(err, TrainError::NonFiniteLoss { epoch: 2, step: 2, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("NaN") && msg.contains("epoch 2") && msg.contains("last good checkpoint") && msg.contains("(epoch 1)"), "{msg}");
    assert_eq!(std::fs::read(dir.join(MODEL_FILE)).unwrap(), good, "the checkpoint is untouched");
    assert!(!dir.join("summary.json").exists());
    assert_eq!(Trainer::resume(&dir, config.clone(), data).unwrap().epochs_done(), 1);

    // Failing before the first checkpoint says there is none.
    let fresh = temp_dir("nan-fresh");
    let err = Trainer::start(config, poisoned, &fresh).unwrap().run(&mut nothing).unwrap_err().to_string();
    assert!(err.contains("epoch 1, step 0") && err.contains("no checkpoint had been written yet"), "{err}");
    assert!(!fresh.join(MODEL_FILE).exists());
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&fresh).unwrap();
}

#[test]
fn resnet_cvns_default_to_their_own_learning_rate() {
    let lr = |u| TrainConfig::for_model("resnet18-fmnist", u, 3).unwrap().lr;
    assert_eq!((lr(1), lr(2), lr(4)), (0.05, cvn_models::train::RESNET_CVN_LR, cvn_models::train::RESNET_CVN_LR));
    assert_eq!(TrainConfig::for_model("vit-fmnist", 4, 3).unwrap().lr, 1e-3, "AdamW's lr does not depend on U");
}

#[test]
fn bad_settings_and_runs_are_named() {
    let err = TrainConfig::for_model("vgg16", 4, 1).unwrap_err().to_string();
    assert!(err.contains("unknown model `vgg16`"), "{err}");
    let err = TrainConfig::for_model("vit-fmnist", 5, 1).unwrap_err().to_string();
    assert!(err.contains("blocks.0.mlp.act") && err.contains("U = 5"), "{err}");
    let mut config = TrainConfig::for_model("vit-fmnist", 4, 1).unwrap();
    config.lr = f32::NAN;
    assert!(config.validate().unwrap_err().to_string().contains("`lr`"));
    config.lr = 1e-3;
    config.data_dir = Some(PathBuf::from("/nonexistent/fashion"));
    let err = TrainData::load(&config).err().unwrap().to_string();
    assert!(err.contains("/nonexistent/fashion"), "{err}");

    let dir = temp_dir("errors");
    let (config, data) = tiny("vit-fmnist", 4, 2, 32, 32);
    let err = Trainer::resume(&dir, config.clone(), data.clone()).err().unwrap().to_string();
    assert!(err.contains(&dir.display().to_string()) && err.contains("no model.safetensors"), "{err}");
    Trainer::start(config.clone(), data.clone(), &dir).unwrap().train(1, &mut nothing).unwrap();
    let err = Trainer::start(config.clone(), data.clone(), &dir).err().unwrap().to_string();
    assert!(err.contains("already holds a model (model.safetensors)"), "{err}");
    let changed = TrainConfig { lr: 0.5, seed: 9, ..config.clone() };
    let err = Trainer::resume(&dir, changed, data.clone()).err().unwrap().to_string();
    assert!(err.contains("lr (run: 0.001") && err.contains("seed (run: 0, now: 9)"), "{err}");
    let other_data = TrainData { source: "somewhere else".into(), ..data.clone() };
    assert!(Trainer::resume(&dir, config.clone(), other_data).err().unwrap().to_string().contains("somewhere else"));

    // A save interrupted between the training state and the model.
    let model_bytes = std::fs::read(dir.join(MODEL_FILE)).unwrap();
    let model = Model::load(&dir.join(MODEL_FILE)).unwrap();
    model.save(&dir.join(MODEL_FILE), &std::collections::BTreeMap::from([("epochs_done".into(), "2".into())])).unwrap();
    let err = Trainer::resume(&dir, config.clone(), data.clone()).err().unwrap().to_string();
    assert!(err.contains("after epoch 2, the training state after epoch 1"), "{err}");
    std::fs::write(dir.join(MODEL_FILE), model_bytes).unwrap();

    // A model without training state, a training state without trainer metadata, a corrupt one.
    let state = dir.join(TRAINING_STATE_FILE);
    std::fs::rename(&state, dir.join("aside")).unwrap();
    let err = run_config(&dir).unwrap_err().to_string();
    assert!(err.contains("no training_state.safetensors"), "{err}");
    cvn_models::Extras::default().save(&state).unwrap();
    let err = run_config(&dir).unwrap_err().to_string();
    assert!(err.contains("training_state.safetensors") && err.contains("no `trainer` metadata"), "{err}");
    std::fs::write(&state, b"not a checkpoint").unwrap();
    let err = run_config(&dir).unwrap_err().to_string();
    assert!(err.contains("training_state.safetensors") && err.contains("not a safetensors file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Rank 1 of a two-rank job whose rank 0 holds other weights: broadcasts leave this rank's
/// parameters as they are and bring a digest that is not its own; sums add nothing.
struct Disagreeing;

impl cvn_dist::Collectives for Disagreeing {
    fn rank(&self) -> usize {
        1
    }
    fn world_size(&self) -> usize {
        2
    }
    fn engine(&self) -> &'static str {
        "disagreeing"
    }
    fn all_reduce_sum(&self, _data: &mut [f32]) -> cvn_dist::Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, data: &mut [u8], _root: usize) -> cvn_dist::Result<()> {
        if data.len() == 8 {
            data[0] ^= 1;
        }
        Ok(())
    }
    fn barrier(&self) -> cvn_dist::Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

#[test]
fn ranks_that_hold_different_state_stop_and_other_ranks_never_write() {
    let (config, data) = tiny("vit-fmnist", 2, 1, 64, 32);
    let dir = temp_dir("disagreeing");
    let err = Trainer::start_distributed(config.clone(), data.clone(), &dir, Arc::new(Disagreeing)).err().unwrap().to_string();
    assert!(err.contains("starting, 1 of the 2 ranks hold weights or optimiser state that differ from rank 0's"), "{err}");
    assert!(!dir.exists(), "a rank other than 0 created the run folder");
    let odd = TrainConfig { batch_size: 33, ..config };
    let err = Trainer::start_distributed(odd, data, &dir, Arc::new(Disagreeing)).err().unwrap().to_string();
    assert!(err.contains("global batch 33 does not split evenly over 2 ranks"), "{err}");
}

#[test]
fn every_rank_draws_its_own_noise_and_rank_0_that_of_one_process() {
    let mut model = Model::new(cvn_models::ModelConfig::preset("vit-fmnist", 4).unwrap(), 1).unwrap();
    let x = cvn_autograd::Tensor::from_vec((0..2 * 784).map(|i| (i % 17) as f32 / 17.0).collect(), &[2, 1, 28, 28]).unwrap();
    let mut logits = |ctx: cvn_models::Forward| model.forward(&x, &mut { ctx }).unwrap().to_vec().unwrap();
    let single = logits(cvn_models::Forward::train(7, 3));
    assert_eq!(single, logits(cvn_models::Forward::train(7, 3).on_rank(0)));
    assert_ne!(single, logits(cvn_models::Forward::train(7, 3).on_rank(1)));
    assert_ne!(logits(cvn_models::Forward::train(7, 3).on_rank(1)), logits(cvn_models::Forward::train(7, 4).on_rank(1)));
}

#[test]
fn synthetic_concepts_load_by_name_and_train() {
    let mut config = TrainConfig::for_model("vit-concepts", 4, 1).unwrap();
    config.data_dir = Some(PathBuf::from("synthetic-concepts:3"));
    let data = TrainData::load(&config).unwrap();
    assert_eq!((data.train.len(), data.test.len(), data.train.sample_shape()), (10_000, 2_000, [3, 32, 32]));
    assert_eq!(data.train.class_names().len(), 16);
    assert!(data.source.contains("synthetic-concepts:3"), "{}", data.source);
    // A grey-scale model does not fit the RGB images; a bad seed is named.
    let mut fmnist = TrainConfig::for_model("vit-fmnist", 4, 1).unwrap();
    fmnist.data_dir = config.data_dir.clone();
    let err = TrainData::load(&fmnist).err().unwrap().to_string();
    assert!(err.contains("3×32×32") && err.contains("1 channels"), "{err}");
    config.data_dir = Some(PathBuf::from("synthetic-concepts:x"));
    assert!(TrainData::load(&config).err().unwrap().to_string().contains("synthetic-concepts:SEED"));
    // Without --data an RGB model is told where to find data.
    config.data_dir = None;
    assert!(TrainData::load(&config).err().unwrap().to_string().contains("--data synthetic-concepts"));

    config.data_dir = Some(PathBuf::from("synthetic-concepts"));
    config.batch_size = 32;
    config.train_limit = Some(64);
    config.eval_each_epoch = false;
    let dir = temp_dir("synthetic-concepts");
    let data = TrainData::load(&config).unwrap();
    Trainer::start(config, data, &dir).unwrap().train(1, &mut nothing).unwrap();
    let epochs = epoch_lines(&dir);
    assert_eq!(epochs.len(), 1);
    assert!(epochs[0].train_loss.is_finite() && epochs[0].train_loss > 0.0, "{:?}", epochs[0]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sync_bn_with_one_process_is_plain_batch_norm_and_resuming_keeps_it() {
    let (plain_config, data) = tiny("resnet18-fmnist", 1, 2, 64, 32);
    let synced_config = TrainConfig { sync_bn: true, ..plain_config.clone() };
    let (plain, synced) = (temp_dir("plain-bn"), temp_dir("sync-bn-one"));
    Trainer::start(plain_config.clone(), data.clone(), &plain).unwrap().train(1, &mut nothing).unwrap();
    let comm: Arc<dyn cvn_dist::Collectives> = Arc::new(cvn_dist::Single);
    Trainer::start_distributed(synced_config.clone(), data.clone(), &synced, comm).unwrap().train(1, &mut nothing).unwrap();
    assert_same_checkpoints(&synced, &plain);
    assert!(run_config(&synced).unwrap().sync_bn, "the setting is saved with the run");

    // Resuming keeps the setting: neither dropped nor added.
    let err = Trainer::resume(&synced, plain_config.clone(), data.clone()).err().unwrap().to_string();
    assert!(err.contains("sync_bn (run: true, now: false)"), "{err}");
    let err = Trainer::resume(&plain, synced_config.clone(), data.clone()).err().unwrap().to_string();
    assert!(err.contains("sync_bn (run: false, now: true)"), "{err}");
    Trainer::resume(&synced, synced_config, data).unwrap();

    // A run saved before the field existed loads without it; a model without BatchNorm refuses it.
    let mut old = serde_json::to_value(&plain_config).unwrap();
    old.as_object_mut().unwrap().remove("sync_bn").unwrap();
    assert!(!serde_json::from_value::<TrainConfig>(old).unwrap().sync_bn);
    let (vit, vit_data) = tiny("vit-fmnist", 1, 1, 32, 32);
    let err = Trainer::start(TrainConfig { sync_bn: true, ..vit }, vit_data, &temp_dir("sync-bn-vit")).err().unwrap().to_string();
    assert!(err.contains("`sync_bn`") && err.contains("`vit-fmnist` has no BatchNorm layers"), "{err}");
    for dir in [plain, synced] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Two replicas in one process: each calls `sum_in_place` from its own thread; the sum waits for
/// both, then adds replica 0's values and replica 1's in that order (the same on both).
struct PairSum {
    rank: usize,
    shared: Arc<(std::sync::Barrier, std::sync::Mutex<[Vec<f64>; 2]>)>,
}

impl cvn_autograd::CrossReplicaSum for PairSum {
    fn sum_in_place(&self, values: &mut [f64]) -> cvn_autograd::Result<()> {
        let (barrier, slots) = &*self.shared;
        slots.lock().unwrap()[self.rank] = values.to_vec();
        barrier.wait();
        {
            let s = slots.lock().unwrap();
            values.iter_mut().enumerate().for_each(|(i, v)| *v = s[0][i] + s[1][i]);
        }
        barrier.wait();
        Ok(())
    }
}

/// `x`'s logits, BatchNorm buffers and the gradient of every trainable tensor (by name) of one
/// training step of a fresh resnet18-fmnist twin (seed 5) on `labels`, the pass set up by `ctx`.
type StepOut = (Vec<f32>, std::collections::BTreeMap<String, Vec<f32>>, Vec<(String, Vec<f32>)>);

fn resnet_step(x: Vec<f32>, labels: Vec<usize>, ctx: cvn_models::Forward) -> StepOut {
    let mut model = Model::preset("resnet18-fmnist", 1, 5).unwrap();
    let tape = cvn_autograd::Tape::new();
    let x = cvn_autograd::Tensor::from_vec(x, &[labels.len(), 1, 28, 28]).unwrap().traced(&tape);
    let logits = model.forward(&x, &mut { ctx }).unwrap();
    let grads = logits.cross_entropy(&labels, 0.0).unwrap().backward().unwrap();
    let gradients =
        model.params_mut().trainable_mut().map(|(name, p, _)| (name.to_string(), grads.get(p).unwrap().to_vec().unwrap())).collect();
    let buffers = model.batch_norm_statistics().into_iter().map(|(k, t)| (k, t.to_vec().unwrap())).collect();
    (logits.to_vec().unwrap(), buffers, gradients)
}

/// The model's BatchNorm layers use `Forward::with_synced_batch_norm`: two replicas, each with
/// half of a batch, compute the whole batch's logits and running statistics, and their mean
/// gradient (what data-parallel training averages) is the whole batch's.
#[test]
fn synced_batch_norm_replicas_train_like_the_whole_batch() {
    let n = 4;
    // Halves with different brightness, so each half's own statistics are far from the whole's.
    // No ReLU input of these images comes within rounding of 0 (with `i * 37`, one of
    // `layer2.1.act2` is 3e-7 in one pass and 0 in the other: the kink then moves every gradient
    // below it by ~1e-3, whatever the summation).
    let x: Vec<f32> = (0..n * 784).map(|i| ((i * 41 % 101) as f32 / 101.0) + if i < 2 * 784 { 0.8 } else { 0.0 }).collect();
    let labels = vec![3, 1, 4, 1];
    let whole = resnet_step(x.clone(), labels.clone(), cvn_models::Forward::train(7, 0));
    let shared = Arc::new((std::sync::Barrier::new(2), std::sync::Mutex::new([Vec::new(), Vec::new()])));
    let [a, b]: [StepOut; 2] = std::thread::scope(|s| {
        let replicas: Vec<_> = (0..2)
            .map(|r| {
                let sum: Arc<dyn cvn_autograd::CrossReplicaSum> = Arc::new(PairSum { rank: r, shared: shared.clone() });
                let (x, labels) = (x[r * 2 * 784..(r + 1) * 2 * 784].to_vec(), labels[r * 2..(r + 1) * 2].to_vec());
                s.spawn(move || resnet_step(x, labels, cvn_models::Forward::train(7, 0).on_rank(r).with_synced_batch_norm(sum)))
            })
            .collect();
        let mut outs = replicas.into_iter().map(|h| h.join().unwrap());
        [outs.next().unwrap(), outs.next().unwrap()]
    });
    let relative = |got: &[f32], want: &[f32]| {
        let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|e| e * e).sum::<f64>().sqrt();
        norm(&mut got.iter().zip(want).map(|(p, q)| (p - q) as f64)) / norm(&mut want.iter().map(|q| *q as f64)).max(1e-30)
    };
    let logits: Vec<f32> = a.0.iter().chain(&b.0).copied().collect();
    assert!(relative(&logits, &whole.0) < 1e-5, "logits {logits:?} vs {:?}", whole.0);
    assert_eq!(a.1, b.1, "the replicas' running statistics agree exactly");
    for (name, values) in &whole.1 {
        assert!(relative(&a.1[name], values) < 1e-5, "{name}: {:?} vs {values:?}", a.1[name]);
    }
    for (((name, ga), (_, gb)), (_, want)) in a.2.iter().zip(&b.2).zip(&whole.2) {
        let mean: Vec<f32> = ga.iter().zip(gb).map(|(p, q)| (p + q) / 2.0).collect();
        assert!(relative(&mean, want) < 2e-5, "{name}: relative difference {:e}", relative(&mean, want));
    }
    // Not vacuous: each replica's own statistics (plain per-replica BatchNorm) give other logits.
    let own = resnet_step(x[..2 * 784].to_vec(), labels[..2].to_vec(), cvn_models::Forward::train(7, 0));
    assert!(relative(&own.0, &whole.0[..own.0.len()]) > 1e-2, "per-replica statistics changed nothing");
}

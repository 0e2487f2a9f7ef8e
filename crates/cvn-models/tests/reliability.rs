//! The faults of issue 15, one test each: concurrent writers, unwritable folders, corrupt,
//! non-finite, lying and incomplete checkpoints, lost metrics lines, stale temporary files,
//! ImageFolder splits with other classes, and broken images.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cvn_autograd::io::{save, Integrity, Stored, TensorFile};
use cvn_autograd::Tensor;
use cvn_models::data::FashionMnist;
use cvn_models::rng::CounterRng;
use cvn_models::run::{load_model, MODEL_FILE, TRAINING_STATE_FILE};
use cvn_models::train::{run_config, TrainConfig, TrainData, Trainer, METRICS_FILE};
use cvn_models::Model;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cvn-models-reliability-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn nothing(_: cvn_models::train::Progress) {}

/// A run of `epochs` epochs on 64 images with batch 32 (2 steps per epoch), no evaluation.
fn tiny(epochs: usize) -> (TrainConfig, TrainData) {
    let mut config = TrainConfig::for_model("vit-fmnist", 2, epochs).unwrap();
    config.batch_size = 32;
    config.samples = 0;
    config.eval_each_epoch = false;
    config.train_limit = Some(64);
    let fm = FashionMnist::embedded().unwrap();
    let data = TrainData {
        train: Arc::new(fm.train.with_augment(config.augment).truncated(64)),
        test: Arc::new(fm.test.truncated(32)),
        source: fm.source.to_string(),
        notes: Vec::new(),
    };
    (config, data)
}

/// Rewrites a checkpoint with `edit` applied to its tensors and metadata (with a valid content
/// hash, as a tool editing the file would write it).
fn rewrite(path: &Path, edit: impl FnOnce(&mut BTreeMap<String, Tensor>, &mut HashMap<String, String>)) {
    let mut file = TensorFile::load(path).unwrap();
    edit(&mut file.tensors, &mut file.metadata);
    let mut stored: BTreeMap<String, Stored> = file.tensors.into_iter().map(|(k, t)| (k, Stored::F32(t))).collect();
    // Keep BatchNorm counters int64 so the model still matches.
    for (name, s) in stored.iter_mut() {
        if name.ends_with("num_batches_tracked") {
            if let Stored::F32(t) = s {
                *s = Stored::I64 { shape: t.shape().to_vec(), values: t.to_vec().unwrap().iter().map(|v| *v as i64).collect() };
            }
        }
    }
    save(path, &stored, &file.metadata).unwrap();
}

#[test]
fn a_second_writer_is_refused_naming_the_holder() {
    let dir = temp_dir("two-writers");
    let (config, data) = tiny(1);
    let first = Trainer::start(config.clone(), data.clone(), &dir).unwrap();
    let err = Trainer::start(config.clone(), data.clone(), &dir).err().unwrap().to_string();
    assert!(err.contains(&format!("process {}", std::process::id())) && err.contains("is writing to this run"), "{err}");
    drop(first);
    // Released with the first trainer (and by the OS if the process dies).
    Trainer::start(config, data, &dir).unwrap().train(1, &mut nothing).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn an_unwritable_out_folder_is_refused_before_training() {
    // /sys exists and refuses new files even to root (a chmod'ed folder would not stop root).
    let (config, data) = tiny(1);
    let err = Trainer::start(config, data, Path::new("/sys")).err().expect("training must not start").to_string();
    assert!(err.contains("/sys") && err.contains("cannot write in this folder"), "{err}");
}

#[test]
fn checkpoints_carry_a_content_hash_checked_on_load() {
    let dir = temp_dir("hash");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(MODEL_FILE);
    let model = Model::preset("vit-fmnist", 2, 3).unwrap();
    model.save(&path, &BTreeMap::new()).unwrap();
    Model::load(&path).unwrap();
    assert_eq!(load_model(&dir).unwrap().integrity, Integrity::Verified);

    // Flip one byte of tensor data (the last bytes of the file are the last tensor's).
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let err = Model::load(&path).err().unwrap().to_string();
    assert!(err.contains("model.safetensors") && err.contains("content hash mismatch"), "{err}");

    // A file without a hash (PyTorch's, an older version's) still loads, marked unverified.
    let (_, header) = safetensors::SafeTensors::read_metadata(&std::fs::read(dir.join("model.safetensors")).unwrap()).unwrap();
    let config = header.metadata().as_ref().unwrap()["config"].clone();
    let tensors: Vec<(String, Vec<u8>, Vec<usize>)> = model
        .params()
        .entries()
        .iter()
        .map(|e| (e.name.clone(), bytemuck_f32(&e.tensor.to_vec().unwrap()), e.tensor.shape().to_vec()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, data, shape)| {
            (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data).unwrap())
        })
        .collect();
    let plain = safetensors::serialize(views, Some(HashMap::from([("config".to_string(), config)]))).unwrap();
    std::fs::write(&path, plain).unwrap();
    Model::load(&path).unwrap();
    assert_eq!(load_model(&dir).unwrap().integrity, Integrity::Unhashed);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn bytemuck_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn a_non_finite_weight_is_an_error_naming_the_tensor() {
    let dir = temp_dir("nan-weight");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    Model::preset("vit-fmnist", 2, 3).unwrap().save(&path, &BTreeMap::new()).unwrap();
    for bad in [f32::NAN, f32::INFINITY] {
        rewrite(&path, |tensors, _| {
            let t = &tensors["blocks.1.mlp.fc1.weight"];
            let mut values = t.to_vec().unwrap();
            values[17] = bad;
            tensors.insert("blocks.1.mlp.fc1.weight".into(), Tensor::from_vec(values, t.shape()).unwrap());
        });
        let err = Model::load(&path).err().unwrap().to_string();
        assert!(err.contains("`blocks.1.mlp.fc1.weight`") && err.contains("non-finite") && err.contains("index 17"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn absurd_configurations_are_refused_before_the_model_is_built() {
    let dir = temp_dir("absurd-config");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    Model::preset("vit-fmnist", 2, 3).unwrap().save(&path, &BTreeMap::new()).unwrap();
    let original = TensorFile::load(&path).unwrap().metadata["config"].clone();
    // Each would allocate terabytes (or loop for hours) if the model were built from it.
    for (field, value, expected) in [
        ("img_size", "1048576", "img_size"),
        ("mlp_ratio", "1e12", "mlp_ratio"),
        ("depth", "10000000", "depth"),
        ("embed_dim", "3000000", "embed_dim"),
    ] {
        let mut config: serde_json::Value = serde_json::from_str(&original).unwrap();
        config[field] = serde_json::from_str(value).unwrap();
        rewrite(&path, |_, metadata| {
            metadata.insert("config".into(), config.to_string());
        });
        let err = Model::load(&path).err().unwrap().to_string();
        assert!(err.contains(expected) && err.contains("exceeds the limit"), "{field}: {err}");
    }
    // Within the limits but not what the file holds: named from the header, nothing built.
    let mut config: serde_json::Value = serde_json::from_str(&original).unwrap();
    config["depth"] = 100.into();
    rewrite(&path, |_, metadata| {
        metadata.insert("config".into(), config.to_string());
    });
    let err = Model::load(&path).err().unwrap().to_string();
    assert!(err.contains("`blocks.99.mlp.fc1.weight` is missing"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resuming_with_missing_optimiser_state_is_an_error_not_a_reset() {
    let dir = temp_dir("optimizer-state");
    let (config, data) = tiny(2);
    Trainer::start(config.clone(), data.clone(), &dir).unwrap().train(1, &mut nothing).unwrap();
    rewrite(&dir.join(TRAINING_STATE_FILE), |tensors, _| {
        assert!(tensors.remove("optimizer.blocks.2.attn.qkv.weight.exp_avg_sq").is_some());
    });
    let err = Trainer::resume(&dir, run_config(&dir).unwrap(), data).err().unwrap().to_string();
    assert!(
        err.contains(TRAINING_STATE_FILE) && err.contains("optimizer.blocks.2.attn.qkv.weight.exp_avg_sq") && err.contains("missing"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn epochs_logged(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join(METRICS_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "epoch")
        .map(|v| v["epoch"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_lost_epoch_line_is_restored_and_stale_temporary_files_removed_on_resume() {
    let dir = temp_dir("metrics");
    let (config, data) = tiny(3);
    Trainer::start(config.clone(), data.clone(), &dir).unwrap().train(2, &mut nothing).unwrap();
    assert_eq!(epochs_logged(&dir), [1, 2]);
    // What a kill right after the checkpoint's rename left before: no line for epoch 2, and the
    // temporary file of a killed write.
    let metrics = std::fs::read_to_string(dir.join(METRICS_FILE)).unwrap();
    let without: String =
        metrics.lines().filter(|l| !l.contains(r#""epoch":2"#) || !l.contains(r#""kind":"epoch""#)).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join(METRICS_FILE), without).unwrap();
    assert_eq!(epochs_logged(&dir), [1]);
    let stale = dir.join(".model.safetensors.tmp-4242");
    std::fs::write(&stale, b"half a checkpoint").unwrap();

    let mut trainer = Trainer::resume(&dir, run_config(&dir).unwrap(), data).unwrap();
    assert!(!stale.exists(), "stale temporary file left behind");
    assert_eq!(epochs_logged(&dir), [1, 2]);
    trainer.train(3, &mut nothing).unwrap();
    assert_eq!(epochs_logged(&dir), [1, 2, 3]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_epochs_metrics_line_is_written_before_its_checkpoint() {
    let dir = temp_dir("metrics-first");
    let (config, data) = tiny(1);
    let mut trainer = Trainer::start(config, data, &dir).unwrap();
    // A directory where the checkpoint's temporary file goes makes the checkpoint write fail, as a
    // crash at that moment would stop it: the epoch's line must already be there.
    std::fs::create_dir_all(cvn_autograd::io::temp_path(&dir.join(TRAINING_STATE_FILE))).unwrap();
    let err = trainer.train(1, &mut nothing).expect_err("the checkpoint cannot be written").to_string();
    assert!(err.contains(TRAINING_STATE_FILE), "{err}");
    assert!(!dir.join(MODEL_FILE).exists());
    assert_eq!(epochs_logged(&dir), [1], "the epoch's line was not written before its checkpoint");
    drop(trainer);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_fresh_run_removes_stale_temporary_files() {
    let dir = temp_dir("fresh-stale");
    std::fs::create_dir_all(&dir).unwrap();
    let stale = [".model.safetensors.tmp-4242", ".metrics.jsonl.tmp-17"].map(|name| dir.join(name));
    for path in &stale {
        std::fs::write(path, b"left by a killed writer").unwrap();
    }
    let kept = dir.join("notes.tmp-1");
    std::fs::write(&kept, b"not ours: no leading dot").unwrap();
    let (config, data) = tiny(1);
    let trainer = Trainer::start(config, data, &dir).unwrap();
    for path in &stale {
        assert!(!path.exists(), "{} left behind", path.display());
    }
    assert!(kept.exists(), "a file that is not a temporary file was removed");
    drop(trainer);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes `root/<split>/<class>/<i>.png` images, each class a colour.
fn write_split(root: &Path, split: &str, classes: &[&str]) {
    for (k, class) in classes.iter().enumerate() {
        let dir = root.join(split).join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..2 {
            image::RgbImage::from_pixel(8, 8, image::Rgb([40 * k as u8, 0, 0])).save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
}

fn folder_config(data: &Path) -> TrainConfig {
    let mut config = TrainConfig::for_model("resnet18", 1, 1).unwrap();
    config.data_dir = Some(data.to_path_buf());
    config
}

#[test]
fn image_folder_splits_match_classes_by_name() {
    let root = temp_dir("folder-classes");
    write_split(&root, "train", &["a", "b", "c"]);
    write_split(&root, "val", &["a", "c"]);
    let data = TrainData::load(&folder_config(&root)).unwrap();
    assert_eq!(data.test.class_names(), ["a", "b", "c"]);
    let mut out = vec![0.0; 3 * 224 * 224];
    let labels: Vec<usize> =
        (0..data.test.len()).map(|i| data.test.load_into(i, &mut CounterRng::new(0, 0, 0), &mut out).unwrap()).collect();
    // val/c is class 2 of the training split, not the second folder of val/.
    assert_eq!(labels, [0, 0, 2, 2]);
    assert!(data.notes.iter().any(|n| n.contains("no images of 1 of the 3 training classes: b")), "{:?}", data.notes);

    write_split(&root, "val", &["d"]);
    let err = TrainData::load(&folder_config(&root)).err().unwrap().to_string();
    assert!(err.contains("class `d` is not one of the 3 classes of the training split"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn truncated_and_corrupt_images_are_found_before_training_or_skipped() {
    let root = temp_dir("folder-bad-images");
    write_split(&root, "train", &["a", "b"]);
    write_split(&root, "val", &["a", "b"]);
    let jpeg = root.join("train/a/photo.jpg");
    // Large enough that half the file ends inside the entropy-coded data, after the headers.
    image::RgbImage::from_fn(128, 128, |x, y| image::Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, (x ^ y) as u8])).save(&jpeg).unwrap();
    let full = std::fs::read(&jpeg).unwrap();
    std::fs::write(&jpeg, &full[..full.len() / 2]).unwrap();
    let err = TrainData::load(&folder_config(&root)).err().unwrap().to_string();
    assert!(err.contains("photo.jpg") && err.contains("truncated"), "{err}");

    std::fs::write(&jpeg, b"\xff\xd8\xff\xe0 this is not a JPEG").unwrap();
    let err = TrainData::load(&folder_config(&root)).err().unwrap().to_string();
    assert!(err.contains("photo.jpg") && err.contains("cannot decode"), "{err}");

    let mut config = folder_config(&root);
    config.skip_bad_images = true;
    let data = TrainData::load(&config).unwrap();
    assert_eq!(data.train.len(), 4);
    assert!(data.notes.iter().any(|n| n.contains("skipped 1 unreadable or truncated images")), "{:?}", data.notes);
    std::fs::remove_dir_all(&root).unwrap();
}

//! `import` on state dicts written by PyTorch (`tests/fixtures/import`: timm, torchvision, and DDP
//! with every name prefixed `module.`): the run it makes gives PyTorch's logits on the fixture's 16
//! test images — tolerance: max |ours − PyTorch| ≤ 1e-4 · max |PyTorch| per model — is accepted by
//! eval, predict, dissect and `train --resume`, and every mismatch is an error naming the tensors.
//! And the argmax BatchNorm statistics of a ResNet CVN: stored once, used by all three.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cvn_autograd::io::{save, Stored, TensorFile};
use cvn_autograd::{LwtaMode, Tensor};
use cvn_models::data::{Dataset, FashionMnist, Spread};
use cvn_models::import::{import_run, read_state_dict, ShapeOverrides};
use cvn_models::predict::predict;
use cvn_models::run::{self, ArgmaxBnOrigin, ARGMAX_BN_FILE};
use cvn_models::train::{evaluate, load_run, run_argmax_bn, run_config, EvalOptions, TrainConfig, TrainData, Trainer};
use cvn_models::{ArgmaxBatchNorm, Forward, Model};
use dissect::integration::{DatasetProbe, ModelSource, Sampling};
use dissect::source::ActivationSource;

const TOLERANCE: f64 = cvn_models::parity::IMPORT_TOLERANCE;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("discover-import-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn io() -> TensorFile {
    TensorFile::load(&fixtures().join("io.safetensors")).unwrap()
}

/// max |a − b| / max |b|.
fn rel_err(actual: &[f32], expected: &[f32]) -> f64 {
    assert_eq!(actual.len(), expected.len());
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    actual.iter().zip(expected).fold(0.0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs())) / scale
}

fn nothing(_: cvn_models::train::Progress) {}

/// The embedded Fashion-MNIST's test split, first `n` images.
fn test_images(n: usize) -> Arc<dyn Dataset> {
    Arc::new(Spread::first(Arc::new(FashionMnist::embedded().unwrap().test), n))
}

/// A copy of fixture `name` with `edit` applied to its tensors (f32 and int64 as stored).
fn edited(name: &str, dir: &Path, edit: impl FnOnce(&mut BTreeMap<String, Stored>)) -> PathBuf {
    let file = TensorFile::load(&fixtures().join(name)).unwrap();
    let mut tensors: BTreeMap<String, Stored> = file
        .tensors
        .into_iter()
        .map(|(k, t)| {
            let stored = if k.ends_with("num_batches_tracked") {
                Stored::I64 { shape: t.shape().to_vec(), values: t.to_vec().unwrap().iter().map(|v| *v as i64).collect() }
            } else {
                Stored::F32(t)
            };
            (k, stored)
        })
        .collect();
    edit(&mut tensors);
    let path = dir.join(name);
    save(&path, &tensors, &HashMap::new()).unwrap();
    path
}

#[test]
fn timm_torchvision_and_ddp_state_dicts_import_with_pytorchs_logits() {
    let io = io();
    let x = io.get("x").unwrap();
    let n = x.shape()[0];
    // The fixture's images are the first test images of Fashion-MNIST, as the embedded subset's.
    let mut embedded = vec![0.0f32; x.len()];
    let test = test_images(n);
    for (i, out) in embedded.chunks_mut(x.len() / n).enumerate() {
        test.load_into(i, &mut cvn_models::rng::CounterRng::new(0, 0, 0), out).unwrap();
    }
    assert!(rel_err(&embedded, &x.to_vec().unwrap()) < 1e-6, "the embedded test images are the fixture's");

    for (file, preset, key) in cvn_models::parity::IMPORT_FIXTURES {
        let dir = scratch(file);
        let expected = io.get(key).unwrap().to_vec().unwrap();
        let source = TensorFile::load(&fixtures().join(file)).unwrap();
        let imported = import_run(&fixtures().join(file), &dir, TrainConfig::for_model(preset, 1, 1).unwrap()).unwrap();
        let prefixed = source.tensors.keys().all(|k| k.starts_with("module."));
        if prefixed {
            assert_eq!(imported.notes.len(), 1, "{file}: {:?}", imported.notes);
            assert!(imported.notes[0].contains("`module.`") && imported.notes[0].contains(&source.tensors.len().to_string()));
        } else {
            assert!(imported.notes.is_empty(), "{file}: {:?}", imported.notes);
        }
        assert!(imported.argmax_bn.is_none(), "U = 1 needs no argmax BatchNorm statistics");

        // model.safetensors holds exactly the state dict's names: load_state_dict(strict=True) takes it.
        let written = TensorFile::load(&imported.model_file).unwrap();
        let names = |t: &TensorFile| t.tensors.keys().map(|k| k.trim_start_matches("module.").to_string()).collect::<Vec<_>>();
        assert_eq!(names(&written), names(&source), "{file}");
        assert!(written.metadata.contains_key("config"));

        let mut model = run::load_model(&dir).unwrap().model;
        let logits = model.forward(x, &mut Forward::deterministic()).unwrap().to_vec().unwrap();
        let err = rel_err(&logits, &expected);
        println!("{file}: max rel. err. {err:.2e}");
        assert!(err <= TOLERANCE, "{file}: {err:.3e}");

        // predict on the run's own test data gives the same logits and their argmax.
        let (run, config, _) = load_run(&dir, None).unwrap();
        let p = predict(&run.model, test_images(n), 16, None, &mut nothing).unwrap();
        assert!(rel_err(&p.logits, &expected) <= TOLERANCE, "{file}: predict");
        let labels: Vec<usize> = FashionMnist::embedded().unwrap().test.labels()[..n].iter().map(|&l| l as usize).collect();
        assert_eq!(p.labels, labels);
        let csv = p.csv();
        assert_eq!(
            csv.lines().next().unwrap(),
            format!("index,label,predicted,{}", (0..10).map(|c| format!("logit_{c}")).collect::<Vec<_>>().join(","))
        );
        let first: Vec<f32> = csv.lines().nth(1).unwrap().split(',').skip(3).map(|v| v.parse().unwrap()).collect();
        assert_eq!(first, p.logits[..10], "CSV logits round-trip exactly");

        // Fine-tuning: train --resume takes the imported run with new settings.
        let mut tune = TrainConfig {
            epochs: 1,
            batch_size: 16,
            train_limit: Some(32),
            samples: 1,
            eval_each_epoch: false,
            lr: config.lr / 10.0,
            ..run_config(&dir).unwrap()
        };
        tune.eval_batch_size = 64;
        let fm = FashionMnist::embedded().unwrap();
        let tiny = TrainData {
            train: Arc::new(fm.train.truncated(32)),
            test: Arc::new(fm.test.truncated(64)),
            source: fm.source.to_string(),
            notes: Vec::new(),
        };
        let summary = Trainer::resume(&dir, tune, tiny).unwrap().run(&mut nothing).unwrap();
        assert_eq!((summary.epochs, summary.steps), (1, 2));
        assert!(TensorFile::load(&dir.join(run::TRAINING_STATE_FILE)).unwrap().tensors.keys().any(|k| k.starts_with("optimizer.")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn mismatched_state_dicts_are_errors_naming_the_tensors() {
    let dir = scratch("errors");
    std::fs::create_dir_all(&dir).unwrap();
    let vit = || TrainConfig::for_model("vit-fmnist", 4, 1).unwrap();
    let timm = fixtures().join("vit_fmnist_timm.safetensors");
    let vit_config = vit().model_config().unwrap();

    // A distilled DeiT's extra token and head.
    let dim = TensorFile::load(&timm).unwrap().get("cls_token").unwrap().shape()[2];
    let distilled = edited("vit_fmnist_timm.safetensors", &dir, |t| {
        t.insert("dist_token".into(), Stored::F32(Tensor::zeros(&[1, 1, dim])));
        t.insert("head_dist.weight".into(), Stored::F32(Tensor::zeros(&[10, dim])));
        t.insert("head_dist.bias".into(), Stored::F32(Tensor::zeros(&[10])));
    });
    let run_dir = dir.join("run");
    let err = import_run(&distilled, &run_dir, vit()).unwrap_err().to_string();
    assert!(err.contains("`dist_token`, `head_dist.bias`, `head_dist.weight`") && err.contains("distilled DeiT"), "{err}");
    assert!(!run_dir.exists(), "a failed import writes nothing");

    // A missing tensor; a preset with other shapes; a file half with the DDP prefix.
    let missing = edited("vit_fmnist_timm.safetensors", &dir, |t| {
        t.remove("blocks.1.mlp.fc2.weight");
    });
    let err = read_state_dict(&missing, vit_config.clone()).unwrap_err().to_string();
    assert!(err.contains("`blocks.1.mlp.fc2.weight` is missing"), "{err}");
    let seven = ShapeOverrides { num_classes: Some(7), ..Default::default() }.apply(vit_config.clone()).unwrap();
    let err = read_state_dict(&timm, seven).unwrap_err().to_string();
    assert!(err.contains(&format!("`head.weight` has shape [10, {dim}], expected [7, {dim}]")) && err.contains("`head.bias`"), "{err}");
    let err = read_state_dict(&fixtures().join("resnet18_fmnist_torchvision.safetensors"), vit_config.clone()).unwrap_err().to_string();
    assert!(err.contains("`cls_token` is missing") && err.contains("`conv1.weight`"), "{err}");
    let half = edited("vit_fmnist_ddp_prefix.safetensors", &dir, |t| {
        let v = t.remove("module.norm.bias").unwrap();
        t.insert("norm.bias".into(), v);
    });
    let err = read_state_dict(&half, vit_config.clone()).unwrap_err().to_string();
    assert!(err.contains("start with `module.`") && err.contains("`norm.bias`"), "{err}");

    // Flags of the other architecture; a second import into a run.
    let err = ShapeOverrides { widths: Some(vec![8, 16, 32, 64]), ..Default::default() }.apply(vit_config).unwrap_err().to_string();
    assert!(err.contains("--widths") && err.contains("ViT"), "{err}");
    import_run(&timm, &run_dir, vit()).unwrap();
    let err = import_run(&timm, &run_dir, vit()).unwrap_err().to_string();
    assert!(err.contains("already holds a model"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn argmax_batch_norm_statistics_are_stored_once_and_used_by_eval_predict_and_dissect() {
    let dir = scratch("argmax-bn");
    let file = fixtures().join("resnet18_fmnist_torchvision.safetensors");
    let imported = import_run(&file, &dir, TrainConfig::for_model("resnet18-fmnist", 2, 1).unwrap()).unwrap();
    let (path, images) = imported.argmax_bn.clone().expect("a ResNet CVN gets argmax BatchNorm statistics");
    assert_eq!(path, dir.join(ARGMAX_BN_FILE));
    assert_eq!(images, 4096.min(FashionMnist::embedded().unwrap().train.len()));

    let (run, config, data) = load_run(&dir, None).unwrap();
    let model = run.model;
    let stored = ArgmaxBatchNorm::load(&path).unwrap();
    let own = model.batch_norm_statistics();
    assert_eq!(stored.statistics.keys().collect::<Vec<_>>(), own.keys().collect::<Vec<_>>(), "torchvision's buffer names");
    assert_ne!(stored.statistics["layer4.1.bn2.running_var"].to_vec().unwrap(), own["layer4.1.bn2.running_var"].to_vec().unwrap());

    let n = 16;
    let deterministic = |m: &Model| -> Vec<f32> {
        let mut m = m.clone();
        let mut x = vec![0.0f32; n * 784];
        let test = test_images(n);
        for (i, out) in x.chunks_mut(784).enumerate() {
            test.load_into(i, &mut cvn_models::rng::CounterRng::new(0, 0, 0), out).unwrap();
        }
        let x = Tensor::from_vec(x, &[n, 1, 28, 28]).unwrap();
        m.forward(&x, &mut Forward::new(LwtaMode::Deterministic, 0, 0)).unwrap().to_vec().unwrap()
    };
    let with = |stats: &BTreeMap<String, Tensor>| {
        let mut m = model.clone();
        m.set_batch_norm_statistics(stats, "test").unwrap();
        m
    };
    // The three consumers of one run, with the statistics in the file.
    let check_all = |expected: &[f32]| {
        let (stats, origin) = run_argmax_bn(&dir, &model, &config, &data).unwrap().unwrap();
        assert_eq!(origin, ArgmaxBnOrigin::Stored(path.clone()));
        let p = predict(&model, test_images(n), n, Some(&stats), &mut nothing).unwrap();
        assert_eq!(p.logits, expected, "predict");
        let options = EvalOptions { samples: 0, batch_size: n, seed: config.seed };
        let eval = evaluate(&mut model.clone(), test_images(n), &options, Some(&stats), &mut nothing).unwrap();
        assert_eq!((eval.top1_deterministic, eval.deterministic_bn_recalibrated_on), (p.top1(), Some(stats.images)), "eval");
        let mut source = ModelSource::from_run(&dir, Sampling::Deterministic).unwrap();
        assert!(source.batch_norm_note().unwrap().contains(ARGMAX_BN_FILE));
        let probe = DatasetProbe::idx("fashion-mnist-test", FashionMnist::embedded().unwrap().test.truncated(n)).unwrap();
        let fc = source.record(&probe, &(0..n).collect::<Vec<_>>(), &["fc".to_string()]).unwrap();
        assert!(rel_err(&fc[0].data, expected) < 1e-6, "dissect");
        source.fingerprint()
    };
    let first = check_all(&deterministic(&with(&stored.statistics)));

    // Replace the file's statistics (here: with the training ones): all three follow the file.
    ArgmaxBatchNorm { statistics: own.clone(), ..stored.clone() }.save(&path).unwrap();
    let second = check_all(&deterministic(&with(&own)));
    assert_ne!(first, second, "the activation cache key follows the statistics");

    // Sampled dissection runs with the training statistics, untouched.
    let source = ModelSource::from_run(&dir, Sampling::Sample { seed: 1, batch_size: n }).unwrap();
    assert!(source.batch_norm_note().is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

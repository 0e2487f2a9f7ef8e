//! The dissection pipeline on real parts: a competition ViT from `cvn-models` (random weights, saved
//! and reloaded as a checkpoint), the embedded Fashion-MNIST test images, the label backend and the
//! tiny CLIP fixture as `--clip`; and the errors a user can run into.

use std::path::{Path, PathBuf};

use cvn_models::data::FashionMnist;
use cvn_models::Model;
use dissect::cache::Cache;
use dissect::integration::{ClipModelEncoder, DatasetProbe, ModelSource, Sampling};
use dissect::outputs::{write_outputs, Named, Provenance, RunInfo, Settings};
use dissect::quality::NeuronStatus;
use dissect::source::{ProbeSet, Silent};
use dissect::{dissect, ConceptSet, DissectError, Options, Scorer};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dissect-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A freshly initialised Fashion-MNIST ViT with `competitors` per LWTA block, saved as a checkpoint.
fn vit_checkpoint(dir: &Path, competitors: usize) -> PathBuf {
    let model = Model::preset("vit-fmnist", competitors, 3).unwrap();
    let path = dir.join(cvn_models::run::MODEL_FILE);
    model.save(&path, &Default::default()).unwrap();
    path
}

fn probe(images: usize) -> DatasetProbe {
    let data = FashionMnist::embedded().unwrap();
    DatasetProbe::idx("fashion-mnist-test", data.test.truncated(images)).unwrap()
}

#[test]
fn label_backend_dissects_a_competition_vit_and_caches_its_activations() {
    let dir = scratch("labels");
    let checkpoint = vit_checkpoint(&dir, 4);
    // soft-wpmi's top_k = 100 images of the labelling half.
    let probe = probe(240);
    let concepts = ConceptSet::from_lines("class names".into(), probe.class_names().iter().map(String::as_str)).unwrap();
    let options = Options { examples: 4, batch_size: 32, ..Options::default() };
    let cache = Cache::at(dir.join("cache"));
    let mut source = ModelSource::load(&checkpoint, Sampling::Deterministic).unwrap();
    let d = dissect(&mut source, &probe, Scorer::Labels, &concepts, &options, &cache, &Silent).unwrap();

    assert_eq!(d.backend, "labels");
    let names: Vec<&str> = d.layers.iter().map(|l| l.layer.as_str()).collect();
    assert_eq!(names, ["blocks.0.mlp.act", "blocks.1.mlp.act", "blocks.2.mlp.act", "blocks.3.mlp.act", "head"]);
    for layer in &d.layers[..4] {
        // One winner of every 4 competitors passes: a quarter of the outputs at most.
        assert!(layer.active_fraction > 0.2 && layer.active_fraction <= 0.25 + 1e-9, "{}: {}", layer.layer, layer.active_fraction);
        assert_eq!(layer.units, 384);
        // Labelled units are named after a class and scored; the rest carry no label.
        for n in &layer.neurons {
            let labelled = n.label.status == NeuronStatus::Labelled;
            assert_eq!(labelled, probe.class_names().contains(&n.label.label), "{:?}", n.label);
            assert_eq!(labelled, n.label.quality.as_ref().is_some_and(|q| q.images == 120 && q.auprc.is_some()), "{:?}", n.label);
        }
    }
    let classifier = d.classifier.as_ref().unwrap();
    assert_eq!((classifier.layer.as_str(), classifier.classes), ("head", 10));
    assert!(classifier.mean_cosine.is_none(), "no text encoder with the label backend");
    assert_eq!(d.examples.len(), 4);
    for e in &d.examples {
        assert_eq!(e.layer, "blocks.3.mlp.act");
        assert!(e.active <= 96 && !e.winners.is_empty(), "{} of {} active", e.active, e.units);
        assert!(e.predicted.is_some() && e.class.is_some());
    }

    let info = source.run_info(&dir).unwrap();
    assert_eq!((info.competitors, info.checkpoint.as_str()), (4, checkpoint.to_str().unwrap()));
    assert_eq!(info.content_sha256.as_ref().map(String::len), Some(64), "the model file's content hash");
    assert_eq!(info.test_top1_deterministic, None, "no run summary");
    let settings = Settings {
        layers: names.iter().map(|n| n.to_string()).collect(),
        backend: "labels".into(),
        concepts: concepts.name().into(),
        similarity: d.similarity.clone(),
        pooling: d.pooling.clone(),
        probe: probe.id(),
        sampling: "deterministic".into(),
        examples: 4,
        explain_layer: None,
        compare: None,
    };
    let provenance = Provenance::now(settings, vec!["dissect".into()]);
    let out = write_outputs(&dir.join("dissect"), Named { run: &info, dissection: &d }, &probe, None, &provenance).unwrap();
    let csv = std::fs::read_to_string(&out.neurons_csv).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4 * 384 + 10);
    assert!(std::fs::read_to_string(&out.report_html).unwrap().contains("data:image/png;base64,"));

    // A write that fails part-way (as on a full disk: here report.html's temporary file cannot be
    // created) leaves the previous set whole: nothing was replaced.
    let before: Vec<Vec<u8>> = [&out.neurons_csv, &out.summary_json, &out.report_html].iter().map(|p| std::fs::read(p).unwrap()).collect();
    let blocker = cvn_autograd::io::temp_path(&out.report_html);
    std::fs::create_dir_all(&blocker).unwrap();
    let other = RunInfo { run: "runs/other".into(), ..info.clone() };
    let err =
        write_outputs(&dir.join("dissect"), Named { run: &other, dissection: &d }, &probe, None, &provenance).unwrap_err().to_string();
    assert!(err.contains("report.html"), "{err}");
    let after: Vec<Vec<u8>> = [&out.neurons_csv, &out.summary_json, &out.report_html].iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(before == after, "a failed write replaced some outputs");
    std::fs::remove_dir(&blocker).unwrap();

    // The same checkpoint, probe and pooling again: served from the cache, same answer.
    let mut again = ModelSource::load(&checkpoint, Sampling::Deterministic).unwrap();
    let second = dissect(&mut again, &probe, Scorer::Labels, &concepts, &options, &cache, &Silent).unwrap();
    assert!(second.layers.iter().all(|l| l.cached));
    assert_eq!(second.layers[4].neurons, d.layers[4].neurons);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn clip_backend_runs_end_to_end_with_the_tiny_clip_fixture() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = scratch("clip");
    // A `--clip DIR` as a user gives it: the tiny model with the CLIP tokenizer beside it.
    let clip_dir = dir.join("clip");
    std::fs::create_dir_all(&clip_dir).unwrap();
    for (from, name) in [("tiny_clip", "config.json"), ("tiny_clip", "model.safetensors"), ("clip_tokenizer", "tokenizer.json")] {
        std::fs::copy(fixtures.join(from).join(name), clip_dir.join(name)).unwrap();
    }
    let clip = ClipModelEncoder::load(&clip_dir, &cvn_autograd::Device::Cpu, cvn_autograd::DType::F32).unwrap();
    let checkpoint = vit_checkpoint(&dir, 4);
    let probe = probe(220); // soft-wpmi needs top_k = 100 images in the labelling half
    let concepts = ConceptSet::from_lines(
        "mini".into(),
        ["shirt", "shoe", "bag", "dress", "stripes", "dark", "bright", "sleeve", "heel", "strap", "trouser", "coat"],
    )
    .unwrap();
    let options = Options { examples: 2, batch_size: 16, top_images: 3, ..Options::default() };
    let mut source = ModelSource::load(&checkpoint, Sampling::Deterministic).unwrap();
    let d = dissect(&mut source, &probe, Scorer::Clip(&clip), &concepts, &options, &Cache::disabled(), &Silent).unwrap();
    assert!(d.backend.starts_with("clip ("), "{}", d.backend);
    assert_eq!(d.concepts, 12);
    for n in d.layers.iter().flat_map(|l| &l.neurons).filter(|n| n.label.status == NeuronStatus::Labelled) {
        assert!(concepts.find(&n.label.label).is_some(), "{:?}", n.label);
        // CLIP's P is not presence: correlation and cosine only.
        let q = n.label.quality.as_ref().unwrap();
        assert!(q.auprc.is_none() && q.f1.is_none() && q.correlation.is_none_or(|r| r.abs() <= 1.0 + 1e-6), "{q:?}");
    }
    let cosine = d.classifier.as_ref().and_then(|c| c.mean_cosine).unwrap();
    assert!(cosine.is_finite() && cosine.abs() <= 1.0 + 1e-6, "{cosine}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_layers_and_mismatched_checkpoints_are_clear_errors() {
    let dir = scratch("errors");
    let checkpoint = vit_checkpoint(&dir, 4);
    let probe = probe(8);
    let concepts = ConceptSet::from_lines("c".into(), probe.class_names().iter().map(String::as_str)).unwrap();
    let mut source = ModelSource::load(&checkpoint, Sampling::Deterministic).unwrap();
    let options = Options { layers: vec!["blocks.9.mlp.act".into()], ..Options::default() };
    let err = dissect(&mut source, &probe, Scorer::Labels, &concepts, &options, &Cache::disabled(), &Silent).unwrap_err();
    assert!(matches!(err, DissectError::UnknownLayer { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("blocks.9.mlp.act") && message.contains("did you mean `blocks.0.mlp.act`"), "{message}");
    assert!(!message.contains("head"), "the closest names, not all: {message}");

    // A checkpoint whose configuration does not fit its tensors (embed_dim 96 → 48 in the metadata).
    let mut bytes = std::fs::read(&checkpoint).unwrap();
    let key = b"embed_dim\\\":96";
    let at = bytes.windows(key.len()).position(|w| w == key).expect("config metadata holds embed_dim");
    bytes[at + key.len() - 2..at + key.len()].copy_from_slice(b"48");
    let broken = dir.join("broken.safetensors");
    std::fs::write(&broken, bytes).unwrap();
    let message = ModelSource::load(&broken, Sampling::Deterministic).err().unwrap().to_string();
    assert!(message.contains("broken.safetensors") && message.contains("does not match"), "{message}");

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let message = ConceptSet::load(empty.to_str().unwrap()).unwrap_err().to_string();
    assert!(message.contains("empty.txt"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

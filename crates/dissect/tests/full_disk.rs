//! Dissect's outputs on a really full disk: a tmpfs too small to hold the new set beside the old
//! one. The write fails with ENOSPC, naming the file, and leaves the previous `neurons.csv`,
//! `summary.json` and `report.html` whole, with no temporary file left. Mounting needs root (or
//! CAP_SYS_ADMIN); without it the test says why it skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use cvn_models::data::FashionMnist;
use cvn_models::Model;
use dissect::cache::Cache;
use dissect::integration::{DatasetProbe, ModelSource, Sampling};
use dissect::outputs::{write_outputs, Named, Outputs, Provenance, RunInfo, Settings};
use dissect::source::{ProbeSet, Silent};
use dissect::{dissect, ConceptSet, Dissection, Options, Scorer};

const PAGE: u64 = 4096;

/// A tmpfs of `bytes` mounted at `dir`, unmounted when dropped (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, bytes: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run `mount`: {e}"))?;
        if !out.status.success() {
            return Err(format!("`mount -t tmpfs` failed (needs root): {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn files(outputs: &Outputs) -> [&Path; 3] {
    [&outputs.neurons_csv, &outputs.summary_json, &outputs.report_html]
}

fn pages(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len().div_ceil(PAGE)
}

fn dissection(dir: &Path) -> (Dissection, DatasetProbe) {
    let checkpoint = dir.join(cvn_models::run::MODEL_FILE);
    Model::preset("vit-fmnist", 4, 3).unwrap().save(&checkpoint, &Default::default()).unwrap();
    // soft-wpmi ranks 100 images of the labelling half.
    let probe = DatasetProbe::idx("fashion-mnist-test", FashionMnist::embedded().unwrap().test.truncated(240)).unwrap();
    let concepts = ConceptSet::from_lines("class names".into(), probe.class_names().iter().map(String::as_str)).unwrap();
    let options = Options { layers: vec!["blocks.3.mlp.act".into(), "head".into()], examples: 4, ..Options::default() };
    let mut source = ModelSource::load(&checkpoint, Sampling::Deterministic).unwrap();
    let d = dissect(&mut source, &probe, Scorer::Labels, &concepts, &options, &Cache::disabled(), &Silent).unwrap();
    (d, probe)
}

#[test]
fn a_full_disk_leaves_the_previous_outputs_whole() {
    let scratch = std::env::temp_dir().join(format!("dissect-full-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let (d, probe) = dissection(&scratch);
    // Two runs' outputs of the same sizes (run names of equal length), differing in content.
    let settings = Settings {
        layers: d.layers.iter().map(|l| l.layer.clone()).collect(),
        backend: "labels".into(),
        concepts: "class names".into(),
        similarity: d.similarity.clone(),
        pooling: d.pooling.clone(),
        probe: probe.id(),
        sampling: "deterministic".into(),
        examples: 4,
        explain_layer: None,
        compare: None,
    };
    let provenance = Provenance::now(settings, vec!["dissect".into()]);
    let write = |dir: &Path, run: &str| {
        let info = RunInfo {
            run: run.into(),
            model: "vit-fmnist".into(),
            competitors: 4,
            checkpoint: format!("{run}/model.safetensors"),
            content_sha256: None,
            test_top1_sampled: None,
            test_top1_deterministic: None,
        };
        write_outputs(dir, Named { run: &info, dissection: &d }, &probe, None, &provenance)
    };
    let sized = write(&scratch.join("sizes"), "runs/a").unwrap();
    let [csv, summary, report] = files(&sized).map(pages);
    // Room for one set and half of a second report.html: replacing the set cannot fit, and the
    // disk fills while report.html's temporary file is written, after the other two's.
    let mount = scratch.join("disk");
    let disk = match Tmpfs::mount(&mount, (2 * (csv + summary) + report + report / 2 + 1) * PAGE) {
        Ok(disk) => disk,
        Err(reason) => {
            println!("skipped: {reason}");
            std::fs::remove_dir_all(&scratch).unwrap();
            return;
        }
    };
    let out = disk.0.join("dissect");
    let old = write(&out, "runs/a").unwrap();
    let before: Vec<Vec<u8>> = files(&old).iter().map(|p| std::fs::read(p).unwrap()).collect();

    let err = write(&out, "runs/b").unwrap_err().to_string();
    assert!(err.contains("report.html") && err.contains("No space left on device"), "{err}");
    let after: Vec<Vec<u8>> = files(&old).iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(before == after, "a write that ran out of space replaced some outputs");
    let mut left: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["neurons.csv", "report.html", "summary.json"], "temporary files left on the full disk");

    // Once the old set is gone there is room again, and the new set is written whole.
    for path in files(&old) {
        std::fs::remove_file(path).unwrap();
    }
    write(&out, "runs/b").unwrap();
    assert!(std::fs::read_to_string(&old.summary_json).unwrap().contains("runs/b"));
    drop(disk);
    std::fs::remove_dir_all(&scratch).unwrap();
}

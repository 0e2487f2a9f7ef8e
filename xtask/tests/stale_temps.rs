//! `cargo xtask dissect` removes the temporary files a killed writer left in the run folder, its
//! `dissect/` outputs and its activation cache, and keeps everything else.

use std::path::PathBuf;
use std::process::Command;

use cvn_models::Model;

#[test]
fn dissect_removes_stale_temporary_files_at_start() {
    let root = std::env::temp_dir().join(format!("xtask-stale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let run = root.join("run");
    std::fs::create_dir_all(run.join("dissect/cache")).unwrap();
    Model::preset("vit-fmnist", 2, 3).unwrap().save(&run.join(cvn_models::run::MODEL_FILE), &Default::default()).unwrap();
    let stale: Vec<PathBuf> =
        [".model.safetensors.tmp-999999", "dissect/.report.html.tmp-999999", "dissect/cache/.0f3a.safetensors.tmp-12"]
            .iter()
            .map(|name| run.join(name))
            .collect();
    let kept = run.join("dissect/notes.txt");
    for path in stale.iter().chain([&kept]) {
        std::fs::write(path, b"left behind").unwrap();
    }

    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        // soft-wpmi ranks 100 images of the labelling half.
        .args(["dissect", "--layers", "head", "--limit", "240", "--examples", "2", "--run"])
        .arg(&run)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "dissect failed: {}", String::from_utf8_lossy(&out.stderr));
    for path in &stale {
        assert!(!path.exists(), "{} left behind", path.display());
    }
    assert!(kept.exists(), "a file that is not a temporary file was removed");
    std::fs::remove_dir_all(&root).unwrap();
}

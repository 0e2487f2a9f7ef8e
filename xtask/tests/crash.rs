//! Crash safety of `cargo xtask train`: a tiny run killed with SIGKILL at 20 random moments and
//! resumed after each ends with the checkpoint an uninterrupted run writes, and with every epoch
//! in `metrics.jsonl` once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cvn_autograd::io::TensorFile;
use cvn_models::data::encode_idx;

const KILLS: usize = 20;
const EPOCHS: usize = 3;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-crash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tiny Fashion-MNIST-shaped data set: 96 training and 32 test images of 28×28.
fn write_data(dir: &Path) {
    let image = |i: usize| (0..784).map(move |p| ((p * 7 + i * 13) % 251) as u8);
    for (images, labels, n) in
        [("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 96), ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 32)]
    {
        let pixels: Vec<u8> = (0..n).flat_map(image).collect();
        std::fs::write(dir.join(images), encode_idx(&[n, 28, 28], &pixels)).unwrap();
        std::fs::write(dir.join(labels), encode_idx(&[n], &(0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>())).unwrap();
    }
}

fn train(data: &Path, out: &Path, resume: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["train", "--model", "vit-fmnist", "--competitors", "2", "--epochs", &EPOCHS.to_string(), "--batch", "16"])
        .args(["--samples", "1", "--no-epoch-eval", "--seed", "5"])
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if resume {
        cmd.arg("--resume");
    }
    cmd
}

fn run_to_end(mut cmd: Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "train failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The checkpoint's tensors (bit patterns: the model's, then the optimiser state's) and trainer
/// state without its timings.
fn checkpoint(dir: &Path) -> (Vec<(String, Vec<u32>)>, serde_json::Value) {
    let model = TensorFile::load(&dir.join("model.safetensors")).unwrap();
    let state = TensorFile::load(&dir.join("training_state.safetensors")).unwrap();
    let tensors = model
        .tensors
        .iter()
        .chain(&state.tensors)
        .map(|(k, t)| (k.clone(), t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()))
        .collect();
    let mut trainer: serde_json::Value = serde_json::from_str(&state.metadata["trainer"]).unwrap();
    for timing in ["train_seconds", "wall_seconds"] {
        trainer.as_object_mut().unwrap().remove(timing);
    }
    for timing in ["seconds", "images_per_sec"] {
        trainer["last_epoch"].as_object_mut().unwrap().remove(timing);
    }
    (tensors, trainer)
}

fn epochs_logged(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}")))
        .filter(|v| v["kind"] == "epoch")
        .map(|v| v["epoch"].as_u64().unwrap())
        .collect()
}

#[test]
fn killed_and_resumed_twenty_times_ends_as_an_uninterrupted_run() {
    let root = scratch("kill");
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_data(&data);

    let straight = root.join("straight");
    let started = Instant::now();
    run_to_end(train(&data, &straight, false));
    let whole = started.elapsed();

    let killed = root.join("killed");
    // A fixed generator: the moments are random but the test is reproducible.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    while kills < KILLS {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let delay = Duration::from_secs_f64(whole.as_secs_f64() * (state % 1000) as f64 / 1000.0);
        let resume = killed.join("model.safetensors").exists();
        let mut child = train(&data, &killed, resume).spawn().unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            // It finished before the kill: start over from a fresh folder for the remaining kills.
            std::fs::remove_dir_all(&killed).unwrap();
            continue;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    let resume = killed.join("model.safetensors").exists();
    run_to_end(train(&data, &killed, resume));

    assert_eq!(epochs_logged(&killed), (1..=EPOCHS as u64).collect::<Vec<_>>());
    assert_eq!(epochs_logged(&straight), (1..=EPOCHS as u64).collect::<Vec<_>>());
    let (a, b) = (checkpoint(&straight), checkpoint(&killed));
    assert_eq!(a.0.len(), b.0.len());
    for ((name, x), (other, y)) in a.0.iter().zip(&b.0) {
        assert_eq!(name, other);
        assert!(x == y, "tensor `{name}` differs after {KILLS} kills");
    }
    assert_eq!(a.1, b.1, "trainer state differs");
    let leftovers: Vec<String> = std::fs::read_dir(&killed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    std::fs::remove_dir_all(&root).unwrap();
}

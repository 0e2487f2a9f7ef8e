//! The command line as a user meets it: `--version`, help ending in examples, errors that name the
//! flag, and `dissect --out` keeping one dissection per folder. Runs the built binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).env("RAYON_NUM_THREADS", "1").output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A run folder holding a freshly initialised vit-fmnist CVN (U = 4): enough for `dissect`.
fn vit_run(dir: &Path) -> String {
    let model = cvn_models::Model::preset("vit-fmnist", 4, 3).unwrap();
    model.save(&dir.join(cvn_models::run::MODEL_FILE), &Default::default()).unwrap();
    dir.to_str().unwrap().to_string()
}

#[test]
fn version_and_every_commands_help_ends_with_an_example() {
    let out = xtask(&["--version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("xtask {}", env!("CARGO_PKG_VERSION")));

    let help = String::from_utf8(xtask(&["--help"]).stdout).unwrap();
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 11, "{commands:?}");
    for command in commands {
        let text = String::from_utf8(xtask(&[command, "--help"]).stdout).unwrap();
        let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
        assert!(last.contains(&format!("cargo xtask {command}")), "`{command} --help` ends with {last:?}");
    }
}

#[test]
fn flag_errors_name_the_flag() {
    let dir = scratch("flags");
    let run = dir.to_str().unwrap();
    for args in [
        &["train", "--data", "/no/such/data", "--out", run][..],
        &["eval", "--run", run, "--data", "/no/such/data"],
        &["predict", "--run", run, "--out", "p.csv", "--data", "/no/such/data"],
        &["import", "x.safetensors", "--model", "vit-fmnist", "--out", run, "--data", "/no/such/data"],
        &["demo", "--data", "/no/such/data"],
    ] {
        let out = xtask(args);
        let message = stderr(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(message.contains("'--data <DIR>': the folder /no/such/data does not exist"), "{args:?}: {message}");
    }
    for args in [&["dissect", "--run", run, "--batch", "0"][..], &["eval", "--run", run, "--batch", "0"]] {
        let message = stderr(&xtask(args));
        assert!(message.contains("'--batch <N>': must be at least 1"), "{args:?}: {message}");
    }
    let message = stderr(&xtask(&["eval", "--run", run, "--samples", "0"]));
    assert!(message.contains("--samples 0") && message.contains("--deterministic"), "{message}");
    // One name per idea: the CLIP folder is --clip for `clip` as for `dissect` (--model still parses).
    let message = stderr(&xtask(&["clip", "--model", "/no/such/clip", "--image", "a.png", "--text", "a"]));
    assert!(message.contains("'--clip <DIR>': the folder /no/such/clip does not exist"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dissect_errors_name_the_flag_and_suggest_layers() {
    let dir = scratch("dissect-errors");
    let run = vit_run(&dir);
    let message = stderr(&xtask(&["dissect", "--run", &run, "--concepts", "nope.txt", "--limit", "8"]));
    assert!(message.contains("--concepts nope.txt"), "{message}");
    assert_eq!(message.matches("os error 2").count(), 1, "the OS error once: {message}");

    let message = stderr(&xtask(&["dissect", "--run", &run, "--layers", "blocks.3.mlp.ac", "--limit", "8"]));
    assert!(message.contains("unknown layer `blocks.3.mlp.ac`: did you mean `blocks.3.mlp.act`"), "{message}");
    assert!(message.matches('`').count() <= 8, "the closest names, not every layer: {message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dissect_out_keeps_one_dissection_per_folder() {
    let dir = scratch("dissect-out");
    let run = vit_run(&dir);
    let out = dir.join("report-a");
    let dissect = |similarity: &str, force: bool| {
        let mut args = vec!["dissect", "--run", &run, "--out", out.to_str().unwrap(), "--limit", "32", "--examples", "2"];
        args.extend(["--similarity", similarity, "--batch", "16"]);
        if force {
            args.push("--force");
        }
        xtask(&args)
    };
    let first = dissect("cos", false);
    assert!(first.status.success(), "{}", stderr(&first));
    let summary = || -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap() };
    assert_eq!(summary()["settings"]["similarity"], "cos");
    assert_eq!(summary()["command"][1], "dissect");
    assert_eq!(summary()["competitors"], 4);
    assert!(!dir.join("dissect").join("summary.json").exists(), "--out, not the run's dissect/");
    assert!(dissect("cos", false).status.success(), "a rerun with the same settings replaces it");

    let refused = dissect("cos-cubed", false);
    let message = stderr(&refused);
    assert!(!refused.status.success());
    assert!(message.contains("similarity: \"cos\" there, \"cos-cubed\" now") && message.contains("--force"), "{message}");
    assert_eq!(summary()["settings"]["similarity"], "cos", "the first dissection is still there");

    let forced = dissect("cos-cubed", true);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(summary()["settings"]["similarity"], "cos-cubed");
    std::fs::remove_dir_all(&dir).unwrap();
}

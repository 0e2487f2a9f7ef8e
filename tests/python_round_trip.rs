//! The PyTorch round trip, when `python3` has torch, timm, torchvision and safetensors (else it
//! prints why it skipped): `.pth` files saved the way DISCOVER (weights + `argparse.Namespace`) and
//! torchvision do → `tools/pth_to_safetensors.py` → `import` (U = 4 ViT, U = 2 ResNet with its
//! argmax BatchNorm statistics) → the runs loaded back with `tools/discover_lwta.py` into timm /
//! torchvision give the Rust deterministic logits (1e-4 of the largest), and its LWTA layer
//! reproduces the LWTA fixture. `tools/test_roundtrip.py` is the Python half.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

use cvn_autograd::io::{save, Stored, TensorFile};
use cvn_models::import::import_run;
use cvn_models::train::{load_run, run_argmax_bn, TrainConfig};
use cvn_models::Forward;

fn python(args: &[&str]) -> std::process::Output {
    Command::new("python3").args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("python3 runs")
}

#[test]
fn runs_round_trip_through_pytorch() {
    let probe = Command::new("python3").args(["-c", "import torch, timm, torchvision, safetensors"]).output();
    match probe {
        Err(e) => return println!("skipped: no python3 ({e})"),
        Ok(out) if !out.status.success() => {
            let why = String::from_utf8_lossy(&out.stderr);
            return println!(
                "skipped: python3 cannot import torch, timm, torchvision and safetensors ({})",
                why.lines().last().unwrap_or("").trim()
            );
        }
        Ok(_) => {}
    }
    let dir = std::env::temp_dir().join(format!("discover-python-round-trip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let made = python(&["tools/test_roundtrip.py", "make", d]);
    assert!(made.status.success(), "make: {}", String::from_utf8_lossy(&made.stderr));

    let x = TensorFile::load(&dir.join("x.safetensors")).unwrap().get("x").unwrap().clone();
    for (file, run, preset, u) in
        [("vit.safetensors", "run_vit", "vit-fmnist", 4), ("resnet.safetensors", "run_resnet", "resnet18-fmnist", 2)]
    {
        let run_dir = dir.join(run);
        import_run(&dir.join(file), &run_dir, TrainConfig::for_model(preset, u, 1).unwrap()).unwrap();
        let (loaded, config, data) = load_run(&run_dir, None).unwrap();
        let mut model = loaded.model;
        if let Some((stats, _)) = run_argmax_bn(&run_dir, &model, &config, &data).unwrap() {
            stats.apply(&mut model, run).unwrap();
        }
        let logits = model.forward(&x, &mut Forward::deterministic()).unwrap();
        let tensors = BTreeMap::from([("logits".to_string(), Stored::F32(logits))]);
        save(&dir.join(format!("{run}_logits.safetensors")), &tensors, &HashMap::new()).unwrap();
    }
    assert!(Path::new(&dir.join("run_resnet").join(cvn_models::run::ARGMAX_BN_FILE)).is_file());

    let checked = python(&["tools/test_roundtrip.py", "check", d]);
    println!("{}", String::from_utf8_lossy(&checked.stdout));
    assert!(checked.status.success(), "check: {}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

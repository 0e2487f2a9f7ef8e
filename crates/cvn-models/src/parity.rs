//! Parity with the reference fixtures `tiny_vit` (timm) and `tiny_resnet` (torchvision): logits of
//! the conventional model and of the deterministic-LWTA model, and the tapped activations of the
//! LWTA model. Architecture, U and the tapped layers all come from the files. And `import/`: the
//! state dicts timm, torchvision and DDP write, read as `import` reads them, give PyTorch's logits.

use std::path::Path;

use cvn_autograd::io::TensorFile;
use cvn_autograd::{Device, Tensor};
use lwta_kernels::parity::{max_rel_err, Check};

use crate::checkpoint::config_of;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::forward::Forward;
use crate::model::Model;

/// The fixtures' tolerance (relative error).
const TOLERANCE: f64 = 1e-5;
/// Relative errors are taken against `max(|expected|, FLOOR · max|expected|)`, so values near zero
/// are judged on the tensor's scale rather than their own: an activation that is a sum of O(1)
/// terms cancelling to ~1e-3 carries float32 rounding of ~1e-7 in any implementation (timm's
/// included), which is 1e-4 of itself but 2e-7 of the tensor's scale.
const FLOOR: f64 = 1e-1;

/// All model parity checks on the CPU, for `cargo xtask parity` and `tests/model_parity.rs`.
pub fn parity_checks(fixtures: &Path) -> Result<Vec<Check>> {
    parity_checks_on(fixtures, &Device::Cpu)
}

/// The same checks with the models and inputs on `device` (a GPU held to the reference stacks).
pub fn parity_checks_on(fixtures: &Path, device: &Device) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    for name in ["tiny_vit", "tiny_resnet"] {
        checks.extend(fixture_checks(name, &fixtures.join(name), device)?);
    }
    checks.extend(import_checks(&fixtures.join("import"), device)?);
    Ok(checks)
}

/// The state dicts of `fixtures/import`: file, the preset it follows, and the key of PyTorch's
/// logits in its `io.safetensors`.
pub const IMPORT_FIXTURES: [(&str, &str, &str); 3] = [
    ("vit_fmnist_timm.safetensors", "vit-fmnist", "logits_vit_gelu"),
    ("vit_fmnist_ddp_prefix.safetensors", "vit-fmnist", "logits_vit_gelu"),
    ("resnet18_fmnist_torchvision.safetensors", "resnet18-fmnist", "logits_resnet_relu"),
];

/// Tolerance of the import fixtures, relative to the largest logit.
pub const IMPORT_TOLERANCE: f64 = 1e-4;

fn import_checks(dir: &Path, device: &Device) -> Result<Vec<Check>> {
    let io = TensorFile::load(&dir.join("io.safetensors"))?;
    let x = io.get("x")?.to_device(device)?;
    let mut checks = Vec::new();
    for (file, preset, key) in IMPORT_FIXTURES {
        let mut model = crate::import::read_state_dict(&dir.join(file), ModelConfig::preset(preset, 1)?)?.model;
        model.to_device(device)?;
        let logits = model.forward(&x, &mut Forward::deterministic())?.to_vec()?;
        let expected = io.get(key)?.to_vec()?;
        let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64)).max(f64::MIN_POSITIVE);
        let err = max_rel_err(logits.iter().map(|&v| v as f64), expected.iter().map(|&v| v as f64), scale);
        let detail = if logits.len() == expected.len() {
            "relative to the largest logit".to_string()
        } else {
            format!("{} logits, expected {}", logits.len(), expected.len())
        };
        checks.push(Check::within(format!("import {file} {key}"), err, IMPORT_TOLERANCE).require(logits.len() == expected.len(), detail));
    }
    Ok(checks)
}

fn fixture_checks(fixture: &str, dir: &Path, device: &Device) -> Result<Vec<Check>> {
    let model_path = dir.join("model.safetensors");
    let io_path = dir.join("io.safetensors");
    let bytes = std::fs::read(&model_path)
        .map_err(|e| Error::Data { path: model_path.display().to_string(), detail: format!("cannot read: {e}") })?;
    let config = config_of(&bytes, &model_path)?;
    let io = TensorFile::load(&io_path)?;
    let expected = |key: &str| -> Result<&Tensor> {
        io.tensors.get(key).ok_or_else(|| Error::Data {
            path: io_path.display().to_string(),
            detail: format!("tensor `{key}` is missing (has: {})", io.tensors.keys().cloned().collect::<Vec<_>>().join(", ")),
        })
    };
    let x = &expected("x")?.to_device(device)?;
    let u = config.competition().competitors;
    let conventional = match config {
        ModelConfig::Vit(_) => "logits_gelu",
        ModelConfig::ResNet18(_) => "logits_relu",
    };
    let taps: Vec<String> = io.tensors.keys().filter_map(|k| k.strip_prefix("act.").map(str::to_string)).collect();

    let mut checks = Vec::new();
    for (competitors, key) in [(1, conventional.to_string()), (u, format!("logits_lwta_u{u}_argmax"))] {
        let mut model = Model::new(config.clone().with_competitors(competitors)?, 0)?;
        model.load_weights(&model_path)?;
        model.to_device(device)?;
        let lwta = competitors > 1;
        let mut ctx = Forward::deterministic().with_taps(if lwta { taps.clone() } else { Vec::new() });
        let logits = model.forward(x, &mut ctx)?;
        checks.push(compare(&format!("{fixture} {key}"), &logits, expected(&key)?)?);
        for (layer, tap) in ctx.taps() {
            let reference = expected(&format!("act.{layer}"))?;
            let mut check = compare(&format!("{fixture} act.{layer} (U={u})"), &tap.output, reference)?;
            if tap.winners.is_some() && tap.output.len() == reference.len() {
                // A different winner shows up as a unit that is silent in one output only.
                let (ours, theirs) = (tap.output.to_vec()?, reference.to_vec()?);
                let flipped = ours.iter().zip(&theirs).filter(|(a, b)| (**a == 0.0) != (**b == 0.0)).count();
                check = check.require(flipped == 0, format!("{flipped} units silent in only one of the outputs"));
            }
            checks.push(check);
        }
    }
    Ok(checks)
}

fn compare(name: &str, actual: &Tensor, expected: &Tensor) -> Result<Check> {
    if actual.shape() != expected.shape() {
        return Ok(Check::within(name, f64::INFINITY, TOLERANCE)
            .require(false, format!("shape {:?}, expected {:?}", actual.shape(), expected.shape())));
    }
    let (actual, expected_values) = (actual.to_vec()?, expected.to_vec()?);
    let scale = expected_values.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    let err =
        max_rel_err(actual.iter().map(|&v| v as f64), expected_values.iter().map(|&v| v as f64), (FLOOR * scale).max(f64::MIN_POSITIVE));
    Ok(Check::within(name, err, TOLERANCE).require(true, format!("shape {:?}, floor {FLOOR}·max|expected|", expected.shape())))
}

//! Whole-model gradients: every trainable tensor's tape gradient against central differences of the
//! loss (label-smoothed cross-entropy of the logits), so composition mistakes — a parameter used
//! by an op that records nothing, a broadcast add, the class-token concat, the head on the class
//! row — show up even when each op passes its own test.
//!
//! LWTA runs deterministically here (argmax winners): the loss is then piecewise smooth, like a
//! ReLU network's. τ is made huge so the straight-through relaxation, which is not a derivative of
//! the hard forward (and is tested in `lwta-kernels`), adds nothing. At a kink (a ReLU or an LWTA
//! winner switching inside the step) the derivative lies between the one-sided difference
//! quotients, so those bracket the tape's value; away from kinks they agree with each other.

use cvn_autograd::gradcheck::test_values;
use cvn_autograd::{LwtaMode, Tape, Tensor};
use cvn_models::{Forward, Model, ModelConfig, ResNetConfig, Stem, VitConfig};

/// Coordinates checked per tensor (the first, the last and evenly spread ones between).
const PROBES: usize = 4;
/// Finite-difference step. Small enough that few ReLUs behind a BatchNorm cross zero inside it:
/// at 1e-3, with the initialisation drawn from the host key, `bn1.weight[1]` of the ReLU ResNet saw
/// kinks on both sides (one-sided quotients −0.240 and −0.235 against the tape's −0.266, which
/// 1e-4 confirms); the f32 floor below still leaves the quotients a few percent of resolution.
const STEP: f32 = 1e-4;
/// Allowed relative error, on top of the finite differences' rounding floor.
const TOLERANCE: f32 = 0.05;

fn tiny_vit(competitors: usize) -> ModelConfig {
    let ModelConfig::Vit(mut c) = ModelConfig::preset("vit-fmnist", competitors).unwrap() else { unreachable!() };
    c = VitConfig { img_size: 8, patch_size: 4, embed_dim: 12, depth: 2, num_heads: 3, num_classes: 5, ..c };
    c.competition.tau_test = 1e6;
    ModelConfig::Vit(c)
}

fn tiny_resnet(competitors: usize) -> ModelConfig {
    let ModelConfig::ResNet18(mut c) = ModelConfig::preset("resnet18-fmnist", competitors).unwrap() else { unreachable!() };
    c = ResNetConfig { widths: vec![4, 4, 8, 8], num_classes: 5, stem: Stem::Small, ..c };
    c.competition.tau_test = 1e6;
    ModelConfig::ResNet18(c)
}

/// Spreads the parameters away from their initial values (zero biases, unit norms, tiny tokens)
/// so that every term of the gradient is exercised, and returns the model.
fn perturbed(config: ModelConfig) -> Model {
    let mut model = Model::new(config, 3).unwrap();
    for (i, (_, tensor, _)) in model.params_mut().trainable_mut().enumerate() {
        let noise = test_values(tensor.len(), 100 + i as u64);
        let perturbed: Vec<f32> = tensor.to_vec().unwrap().iter().zip(noise).map(|(v, r)| v + 0.1 * r).collect();
        tensor.set_values(&perturbed).unwrap();
    }
    model
}

/// Adds `delta` to element `j` of the `index`-th trainable tensor.
fn nudge(model: &mut Model, index: usize, j: usize, delta: f32) {
    let (_, tensor, _) = model.params_mut().trainable_mut().nth(index).unwrap();
    let mut d = tensor.to_vec().unwrap();
    d[j] += delta;
    tensor.set_values(&d).unwrap();
}

fn loss(model: &mut Model, mode: LwtaMode, x: &Tensor, labels: &[usize], tape: Option<&Tape>) -> Tensor {
    let x = match tape {
        Some(tape) => x.traced(tape),
        None => x.clone(),
    };
    let logits = model.forward(&x, &mut Forward::new(mode, 5, 0)).unwrap();
    logits.cross_entropy(labels, 0.1).unwrap()
}

/// Checks [`PROBES`] coordinates of every trainable tensor of `config` in `mode`.
fn check(config: ModelConfig, mode: LwtaMode, input: [usize; 4]) {
    let mut model = perturbed(config);
    let x = Tensor::from_vec(test_values(input.iter().product(), 7), &input).unwrap();
    let labels: Vec<usize> = (0..input[0]).map(|i| i % model.config().num_classes()).collect();
    let tape = Tape::new();
    let loss_tensor = loss(&mut model, mode, &x, &labels, Some(&tape));
    let base = loss_tensor.item().unwrap() as f64;
    // An f32 loss moves in steps of about ε·|loss|, so a one-sided difference cannot resolve less
    // than a few of those over the step.
    let floor = 4.0 * f32::EPSILON * base.abs() as f32 / STEP;
    let grads = loss_tensor.backward().unwrap();
    let analytic: Vec<(String, Option<Vec<f32>>)> = model
        .params()
        .entries()
        .iter()
        .filter(|e| e.kind.trainable())
        .map(|e| (e.name.clone(), grads.get(&e.tensor).map(|g| g.to_vec().unwrap())))
        .collect();

    let (mut failures, mut checked, mut kinked) = (Vec::new(), 0usize, 0usize);
    for (index, (name, analytic)) in analytic.iter().enumerate() {
        let Some(analytic) = analytic else {
            failures.push(format!("{name}: no gradient reached it"));
            continue;
        };
        let len = analytic.len();
        let coordinates: Vec<usize> = (0..PROBES).map(|k| k * (len - 1) / (PROBES - 1).max(1)).collect();
        for &j in &coordinates {
            let mut probe = |delta: f32| -> f64 {
                nudge(&mut model, index, j, delta);
                let value = loss(&mut model, mode, &x, &labels, None).item().unwrap() as f64;
                nudge(&mut model, index, j, -delta);
                value
            };
            let (above, below) = (probe(STEP), probe(-STEP));
            let right = ((above - base) / STEP as f64) as f32;
            let left = ((base - below) / STEP as f64) as f32;
            let slack = TOLERANCE * left.abs().max(right.abs()) + floor;
            let tape = analytic[j];
            if tape < left.min(right) - slack || tape > left.max(right) + slack {
                failures.push(format!("{name}[{j}]: tape {tape} vs one-sided differences {left} and {right} (slack {slack:.1e})"));
            }
            checked += 1;
            kinked += usize::from((left - right).abs() > slack);
        }
    }
    assert!(
        failures.is_empty(),
        "{:?} {mode:?}: {} gradient mismatches:\n{}",
        model.config().to_json(),
        failures.len(),
        failures.join("\n")
    );
    // Kinks are the exception; if most probes straddle one, the bracket proves little.
    assert!(kinked * 4 <= checked, "{kinked} of {checked} probes straddle a kink: lower STEP");
}

#[test]
fn vit_gradients_match_finite_differences() {
    check(tiny_vit(1), LwtaMode::Train, [3, 1, 8, 8]);
    check(tiny_vit(4), LwtaMode::Deterministic, [3, 1, 8, 8]);
}

#[test]
fn resnet_gradients_match_finite_differences() {
    // Training mode: BatchNorm normalises with batch statistics (running-stat updates do not
    // change the output).
    check(tiny_resnet(1), LwtaMode::Train, [4, 1, 8, 8]);
    check(tiny_resnet(4), LwtaMode::Deterministic, [4, 1, 8, 8]);
}

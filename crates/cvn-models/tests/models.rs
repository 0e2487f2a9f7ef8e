//! Model building, forward passes, taps, sparsity, noise and training.

use cvn_autograd::optim::{AdamW, Optimizer};
use cvn_autograd::{gradcheck::test_values, LwtaMode, Tape, Tensor};
use cvn_models::data::{BatchLoader, Dataset, FashionMnist, LoaderConfig};
use cvn_models::{Forward, Model, ModelConfig, Stem};
use std::sync::Arc;

fn input(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(test_values(shape.iter().product(), seed), shape).unwrap()
}

/// A small ResNet-18 with the ImageNet stem, to exercise max-pool and downsampling cheaply.
fn tiny_resnet(competitors: usize) -> ModelConfig {
    let ModelConfig::ResNet18(mut c) = ModelConfig::preset("resnet18", competitors).unwrap() else { unreachable!() };
    c.widths = vec![8, 8, 16, 16];
    c.num_classes = 5;
    ModelConfig::ResNet18(c)
}

#[test]
fn forward_shapes_and_taps() {
    let mut vit = Model::preset("vit-fmnist", 4, 1).unwrap();
    let mut ctx = Forward::deterministic().with_taps(["patch_embed", "blocks.3.mlp.act", "blocks.1", "norm", "head"]);
    let logits = vit.forward(&input(&[2, 1, 28, 28], 1), &mut ctx).unwrap();
    assert_eq!(logits.shape(), [2, 10]);
    let taps = ctx.taps();
    assert_eq!(taps["patch_embed"].output.shape(), [2, 49, 96]);
    assert_eq!(taps["blocks.1"].output.shape(), [2, 50, 96]);
    assert_eq!(taps["norm"].output.shape(), [2, 50, 96]);
    assert_eq!(taps["head"].output.to_vec().unwrap(), logits.to_vec().unwrap());
    let act = &taps["blocks.3.mlp.act"];
    assert_eq!(act.output.shape(), [2, 50, 384]);
    assert_eq!(act.winners.as_ref().map(|w| w.to_vec_u8().unwrap().len()), Some(2 * 50 * 384 / 4));
    assert!(taps["norm"].winners.is_none());

    let mut resnet = Model::preset("resnet18-fmnist", 2, 1).unwrap();
    let mut ctx = Forward::deterministic().with_taps(["conv1", "layer1.0", "layer2.0.downsample", "layer4", "avgpool", "fc"]);
    let logits = resnet.forward(&input(&[2, 1, 28, 28], 2), &mut ctx).unwrap();
    assert_eq!(logits.shape(), [2, 10]);
    let shape = |name: &str| ctx.taps()[name].output.shape().to_vec();
    assert_eq!(shape("conv1"), [2, 16, 28, 28]);
    assert_eq!(shape("layer1.0"), [2, 16, 28, 28]);
    assert_eq!(shape("layer2.0.downsample"), [2, 32, 14, 14]);
    assert_eq!(shape("layer4"), [2, 128, 4, 4]);
    assert_eq!(shape("avgpool"), [2, 128]);

    let mut imagenet = Model::new(tiny_resnet(4), 0).unwrap();
    let mut ctx = Forward::deterministic().with_taps(["maxpool", "layer4"]);
    assert_eq!(imagenet.forward(&input(&[1, 3, 64, 64], 3), &mut ctx).unwrap().shape(), [1, 5]);
    assert_eq!(ctx.taps()["maxpool"].output.shape(), [1, 8, 16, 16]);
    assert_eq!(ctx.taps()["layer4"].output.shape(), [1, 16, 2, 2]);
}

#[test]
fn layer_names_and_errors() {
    let mut vit = Model::preset("vit-fmnist", 1, 0).unwrap();
    for name in ["patch_embed", "blocks.0.attn.qkv", "blocks.3.mlp.act", "blocks.3", "norm", "head"] {
        assert!(vit.layer_names().iter().any(|l| l == name), "{name} missing from {:?}", vit.layer_names());
    }
    assert_eq!(vit.activation_layers(), ["blocks.0.mlp.act", "blocks.1.mlp.act", "blocks.2.mlp.act", "blocks.3.mlp.act"]);
    let err = vit.forward(&input(&[1, 1, 28, 28], 0), &mut Forward::deterministic().with_taps(["blocks.9.mlp.act"])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("unknown layer `blocks.9.mlp.act`") && msg.contains("blocks.3.mlp.act"), "{msg}");
    let msg = vit.forward(&input(&[1, 3, 28, 28], 0), &mut Forward::deterministic()).unwrap_err().to_string();
    assert!(msg.contains("expected [N, 1, 28, 28], got [1, 3, 28, 28]"), "{msg}");

    let resnet = Model::preset("resnet18-fmnist", 1, 0).unwrap();
    assert_eq!(resnet.activation_layers().len(), 17, "stem + 2 per block × 8 blocks");
    assert!(resnet.layer_names().iter().all(|l| l != "maxpool"), "the small stem has no max-pool");
    let msg = Model::preset("resnet18-fmnist", 3, 0).unwrap_err().to_string();
    assert!(msg.contains("`act`") && msg.contains("16 channels") && msg.contains("U = 3"), "{msg}");
    let msg = Model::preset("alexnet", 1, 0).unwrap_err().to_string();
    assert!(msg.contains("unknown model `alexnet`") && msg.contains("resnet18-fmnist"), "{msg}");
}

#[test]
fn architectures_match_timm_and_torchvision_parameter_counts() {
    // timm deit_{tiny,small,base}_patch16_224 and torchvision resnet18 (1000 classes).
    for (name, count) in [("deit-tiny", 5_717_416), ("deit-small", 22_050_664), ("deit-base", 86_567_656), ("resnet18", 11_689_512)] {
        let model = Model::preset(name, 1, 0).unwrap();
        assert_eq!(model.params().num_trainable(), count, "{name}");
    }
    let resnet = Model::preset("resnet18", 4, 0).unwrap();
    let names: Vec<&str> = resnet.params().entries().iter().map(|e| e.name.as_str()).collect();
    for name in ["conv1.weight", "bn1.running_var", "layer3.0.downsample.0.weight", "layer3.0.downsample.1.num_batches_tracked", "fc.bias"]
    {
        assert!(names.contains(&name), "{name}");
    }
    assert!(!names.contains(&"layer1.0.downsample.0.weight"), "layer1 keeps the width and stride: no downsample");
}

#[test]
fn sparsity_is_one_over_u_and_noise_is_fresh_per_step() {
    for u in [2, 4] {
        let mut model = Model::preset("vit-fmnist", u, 5).unwrap();
        let x = input(&[2, 1, 28, 28], 4);
        let mut ctx = Forward::new(LwtaMode::Sample, 9, 0).with_sparsity();
        model.forward(&x, &mut ctx).unwrap();
        ctx.step = 1;
        model.forward(&x, &mut ctx).unwrap();
        let sparsity = ctx.sparsity().unwrap().unwrap();
        assert_eq!(sparsity.len(), 4);
        for (layer, a) in sparsity {
            assert_eq!(a.total, 2 * 2 * 50 * 384, "{layer}");
            assert!((a.fraction() - 1.0 / u as f64).abs() < 1e-9, "{layer}: {}", a.fraction());
        }
    }
    let mut model = Model::new(tiny_resnet(4), 3).unwrap();
    let x = input(&[2, 3, 32, 32], 6);
    let winners = |model: &mut Model, mode, step| {
        let mut ctx = Forward::new(mode, 11, step).with_taps(["layer2.1.act2"]);
        model.forward(&x, &mut ctx).unwrap();
        ctx.take_taps().remove("layer2.1.act2").unwrap().winners.unwrap().to_vec_u8().unwrap()
    };
    assert_eq!(winners(&mut model, LwtaMode::Sample, 0), winners(&mut model, LwtaMode::Sample, 0));
    assert_ne!(winners(&mut model, LwtaMode::Sample, 0), winners(&mut model, LwtaMode::Sample, 1));
    assert_eq!(winners(&mut model, LwtaMode::Deterministic, 0), winners(&mut model, LwtaMode::Deterministic, 7));
    assert_ne!(winners(&mut model, LwtaMode::Sample, 0), winners(&mut model, LwtaMode::Deterministic, 0));
}

/// A few AdamW steps on a fixed batch of real images must lower the training loss, for both
/// architectures as CVNs (U = 4) and as conventional networks; BatchNorm running statistics must move.
/// (Every ResNet activation samples its winners while training, so its loss falls more slowly.)
#[test]
fn training_steps_reduce_the_loss() {
    let data = FashionMnist::embedded().unwrap().train.truncated(32);
    let batch = BatchLoader::new(Arc::new(data) as Arc<dyn Dataset>, LoaderConfig::eval(32), 0, 0).unwrap().next().unwrap().unwrap();
    let small_vit = |u| {
        let ModelConfig::Vit(mut c) = ModelConfig::preset("vit-fmnist", u).unwrap() else { unreachable!() };
        (c.embed_dim, c.depth, c.patch_size) = (48, 2, 7);
        ModelConfig::Vit(c)
    };
    let small_resnet = |u| {
        let ModelConfig::ResNet18(mut c) = ModelConfig::preset("resnet18-fmnist", u).unwrap() else { unreachable!() };
        (c.widths, c.stem) = (vec![8, 8, 16, 16], Stem::Small);
        ModelConfig::ResNet18(c)
    };
    let steps = 20;
    for (config, lr) in [(small_vit(4), 3e-3), (small_vit(1), 3e-3), (small_resnet(4), 1e-2), (small_resnet(1), 1e-2)] {
        let mut model = Model::new(config.clone(), 0).unwrap();
        let mut opt = AdamW::new(0.0);
        let mut losses = Vec::new();
        for step in 0..steps {
            let tape = Tape::new();
            let x = Tensor::from_vec(batch.images.clone(), &batch.shape).unwrap().traced(&tape);
            let loss = model.forward(&x, &mut Forward::train(1, step)).unwrap().cross_entropy(&batch.labels, 0.0).unwrap();
            losses.push(loss.item().unwrap());
            let grads = loss.backward().unwrap();
            for (name, param, decay) in model.params_mut().trainable_mut() {
                if let Some(g) = grads.get(param) {
                    opt.update(name, param, g, lr, decay).unwrap();
                }
            }
        }
        let mean = |l: &[f32]| l.iter().sum::<f32>() / l.len() as f32;
        let (first, last) = (mean(&losses[..3]), mean(&losses[losses.len() - 3..]));
        assert!(last < 0.85 * first, "{config:?}: loss {first} → {last} ({losses:?})");
        if let Some(n) = model.params().get("layer1.0.bn1.num_batches_tracked") {
            assert_eq!(n.to_vec().unwrap(), [steps as f32]);
            assert!(model.params().get("layer1.0.bn1.running_var").unwrap().to_vec().unwrap().iter().any(|v| *v != 1.0));
        }
    }
}

/// Recalibration makes each BatchNorm's running statistics the plain average of the batch
/// statistics it saw, with the winners of the chosen mode (here: the stem BatchNorm, whose input,
/// the stem convolution's output, does not depend on any winner).
#[test]
fn batch_norm_recalibration_averages_batch_statistics() {
    let mut model = Model::new(tiny_resnet(4), 5).unwrap();
    let batches = [input(&[3, 3, 32, 32], 11), input(&[3, 3, 32, 32], 12)];
    let mut expected_mean = vec![0.0f64; 8];
    let mut expected_var = vec![0.0f64; 8];
    for x in &batches {
        let mut ctx = Forward::deterministic().with_taps(["conv1"]);
        model.forward(x, &mut ctx).unwrap();
        let conv = &ctx.taps()["conv1"].output;
        let [n, c, h, w] = conv.shape() else { panic!("conv1 is 4-d") };
        let conv_values = conv.to_vec().unwrap();
        for ch in 0..*c {
            let values: Vec<f64> =
                (0..*n).flat_map(|i| conv_values[(i * c + ch) * h * w..(i * c + ch + 1) * h * w].iter().map(|&v| v as f64)).collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
            expected_mean[ch] += mean / batches.len() as f64;
            expected_var[ch] += var / batches.len() as f64;
        }
    }
    let used = model.recalibrate_batch_norm(batches.iter().cloned().map(Ok), LwtaMode::Deterministic, 0).unwrap();
    assert_eq!(used, 2);
    let params = model.params();
    let close = |got: &[f32], want: &[f64]| got.iter().zip(want).all(|(&g, &w)| (g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()));
    assert!(close(&params.get("bn1.running_mean").unwrap().to_vec().unwrap(), &expected_mean), "running_mean is not the average");
    assert!(close(&params.get("bn1.running_var").unwrap().to_vec().unwrap(), &expected_var), "running_var is not the average");
    assert_eq!(params.get("bn1.num_batches_tracked").unwrap().to_vec().unwrap(), [2.0]);

    // A ViT has no BatchNorm: nothing to do, nothing changes.
    let mut vit = Model::preset("vit-fmnist", 4, 1).unwrap();
    let before = vit.params().entries().iter().map(|e| e.tensor.to_vec().unwrap()).collect::<Vec<_>>();
    assert_eq!(vit.recalibrate_batch_norm([Ok(input(&[2, 1, 28, 28], 3))], LwtaMode::Deterministic, 0).unwrap(), 0);
    assert!(vit.params().entries().iter().zip(&before).all(|(e, b)| &e.tensor.to_vec().unwrap() == b));
}

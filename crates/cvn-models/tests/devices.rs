//! The models on other devices and in mixed precision: bf16 autocast against f32 on the CPU, and
//! the CUDA backend (on the PTX emulator here; on a GPU when there is one) against the CPU, for
//! inference and for training steps.

use cvn_autograd::optim::{AdamW, Optimizer, Sgd};
use cvn_autograd::{gradcheck::test_values, DType, Device, LwtaMode, Tape, Tensor};
use cvn_models::{Forward, Model, ModelConfig};

/// A ViT small enough for interpreted kernels: 2 blocks of width 24, U = 4.
fn tiny_vit(competitors: usize) -> ModelConfig {
    let ModelConfig::Vit(mut c) = ModelConfig::preset("vit-fmnist", competitors).unwrap() else { unreachable!() };
    c.embed_dim = 24;
    c.depth = 2;
    c.num_heads = 2;
    c.patch_size = 7;
    ModelConfig::Vit(c)
}

/// A ResNet-18 of widths 4/4/8/8 on Fashion-MNIST-shaped input, U = 2.
fn tiny_resnet(competitors: usize) -> ModelConfig {
    let ModelConfig::ResNet18(mut c) = ModelConfig::preset("resnet18-fmnist", competitors).unwrap() else { unreachable!() };
    c.widths = vec![4, 4, 8, 8];
    ModelConfig::ResNet18(c)
}

fn images(n: usize, seed: u64) -> Vec<f32> {
    test_values(n * 784, seed)
}

/// Losses of `steps` training steps (AdamW for ViTs, SGD for ResNets) on `device`.
fn train_losses(config: &ModelConfig, device: &Device, autocast: Option<DType>, steps: u64) -> Vec<f32> {
    let mut model = Model::new(config.clone(), 3).unwrap();
    model.to_device(device).unwrap();
    let mut opt: Box<dyn Optimizer> = match config {
        ModelConfig::Vit(_) => Box::new(AdamW::new(0.05)),
        ModelConfig::ResNet18(_) => Box::new(Sgd::new(0.9, 5e-4)),
    };
    let labels: Vec<usize> = (0..4).map(|i| i % 10).collect();
    (0..steps)
        .map(|step| {
            let tape = Tape::new();
            let x = Tensor::from_slice_on(&images(4, step), &[4, 1, 28, 28], DType::F32, device).unwrap().traced(&tape);
            let mut ctx = Forward::train(7, step);
            if let Some(dtype) = autocast {
                ctx = ctx.with_autocast(dtype);
            }
            let loss = model.forward(&x, &mut ctx).unwrap().cross_entropy(&labels, 0.1).unwrap();
            let grads = loss.backward().unwrap();
            for (name, param, decay) in model.params_mut().trainable_mut() {
                let g = grads.get(param).unwrap_or_else(|| panic!("`{name}` got no gradient"));
                assert_eq!(
                    (g.dtype(), g.device()),
                    (DType::F32, device.clone()),
                    "`{name}`: master weights get f32 gradients on their device"
                );
                opt.update(name, param, g, 1e-3, decay).unwrap();
            }
            loss.item().unwrap()
        })
        .collect()
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / scale).fold(0.0, f32::max)
}

/// bf16 autocast runs the matrix products in bf16 (8 significant bits): the logits follow the f32
/// ones to within a few bf16 roundings, and training with it learns. (The ResNet is compared as the
/// conventional twin: through 17 argmax competitions a bf16 rounding that flips a near-tie moves
/// the logits by far more than rounding, which says nothing about the precision.)
#[test]
fn bf16_autocast_tracks_f32() {
    for config in [tiny_vit(4), tiny_resnet(1), tiny_resnet(2)] {
        let mut model = Model::new(config.clone(), 1).unwrap();
        let x = Tensor::from_vec(images(3, 9), &[3, 1, 28, 28]).unwrap();
        let f32_logits = model.forward(&x, &mut Forward::deterministic()).unwrap().to_vec().unwrap();
        let bf16_logits = model.forward(&x, &mut Forward::deterministic().with_autocast(DType::BF16)).unwrap();
        assert_eq!(bf16_logits.dtype(), DType::BF16, "the classifier is a matrix product: its logits are bf16");
        let diff = max_rel_diff(&bf16_logits.to_vec().unwrap(), &f32_logits);
        let argmax_resnet = matches!(&config, ModelConfig::ResNet18(c) if c.competition.competitors > 1);
        assert!(argmax_resnet || diff < 0.05, "{config:?}: bf16 logits are {diff} off the f32 ones");
        let losses = train_losses(&config, &Device::Cpu, Some(DType::BF16), 6);
        assert!(losses.iter().all(|l| l.is_finite()) && losses[5] < losses[0], "bf16 training does not learn: {losses:?}");
    }
}

/// The CUDA backend (emulated here, real on a GPU) gives the CPU's numbers: inference in every LWTA
/// mode, and the losses of a few f32 training steps (within float noise: the backends sum in
/// different orders).
#[test]
fn cuda_backend_matches_the_cpu() {
    let devices: Vec<Device> = [Device::cuda(0), Device::cuda_emulated()]
        .into_iter()
        .filter_map(|d| d.map_err(|e| println!("skipped a device: {e}")).ok())
        .collect();
    for device in &devices {
        for config in [tiny_vit(4), tiny_resnet(2)] {
            let mut cpu = Model::new(config.clone(), 2).unwrap();
            let mut gpu = cpu.clone();
            gpu.to_device(device).unwrap();
            let host = images(2, 5);
            let x_cpu = Tensor::from_vec(host.clone(), &[2, 1, 28, 28]).unwrap();
            let x_gpu = x_cpu.to_device(device).unwrap();
            for (mode, step) in [(LwtaMode::Deterministic, 0), (LwtaMode::Sample, 3)] {
                let want = cpu.forward(&x_cpu, &mut Forward::new(mode, 11, step)).unwrap().to_vec().unwrap();
                let got = gpu.forward(&x_gpu, &mut Forward::new(mode, 11, step)).unwrap().to_vec().unwrap();
                let diff = max_rel_diff(&got, &want);
                assert!(diff < 1e-4, "{device} {mode:?}: logits {diff} off the CPU's");
            }
            let (want, got) = (train_losses(&config, &Device::Cpu, None, 3), train_losses(&config, device, None, 3));
            let diff = max_rel_diff(&got, &want);
            assert!(diff < 1e-4, "{device}: training losses {got:?}, CPU {want:?}");
        }
    }
}

/// bf16 autocast on the CUDA backend (emulated here) follows the CPU's bf16 autocast: the same
/// bf16 roundings of the inputs, f32 accumulation in both, so the losses of a few training steps
/// agree to within a few bf16 roundings (the backends sum in different orders, and a sum that lands
/// next to a bf16 rounding boundary rounds the other way).
#[test]
fn bf16_autocast_on_cuda_tracks_the_cpu() {
    let devices: Vec<Device> = [Device::cuda(0), Device::cuda_emulated()]
        .into_iter()
        .filter_map(|d| d.map_err(|e| println!("skipped a device: {e}")).ok())
        .collect();
    for device in &devices {
        let config = tiny_vit(4);
        let want = train_losses(&config, &Device::Cpu, Some(DType::BF16), 3);
        let got = train_losses(&config, device, Some(DType::BF16), 3);
        let diff = max_rel_diff(&got, &want);
        assert!(diff < 2e-2, "{device}: bf16 training losses {got:?}, CPU {want:?}");
    }
}

//! The CUDA backend on the emulated device against the CPU backend, where the two must agree bit
//! for bit: the fused optimiser steps (written in the CPU's rounding order), the dropout mask
//! (the same Philox stream) and LWTA winners (the same noise).

use cvn_autograd::optim::{AdamW, Optimizer, Sgd};
use cvn_autograd::{gradcheck::test_values, DType, Device, LwtaLayout, Noise, Tensor};

fn emulated() -> Device {
    Device::cuda_emulated().expect("the emulated CUDA device is always available")
}

/// `steps` updates of a 1000-element parameter on `device`; the parameter's bits after each step.
fn optimiser_bits(device: &Device, mut opt: Box<dyn Optimizer>, steps: u64) -> Vec<Vec<u32>> {
    let n = 1000;
    let mut p = Tensor::from_slice_on(&test_values(n, 1), &[n], DType::F32, device).unwrap().requiring_grad();
    (1..=steps)
        .map(|step| {
            let g = Tensor::from_slice_on(&test_values(n, 10 + step), &[n], DType::F32, device).unwrap();
            opt.update("w", &mut p, &g, 3e-3, true).unwrap();
            p.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
        })
        .collect()
}

#[test]
fn optimiser_steps_equal_the_cpu_bit_for_bit() {
    let device = emulated();
    type Make = fn() -> Box<dyn Optimizer>;
    let makers: [(&str, Make); 3] = [
        ("adamw", || Box::new(AdamW::new(0.05))),
        ("sgd momentum", || Box::new(Sgd::new(0.9, 5e-4))),
        ("sgd", || Box::new(Sgd::new(0.0, 5e-4))),
    ];
    for (name, make) in makers {
        let (cpu, gpu) = (optimiser_bits(&Device::Cpu, make(), 4), optimiser_bits(&device, make(), 4));
        for (step, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
            let differ = c.iter().zip(g).filter(|(a, b)| a != b).count();
            assert_eq!(differ, 0, "{name}, step {}: {differ} of {} parameters differ from the CPU's", step + 1, c.len());
        }
    }
}

#[test]
fn dropout_and_lwta_winners_equal_the_cpu() {
    let device = emulated();
    let values = test_values(3 * 257, 5);
    for dtype in [DType::F32, DType::BF16] {
        let cpu = Tensor::from_slice_on(&values, &[3, 257], dtype, &Device::Cpu).unwrap();
        let gpu = cpu.to_device(&device).unwrap();
        let (want, got) = (cpu.dropout(0.3, 17, 4).unwrap().to_vec().unwrap(), gpu.dropout(0.3, 17, 4).unwrap().to_vec().unwrap());
        assert_eq!(want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{dtype}");
        assert!(want.iter().filter(|v| **v == 0.0).count() > 150, "the mask drops about 30%");
    }
    let x = Tensor::from_vec(test_values(2 * 12 * 5 * 5, 6), &[2, 12, 5, 5]).unwrap();
    for (u, noise) in [(3, Noise::Philox { seed: 9, offset: 2 }), (4, Noise::None)] {
        let want = x.lwta_winners(LwtaLayout::Nchw, u, noise, "t").unwrap().to_vec_u8().unwrap();
        let got = x.to_device(&device).unwrap().lwta_winners(LwtaLayout::Nchw, u, noise, "t").unwrap().to_vec_u8().unwrap();
        assert_eq!(got, want, "U = {u}");
    }
}

//! The conformance suite (`cvn_autograd::conformance`) on every backend this machine has: the CPU
//! always, the CUDA backend on the PTX emulator, and a real GPU when there is one (skipped with the
//! reason otherwise). `cargo test conformance` runs exactly these.

use cvn_autograd::conformance::{run, Outcome};
use cvn_autograd::Device;

fn assert_all_pass(device: &Device, outcomes: &[Outcome]) {
    let failed: Vec<String> = outcomes.iter().filter(|o| !o.passed).map(|o| format!("  {}: {}", o.case, o.detail)).collect();
    let worst = outcomes.iter().filter(|o| o.passed).map(|o| o.worst).fold(0.0, f64::max);
    println!(
        "{device}: {} of {} cases pass (worst passing case at {worst:.2} of its tolerance)",
        outcomes.len() - failed.len(),
        outcomes.len()
    );
    assert!(failed.is_empty(), "{} of {} conformance cases fail on {device}:\n{}", failed.len(), outcomes.len(), failed.join("\n"));
}

#[test]
fn conformance_cpu() {
    assert_all_pass(&Device::Cpu, &run(&Device::Cpu));
}

#[test]
fn conformance_cuda_emulated() {
    match Device::cuda_emulated() {
        Ok(device) => assert_all_pass(&device, &run(&device)),
        Err(e) => println!("skipped: the emulated CUDA device is not available: {e}"),
    }
}

#[test]
fn conformance_cuda() {
    match Device::cuda(0) {
        Ok(device) => assert_all_pass(&device, &run(&device)),
        Err(e) => println!("skipped: no CUDA GPU here: {e}"),
    }
}

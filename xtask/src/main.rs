//! `cargo xtask` — the project's command line. Each subcommand lives in its own file; the logic lives
//! in the library crates, this binary parses flags, shows progress and prints.

use clap::{Parser, Subcommand};

mod bench;
mod build_kernels;
mod cli;
mod clip;
mod demo;
mod device;
mod dissect;
mod eval;
mod gpu_bundle;
mod import;
mod parity;
mod predict;
mod train;

#[derive(Parser)]
#[command(name = "xtask", about = "DISCOVER in Rust: competition-based vision networks and their dissection")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the default CVN (vit-fmnist, U = 4) on Fashion-MNIST in a few minutes and show its results.
    Demo(demo::Args),
    /// Train a preset model (CVN or conventional twin) with checkpoints, metrics and a summary.
    Train(train::Args),
    /// Re-evaluate a run's model on its test set (never writes into the run folder).
    Eval(eval::Args),
    /// Per-image logits, predicted and true class of a run's test set, as CSV or safetensors.
    Predict(predict::Args),
    /// Turn a PyTorch state dict (timm, torchvision, DISCOVER) into a run folder.
    Import(import::Args),
    /// Zero-shot image–text probabilities with a Hugging Face CLIP directory.
    Clip(clip::Args),
    /// Name a run's neurons (CLIP-Dissect), explain predictions by their winners, write a report.
    Dissect(dissect::Args),
    /// Assemble kernels/*.ptx with ptxas (sm_80, sm_90); report registers and spills.
    BuildKernels(build_kernels::Args),
    /// Check implementations against reference fixtures (cpu) or the PTX kernels against the CPU (cuda).
    Parity(parity::Args),
    /// Time the LWTA kernels against the copy-bandwidth floor (cuda) or run the criterion benches (cpu).
    Bench(bench::Args),
    /// Pack the release binary, fixtures and scripts into .device-bundle/ for a GPU machine.
    GpuBundle(gpu_bundle::Args),
}

fn main() {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Import(args) => import::run(args),
        Command::Clip(args) => clip::run(args),
        Command::Dissect(args) => dissect::run(args),
        Command::BuildKernels(args) => build_kernels::run(args),
        Command::Parity(args) => parity::run(args),
        Command::Bench(args) => bench::run(args),
        Command::GpuBundle(args) => gpu_bundle::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

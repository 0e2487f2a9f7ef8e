//! `cargo xtask` — the project's command line. Each subcommand lives in its own file; the logic lives
//! in the library crates, this binary parses flags, shows progress and prints.

use clap::{Parser, Subcommand};

mod bench;
mod bench_cpu;
mod build_kernels;
mod cli;
mod clip;
mod concept_benchmark;
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
#[command(
    name = "xtask",
    version,
    propagate_version = true,
    about = "DISCOVER in Rust: competition-based vision networks and their dissection",
    after_help = "Example: cargo xtask demo (then `cargo xtask <command> --help` for each command's flags and an example)"
)]
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
    /// CVN vs conventional twin on synthetic-concepts: label quality, planted-unit identification, CIs.
    ConceptBenchmark(concept_benchmark::Args),
    /// Assemble kernels/*.ptx with ptxas (sm_80, sm_90); report registers and spills.
    BuildKernels(build_kernels::Args),
    /// Check implementations against reference fixtures (cpu) or the PTX kernels against the CPU (cuda).
    Parity(parity::Args),
    /// Time ours beside PyTorch on the CPU (training steps, CLIP towers, soft-WPMI, LWTA), or the LWTA kernels against the copy-bandwidth floor (cuda).
    Bench(bench::Args),
    /// Pack the release binary, fixtures and scripts into .device-bundle/ for a GPU machine.
    GpuBundle(gpu_bundle::Args),
}

fn main() {
    // Freed tensor buffers stay in the heap for the next step instead of being unmapped.
    cvn_autograd::cpu::heap::keep_freed_buffers();
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Import(args) => import::run(args),
        Command::Clip(args) => clip::run(args),
        Command::Dissect(args) => dissect::run(args),
        Command::ConceptBenchmark(args) => concept_benchmark::check(&args).and_then(|()| concept_benchmark::run(args)),
        Command::BuildKernels(args) => build_kernels::run(args),
        Command::Parity(args) => parity::run(args),
        Command::Bench(args) => bench::run(args),
        Command::GpuBundle(args) => gpu_bundle::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {}", error_chain(&err));
        std::process::exit(1);
    }
}

/// The error and its causes joined by `: `, each said once: a cause whose text the message so far
/// already holds (an I/O error that its parent quotes) is skipped.
fn error_chain(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every flag is described, says its default once and in one form (clap's `[default: …]`,
    /// written by hand where clap cannot know it), and every command's help ends with an example.
    #[test]
    fn every_flag_is_described_and_every_command_has_an_example() {
        let cli = Cli::command();
        for command in cli.get_subcommands() {
            let name = command.get_name();
            let example = command.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(example.starts_with("Example") && example.contains(&format!("cargo xtask {name}")), "{name}: {example:?}");
            for arg in command.get_arguments() {
                let id = format!("{name} --{}", arg.get_id());
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                assert!(!help.is_empty(), "{id} has no description");
                let has_default = !arg.get_default_values().is_empty();
                assert!(!(has_default && help.contains("default")), "{id}: clap shows the default; the text repeats it: {help}");
                assert_eq!(help.matches("default").count(), help.matches("[default: ").count(), "{id}: write `[default: …]`: {help}");
            }
        }
    }

    #[test]
    fn causes_that_their_parent_quotes_are_printed_once() {
        let os = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        #[derive(Debug)]
        struct Quoting(std::io::Error);
        impl std::fmt::Display for Quoting {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "nope.txt: {}", self.0)
            }
        }
        impl std::error::Error for Quoting {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = anyhow::Error::new(Quoting(os)).context("--concepts nope.txt");
        assert_eq!(error_chain(&err), "--concepts nope.txt: nope.txt: No such file or directory (os error 2)");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&plain), "outer: inner");
    }
}

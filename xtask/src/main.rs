//! `cargo xtask` — the project's command line. Each subcommand lives in its own file; the logic lives
//! in the library crates, this binary parses flags, shows progress and prints.

use clap::{Parser, Subcommand};

mod clip;

#[derive(Parser)]
#[command(name = "xtask", about = "DISCOVER in Rust: competition-based vision networks and their dissection")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Zero-shot image–text probabilities with a Hugging Face CLIP directory.
    Clip(clip::Args),
}

fn main() {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Clip(args) => clip::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

//! `cargo xtask` — the project's command line. Each subcommand lives in its own file; the logic lives
//! in the library crates, this binary parses flags, shows progress and prints.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "DISCOVER in Rust: competition-based vision networks and their dissection")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {};
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

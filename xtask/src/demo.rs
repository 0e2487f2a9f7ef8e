//! `cargo xtask demo [--out runs/demo] [--data DIR]`: the README's main command. Trains the default
//! CVN — `vit-fmnist` with U = 4 competitors — on the installed (or embedded) Fashion-MNIST in a few
//! minutes on two cores, then says where its results are.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cvn_models::train::{Summary, TrainConfig, TrainData, Trainer, CHECKPOINT_FILE};

use crate::train::{print_summary, train_with_progress};

/// The default CVN.
const MODEL: &str = "vit-fmnist";
const COMPETITORS: usize = 4;
/// Sized for a few minutes on two CPU cores.
const EPOCHS: usize = 5;
const TRAIN_IMAGES: usize = 6000;

#[derive(clap::Args)]
pub struct Args {
    /// Run folder (a previous demo run there is replaced).
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Fashion-MNIST IDX folder (default: the installed package, else the embedded subset).
    #[arg(long)]
    data: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let summary = train_default_cvn(&args.out, args.data)?;
    print_summary(&summary, &args.out);
    Ok(())
}

/// Trains the default CVN into `out`, replacing an earlier demo run there.
fn train_default_cvn(out: &Path, data_dir: Option<PathBuf>) -> anyhow::Result<Summary> {
    let mut config = TrainConfig::for_model(MODEL, COMPETITORS, EPOCHS)?;
    config.train_limit = Some(TRAIN_IMAGES);
    config.data_dir = data_dir;
    let data = TrainData::load(&config)?;
    let old = out.join(CHECKPOINT_FILE);
    if old.exists() {
        std::fs::remove_file(&old).with_context(|| format!("replacing the earlier demo run: removing {}", old.display()))?;
    }
    let mut trainer = Trainer::start(config, data, out)?;
    train_with_progress(&mut trainer)
}

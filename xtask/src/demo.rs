//! `cargo xtask demo [--out runs/demo] [--data DIR]`: the README's main command. Trains the default
//! CVN — `vit-fmnist` with U = 4 competitors — on the installed (or embedded) Fashion-MNIST in a few
//! minutes on two cores, then says where its results are.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cvn_models::data::PadCropFlip;
use cvn_models::run::{ARGMAX_BN_FILE, LEGACY_CHECKPOINT_FILE, MODEL_FILE, TRAINING_STATE_FILE};
use cvn_models::train::{Summary, TrainConfig, TrainData, Trainer};
use cvn_models::RunLock;

use crate::train::{print_summary, train_with_progress};

/// The default CVN.
const MODEL: &str = "vit-fmnist";
const COMPETITORS: usize = 4;
/// Sized for a few minutes on two CPU cores (about 77% test top-1 in 3 minutes on a shared
/// 2-core machine): many small steps on the first 6000 training images (all of the embedded
/// subset), without augmentation, which only pays off in longer runs.
const EPOCHS: usize = 6;
const BATCH: usize = 64;
const TRAIN_IMAGES: usize = 6000;

#[derive(clap::Args)]
#[command(after_help = "Example: cargo xtask demo --out runs/demo")]
pub struct Args {
    /// Run folder (a previous demo run there is replaced, its dissection included).
    #[arg(long, value_name = "DIR", default_value = "runs/demo")]
    out: PathBuf,
    /// Fashion-MNIST IDX folder [default: the installed package, else the embedded subset].
    #[arg(long, value_name = "DIR", value_parser = crate::cli::existing_dir)]
    data: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let summary = train_default_cvn(&args.out, args.data)?;
    print_summary(&summary, &args.out);
    let report = dissect_default(&args.out)?;
    println!("\nDissection report (open it in a browser): {}", report.display());
    Ok(())
}

/// `cargo xtask dissect` with its defaults on the demo run, parsed through the same flags so the
/// defaults live in one place; forced, as the demo replaces its whole run.
fn dissect_default(run: &Path) -> anyhow::Result<PathBuf> {
    #[derive(clap::Parser)]
    struct Dissect {
        #[command(flatten)]
        args: crate::dissect::Args,
    }
    let run = run.to_str().context("the run folder is not valid UTF-8")?;
    let cli = <Dissect as clap::Parser>::try_parse_from(["dissect", "--run", run])?;
    Ok(crate::dissect::dissect_run(&cli.args.forced())?.report_html)
}

/// Trains the default CVN into `out`, replacing an earlier demo run there.
fn train_default_cvn(out: &Path, data_dir: Option<PathBuf>) -> anyhow::Result<Summary> {
    let mut config = TrainConfig::for_model(MODEL, COMPETITORS, EPOCHS)?;
    config.batch_size = BATCH;
    config.train_limit = Some(TRAIN_IMAGES);
    config.augment = PadCropFlip::default();
    config.eval_each_epoch = false;
    config.data_dir = data_dir;
    let data = TrainData::load(&config)?;
    let lock = RunLock::acquire(out)?;
    for file in [MODEL_FILE, TRAINING_STATE_FILE, ARGMAX_BN_FILE, LEGACY_CHECKPOINT_FILE] {
        let old = out.join(file);
        if old.exists() {
            std::fs::remove_file(&old).with_context(|| format!("replacing the earlier demo run: removing {}", old.display()))?;
        }
    }
    let mut trainer = Trainer::start_locked(lock, config, data)?;
    train_with_progress(&mut trainer)
}

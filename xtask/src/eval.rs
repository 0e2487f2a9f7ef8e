//! `cargo xtask eval --run runs/NAME [--samples 6] [--deterministic] [--data DIR] [--bn-recalibration N]`:
//! re-evaluates a run's checkpoint on its test set, prints top-1 and per-layer activity, writes `eval.json`.

use std::path::PathBuf;

use anyhow::Context;
use cvn_models::train::{evaluate, integrity_note, load_run, BnRecalibration, EvalOptions, CHECKPOINT_FILE};
use cvn_models::RunLock;

use crate::device::DeviceArgs;
use crate::train::{print_evaluation, Bars};

#[derive(clap::Args)]
pub struct Args {
    /// Run folder (holding checkpoint.safetensors).
    #[arg(long)]
    run: PathBuf,
    /// Stochastic passes whose probabilities are averaged (LWTA models).
    #[arg(long, default_value_t = 6)]
    samples: usize,
    /// Only the deterministic (argmax-winner) pass.
    #[arg(long)]
    deterministic: bool,
    /// Data folder replacing the one the run was trained with.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Evaluation batch size (default: the run's).
    #[arg(long)]
    batch: Option<usize>,
    /// Deterministic pass of a BatchNorm CVN (ResNet, U > 1): re-estimate BatchNorm statistics on
    /// this many training images with argmax winners first (0: the statistics from training).
    #[arg(long, default_value_t = 4096)]
    bn_recalibration: usize,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = args.device.open()?;
    // eval.json is written into the run: one writer at a time.
    let _lock = RunLock::existing(&args.run)?;
    let (mut model, config, data, integrity) = load_run(&args.run, args.data.as_deref())?;
    if let Some(note) = integrity_note(&args.run.join(CHECKPOINT_FILE), integrity) {
        println!("{note}");
    }
    model.to_device(&device)?;
    println!("evaluating {} (U = {}) on {}", config.model, config.competitors, data.source);
    data.notes.iter().for_each(|note| println!("note: {note}"));
    let options = EvalOptions {
        samples: if args.deterministic { 0 } else { args.samples },
        batch_size: args.batch.unwrap_or(config.eval_batch_size),
        seed: config.seed,
    };
    let mut bars = Bars::default();
    let recalibration = (args.bn_recalibration > 0)
        .then(|| BnRecalibration { images: args.bn_recalibration, ..BnRecalibration::from_training_set(data.train.clone()) });
    let eval = evaluate(&mut model, data.test.clone(), &options, recalibration.as_ref(), &mut |p| {
        bars.show(&p, &config.model, config.competitors)
    })?;
    print_evaluation(&eval, config.competitors);
    let path = args.run.join("eval.json");
    cvn_autograd::io::write_atomically(&path, serde_json::to_string_pretty(&eval)?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    println!("written to {} ({:.0} s)", path.display(), eval.seconds);
    Ok(())
}

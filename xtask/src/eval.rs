//! `cargo xtask eval --run runs/NAME [--samples 6] [--deterministic] [--data DIR] [--bn-recalibration N]
//! [--out FILE.json]`: re-evaluates a run's model on its test set and prints top-1 and per-layer
//! activity; `--out` also writes the evaluation as JSON. Nothing is written into the run folder, so
//! it may be read-only.

use std::path::PathBuf;

use anyhow::{bail, Context};
use cvn_models::run::ArgmaxBnOrigin;
use cvn_models::run_lock::lock_if_writing_into;
use cvn_models::train::{evaluate, integrity_note, load_run, run_argmax_bn, EvalOptions};
use cvn_models::{ArgmaxBatchNorm, BnRecalibration};

use crate::device::DeviceArgs;
use crate::train::{print_evaluation, Bars};

#[derive(clap::Args)]
#[command(after_help = "Example: cargo xtask eval --run runs/vit-u4 --samples 6 --out vit-u4-eval.json")]
pub struct Args {
    /// Run folder (holding model.safetensors, or an old checkpoint.safetensors).
    #[arg(long, value_name = "DIR", value_parser = crate::cli::existing_dir)]
    run: PathBuf,
    /// Stochastic passes whose probabilities are averaged (LWTA models); at least 1: 0 is refused
    /// (--deterministic runs the argmax pass alone).
    #[arg(long, value_name = "N", default_value_t = 6)]
    samples: usize,
    /// Only the deterministic (argmax-winner) pass.
    #[arg(long)]
    deterministic: bool,
    /// Data folder (or `synthetic-concepts[:SEED]`) replacing the one the run was trained with
    /// [default: the run's].
    #[arg(long, value_name = "DIR", value_parser = crate::cli::data_source)]
    data: Option<PathBuf>,
    /// Evaluation batch size [default: the run's].
    #[arg(long, value_name = "N", value_parser = crate::cli::at_least_one)]
    batch: Option<usize>,
    /// Deterministic pass of a BatchNorm CVN (ResNet, U > 1): re-estimate its BatchNorm statistics
    /// on this many training images with argmax winners (0: the statistics from training) instead
    /// of the run's argmax_bn.safetensors [default: the stored ones; estimated on 4096 images
    /// when the run has none].
    #[arg(long, value_name = "N")]
    bn_recalibration: Option<usize>,
    /// Also write the evaluation as JSON to this file (the run folder stays untouched unless the
    /// file lies in it).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.samples == 0 && !args.deterministic {
        bail!("--samples 0: give at least 1 stochastic pass, or --deterministic for the argmax pass alone");
    }
    let device = args.device.open()?;
    // Nothing is written into the run unless --out lies there: then one writer at a time.
    let _lock = match &args.out {
        Some(out) => lock_if_writing_into(&args.run, out).with_context(|| format!("--out {}", out.display()))?,
        None => None,
    };
    let (run, config, data) = load_run(&args.run, args.data.as_deref())?;
    if let Some(note) = integrity_note(&run.path, run.integrity) {
        println!("{note}");
    }
    let mut model = run.model;
    model.to_device(&device)?;
    println!("evaluating {} (U = {}) from {} on {}", config.model, config.competitors, run.path.display(), data.source);
    data.notes.iter().for_each(|note| println!("note: {note}"));
    let argmax_bn = match args.bn_recalibration {
        Some(_) if !ArgmaxBatchNorm::needed(&model) => {
            bail!(
                "--bn-recalibration: {} with U = {} has no argmax BatchNorm statistics (only ResNet CVNs do)",
                config.model,
                config.competitors
            )
        }
        Some(0) => None,
        Some(images) => {
            let r = BnRecalibration { images, ..BnRecalibration::from_training_set(data.train.clone(), &data.source, config.seed) };
            Some(ArgmaxBatchNorm::estimate(&model, &r).context("--bn-recalibration")?)
        }
        None => match run_argmax_bn(&args.run, &model, &config, &data)? {
            Some((stats, ArgmaxBnOrigin::Stored(path))) => {
                println!("deterministic pass: argmax BatchNorm statistics from {}", path.display());
                Some(stats)
            }
            Some((stats, ArgmaxBnOrigin::Estimated)) => {
                println!("deterministic pass: the run stores no argmax BatchNorm statistics; estimated them now (not saved)");
                Some(stats)
            }
            None => None,
        },
    };
    let options = EvalOptions {
        samples: if args.deterministic { 0 } else { args.samples },
        batch_size: args.batch.unwrap_or(config.eval_batch_size),
        seed: config.seed,
    };
    let mut bars = Bars::default();
    let eval =
        evaluate(&mut model, data.test.clone(), &options, argmax_bn.as_ref(), &mut |p| bars.show(&p, &config.model, config.competitors))?;
    print_evaluation(&eval, config.competitors);
    if let Some(path) = &args.out {
        cvn_autograd::io::write_atomically(path, serde_json::to_string_pretty(&eval)?.as_bytes())
            .with_context(|| format!("--out {}", path.display()))?;
        println!("written to {} ({:.0} s)", path.display(), eval.seconds);
    }
    Ok(())
}

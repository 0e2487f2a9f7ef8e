//! `cargo xtask predict --run runs/NAME --out FILE.csv|FILE.safetensors [--data DIR] [--limit N]`:
//! per-image logits of the deterministic pass, predicted and true class of a run's test set
//! ([`cvn_models::predict`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use cvn_models::data::{Dataset, Spread};
use cvn_models::predict::predict;
use cvn_models::run::ArgmaxBnOrigin;
use cvn_models::run_lock::lock_if_writing_into;
use cvn_models::train::{integrity_note, load_run, run_argmax_bn};

use crate::device::DeviceArgs;
use crate::train::Bars;

#[derive(clap::Args)]
#[command(after_help = "Example: cargo xtask predict --run runs/resnet-u2 --out resnet-u2-test.csv")]
pub struct Args {
    /// Run folder (holding model.safetensors, or an old checkpoint.safetensors).
    #[arg(long, value_name = "DIR", value_parser = crate::cli::existing_dir)]
    run: PathBuf,
    /// Output file: .csv (columns index,label,predicted,logit_0,…) or .safetensors (tensors logits,
    /// index, label, predicted).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Data folder replacing the one the run was trained with [default: the run's].
    #[arg(long, value_name = "DIR", value_parser = crate::cli::existing_dir)]
    data: Option<PathBuf>,
    /// Only the first N test images [default: all].
    #[arg(long, value_name = "N", value_parser = crate::cli::at_least_one)]
    limit: Option<usize>,
    /// Images per forward pass [default: the run's evaluation batch size].
    #[arg(long, value_name = "N", value_parser = crate::cli::at_least_one)]
    batch: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = args.device.open()?;
    // Nothing is written into the run unless --out lies there: then one writer at a time.
    let _lock = lock_if_writing_into(&args.run, &args.out).with_context(|| format!("--out {}", args.out.display()))?;
    let (run, config, data) = load_run(&args.run, args.data.as_deref())?;
    if let Some(note) = integrity_note(&run.path, run.integrity) {
        println!("{note}");
    }
    data.notes.iter().for_each(|note| println!("note: {note}"));
    let mut model = run.model;
    model.to_device(&device)?;
    let argmax_bn = run_argmax_bn(&args.run, &model, &config, &data)?;
    let note = match &argmax_bn {
        Some((_, ArgmaxBnOrigin::Stored(path))) => format!("argmax BatchNorm statistics from {}", path.display()),
        Some((stats, ArgmaxBnOrigin::Estimated)) => {
            format!("argmax BatchNorm statistics estimated now on {} training images (the run stores none)", stats.images)
        }
        None => "no argmax BatchNorm statistics needed".to_string(),
    };
    let test: Arc<dyn Dataset> = match args.limit {
        Some(n) => Arc::new(Spread::first(data.test.clone(), n)),
        _ => data.test.clone(),
    };
    println!("predicting {} test images of {} with {} (deterministic pass; {note})", test.len(), data.source, run.path.display());
    let mut bars = Bars::default();
    let predictions = predict(&model, test, args.batch.unwrap_or(config.eval_batch_size), argmax_bn.as_ref().map(|(s, _)| s), &mut |p| {
        bars.show(&p, &config.model, config.competitors)
    })?;
    let metadata = BTreeMap::from([
        ("model_file".to_string(), run.path.display().to_string()),
        ("data".to_string(), data.source.clone()),
        ("mode".to_string(), format!("deterministic; {note}")),
    ]);
    predictions.write(&args.out, &metadata).with_context(|| format!("--out {}", args.out.display()))?;
    println!("top-1 {:.2}% on {} images; written to {}", 100.0 * predictions.top1(), predictions.len(), args.out.display());
    Ok(())
}

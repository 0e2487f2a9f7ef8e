//! `cargo xtask train --model vit-fmnist --competitors 4 --epochs N --batch B --out runs/NAME
//! [--resume] [--data DIR] [--lr ..] [--seed ..] [--train-limit N] ...`: trains a preset model with
//! progress bars, writing `model.safetensors` and `training_state.safetensors` (every epoch),
//! `argmax_bn.safetensors` (ResNet CVNs), `metrics.jsonl` and `summary.json` into the run folder
//! ([`cvn_models::train`], [`cvn_models::run`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cvn_models::data::PadCropFlip;
use cvn_models::train::{run_config, Evaluation, Progress, ScheduleConfig, Summary, TrainConfig, TrainData, Trainer};
use indicatif::{ProgressBar, ProgressStyle};

use crate::device::DeviceArgs;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  cargo xtask train --model vit-fmnist --competitors 4 --epochs 10 --out runs/vit-u4
  cargo xtask train --resume --out runs/vit-u4 --epochs 20")]
pub struct Args {
    /// Preset model: vit-fmnist, resnet18-fmnist, vit-concepts, resnet18-concepts, deit-tiny,
    /// deit-small, deit-base or resnet18 [default: vit-fmnist; with --resume: the run's].
    #[arg(long, value_name = "PRESET")]
    model: Option<String>,
    /// LWTA competitors U (1 = the conventional network) [default: 4; with --resume: the run's].
    #[arg(long, value_name = "U", value_parser = crate::cli::at_least_one)]
    competitors: Option<usize>,
    /// Epochs in all (with --resume: may be raised to train longer) [default: 10].
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// Training batch size [default: 128].
    #[arg(long, value_name = "N", value_parser = crate::cli::at_least_one)]
    batch: Option<usize>,
    /// Run folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint, with its settings (an imported run that
    /// has trained no epoch takes new ones: fine-tuning).
    #[arg(long)]
    resume: bool,
    /// Fashion-MNIST IDX folder, or for RGB models a folder with train/ and val/ ImageFolder trees,
    /// or `synthetic-concepts[:SEED]` (generated 32 px images of known concepts; presets
    /// vit-concepts, resnet18-concepts) [default: the installed Fashion-MNIST, else the embedded
    /// subset].
    #[arg(long, value_name = "DIR", value_parser = crate::cli::data_source)]
    data: Option<PathBuf>,
    /// Peak learning rate [default: 1e-3 AdamW for ViTs; SGD for ResNets, 0.05 with U=1, 0.4 for CVNs].
    #[arg(long, value_name = "LR")]
    lr: Option<f32>,
    /// Weight decay [default: the preset's recipe: 0.05 for ViTs, 5e-4 for ResNets].
    #[arg(long, value_name = "W")]
    weight_decay: Option<f32>,
    /// Label smoothing of the cross-entropy loss [default: 0.1].
    #[arg(long, value_name = "EPS")]
    label_smoothing: Option<f32>,
    /// Warm-up of the cosine schedule, in epochs (ViTs) [default: a tenth of the epochs, at most 1].
    #[arg(long, value_name = "EPOCHS")]
    warmup_epochs: Option<f32>,
    /// Seed of every random stream: LWTA and dropout noise, data order, augmentation,
    /// initialisation [default: 0].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Stochastic test passes averaged in the final evaluation [default: 6].
    #[arg(long, value_name = "N")]
    samples: Option<usize>,
    /// Train on N training images, spread evenly through the set (every class stays in) [default:
    /// all].
    #[arg(long, value_name = "N", value_parser = crate::cli::at_least_one)]
    train_limit: Option<usize>,
    /// Skip the deterministic test evaluation after each epoch.
    #[arg(long)]
    no_epoch_eval: bool,
    /// Train without augmentation (Fashion-MNIST: no random crop or flip).
    #[arg(long)]
    no_augment: bool,
    /// ImageFolder data: skip (and count) unreadable or truncated images instead of stopping at the
    /// first.
    #[arg(long)]
    skip_bad_images: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

impl Args {
    /// Writes the flags that were given over `config`.
    fn apply(&self, config: &mut TrainConfig) -> anyhow::Result<()> {
        if let Some(v) = &self.model {
            config.model.clone_from(v);
        }
        if let Some(v) = self.competitors {
            config.competitors = v;
        }
        if let Some(v) = self.epochs {
            config.epochs = v;
        }
        if let Some(v) = self.batch {
            config.batch_size = v;
        }
        if let Some(v) = self.lr {
            config.lr = v;
        }
        if let Some(v) = self.weight_decay {
            config.weight_decay = v;
        }
        if let Some(v) = self.label_smoothing {
            config.label_smoothing = v;
        }
        if let Some(v) = self.warmup_epochs {
            match &mut config.schedule {
                ScheduleConfig::Cosine { warmup_epochs, .. } => *warmup_epochs = v,
                ScheduleConfig::Step { .. } => {
                    bail!("--warmup-epochs: model `{}` trains with a step schedule, which has no warm-up", config.model)
                }
            }
        }
        if let Some(v) = self.seed {
            config.seed = v;
        }
        if let Some(v) = self.samples {
            config.samples = v;
        }
        if self.train_limit.is_some() {
            config.train_limit = self.train_limit;
        }
        if self.data.is_some() {
            config.data_dir.clone_from(&self.data);
        }
        if self.no_epoch_eval {
            config.eval_each_epoch = false;
        }
        if self.no_augment {
            config.augment = PadCropFlip::default();
        }
        if self.skip_bad_images {
            config.skip_bad_images = true;
        }
        Ok(())
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = args.device.open()?;
    let trainer = if args.resume {
        let mut config = run_config(&args.out)?;
        args.apply(&mut config)?;
        let data = TrainData::load(&config)?;
        data.notes.iter().for_each(|note| println!("note: {note}"));
        let trainer = Trainer::resume(&args.out, config, data)?;
        trainer.integrity_notes().iter().for_each(|note| println!("{note}"));
        trainer
    } else {
        let model = args.model.as_deref().unwrap_or("vit-fmnist");
        let mut config = TrainConfig::for_model(model, args.competitors.unwrap_or(4), args.epochs.unwrap_or(10))?;
        args.apply(&mut config)?;
        config.validate()?;
        let data = TrainData::load(&config)?;
        data.notes.iter().for_each(|note| println!("note: {note}"));
        Trainer::start(config, data, &args.out)?
    };
    let mut trainer = trainer.on_device(&device)?.with_autocast(args.device.autocast());
    let summary = train_with_progress(&mut trainer)?;
    print_summary(&summary, trainer.dir());
    Ok(())
}

/// Runs `trainer` to the end with progress bars and one line per epoch.
pub fn train_with_progress(trainer: &mut Trainer) -> anyhow::Result<Summary> {
    let mut bars = Bars::default();
    let (model, competitors) = (trainer.config().model.clone(), trainer.config().competitors);
    let dir = trainer.dir().to_path_buf();
    trainer.run(&mut |p| bars.show(&p, &model, competitors)).with_context(|| format!("training run {}", dir.display()))
}

/// Progress bars for training epochs and evaluation.
#[derive(Default)]
pub struct Bars {
    epoch: Option<ProgressBar>,
    eval: Option<ProgressBar>,
    epochs: usize,
}

fn bar(len: usize, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

impl Bars {
    pub fn show(&mut self, progress: &Progress, model: &str, competitors: usize) {
        match *progress {
            Progress::Start { source, epoch, epochs, steps_per_epoch, parameters } => {
                self.epochs = epochs;
                if epoch > epochs {
                    println!("{model} (U = {competitors}) has trained all {epochs} epochs; evaluating");
                } else {
                    let verb = if epoch > 1 { "resuming" } else { "training" };
                    println!(
                        "{verb} {model} (U = {competitors}, {parameters} parameters) at epoch {epoch} of {epochs}, {steps_per_epoch} steps per epoch"
                    );
                }
                println!("data: {source}");
            }
            Progress::EpochStart { epoch, batches } => {
                let b = bar(batches, "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}");
                b.set_prefix(format!("{epoch}/{}", self.epochs));
                self.epoch = Some(b);
            }
            Progress::Step { batch, loss, lr, images_per_sec, .. } => {
                if let Some(b) = &self.epoch {
                    b.set_position(batch as u64);
                    b.set_message(format!("loss {loss:.4} lr {lr:.2e} {images_per_sec:.0} img/s"));
                }
            }
            Progress::EpochEnd(m) => {
                if let Some(b) = self.epoch.take() {
                    b.finish_and_clear();
                }
                let test = m.test_top1.map_or(String::new(), |t| format!(", test top-1 {:.2}% (deterministic)", 100.0 * t));
                println!(
                    "epoch {}/{}: train loss {:.4}, train top-1 {:.2}%{test}, {:.0} images/s, {:.0} s",
                    m.epoch,
                    self.epochs,
                    m.train_loss,
                    100.0 * m.train_top1,
                    m.images_per_sec,
                    m.seconds
                );
            }
            Progress::Evaluating { done, total } => {
                let b = self.eval.get_or_insert_with(|| bar(total, "evaluating [{bar:30}] {pos}/{len} images ETA {eta}"));
                b.set_position(done as u64);
                if done >= total {
                    b.finish_and_clear();
                    self.eval = None;
                }
            }
        }
    }
}

/// Prints a test evaluation: top-1 in both modes and the active fraction of each activation layer.
pub fn print_evaluation(eval: &Evaluation, competitors: usize) {
    match eval.top1_sampled {
        Some(t) => println!(
            "test top-1: {:.2}% averaged over {} stochastic passes, {:.2}% deterministic ({} images)",
            100.0 * t,
            eval.samples,
            100.0 * eval.top1_deterministic,
            eval.images
        ),
        None => println!("test top-1: {:.2}% deterministic ({} images)", 100.0 * eval.top1_deterministic, eval.images),
    }
    if let Some(images) = eval.deterministic_bn_recalibrated_on {
        println!("(deterministic pass: BatchNorm statistics re-estimated with argmax winners on {images} training images)");
    }
    let lwta =
        if competitors > 1 { format!("LWTA layers should show 1/U = {:.4}", 1.0 / competitors as f64) } else { "conventional".into() };
    println!("active fraction per activation layer ({lwta}):");
    for (layer, fraction) in &eval.active_fraction {
        println!("  {layer:<20} {fraction:.4}");
    }
    if !eval.argmax_win_rate.is_empty() {
        println!(
            "competitions won by the strongest unit in the stochastic passes (1/U = {:.4}: the noise picks every winner; 1: the responses do):",
            1.0 / competitors as f64
        );
        for (layer, rate) in &eval.argmax_win_rate {
            println!("  {layer:<20} {rate:.4}");
        }
    }
}

pub fn print_summary(summary: &Summary, dir: &Path) {
    print_evaluation(&summary.test, summary.competitors);
    println!(
        "{} epochs, {} steps: {:.0} training images/s, wall time {:.0} s ({})",
        summary.epochs, summary.steps, summary.images_per_sec, summary.wall_seconds, summary.data_source
    );
    let argmax_bn = if dir.join(cvn_models::run::ARGMAX_BN_FILE).is_file() { ", argmax_bn.safetensors" } else { "" };
    println!("results in {}: summary.json, metrics.jsonl, model.safetensors, training_state.safetensors{argmax_bn}", dir.display());
}

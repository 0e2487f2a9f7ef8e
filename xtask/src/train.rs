//! `cargo xtask train --model vit-fmnist --competitors 4 --epochs N --batch B --out runs/NAME
//! [--resume] [--data DIR] [--lr ..] [--seed ..] [--train-limit N] ...`: trains a preset model with
//! progress bars, writing `model.safetensors` and `training_state.safetensors` (every epoch),
//! `argmax_bn.safetensors` (ResNet CVNs), `metrics.jsonl` and `summary.json` into the run folder
//! ([`cvn_models::train`], [`cvn_models::run`]).
//!
//! Under `mpirun -n N` (a build with `--features mpi`) every process is one data-parallel rank:
//! `--batch` is per rank, rank 0 alone prints and writes (see `cvn_models::train`'s module docs).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use cvn_dist::Collectives;
use cvn_models::data::PadCropFlip;
use cvn_models::train::{run_config, Evaluation, OptimizerConfig, Progress, ScheduleConfig, Summary, TrainConfig, TrainData, Trainer};
use indicatif::{ProgressBar, ProgressStyle};

use crate::device::DeviceArgs;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  cargo xtask train --model vit-fmnist --competitors 4 --epochs 10 --out runs/vit-u4
  cargo xtask train --resume --out runs/vit-u4 --epochs 20
  cargo xtask train --model vit-concepts --data synthetic-concepts --plant blocks.1.mlp.act:7=striped,blocks.2.mlp.act:0=red --out runs/vit-planted
  cargo xtask train --model resnet18-concepts --data synthetic-concepts --plant-random 8 --out runs/resnet-planted")]
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
    /// Training batch size per rank (the global batch is this × the ranks under `mpirun`, as in
    /// PyTorch DDP) [default: 128 in all, split across the ranks].
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
    /// Optimiser instead of the model's recipe: adamw, or sgd (momentum 0.9) [default: the
    /// preset's: AdamW for ViTs, SGD for ResNets].
    #[arg(long, value_name = "NAME", value_parser = ["adamw", "sgd"])]
    optimizer: Option<String>,
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
    /// Planted neurons: train these hidden units, beside the classification loss, to detect a
    /// concept of the data (`--data synthetic-concepts`), a comma-separated list of
    /// LAYER:UNIT=CONCEPT (`blocks.1.mlp.act:7=striped`; layers: the activation layers,
    /// `blocks.N.mlp.act` or `act`, `layerK.N.act1/act2`). The loss is (pooled output − presence)²
    /// on the pooled output dissection labels. Saved with the run: `dissect` reports how many
    /// planted units it names after their concept.
    #[arg(long, value_name = "LIST", value_parser = parse_plant, value_delimiter = ',')]
    plant: Vec<cvn_models::plant::PlantedUnit>,
    /// Plant N more units at random (from --seed): spread over the activation layers in turn,
    /// distinct units, the data's 21 concepts dealt in a random order.
    #[arg(long, value_name = "N")]
    plant_random: Option<usize>,
    /// Weight of the planted-unit loss against the cross-entropy (finite, >= 0; needs --plant or
    /// --plant-random) [default: 1].
    #[arg(long, value_name = "W")]
    plant_weight: Option<f32>,
    /// Data-parallel runs: seconds a collective waits for the other ranks before the job ends
    /// with an error (a rank died or hangs).
    #[arg(long, default_value_t = cvn_dist::DEFAULT_TIMEOUT.as_secs())]
    collective_timeout: u64,
    /// Data-parallel runs: synchronised BatchNorm (PyTorch's SyncBatchNorm): every BatchNorm layer
    /// normalises with the statistics of the global batch (all ranks' images) and folds them into
    /// its running statistics, instead of each rank's own batch; costs two small cross-rank sums per
    /// BatchNorm layer a step (each made of one broadcast per rank). With one process it is exactly plain BatchNorm. Models with
    /// BatchNorm only (the ResNets). Saved with the run: --resume keeps it, and refuses to add it
    /// to a run trained without it.
    #[arg(long)]
    sync_bn: bool,
    /// With --device cuda: one process per GPU on this machine, ranks of one NCCL job (a build
    /// with `--features nccl`; never run yet).
    #[arg(long)]
    gpus: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
}

impl Args {
    /// Writes the flags that were given over `config`; `--batch` is per rank of `world`.
    fn apply(&self, config: &mut TrainConfig, world: usize) -> anyhow::Result<()> {
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
            config.batch_size = v.checked_mul(world).with_context(|| format!("--batch {v} × {world} ranks overflows"))?;
        }
        if let Some(v) = self.lr {
            config.lr = v;
        }
        if let Some(v) = self.weight_decay {
            config.weight_decay = v;
        }
        match self.optimizer.as_deref() {
            Some("adamw") => config.optimizer = OptimizerConfig::AdamW,
            Some("sgd") => config.optimizer = OptimizerConfig::Sgd { momentum: 0.9 },
            _ => {}
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
        if let Some(w) = self.plant_weight {
            config.plant_weight = w;
        }
        if self.sync_bn {
            config.sync_bn = true;
        }
        Ok(())
    }

    /// `--plant-weight` only with units to plant, and a usable weight.
    fn check_plant_weight(&self) -> anyhow::Result<()> {
        let Some(w) = self.plant_weight else { return Ok(()) };
        if self.plant.is_empty() && self.plant_random.unwrap_or(0) == 0 {
            bail!("--plant-weight {w}: no units are planted; give --plant LIST or --plant-random N");
        }
        check_plant_weight(w)
    }
}

/// A planted-loss weight given on the command line must be finite and >= 0.
pub fn check_plant_weight(w: f32) -> anyhow::Result<()> {
    if !(w.is_finite() && w >= 0.0) {
        bail!("--plant-weight {w}: must be a finite number >= 0");
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.gpus {
        Some(0) => bail!("--gpus 0: give at least 1"),
        Some(gpus) if gpus > 1 => return spawn_gpu_ranks(gpus, &args),
        _ => {}
    }
    // NCCL serves real GPUs only (not the emulated backend, which runs on the CPU).
    let gpu = args.device.device == "cuda" || args.device.device.starts_with("cuda:");
    let comm = cvn_dist::init(gpu, Duration::from_secs(args.collective_timeout))?;
    let (rank, world) = (comm.rank(), comm.world_size());
    if world == 1 {
        return train(args, comm);
    }
    if let Err(err) = train(args, comm.clone()) {
        eprintln!("error (rank {rank} of {world}): {err:#}");
        // Every rank ends now; the others would otherwise wait in their next collective.
        comm.abort(1);
    }
    Ok(())
}

/// Trains as this process's rank of `comm` (one process: the only rank).
fn train(args: Args, comm: Arc<dyn Collectives>) -> anyhow::Result<()> {
    let (rank, world) = (comm.rank(), comm.world_size());
    let say = |line: &str| {
        if rank == 0 {
            println!("{line}");
        }
    };
    // Several ranks on one machine given plain `cuda` take a GPU each, by local rank.
    let device = match cvn_dist::Launch::from_env()? {
        launch if world > 1 && args.device.device == "cuda" => {
            DeviceArgs { device: format!("cuda:{}", launch.local_rank), ..args.device.clone() }
        }
        _ => args.device.clone(),
    }
    .open()?;
    let engine = comm.engine();
    if args.resume && (!args.plant.is_empty() || args.plant_random.is_some() || args.plant_weight.is_some()) {
        bail!("--plant, --plant-random and --plant-weight start a run; a resumed run keeps its planted units and weight");
    }
    args.check_plant_weight()?;
    let trainer = if args.resume {
        let mut config = run_config(&args.out)?;
        args.apply(&mut config, world)?;
        let data = TrainData::load(&config)?;
        data.notes.iter().for_each(|note| say(&format!("note: {note}")));
        let trainer = Trainer::resume_distributed(&args.out, config, data, comm)?;
        trainer.integrity_notes().iter().for_each(|note| say(note));
        trainer
    } else {
        let model = args.model.as_deref().unwrap_or("vit-fmnist");
        let mut config = TrainConfig::for_model(model, args.competitors.unwrap_or(4), args.epochs.unwrap_or(10))?;
        args.apply(&mut config, world)?;
        config.validate()?;
        let data = TrainData::load(&config)?;
        data.notes.iter().for_each(|note| say(&format!("note: {note}")));
        config.plant.extend(args.plant.iter().cloned());
        if let Some(n) = args.plant_random.filter(|&n| n > 0) {
            let model = cvn_models::Model::new(config.model_config()?, config.seed)?;
            let drawn = cvn_models::plant::random_plants(n, &model, data.train.as_ref(), config.seed)?;
            let fresh: Vec<_> =
                drawn.into_iter().filter(|p| !config.plant.iter().any(|q| q.layer == p.layer && q.unit == p.unit)).collect();
            config.plant.extend(fresh);
        }
        if !config.plant.is_empty() {
            let list: Vec<String> = config.plant.iter().map(ToString::to_string).collect();
            say(&format!("planted units ({}): {}", list.len(), list.join(", ")));
        }
        Trainer::start_distributed(config, data, &args.out, comm)?
    };
    let config = trainer.config();
    if world > 1 {
        let batch_norm = match (config.sync_bn, config.model_config()?.has_batch_norm()) {
            (true, _) => "; BatchNorm synchronised over the ranks (--sync-bn)",
            (false, true) => "; BatchNorm normalises per rank (no --sync-bn)",
            (false, false) => "",
        };
        say(&format!(
            "data-parallel: {world} ranks ({engine}) × batch {} = global batch {}; lr {:e} is the global batch's (not rescaled){batch_norm}",
            config.batch_size / world,
            config.batch_size,
            config.lr
        ));
    } else if config.sync_bn {
        say("note: --sync-bn with one process: plain BatchNorm over the whole batch");
    }
    let mut trainer = trainer.on_device(&device)?.with_autocast(args.device.autocast());
    let summary = train_with_progress(&mut trainer)?;
    if rank == 0 {
        print_summary(&summary, trainer.dir());
    }
    Ok(())
}

/// `train --gpus N`: this process makes the NCCL id and runs itself `N` times with torchrun-style
/// variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`) and the id; when one rank fails the others are
/// ended.
#[cfg(feature = "nccl")]
fn spawn_gpu_ranks(gpus: usize, args: &Args) -> anyhow::Result<()> {
    if args.device.device != "cuda" {
        bail!("--gpus {gpus} needs --device cuda (each rank takes GPU LOCAL_RANK), got --device {}", args.device.device);
    }
    let id = cvn_dist::id_to_hex(&cvn_dist::Nccl::new_id().context("--gpus: cannot make an NCCL id")?);
    let exe = std::env::current_exe().context("--gpus: cannot find this program to start its ranks")?;
    // The same command line without --gpus.
    let mut passed = Vec::new();
    let mut given = std::env::args_os().skip(1);
    while let Some(arg) = given.next() {
        match arg.to_str() {
            Some("--gpus") => {
                given.next();
            }
            Some(a) if a.starts_with("--gpus=") => {}
            _ => passed.push(arg),
        }
    }
    let mut ranks = Vec::new();
    for rank in 0..gpus {
        let child = std::process::Command::new(&exe)
            .args(&passed)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", gpus.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env(cvn_dist::NCCL_ID_VAR, &id)
            .spawn()
            .with_context(|| format!("--gpus: cannot start rank {rank}"))?;
        ranks.push(child);
    }
    let mut running = gpus;
    while running > 0 {
        running = 0;
        for (rank, child) in ranks.iter_mut().enumerate() {
            match child.try_wait()? {
                None => running += 1,
                Some(status) if status.success() => {}
                Some(status) => {
                    ranks.iter_mut().for_each(|c| drop(c.kill()));
                    bail!("rank {rank} of {gpus} ended with {status}; the other ranks were stopped");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

#[cfg(not(feature = "nccl"))]
fn spawn_gpu_ranks(gpus: usize, _args: &Args) -> anyhow::Result<()> {
    bail!("--gpus {gpus}: this binary was built without NCCL; rebuild with `--features nccl`, or launch the ranks with `mpirun -n {gpus}`")
}

/// Runs `trainer` to the end with progress bars and one line per epoch.
/// (Only rank 0 of a data-parallel run shows them.)
pub fn train_with_progress(trainer: &mut Trainer) -> anyhow::Result<Summary> {
    let mut bars = Bars::default();
    let (model, competitors) = (trainer.config().model.clone(), trainer.config().competitors);
    let dir = trainer.dir().to_path_buf();
    let shown = trainer.rank().0 == 0;
    trainer
        .run(&mut |p| {
            if shown {
                bars.show(&p, &model, competitors)
            }
        })
        .with_context(|| format!("training run {}", dir.display()))
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

/// One `--plant` entry, checked for form (the model and data check the rest when training starts).
fn parse_plant(spec: &str) -> Result<cvn_models::plant::PlantedUnit, String> {
    cvn_models::plant::PlantedUnit::parse(spec).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn check(flags: &[&str]) -> Result<(), String> {
        let cli = <Cli as clap::Parser>::try_parse_from(["train", "--out", "r"].iter().chain(flags)).map_err(|e| e.to_string())?;
        let mut config = TrainConfig::for_model("vit-concepts", 4, 1).unwrap();
        cli.args.check_plant_weight().map_err(|e| e.to_string())?;
        cli.args.apply(&mut config, 1).map_err(|e| e.to_string())?;
        assert_eq!(config.plant_weight, cli.args.plant_weight.unwrap_or(cvn_models::plant::PLANT_WEIGHT));
        Ok(())
    }

    #[test]
    fn sync_bn_is_recorded_and_refused_for_models_without_batch_norm() {
        let parse = |flags: &[&str]| <Cli as clap::Parser>::try_parse_from(["train", "--out", "r"].iter().chain(flags)).unwrap();
        let mut config = TrainConfig::for_model("resnet18-fmnist", 1, 1).unwrap();
        parse(&[]).args.apply(&mut config, 2).unwrap();
        assert!(!config.sync_bn);
        parse(&["--sync-bn"]).args.apply(&mut config, 2).unwrap();
        assert!(config.sync_bn);
        config.validate().unwrap();
        let mut vit = TrainConfig::for_model("vit-fmnist", 1, 1).unwrap();
        parse(&["--sync-bn"]).args.apply(&mut vit, 2).unwrap();
        let err = vit.validate().unwrap_err().to_string();
        assert!(err.contains("--sync-bn") && err.contains("`vit-fmnist` has no BatchNorm layers"), "{err}");
    }

    #[test]
    fn plant_weight_needs_plants_and_a_finite_non_negative_value() {
        check(&[]).unwrap();
        check(&["--plant-random", "4", "--plant-weight", "0.3"]).unwrap();
        check(&["--plant", "act:1=red", "--plant-weight", "0"]).unwrap();
        let err = check(&["--plant-weight", "0.3"]).unwrap_err();
        assert!(err.contains("--plant-weight 0.3") && err.contains("no units are planted"), "{err}");
        let err = check(&["--plant-random", "0", "--plant-weight", "0.3"]).unwrap_err();
        assert!(err.contains("no units are planted"), "{err}");
        for bad in ["-1", "NaN", "inf"] {
            let err = check(&["--plant-random", "4", &format!("--plant-weight={bad}")]).unwrap_err();
            assert!(err.contains("--plant-weight") && err.contains("finite number >= 0"), "{bad}: {err}");
        }
    }
}

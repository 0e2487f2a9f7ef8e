//! `cargo xtask dissect --run runs/NAME [--layers a,b] [--clip DIR] [--concepts FILE|NAME]
//! [--similarity soft-wpmi] [--probe fashion-mnist-test|synthetic-concepts|IMAGEFOLDER] [--examples 16]
//! [--compare runs/OTHER] [--no-cache]`: names the neurons of a run's network (CLIP-Dissect), explains
//! probe images by their winners and writes `neurons.csv`, `summary.json` and `report.html` into
//! `runs/NAME/dissect/` ([`dissect`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context};
use cvn_autograd::Device;
use cvn_models::data::synthetic_concepts::{self, Split, SplitSizes};
use cvn_models::data::{ConceptSplit, FashionMnist, FolderTransform, ImageFolder};
use cvn_models::train::{integrity_note, run_config};
use cvn_models::RunLock;
use dissect::cache::Cache;
use dissect::integration::{ClipModelEncoder, DatasetProbe, ModelSource, Sampling};
use dissect::pipeline::{dissect, Dissection, Options, Scorer};
use dissect::record::Pooling;
use dissect::report::{write_outputs, Named, Outputs};
use dissect::source::{ProbeSet, Progress};
use dissect::{ConceptSet, Similarity};
use indicatif::{ProgressBar, ProgressStyle};

/// The probe set named `fashion-mnist-test`; besides it and `synthetic-concepts[:SEED]`, a probe is
/// an ImageFolder path.
const FASHION_MNIST_TEST: &str = "fashion-mnist-test";

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Run folder (holding model.safetensors, or an old checkpoint.safetensors).
    #[arg(long)]
    run: PathBuf,
    /// Layers to name, comma-separated (default: the competition layers and the classifier; ResNet:
    /// layer1..layer4 and fc).
    #[arg(long, value_delimiter = ',')]
    layers: Vec<String>,
    /// Hugging Face CLIP directory (config.json, model.safetensors, tokenizer.json). Without it the
    /// label backend names neurons after the probe set's annotated concepts, else its classes.
    #[arg(long)]
    clip: Option<PathBuf>,
    /// Concept set: a file (one concept per line) or 20k, 10k, 3k, broden, imagenet, places365,
    /// cifar100, imagenet-gpt (default: 20k with --clip; without, the probe's annotated concepts,
    /// else its class names).
    #[arg(long)]
    concepts: Option<String>,
    /// cos, cos-cubed, rank-reorder, wpmi or soft-wpmi.
    #[arg(long, default_value = "soft-wpmi")]
    similarity: Similarity,
    /// Probe images: fashion-mnist-test (the run's Fashion-MNIST), synthetic-concepts[:SEED] (the
    /// generated set's probe split, with its true concepts), or an ImageFolder directory (with a
    /// concepts.csv at its root: concept annotations).
    #[arg(long, default_value = FASHION_MNIST_TEST)]
    probe: String,
    /// Only the first N probe images.
    #[arg(long)]
    limit: Option<usize>,
    /// Probe images explained by their winners in the report.
    #[arg(long, default_value_t = 16)]
    examples: usize,
    /// The layer whose winners explain the examples (default: the last named layer that feeds the
    /// classifier, else the last named one before it).
    #[arg(long)]
    explain_layer: Option<String>,
    /// A second run (e.g. the conventional twin) dissected the same way and compared in the report.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Spatial pooling of conv maps: mean or max.
    #[arg(long, default_value = "mean")]
    pooling: Pooling,
    /// Sample competition winners with this seed (DISCOVER's stochastic inference) instead of argmax.
    #[arg(long)]
    sample: Option<u64>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Recompute activations and CLIP embeddings instead of using runs/NAME/dissect/cache.
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    device: crate::device::DeviceArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let outputs = dissect_run(&args)?;
    println!("report: {}", outputs.report_html.display());
    Ok(())
}

/// Dissects `args.run` (and `--compare`), writes the outputs and prints a summary.
pub fn dissect_run(args: &Args) -> anyhow::Result<Outputs> {
    // Outputs and activation caches are written into the runs: one writer per run at a time.
    let _locks = lock_runs(args)?;
    let device = args.device.open()?;
    let clip = match &args.clip {
        Some(dir) => Some(ClipModelEncoder::load(dir, &device, args.device.dtype()).with_context(|| format!("--clip {}", dir.display()))?),
        None => None,
    };
    let main = dissect_one(args, &args.run, clip.as_ref(), &device)?;
    let other = match &args.compare {
        Some(other) => Some(dissect_one(args, other, clip.as_ref(), &device).with_context(|| format!("--compare {}", other.display()))?),
        None => None,
    };
    let (dissection, probe) = &main;
    print_summary(&args.run, dissection);
    let run_name = args.run.display().to_string();
    let other_name = args.compare.as_ref().map(|p| p.display().to_string());
    let compare = other.as_ref().zip(other_name.as_deref()).map(|((d, _), run)| Named { run, dissection: d });
    if let Some(named) = compare {
        print_summary(Path::new(named.run), named.dissection);
    }
    let dir = args.run.join("dissect");
    write_outputs(&dir, Named { run: &run_name, dissection }, probe.as_ref(), compare).with_context(|| format!("writing {}", dir.display()))
}

/// Locks `--run` and `--compare` (once if they are the same folder).
fn lock_runs(args: &Args) -> anyhow::Result<Vec<RunLock>> {
    let mut locks = vec![RunLock::existing(&args.run)?];
    if let Some(other) = &args.compare {
        let same = std::fs::canonicalize(other).ok().zip(std::fs::canonicalize(&args.run).ok()).is_some_and(|(a, b)| a == b);
        if !same {
            locks.push(RunLock::existing(other).with_context(|| format!("--compare {}", other.display()))?);
        }
    }
    Ok(locks)
}

fn dissect_one(
    args: &Args,
    run: &Path,
    clip: Option<&ClipModelEncoder>,
    device: &Device,
) -> anyhow::Result<(Dissection, Box<dyn ProbeSet>)> {
    let sampling = match args.sample {
        Some(seed) => Sampling::Sample { seed, batch_size: args.batch },
        None => Sampling::Deterministic,
    };
    let mut source = ModelSource::from_run(run, sampling)?;
    if let Some(note) = integrity_note(&cvn_models::run::model_file(run)?, source.integrity()) {
        println!("{note}");
    }
    source.to_device(device)?;
    if let Some(note) = source.batch_norm_note() {
        println!("{}: {note}", run.display());
    }
    let probe = load_probe(args, run, &source)?;
    let concepts = match (&args.concepts, clip) {
        (Some(spec), _) => ConceptSet::load(spec)?,
        (None, Some(_)) => ConceptSet::load("20k")?,
        (None, None) => match probe.annotations() {
            Some(a) => ConceptSet::from_lines(format!("concepts annotated in {}", a.source()), a.names().iter().map(String::as_str))?,
            None => ConceptSet::from_lines(format!("class names of {}", args.probe), probe.class_names().iter().map(String::as_str))?,
        },
    };
    let scorer = match clip {
        Some(clip) => Scorer::Clip(clip),
        None => Scorer::Labels,
    };
    let options = Options {
        layers: args.layers.clone(),
        similarity: args.similarity,
        pooling: args.pooling,
        examples: args.examples,
        explain_layer: args.explain_layer.clone(),
        batch_size: args.batch,
        ..Options::default()
    };
    let cache = if args.no_cache { Cache::disabled() } else { Cache::at(run.join("dissect").join("cache")) };
    // The run is locked: temporary files here are a killed writer's.
    cvn_autograd::io::remove_stale_temps(&run.join("dissect"))?;
    cache.remove_stale_temps()?;
    println!(
        "dissecting {} on {} ({} images) against {} ({} concepts), {}",
        run.display(),
        args.probe,
        probe.len(),
        concepts.name(),
        concepts.len(),
        args.similarity
    );
    let bars = Bars::default();
    let dissection = dissect(&mut source, probe.as_ref(), scorer, &concepts, &options, &cache, &bars)
        .with_context(|| format!("dissecting {}", run.display()))?;
    Ok((dissection, probe))
}

fn load_probe(args: &Args, run: &Path, source: &ModelSource) -> anyhow::Result<Box<dyn ProbeSet>> {
    let probe = if let Some(seed) = synthetic_concepts::parse_spec(&args.probe) {
        let split = ConceptSplit::new(seed?, Split::Probe, SplitSizes::default().probe)?;
        DatasetProbe::synthetic(split)?
    } else if args.probe == FASHION_MNIST_TEST {
        // The Fashion-MNIST copy the run was trained on (its --data), else the usual search.
        let data_dir = run_config(run).ok().and_then(|c| c.data_dir);
        let data = FashionMnist::load(data_dir.as_deref())?;
        DatasetProbe::idx(FASHION_MNIST_TEST, data.test)?
    } else {
        let dir = PathBuf::from(&args.probe);
        let Some(size) = source.model().config().img_size() else {
            bail!("--probe {}: the model does not say its input size", dir.display());
        };
        let folder = ImageFolder::open(&dir, FolderTransform::eval(size))
            .and_then(|f| f.scan(false))
            .with_context(|| format!("--probe {}", dir.display()))?;
        DatasetProbe::annotated_image_folder(&args.probe, &dir, folder)?
    };
    probe.check_fits(source.model().config()).with_context(|| format!("--probe {}", args.probe))?;
    Ok(Box::new(match args.limit {
        Some(n) => probe.truncated(n),
        None => probe,
    }))
}

fn print_summary(run: &Path, d: &Dissection) {
    println!("{}: labels by {}", run.display(), d.backend);
    if !d.unmatched_classes.is_empty() {
        println!("  classes not in the concept set: {}", d.unmatched_classes.join(", "));
    }
    for layer in &d.layers {
        let common: Vec<String> = layer.label_distribution.iter().take(3).map(|c| format!("{} ×{}", c.label, c.neurons)).collect();
        println!(
            "  {:<20} {:>5} units  active {:>6.3}  {:>4} distinct labels ({}){}",
            layer.layer,
            layer.units,
            layer.active_fraction,
            layer.label_distribution.len(),
            common.join(", "),
            if layer.cached { "  [cached]" } else { "" }
        );
    }
    if let Some(c) = &d.classifier {
        let cosine = c.mean_cosine.map_or(String::new(), |v| format!(", CLIP-text cosine {v:.3}"));
        println!(
            "  classifier `{}`: label accuracy top-1 {:.1}%, top-5 {:.1}% over {} classes{cosine}",
            c.layer,
            100.0 * c.top1,
            100.0 * c.top5,
            c.classes
        );
    }
}

/// Progress bars for the library's long stages.
#[derive(Default)]
struct Bars {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bars {
    fn start(&self, stage: &str, total: u64) {
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template("{prefix:32} [{bar:30}] {pos}/{len} ETA {eta}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(stage.to_string());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn advance(&self, steps: u64) {
        if let Ok(slot) = self.bar.lock() {
            if let Some(bar) = slot.as_ref() {
                bar.inc(steps);
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        }
    }
}

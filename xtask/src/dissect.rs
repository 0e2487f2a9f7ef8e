//! `cargo xtask dissect --run runs/NAME [--out DIR] [--layers a,b] [--clip DIR] [--concepts FILE|NAME]
//! [--similarity soft-wpmi] [--probe fashion-mnist-test|synthetic-concepts|IMAGEFOLDER] [--examples 16]
//! [--compare runs/OTHER] [--sampled [--seed N]] [--no-cache] [--force]`: names the neurons of a
//! run's network (CLIP-Dissect), explains probe images by their winners and writes `neurons.csv`,
//! `summary.json` and `report.html` into `--out` (default `runs/NAME/dissect/`), which holds one
//! dissection: other settings go elsewhere unless `--force` ([`dissect::outputs`]).

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
use dissect::outputs::{check_out_dir, write_outputs, Named, Outputs, Provenance, RunInfo, Settings};
use dissect::pipeline::{dissect, planned_layers, Dissection, Options, Scorer};
use dissect::record::Pooling;
use dissect::source::{ProbeSet, Progress};
use dissect::{ConceptSet, Similarity};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{at_least_one, existing_dir};

/// The probe set named `fashion-mnist-test`; besides it and `synthetic-concepts[:SEED]`, a probe is
/// an ImageFolder path.
const FASHION_MNIST_TEST: &str = "fashion-mnist-test";

/// `--probe`: the name `fashion-mnist-test`, `synthetic-concepts[:SEED]`, else a folder that exists.
fn probe_spec(value: &str) -> Result<String, String> {
    if value == FASHION_MNIST_TEST {
        Ok(value.to_string())
    } else {
        crate::cli::data_source(value).map(|_| value.to_string())
    }
}

#[derive(clap::Args, Clone)]
#[command(after_help = "Examples:
  cargo xtask dissect --run runs/vit-u4 --compare runs/vit-u1
  cargo xtask dissect --run runs/vit-u4 --clip weights/clip-vit-base-patch16 --concepts broden --similarity cos --out runs/vit-u4/dissect-broden-cos")]
pub struct Args {
    /// Run folder (holding model.safetensors, or an old checkpoint.safetensors).
    #[arg(long, value_name = "DIR", value_parser = existing_dir)]
    run: PathBuf,
    /// Folder for neurons.csv, summary.json and report.html. It holds one dissection: one made with
    /// other settings (layers, similarity, concepts, probe, ...) is not replaced without --force
    /// [default: RUN/dissect].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Replace the dissection in --out even when it was made with other settings.
    #[arg(long)]
    force: bool,
    /// Layers to name, comma-separated [default: the competition layers and the classifier; ResNet:
    /// layer1..layer4 and fc].
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    layers: Vec<String>,
    /// Hugging Face CLIP directory (config.json, model.safetensors, tokenizer.json). Without it the
    /// label backend names neurons after the probe set's annotated concepts, else its classes.
    #[arg(long, value_name = "DIR", value_parser = existing_dir)]
    clip: Option<PathBuf>,
    /// Concept set: a file (one concept per line) or 20k, 10k, 3k, broden, imagenet, places365,
    /// cifar100, imagenet-gpt [default: 20k with --clip; without, the probe's annotated concepts,
    /// else its class names].
    #[arg(long, value_name = "FILE|NAME")]
    concepts: Option<String>,
    /// Similarity of neurons and concepts: cos, cos-cubed, rank-reorder, wpmi or soft-wpmi
    /// [default: soft-wpmi with --clip (CLIP-Dissect's); without, cos (annotations and class
    /// labels: best in the concept benchmark, see README)].
    #[arg(long)]
    similarity: Option<Similarity>,
    /// Probe images: fashion-mnist-test (the run's Fashion-MNIST test split),
    /// synthetic-concepts[:SEED] (the generated set's probe split, with its true concepts), or an
    /// ImageFolder directory (with a concepts.csv at its root: concept annotations).
    #[arg(long, value_name = "NAME|DIR", default_value = FASHION_MNIST_TEST, value_parser = probe_spec)]
    probe: String,
    /// Only the first N probe images [default: all].
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    limit: Option<usize>,
    /// Probe images explained by their winners in the report (0: none).
    #[arg(long, value_name = "N", default_value_t = 16)]
    examples: usize,
    /// The layer whose winners explain the examples [default: the last named layer that feeds the
    /// classifier, else the last named one before it].
    #[arg(long, value_name = "NAME")]
    explain_layer: Option<String>,
    /// A second run (e.g. the conventional twin) dissected the same way and compared in the report.
    #[arg(long, value_name = "DIR", value_parser = existing_dir)]
    compare: Option<PathBuf>,
    /// Spatial pooling of conv maps: mean or max.
    #[arg(long, default_value = "mean")]
    pooling: Pooling,
    /// Sample the competition winners (DISCOVER's stochastic inference) instead of taking each
    /// block's strongest unit.
    #[arg(long)]
    sampled: bool,
    /// Seed of the sampled winners' noise (with --sampled) [default: the run's training seed].
    #[arg(long, value_name = "N", requires = "sampled")]
    seed: Option<u64>,
    /// Images per forward pass.
    #[arg(long, value_name = "N", default_value = "64", value_parser = at_least_one)]
    batch: usize,
    /// Recompute activations and CLIP embeddings instead of using RUN/dissect/cache.
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    device: crate::device::DeviceArgs,
}

impl Args {
    /// Where the outputs go.
    fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| self.run.join("dissect"))
    }

    /// `--force` (the demo replaces its whole run, dissection included).
    pub fn forced(mut self) -> Self {
        self.force = true;
        self
    }
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
    let main = Prepared::new(args, &args.run, clip.as_ref(), &device)?;
    let other = match &args.compare {
        Some(other) => Some(Prepared::new(args, other, clip.as_ref(), &device).with_context(|| format!("--compare {}", other.display()))?),
        None => None,
    };
    // Before the long work: the output folder must be free for these settings.
    let out = args.out_dir();
    let settings = main.settings(args);
    check_out_dir(&out, &settings, args.force)?;
    // Locked above: temporary files there are a killed writer's.
    cvn_autograd::io::remove_stale_temps(&out)?;
    let provenance = Provenance::now(settings, std::env::args().collect());

    let main = main.run(args, clip.as_ref())?;
    print_summary(&args.run, &main.dissection);
    let other = match other {
        Some(prepared) => {
            let dir = prepared.run_dir.clone();
            Some(prepared.run(args, clip.as_ref()).with_context(|| format!("--compare {}", dir.display()))?)
        }
        None => None,
    };
    if let Some(o) = &other {
        print_summary(&o.run_dir, &o.dissection);
    }
    let compare = other.as_ref().map(|o| Named { run: &o.info, dissection: &o.dissection });
    write_outputs(&out, Named { run: &main.info, dissection: &main.dissection }, main.probe.as_ref(), compare, &provenance)
        .with_context(|| format!("writing {}", out.display()))
}

/// Locks `--run`, `--compare` (once if they are the same folder) and `--out` when it lies outside
/// the run.
fn lock_runs(args: &Args) -> anyhow::Result<Vec<RunLock>> {
    let out = args.out_dir();
    let mut locks = match cvn_models::run_lock::lock_if_writing_into(&args.run, &out.join(dissect::outputs::REPORT_HTML))? {
        Some(run) => vec![run],
        None => vec![RunLock::existing(&args.run)?, RunLock::acquire(&out).with_context(|| format!("--out {}", out.display()))?],
    };
    if let Some(other) = &args.compare {
        let same = std::fs::canonicalize(other).ok().zip(std::fs::canonicalize(&args.run).ok()).is_some_and(|(a, b)| a == b);
        if !same {
            locks.push(RunLock::existing(other).with_context(|| format!("--compare {}", other.display()))?);
        }
    }
    Ok(locks)
}

/// One run loaded with its probe set, concepts and options: everything but the long work.
struct Prepared {
    run_dir: PathBuf,
    source: ModelSource,
    probe: Box<dyn ProbeSet>,
    concepts: ConceptSet,
    options: Options,
    cache: Cache,
}

/// One run dissected.
struct Done {
    run_dir: PathBuf,
    info: RunInfo,
    dissection: Dissection,
    probe: Box<dyn ProbeSet>,
}

impl Prepared {
    fn new(args: &Args, run: &Path, clip: Option<&ClipModelEncoder>, device: &Device) -> anyhow::Result<Self> {
        let sampling = if args.sampled {
            let seed = match args.seed {
                Some(seed) => seed,
                None => run_config(run)
                    .map(|c| c.seed)
                    .with_context(|| format!("--sampled: the seed of {} (or give --seed N)", run.display()))?,
            };
            Sampling::Sample { seed, batch_size: args.batch }
        } else {
            Sampling::Deterministic
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
            (Some(spec), _) => ConceptSet::load(spec).with_context(|| format!("--concepts {spec}"))?,
            (None, Some(_)) => ConceptSet::load("20k")?,
            (None, None) => match probe.annotations() {
                Some(a) => ConceptSet::from_lines(format!("concepts annotated in {}", a.source()), a.names().iter().map(String::as_str))?,
                None => ConceptSet::from_lines(format!("class names of {}", args.probe), probe.class_names().iter().map(String::as_str))?,
            },
        };
        // The run's planted units (train --plant), checked when their concepts are in the set.
        let plants = run_config(run).map(|c| c.plant).unwrap_or_default();
        let missing: Vec<&str> = plants.iter().filter(|p| concepts.find(&p.concept).is_none()).map(|p| p.concept.as_str()).collect();
        if !missing.is_empty() {
            println!(
                "note: {} planted units are not checked: {} not in the concept set {}",
                plants.len(),
                missing.join(", "),
                concepts.name()
            );
        }
        let planted = if missing.is_empty() {
            plants.into_iter().map(|p| dissect::planted::Planted { layer: p.layer, unit: p.unit, concept: p.concept }).collect()
        } else {
            Vec::new()
        };
        let options = Options {
            planted,
            layers: args.layers.clone(),
            similarity: args.similarity.unwrap_or(if clip.is_some() { Similarity::default() } else { Similarity::EXACT_DEFAULT }),
            pooling: args.pooling,
            examples: args.examples,
            explain_layer: args.explain_layer.clone(),
            batch_size: args.batch,
            ..Options::default()
        };
        let cache = if args.no_cache { Cache::disabled() } else { Cache::at(run.join("dissect").join("cache")) };
        Ok(Self { run_dir: run.to_path_buf(), source, probe, concepts, options, cache })
    }

    /// What makes this dissection differ from another of the same run.
    fn settings(&self, args: &Args) -> Settings {
        let (layers, explain_layer) = planned_layers(&self.source, &self.options);
        Settings {
            layers,
            backend: args.clip.as_ref().map_or("labels".to_string(), |dir| format!("clip {}", dir.display())),
            concepts: self.concepts.name().to_string(),
            similarity: self.options.similarity.name().to_string(),
            pooling: self.options.pooling.to_string(),
            probe: self.probe.id(),
            sampling: self.source.sampling().to_string(),
            examples: self.options.examples,
            explain_layer,
            compare: args.compare.as_ref().map(|p| p.display().to_string()),
        }
    }

    fn run(mut self, args: &Args, clip: Option<&ClipModelEncoder>) -> anyhow::Result<Done> {
        let run = &self.run_dir;
        // The run is locked: temporary files here are a killed writer's.
        cvn_autograd::io::remove_stale_temps(&run.join("dissect"))?;
        self.cache.remove_stale_temps()?;
        println!(
            "dissecting {} on {} ({} images) against {} ({} concepts), {}",
            run.display(),
            args.probe,
            self.probe.len(),
            self.concepts.name(),
            self.concepts.len(),
            self.options.similarity.name()
        );
        let scorer = match clip {
            Some(clip) => Scorer::Clip(clip),
            None => Scorer::Labels,
        };
        let bars = Bars::default();
        let dissection = dissect(&mut self.source, self.probe.as_ref(), scorer, &self.concepts, &self.options, &self.cache, &bars)
            .with_context(|| format!("dissecting {}", run.display()))?;
        let info = self.source.run_info(run)?;
        Ok(Done { run_dir: self.run_dir, info, dissection, probe: self.probe })
    }
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
        println!("  {:<20} {} labelled{}", "", layer.quality.labelled, layer.quality.note());
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
    if let Some(p) = &d.planted {
        let rates: Vec<String> = p
            .by_similarity
            .iter()
            .map(|i| format!("{} {}/{} ({:.0}%)", i.similarity, i.identified, i.planted, 100.0 * i.accuracy))
            .collect();
        println!("  planted units named after their concept: {} (chance {:.1}%)", rates.join(", "), 100.0 * p.chance);
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

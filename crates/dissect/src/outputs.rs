//! The files of a dissection folder (`dissect --out DIR`, by default `runs/NAME/dissect/`):
//! `neurons.csv` (one tidy row per neuron), `summary.json` (what was dissected, how, by which
//! command, and what was found) and `report.html` ([`crate::report`]).
//!
//! A folder holds one dissection: [`check_out_dir`] refuses to replace one made with other
//! [`Settings`] (other layers, similarity, concepts, probe, …) unless forced, so a second
//! dissection of a run goes into a folder of its own instead of silently replacing the first.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DissectError, Result};
use crate::explain::Explanation;
use crate::label::ClassifierEvaluation;
use crate::pipeline::{Dissection, LabelCount, LayerReport, NeuronReport};
use crate::planted::PlantedReport;
use crate::quality::{LabelQuality, LayerQuality};
use crate::report::report_html;
use crate::source::ProbeSet;

pub const NEURONS_CSV: &str = "neurons.csv";
pub const SUMMARY_JSON: &str = "summary.json";
pub const REPORT_HTML: &str = "report.html";

/// What the outputs say about a dissected run: which model, and how well it classifies.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RunInfo {
    /// The run folder as given.
    pub run: String,
    /// Preset name (`vit-fmnist`, `resnet18`, …), or the architecture when the run names none.
    pub model: String,
    /// LWTA competitors U (1: the conventional network).
    pub competitors: usize,
    /// The model file dissected.
    pub checkpoint: String,
    /// The model file's `content_sha256` metadata (`None`: a file written without one).
    pub content_sha256: Option<String>,
    /// Test top-1 from the run's `summary.json` (stochastic passes averaged), when it has one.
    pub test_top1_sampled: Option<f64>,
    /// Test top-1 of the deterministic pass from the run's `summary.json`.
    pub test_top1_deterministic: Option<f64>,
}

/// A dissection with the run it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Named<'a> {
    pub run: &'a RunInfo,
    pub dissection: &'a Dissection,
}

/// The settings that make two dissections of a run different: one folder holds one of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Layers named, the explained layer included.
    pub layers: Vec<String>,
    /// `labels`, or `clip DIR`.
    pub backend: String,
    pub concepts: String,
    pub similarity: String,
    pub pooling: String,
    /// The probe set's id (its name, content hash and any `--limit`).
    pub probe: String,
    /// `deterministic`, or the sampling seed and batch.
    pub sampling: String,
    pub examples: usize,
    pub explain_layer: Option<String>,
    /// The `--compare` run.
    pub compare: Option<String>,
}

/// How the outputs were made: the settings, the command line and when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provenance {
    pub settings: Settings,
    /// The command line, one argument per element.
    pub command: Vec<String>,
    /// When the outputs were written, UTC, ISO 8601.
    pub date: String,
}

impl Provenance {
    /// `settings` and `command`, dated now.
    pub fn now(settings: Settings, command: Vec<String>) -> Self {
        let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self { settings, command, date: utc_iso8601(seconds) }
    }
}

/// `seconds` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian calendar).
fn utc_iso8601(seconds: u64) -> String {
    let (days, time) = ((seconds / 86_400) as i64, seconds % 86_400);
    // Days to civil date (H. Hinnant's algorithm), counting eras of 400 years from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", time / 3600, time / 60 % 60, time % 60)
}

/// Whether `dir` may receive a dissection made with `settings`: yes when it holds none, or one made
/// with the same settings (a rerun replaces it), or `force`. Otherwise the error lists what
/// differs. A folder whose `summary.json` records no settings (an older version's) is replaced only
/// with `force` too. A run folder never is, forced or not: its `summary.json` is the training's.
pub fn check_out_dir(dir: &Path, settings: &Settings, force: bool) -> Result<()> {
    if cvn_models::run::has_model(dir) {
        return Err(DissectError::OutputsExist {
            dir: dir.to_path_buf(),
            what: "a run (its model and training summary.json, which the outputs would replace)".into(),
        });
    }
    let summary_path = dir.join(SUMMARY_JSON);
    let present = [NEURONS_CSV, SUMMARY_JSON, REPORT_HTML].iter().any(|f| dir.join(f).exists());
    if force || !present {
        return Ok(());
    }
    let previous = std::fs::read_to_string(&summary_path)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|summary| summary.get("settings").cloned());
    let refuse = |what: String| DissectError::OutputsExist { dir: dir.to_path_buf(), what };
    let Some(previous) = previous else {
        return Err(refuse("a dissection whose settings were not recorded (made by an older version)".into()));
    };
    let current = serde_json::to_value(settings).map_err(|e| DissectError::format(&summary_path, e.to_string()))?;
    let differences: Vec<String> = current
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, value)| previous.get(key.as_str()) != Some(value))
        .map(|(key, value)| format!("{key}: {} there, {value} now", previous.get(key.as_str()).unwrap_or(&serde_json::Value::Null)))
        .collect();
    if differences.is_empty() {
        Ok(())
    } else {
        Err(refuse(format!("a dissection made with other settings ({})", differences.join("; "))))
    }
}

/// The files [`write_outputs`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs {
    pub neurons_csv: PathBuf,
    pub summary_json: PathBuf,
    pub report_html: PathBuf,
}

/// Writes `neurons.csv`, `summary.json` and `report.html` into `dir`; `compare` adds the
/// CVN-vs-conventional comparison. Check the folder with [`check_out_dir`] first.
pub fn write_outputs(dir: &Path, main: Named, probe: &dyn ProbeSet, compare: Option<Named>, provenance: &Provenance) -> Result<Outputs> {
    std::fs::create_dir_all(dir).map_err(|err| DissectError::io(dir, err))?;
    let outputs = Outputs { neurons_csv: dir.join(NEURONS_CSV), summary_json: dir.join(SUMMARY_JSON), report_html: dir.join(REPORT_HTML) };
    let csv = neurons_csv(main.dissection);
    let summary = serde_json::to_string_pretty(&summary(main, compare, provenance))
        .map_err(|err| DissectError::format(&outputs.summary_json, err.to_string()))?;
    let html = report_html(main, probe, compare, provenance)?;
    // All three are written before any replaces its old version, so a failing write (a full
    // disk) leaves the previous set whole.
    let files: [(&Path, &[u8]); 3] =
        [(&outputs.neurons_csv, csv.as_bytes()), (&outputs.summary_json, summary.as_bytes()), (&outputs.report_html, html.as_bytes())];
    cvn_autograd::io::write_all_atomically(&files).map_err(|err| DissectError::format(dir, err.to_string()))?;
    Ok(outputs)
}

/// A neuron with its layer: what a CSV column reads.
pub struct Row<'a> {
    pub layer: &'a LayerReport,
    pub neuron: &'a NeuronReport,
}

/// A column of `neurons.csv`: its header and how a row's cell is written.
pub struct Column<'a> {
    pub name: String,
    pub cell: Box<dyn Fn(&Row) -> String + 'a>,
}

impl<'a> Column<'a> {
    pub fn new(name: impl Into<String>, cell: impl Fn(&Row) -> String + 'a) -> Self {
        Self { name: name.into(), cell: Box::new(cell) }
    }
}

/// The columns of `neurons.csv`, one value per cell: `layer, unit, label, score, active_fraction`
/// (over every position or token), `pooled_positive_fraction` (images whose pooled activation, the
/// value labels use, is positive), `status` (`labelled`, `inactive`, `too-few-images`), the label's held-out `auprc, correlation, f1`
/// (empty where there is no label or the metric is undefined),
/// then `alt_1, alt_1_score, …` (the next concepts, best first) and `top_image_1, …` (probe
/// indices, highest activation first); a neuron with fewer leaves the cells empty. Numbers are
/// written in shortest round-trip form. A new column is one more entry here.
pub fn neuron_columns(d: &Dissection) -> Vec<Column<'static>> {
    let neurons = || d.layers.iter().flat_map(|l| &l.neurons);
    let alternatives = neurons().map(|n| n.label.alternatives.len()).max().unwrap_or(0);
    let top_images = neurons().map(|n| n.top_images.len()).max().unwrap_or(0);
    let mut columns = vec![
        Column::new("layer", |r| r.layer.layer.clone()),
        Column::new("unit", |r| r.neuron.label.unit.to_string()),
        Column::new("label", |r| r.neuron.label.label.clone()),
        Column::new("score", |r| r.neuron.label.score.to_string()),
        Column::new("active_fraction", |r| r.neuron.activity.to_string()),
        Column::new("pooled_positive_fraction", |r| r.neuron.pooled_positive.to_string()),
        Column::new("status", |r| r.neuron.label.status.name().to_string()),
        Column::new("auprc", |r| quality_cell(r, |q| q.auprc)),
        Column::new("correlation", |r| quality_cell(r, |q| q.correlation)),
        Column::new("f1", |r| quality_cell(r, |q| q.f1)),
    ];
    for k in 0..alternatives {
        columns.push(Column::new(format!("alt_{}", k + 1), move |r| {
            r.neuron.label.alternatives.get(k).map_or(String::new(), |(c, _)| c.clone())
        }));
        columns.push(Column::new(format!("alt_{}_score", k + 1), move |r| {
            r.neuron.label.alternatives.get(k).map_or(String::new(), |(_, s)| s.to_string())
        }));
    }
    for k in 0..top_images {
        columns
            .push(Column::new(format!("top_image_{}", k + 1), move |r| r.neuron.top_images.get(k).map_or(String::new(), usize::to_string)));
    }
    columns
}

/// A label-quality metric's cell: empty where the neuron has no label or the metric is undefined.
fn quality_cell(r: &Row, metric: impl Fn(&LabelQuality) -> Option<f32>) -> String {
    r.neuron.label.quality.as_ref().and_then(metric).map_or(String::new(), |v| v.to_string())
}

/// `neurons.csv`: a header, then one row per neuron of every layer ([`neuron_columns`]).
pub fn neurons_csv(d: &Dissection) -> String {
    csv(&neuron_columns(d), d.layers.iter().flat_map(|layer| layer.neurons.iter().map(move |neuron| Row { layer, neuron })))
}

/// RFC 4180 CSV of `rows` in `columns`.
fn csv<'a>(columns: &[Column], rows: impl Iterator<Item = Row<'a>>) -> String {
    let line = |cells: &mut dyn Iterator<Item = String>| cells.map(|c| csv_field(&c)).collect::<Vec<_>>().join(",");
    let mut out = line(&mut columns.iter().map(|c| c.name.clone()));
    out.push('\n');
    for row in rows {
        let _ = writeln!(out, "{}", line(&mut columns.iter().map(|c| (c.cell)(&row))));
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// How many of the most frequent labels each layer lists in the summary.
const SUMMARY_LABELS: usize = 20;

#[derive(Serialize)]
struct LayerSummary<'a> {
    layer: &'a str,
    units: usize,
    active_fraction: f64,
    distinct_labels: usize,
    label_distribution: &'a [LabelCount],
    quality: &'a LayerQuality,
    cached: bool,
    similarity_seconds: f64,
}

#[derive(Serialize)]
struct RunSummary<'a> {
    #[serde(flatten)]
    run: &'a RunInfo,
    backend: &'a str,
    concept_set: &'a str,
    concepts: usize,
    similarity: &'a str,
    pooling: &'a str,
    probe: &'a str,
    probe_images: usize,
    unmatched_classes: &'a [String],
    layers: Vec<LayerSummary<'a>>,
    classifier: Option<&'a ClassifierEvaluation>,
    examples: &'a [Explanation],
    /// Planted units' identification per similarity function (runs trained with `--plant`).
    #[serde(skip_serializing_if = "Option::is_none")]
    planted: Option<&'a PlantedReport>,
    record_seconds: f64,
    score_seconds: f64,
}

#[derive(Serialize)]
struct Summary<'a> {
    #[serde(flatten)]
    provenance: &'a Provenance,
    #[serde(flatten)]
    main: RunSummary<'a>,
    /// The other run of `--compare`, summarised the same way (without examples).
    compare: Option<RunSummary<'a>>,
}

fn run_summary<'a>(named: Named<'a>, with_examples: bool) -> RunSummary<'a> {
    let d = named.dissection;
    RunSummary {
        run: named.run,
        backend: &d.backend,
        concept_set: &d.concept_set,
        concepts: d.concepts,
        similarity: &d.similarity,
        pooling: &d.pooling,
        probe: &d.probe,
        probe_images: d.probe_images,
        unmatched_classes: &d.unmatched_classes,
        layers: d
            .layers
            .iter()
            .map(|l| LayerSummary {
                layer: &l.layer,
                units: l.units,
                active_fraction: l.active_fraction,
                distinct_labels: l.label_distribution.len(),
                label_distribution: &l.label_distribution[..l.label_distribution.len().min(SUMMARY_LABELS)],
                quality: &l.quality,
                cached: l.cached,
                similarity_seconds: l.similarity_seconds,
            })
            .collect(),
        classifier: d.classifier.as_ref(),
        examples: if with_examples { &d.examples } else { &[] },
        planted: d.planted.as_ref(),
        record_seconds: d.record_seconds,
        score_seconds: d.score_seconds,
    }
}

fn summary<'a>(main: Named<'a>, compare: Option<Named<'a>>, provenance: &'a Provenance) -> Summary<'a> {
    Summary { provenance, main: run_summary(main, true), compare: compare.map(|c| run_summary(c, false)) }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::concepts::ConceptSet;
    use crate::pipeline::{dissect, Options, Scorer};
    use crate::record::tests::{CountingProbe, ToyModel};
    use crate::similarity::Similarity;
    use crate::source::Silent;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("tench, Tinca tinca"), "\"tench, Tinca tinca\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn dates_are_utc_iso8601() {
        assert_eq!(utc_iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_iso8601(951_782_400 + 3_723), "2000-02-29T01:02:03Z");
        assert_eq!(utc_iso8601(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    /// One line of RFC 4180 CSV into its cells (what pandas reads).
    fn split_csv_line(line: &str) -> Vec<String> {
        let (mut cells, mut cell, mut quoted, mut chars) = (Vec::new(), String::new(), false, line.chars().peekable());
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    cell.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => cells.push(std::mem::take(&mut cell)),
                _ => cell.push(c),
            }
        }
        cells.push(cell);
        cells
    }

    pub(crate) fn toy(probe: &CountingProbe) -> Dissection {
        let concepts = ConceptSet::from_lines("classes".into(), ["a", "b, c"]).unwrap();
        let mut model = ToyModel { passes: 0 };
        let options = Options { examples: 2, similarity: Similarity::Cos, ..Options::default() };
        dissect(&mut model, probe, Scorer::Labels, &concepts, &options, &Cache::disabled(), &Silent).unwrap()
    }

    pub(crate) fn settings() -> Settings {
        Settings {
            layers: vec!["tokens".into(), "head".into()],
            backend: "labels".into(),
            concepts: "classes".into(),
            similarity: "cos".into(),
            pooling: "mean".into(),
            probe: "counting".into(),
            sampling: "deterministic".into(),
            examples: 2,
            explain_layer: None,
            compare: None,
        }
    }

    pub(crate) fn run_info(run: &str) -> RunInfo {
        RunInfo {
            run: run.into(),
            model: "vit-fmnist".into(),
            competitors: 4,
            checkpoint: format!("{run}/model.safetensors"),
            content_sha256: Some("ab".repeat(32)),
            test_top1_sampled: Some(0.75),
            test_top1_deterministic: Some(0.74),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dissect-outputs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn outputs_are_tidy_and_name_the_model_and_command() {
        // Labels are chosen on the even images, all of class "b, c": the head's unit 0 gets it.
        let probe = CountingProbe { n: 12, classes: vec!["b, c".into(), "a".into()] };
        let d = toy(&probe);
        let dir = scratch("tidy");
        let other = Dissection { layers: d.layers.iter().take(1).cloned().collect(), ..d.clone() };
        let (cvn, gelu) = (run_info("runs/cvn"), run_info("runs/gelu"));
        let provenance = Provenance::now(settings(), vec!["xtask".into(), "dissect".into(), "--run".into(), "runs/cvn".into()]);
        let out =
            write_outputs(&dir, Named { run: &cvn, dissection: &d }, &probe, Some(Named { run: &gelu, dissection: &other }), &provenance)
                .unwrap();

        let csv = std::fs::read_to_string(&out.neurons_csv).unwrap();
        let rows: Vec<&str> = csv.lines().collect();
        // The toy's concept set has two concepts: one alternative per neuron; 5 top images of 12.
        assert_eq!(
            rows[0],
            "layer,unit,label,score,active_fraction,pooled_positive_fraction,status,auprc,correlation,f1,alt_1,alt_1_score,top_image_1,top_image_2,top_image_3,\
             top_image_4,top_image_5"
        );
        assert_eq!(rows.len(), 1 + 3 + 2, "tokens has 3 units, head 2");
        let head0 = &d.layers[1].neurons[0];
        let cells = split_csv_line(rows[4]);
        assert_eq!(head0.label.label, "b, c", "a label that needs quoting");
        assert_eq!(cells[..3], ["head", "0", "b, c"]);
        assert_eq!(cells.len(), 17);
        assert_eq!(cells[4].parse::<f32>().unwrap(), head0.activity);
        assert_eq!(cells[5].parse::<f32>().unwrap(), head0.pooled_positive);
        assert_eq!(cells[6], head0.label.status.name());
        assert_eq!(cells[12..].iter().map(|c| c.parse::<usize>().unwrap()).collect::<Vec<_>>(), head0.top_images);

        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out.summary_json).unwrap()).unwrap();
        assert_eq!(summary["backend"], "labels");
        assert!(summary["layers"][1]["quality"]["labelled"].is_number());
        assert_eq!((summary["model"].as_str(), summary["competitors"].as_u64()), (Some("vit-fmnist"), Some(4)));
        assert_eq!(summary["content_sha256"], "ab".repeat(32));
        assert_eq!(summary["command"][2], "--run");
        assert_eq!(summary["settings"]["similarity"], "cos");
        assert!(summary["date"].as_str().unwrap().ends_with('Z'));
        assert_eq!(summary["layers"][1]["layer"], "head");
        assert!(summary["classifier"]["top1"].is_number());
        assert_eq!(summary["compare"]["run"], "runs/gelu");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_holds_one_dissection_unless_forced() {
        let probe = CountingProbe { n: 12, classes: vec!["a".into(), "b, c".into()] };
        let d = toy(&probe);
        let dir = scratch("one");
        let info = run_info("runs/cvn");
        let first = settings();
        check_out_dir(&dir, &first, false).expect("a missing folder takes anything");
        write_outputs(&dir, Named { run: &info, dissection: &d }, &probe, None, &Provenance::now(first.clone(), vec![])).unwrap();
        check_out_dir(&dir, &first, false).expect("the same settings again: a rerun replaces it");

        let other = Settings { similarity: "soft-wpmi".into(), layers: vec!["head".into()], ..first.clone() };
        let message = check_out_dir(&dir, &other, false).unwrap_err().to_string();
        assert!(message.contains(&dir.display().to_string()) && message.contains("--force") && message.contains("--out"), "{message}");
        assert!(message.contains("similarity: \"cos\" there, \"soft-wpmi\" now") && message.contains("layers:"), "{message}");
        assert!(!message.contains("pooling"), "only what differs: {message}");
        check_out_dir(&dir, &other, true).expect("--force replaces it");

        // A run folder is never an output folder: its summary.json is the training's.
        let run = scratch("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join(cvn_models::run::MODEL_FILE), b"weights").unwrap();
        let message = check_out_dir(&run, &first, true).unwrap_err().to_string();
        assert!(message.contains("a run (its model"), "{message}");
        std::fs::remove_dir_all(&run).unwrap();

        // An older version's summary records no settings: it is not replaced unasked either.
        std::fs::write(dir.join(SUMMARY_JSON), "{\"backend\": \"labels\"}").unwrap();
        let message = check_out_dir(&dir, &first, false).unwrap_err().to_string();
        assert!(message.contains("not recorded"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

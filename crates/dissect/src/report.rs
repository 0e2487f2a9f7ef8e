//! The outputs of a dissection: `neurons.csv`, `summary.json` and `report.html`, a self-contained
//! page (thumbnails embedded as PNG data URIs, charts as inline SVG) that a person opens in a browser.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{imageops::FilterType, DynamicImage, ImageFormat};
use serde::Serialize;

use crate::error::{DissectError, Result};
use crate::explain::Explanation;
use crate::label::ClassifierEvaluation;
use crate::pipeline::{Dissection, LabelCount, LayerReport};
use crate::quality::LayerQuality;
use crate::source::ProbeSet;

/// A dissection with the run it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Named<'a> {
    pub run: &'a str,
    pub dissection: &'a Dissection,
}

/// The files [`write_outputs`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs {
    pub neurons_csv: PathBuf,
    pub summary_json: PathBuf,
    pub report_html: PathBuf,
}

/// Writes `neurons.csv`, `summary.json` and `report.html` into `dir`; `compare` adds the
/// CVN-vs-conventional comparison.
pub fn write_outputs(dir: &Path, main: Named, probe: &dyn ProbeSet, compare: Option<Named>) -> Result<Outputs> {
    std::fs::create_dir_all(dir).map_err(|err| DissectError::io(dir, err))?;
    let outputs =
        Outputs { neurons_csv: dir.join("neurons.csv"), summary_json: dir.join("summary.json"), report_html: dir.join("report.html") };
    let csv = neurons_csv(main.dissection);
    let summary = serde_json::to_string_pretty(&summary(main, compare))
        .map_err(|err| DissectError::format(&outputs.summary_json, err.to_string()))?;
    let html = report_html(main, probe, compare)?;
    // All three are written before any replaces its old version, so a failing write (a full
    // disk) leaves the previous set whole.
    let files: [(&Path, &[u8]); 3] =
        [(&outputs.neurons_csv, csv.as_bytes()), (&outputs.summary_json, summary.as_bytes()), (&outputs.report_html, html.as_bytes())];
    cvn_autograd::io::write_all_atomically(&files).map_err(|err| DissectError::format(dir, err.to_string()))?;
    Ok(outputs)
}

/// One row per neuron: `layer,unit,label,score,alternatives,status,auprc,correlation,f1`
/// (alternatives as `name (score); …`; the label's quality on the held-out probe images, empty where
/// undefined).
pub fn neurons_csv(d: &Dissection) -> String {
    let mut out = String::from("layer,unit,label,score,alternatives,status,auprc,correlation,f1\n");
    for layer in &d.layers {
        for n in &layer.neurons {
            let alternatives = n.label.alternatives.iter().map(|(c, s)| format!("{c} ({s:.4})")).collect::<Vec<_>>().join("; ");
            let quality = n.label.quality.as_ref();
            let metric = |m: Option<f32>| m.map_or(String::new(), |v| v.to_string());
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{}",
                csv_field(&layer.layer),
                n.label.unit,
                csv_field(&n.label.label),
                n.label.score,
                csv_field(&alternatives),
                n.label.status.name(),
                metric(quality.and_then(|q| q.auprc)),
                metric(quality.and_then(|q| q.correlation)),
                metric(quality.and_then(|q| q.f1)),
            );
        }
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
    run: &'a str,
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
    record_seconds: f64,
    score_seconds: f64,
}

#[derive(Serialize)]
struct Summary<'a> {
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
        record_seconds: d.record_seconds,
        score_seconds: d.score_seconds,
    }
}

fn summary<'a>(main: Named<'a>, compare: Option<Named<'a>>) -> Summary<'a> {
    Summary { main: run_summary(main, true), compare: compare.map(|c| run_summary(c, false)) }
}

/// Longest side of an embedded thumbnail, in pixels.
const THUMBNAIL: u32 = 64;

/// The self-contained HTML report.
pub fn report_html(main: Named, probe: &dyn ProbeSet, compare: Option<Named>) -> Result<String> {
    let d = main.dissection;
    let mut images: BTreeSet<usize> = d.examples.iter().map(|e| e.image).collect();
    for layer in &d.layers {
        for n in &layer.neurons {
            images.extend(n.top_images.iter().copied());
        }
    }
    let mut css = String::from(STYLE);
    for &i in &images {
        let _ = writeln!(css, ".i{i}{{background-image:url(data:image/png;base64,{})}}", thumbnail_png_base64(probe, i)?);
    }

    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Dissection of {run}</title><style>{css}</style></head><body>",
        run = esc(main.run)
    );
    let _ = write!(h, "<h1>Dissection of <code>{}</code></h1>", esc(main.run));
    let backend_note = if d.backend == "labels" {
        " — the <b>label backend</b>: no CLIP weights were given, so P comes from the probe set's class labels and \
         every neuron is named after a class"
    } else {
        ""
    };
    let _ = write!(
        h,
        "<p class=meta>Labels by <b>{}</b>{backend_note}. Concepts: <b>{}</b> ({} concepts). Similarity: <b>{}</b>. \
         Probe: <b>{}</b> ({} images), pooling {}.</p>",
        esc(&d.backend),
        esc(&d.concept_set),
        d.concepts,
        esc(&d.similarity),
        esc(&d.probe),
        d.probe_images,
        esc(&d.pooling)
    );
    if !d.unmatched_classes.is_empty() {
        let _ =
            write!(h, "<p class=warn>Classes not in the concept set (their images score 0): {}</p>", esc(&d.unmatched_classes.join(", ")));
    }

    h.push_str("<h2>Summary</h2>");
    summary_table(&mut h, main, compare);
    h.push_str("<h2>Sparsity</h2><p>Per neuron, the fraction of its outputs over the probe set that are active (|a| &gt; 1e-4). Competition layers sit near 1/U.</p><div class=charts>");
    for layer in &d.layers {
        let other = compare.and_then(|c| c.dissection.layers.iter().find(|l| l.layer == layer.layer));
        h.push_str(&sparsity_histogram(layer, main.run, other.map(|l| (l, compare.map_or("", |c| c.run)))));
    }
    h.push_str("</div>");

    if !d.examples.is_empty() {
        let _ = write!(
            h,
            "<h2>Examples</h2><p>Each image's active (winner) neurons in <code>{}</code>, named, with their contribution \
             (activation × classifier weight of the predicted class when the layer feeds the classifier, else the activation).</p>",
            esc(&d.examples[0].layer)
        );
        for e in &d.examples {
            example(&mut h, e);
        }
    }

    h.push_str("<h2>Neurons</h2>");
    for (i, layer) in d.layers.iter().enumerate() {
        neuron_table(&mut h, layer, i == 0);
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}\
code{background:#f3f3f3;padding:0 .25em}table{border-collapse:collapse;margin:.5em 0}\
td,th{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:middle}th{background:#fafafa}\
.num{text-align:right;font-variant-numeric:tabular-nums}.meta{color:#444}.warn{color:#a40}\
.t{display:inline-block;width:48px;height:48px;background-size:contain;background-repeat:no-repeat;\
background-position:center;image-rendering:pixelated;margin:1px;border:1px solid #ccc}\
.t.big{width:96px;height:96px}.alt{color:#777;font-size:12px}.charts{display:flex;flex-wrap:wrap;gap:1em}\
.ex{display:flex;gap:1em;align-items:flex-start;border-bottom:1px solid #eee;padding:.5em 0}\
.bar{display:inline-block;height:10px;background:#4a7fb5;vertical-align:middle}.bar.neg{background:#c0504d}\
details{margin:.5em 0}summary{cursor:pointer;font-weight:600}\n";

fn summary_table(h: &mut String, main: Named, compare: Option<Named>) {
    let runs: Vec<Named> = std::iter::once(main).chain(compare).collect();
    h.push_str("<table><tr><th>layer</th>");
    for r in &runs {
        let _ = write!(h, "<th colspan=3>{}</th>", esc(r.run));
    }
    h.push_str("</tr><tr><th></th>");
    for _ in &runs {
        h.push_str("<th>units</th><th>active fraction</th><th>distinct labels</th>");
    }
    h.push_str("</tr>");
    let mut layer_names: Vec<&str> = main.dissection.layers.iter().map(|l| l.layer.as_str()).collect();
    for r in &runs[1..] {
        for l in &r.dissection.layers {
            if !layer_names.contains(&l.layer.as_str()) {
                layer_names.push(&l.layer);
            }
        }
    }
    for name in layer_names {
        let _ = write!(h, "<tr><td><code>{}</code></td>", esc(name));
        for r in &runs {
            match r.dissection.layers.iter().find(|l| l.layer == name) {
                Some(l) => {
                    let _ = write!(
                        h,
                        "<td class=num>{}</td><td class=num>{:.3}</td><td class=num>{}</td>",
                        l.units,
                        l.active_fraction,
                        l.label_distribution.len()
                    );
                }
                None => h.push_str("<td colspan=3>—</td>"),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    if runs.iter().any(|r| r.dissection.classifier.is_some()) {
        h.push_str("<table><tr><th>classifier layer labels</th><th>top-1</th><th>top-5</th><th>mean cosine (CLIP text)</th></tr>");
        for r in &runs {
            if let Some(c) = &r.dissection.classifier {
                let cosine = c.mean_cosine.map_or("—".to_string(), |v| format!("{v:.3}"));
                let _ = write!(
                    h,
                    "<tr><td>{} <code>{}</code> ({} classes)</td><td class=num>{:.1}%</td><td class=num>{:.1}%</td><td class=num>{cosine}</td></tr>",
                    esc(r.run),
                    esc(&c.layer),
                    c.classes,
                    100.0 * c.top1,
                    100.0 * c.top5
                );
            }
        }
        h.push_str("</table>");
    }
}

/// Bins of the sparsity histogram over [0, 1].
const BINS: usize = 20;

fn histogram(layer: &LayerReport) -> [usize; BINS] {
    let mut bins = [0usize; BINS];
    for n in &layer.neurons {
        let b = ((n.activity.clamp(0.0, 1.0) * BINS as f32) as usize).min(BINS - 1);
        bins[b] += 1;
    }
    bins
}

/// An inline SVG bar chart of the neurons' activity; a second run is drawn as outlines.
fn sparsity_histogram(layer: &LayerReport, run: &str, other: Option<(&LayerReport, &str)>) -> String {
    const W: f32 = 360.0;
    const H: f32 = 160.0;
    const PAD: f32 = 28.0;
    let main = histogram(layer);
    let second = other.map(|(l, _)| histogram(l));
    let fraction = |bins: &[usize; BINS], units: usize| bins.map(|c| c as f32 / units.max(1) as f32);
    let main_f = fraction(&main, layer.units);
    let second_f = second.zip(other).map(|(b, (l, _))| fraction(&b, l.units));
    let top = main_f.iter().chain(second_f.iter().flatten()).fold(0.0f32, |a, &b| a.max(b)).max(1e-6);
    let bar_w = (W - 2.0 * PAD) / BINS as f32;
    let y = |f: f32| H - PAD - f / top * (H - 2.0 * PAD);
    let mut s = format!(
        "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"activity histogram of {}\">",
        esc(&layer.layer)
    );
    for (i, &f) in main_f.iter().enumerate() {
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#4a7fb5\"><title>{:.0}–{:.0}%: {} neurons</title></rect>",
            PAD + i as f32 * bar_w,
            y(f),
            bar_w - 1.0,
            H - PAD - y(f),
            100.0 * i as f32 / BINS as f32,
            100.0 * (i + 1) as f32 / BINS as f32,
            main[i]
        );
    }
    if let Some(f2) = second_f {
        for (i, &f) in f2.iter().enumerate() {
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#c0504d\" stroke-width=\"1.5\"/>",
                PAD + i as f32 * bar_w,
                y(f),
                bar_w - 1.0,
                H - PAD - y(f)
            );
        }
    }
    let _ = write!(
        s,
        "<line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#333\"/>\
         <text x=\"{PAD}\" y=\"{t}\" font-size=\"11\">0</text><text x=\"{r}\" y=\"{t}\" font-size=\"11\" text-anchor=\"end\">1</text>\
         <text x=\"{m}\" y=\"{t}\" font-size=\"11\" text-anchor=\"middle\">active fraction per neuron</text></svg>",
        b = H - PAD,
        r = W - PAD,
        t = H - PAD + 14.0,
        m = W / 2.0
    );
    let legend = match other {
        Some((l, other_run)) => format!(
            "<span style=\"color:#4a7fb5\">■</span> {} ({:.3}) <span style=\"color:#c0504d\">□</span> {} ({:.3})",
            esc(run),
            layer.active_fraction,
            esc(other_run),
            l.active_fraction
        ),
        None => format!("mean {:.3}", layer.active_fraction),
    };
    let _ = write!(s, "<figcaption><code>{}</code>: {legend}</figcaption></figure>", esc(&layer.layer));
    s
}

fn example(h: &mut String, e: &Explanation) {
    let _ = write!(h, "<div class=ex><span class=\"t big i{}\" title=\"probe image {}\"></span><div>", e.image, e.image);
    let _ = write!(h, "<b>image {}</b>", e.image);
    if let Some(c) = &e.class {
        let _ = write!(h, " — class <b>{}</b>", esc(c));
    }
    if let Some(p) = &e.predicted {
        let _ = write!(h, ", predicted <b>{}</b>", esc(p));
    }
    let _ = write!(h, "<br>{} of {} neurons active<table>", e.active, e.units);
    let scale = e.winners.iter().map(|w| w.contribution.abs()).fold(0.0f32, f32::max).max(1e-12);
    for w in &e.winners {
        let _ = write!(
            h,
            "<tr><td class=num>{}</td><td>{}</td><td class=num>{:.3}</td><td class=num>{:.3}</td><td><span class=\"bar{}\" style=\"width:{:.0}px\"></span></td></tr>",
            w.unit,
            esc(&w.label),
            w.activation,
            w.contribution,
            if w.contribution < 0.0 { " neg" } else { "" },
            120.0 * w.contribution.abs() / scale
        );
    }
    h.push_str("</table></div></div>");
}

fn neuron_table(h: &mut String, layer: &LayerReport, open: bool) {
    let _ = write!(
        h,
        "<details{}><summary><code>{}</code> — {} neurons, {} distinct labels</summary><table><tr><th>unit</th><th>label</th><th>score</th><th>active</th><th>top-activating probe images</th></tr>",
        if open { " open" } else { "" },
        esc(&layer.layer),
        layer.units,
        layer.label_distribution.len()
    );
    for n in &layer.neurons {
        let alternatives = n.label.alternatives.iter().map(|(c, _)| esc(c)).collect::<Vec<_>>().join(", ");
        let _ = write!(
            h,
            "<tr><td class=num>{}</td><td><b>{}</b><br><span class=alt>{}</span></td><td class=num>{:.3}</td><td class=num>{:.3}</td><td>",
            n.label.unit,
            esc(&n.label.label),
            alternatives,
            n.label.score,
            n.activity
        );
        for i in &n.top_images {
            let _ = write!(h, "<span class=\"t i{i}\" title=\"probe image {i}\"></span>");
        }
        h.push_str("</td></tr>");
    }
    h.push_str("</table></details>");
}

/// HTML-escapes text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A probe image as a PNG thumbnail (longest side at most [`THUMBNAIL`] px), base64.
fn thumbnail_png_base64(probe: &dyn ProbeSet, index: usize) -> Result<String> {
    let image = DynamicImage::ImageRgb8(probe.image(index)?);
    let image =
        if image.width().max(image.height()) > THUMBNAIL { image.resize(THUMBNAIL, THUMBNAIL, FilterType::Triangle) } else { image };
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|err| DissectError::Upstream { context: format!("encoding probe image {index} as PNG"), detail: err.to_string() })?;
    Ok(base64(&png))
}

/// Standard base64 with padding (RFC 4648), for data URIs.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::concepts::ConceptSet;
    use crate::pipeline::{dissect, Options, Scorer};
    use crate::record::tests::{CountingProbe, ToyModel};
    use crate::similarity::Similarity;
    use crate::source::Silent;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("tench, Tinca tinca"), "\"tench, Tinca tinca\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    fn toy(probe: &CountingProbe) -> Dissection {
        let concepts = ConceptSet::from_lines("classes".into(), ["a", "b, c"]).unwrap();
        let mut model = ToyModel { passes: 0 };
        let options = Options { examples: 2, similarity: Similarity::Cos, ..Options::default() };
        dissect(&mut model, probe, Scorer::Labels, &concepts, &options, &Cache::disabled(), &Silent).unwrap()
    }

    #[test]
    fn outputs_are_written_and_self_contained() {
        let probe = CountingProbe { n: 12, classes: vec!["a".into(), "b, c".into()] };
        let d = toy(&probe);
        let dir = std::env::temp_dir().join(format!("dissect-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let other = Dissection { layers: d.layers.iter().take(1).cloned().collect(), ..d.clone() };
        let out =
            write_outputs(&dir, Named { run: "runs/cvn", dissection: &d }, &probe, Some(Named { run: "runs/gelu", dissection: &other }))
                .unwrap();

        let csv = std::fs::read_to_string(&out.neurons_csv).unwrap();
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows[0], "layer,unit,label,score,alternatives,status,auprc,correlation,f1");
        assert_eq!(rows.len(), 1 + 3 + 2, "tokens has 3 units, head 2");
        assert!(rows[4].starts_with("head,0,"), "{}", rows[4]);

        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out.summary_json).unwrap()).unwrap();
        assert_eq!(summary["backend"], "labels");
        assert_eq!(summary["layers"][1]["layer"], "head");
        assert!(summary["layers"][1]["quality"]["labelled"].is_number());
        assert!(summary["classifier"]["top1"].is_number());
        assert_eq!(summary["compare"]["run"], "runs/gelu");

        let html = std::fs::read_to_string(&out.report_html).unwrap();
        assert!(html.contains("label backend"));
        assert!(html.contains("data:image/png;base64,iVBOR"), "PNG thumbnails embedded");
        assert!(html.contains("<svg"), "sparsity histogram");
        assert!(html.contains("runs/gelu"), "comparison");
        assert!(!html.contains("src=\"http") && !html.contains("<script"), "nothing external");
        // Every thumbnail class used is defined.
        for (i, _) in html.match_indices("class=\"t i") {
            let id: String = html[i + 10..].chars().take_while(|c| c.is_ascii_digit()).collect();
            assert!(html.contains(&format!(".i{id}{{")), "thumbnail {id} undefined");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

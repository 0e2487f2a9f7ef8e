//! `report.html`: one self-contained page (no external file or network access) that stays quick
//! with tens of thousands of neurons. The header, summary tables and sparsity charts (inline SVG)
//! are HTML; the neurons and examples travel as one embedded JSON document, from which a small
//! script renders only what is shown — a page of rows per layer, more on request — so thumbnails
//! (PNG data URIs) are decoded only for rendered rows. The script gives search by label, filters by
//! layer, label and activity, sorting, per-layer anchors (`#layer-NAME`) and neuron anchors
//! (`#n/LAYER/UNIT`, which the examples' winners link to); the same state can be set in the URL's
//! query (`?search=…&layer=…&label=…&min=…&max=…&sort=score-desc&alts=1`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Cursor;

use image::{imageops::FilterType, DynamicImage, ImageFormat};
use serde::Serialize;

use crate::error::{DissectError, Result};
use crate::explain::Explanation;
use crate::outputs::{Named, Provenance, RunInfo};
use crate::pipeline::{Dissection, LayerReport};
use crate::source::ProbeSet;

/// Neuron rows each layer shows at first, and adds per "more".
pub const PAGE_ROWS: usize = 25;

/// Longest side of an embedded thumbnail, in pixels.
const THUMBNAIL: u32 = 64;

/// One neuron as the page's script reads it: `[unit, label, score, active fraction, [next
/// concepts], [their scores], [top images], status, held-out AUPRC, held-out correlation, fraction
/// of probe images with a positive pooled activation]`.
type PageRow<'a> = (usize, &'a str, f32, f32, Vec<&'a str>, Vec<f32>, &'a [usize], &'static str, Option<f32>, Option<f32>, f32);

#[derive(Serialize)]
struct PageLayer<'a> {
    name: &'a str,
    rows: Vec<PageRow<'a>>,
}

/// The embedded JSON document.
#[derive(Serialize)]
struct PageData<'a> {
    layers: Vec<PageLayer<'a>>,
    examples: &'a [Explanation],
    /// Probe image → its class, for thumbnail captions.
    image_class: BTreeMap<usize, String>,
    /// Probe image → base64 PNG.
    thumbs: BTreeMap<usize, String>,
}

fn page_data<'a>(d: &'a Dissection, probe: &dyn ProbeSet) -> Result<PageData<'a>> {
    let layers = d
        .layers
        .iter()
        .map(|layer| PageLayer {
            name: &layer.layer,
            rows: layer
                .neurons
                .iter()
                .map(|n| {
                    let (names, scores) = n.label.alternatives.iter().map(|(c, s)| (c.as_str(), *s)).unzip();
                    let quality = n.label.quality.as_ref();
                    (
                        n.label.unit,
                        n.label.label.as_str(),
                        n.label.score,
                        n.activity,
                        names,
                        scores,
                        n.top_images.as_slice(),
                        n.label.status.name(),
                        quality.and_then(|q| q.auprc),
                        quality.and_then(|q| q.correlation),
                        n.pooled_positive,
                    )
                })
                .collect(),
        })
        .collect();
    let images: std::collections::BTreeSet<usize> = d
        .examples
        .iter()
        .map(|e| e.image)
        .chain(d.layers.iter().flat_map(|l| l.neurons.iter().flat_map(|n| n.top_images.iter().copied())))
        .collect();
    let class_names = probe.class_names();
    let mut thumbs = BTreeMap::new();
    let mut image_class = BTreeMap::new();
    for i in images {
        thumbs.insert(i, thumbnail_png_base64(probe, i)?);
        if let Some(class) = probe.label(i).and_then(|c| class_names.get(c)) {
            image_class.insert(i, class.clone());
        }
    }
    Ok(PageData { layers, examples: &d.examples, image_class, thumbs })
}

/// The report's two label-quality columns ([`crate::quality`]), for their headers.
const AUPRC_MEANING: &str = "area under the precision-recall curve of the neuron's activation ranking the held-out probe \
images for its label's presence (needs concept annotations; a random ranking scores the concept's prevalence)";
const CORRELATION_MEANING: &str = "correlation, over the held-out probe images, of the neuron's activation with its label's \
scores (annotations, or CLIP's image-concept scores)";

/// What a neuron's score means under each similarity function.
fn score_meaning(similarity: &str) -> &'static str {
    match similarity {
        "soft-wpmi" => "soft weighted pointwise mutual information (CLIP-Dissect's default): the summed log-probability of the concept on the neuron's 100 top-activating probe images (each counted with a probability falling from 0.998 to 0.97 by rank), minus the concept's log-mean over all neurons of the layer — how much more the concept belongs to this neuron's images than to other neurons'",
        "wpmi" => "weighted pointwise mutual information: the summed log-probability of the concept on the neuron's 28 top-activating probe images, minus 0.6 × the concept's log-mean over all neurons of the layer",
        "cos" => "cosine between the neuron's activations over the probe images and the concept's scores on them (−1 to 1)",
        "cos-cubed" => "cosine between the neuron's activations and the concept's scores, both centred and cubed first, which weights the strongest images most (−1 to 1)",
        "rank-reorder" => "how closely the concept's scores follow the neuron's ranking of the probe images, against shuffled orderings (CLIP-Dissect's rank reorder)",
        _ => "the similarity of the neuron's activations and the concept's scores over the probe images",
    }
}

/// A run's test top-1 as its `summary.json` recorded it.
fn accuracy(run: &RunInfo) -> String {
    let percent = |v: f64| format!("{:.2}%", 100.0 * v);
    match (run.test_top1_sampled, run.test_top1_deterministic) {
        (None, None) => "not recorded (the run has no summary.json)".to_string(),
        (Some(sampled), Some(deterministic)) => {
            format!("{} (stochastic passes averaged), {} (deterministic)", percent(sampled), percent(deterministic))
        }
        (None, Some(deterministic)) => format!("{} (deterministic)", percent(deterministic)),
        (Some(sampled), None) => format!("{} (stochastic passes averaged)", percent(sampled)),
    }
}

/// The page header: which model, checkpoint and accuracy, how and when it was dissected.
fn header(h: &mut String, run: &RunInfo, d: &Dissection, provenance: &Provenance, compare: Option<Named>) {
    let _ = write!(h, "<header><h1>Dissection of <code>{}</code></h1><dl class=meta>", esc(&run.run));
    let mut item = |term: &str, value: String| {
        let _ = write!(h, "<div><dt>{term}</dt><dd>{value}</dd></div>");
    };
    let kind = if run.competitors > 1 { "competition (LWTA) network" } else { "conventional network" };
    item("model", format!("<b>{}</b>, U = {} ({kind})", esc(&run.model), run.competitors));
    let hash = run.content_sha256.as_ref().map_or(" (no content hash)".to_string(), |hash| {
        format!(" <span class=hash title=\"content_sha256 {0}\">sha256 {1}…</span>", esc(hash), esc(&hash[..hash.len().min(12)]))
    });
    item("checkpoint", format!("<code>{}</code>{hash}", esc(&run.checkpoint)));
    item("test top-1", accuracy(run));
    if let Some(other) = compare {
        let r = other.run;
        item(
            "compared with",
            format!("<code>{}</code>: {}, U = {}, test top-1 {}", esc(&r.run), esc(&r.model), r.competitors, accuracy(r)),
        );
    }
    let backend = if d.backend == "labels" {
        "the <b>label backend</b>: no CLIP weights were given, so the probe set's class labels score the images and every neuron is named after a class".to_string()
    } else {
        format!("<b>{}</b>", esc(&d.backend))
    };
    item("labels by", backend);
    item("concepts", format!("<b>{}</b> ({} concepts)", esc(&d.concept_set), d.concepts));
    item("similarity", format!("<b>{}</b>", esc(&d.similarity)));
    // A probe id is its name and content hash: the name shown, the whole id on hover.
    item(
        "probe",
        format!(
            "<b title=\"{}\">{}</b> ({} images), pooling {}, {}",
            esc(&d.probe),
            esc(d.probe.split_once(':').map_or(d.probe.as_str(), |(name, _)| name)),
            d.probe_images,
            esc(&d.pooling),
            esc(&provenance.settings.sampling)
        ),
    );
    item("dissected", esc(&provenance.date));
    item("command", format!("<code>{}</code>", esc(&provenance.command.join(" "))));
    h.push_str("</dl></header>");
}

/// The self-contained HTML report.
pub fn report_html(main: Named, probe: &dyn ProbeSet, compare: Option<Named>, provenance: &Provenance) -> Result<String> {
    let d = main.dissection;
    let data = serde_json::to_string(&page_data(d, probe)?).map_err(|e| DissectError::format("report.html", e.to_string()))?;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>Dissection of {run}</title><style>{STYLE}</style></head><body>",
        run = esc(&main.run.run)
    );
    header(&mut h, main.run, d, provenance, compare);
    h.push_str("<nav><b>Contents</b>: <a href=\"#summary\">summary</a> · <a href=\"#sparsity\">sparsity</a>");
    if !d.examples.is_empty() {
        h.push_str(" · <a href=\"#examples\">examples</a>");
    }
    h.push_str(" · <a href=\"#neurons\">neurons</a>:");
    for layer in &d.layers {
        let _ = write!(h, " <a href=\"#layer-{0}\"><code>{0}</code></a>", esc(&layer.layer));
    }
    h.push_str("</nav>");
    if !d.unmatched_classes.is_empty() {
        let _ =
            write!(h, "<p class=warn>Classes not in the concept set (their images score 0): {}</p>", esc(&d.unmatched_classes.join(", ")));
    }

    h.push_str("<h2 id=summary>Summary</h2>");
    summary_table(&mut h, main, compare);
    h.push_str("<h2 id=sparsity>Sparsity</h2><p>Per neuron, the fraction of its outputs over the probe set that are active (|a| &gt; 1e-4). Competition layers sit near 1/U.</p><div class=charts>");
    for layer in &d.layers {
        let other = compare.and_then(|c| c.dissection.layers.iter().find(|l| l.layer == layer.layer));
        h.push_str(&sparsity_histogram(layer, &main.run.run, other.map(|l| (l, compare.map_or("", |c| c.run.run.as_str())))));
    }
    h.push_str("</div>");

    if let Some(first) = d.examples.first() {
        let _ = write!(
            h,
            "<h2 id=examples>Examples</h2><p>Each probe image's active (winner) neurons in <code>{}</code>, named, with their \
             contribution (activation × the predicted class's classifier weight when the layer feeds the classifier, else the \
             activation). A unit links to its row below; hover over an image to enlarge it.</p><div id=example-list></div>",
            esc(&first.layer)
        );
    }

    let _ = write!(
        h,
        "<h2 id=neurons>Neurons</h2><p class=explain>Each row is one neuron: <b>label</b> is the concept most similar to it, \
         <b>next concepts</b> the runners-up with their scores. <b>score</b> is the {similarity} similarity: {meaning}. Scores \
         rank concepts for one neuron and compare neurons of one layer; they are not probabilities. <b>active</b> is the \
         fraction of the neuron's outputs over the probe set that are active, at every position or token (≈ 1/U in a competition \
         layer); <b>pooled &gt; 0</b> is the fraction of probe images whose <i>pooled</i> activation — the value the labels, \
         scores and top images use: the class token of a ViT layer, the spatial mean of a conv map — is positive. The images are the \
         probe images that activate the neuron most, strongest first (hover to enlarge, with the image's class). Labels are \
         chosen on half of the probe images; <b>AUPRC</b> and <b>corr.</b> score each label on the other, held-out half \
         (hover over the headers). A neuron that is never active on the probe set is marked <i>inactive</i>, one active on \
         fewer images than the similarity ranks is marked <i>too few images</i>; neither gets a label.</p>",
        similarity = esc(&d.similarity),
        meaning = score_meaning(&d.similarity)
    );
    h.push_str(CONTROLS);
    for layer in &d.layers {
        let _ = write!(
            h,
            "<section class=layer id=\"layer-{name}\"><h3><code>{name}</code> <span class=count>{units} neurons, {labels} distinct labels{quality}</span> \
             <a class=anchor href=\"#layer-{name}\" title=\"link to this layer\">#</a></h3><table class=neurons><thead><tr>\
             <th class=num>unit</th><th>label</th><th>next concepts (score)</th><th class=num title=\"{score_title}\">score</th>\
             <th class=num title=\"{auprc_title}\">AUPRC</th><th class=num title=\"{corr_title}\">corr.</th>\
             <th class=num title=\"fraction of the neuron's outputs (every position or token) that are active\">active</th>\
             <th class=num title=\"fraction of probe images whose pooled activation (what labels use) is positive\">pooled &gt; 0</th><th>top-activating probe images</th>\
             </tr></thead><tbody></tbody></table><p class=more></p></section>",
            name = esc(&layer.layer),
            units = layer.units,
            labels = layer.label_distribution.len(),
            quality = esc(&layer.quality.note()),
            score_title = esc(&format!("{}: {}", d.similarity, score_meaning(&d.similarity))),
            auprc_title = AUPRC_MEANING,
            corr_title = CORRELATION_MEANING
        );
    }
    // `<` never appears raw inside the script element (labels are arbitrary text).
    let _ = writeln!(
        h,
        "<script type=\"application/json\" id=\"report-data\">{}</script><script>const PAGE_ROWS = {PAGE_ROWS};{SCRIPT}</script></body></html>",
        data.replace('<', "\\u003c")
    );
    Ok(h)
}

const CONTROLS: &str = "<form id=filters class=filters onsubmit=\"return false\">\
<label>search labels <input id=f-search type=search placeholder=\"e.g. stripes\" autocomplete=off></label> \
<label><input id=f-alts type=checkbox> also next concepts</label> \
<label>label <select id=f-label><option value=\"\">any</option></select></label> \
<label>layer <select id=f-layer><option value=\"\">all</option></select></label> \
<label>active from <input id=f-min type=number min=0 max=1 step=0.01 placeholder=0></label> \
<label>to <input id=f-max type=number min=0 max=1 step=0.01 placeholder=1></label> \
<label>sort by <select id=f-sort><option value=unit>layer, unit</option><option value=score-desc>score, highest first</option>\
<option value=score-asc>score, lowest first</option><option value=active-desc>active, highest first</option>\
<option value=active-asc>active, lowest first</option><option value=auprc-desc>held-out AUPRC, highest first</option>\
<option value=corr-desc>held-out correlation, highest first</option></select></label> \
<button id=f-reset type=button>reset</button><p id=f-status class=status></p></form>";

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1280px;color:#222;padding:0 1em}\
code{background:#f3f3f3;padding:0 .25em}table{border-collapse:collapse;margin:.5em 0}\
td,th{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:middle}th{background:#fafafa}\
th[title]{text-decoration:underline dotted;cursor:help}\
.unlabelled{color:#888}.num{text-align:right;font-variant-numeric:tabular-nums}.warn{color:#a40}.hash{color:#666;font-size:12px}\
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.15em 1em;margin:.5em 0 1em}dl.meta div{display:contents}\
dt{color:#666}dd{margin:0}nav{background:#f7f7f7;padding:.5em .8em;border-radius:4px;line-height:1.9}\
.t{display:inline-block;position:relative;width:40px;height:40px;margin:1px;border:1px solid #ccc;vertical-align:middle;background:#eee}\
.t img{display:block;width:100%;height:100%;image-rendering:pixelated;transition:transform .08s}\
.t:hover{z-index:10}.t:hover img{transform:scale(3);box-shadow:0 2px 10px #0009}\
.t:hover::after{content:attr(data-caption);position:absolute;left:50%;top:calc(200% + 4px);transform:translateX(-50%);\
white-space:nowrap;background:#222;color:#fff;padding:1px 5px;border-radius:3px;font-size:12px}\
.t.big{width:96px;height:96px}.t.big:hover img{transform:scale(2)}.t.big:hover::after{top:calc(150% + 4px)}\
.alt{color:#666;font-size:12px}.charts{display:flex;flex-wrap:wrap;gap:1em}\
#example-list{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:0 1.5em}\
.ex{display:flex;gap:.8em;align-items:flex-start;border-bottom:1px solid #eee;padding:.5em 0}.ex .t{flex:none}\
.ex table{font-size:13px}.ex td,.ex th{padding:.1em .4em;white-space:nowrap}\
.bar{display:inline-block;height:10px;background:#4a7fb5;vertical-align:middle}.bar.neg{background:#c0504d}\
.filters{position:sticky;top:0;background:#fff;border-bottom:1px solid #ccc;padding:.4em 0;z-index:20}\
.filters label{margin-right:.6em;white-space:nowrap}.filters input[type=number]{width:5em}.status{margin:.3em 0 0;color:#444}\
.count{font-weight:normal;color:#666;font-size:13px}.anchor{color:#aaa;text-decoration:none}\
tr.hit{background:#fff3b0}.more button{margin-right:.5em}.explain{max-width:70em}\n";

/// Renders the examples and the neuron tables from the embedded JSON, `PAGE_ROWS` rows per layer
/// at a time; see the module docs.
const SCRIPT: &str = r##"
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const $ = (id) => document.getElementById(id);
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" };
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ESC[c]);
  const num = (v) => (v === null ? "—" : v.toFixed(3));
  const rowId = (layer, unit) => "n/" + layer + "/" + unit;
  function thumb(i, big) {
    const cls = D.image_class[i];
    const caption = "probe image " + i + (cls === undefined ? "" : " · " + cls);
    const src = D.thumbs[i];
    return '<span class="t' + (big ? " big" : "") + '" data-caption="' + esc(caption) + '">' +
      (src ? '<img alt="' + esc(caption) + '" decoding="async" src="data:image/png;base64,' + src + '">' : "") + "</span>";
  }

  // Examples: each winner links to its neuron's row; an unlabelled winner shows its status.
  const statusOf = new Map(D.layers.map((l) => [l.name, new Map(l.rows.map((r) => [r[0], r[7]]))]));
  const winnerLabel = (layer, w) => w.label !== "" ? esc(w.label) :
    '<i class="unlabelled">' + esc(((statusOf.get(layer) || new Map()).get(w.unit) || "no label").replace(/-/g, " ")) + "</i>";
  const examples = $("example-list");
  if (examples) {
    examples.innerHTML = D.examples.map((e) => {
      const scale = Math.max(1e-12, ...e.winners.map((w) => Math.abs(w.contribution)));
      const rows = e.winners.map((w) =>
        '<tr><td class="num"><a href="#' + esc(rowId(e.layer, w.unit)) + '">' + w.unit + "</a></td><td>" + winnerLabel(e.layer, w) +
        '</td><td class="num">' + num(w.activation) + '</td><td class="num">' + num(w.contribution) + '</td><td><span class="bar' +
        (w.contribution < 0 ? " neg" : "") + '" style="width:' + Math.round(80 * Math.abs(w.contribution) / scale) + 'px"></span></td></tr>').join("");
      return '<div class="ex">' + thumb(e.image, true) + "<div><b>probe image " + e.image + "</b>" +
        (e.class === null ? "" : " — class <b>" + esc(e.class) + "</b>") +
        (e.predicted === null ? "" : ", predicted <b>" + esc(e.predicted) + "</b>") +
        "<br>" + e.active + " of " + e.units + " neurons of <code>" + esc(e.layer) + "</code> active" +
        '<table><thead><tr><th class="num">unit</th><th>label</th><th class="num">activation</th><th class="num">contribution</th><th></th></tr></thead><tbody>' +
        rows + "</tbody></table></div></div>";
    }).join("");
  }

  // Controls.
  const c = { search: $("f-search"), alts: $("f-alts"), label: $("f-label"), layer: $("f-layer"), min: $("f-min"), max: $("f-max"), sort: $("f-sort") };
  const counts = new Map();
  for (const layer of D.layers) for (const r of layer.rows) counts.set(r[1], (counts.get(r[1]) || 0) + 1);
  c.label.insertAdjacentHTML("beforeend", [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .map(([l, n]) => '<option value="' + esc(l) + '">' + esc(l) + " (" + n + ")</option>").join(""));
  c.layer.insertAdjacentHTML("beforeend", D.layers.map((l) => '<option value="' + esc(l.name) + '">' + esc(l.name) + "</option>").join(""));
  const params = new URLSearchParams(location.search);
  for (const key of ["search", "label", "layer", "min", "max", "sort"]) if (params.has(key)) c[key].value = params.get(key);
  c.alts.checked = params.get("alts") === "1";

  const sections = D.layers.map((layer) => {
    const el = document.getElementById("layer-" + layer.name);
    return { layer, el, tbody: el.querySelector("tbody"), more: el.querySelector(".more"), list: [], shown: 0 };
  });
  const score = (v) => (v === null ? -Infinity : v);
  const SORTS = {
    unit: null,
    "score-desc": (a, b) => score(b[2]) - score(a[2]),
    "score-asc": (a, b) => score(a[2]) - score(b[2]),
    "active-desc": (a, b) => b[3] - a[3],
    "active-asc": (a, b) => a[3] - b[3],
    "auprc-desc": (a, b) => score(b[8]) - score(a[8]),
    "corr-desc": (a, b) => score(b[9]) - score(a[9]),
  };

  function rowHtml(layer, r) {
    const alts = r[4].map((name, k) => esc(name) + " (" + num(r[5][k]) + ")").join(", ");
    const label = r[7] === "labelled" ? "<b>" + esc(r[1]) + "</b>" : '<i class="unlabelled">' + esc(r[7].replace(/-/g, " ")) + "</i>";
    return '<tr class="neuron" id="' + esc(rowId(layer, r[0])) + '"><td class="num">' + r[0] + "</td><td>" + label +
      '</td><td class="alt">' + alts + '</td><td class="num">' + num(r[2]) + '</td><td class="num">' + num(r[8]) +
      '</td><td class="num">' + num(r[9]) + '</td><td class="num">' + num(r[3]) +
      '</td><td class="num">' + num(r[10]) + "</td><td>" + r[6].map((i) => thumb(i, false)).join("") + "</td></tr>";
  }
  function renderMore(s, upto) {
    const end = Math.min(s.list.length, Math.max(s.shown + PAGE_ROWS, upto || 0));
    s.tbody.insertAdjacentHTML("beforeend", s.list.slice(s.shown, end).map((r) => rowHtml(s.layer.name, r)).join(""));
    s.shown = end;
    const left = s.list.length - s.shown;
    s.more.innerHTML = s.list.length === 0 ? "No neuron of this layer matches the filters." : left === 0 ? "" :
      "<button type=button data-more>show " + Math.min(PAGE_ROWS, left) + " more</button><button type=button data-all>show all " + left +
      " remaining</button> " + s.shown + " of " + s.list.length + " matching rows shown";
  }
  function refresh() {
    const q = c.search.value.trim().toLowerCase();
    const lo = c.min.value === "" ? -Infinity : Number(c.min.value);
    const hi = c.max.value === "" ? Infinity : Number(c.max.value);
    const sort = SORTS[c.sort.value] || null;
    const matches = (r) => (q === "" || r[1].toLowerCase().includes(q) || (c.alts.checked && r[4].some((a) => a.toLowerCase().includes(q)))) &&
      (c.label.value === "" || r[1] === c.label.value) && r[3] >= lo && r[3] <= hi;
    let total = 0, matching = 0;
    for (const s of sections) {
      total += s.layer.rows.length;
      const visible = c.layer.value === "" || c.layer.value === s.layer.name;
      s.el.hidden = !visible;
      s.list = visible ? s.layer.rows.filter(matches) : [];
      if (sort) s.list.sort(sort);
      matching += s.list.length;
      s.shown = 0;
      s.tbody.textContent = "";
      renderMore(s);
    }
    $("f-status").textContent = matching + " of " + total + " neurons match";
    const p = new URLSearchParams();
    for (const key of ["search", "label", "layer", "min", "max"]) if (c[key].value !== "") p.set(key, c[key].value);
    if (c.sort.value !== "unit") p.set("sort", c.sort.value);
    if (c.alts.checked) p.set("alts", "1");
    try { history.replaceState(null, "", (p.size ? "?" + p : location.pathname) + location.hash); } catch (_) { /* file: URL rules */ }
  }
  function reset() {
    for (const key of ["search", "label", "layer", "min", "max"]) c[key].value = "";
    c.sort.value = "unit";
    c.alts.checked = false;
  }
  // `#n/LAYER/UNIT`: render the row (clearing filters that hide it), scroll to it and mark it.
  function reveal() {
    const target = decodeURIComponent(location.hash.slice(1));
    if (!target.startsWith("n/")) return;
    const cut = target.lastIndexOf("/");
    const s = sections.find((x) => x.layer.name === target.slice(2, cut));
    const unit = Number(target.slice(cut + 1));
    if (!s || !s.layer.rows.some((r) => r[0] === unit)) return;
    let at = s.list.findIndex((r) => r[0] === unit);
    if (at < 0) { reset(); refresh(); at = s.list.findIndex((r) => r[0] === unit); }
    if (at >= s.shown) renderMore(s, at + 1);
    const row = document.getElementById(target);
    document.querySelectorAll("tr.hit").forEach((r) => r.classList.remove("hit"));
    row.classList.add("hit");
    row.scrollIntoView({ block: "center" });
  }

  for (const el of Object.values(c)) el.addEventListener("input", refresh);
  $("f-reset").addEventListener("click", () => { reset(); refresh(); });
  document.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-more],button[data-all]");
    if (!button) return;
    const s = sections.find((x) => x.el.contains(button));
    renderMore(s, button.hasAttribute("data-all") ? s.list.length : 0);
  });
  window.addEventListener("hashchange", reveal);
  refresh();
  reveal();
  // When the page was usable, and when its images were decoded too (read by the browser test).
  document.body.dataset.renderedMs = Math.round(performance.now());
  window.addEventListener("load", () => { document.body.dataset.loadedMs = Math.round(performance.now()); });
})();
"##;

fn summary_table(h: &mut String, main: Named, compare: Option<Named>) {
    let runs: Vec<Named> = std::iter::once(main).chain(compare).collect();
    h.push_str("<table><thead><tr><th>layer</th>");
    for r in &runs {
        let _ = write!(h, "<th colspan=3>{}</th>", esc(&r.run.run));
    }
    h.push_str("</tr><tr><th></th>");
    for _ in &runs {
        h.push_str("<th class=num>units</th><th class=num>active fraction</th><th class=num>distinct labels</th>");
    }
    h.push_str("</tr></thead><tbody>");
    let mut layer_names: Vec<&str> = main.dissection.layers.iter().map(|l| l.layer.as_str()).collect();
    for r in &runs[1..] {
        for l in &r.dissection.layers {
            if !layer_names.contains(&l.layer.as_str()) {
                layer_names.push(&l.layer);
            }
        }
    }
    for name in layer_names {
        let _ = write!(h, "<tr><td><a href=\"#layer-{0}\"><code>{0}</code></a></td>", esc(name));
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
    h.push_str("</tbody></table>");
    if runs.iter().any(|r| r.dissection.classifier.is_some()) {
        h.push_str("<table><thead><tr><th>classifier layer labels</th><th class=num title=\"fraction of classes whose neuron is named after the class\">top-1</th><th class=num title=\"fraction of classes whose name is among their neuron's 5 best concepts\">top-5</th><th class=num>mean cosine (CLIP text)</th></tr></thead><tbody>");
        for r in &runs {
            if let Some(c) = &r.dissection.classifier {
                let cosine = c.mean_cosine.map_or("—".to_string(), |v| format!("{v:.3}"));
                let _ = write!(
                    h,
                    "<tr><td>{} <code>{}</code> ({} classes)</td><td class=num>{:.1}%</td><td class=num>{:.1}%</td><td class=num>{cosine}</td></tr>",
                    esc(&r.run.run),
                    esc(&c.layer),
                    c.classes,
                    100.0 * c.top1,
                    100.0 * c.top5
                );
            }
        }
        h.push_str("</tbody></table>");
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
    use crate::outputs::tests::{run_info, settings, toy};
    use crate::record::tests::CountingProbe;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn the_page_is_self_contained_and_carries_every_neuron() {
        let probe = CountingProbe { n: 12, classes: vec!["a".into(), "b, c".into()] };
        let mut d = toy(&probe);
        // A label that would end the script element if it were embedded raw.
        d.layers[0].neurons[0].label.label = "</script><b>x".into();
        let other = Dissection { layers: d.layers.iter().take(1).cloned().collect(), ..d.clone() };
        let (cvn, gelu) = (run_info("runs/cvn"), run_info("runs/gelu"));
        let provenance = Provenance::now(settings(), vec!["xtask".into(), "dissect".into()]);
        let html =
            report_html(Named { run: &cvn, dissection: &d }, &probe, Some(Named { run: &gelu, dissection: &other }), &provenance).unwrap();
        assert!(!html.contains("src=\"http") && !html.contains("<link") && !html.contains(" src=\"/"), "nothing external");
        assert_eq!(html.matches("</script>").count(), 2, "the JSON cannot close its element early");
        assert!(html.contains("label backend") && html.contains("vit-fmnist") && html.contains("U = 4"));
        assert!(html.contains("sha256 abababababab") && html.contains("75.00%") && html.contains(&provenance.date));
        assert!(html.contains("<svg") && html.contains("runs/gelu"), "sparsity histogram and comparison");
        for layer in &d.layers {
            assert!(html.contains(&format!("id=\"layer-{}\"", layer.layer)), "section of {}", layer.layer);
        }
        let start = html.find("id=\"report-data\">").unwrap() + "id=\"report-data\">".len();
        let json = &html[start..start + html[start..].find("</script>").unwrap()];
        let data: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(data["layers"][0]["rows"][0][1], "</script><b>x");
        assert_eq!(data["layers"][1]["rows"].as_array().unwrap().len(), d.layers[1].neurons.len());
        // Every image a row or an example shows has its thumbnail and its class.
        for layer in &d.layers {
            for n in &layer.neurons {
                for i in &n.top_images {
                    assert!(data["thumbs"][i.to_string()].as_str().unwrap().starts_with("iVBOR"), "PNG thumbnail {i}");
                    assert!(data["image_class"][i.to_string()].is_string());
                }
            }
        }
    }
}

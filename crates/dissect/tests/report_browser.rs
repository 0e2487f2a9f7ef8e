//! `report.html` in a real browser: a report of 10,000 neurons (20 layers of 500) is loaded in
//! headless Chromium (`--dump-dom`), and the rendered page is checked — the first page of rows per
//! layer, search by label, the exact-label filter, a layer filter with sorting and an activity
//! range, and a neuron anchor that renders a row far down its layer. Skips, saying why, when no
//! `chromium` is installed (Debian: `apt-get install chromium`; `.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dissect::explain::{Explanation, Winner};
use dissect::label::NeuronLabel;
use dissect::outputs::{Named, Provenance, RunInfo, Settings};
use dissect::pipeline::{Dissection, LabelCount, LayerReport, NeuronReport};
use dissect::quality::{LayerQuality, NeuronStatus};
use dissect::report::{report_html, PAGE_ROWS};
use dissect::source::ProbeSet;
use image::RgbImage;

const LAYERS: usize = 20;
const UNITS: usize = 500;
const IMAGES: usize = 2000;
/// Units `u` with `u % 97 == 3` are named "zebra stripes": 6 per layer, fewer than a page.
const ZEBRA: &str = "zebra stripes";

struct Probe;

impl ProbeSet for Probe {
    fn id(&self) -> String {
        "synthetic".into()
    }
    fn len(&self) -> usize {
        IMAGES
    }
    fn class_names(&self) -> &[String] {
        &[]
    }
    fn label(&self, _: usize) -> Option<usize> {
        None
    }
    fn image(&self, index: usize) -> dissect::Result<RgbImage> {
        Ok(RgbImage::from_fn(28, 28, |x, y| image::Rgb([((x * 9 + y * 3 + index as u32) % 256) as u8; 3])))
    }
    fn input_shape(&self) -> [usize; 3] {
        [1, 28, 28]
    }
    fn load_input(&self, _: usize, out: &mut [f32]) -> dissect::Result<()> {
        out.fill(0.0);
        Ok(())
    }
}

/// The one unit of every layer that is inactive: no label, and a winner of every example.
const INACTIVE: usize = 451;

fn label_of(unit: usize) -> String {
    if unit == INACTIVE {
        String::new()
    } else if unit % 97 == 3 {
        ZEBRA.into()
    } else {
        format!("concept {}", unit % 50)
    }
}

/// A dissection of `LAYERS × UNITS` neurons; scores rise with `(unit * 37) % UNITS`.
fn dissection() -> Dissection {
    let layers = (0..LAYERS)
        .map(|l| {
            let neurons = (0..UNITS)
                .map(|unit| NeuronReport {
                    label: NeuronLabel {
                        unit,
                        label: label_of(unit),
                        score: if unit == INACTIVE { f32::NAN } else { ((unit * 37) % UNITS) as f32 / UNITS as f32 },
                        alternatives: (1..5).map(|k| (format!("concept {}", (unit + k) % 50), 0.1 * k as f32)).collect(),
                        status: if unit == INACTIVE { NeuronStatus::Inactive } else { NeuronStatus::Labelled },
                        quality: None,
                    },
                    activity: if unit == INACTIVE { 0.0 } else { (unit % 100) as f32 / 100.0 },
                    pooled_positive: if unit == INACTIVE { 0.0 } else { 0.5 },
                    top_images: (0..5).map(|k| (unit * 5 + k + l) % IMAGES).collect(),
                })
                .collect::<Vec<NeuronReport>>();
            let labels: Vec<NeuronLabel> = neurons.iter().map(|n| n.label.clone()).collect();
            LayerReport {
                layer: format!("layer.{l}"),
                units: UNITS,
                active_fraction: 0.25,
                label_distribution: vec![LabelCount { label: ZEBRA.into(), neurons: 6 }],
                quality: LayerQuality::of(&labels),
                neurons,
                cached: false,
                similarity_seconds: 0.0,
            }
        })
        .collect();
    let examples = (0..4)
        .map(|i| Explanation {
            image: i * 10,
            class: None,
            predicted: Some("concept 1".into()),
            layer: "layer.19".into(),
            active: 3,
            units: UNITS,
            winners: (0..3)
                .map(|w| Winner { unit: 450 + w, label: label_of(450 + w), activation: 1.0, contribution: 0.5 - w as f32 })
                .collect(),
        })
        .collect();
    Dissection {
        backend: "labels".into(),
        concept_set: "synthetic".into(),
        concepts: 51,
        similarity: "soft-wpmi".into(),
        pooling: "mean".into(),
        probe: "synthetic".into(),
        probe_images: IMAGES,
        unmatched_classes: vec![],
        layers,
        classifier: None,
        examples,
        planted: None,
        record_seconds: 0.0,
        score_seconds: 0.0,
    }
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| ["chromium", "chromium-browser"].map(|n| dir.join(n))).find(|p| p.is_file())
}

/// The DOM of `url` after its scripts ran, and the browser's wall time.
fn dump_dom(chromium: &Path, scratch: &Path, url: &str) -> (String, Duration) {
    let out = scratch.join("dom.html");
    let start = Instant::now();
    let mut child = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", scratch.join("profile").display()))
        .arg(url)
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(180) {
            child.kill().unwrap();
            panic!("chromium did not finish {url} in 180 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (std::fs::read_to_string(&out).unwrap(), start.elapsed())
}

/// The ids of the rendered neuron rows (`n/LAYER/UNIT`), in page order.
fn rendered_rows(dom: &str) -> Vec<&str> {
    const ID: &str = " id=\"";
    dom.match_indices(" id=\"n/").map(|(at, _)| &dom[at + ID.len()..]).map(|rest| &rest[..rest.find('"').unwrap()]).collect()
}

#[test]
fn ten_thousand_neurons_render_lazily_and_filter_in_chromium() {
    let Some(chromium) = chromium() else {
        println!("skipped: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let scratch = std::env::temp_dir().join(format!("dissect-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let d = dissection();
    let run = RunInfo { run: "runs/synthetic".into(), model: "vit-fmnist".into(), competitors: 4, ..RunInfo::default() };
    let settings = Settings {
        layers: d.layers.iter().map(|l| l.layer.clone()).collect(),
        backend: "labels".into(),
        concepts: "synthetic".into(),
        similarity: "soft-wpmi".into(),
        pooling: "mean".into(),
        probe: "synthetic".into(),
        sampling: "deterministic".into(),
        examples: 4,
        explain_layer: None,
        compare: None,
    };
    let html = report_html(Named { run: &run, dissection: &d }, &Probe, None, &Provenance::now(settings, vec!["test".into()])).unwrap();
    let page = scratch.join("report.html");
    std::fs::write(&page, &html).unwrap();
    let url = format!("file://{}", page.display());
    println!("report of {} neurons: {:.1} MB", LAYERS * UNITS, html.len() as f64 / 1e6);

    // Unfiltered: the first page of every layer, thumbnails only for those rows.
    let (dom, wall) = dump_dom(&chromium, &scratch, &url);
    let rows = rendered_rows(&dom);
    assert_eq!(rows.len(), LAYERS * PAGE_ROWS.min(UNITS), "one page of rows per layer");
    assert_eq!(rows[0], "n/layer.0/0");
    assert!(dom.contains(&format!("{} of {} neurons match", LAYERS * UNITS, LAYERS * UNITS)));
    assert_eq!(dom.matches("<img alt=\"probe image ").count(), rows.len() * 5 + 4, "5 thumbnails per rendered row, 1 per example");
    assert_eq!(dom.matches("href=\"#n/layer.19/45").count(), 4 * 3, "each example's winners link to their rows");
    assert_eq!(dom.matches("<i class=\"unlabelled\">inactive</i>").count(), 4, "an unlabelled winner shows its status");
    let attribute =
        |name: &str| dom.split(&format!("data-{name}-ms=\"")).nth(1).and_then(|s| s.split('"').next()).unwrap_or("?").to_string();
    println!(
        "unfiltered: rows rendered {} ms, load event {} ms after navigation (virtual time); chromium's wall time {wall:.2?} in all",
        attribute("rendered"),
        attribute("loaded")
    );

    // Search by label: only the matching rows, fewer than a page per layer.
    let (dom, _) = dump_dom(&chromium, &scratch, &format!("{url}?search=ZEBRA"));
    let rows = rendered_rows(&dom);
    assert_eq!(rows.len(), LAYERS * 6);
    assert_eq!(dom.matches(&format!("<td><b>{ZEBRA}</b></td>")).count(), rows.len(), "every rendered row matches");
    assert!(dom.contains(&format!("{} of {} neurons match", LAYERS * 6, LAYERS * UNITS)));

    // An exact label, from the label filter.
    let (dom, _) = dump_dom(&chromium, &scratch, &format!("{url}?label=concept%2011"));
    let expected = LAYERS * (0..UNITS).filter(|&u| label_of(u) == "concept 11").count();
    assert_eq!(rendered_rows(&dom).len(), expected);
    assert_eq!(dom.matches("<td><b>concept 11</b></td>").count(), expected);

    // One layer, active fraction at least 0.5, highest score first (ties in unit order).
    let (dom, _) = dump_dom(&chromium, &scratch, &format!("{url}?layer=layer.7&sort=score-desc&min=0.5"));
    let mut expected: Vec<&NeuronReport> = d.layers[7].neurons.iter().filter(|n| n.activity >= 0.5).collect();
    expected.sort_by(|a, b| b.label.score.total_cmp(&a.label.score));
    let expected: Vec<String> = expected.iter().take(PAGE_ROWS).map(|n| format!("n/layer.7/{}", n.label.unit)).collect();
    assert_eq!(rendered_rows(&dom), expected);

    // A neuron anchor far down its layer renders rows up to it and marks it.
    let (dom, _) = dump_dom(&chromium, &scratch, &format!("{url}#n/layer.3/480"));
    let rows = rendered_rows(&dom);
    assert!(rows.contains(&"n/layer.3/480"), "the linked row is rendered");
    assert!(dom.contains("<tr class=\"neuron hit\" id=\"n/layer.3/480\""), "and highlighted");
    assert_eq!(rows.iter().filter(|r| r.starts_with("n/layer.3/")).count(), 481);
    std::fs::remove_dir_all(&scratch).unwrap();
}

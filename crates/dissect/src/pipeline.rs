//! The whole dissection of one network: record → score → similarity → label → evaluate → explain,
//! gathered into a [`Dissection`] that the report writes out.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use crate::cache::Cache;
use crate::concepts::ConceptSet;
use crate::error::{DissectError, Result};
use crate::explain::{example_images, explain, Classifier, Explanation};
use crate::label::{evaluate_classifier, label_neurons, top_indices, ClassifierEvaluation, NeuronLabel, ALTERNATIVES};
use crate::planted::{identify, Planted, PlantedReport};
use crate::quality::{assess_labels, select_rows, Halves, LayerQuality, NeuronStatus};
use crate::record::{record_layers, LayerActivations, Pooling};
use crate::score::{clip_scores, probe_scores, Scores};
use crate::similarity::Similarity;
use crate::source::{ActivationSource, ClipEncoder, ProbeSet, Progress, TextEncoder};

/// Where P comes from.
#[derive(Clone, Copy)]
pub enum Scorer<'a> {
    /// The probe set's concept annotations, else its class labels (no CLIP weights given).
    Labels,
    Clip(&'a dyn ClipEncoder),
}

/// Settings of a dissection (the CLI flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// Layers to name; empty = the source's default layers.
    pub layers: Vec<String>,
    pub similarity: Similarity,
    pub pooling: Pooling,
    /// How many probe images to explain.
    pub examples: usize,
    /// The layer whose winners explain the examples; `None` = the last named layer that feeds the
    /// classifier, else the last named layer before it.
    pub explain_layer: Option<String>,
    /// Images per forward pass / CLIP batch.
    pub batch_size: usize,
    /// Top-activating probe images kept per neuron.
    pub top_images: usize,
    /// Winners listed per explained image.
    pub max_winners: usize,
    /// Units trained to detect a known concept (the run's `train --plant`): their layers are
    /// recorded too, and [`Dissection::planted`] says how many each similarity identifies.
    pub planted: Vec<Planted>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            layers: Vec::new(),
            similarity: Similarity::default(),
            pooling: Pooling::default(),
            examples: 16,
            explain_layer: None,
            batch_size: 64,
            top_images: 5,
            max_winners: 12,
            planted: Vec::new(),
        }
    }
}

/// A neuron's name, activity and best probe images.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NeuronReport {
    #[serde(flatten)]
    pub label: NeuronLabel,
    /// Fraction of the unit's outputs that are active over the probe set, at every position or
    /// token (before pooling).
    pub activity: f32,
    /// Fraction of probe images whose pooled activation — the value labels, quality scores and top
    /// images use (class token, spatial mean or max) — is positive.
    pub pooled_positive: f32,
    /// Probe images with the highest pooled activation, highest first.
    pub top_images: Vec<usize>,
}

/// How many neurons of a layer carry a label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelCount {
    pub label: String,
    pub neurons: usize,
}

/// One dissected layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerReport {
    pub layer: String,
    pub units: usize,
    /// Fraction of the layer's outputs that are active (sparsity; ≈ 1/U for competition layers).
    pub active_fraction: f64,
    /// Labels by how many neurons carry them, most frequent first (unlabelled neurons left out).
    pub label_distribution: Vec<LabelCount>,
    /// Neurons by status and the labels' mean held-out quality.
    pub quality: LayerQuality,
    pub neurons: Vec<NeuronReport>,
    /// Whether the activations came from the cache.
    pub cached: bool,
    pub similarity_seconds: f64,
}

/// Everything one dissection found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dissection {
    /// Which backend produced P and so the labels (`labels` or `clip (...)`).
    pub backend: String,
    pub concept_set: String,
    pub concepts: usize,
    pub similarity: String,
    pub pooling: String,
    pub probe: String,
    pub probe_images: usize,
    /// Label backend: classes whose name is not a concept.
    pub unmatched_classes: Vec<String>,
    pub layers: Vec<LayerReport>,
    pub classifier: Option<ClassifierEvaluation>,
    pub examples: Vec<Explanation>,
    /// Planted units' identification per similarity function (runs trained with `--plant`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planted: Option<PlantedReport>,
    pub record_seconds: f64,
    pub score_seconds: f64,
}

/// Dissects `source` on `probe` against `concepts`.
pub fn dissect(
    source: &mut dyn ActivationSource,
    probe: &dyn ProbeSet,
    scorer: Scorer,
    concepts: &ConceptSet,
    options: &Options,
    cache: &Cache,
    progress: &dyn Progress,
) -> Result<Dissection> {
    let head = source.head();
    let (named, explain_layer) = planned_layers(source, options);
    // The classifier is recorded whenever there is one: it gives the predictions of the examples.
    let mut recorded = named.clone();
    if let Some(h) = &head {
        if !recorded.contains(&h.layer) {
            recorded.push(h.layer.clone());
        }
    }
    for p in &options.planted {
        if !recorded.contains(&p.layer) {
            recorded.push(p.layer.clone());
        }
    }

    let start = Instant::now();
    let activations = record_layers(source, probe, &recorded, options.pooling, options.batch_size, cache, progress)?;
    let record_seconds = start.elapsed().as_secs_f64();
    let by_name: HashMap<&str, &LayerActivations> = activations.iter().map(|a| (a.layer.as_str(), a)).collect();
    let recorded_layer = |layer: &str| by_name.get(layer).copied().ok_or_else(|| DissectError::unknown_layer(layer, &recorded));

    let start = Instant::now();
    let scores: Scores = match scorer {
        Scorer::Labels => probe_scores(probe, concepts)?,
        Scorer::Clip(clip) => clip_scores(clip, probe, concepts, options.batch_size, cache, progress)?,
    };
    let score_seconds = start.elapsed().as_secs_f64();

    // Labels are chosen on one half of the probe set and scored on the other.
    let halves = Halves::of(probe.len());
    let labelling_scores = select_rows(scores.matrix.view(), &halves.labelling);
    let mut layers = Vec::with_capacity(named.len());
    let mut classifier = None;
    progress.start("similarity", named.len() as u64);
    for layer in &named {
        let acts = recorded_layer(layer)?;
        let start = Instant::now();
        let labelling_acts = select_rows(acts.pooled.view(), &halves.labelling);
        let similarity = options.similarity.compute(labelling_scores.view(), labelling_acts.view())?;
        let similarity_seconds = start.elapsed().as_secs_f64();
        let mut labels = label_neurons(similarity.view(), concepts, ALTERNATIVES)?;
        let is_classifier = head.as_ref().is_some_and(|h| h.layer == *layer);
        let top_k = options.similarity.top_k(halves.labelling.len());
        assess_labels(&mut labels, acts.pooled.view(), &scores, concepts, &halves, top_k, !is_classifier)?;
        if is_classifier && !probe.class_names().is_empty() {
            let text = match scorer {
                Scorer::Clip(clip) => Some(clip as &dyn TextEncoder),
                Scorer::Labels => None,
            };
            classifier = Some(evaluate_classifier(layer, similarity.view(), &labels, concepts, probe.class_names(), text)?);
        }
        layers.push(layer_report(acts, labels, options.top_images, similarity_seconds));
        progress.advance(1);
    }
    progress.finish();

    let planted = if options.planted.is_empty() {
        None
    } else {
        let planted_layers: Vec<&LayerActivations> =
            activations.iter().filter(|a| options.planted.iter().any(|p| p.layer == a.layer)).collect();
        Some(identify(&options.planted, &planted_layers, scores.matrix.view(), concepts)?)
    };

    let examples = match &explain_layer {
        Some(layer) => {
            let acts = recorded_layer(layer)?;
            let labels: Vec<NeuronLabel> =
                layers.iter().filter(|r| r.layer == *layer).flat_map(|r| r.neurons.iter().map(|n| n.label.clone())).collect();
            let classifier_view = match &head {
                Some(h) => Some(Classifier {
                    logits: recorded_layer(&h.layer)?.pooled.view(),
                    weight: (h.inputs.contains(layer) && options.pooling == Pooling::Mean).then(|| h.weight.view()),
                }),
                None => None,
            };
            explain(
                &example_images(probe.len(), options.examples),
                acts,
                &labels,
                classifier_view,
                probe.class_names(),
                |i| probe.label(i),
                options.max_winners,
            )?
        }
        None => Vec::new(),
    };

    Ok(Dissection {
        backend: scores.backend.to_string(),
        concept_set: concepts.name().to_string(),
        concepts: concepts.len(),
        similarity: options.similarity.name().to_string(),
        pooling: options.pooling.to_string(),
        probe: probe.id(),
        probe_images: probe.len(),
        unmatched_classes: scores.unmatched_classes,
        layers,
        classifier,
        examples,
        planted,
        record_seconds,
        score_seconds,
    })
}

/// The layers a dissection with `options` names (the explained layer included), and the layer whose
/// winners explain the examples.
pub fn planned_layers(source: &dyn ActivationSource, options: &Options) -> (Vec<String>, Option<String>) {
    let head = source.head();
    let mut named = if options.layers.is_empty() { source.default_layers() } else { options.layers.clone() };
    let explain_layer = match &options.explain_layer {
        Some(layer) => Some(layer.clone()),
        None => default_explain_layer(&named, head.as_ref().map(|h| (h.layer.as_str(), h.inputs.as_slice()))),
    };
    if let Some(layer) = &explain_layer {
        if !named.contains(layer) {
            named.push(layer.clone());
        }
    }
    (named, explain_layer)
}

/// The last named layer that is the classifier's input, else the last named one that is not the
/// classifier itself.
fn default_explain_layer(named: &[String], head: Option<(&str, &[String])>) -> Option<String> {
    let (classifier, inputs) = head.unwrap_or(("", &[]));
    named.iter().rev().find(|l| inputs.contains(l)).or_else(|| named.iter().rev().find(|l| l.as_str() != classifier)).cloned()
}

fn layer_report(acts: &LayerActivations, labels: Vec<NeuronLabel>, top_images: usize, similarity_seconds: f64) -> LayerReport {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for l in labels.iter().filter(|l| l.status == NeuronStatus::Labelled) {
        *counts.entry(l.label.as_str()).or_default() += 1;
    }
    let mut label_distribution: Vec<LabelCount> =
        counts.into_iter().map(|(label, neurons)| LabelCount { label: label.to_string(), neurons }).collect();
    label_distribution.sort_by(|a, b| b.neurons.cmp(&a.neurons).then_with(|| a.label.cmp(&b.label)));
    let quality = LayerQuality::of(&labels);
    let neurons = labels
        .into_iter()
        .enumerate()
        .map(|(unit, label)| NeuronReport {
            label,
            activity: acts.unit_activity.get(unit).copied().unwrap_or_default(),
            pooled_positive: {
                let column = acts.pooled.column(unit);
                column.iter().filter(|&&a| a > 0.0).count() as f32 / column.len().max(1) as f32
            },
            top_images: top_indices(acts.pooled.column(unit).iter().copied(), top_images),
        })
        .collect();
    LayerReport {
        layer: acts.layer.clone(),
        units: acts.pooled.ncols(),
        active_fraction: acts.active_fraction(),
        label_distribution,
        quality,
        neurons,
        cached: acts.cached,
        similarity_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::{CountingProbe, ToyModel};
    use crate::source::Silent;

    #[test]
    fn label_backend_end_to_end_on_a_toy_model() {
        // Classes alternate a, b; the head's unit 0 is x and unit 1 is −x for image x.
        let probe = CountingProbe { n: 40, classes: vec!["a".into(), "b".into()] };
        let concepts = ConceptSet::from_lines("classes".into(), ["a", "b"]).unwrap();
        let mut model = ToyModel { passes: 0 };
        let options = Options { examples: 3, similarity: Similarity::Cos, ..Options::default() };
        let d = dissect(&mut model, &probe, Scorer::Labels, &concepts, &options, &Cache::disabled(), &Silent).unwrap();
        assert_eq!(d.backend, "labels");
        assert_eq!(d.layers.iter().map(|l| l.layer.as_str()).collect::<Vec<_>>(), ["tokens", "head"]);
        let head = &d.layers[1];
        assert_eq!(head.neurons[0].top_images, vec![39, 38, 37, 36, 35]);
        let eval = d.classifier.as_ref().unwrap();
        assert_eq!(eval.classes, 2);
        assert!(eval.mean_cosine.is_none());
        // The toy head's input is `tokens`: the examples are explained there, against the prediction.
        assert_eq!(d.examples.len(), 3);
        assert!(d.examples.iter().all(|e| e.layer == "tokens" && e.predicted.is_some()));
        assert_eq!(d.examples[1].image, 13);
        assert_eq!(d.examples[1].class.as_deref(), Some("b"));
        // tokens' class token is [x, 0, 2]: two active units for x > 0.
        assert_eq!(d.examples[1].active, 2);
        // The toy's all-zero unit has NaN cosines: JSON writes them as null.
        let json: serde_json::Value = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(json["layers"][1]["neurons"][0]["top_images"][0], 39);
    }

    #[test]
    fn unlabelled_probe_needs_clip() {
        let probe = CountingProbe { n: 4, classes: vec![] };
        let concepts = ConceptSet::from_lines("c".into(), ["a"]).unwrap();
        let mut model = ToyModel { passes: 0 };
        let err = dissect(&mut model, &probe, Scorer::Labels, &concepts, &Options::default(), &Cache::disabled(), &Silent).unwrap_err();
        assert!(matches!(err, DissectError::MissingLabels(_)), "{err}");
    }

    #[test]
    fn explain_layer_defaults() {
        let named: Vec<String> = ["blocks.0.mlp.act", "blocks.1.mlp.act", "head"].map(String::from).to_vec();
        assert_eq!(default_explain_layer(&named, Some(("head", &["norm".to_string()]))).as_deref(), Some("blocks.1.mlp.act"));
        let with_input: Vec<String> = ["layer3", "layer4", "fc"].map(String::from).to_vec();
        assert_eq!(default_explain_layer(&with_input, Some(("fc", &["layer4".to_string()]))).as_deref(), Some("layer4"));
        assert_eq!(default_explain_layer(&["head".to_string()], Some(("head", &[]))), None);
    }
}

//! How good each neuron's label is, and whether a neuron can be labelled at all (issue 16).
//!
//! The probe set is cut in two halves ([`Halves`]): labelling sees one, the quality score is
//! computed on the other, so a label is never scored on the images that chose it. The score
//! compares the neuron's pooled activation `a` with its label's column `p` of P on the held-out
//! images, with the metrics that pass NeuronEval's sanity tests (Oikarinen et al., ICML 2025):
//!
//! * `correlation` — Pearson's r of `a` and `p`; `cosine` — `a·p / (|a| |p|)` (what there is to
//!   compare when P is CLIP's estimate);
//! * when P is exact presence (labels or annotations): `auprc` — average precision of ranking the
//!   images by `a` to find those showing the concept (a neuron ignorant of it scores the
//!   concept's `prevalence`), and `f1` / `iou` of the top-quantile images (those with `a` at least the
//!   `n`-th largest value, `n` the number showing the concept; ties included) against the images
//!   showing it.
//!
//! A neuron is not labelled ([`NeuronStatus`]) when no probe image gives it a positive pooled
//! activation, or fewer images than the similarity function's top-k do: its top images would be a
//! tie-break among zeros, not what it detects.

use ndarray::{Array2, ArrayView2, Axis};
use serde::Serialize;

use crate::concepts::ConceptSet;
use crate::error::{DissectError, Result};
use crate::label::NeuronLabel;
use crate::score::Scores;

/// The two halves of a probe set: even images label, odd images score. Alternating (not a random
/// cut) keeps both halves alike when the set is listed class by class, as an ImageFolder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halves {
    pub labelling: Vec<usize>,
    pub held_out: Vec<usize>,
}

impl Halves {
    pub fn of(images: usize) -> Self {
        Self { labelling: (0..images).step_by(2).collect(), held_out: (1..images).step_by(2).collect() }
    }
}

/// The rows `rows` of `m`, in that order.
pub fn select_rows(m: ArrayView2<f32>, rows: &[usize]) -> Array2<f32> {
    m.select(Axis(0), rows)
}

/// Whether a neuron carries a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NeuronStatus {
    Labelled,
    /// No probe image gives a positive pooled activation.
    Inactive,
    /// Fewer labelling images give a positive pooled activation than the similarity's top-k.
    TooFewImages,
}

impl NeuronStatus {
    /// The status of a neuron whose pooled activations are `all` over the whole probe set and
    /// `labelling` over the labelling half; `top_k` is the similarity's (`None`: it takes no top-k).
    pub fn of(all: impl Iterator<Item = f32>, labelling: impl Iterator<Item = f32>, top_k: Option<usize>) -> Self {
        let mut all = all;
        if !all.any(|a| a > 0.0) {
            return Self::Inactive;
        }
        match top_k {
            Some(k) if labelling.filter(|&a| a > 0.0).count() < k => Self::TooFewImages,
            _ => Self::Labelled,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Labelled => "labelled",
            Self::Inactive => "inactive",
            Self::TooFewImages => "too-few-images",
        }
    }
}

/// Gives each of a layer's `labels` its status and, when labelled, its quality: `pooled` is the
/// layer's N × K pooled activations over the whole probe set, `scores` P over the same images.
/// `top_k` is the similarity's on the labelling half; `check_activity: false` (a classifier, whose
/// logits have no zero floor) labels every neuron.
pub fn assess_labels(
    labels: &mut [NeuronLabel],
    pooled: ArrayView2<f32>,
    scores: &Scores,
    concepts: &ConceptSet,
    halves: &Halves,
    top_k: Option<usize>,
    check_activity: bool,
) -> Result<()> {
    if pooled.ncols() != labels.len() || pooled.nrows() != scores.matrix.nrows() {
        return Err(DissectError::shape(
            "activations to assess labels with",
            format!("{} images × {} units", scores.matrix.nrows(), labels.len()),
            format!("{:?}", pooled.dim()),
        ));
    }
    let held_out_acts = select_rows(pooled, &halves.held_out);
    let held_out_scores = select_rows(scores.matrix.view(), &halves.held_out);
    for label in labels.iter_mut() {
        let unit = pooled.column(label.unit);
        if check_activity {
            let labelling = halves.labelling.iter().map(|&n| unit[n]);
            label.status = NeuronStatus::of(unit.iter().copied(), labelling, top_k);
        }
        if label.status != NeuronStatus::Labelled {
            label.label.clear();
            label.score = f32::NAN;
            label.alternatives.clear();
            continue;
        }
        let m = concepts.find(&label.label).ok_or_else(|| {
            DissectError::shape(format!("label of unit {}", label.unit), format!("a concept of `{}`", concepts.name()), label.label.clone())
        })?;
        let a: Vec<f32> = held_out_acts.column(label.unit).to_vec();
        let p: Vec<f32> = held_out_scores.column(m).to_vec();
        label.quality = Some(LabelQuality::score(&a, &p, scores.is_exact()));
    }
    Ok(())
}

/// A layer's neurons by status, and its labels' mean quality (over the labelled neurons whose metric
/// is defined; `None` when none is).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LayerQuality {
    pub labelled: usize,
    pub inactive: usize,
    pub too_few_images: usize,
    pub mean_auprc: Option<f64>,
    pub mean_correlation: Option<f64>,
    pub mean_f1: Option<f64>,
}

impl LayerQuality {
    /// `, 57 inactive, 133 with too few images, mean AUPRC 0.398, mean corr. 0.382`: the layer's
    /// unlabelled neurons and its labels' mean held-out quality, for headings and printouts (empty
    /// parts left out).
    pub fn note(&self) -> String {
        let mut note = String::new();
        for (n, what) in [(self.inactive, "inactive"), (self.too_few_images, "with too few images")] {
            if n > 0 {
                note.push_str(&format!(", {n} {what}"));
            }
        }
        for (mean, what) in [(self.mean_auprc, "AUPRC"), (self.mean_correlation, "corr.")] {
            if let Some(m) = mean {
                note.push_str(&format!(", mean {what} {m:.3}"));
            }
        }
        note
    }

    pub fn of(labels: &[NeuronLabel]) -> Self {
        let count = |status| labels.iter().filter(|l| l.status == status).count();
        let mean = |metric: fn(&LabelQuality) -> Option<f32>| {
            let values: Vec<f64> = labels.iter().filter_map(|l| l.quality.as_ref().and_then(metric)).map(f64::from).collect();
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        Self {
            labelled: count(NeuronStatus::Labelled),
            inactive: count(NeuronStatus::Inactive),
            too_few_images: count(NeuronStatus::TooFewImages),
            mean_auprc: mean(|q| q.auprc),
            mean_correlation: mean(|q| q.correlation),
            mean_f1: mean(|q| q.f1),
        }
    }
}

/// A label's quality on the held-out images (see the module docs); `None` where a metric is
/// undefined (a constant activation, a concept no held-out image shows, or P not exact).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelQuality {
    /// Held-out images the metrics are computed on.
    pub images: usize,
    pub correlation: Option<f32>,
    pub cosine: Option<f32>,
    /// Fraction of the held-out images showing the concept: a random ranking's expected AUPRC.
    pub prevalence: Option<f32>,
    pub auprc: Option<f32>,
    pub f1: Option<f32>,
    pub iou: Option<f32>,
}

impl LabelQuality {
    /// Scores activations `a` against the label's P column `p` (same images); `exact` when `p` is
    /// presence (1 = the image shows the concept, 0 = it does not).
    pub fn score(a: &[f32], p: &[f32], exact: bool) -> Self {
        let present: Option<Vec<bool>> = exact.then(|| p.iter().map(|&v| v > 0.5).collect());
        let positives = present.as_ref().map(|t| t.iter().filter(|&&b| b).count());
        let binary = present.as_ref().filter(|_| positives.is_some_and(|n| n > 0));
        let (f1, iou) = match binary {
            Some(t) => {
                let (f1, iou) = top_quantile_overlap(a, t);
                (Some(f1), Some(iou))
            }
            None => (None, None),
        };
        Self {
            images: a.len(),
            correlation: pearson(a, p),
            cosine: cosine(a, p),
            prevalence: positives.filter(|_| !a.is_empty()).map(|n| n as f32 / a.len() as f32),
            auprc: binary.map(|t| average_precision(a, t)),
            f1,
            iou,
        }
    }
}

fn pearson(a: &[f32], b: &[f32]) -> Option<f32> {
    let n = a.len() as f64;
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let (ma, mb) = (mean(a), mean(b));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        ab += dx * dy;
        aa += dx * dx;
        bb += dy * dy;
    }
    (aa > 0.0 && bb > 0.0).then(|| (ab / (aa * bb).sqrt()) as f32)
}

fn cosine(a: &[f32], b: &[f32]) -> Option<f32> {
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(&u, &v)| u as f64 * v as f64).sum::<f64>();
    let norms = dot(a, a) * dot(b, b);
    (norms > 0.0).then(|| (dot(a, b) / norms.sqrt()) as f32)
}

/// Average precision of ranking by `score` (highest first) to find `truth`, as scikit-learn's
/// `average_precision_score`: `Σ (R_k − R_{k−1}) P_k` over the distinct score values, so tied
/// images count as one step. `truth` has at least one positive.
fn average_precision(score: &[f32], truth: &[bool]) -> f32 {
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&i, &j| score[j].total_cmp(&score[i]));
    let positives = truth.iter().filter(|&&t| t).count() as f64;
    let (mut tp, mut seen, mut ap, mut last_recall) = (0.0, 0.0, 0.0, 0.0);
    for (k, &i) in order.iter().enumerate() {
        tp += f64::from(u8::from(truth[i]));
        seen += 1.0;
        let group_ends = order.get(k + 1).is_none_or(|&next| score[next] != score[i]);
        if group_ends {
            let recall = tp / positives;
            ap += (recall - last_recall) * (tp / seen);
            last_recall = recall;
        }
    }
    ap as f32
}

/// F1 and IoU of the images with `score` at least its `n`-th largest value (`n` = positives of
/// `truth`, at least one) against `truth`.
fn top_quantile_overlap(score: &[f32], truth: &[bool]) -> (f32, f32) {
    let positives = truth.iter().filter(|&&t| t).count();
    let mut sorted = score.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let threshold = sorted[positives - 1];
    let (mut predicted, mut hits) = (0usize, 0usize);
    for (&s, &t) in score.iter().zip(truth) {
        if s >= threshold {
            predicted += 1;
            hits += usize::from(t);
        }
    }
    let f1 = 2.0 * hits as f32 / (predicted + positives) as f32;
    let iou = hits as f32 / (predicted + positives - hits) as f32;
    (f1, iou)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_note_names_unlabelled_neurons_and_mean_quality() {
        let q = LayerQuality { labelled: 3, inactive: 2, too_few_images: 0, mean_auprc: Some(0.5), mean_correlation: None, mean_f1: None };
        assert_eq!(q.note(), ", 2 inactive, mean AUPRC 0.500");
        let all = LayerQuality { labelled: 3, ..Default::default() };
        assert_eq!(all.note(), "");
    }

    #[test]
    fn metrics_on_a_hand_worked_case() {
        // Ranked: 0.9 (yes), 0.8 (no), 0.7 (yes), 0.1 (no). AP = ½·1 + ½·⅔ = ⅚.
        let a = [0.1, 0.9, 0.7, 0.8];
        let p = [0.0, 1.0, 1.0, 0.0];
        let q = LabelQuality::score(&a, &p, true);
        assert!((q.auprc.unwrap() - 5.0 / 6.0).abs() < 1e-6);
        assert_eq!(q.prevalence, Some(0.5));
        // Top 2 by activation: 0.9 and 0.8, one hit: F1 = 2·1/(2+2), IoU = 1/3.
        assert_eq!((q.f1, q.iou), (Some(0.5), Some(1.0 / 3.0)));
        // r of (0.1, 0.9, 0.7, 0.8) with (0, 1, 1, 0), by hand: 0.35 / √(0.4275 · 1) ... computed in f64.
        let want = {
            let ma = 2.5 / 4.0;
            let cov: f64 = a.iter().zip(&p).map(|(&x, &y)| (x as f64 - ma) * (y as f64 - 0.5)).sum();
            let va: f64 = a.iter().map(|&x| (x as f64 - ma).powi(2)).sum();
            cov / (va * 1.0).sqrt()
        };
        assert!((q.correlation.unwrap() as f64 - want).abs() < 1e-6);
        assert!((q.cosine.unwrap() - 1.6 / (1.95f32.sqrt() * 2.0f32.sqrt())).abs() < 1e-6);
        // Ties count as one step: all equal scores give AP = prevalence.
        assert!((average_precision(&[1.0; 4], &[true, false, false, false]) - 0.25).abs() < 1e-6);
    }

    #[test]
    fn undefined_metrics_are_none_and_clip_scores_have_no_binary_ones() {
        let q = LabelQuality::score(&[0.0; 4], &[0.0, 1.0, 0.0, 0.0], true);
        assert_eq!((q.correlation, q.cosine), (None, None));
        assert!(q.auprc.is_some(), "a constant neuron still ranks: at chance");
        let absent = LabelQuality::score(&[0.1, 0.2], &[0.0, 0.0], true);
        assert_eq!((absent.auprc, absent.f1, absent.prevalence), (None, None, Some(0.0)));
        let clip = LabelQuality::score(&[0.1, 0.2, 0.3], &[0.2, 0.25, 0.3], false);
        assert_eq!((clip.auprc, clip.f1, clip.iou, clip.prevalence), (None, None, None, None));
        assert!(clip.correlation.unwrap() > 0.99);
    }

    /// Independent concepts of the given prevalences over `n` images, from a fixed LCG.
    fn concepts(n: usize, prevalences: &[f64], seed: u64) -> Vec<Vec<bool>> {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..prevalences.len()).map(|c| (0..n).map(|_| next() < prevalences[c]).collect()).collect::<Vec<_>>()
    }

    fn floats(b: &[bool]) -> Vec<f32> {
        b.iter().map(|&x| f32::from(u8::from(x))).collect()
    }

    /// A neuron detecting `concept`: 1 + noise where it is present, noise elsewhere.
    fn neuron(concept: &[bool], noise: &[bool]) -> Vec<f32> {
        concept.iter().zip(noise).map(|(&c, &z)| f32::from(u8::from(c)) + 0.3 * f32::from(u8::from(z))).collect()
    }

    fn metrics(q: &LabelQuality) -> [f32; 4] {
        [q.correlation.unwrap(), q.auprc.unwrap(), q.f1.unwrap(), q.iou.unwrap()]
    }

    #[test]
    fn a_label_from_the_wrong_concept_scores_at_chance() {
        let c = concepts(4000, &[0.3, 0.2, 0.5], 7);
        let a = neuron(&c[0], &c[2]);
        let right = LabelQuality::score(&a, &floats(&c[0]), true);
        let wrong = LabelQuality::score(&a, &floats(&c[1]), true);
        let [r, auprc, f1, iou] = metrics(&right);
        assert!(r > 0.9 && auprc > 0.99 && f1 > 0.99 && iou > 0.99, "{right:?}");
        let prevalence = wrong.prevalence.unwrap();
        assert!(wrong.correlation.unwrap().abs() < 0.05, "{wrong:?}");
        assert!((wrong.auprc.unwrap() - prevalence).abs() < 0.03, "{wrong:?}");
        // A random set of the top 30% of images against a 20% concept: F1 about 2·0.3·0.2/0.5.
        let chance_f1 = 2.0 * 0.3 * prevalence / (0.3 + prevalence);
        assert!((wrong.f1.unwrap() - chance_f1).abs() < 0.04, "{wrong:?}, chance {chance_f1}");
    }

    #[test]
    fn missing_and_extra_label_perturbations_lower_every_score() {
        let c = concepts(4000, &[0.2, 0.2, 0.5, 0.5], 11);
        // The neuron detects c0 OR c1.
        let union: Vec<bool> = c[0].iter().zip(&c[1]).map(|(&x, &y)| x || y).collect();
        let a = neuron(&union, &c[2]);
        let exact = metrics(&LabelQuality::score(&a, &floats(&union), true));
        // Missing labels: the explanation names c0 alone.
        let missing = metrics(&LabelQuality::score(&a, &floats(&c[0]), true));
        // Extra labels: the explanation adds images of an unrelated concept (half of c3's).
        let extra: Vec<bool> = union.iter().zip(c[3].iter().zip(&c[2])).map(|(&u, (&x, &y))| u || (x && y)).collect();
        let extra = metrics(&LabelQuality::score(&a, &floats(&extra), true));
        for (name, perturbed) in [("missing", missing), ("extra", extra)] {
            for (metric, (p, e)) in ["correlation", "auprc", "f1", "iou"].iter().zip(perturbed.iter().zip(exact)) {
                assert!(*p < e - 0.05, "{name}-label {metric}: {p} is not below the exact label's {e}");
            }
        }
    }

    #[test]
    fn status_by_positive_images() {
        let all = [0.0, 0.0, 0.5, 0.0];
        assert_eq!(NeuronStatus::of([0.0, -1.0].into_iter(), [0.0].into_iter(), None), NeuronStatus::Inactive);
        assert_eq!(NeuronStatus::of(all.into_iter(), [0.0, 0.5].into_iter(), Some(2)), NeuronStatus::TooFewImages);
        assert_eq!(NeuronStatus::of(all.into_iter(), [0.0, 0.5].into_iter(), Some(1)), NeuronStatus::Labelled);
        assert_eq!(NeuronStatus::of(all.into_iter(), [0.0].into_iter(), None), NeuronStatus::Labelled);
        assert_eq!(NeuronStatus::TooFewImages.name(), "too-few-images");
        assert_eq!(serde_json::to_string(&NeuronStatus::TooFewImages).unwrap(), "\"too-few-images\"");
        assert_eq!(Halves::of(5), Halves { labelling: vec![0, 2, 4], held_out: vec![1, 3] });
    }

    #[test]
    fn layer_means_cover_labelled_neurons_with_defined_metrics() {
        let label = |status, quality: Option<LabelQuality>| NeuronLabel {
            unit: 0,
            label: String::new(),
            score: 0.0,
            alternatives: vec![],
            status,
            quality,
        };
        let q = |auprc, correlation| LabelQuality {
            images: 4,
            correlation,
            cosine: None,
            prevalence: Some(0.5),
            auprc: Some(auprc),
            f1: Some(auprc),
            iou: None,
        };
        let labels = [
            label(NeuronStatus::Labelled, Some(q(1.0, Some(0.5)))),
            label(NeuronStatus::Labelled, Some(q(0.5, None))),
            label(NeuronStatus::Inactive, None),
            label(NeuronStatus::TooFewImages, None),
            label(NeuronStatus::TooFewImages, None),
        ];
        let layer = LayerQuality::of(&labels);
        assert_eq!((layer.labelled, layer.inactive, layer.too_few_images), (2, 1, 2));
        assert_eq!((layer.mean_auprc, layer.mean_correlation, layer.mean_f1), (Some(0.75), Some(0.5), Some(0.75)));
        assert_eq!(LayerQuality::of(&labels[2..]).mean_auprc, None);
    }
}

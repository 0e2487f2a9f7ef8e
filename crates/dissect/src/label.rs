//! Naming neurons from a similarity matrix, and scoring the names of a classifier layer against its
//! class names (CLIP-Dissect's final-layer evaluation).

use ndarray::ArrayView2;
use rayon::prelude::*;
use serde::Serialize;

use crate::concepts::ConceptSet;
use crate::error::{DissectError, Result};
use crate::quality::{LabelQuality, NeuronStatus};
use crate::score::cosine_matrix;
use crate::similarity::largest;
use crate::source::TextEncoder;

/// How many runner-up concepts each neuron keeps.
pub const ALTERNATIVES: usize = 4;

/// A neuron's name: the most similar concept and the next ones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NeuronLabel {
    pub unit: usize,
    pub label: String,
    pub score: f32,
    /// The next most similar concepts with their scores, best first.
    pub alternatives: Vec<(String, f32)>,
    /// Whether the neuron carries a label at all; the others have an empty label, NaN score.
    pub status: NeuronStatus,
    /// The label's score on the held-out probe images (labelled neurons, once assessed).
    pub quality: Option<LabelQuality>,
}

/// Indices of the `n` highest values, highest first (ties: lower index); NaN ranks below every
/// number, so an undefined similarity never names a neuron.
pub(crate) fn top_indices(values: impl Iterator<Item = f32>, n: usize) -> Vec<usize> {
    let values = values.zip(0..).map(|(v, i)| (if v.is_nan() { f32::NEG_INFINITY } else { v }, i)).collect();
    largest(values, n).into_iter().map(|i| i as usize).collect()
}

/// Names every neuron (row of `similarity`, K × M) after its best concept, with
/// `alternatives` runners-up; status `labelled` and no quality yet
/// ([`crate::quality::assess_labels`] gives both).
pub fn label_neurons(similarity: ArrayView2<f32>, concepts: &ConceptSet, alternatives: usize) -> Result<Vec<NeuronLabel>> {
    if similarity.ncols() != concepts.len() {
        return Err(DissectError::shape(
            "similarity matrix",
            format!("{} columns (concepts in `{}`)", concepts.len(), concepts.name()),
            format!("{} columns", similarity.ncols()),
        ));
    }
    let names = concepts.concepts();
    Ok(similarity
        .axis_iter(ndarray::Axis(0))
        .into_par_iter()
        .enumerate()
        .map(|(unit, row)| {
            let best = top_indices(row.iter().copied(), alternatives + 1);
            let entry = |m: usize| (names[m].clone(), row[m]);
            let (label, score) = entry(best[0]);
            NeuronLabel {
                unit,
                label,
                score,
                alternatives: best[1..].iter().map(|&m| entry(m)).collect(),
                status: NeuronStatus::Labelled,
                quality: None,
            }
        })
        .collect())
}

/// How well a classifier layer's neurons are named: neuron c should be named after class c.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassifierEvaluation {
    pub layer: String,
    pub classes: usize,
    /// Fraction of classes whose neuron's best concept is the class.
    pub top1: f64,
    /// Fraction of classes whose neuron has the class among its 5 best concepts.
    pub top5: f64,
    /// Mean cosine, in the text encoder's space, between each neuron's label and its class name
    /// (CLIP-Dissect's `cos_sim_clip`); only with a text encoder.
    pub mean_cosine: Option<f64>,
    /// Classes whose name is not in the concept set: their neuron can never be named right.
    pub classes_missing_from_concepts: Vec<String>,
}

/// Evaluates the names of a classifier layer (K = number of classes) against `class_names`.
pub fn evaluate_classifier(
    layer: &str,
    similarity: ArrayView2<f32>,
    labels: &[NeuronLabel],
    concepts: &ConceptSet,
    class_names: &[String],
    text: Option<&dyn TextEncoder>,
) -> Result<ClassifierEvaluation> {
    if similarity.nrows() != class_names.len() || labels.len() != class_names.len() {
        return Err(DissectError::shape(
            format!("classifier layer `{layer}`"),
            format!("one unit per class of the probe set ({})", class_names.len()),
            format!("{} units", similarity.nrows()),
        ));
    }
    let mut top1 = 0usize;
    let mut top5 = 0usize;
    let mut missing = Vec::new();
    for (c, name) in class_names.iter().enumerate() {
        match concepts.find(name) {
            Some(m) => {
                let best = top_indices(similarity.row(c).iter().copied(), 5);
                top1 += usize::from(best.first() == Some(&m));
                top5 += usize::from(best.contains(&m));
            }
            None => missing.push(name.clone()),
        }
    }
    let mean_cosine = match text {
        Some(encoder) => {
            let predicted = encoder.encode_texts(&labels.iter().map(|l| l.label.clone()).collect::<Vec<_>>())?;
            let truth = encoder.encode_texts(class_names)?;
            let cos = cosine_matrix(&predicted, &truth)?;
            Some((0..class_names.len()).map(|c| cos[[c, c]] as f64).sum::<f64>() / class_names.len() as f64)
        }
        None => None,
    };
    let classes = class_names.len();
    Ok(ClassifierEvaluation {
        layer: layer.to_string(),
        classes,
        top1: top1 as f64 / classes.max(1) as f64,
        top5: top5 as f64 / classes.max(1) as f64,
        mean_cosine,
        classes_missing_from_concepts: missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    fn concepts() -> ConceptSet {
        ConceptSet::from_lines("t".into(), ["cat", "dog", "car", "tree", "sky", "sea", "sun"]).unwrap()
    }

    #[test]
    fn labels_are_best_concept_then_runners_up() {
        let sim = array![[0.1, 0.9, f32::NAN, 0.5, 0.0, 0.2, 0.3], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]];
        let labels = label_neurons(sim.view(), &concepts(), ALTERNATIVES).unwrap();
        assert_eq!(labels[0].label, "dog");
        assert_eq!(labels[0].score, 0.9);
        let alts: Vec<&str> = labels[0].alternatives.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(alts, ["tree", "sun", "sea", "cat"], "NaN ranks last");
        assert_eq!(labels[1].unit, 1);
        assert_eq!(labels[1].label, "cat");
        assert!(label_neurons(sim.view(), &ConceptSet::from_lines("x".into(), ["a"]).unwrap(), 4).is_err());
    }

    /// Embeds "cat", "dog" and every other text along three orthogonal axes.
    struct Words;
    impl TextEncoder for Words {
        fn encode_texts(&self, texts: &[String]) -> Result<Array2<f32>> {
            let axis = |t: &str| match t {
                "cat" => 0,
                "dog" => 2,
                _ => 1,
            };
            Ok(Array2::from_shape_fn((texts.len(), 3), |(i, j)| if axis(&texts[i]) == j { 2.0 } else { 0.0 }))
        }
    }

    #[test]
    fn classifier_accuracy_and_cosine() {
        // Class 0 "cat": neuron 0 prefers "dog" then "cat" (top-5 hit only); class 1 "dog": right.
        let sim = array![[0.5, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.8, 0.1, 0.0, 0.0, 0.0, 0.0]];
        let labels = label_neurons(sim.view(), &concepts(), ALTERNATIVES).unwrap();
        let classes = vec!["cat".to_string(), "dog".to_string()];
        let eval = evaluate_classifier("head", sim.view(), &labels, &concepts(), &classes, Some(&Words)).unwrap();
        assert_eq!((eval.top1, eval.top5), (0.5, 1.0));
        // cos(dog, cat) = 0, cos(dog, dog) = 1.
        assert!((eval.mean_cosine.unwrap() - 0.5).abs() < 1e-6);
        let without = evaluate_classifier("head", sim.view(), &labels, &concepts(), &classes, None).unwrap();
        assert_eq!(without.mean_cosine, None);
    }

    #[test]
    fn classes_outside_the_concepts_count_as_misses_and_are_listed() {
        let sim = array![[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]];
        let labels = label_neurons(sim.view(), &concepts(), 0).unwrap();
        let classes = vec!["lion".to_string(), "dog".to_string()];
        let eval = evaluate_classifier("fc", sim.view(), &labels, &concepts(), &classes, None).unwrap();
        assert_eq!(eval.top1, 0.5);
        assert_eq!(eval.classes_missing_from_concepts, vec!["lion".to_string()]);
        let three = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert!(evaluate_classifier("fc", sim.view(), &labels, &concepts(), &three, None).is_err());
    }
}

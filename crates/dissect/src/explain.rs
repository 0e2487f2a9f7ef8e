//! Explaining single predictions by their few winners (DISCOVER's per-example analysis): for a probe
//! image, the neurons of a layer that are active (`|a| > 1e-4` after pooling), their names and how
//! much each contributes.

use ndarray::ArrayView2;
use serde::Serialize;

use crate::error::{DissectError, Result};
use crate::label::{top_indices, NeuronLabel};
use crate::record::{LayerActivations, ACTIVE_THRESHOLD};

/// One active neuron of an explained image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Winner {
    pub unit: usize,
    pub label: String,
    pub activation: f32,
    /// `activation × weight[predicted class, unit]` when the layer feeds the classifier directly,
    /// else the activation itself.
    pub contribution: f32,
}

/// One probe image and the neurons that explain it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub image: usize,
    /// The image's class, when the probe set is labelled.
    pub class: Option<String>,
    /// The model's prediction, when its classifier was recorded.
    pub predicted: Option<String>,
    pub layer: String,
    /// Active neurons of the layer for this image, of `units`.
    pub active: usize,
    pub units: usize,
    /// The active neurons with the largest |contribution|, largest first.
    pub winners: Vec<Winner>,
}

/// What contributions are measured against: the classifier's weight (`[classes, features]`) when
/// the explained layer is its input, and the class logits to read the prediction from.
#[derive(Debug, Clone, Copy)]
pub struct Classifier<'a> {
    pub logits: ArrayView2<'a, f32>,
    pub weight: Option<ArrayView2<'a, f32>>,
}

/// `count` probe images spread evenly over the set (the first, then every N/count-th).
pub fn example_images(probe_len: usize, count: usize) -> Vec<usize> {
    let count = count.min(probe_len);
    (0..count).map(|i| i * probe_len / count).collect()
}

/// Explains `images` by the active neurons of `layer` (at most `max_winners` each).
pub fn explain(
    images: &[usize],
    layer: &LayerActivations,
    labels: &[NeuronLabel],
    classifier: Option<Classifier>,
    class_names: &[String],
    image_class: impl Fn(usize) -> Option<usize>,
    max_winners: usize,
) -> Result<Vec<Explanation>> {
    let (n, units) = layer.pooled.dim();
    if labels.len() != units {
        return Err(DissectError::shape(format!("labels of `{}`", layer.layer), units.to_string(), labels.len().to_string()));
    }
    if let Some(c) = &classifier {
        if c.logits.nrows() != n {
            return Err(DissectError::shape("classifier logits", format!("{n} rows"), c.logits.nrows().to_string()));
        }
        if let Some(w) = c.weight {
            if w.ncols() != units || w.nrows() != c.logits.ncols() {
                return Err(DissectError::shape(
                    format!("classifier weight applied to `{}`", layer.layer),
                    format!("[{}, {units}]", c.logits.ncols()),
                    format!("{:?}", w.dim()),
                ));
            }
        }
    }
    let name = |c: usize| class_names.get(c).cloned().unwrap_or_else(|| format!("class {c}"));
    images
        .iter()
        .map(|&image| {
            if image >= n {
                return Err(DissectError::parameter("example image", format!("{image} is beyond the {n} probe images")));
            }
            let row = layer.pooled.row(image);
            let predicted = classifier.and_then(|c| top_indices(c.logits.row(image).iter().copied(), 1).first().copied());
            let weight_row = classifier.zip(predicted).and_then(|(c, p)| c.weight.map(|w| w.index_axis_move(ndarray::Axis(0), p)));
            let active: Vec<Winner> = row
                .iter()
                .enumerate()
                .filter(|(_, a)| a.abs() > ACTIVE_THRESHOLD)
                .map(|(unit, &activation)| Winner {
                    unit,
                    label: labels[unit].label.clone(),
                    activation,
                    contribution: weight_row.map_or(activation, |w| activation * w[unit]),
                })
                .collect();
            let count = active.len();
            let order = top_indices(active.iter().map(|w| w.contribution.abs()), max_winners);
            Ok(Explanation {
                image,
                class: image_class(image).map(name),
                predicted: predicted.map(name),
                layer: layer.layer.clone(),
                active: count,
                units,
                winners: order.into_iter().map(|i| active[i].clone()).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn layer() -> LayerActivations {
        LayerActivations {
            layer: "norm".into(),
            pooled: array![[0.0, 2.0, 0.00005, -3.0], [1.0, 0.0, 0.0, 0.0]],
            unit_activity: vec![0.5; 4],
            image_activity: vec![0.5; 2],
            cached: false,
        }
    }

    fn labels() -> Vec<NeuronLabel> {
        ["stripes", "sole", "collar", "strap"]
            .iter()
            .enumerate()
            .map(|(unit, l)| NeuronLabel {
                unit,
                label: l.to_string(),
                score: 1.0,
                alternatives: vec![],
                status: crate::quality::NeuronStatus::Labelled,
                quality: None,
            })
            .collect()
    }

    #[test]
    fn winners_are_the_active_units_ranked_by_contribution() {
        let logits = array![[0.1, 0.9], [0.8, 0.2]];
        let weight = array![[1.0, 1.0, 1.0, 1.0], [0.0, 0.5, 1.0, -0.1]];
        let classes = vec!["shirt".to_string(), "sandal".to_string()];
        let c = Classifier { logits: logits.view(), weight: Some(weight.view()) };
        let got = explain(&[0, 1], &layer(), &labels(), Some(c), &classes, Some, 8).unwrap();
        let first = &got[0];
        assert_eq!(first.predicted.as_deref(), Some("sandal"));
        assert_eq!(first.class.as_deref(), Some("shirt"));
        assert_eq!((first.active, first.units), (2, 4), "|5e-5| is below the threshold");
        // sole: 2 × 0.5 = 1.0; strap: −3 × −0.1 = 0.3.
        assert_eq!(first.winners[0].label, "sole");
        assert_eq!(first.winners[0].contribution, 1.0);
        assert!((first.winners[1].contribution - 0.3).abs() < 1e-6);
        assert_eq!(got[1].winners.len(), 1);
    }

    #[test]
    fn without_a_classifier_weight_contribution_is_the_activation() {
        let got = explain(&[0], &layer(), &labels(), None, &[], |_| None, 1).unwrap();
        assert_eq!(got[0].predicted, None);
        assert_eq!(got[0].winners.len(), 1);
        assert_eq!(got[0].winners[0].label, "strap");
        assert_eq!(got[0].winners[0].contribution, -3.0);
        assert!(explain(&[7], &layer(), &labels(), None, &[], |_| None, 1).is_err());
    }

    #[test]
    fn examples_spread_over_the_set() {
        assert_eq!(example_images(10, 4), vec![0, 2, 5, 7]);
        assert_eq!(example_images(3, 16), vec![0, 1, 2]);
    }
}

//! The annotation backend end to end on the generated `synthetic-concepts` probe set: a network
//! whose units are known concept detectors gets exactly those labels, each scored as perfect on the
//! held-out half, and a dead unit is reported inactive, not labelled.

use cvn_models::data::synthetic_concepts::{concept_names, Split};
use cvn_models::data::ConceptSplit;
use dissect::cache::Cache;
use dissect::integration::DatasetProbe;
use dissect::pipeline::{dissect, Options, Scorer};
use dissect::quality::NeuronStatus;
use dissect::source::{ActivationSource, Head, LayerOutput, ProbeSet, Silent};
use dissect::{ConceptSet, Similarity};

/// Unit m fires (1 plus a little image-dependent variation) on the images showing concept m; the
/// last unit never fires.
struct ConceptDetectors {
    units: usize,
}

impl ActivationSource for ConceptDetectors {
    fn layers(&self) -> Vec<String> {
        vec!["detectors".into()]
    }
    fn default_layers(&self) -> Vec<String> {
        self.layers()
    }
    fn fingerprint(&self) -> String {
        "concept-detectors".into()
    }
    fn record(&mut self, probe: &dyn ProbeSet, indices: &[usize], _: &[String]) -> dissect::Result<Vec<LayerOutput>> {
        let annotations = probe.annotations().expect("the synthetic probe ships annotations");
        let mut data = vec![0.0f32; indices.len() * self.units];
        for (b, &i) in indices.iter().enumerate() {
            for &m in annotations.of_image(i).unwrap() {
                data[b * self.units + m] = 1.0 + 0.01 * (i % 7) as f32;
            }
        }
        Ok(vec![LayerOutput { shape: vec![indices.len(), self.units], data }])
    }
    fn head(&self) -> Option<Head> {
        None
    }
}

#[test]
fn known_detectors_get_their_concepts_with_perfect_scores() {
    let probe = DatasetProbe::synthetic(ConceptSplit::new(0, Split::Probe, 1000).unwrap()).unwrap();
    let names = concept_names();
    let concepts = ConceptSet::from_lines("synthetic".into(), names.iter().map(String::as_str)).unwrap();
    for similarity in [Similarity::default(), Similarity::Cos] {
        let mut model = ConceptDetectors { units: names.len() + 1 };
        let options = Options { similarity, examples: 0, ..Options::default() };
        let d = dissect(&mut model, &probe, Scorer::Labels, &concepts, &options, &Cache::disabled(), &Silent).unwrap();
        assert_eq!(d.backend, "annotations (synthetic-concepts:0 probe split)");
        let neurons = &d.layers[0].neurons;
        for (m, name) in names.iter().enumerate() {
            let n = &neurons[m].label;
            assert_eq!((n.status, n.label.as_str()), (NeuronStatus::Labelled, name.as_str()), "{}", similarity.name());
            let q = n.quality.as_ref().unwrap();
            assert_eq!((q.images, q.auprc, q.f1, q.iou), (500, Some(1.0), Some(1.0), Some(1.0)), "{name}");
            assert!(q.correlation.unwrap() > 0.99 && q.prevalence.unwrap() > 0.2, "{name}: {q:?}");
        }
        let dead = &neurons[names.len()].label;
        assert_eq!((dead.status, dead.label.as_str(), dead.quality.as_ref()), (NeuronStatus::Inactive, "", None));
        assert!(d.layers[0].label_distribution.iter().all(|c| !c.label.is_empty()), "the dead unit's missing label is not counted");
    }
}

#[test]
fn a_detector_firing_on_too_few_images_is_not_labelled() {
    // 300 images: the labelling half's 150 hold about 38 of each shape, below soft-wpmi's top-k of 100.
    let probe = DatasetProbe::synthetic(ConceptSplit::new(1, Split::Probe, 300).unwrap()).unwrap();
    let names = concept_names();
    let concepts = ConceptSet::from_lines("synthetic".into(), names.iter().map(String::as_str)).unwrap();
    let mut model = ConceptDetectors { units: names.len() };
    let options = Options { examples: 0, ..Options::default() };
    let d = dissect(&mut model, &probe, Scorer::Labels, &concepts, &options, &Cache::disabled(), &Silent).unwrap();
    let circle = &d.layers[0].neurons[0].label;
    assert_eq!((circle.status, circle.label.as_str(), circle.quality.as_ref()), (NeuronStatus::TooFewImages, "", None));
}

//! The annotation backend end to end on the generated `synthetic-concepts` probe set: a network
//! whose units are known concept detectors gets exactly those labels, each scored as perfect on the
//! held-out half, a dead unit is reported inactive, not labelled, and a label is chosen on the
//! labelling half alone. Also: an ImageFolder probe with a `concepts.csv`.

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
    let probe = DatasetProbe::synthetic(ConceptSplit::new(0, Split::Probe, 4000).unwrap()).unwrap();
    let names = probe.annotations().unwrap().names().to_vec();
    // The 21 concepts of the groups, then the 16 classes.
    assert_eq!((names.len(), &names[..21], names[21].as_str()), (37, &concept_names()[..], "red circle"));
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
            assert_eq!((q.images, q.auprc, q.f1, q.iou), (2000, Some(1.0), Some(1.0), Some(1.0)), "{name}");
            assert!(q.correlation.unwrap() > 0.99 && q.prevalence.unwrap() > 0.05, "{name}: {q:?}");
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
    let names = probe.annotations().unwrap().names().to_vec();
    let concepts = ConceptSet::from_lines("synthetic".into(), names.iter().map(String::as_str)).unwrap();
    let mut model = ConceptDetectors { units: names.len() };
    let options = Options { examples: 0, ..Options::default() };
    let d = dissect(&mut model, &probe, Scorer::Labels, &concepts, &options, &Cache::disabled(), &Silent).unwrap();
    let circle = &d.layers[0].neurons[0].label;
    assert_eq!((circle.status, circle.label.as_str(), circle.quality.as_ref()), (NeuronStatus::TooFewImages, "", None));
}

#[test]
fn probe_ids_follow_the_images() {
    let id = |seed| DatasetProbe::synthetic(ConceptSplit::new(seed, Split::Probe, 20).unwrap()).unwrap().id();
    assert_eq!(id(0), id(0));
    assert_ne!(id(0), id(1));
    assert!(id(0).starts_with("synthetic-concepts:0 probe split:"), "{}", id(0));
}

#[test]
fn an_image_folder_with_concepts_csv_is_annotated() {
    use cvn_models::data::{FolderTransform, ImageFolder};
    let root = std::env::temp_dir().join(format!("dissect-annotated-folder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (class, rgb) in [("blue", [10, 10, 250]), ("red", [250, 10, 10])] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..2 {
            image::RgbImage::from_pixel(8, 8, image::Rgb(rgb)).save(root.join(format!("{class}/{i}.png"))).unwrap();
        }
    }
    let open = || ImageFolder::open(&root, FolderTransform::eval(8)).unwrap();
    let plain = DatasetProbe::annotated_image_folder("folder", &root, open()).unwrap();
    assert!(plain.annotations().is_none(), "no concepts.csv: class labels only");
    std::fs::write(
        root.join("concepts.csv"),
        "image,concepts\nblue/0.png,blue;round\nblue/1.png,blue\nred/0.png,red\nred/1.png,red;round\n",
    )
    .unwrap();
    let probe = DatasetProbe::annotated_image_folder("folder", &root, open()).unwrap();
    let annotations = probe.annotations().unwrap();
    assert_eq!(annotations.names(), ["blue", "round", "red"]);
    // ImageFolder lists blue/0, blue/1, red/0, red/1.
    assert_eq!(annotations.of_image(3), Some(&[2, 1][..]));
    let concepts = ConceptSet::from_lines("c".into(), ["round", "red", "blue"]).unwrap();
    let scores = dissect::score::probe_scores(&probe, &concepts).unwrap();
    assert_eq!(scores.matrix.column(0).to_vec(), vec![1.0, 0.0, 0.0, 1.0]);
    assert_eq!(probe.truncated(2).annotations().unwrap().len(), 2);
    std::fs::write(root.join("concepts.csv"), "image,concepts\nblue/0.png,blue\n").unwrap();
    let err = DatasetProbe::annotated_image_folder("folder", &root, open()).err().unwrap().to_string();
    assert!(err.contains("concepts.csv") && err.contains("3 of the 4 probe images have no row"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// One unit that detects circles on the even probe images and squares on the odd ones.
struct CirclesThenSquares;

impl ActivationSource for CirclesThenSquares {
    fn layers(&self) -> Vec<String> {
        vec!["unit".into()]
    }
    fn default_layers(&self) -> Vec<String> {
        self.layers()
    }
    fn fingerprint(&self) -> String {
        "circles-then-squares".into()
    }
    fn record(&mut self, probe: &dyn ProbeSet, indices: &[usize], _: &[String]) -> dissect::Result<Vec<LayerOutput>> {
        let annotations = probe.annotations().unwrap();
        let data = indices
            .iter()
            .map(|&i| {
                let shape = if i % 2 == 0 { 0 } else { 1 };
                f32::from(u8::from(annotations.of_image(i).unwrap().contains(&shape))) + 0.01 * (i % 5) as f32
            })
            .collect();
        Ok(vec![LayerOutput { shape: vec![indices.len(), 1], data }])
    }
    fn head(&self) -> Option<Head> {
        None
    }
}

#[test]
fn labels_are_chosen_on_even_images_and_scored_on_odd_ones() {
    let probe = DatasetProbe::synthetic(ConceptSplit::new(2, Split::Probe, 1000).unwrap()).unwrap();
    let names = probe.annotations().unwrap().names().to_vec();
    let concepts = ConceptSet::from_lines("synthetic".into(), names.iter().map(String::as_str)).unwrap();
    let options = Options { similarity: Similarity::Cos, examples: 0, ..Options::default() };
    let d = dissect(&mut CirclesThenSquares, &probe, Scorer::Labels, &concepts, &options, &Cache::disabled(), &Silent).unwrap();
    let unit = &d.layers[0].neurons[0].label;
    assert_eq!(unit.label, "circle", "the labelling half sees a circle detector");
    // On the held-out half the unit finds squares, never circles: the label scores below chance.
    let q = unit.quality.as_ref().unwrap();
    assert!(q.correlation.unwrap() < -0.2 && q.auprc.unwrap() < q.prevalence.unwrap(), "{q:?}");
}

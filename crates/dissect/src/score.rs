//! Scoring probe images against concepts: the matrix P (N images × M concepts) the similarity
//! functions compare neurons with.
//!
//! * CLIP backend: `P = normalise(image features) · normalise(text features)ᵀ`, the concepts encoded
//!   as they are, without a prompt template (as CLIP-Dissect).
//! * Label backend (no CLIP weights): `P[n, m] = 1` when image n's class name is concept m. Class
//!   names are matched into the concept set ([`ConceptSet::find`]); classes that are not in it leave
//!   their images' rows at 0. With this backend a neuron can only be named after a class.
//! * Annotation backend (no CLIP weights, a probe set with [`ConceptAnnotations`]): the same with
//!   every annotated concept of an image instead of its one class — the label backend generalised.

use std::fmt;

use ndarray::Array2;
use rayon::prelude::*;

use crate::annotations::ConceptAnnotations;
use crate::cache::{hex_sha256, Cache, CacheKey, Entry};
use crate::concepts::ConceptSet;
use crate::error::{DissectError, Result};
use crate::source::{ClipEncoder, ProbeSet, Progress};
use cvn_autograd::cpu::gemm::{matmul, Mat};

/// Which backend produced P (and so the labels); written into every output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The probe set's class labels.
    Labels,
    /// The probe set's concept annotations; the string says where they came from.
    Annotations(String),
    /// A CLIP model; the string identifies its weights.
    Clip(String),
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Labels => f.write_str("labels"),
            Self::Annotations(source) => write!(f, "annotations ({source})"),
            Self::Clip(id) => write!(f, "clip ({id})"),
        }
    }
}

/// P with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// N × M.
    pub matrix: Array2<f32>,
    pub backend: Backend,
    /// Label and annotation backends: class names (annotated concepts) that are not in the concept
    /// set; they contribute nothing to P.
    pub unmatched_classes: Vec<String>,
}

impl Scores {
    /// Whether P is presence (0 or 1) known from labels or annotations, not CLIP's estimate.
    pub fn is_exact(&self) -> bool {
        !matches!(self.backend, Backend::Clip(_))
    }
}

/// P from the probe set's own knowledge: its concept annotations when it has them
/// ([`annotation_scores`]), else its class labels ([`label_scores`]).
pub fn probe_scores(probe: &dyn ProbeSet, concepts: &ConceptSet) -> Result<Scores> {
    match probe.annotations() {
        Some(annotations) => annotation_scores(probe, annotations, concepts),
        None => label_scores(probe, concepts),
    }
}

/// P from concept annotations (see the module docs). Errors when they do not cover every probe
/// image or none of their concepts is in the concept set.
pub fn annotation_scores(probe: &dyn ProbeSet, annotations: &ConceptAnnotations, concepts: &ConceptSet) -> Result<Scores> {
    if annotations.len() != probe.len() {
        return Err(DissectError::shape(
            format!("annotations {} of probe set `{}`", annotations.source(), probe.id()),
            format!("one row per probe image ({})", probe.len()),
            format!("{} rows", annotations.len()),
        ));
    }
    let concept_of: Vec<Option<usize>> = annotations.names().iter().map(|c| concepts.find(c)).collect();
    if concept_of.iter().all(Option::is_none) {
        return Err(DissectError::NoAnnotatedConcepts {
            annotations: annotations.source().to_string(),
            concepts: concepts.name().to_string(),
            annotated: annotations.names().len(),
        });
    }
    let mut matrix = Array2::<f32>::zeros((probe.len(), concepts.len()));
    for (n, mut row) in matrix.rows_mut().into_iter().enumerate() {
        for &a in annotations.of_image(n).unwrap_or_default() {
            if let Some(m) = concept_of[a] {
                row[m] = 1.0;
            }
        }
    }
    let unmatched_classes = annotations.names().iter().zip(&concept_of).filter(|(_, m)| m.is_none()).map(|(c, _)| c.clone()).collect();
    Ok(Scores { matrix, backend: Backend::Annotations(annotations.source().to_string()), unmatched_classes })
}

/// P from the probe set's labels (see the module docs). Errors when the set has no labels or none of
/// its class names is a concept.
pub fn label_scores(probe: &dyn ProbeSet, concepts: &ConceptSet) -> Result<Scores> {
    let classes = probe.class_names();
    if classes.is_empty() {
        return Err(DissectError::MissingLabels(probe.id()));
    }
    let concept_of: Vec<Option<usize>> = classes.iter().map(|c| concepts.find(c)).collect();
    if concept_of.iter().all(Option::is_none) {
        return Err(DissectError::NoClassConcepts { probe: probe.id(), concepts: concepts.name().to_string(), classes: classes.len() });
    }
    let mut matrix = Array2::<f32>::zeros((probe.len(), concepts.len()));
    for (n, mut row) in matrix.rows_mut().into_iter().enumerate() {
        let label = probe.label(n).ok_or_else(|| DissectError::MissingLabels(probe.id()))?;
        let class = concept_of.get(label).ok_or_else(|| {
            DissectError::shape(format!("label of probe image {n}"), format!("below {} classes", classes.len()), label.to_string())
        })?;
        if let Some(m) = class {
            row[*m] = 1.0;
        }
    }
    let unmatched_classes = classes.iter().zip(&concept_of).filter(|(_, m)| m.is_none()).map(|(c, _)| c.clone()).collect();
    Ok(Scores { matrix, backend: Backend::Labels, unmatched_classes })
}

/// P from a CLIP model. Image and text features are cached (keyed by the CLIP weights and the probe
/// set or the concept list), as encoding is the slow part.
pub fn clip_scores(
    clip: &dyn ClipEncoder,
    probe: &dyn ProbeSet,
    concepts: &ConceptSet,
    batch_size: usize,
    cache: &Cache,
    progress: &dyn Progress,
) -> Result<Scores> {
    let images_key = CacheKey::new("clip-images").with("clip", clip.fingerprint()).with("probe", probe.id());
    let (images, _) = cache.get_or_compute(&images_key, || {
        let n = probe.len();
        let mut rows = Vec::new();
        let mut dim = 0;
        progress.start("encoding probe images with CLIP", n as u64);
        for start in (0..n).step_by(batch_size.max(1)) {
            let batch = (start..(start + batch_size.max(1)).min(n)).map(|i| probe.image(i)).collect::<Result<Vec<_>>>()?;
            let features = clip.encode_images(&batch)?;
            check_rows("CLIP image features", &features, batch.len(), &mut dim)?;
            rows.extend(features.iter().copied());
            progress.advance(batch.len() as u64);
        }
        progress.finish();
        entry(
            "features",
            Array2::from_shape_vec((n, dim), rows).map_err(|e| DissectError::shape("CLIP image features", "N × D", e.to_string()))?,
        )
    })?;
    let texts_key = CacheKey::new("clip-texts")
        .with("clip", clip.fingerprint())
        .with("concepts", hex_sha256(concepts.concepts().join("\n").as_bytes()));
    let (texts, _) = cache.get_or_compute(&texts_key, || {
        let mut rows = Vec::new();
        let mut dim = 0;
        progress.start("encoding concepts with CLIP", concepts.len() as u64);
        for chunk in concepts.concepts().chunks(batch_size.max(1)) {
            let features = clip.encode_texts(chunk)?;
            check_rows("CLIP text features", &features, chunk.len(), &mut dim)?;
            rows.extend(features.iter().copied());
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
        entry(
            "features",
            Array2::from_shape_vec((concepts.len(), dim), rows)
                .map_err(|e| DissectError::shape("CLIP text features", "M × D", e.to_string()))?,
        )
    })?;
    let (images, texts) = (features(&images, "clip-images")?, features(&texts, "clip-texts")?);
    let matrix = cosine_matrix(images, texts)?;
    Ok(Scores { matrix, backend: Backend::Clip(clip.fingerprint()), unmatched_classes: Vec::new() })
}

fn entry(name: &str, matrix: Array2<f32>) -> Result<Entry> {
    Ok(Entry::from([(name.to_string(), matrix)]))
}

fn features<'a>(entry: &'a Entry, kind: &str) -> Result<&'a Array2<f32>> {
    entry.get("features").ok_or_else(|| DissectError::Upstream { context: format!("cache entry {kind}"), detail: "no features".into() })
}

/// Every batch must give one row per input and the same width.
fn check_rows(what: &str, features: &Array2<f32>, rows: usize, dim: &mut usize) -> Result<()> {
    if features.nrows() != rows || (*dim != 0 && features.ncols() != *dim) {
        return Err(DissectError::shape(what, format!("{rows} rows of width {}", *dim), format!("{:?}", features.dim())));
    }
    *dim = features.ncols();
    Ok(())
}

/// `normalise(a) · normalise(b)ᵀ` with rows L2-normalised: cosine of every row pair.
pub fn cosine_matrix(a: &Array2<f32>, b: &Array2<f32>) -> Result<Array2<f32>> {
    if a.ncols() != b.ncols() {
        return Err(DissectError::shape("embeddings to compare", format!("width {}", a.ncols()), format!("width {}", b.ncols())));
    }
    let d = a.ncols();
    let (a_rows, b_rows) = (normalised_rows(a), normalised_rows(b));
    let out = matmul(Mat::new(&a_rows, a.nrows(), d), Mat::new(&b_rows, b.nrows(), d).t())
        .map_err(|e| DissectError::shape("cosine matrix", "rows of equal width", e.to_string()))?;
    Array2::from_shape_vec((a.nrows(), b.nrows()), out).map_err(|e| DissectError::shape("cosine matrix", "rows × rows", e.to_string()))
}

/// The rows scaled to unit L2 norm, row-major.
fn normalised_rows(m: &Array2<f32>) -> Vec<f32> {
    m.axis_iter(ndarray::Axis(0))
        .into_par_iter()
        .flat_map_iter(|row| {
            let norm = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt() as f32;
            row.into_iter().map(move |&v| v / norm).collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::CountingProbe;
    use crate::source::{Silent, TextEncoder};
    use image::RgbImage;
    use std::cell::Cell;

    #[test]
    fn label_backend_marks_each_images_class_concept() {
        let probe = CountingProbe { n: 5, classes: vec!["Dog".into(), "cat".into(), "zebra".into()] };
        let concepts = ConceptSet::from_lines("t".into(), ["cat", "dog", "tree"]).unwrap();
        let scores = label_scores(&probe, &concepts).unwrap();
        assert_eq!(scores.backend, Backend::Labels);
        // images 0, 3 are dogs, 1, 4 cats, 2 a zebra (not a concept).
        assert_eq!(scores.matrix.row(0).to_vec(), vec![0.0, 1.0, 0.0]);
        assert_eq!(scores.matrix.row(4).to_vec(), vec![1.0, 0.0, 0.0]);
        assert_eq!(scores.matrix.row(2).to_vec(), vec![0.0, 0.0, 0.0]);
        assert_eq!(scores.unmatched_classes, vec!["zebra".to_string()]);
    }

    #[test]
    fn label_backend_errors_without_labels_or_matches() {
        let concepts = ConceptSet::from_lines("t".into(), ["cat"]).unwrap();
        let unlabelled = CountingProbe { n: 2, classes: vec![] };
        assert!(matches!(label_scores(&unlabelled, &concepts), Err(DissectError::MissingLabels(_))));
        let labelled = CountingProbe { n: 2, classes: vec!["car".into()] };
        assert!(matches!(label_scores(&labelled, &concepts), Err(DissectError::NoClassConcepts { .. })));
    }

    /// `CountingProbe` with concept annotations: image n shows "even" or "odd", and "big" from 3 on.
    struct AnnotatedProbe {
        inner: CountingProbe,
        annotations: ConceptAnnotations,
    }

    impl ProbeSet for AnnotatedProbe {
        fn id(&self) -> String {
            self.inner.id()
        }
        fn len(&self) -> usize {
            self.inner.len()
        }
        fn class_names(&self) -> &[String] {
            self.inner.class_names()
        }
        fn label(&self, index: usize) -> Option<usize> {
            self.inner.label(index)
        }
        fn annotations(&self) -> Option<&ConceptAnnotations> {
            Some(&self.annotations)
        }
        fn image(&self, index: usize) -> Result<RgbImage> {
            self.inner.image(index)
        }
        fn input_shape(&self) -> [usize; 3] {
            self.inner.input_shape()
        }
        fn load_input(&self, index: usize, out: &mut [f32]) -> Result<()> {
            self.inner.load_input(index, out)
        }
    }

    #[test]
    fn annotation_backend_marks_every_annotated_concept() {
        let names = ["even", "odd", "big", "unseen"].map(String::from).to_vec();
        let images = (0..5).map(|n| [vec![n % 2], if n >= 3 { vec![2] } else { vec![] }].concat()).collect();
        let annotations = ConceptAnnotations::new("test annotations".into(), names, images).unwrap();
        let probe = AnnotatedProbe { inner: CountingProbe { n: 5, classes: vec!["x".into()] }, annotations };
        let concepts = ConceptSet::from_lines("t".into(), ["big", "odd", "even", "tree"]).unwrap();
        let scores = probe_scores(&probe, &concepts).unwrap();
        assert_eq!(scores.backend, Backend::Annotations("test annotations".into()));
        assert!(scores.is_exact());
        assert_eq!(scores.matrix.row(0).to_vec(), vec![0.0, 0.0, 1.0, 0.0]);
        assert_eq!(scores.matrix.row(3).to_vec(), vec![1.0, 1.0, 0.0, 0.0]);
        assert_eq!(scores.unmatched_classes, vec!["unseen".to_string()]);
        // Without annotations the class labels decide, as before.
        let err = probe_scores(&probe.inner, &concepts).unwrap_err();
        assert!(matches!(err, DissectError::NoClassConcepts { .. }), "{err}");
        let none = ConceptSet::from_lines("n".into(), ["tree"]).unwrap();
        let err = probe_scores(&probe, &none).unwrap_err().to_string();
        assert!(err.contains("none of the 4 concepts annotated in test annotations"), "{err}");
        let short = AnnotatedProbe { inner: CountingProbe { n: 6, classes: vec![] }, annotations: probe.annotations.clone() };
        assert!(probe_scores(&short, &concepts).unwrap_err().to_string().contains("one row per probe image (6)"));
    }

    /// Embeds an image as (red, 1) and a text as (its length, 1); counts image calls.
    struct FakeClip {
        image_calls: Cell<usize>,
    }

    impl TextEncoder for FakeClip {
        fn encode_texts(&self, texts: &[String]) -> Result<Array2<f32>> {
            Ok(Array2::from_shape_fn((texts.len(), 2), |(i, j)| if j == 0 { texts[i].len() as f32 } else { 1.0 }))
        }
    }

    impl ClipEncoder for FakeClip {
        fn fingerprint(&self) -> String {
            "fake".into()
        }
        fn encode_images(&self, images: &[RgbImage]) -> Result<Array2<f32>> {
            self.image_calls.set(self.image_calls.get() + 1);
            Ok(Array2::from_shape_fn((images.len(), 2), |(i, j)| if j == 0 { images[i].get_pixel(0, 0)[0] as f32 } else { 1.0 }))
        }
    }

    #[test]
    fn clip_backend_is_the_cosine_of_embeddings_and_caches_them() {
        let dir = std::env::temp_dir().join(format!("dissect-score-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = Cache::at(&dir);
        let probe = CountingProbe { n: 3, classes: vec![] };
        let concepts = ConceptSet::from_lines("t".into(), ["a", "abc"]).unwrap();
        let clip = FakeClip { image_calls: Cell::new(0) };
        let scores = clip_scores(&clip, &probe, &concepts, 2, &cache, &Silent).unwrap();
        assert_eq!(clip.image_calls.get(), 2, "3 images in batches of 2");
        // image 2 = (2, 1), concept "abc" = (3, 1): cosine (6 + 1) / (√5 · √10).
        let want = 7.0 / (5.0f32.sqrt() * 10.0f32.sqrt());
        assert!((scores.matrix[[2, 1]] - want).abs() < 1e-6);
        assert!((scores.matrix[[1, 0]] - 1.0).abs() < 1e-6, "(1,1) vs (1,1)");
        let again = clip_scores(&clip, &probe, &concepts, 2, &cache, &Silent).unwrap();
        assert_eq!(clip.image_calls.get(), 2, "served from the cache");
        assert_eq!(again.matrix, scores.matrix);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

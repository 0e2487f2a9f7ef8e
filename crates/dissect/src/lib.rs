//! # dissect — CLIP-Dissect on competition-based networks
//!
//! Names what each neuron of a trained network detects, evaluates those names on the classifier
//! layer, and explains single predictions by their few winner neurons (DISCOVER, arXiv 2310.04929,
//! on top of CLIP-Dissect, arXiv 2204.10965):
//!
//! 1. [`record`] — a layer's activations over the probe images, pooled as CLIP-Dissect does, with
//!    activity (sparsity) statistics; cached by content in [`cache`].
//! 2. [`score`] — P, the probe images × concepts matrix: CLIP image–text cosines, or the probe set's
//!    concept [`annotations`] or labels when there are no CLIP weights.
//! 3. [`similarity`] — neurons × concepts: `cos`, `cos-cubed`, `rank-reorder`, `wpmi`, `soft-wpmi`,
//!    CLIP-Dissect's functions and defaults (parity in [`parity`]).
//! 4. [`label`] — each neuron's best concept and the next four; top-1/top-5 accuracy (and CLIP-text
//!    cosine) of the classifier layer's names against the class names.
//!    [`quality`] — each label's score on the probe images labelling did not see; neurons that
//!    are inactive or active on too few images get no label.
//!    [`planted`] — how many units trained to detect a known concept are named after it, per
//!    similarity function.
//! 5. [`explain`] — per probe image, the active neurons of a layer, their names and contributions.
//! 6. [`outputs`] — `neurons.csv`, `summary.json` and [`report`]'s self-contained `report.html`, one
//!    dissection per folder.
//!
//! [`pipeline::dissect`] runs them in order against the small interfaces of [`source`]
//! (`ProbeSet`, `ActivationSource`, `ClipEncoder`), which [`integration`] implements for the
//! workspace's models (`cvn-models`) and CLIP (`clip-encoder`).
//!
//! ```
//! use dissect::similarity::Similarity;
//! use ndarray::array;
//! // 3 probe images × 2 concepts, 3 images × 1 neuron.
//! let p = array![[0.9f32, 0.1], [0.2, 0.8], [0.8, 0.3]];
//! let neuron = array![[1.0f32], [0.0], [0.9]];
//! let sim = Similarity::Cos.compute(p.view(), neuron.view()).unwrap();
//! assert!(sim[[0, 0]] > sim[[0, 1]]); // the neuron follows concept 0
//! ```

pub mod annotations;
pub mod cache;
pub mod concepts;
mod error;
pub mod explain;
pub mod integration;
pub mod label;
pub mod outputs;
pub mod parity;
pub mod pipeline;
pub mod planted;
pub mod quality;
pub mod record;
pub mod report;
pub mod score;
mod simd;
pub mod similarity;
pub mod source;
mod tensor_file;

pub use concepts::ConceptSet;
pub use error::{DissectError, Result};
pub use parity::parity_checks;
pub use pipeline::{dissect, Dissection, Options, Scorer};
pub use similarity::Similarity;

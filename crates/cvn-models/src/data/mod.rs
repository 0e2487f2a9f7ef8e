//! Data: Fashion-MNIST (IDX, from `--data DIR`, the Debian package or the embedded subset),
//! ImageFolder trees (ImageNet/Places365 layouts), the generated `synthetic-concepts` set with its
//! concept annotations, augmentation, and a batch loader that prepares
//! the next batches on other threads while the model computes.

mod fashion_mnist;
mod idx;
mod image_folder;
mod loader;
mod subset;
pub mod synthetic_concepts;
mod transform;

pub use fashion_mnist::{DataSource, FashionMnist, IdxDataset, FASHION_MNIST_CLASSES, INSTALLED_FASHION_MNIST};
pub use idx::{encode_idx, parse_idx, read_idx, IdxArray};
pub use image_folder::{check_image_bytes, check_image_file, decode_image, ImageFolder, MAX_IMAGE_BYTES, MAX_IMAGE_SIDE};
pub use loader::{Batch, BatchLoader, LoaderConfig, Shard};
pub use subset::Spread;
pub use synthetic_concepts::{ConceptSplit, SyntheticConcepts, SYNTHETIC_CONCEPTS};
pub use transform::{FolderTransform, Normalize, PadCropFlip};

use crate::error::Result;
use crate::rng::CounterRng;

/// A labelled image data set whose samples come out as normalised `f32` CHW arrays.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Class names, indexed by label.
    fn class_names(&self) -> &[String];

    /// `[C, H, W]` of every prepared sample.
    fn sample_shape(&self) -> [usize; 3];

    /// Prepares sample `index` — augmentation drawn from `rng`, then normalisation — into `out`
    /// (`C·H·W` floats) and returns its label.
    fn load_into(&self, index: usize, rng: &mut CounterRng, out: &mut [f32]) -> Result<usize>;

    /// The original image, without augmentation or normalisation (CLIP input, report thumbnails).
    fn raw_image(&self, index: usize) -> Result<image::RgbImage>;

    /// The names of the concepts this set annotates its images with; empty when it has none
    /// (only `synthetic-concepts` has them).
    fn concept_names(&self) -> &[String] {
        &[]
    }

    /// Sample `index`'s concepts, as indices into [`Dataset::concept_names`] (empty without
    /// annotations).
    fn concepts_of(&self, index: usize) -> Result<Vec<usize>> {
        let _ = index;
        Ok(Vec::new())
    }
}

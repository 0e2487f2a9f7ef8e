//! Fashion-MNIST in IDX format, found in this order: `--data DIR`, the Debian package
//! `dataset-fashion-mnist`, the subset embedded in this crate (see `data/README.md`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::idx::{parse_idx, read_idx, IdxArray};
use super::transform::{Normalize, PadCropFlip};
use super::Dataset;
use crate::error::{data_err, Error, Result};
use crate::rng::CounterRng;

/// Where the Debian package `dataset-fashion-mnist` installs the data set.
pub const INSTALLED_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// The four files of the data set, by their official names (each read as `NAME.gz` or `NAME`).
const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// The embedded subset: (file name, gzip IDX bytes), in the order of the constants above.
const EMBEDDED: [(&str, &[u8]); 4] = [
    (TRAIN_IMAGES, include_bytes!("../../data/train-images-idx3-ubyte.gz")),
    (TRAIN_LABELS, include_bytes!("../../data/train-labels-idx1-ubyte.gz")),
    (TEST_IMAGES, include_bytes!("../../data/t10k-images-idx3-ubyte.gz")),
    (TEST_LABELS, include_bytes!("../../data/t10k-labels-idx1-ubyte.gz")),
];

/// Which copy of Fashion-MNIST was loaded; `Display` says it in words for the training log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// The folder given with `--data`.
    Flag(PathBuf),
    /// The Debian package's folder.
    Installed(PathBuf),
    /// The subset compiled into this crate.
    Embedded,
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag(dir) => write!(f, "Fashion-MNIST from --data {}", dir.display()),
            Self::Installed(dir) => write!(f, "Fashion-MNIST installed at {}", dir.display()),
            Self::Embedded => write!(f, "the embedded Fashion-MNIST subset (crates/cvn-models/data)"),
        }
    }
}

/// Fashion-MNIST's two splits and where they came from.
#[derive(Debug, Clone)]
pub struct FashionMnist {
    pub train: IdxDataset,
    pub test: IdxDataset,
    pub source: DataSource,
}

impl FashionMnist {
    /// `data_dir` if given (its files must be there), else the installed package if its folder
    /// exists, else the embedded subset.
    pub fn load(data_dir: Option<&Path>) -> Result<Self> {
        match data_dir {
            Some(dir) => Self::from_dir(dir, DataSource::Flag(dir.to_path_buf())),
            None if Path::new(INSTALLED_FASHION_MNIST).is_dir() => {
                Self::from_dir(Path::new(INSTALLED_FASHION_MNIST), DataSource::Installed(INSTALLED_FASHION_MNIST.into()))
            }
            None => Self::embedded(),
        }
    }

    /// The subset compiled into this crate.
    pub fn embedded() -> Result<Self> {
        let [train_images, train_labels, test_images, test_labels] =
            EMBEDDED.map(|(name, bytes)| parse_idx(bytes, &format!("embedded {name}.gz")));
        Ok(Self {
            train: IdxDataset::new("embedded train", train_images?, train_labels?)?,
            test: IdxDataset::new("embedded test", test_images?, test_labels?)?,
            source: DataSource::Embedded,
        })
    }

    fn from_dir(dir: &Path, source: DataSource) -> Result<Self> {
        let split = |images: &str, labels: &str| {
            let images_path = find_file(dir, images)?;
            IdxDataset::new(&images_path.display().to_string(), read_idx(&images_path)?, read_idx(&find_file(dir, labels)?)?)
        };
        Ok(Self { train: split(TRAIN_IMAGES, TRAIN_LABELS)?, test: split(TEST_IMAGES, TEST_LABELS)?, source })
    }
}

fn find_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()].into_iter().map(|name| dir.join(name)).find(|p| p.is_file()).ok_or_else(|| Error::Data {
        path: dir.display().to_string(),
        detail: format!("no Fashion-MNIST file `{stem}.gz` or `{stem}` (IDX, as published) in this folder"),
    })
}

/// Small images held in memory as bytes (`N × C × H × W`) with their labels; augmentation
/// ([`PadCropFlip`]) and normalisation are applied as samples are loaded.
#[derive(Debug, Clone)]
pub struct IdxDataset {
    images: Arc<Vec<u8>>,
    labels: Arc<Vec<u8>>,
    shape: [usize; 3],
    len: usize,
    class_names: Vec<String>,
    normalize: Normalize,
    augment: PadCropFlip,
}

impl IdxDataset {
    /// Pairs an image file (`[N, H, W]` grey or `[N, C, H, W]`) with a label file (`[N]`, labels below
    /// 10). `name` identifies the pair in errors. Starts without augmentation and with
    /// Fashion-MNIST normalisation.
    pub fn new(name: &str, images: IdxArray, labels: IdxArray) -> Result<Self> {
        let shape = match images.dims[..] {
            [_, h, w] => [1, h, w],
            [_, c, h, w] => [c, h, w],
            ref d => return data_err(name, format!("image dimensions {d:?}: expected [N, H, W] or [N, C, H, W]")),
        };
        let len = images.dims[0];
        if len == 0 || shape.contains(&0) {
            return data_err(name, format!("image dimensions {:?}: every dimension must be at least 1", images.dims));
        }
        if labels.dims != [len] {
            return data_err(name, format!("{len} images but the label file has dimensions {:?}", labels.dims));
        }
        let bytes = images.dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if bytes != Some(images.data.len()) || labels.data.len() != len {
            return data_err(name, format!("dimensions {:?} do not match the {} data bytes", images.dims, images.data.len()));
        }
        let classes = FASHION_MNIST_CLASSES.len();
        if let Some(i) = labels.data.iter().position(|&l| l as usize >= classes) {
            return data_err(name, format!("label {} of sample {i} is not below {classes}", labels.data[i]));
        }
        if shape[0] != 1 {
            return data_err(name, format!("{} channels: Fashion-MNIST normalisation has one", shape[0]));
        }
        Ok(Self {
            images: Arc::new(images.data),
            labels: Arc::new(labels.data),
            shape,
            len,
            class_names: FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect(),
            normalize: Normalize::fashion_mnist(),
            augment: PadCropFlip::default(),
        })
    }

    /// The same data with training augmentation (or `PadCropFlip::default()` for none).
    pub fn with_augment(mut self, augment: PadCropFlip) -> Self {
        self.augment = augment;
        self
    }

    /// Only the first `n` samples (quick runs, tests).
    pub fn truncated(mut self, n: usize) -> Self {
        self.len = self.len.min(n);
        self
    }

    pub fn labels(&self) -> &[u8] {
        &self.labels[..self.len]
    }

    fn image_bytes(&self, index: usize) -> Result<&[u8]> {
        if index >= self.len {
            return data_err("Fashion-MNIST", format!("sample {index} out of range (the set has {})", self.len));
        }
        let size: usize = self.shape.iter().product();
        // `new` checked that the data holds `len` images of `size` bytes; `get` keeps it so.
        self.images
            .get(index * size..(index + 1) * size)
            .map_or_else(|| data_err("Fashion-MNIST", format!("sample {index} lies outside the {} image bytes", self.images.len())), Ok)
    }
}

impl Dataset for IdxDataset {
    fn len(&self) -> usize {
        self.len
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn sample_shape(&self) -> [usize; 3] {
        self.shape
    }

    fn load_into(&self, index: usize, rng: &mut CounterRng, out: &mut [f32]) -> Result<usize> {
        self.augment.apply(self.image_bytes(index)?, self.shape, &self.normalize, rng, out);
        Ok(self.labels[index] as usize)
    }

    fn raw_image(&self, index: usize) -> Result<image::RgbImage> {
        let [_, h, w] = self.shape;
        let bytes = self.image_bytes(index)?;
        Ok(image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let v = bytes[y as usize * w + x as usize];
            image::Rgb([v, v, v])
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::idx::encode_idx;
    use super::*;

    fn write_set(dir: &Path, n: usize, gzip: bool) {
        use flate2::{write::GzEncoder, Compression};
        use std::io::Write;
        let images: Vec<u8> = (0..n * 4 * 4).map(|i| (i % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        for (stem, bytes) in [
            (TRAIN_IMAGES, encode_idx(&[n, 4, 4], &images)),
            (TRAIN_LABELS, encode_idx(&[n], &labels)),
            (TEST_IMAGES, encode_idx(&[n, 4, 4], &images)),
            (TEST_LABELS, encode_idx(&[n], &labels)),
        ] {
            if gzip {
                let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
                gz.write_all(&bytes).unwrap();
                std::fs::write(dir.join(format!("{stem}.gz")), gz.finish().unwrap()).unwrap();
            } else {
                std::fs::write(dir.join(stem), bytes).unwrap();
            }
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cvn-models-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn loads_plain_and_gzip_folders_and_names_the_source() {
        for gzip in [false, true] {
            let dir = temp_dir(&format!("fm-{gzip}"));
            write_set(&dir, 12, gzip);
            let fm = FashionMnist::load(Some(&dir)).unwrap();
            assert_eq!(fm.source, DataSource::Flag(dir.clone()));
            assert!(fm.source.to_string().contains("--data"));
            assert_eq!((fm.train.len(), fm.test.len(), fm.train.sample_shape()), (12, 12, [1, 4, 4]));
            let mut out = vec![0.0; 16];
            let label = fm.train.load_into(3, &mut CounterRng::new(0, 0, 3), &mut out).unwrap();
            assert_eq!(label, 3);
            let expected = ((3 * 16) as f32 / 255.0 - 0.2860) / 0.3530;
            assert!((out[0] - expected).abs() < 1e-5);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn missing_and_mismatched_files_are_named() {
        let dir = temp_dir("fm-missing");
        let err = FashionMnist::load(Some(&dir)).unwrap_err().to_string();
        assert!(err.contains(&dir.display().to_string()) && err.contains("train-images-idx3-ubyte"), "{err}");
        write_set(&dir, 5, false);
        std::fs::write(dir.join(TEST_LABELS), encode_idx(&[4], &[0, 1, 2, 3])).unwrap();
        let err = FashionMnist::load(Some(&dir)).unwrap_err().to_string();
        assert!(err.contains("t10k-images-idx3-ubyte") && err.contains("5 images but the label file has dimensions [4]"), "{err}");
        std::fs::write(dir.join(TEST_LABELS), encode_idx(&[5], &[0, 1, 2, 3, 10])).unwrap();
        let err = FashionMnist::load(Some(&dir)).unwrap_err().to_string();
        assert!(err.contains("label 10 of sample 4 is not below 10"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zero_or_overflowing_image_dimensions_are_refused() {
        let dir = temp_dir("fm-dims");
        write_set(&dir, 5, false);
        // [1000, 0, 0] with an empty body parses as an IDX file but holds no image.
        std::fs::write(dir.join(TEST_IMAGES), encode_idx(&[1000, 0, 0], &[])).unwrap();
        std::fs::write(dir.join(TEST_LABELS), encode_idx(&[1000], &[0; 1000])).unwrap();
        let err = FashionMnist::load(Some(&dir)).unwrap_err().to_string();
        assert!(err.contains("t10k-images-idx3-ubyte") && err.contains("every dimension must be at least 1"), "{err}");
        // A product that wraps to 0 in unchecked arithmetic.
        std::fs::write(dir.join(TEST_IMAGES), encode_idx(&[4_194_304, 2_097_152, 2_097_152], &[])).unwrap();
        let err = FashionMnist::load(Some(&dir)).unwrap_err().to_string();
        assert!(err.contains("t10k-images-idx3-ubyte") && err.contains("announce more than"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn embedded_subset_is_real_and_balanced() {
        let fm = FashionMnist::embedded().unwrap();
        assert_eq!(fm.source, DataSource::Embedded);
        assert_eq!((fm.train.len(), fm.test.len(), fm.train.sample_shape()), (6000, 1000, [1, 28, 28]));
        for split in [&fm.train, &fm.test] {
            let mut counts = [0usize; 10];
            split.labels().iter().for_each(|&l| counts[l as usize] += 1);
            // Every class holds more than 80% of its fair share.
            assert!(counts.iter().all(|&c| c * 100 > split.len() * 8), "{counts:?}");
        }
        // Real photographs of clothes: mostly dark background, some bright pixels.
        let img = fm.test.raw_image(0).unwrap();
        let mean = img.pixels().map(|p| p.0[0] as f64).sum::<f64>() / 784.0;
        assert!((20.0..160.0).contains(&mean) && img.pixels().any(|p| p.0[0] > 200), "mean {mean}");
        assert_eq!(fm.train.clone().truncated(10).len(), 10);
    }
}

//! ImageFolder trees (`root/<class>/<image>.{jpg,jpeg,png}`, as torchvision's `ImageFolder`, the
//! layout of ImageNet and Places365 splits). Classes are the sub-folders in sorted order; a second
//! split ([`ImageFolder::open_with_classes`]) takes the first one's classes by name, so a label
//! means the same class in both.
//!
//! Images are decoded with bounded sizes ([`MAX_IMAGE_SIDE`], [`MAX_IMAGE_BYTES`]), and
//! [`ImageFolder::scan`] finds unreadable and truncated files before training starts.

use std::path::{Path, PathBuf};

use super::transform::{FolderTransform, Normalize};
use super::Dataset;
use crate::error::{config_err, data_err, Result};
use crate::rng::CounterRng;

/// An ImageFolder split: file list, classes and the transform applied on loading.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    samples: Vec<(PathBuf, usize)>,
    class_names: Vec<String>,
    /// Classes of the other split without a folder here.
    missing: Vec<String>,
    skipped: usize,
    transform: FolderTransform,
    normalize: Normalize,
}

const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

pub use cvn_autograd::io::{MAX_IMAGE_BYTES, MAX_IMAGE_SIDE};

fn image_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_BYTES);
    limits
}

/// Decodes a JPEG or PNG image from its bytes within the size limits; `name` identifies it in
/// errors.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<image::RgbImage> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .or_else(|e| data_err(name, format!("cannot read the image: {e}")))?;
    reader.limits(image_limits());
    let img = reader.decode().or_else(|e| data_err(name, format!("cannot decode the image: {e}")))?;
    Ok(img.to_rgb8())
}

/// Checks an image file without decoding its pixels: a header the decoder accepts, dimensions
/// within the limits, and the format's end marker at the end (JPEG `FFD9`, PNG `IEND`), which a
/// truncated file lacks.
pub fn check_image_file(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).or_else(|e| data_err(path.display(), format!("cannot read: {e}")))?;
    check_image_bytes(&bytes, &path.display().to_string())
}

/// [`check_image_file`] on bytes.
pub fn check_image_bytes(bytes: &[u8], name: &str) -> Result<()> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .or_else(|e| data_err(name, format!("cannot read the image: {e}")))?;
    reader.limits(image_limits());
    let format = reader.format();
    let (w, h) = reader.into_dimensions().or_else(|e| data_err(name, format!("cannot decode the image: {e}")))?;
    if w == 0 || h == 0 {
        return data_err(name, format!("the image is {w}×{h} pixels"));
    }
    // JPEG may be followed by padding; PNG ends with the IEND chunk (type and CRC).
    let complete = match format {
        Some(image::ImageFormat::Jpeg) => {
            let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            bytes[..end].ends_with(&[0xff, 0xd9])
        }
        Some(image::ImageFormat::Png) => bytes.ends_with(&[b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82]),
        _ => true,
    };
    if !complete {
        return data_err(name, "the image is truncated (its end marker is missing)");
    }
    Ok(())
}

impl ImageFolder {
    /// Lists `root`'s class folders and their images; normalises with ImageNet statistics.
    pub fn open(root: &Path, transform: FolderTransform) -> Result<Self> {
        Self::open_inner(root, transform, None)
    }

    /// Lists `root` as a split of a data set whose classes are `classes` (another split's
    /// [`Dataset::class_names`]): labels are indices into `classes`, matched by folder name. A
    /// class folder not in `classes` is an error; classes without a folder here are allowed
    /// ([`ImageFolder::missing_classes`] names them).
    pub fn open_with_classes(root: &Path, transform: FolderTransform, classes: &[String]) -> Result<Self> {
        Self::open_inner(root, transform, Some(classes))
    }

    fn open_inner(root: &Path, transform: FolderTransform, classes: Option<&[String]>) -> Result<Self> {
        transform.validate()?;
        let read_dir = |dir: &Path| -> Result<Vec<PathBuf>> {
            let entries = std::fs::read_dir(dir).or_else(|e| data_err(dir.display(), format!("cannot list the folder: {e}")))?;
            let mut paths = entries
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<Vec<_>>>()
                .or_else(|e| data_err(dir.display(), format!("cannot list the folder: {e}")))?;
            paths.sort();
            Ok(paths)
        };
        let class_dirs: Vec<PathBuf> = read_dir(root)?.into_iter().filter(|p| p.is_dir()).collect();
        if class_dirs.is_empty() {
            return data_err(root.display(), "no class folders: expected ROOT/<class>/<image>.{jpg,jpeg,png}");
        }
        let mut samples = Vec::new();
        let mut class_names = Vec::new();
        for (index, dir) in class_dirs.iter().enumerate() {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let label = match classes {
                None => index,
                Some(classes) => match classes.iter().position(|c| *c == name) {
                    Some(label) => label,
                    None => {
                        return data_err(
                            dir.display(),
                            format!(
                                "class `{name}` is not one of the {} classes of the training split ({})",
                                classes.len(),
                                classes.join(", ")
                            ),
                        )
                    }
                },
            };
            let before = samples.len();
            for path in read_dir(dir)? {
                let is_image =
                    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
                if is_image && path.is_file() {
                    samples.push((path, label));
                }
            }
            if samples.len() == before {
                return data_err(dir.display(), "class folder holds no .jpg, .jpeg or .png image");
            }
            class_names.push(name);
        }
        let missing = match classes {
            Some(classes) => {
                let missing = classes.iter().filter(|c| !class_names.contains(c)).cloned().collect();
                class_names = classes.to_vec();
                missing
            }
            None => Vec::new(),
        };
        Ok(Self { samples, class_names, missing, skipped: 0, transform, normalize: Normalize::imagenet() })
    }

    /// The classes of [`ImageFolder::open_with_classes`]'s list that have no folder in this split.
    pub fn missing_classes(&self) -> &[String] {
        &self.missing
    }

    /// Checks every image ([`check_image_file`]) before any is used. A bad one is an error naming
    /// the file, or with `skip_bad` it is dropped from the split and counted
    /// ([`ImageFolder::skipped`]).
    pub fn scan(mut self, skip_bad: bool) -> Result<Self> {
        use rayon::prelude::*;
        let results: Vec<Result<()>> = self.samples.par_iter().map(|(path, _)| check_image_file(path)).collect();
        let mut kept = Vec::with_capacity(self.samples.len());
        for (sample, result) in self.samples.into_iter().zip(results) {
            match result {
                Ok(()) => kept.push(sample),
                Err(e) if !skip_bad => return Err(e),
                Err(_) => self.skipped += 1,
            }
        }
        if kept.is_empty() {
            return data_err("ImageFolder", format!("every one of the {} images is unreadable or truncated", self.skipped));
        }
        self.samples = kept;
        Ok(self)
    }

    /// Images [`ImageFolder::scan`] skipped as unreadable or truncated.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Uses other normalisation statistics (one value, or one per RGB channel).
    pub fn with_normalize(mut self, normalize: Normalize) -> Result<Self> {
        if normalize.channels() != 1 && normalize.channels() != 3 {
            return config_err(
                "ImageFolder normalisation",
                format!("{} channels given: images are RGB (give 1 or 3)", normalize.channels()),
            );
        }
        self.normalize = normalize;
        Ok(self)
    }

    /// The image files and their labels, in order.
    pub fn samples(&self) -> &[(PathBuf, usize)] {
        &self.samples
    }

    fn sample(&self, index: usize) -> Result<&(PathBuf, usize)> {
        self.samples
            .get(index)
            .map_or_else(|| data_err("ImageFolder", format!("sample {index} out of range (the set has {})", self.samples.len())), Ok)
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn sample_shape(&self) -> [usize; 3] {
        let size = self.transform.size();
        [3, size, size]
    }

    fn load_into(&self, index: usize, rng: &mut CounterRng, out: &mut [f32]) -> Result<usize> {
        let img = self.raw_image(index)?;
        self.transform.apply(&img, &self.normalize, rng, out);
        Ok(self.sample(index)?.1)
    }

    fn raw_image(&self, index: usize) -> Result<image::RgbImage> {
        let (path, _) = self.sample(index)?;
        let bytes = std::fs::read(path).or_else(|e| data_err(path.display(), format!("cannot read: {e}")))?;
        decode_image(&bytes, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cvn-models-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Two classes: "blue" (JPEG, 40×30) and "red" (PNG, 24×48), plus a stray text file.
    fn write_tree(root: &Path) {
        for (class, colour, ext, (w, h)) in [("red", [250, 10, 10], "png", (24, 48)), ("blue", [10, 10, 250], "jpg", (40, 30))] {
            let dir = root.join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..3 {
                image::RgbImage::from_pixel(w, h, image::Rgb(colour)).save(dir.join(format!("{i}.{ext}"))).unwrap();
            }
        }
        std::fs::write(root.join("red/notes.txt"), "not an image").unwrap();
    }

    #[test]
    fn lists_sorted_classes_and_prepares_crops() {
        let root = temp_dir("folder");
        write_tree(&root);
        for transform in [FolderTransform::train(16), FolderTransform::eval(16)] {
            let set = ImageFolder::open(&root, transform).unwrap();
            assert_eq!(set.class_names(), ["blue", "red"]);
            assert_eq!((set.len(), set.sample_shape()), (6, [3, 16, 16]));
            let mut out = vec![0.0; 3 * 16 * 16];
            let label = set.load_into(4, &mut CounterRng::new(0, 0, 4), &mut out).unwrap();
            assert_eq!(label, 1);
            // A plain red image stays red after any crop: channel 0 high, channel 2 low.
            let red = (250.0 / 255.0 - 0.485) / 0.229;
            let blue = (10.0 / 255.0 - 0.406) / 0.225;
            assert!(out[..256].iter().all(|v| (v - red).abs() < 1e-4));
            assert!(out[512..].iter().all(|v| (v - blue).abs() < 1e-4));
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn errors_name_the_folder_or_file() {
        let root = temp_dir("folder-bad");
        let err = ImageFolder::open(&root, FolderTransform::eval(8)).unwrap_err().to_string();
        assert!(err.contains("no class folders"), "{err}");
        std::fs::create_dir_all(root.join("empty")).unwrap();
        let err = ImageFolder::open(&root, FolderTransform::eval(8)).unwrap_err().to_string();
        assert!(err.contains("empty") && err.contains("holds no .jpg"), "{err}");
        std::fs::write(root.join("empty/broken.png"), b"not a png").unwrap();
        let set = ImageFolder::open(&root, FolderTransform::eval(8)).unwrap();
        let err = set.load_into(0, &mut CounterRng::new(0, 0, 0), &mut [0.0; 192]).unwrap_err().to_string();
        assert!(err.contains("broken.png: cannot decode the image"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}

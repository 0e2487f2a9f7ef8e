//! ImageFolder trees (`root/<class>/<image>.{jpg,jpeg,png}`, as torchvision's `ImageFolder`, the
//! layout of ImageNet and Places365 splits). Classes are the sub-folders in sorted order.

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
    transform: FolderTransform,
    normalize: Normalize,
}

const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

impl ImageFolder {
    /// Lists `root`'s class folders and their images; normalises with ImageNet statistics.
    pub fn open(root: &Path, transform: FolderTransform) -> Result<Self> {
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
        for (label, dir) in class_dirs.iter().enumerate() {
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
            class_names.push(dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        }
        Ok(Self { samples, class_names, transform, normalize: Normalize::imagenet() })
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
        let img = image::open(path).or_else(|e| data_err(path.display(), format!("cannot decode the image: {e}")))?;
        Ok(img.to_rgb8())
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

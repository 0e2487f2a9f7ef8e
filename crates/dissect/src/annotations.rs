//! Concept annotations of a probe set: which concepts each image shows. They come with the
//! generated `synthetic-concepts` set, or with an ImageFolder probe as a `concepts.csv` at its root:
//!
//! ```text
//! image,concepts
//! red/0.png,red;round
//! blue/1.jpg,blue
//! blue/2.jpg,
//! ```
//!
//! One row per image of the folder, the path relative to the root (`/`-separated; a path may not
//! contain a comma), the concepts separated by `;` (none is allowed). With annotations, P is the
//! image × concept presence matrix ([`crate::score::annotation_scores`]) and label quality is exact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::concepts::{read_text, MAX_CONCEPT_LINES, MAX_CONCEPT_LINE_BYTES};
use crate::error::{DissectError, Result};

/// The file an ImageFolder probe's annotations are read from.
pub const CONCEPTS_CSV: &str = "concepts.csv";
/// The largest `concepts.csv` read.
const MAX_CSV_BYTES: u64 = 64 << 20;
const HEADER: &str = "image,concepts";

/// Per probe image, the indices of its concepts in a vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptAnnotations {
    source: String,
    names: Vec<String>,
    images: Vec<Vec<usize>>,
}

impl ConceptAnnotations {
    /// `images[n]` lists image n's concepts as indices into `names`; `source` names where they
    /// came from in outputs and errors.
    pub fn new(source: String, names: Vec<String>, images: Vec<Vec<usize>>) -> Result<Self> {
        if let Some((n, &m)) = images.iter().enumerate().find_map(|(n, c)| c.iter().find(|&&m| m >= names.len()).map(|m| (n, m))) {
            return Err(DissectError::shape(
                format!("annotations {source}, image {n}"),
                format!("concepts below {}", names.len()),
                m.to_string(),
            ));
        }
        Ok(Self { source, names, images })
    }

    /// Reads `csv` (see the module docs) for the images `paths`, which lie under `root`. Every image
    /// needs a row; a row for an image not in `paths`, a repeated row or a malformed one is an error
    /// naming the file and line.
    pub fn from_csv(csv: &Path, root: &Path, paths: &[PathBuf]) -> Result<Self> {
        let text = read_text(csv, MAX_CSV_BYTES, "an annotation file")?;
        let index_of: HashMap<String, usize> = paths.iter().enumerate().map(|(i, p)| (relative_name(root, p), i)).collect();
        let mut images: Vec<Option<Vec<usize>>> = vec![None; paths.len()];
        let mut names: Vec<String> = Vec::new();
        let mut name_index: HashMap<String, usize> = HashMap::new();
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, header)) if header.trim() == HEADER => {}
            other => {
                let got = other.map_or("an empty file".to_string(), |(_, h)| format!("`{}`", h.chars().take(80).collect::<String>()));
                return Err(DissectError::format(csv, format!("line 1: expected the header `{HEADER}`, got {got}")));
            }
        }
        for (number, line) in lines {
            let at = |detail: String| DissectError::format(csv, format!("line {}: {detail}", number + 1));
            if line.trim().is_empty() {
                continue;
            }
            let (image, concepts) = line.split_once(',').ok_or_else(|| at("expected `IMAGE,CONCEPT;CONCEPT;…`: no comma".into()))?;
            let image = image.trim();
            let &n = index_of.get(image).ok_or_else(|| at(format!("image `{image}` is not in the probe folder {}", root.display())))?;
            if images[n].is_some() {
                return Err(at(format!("image `{image}` has a row already")));
            }
            let mut row = Vec::new();
            for concept in concepts.split(';').map(str::trim).filter(|c| !c.is_empty()) {
                if concept.len() > MAX_CONCEPT_LINE_BYTES {
                    return Err(at(format!("a concept of {} bytes, more than {MAX_CONCEPT_LINE_BYTES}", concept.len())));
                }
                let m = match name_index.get(concept) {
                    Some(&m) => m,
                    None if names.len() >= MAX_CONCEPT_LINES => return Err(at(format!("more than {MAX_CONCEPT_LINES} distinct concepts"))),
                    None => {
                        name_index.insert(concept.to_string(), names.len());
                        names.push(concept.to_string());
                        names.len() - 1
                    }
                };
                if !row.contains(&m) {
                    row.push(m);
                }
            }
            images[n] = Some(row);
        }
        let missing: Vec<String> = images.iter().zip(paths).filter(|(r, _)| r.is_none()).map(|(_, p)| relative_name(root, p)).collect();
        if !missing.is_empty() {
            return Err(DissectError::format(
                csv,
                format!(
                    "{} of the {} probe images have no row, e.g. `{}`",
                    missing.len(),
                    paths.len(),
                    missing[..missing.len().min(3)].join("`, `")
                ),
            ));
        }
        if names.is_empty() {
            return Err(DissectError::format(csv, "no image is annotated with any concept"));
        }
        Self::new(csv.display().to_string(), names, images.into_iter().flatten().collect())
    }

    /// Where the annotations came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every annotated concept, in first-seen order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Annotated images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Image `n`'s concepts as indices into [`ConceptAnnotations::names`].
    pub fn of_image(&self, n: usize) -> Option<&[usize]> {
        self.images.get(n).map(Vec::as_slice)
    }

    /// Only the first `n` images.
    pub fn truncated(mut self, n: usize) -> Self {
        self.images.truncate(n);
        self
    }
}

/// `path` relative to `root`, `/`-separated (the form `concepts.csv` uses).
fn relative_name(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(name: &str, csv: &str) -> (PathBuf, Vec<PathBuf>) {
        let root = std::env::temp_dir().join(format!("dissect-annotations-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join(CONCEPTS_CSV), csv).unwrap();
        let paths = ["red/0.png", "blue/1.jpg", "blue/2.jpg"].map(|p| root.join(p)).to_vec();
        (root, paths)
    }

    fn read(name: &str, csv: &str) -> Result<ConceptAnnotations> {
        let (root, paths) = setup(name, csv);
        let got = ConceptAnnotations::from_csv(&root.join(CONCEPTS_CSV), &root, &paths);
        std::fs::remove_dir_all(&root).unwrap();
        got
    }

    #[test]
    fn reads_rows_in_any_order() {
        let a = read("ok", "image,concepts\nblue/2.jpg,\nred/0.png, red ;round;red\n\nblue/1.jpg,blue;round\n").unwrap();
        assert_eq!(a.names(), ["red", "round", "blue"]);
        assert_eq!((a.of_image(0), a.of_image(1), a.of_image(2)), (Some(&[0, 1][..]), Some(&[2, 1][..]), Some(&[][..])));
        assert_eq!(a.clone().truncated(1).len(), 1);
    }

    #[test]
    fn bad_files_name_the_file_and_line() {
        let cases = [
            ("header", "path,labels\n", "line 1: expected the header `image,concepts`"),
            ("comma", "image,concepts\nred/0.png red\n", "line 2: expected `IMAGE,CONCEPT;CONCEPT;…`"),
            ("unknown", "image,concepts\nred/0.png,a\ngreen/9.png,a\n", "line 3: image `green/9.png` is not in the probe folder"),
            ("repeat", "image,concepts\nred/0.png,a\nred/0.png,b\n", "line 3: image `red/0.png` has a row already"),
            ("missing", "image,concepts\nred/0.png,a\n", "2 of the 3 probe images have no row, e.g. `blue/1.jpg`, `blue/2.jpg`"),
            ("empty", "image,concepts\nred/0.png,\nblue/1.jpg,\nblue/2.jpg,\n", "no image is annotated"),
        ];
        for (name, csv, want) in cases {
            let err = read(name, csv).unwrap_err().to_string();
            assert!(err.contains(CONCEPTS_CSV) && err.contains(want), "{name}: {err}");
        }
        let long = format!("image,concepts\nred/0.png,{}\n", "x".repeat(MAX_CONCEPT_LINE_BYTES + 1));
        assert!(read("long", &long).unwrap_err().to_string().contains("line 2: a concept of 1001 bytes"));
        assert!(ConceptAnnotations::new("t".into(), vec!["a".into()], vec![vec![1]]).is_err());
    }
}

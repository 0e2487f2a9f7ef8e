//! Concept sets: the candidate labels of the neurons, one per line.
//!
//! A set comes from a file or from a built-in name (`20k`, `10k`, `3k`, `broden`, `imagenet`,
//! `places365`, `cifar100`, `imagenet-gpt`: CLIP-Dissect's and DISCOVER's sets, embedded in the
//! binary). Lines are trimmed; empty lines and repeats are dropped (the first occurrence keeps its
//! place); Places365 category lines (`/a/apartment_building/outdoor 8`) become readable names
//! (`apartment building outdoor`).

use std::collections::HashMap;
use std::path::Path;

use crate::error::{DissectError, Result};

/// The built-in sets: CLI name and file content.
const BUILTIN: [(&str, &str); 8] = [
    ("20k", include_str!("../concepts/20k.txt")),
    ("10k", include_str!("../concepts/10k.txt")),
    ("3k", include_str!("../concepts/3k.txt")),
    ("broden", include_str!("../concepts/broden_labels_clean.txt")),
    ("imagenet", include_str!("../concepts/imagenet_labels.txt")),
    ("places365", include_str!("../concepts/categories_places365.txt")),
    ("cifar100", include_str!("../concepts/cifar100.txt")),
    ("imagenet-gpt", include_str!("../concepts/imagenet_gpt.txt")),
];

/// The most lines a concept set may have (the largest built-in set has 20,000).
pub const MAX_CONCEPT_LINES: usize = 200_000;
/// The longest line (in bytes) a concept may have: a concept is a short phrase for CLIP's 77 tokens.
pub const MAX_CONCEPT_LINE_BYTES: usize = 1000;
/// The largest concept file read (80 bytes per line at the most lines; the 20k set has 180 KB).
const MAX_CONCEPT_FILE_BYTES: u64 = 16 << 20;

/// An ordered list of distinct concepts with a name for the outputs (built-in name or file path).
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptSet {
    name: String,
    concepts: Vec<String>,
    index: HashMap<String, usize>,
}

impl ConceptSet {
    /// Names accepted by [`ConceptSet::builtin`].
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(name, _)| *name).collect()
    }

    /// A built-in set by name, `None` if there is none by that name.
    pub fn builtin(name: &str) -> Option<Self> {
        let (name, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        // Built-in files are never empty (a unit test checks every one).
        Self::from_lines(name.to_string(), text.lines()).ok()
    }

    /// A set from a file; an empty one is an error naming the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_text(path, MAX_CONCEPT_FILE_BYTES, "a concept file")?;
        Self::from_lines(path.display().to_string(), text.lines())
    }

    /// `--concepts` as the CLI takes it: a built-in name, else a file path.
    pub fn load(spec: &str) -> Result<Self> {
        if let Some(set) = Self::builtin(spec) {
            return Ok(set);
        }
        let path = Path::new(spec);
        if !path.exists() && !spec.contains(['/', '\\', '.']) {
            return Err(DissectError::UnknownConceptSet(spec.to_string(), Self::builtin_names().join(", ")));
        }
        Self::from_file(path)
    }

    /// A set from lines of text (see the module docs for the cleaning); `name` identifies it in
    /// outputs and errors.
    pub fn from_lines<'a>(name: String, lines: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let mut concepts = Vec::new();
        let mut index = HashMap::new();
        for (number, line) in lines.into_iter().enumerate() {
            if number >= MAX_CONCEPT_LINES {
                return Err(DissectError::format(
                    &name,
                    format!("more than {MAX_CONCEPT_LINES} lines: a concept set is one short phrase per line"),
                ));
            }
            if line.len() > MAX_CONCEPT_LINE_BYTES {
                return Err(DissectError::format(
                    &name,
                    format!(
                        "line {} has {} bytes, more than {MAX_CONCEPT_LINE_BYTES}: a concept is one short phrase",
                        number + 1,
                        line.len()
                    ),
                ));
            }
            let concept = clean_line(line);
            if !concept.is_empty() && !index.contains_key(&concept) {
                index.insert(concept.clone(), concepts.len());
                concepts.push(concept);
            }
        }
        if concepts.is_empty() {
            return Err(DissectError::EmptyConceptSet(name.into()));
        }
        Ok(Self { name, concepts, index })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn concepts(&self) -> &[String] {
        &self.concepts
    }

    pub fn len(&self) -> usize {
        self.concepts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.concepts.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&str> {
        self.concepts.get(index).map(String::as_str)
    }

    /// The concept a class name refers to: the exact concept, else the one equal to it up to case,
    /// `_`/`-` versus space, and surrounding whitespace (`"T-shirt/top"` finds `"t-shirt/top"`).
    pub fn find(&self, name: &str) -> Option<usize> {
        if let Some(&i) = self.index.get(name.trim()) {
            return Some(i);
        }
        let key = normalise(name);
        self.concepts.iter().position(|c| normalise(c) == key)
    }
}

/// One line → a concept (possibly empty).
/// The UTF-8 text of `path`, which may hold at most `max_bytes` (`what` names the kind of file in
/// the error). Never reads more than the limit, whatever the file's size.
pub(crate) fn read_text(path: &Path, max_bytes: u64, what: &str) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|err| DissectError::io(path, err))?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(|err| DissectError::io(path, err))?;
    if bytes.len() as u64 > max_bytes {
        return Err(DissectError::format(path, format!("{what} may hold at most {max_bytes} bytes")));
    }
    String::from_utf8(bytes).map_err(|err| DissectError::format(path, format!("not UTF-8 text: {err}")))
}

fn clean_line(line: &str) -> String {
    let line = line.trim();
    match places365_name(line) {
        Some(name) => name,
        None => line.to_string(),
    }
}

/// `/a/apartment_building/outdoor 8` → `apartment building outdoor`; `None` for other lines.
fn places365_name(line: &str) -> Option<String> {
    let (path, index) = line.rsplit_once(' ')?;
    let rest = path.strip_prefix('/')?;
    let (letter, name) = rest.split_once('/')?;
    let is_category = letter.len() == 1
        && letter.chars().all(|c| c.is_ascii_lowercase())
        && !name.is_empty()
        && index.chars().all(|c| c.is_ascii_digit());
    is_category.then(|| name.replace(['_', '/'], " "))
}

fn normalise(name: &str) -> String {
    name.trim().to_lowercase().replace(['_', '-'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_loads_and_is_clean() {
        for name in ConceptSet::builtin_names() {
            let set = ConceptSet::builtin(name).unwrap_or_else(|| panic!("built-in `{name}` failed to load"));
            assert!(set.len() > 100, "{name}: {} concepts", set.len());
            assert!(set.concepts().iter().all(|c| !c.is_empty() && c.trim() == c), "{name}");
        }
        let places = ConceptSet::builtin("places365").unwrap();
        assert_eq!(places.get(0), Some("airfield"));
        assert!(places.find("apartment building outdoor").is_some());
        assert_eq!(places.len(), 365);
    }

    #[test]
    fn lines_are_trimmed_deduplicated_and_ordered() {
        let set = ConceptSet::from_lines("t".into(), ["  dog ", "", "cat", "dog", "\t", "bird"]).unwrap();
        assert_eq!(set.concepts(), ["dog", "cat", "bird"]);
        assert_eq!(set.find("Dog"), Some(0));
        assert_eq!(set.find("horse"), None);
    }

    #[test]
    fn class_names_match_up_to_case_and_separators() {
        let set = ConceptSet::from_lines("t".into(), ["t shirt/top", "ankle boot"]).unwrap();
        assert_eq!(set.find("T-shirt/top"), Some(0));
        assert_eq!(set.find("Ankle_boot"), Some(1));
    }

    #[test]
    fn empty_file_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("dissect-concepts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.txt");
        std::fs::write(&path, "\n  \n\n").unwrap();
        let err = ConceptSet::load(path.to_str().unwrap()).unwrap_err();
        assert!(matches!(err, DissectError::EmptyConceptSet(_)));
        assert!(err.to_string().contains("empty.txt"), "{err}");
        let file = dir.join("mine.txt");
        std::fs::write(&file, "stripes\nsky\n").unwrap();
        assert_eq!(ConceptSet::load(file.to_str().unwrap()).unwrap().concepts(), ["stripes", "sky"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn huge_concept_files_are_refused_without_reading_them_whole() {
        let dir = std::env::temp_dir().join(format!("dissect-concepts-huge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let many = dir.join("many.txt");
        std::fs::write(&many, "x\n".repeat(1_000_000)).unwrap();
        let err = ConceptSet::load(many.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("many.txt") && err.contains("more than 200000 lines"), "{err}");
        let long = dir.join("long.txt");
        std::fs::write(&long, format!("dog\n{}\n", "y".repeat(5 << 20))).unwrap();
        let err = ConceptSet::load(long.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("long.txt") && err.contains("line 2 has 5242880 bytes"), "{err}");
        let huge = dir.join("huge.txt");
        std::fs::write(&huge, "z".repeat(17 << 20)).unwrap();
        let err = ConceptSet::load(huge.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("huge.txt") && err.contains("at most"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_names_list_the_builtins_and_missing_files_name_the_path() {
        let err = ConceptSet::load("40k").unwrap_err();
        assert!(err.to_string().contains("imagenet-gpt"), "{err}");
        let err = ConceptSet::load("/no/such/concepts.txt").unwrap_err();
        assert!(err.to_string().contains("/no/such/concepts.txt"), "{err}");
    }
}

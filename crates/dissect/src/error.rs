//! The one error type of the crate: every variant names the file, flag, layer or tensor it is about
//! and what was expected, so a person reading the message knows what to change.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DissectError {
    /// An input matrix or buffer does not have the shape the computation needs.
    #[error("{what}: expected {expected}, got {got}")]
    Shape { what: String, expected: String, got: String },
    /// A parameter (a similarity's `top_k`, a flag) is out of its valid range.
    #[error("parameter `{name}`: {detail}")]
    Parameter { name: String, detail: String },
    #[error("unknown similarity `{0}`: expected one of cos, cos-cubed, rank-reorder, wpmi, soft-wpmi")]
    UnknownSimilarity(String),
    #[error("unknown built-in concept set `{0}`: expected a file or one of {1}")]
    UnknownConceptSet(String, String),
    #[error("concept set {0} holds no concepts (every line is empty)")]
    EmptyConceptSet(PathBuf),
    /// A layer name the model does not have; `suggestions` are its closest names.
    #[error("unknown layer `{layer}`: {suggestions}")]
    UnknownLayer { layer: String, suggestions: String },
    /// The output folder holds another dissection, which would be replaced.
    #[error("{dir} holds {what}: write this one elsewhere with --out DIR, or pass --force to replace it")]
    OutputsExist { dir: PathBuf, what: String },
    /// The label backend needs the probe set's class labels.
    #[error("probe set `{0}` has no class labels: the label backend needs them (or pass --clip DIR for the CLIP backend)")]
    MissingLabels(String),
    /// The label backend found no class name in the concept set.
    #[error("none of the {classes} class names of probe set `{probe}` is in the concept set `{concepts}`")]
    NoClassConcepts { probe: String, concepts: String, classes: usize },
    /// The annotation backend found no annotated concept in the concept set.
    #[error("none of the {annotated} concepts annotated in {annotations} is in the concept set `{concepts}`")]
    NoAnnotatedConcepts { annotations: String, concepts: String, annotated: usize },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its content is not what this crate expects (fixture, cache entry, JSON).
    #[error("{path}: {detail}")]
    Format { path: PathBuf, detail: String },
    /// An error from another crate of the workspace (model, CLIP encoder), with what we were doing.
    #[error("{context}: {detail}")]
    Upstream { context: String, detail: String },
}

pub type Result<T> = std::result::Result<T, DissectError>;

impl DissectError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Self::Format { path: path.into(), detail: detail.into() }
    }

    pub(crate) fn parameter(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Parameter { name: name.into(), detail: detail.into() }
    }

    /// An unknown layer name, with the closest of the `available` names (by edit distance)
    /// suggested rather than all of them listed.
    pub fn unknown_layer<S: AsRef<str>>(layer: &str, available: &[S]) -> Self {
        /// How many of the closest names are suggested.
        const SUGGESTIONS: usize = 3;
        let mut ranked: Vec<(usize, &str)> = available.iter().map(|a| (strsim::levenshtein(layer, a.as_ref()), a.as_ref())).collect();
        ranked.sort();
        let closest: Vec<String> = ranked.iter().take(SUGGESTIONS).map(|(_, name)| format!("`{name}`")).collect();
        let suggestions = match closest.len() {
            0 => "the model has no recordable layers".to_string(),
            _ => format!("did you mean {}? (the model has {} layers)", closest.join(", "), available.len()),
        };
        Self::UnknownLayer { layer: layer.to_string(), suggestions }
    }

    pub(crate) fn shape(what: impl Into<String>, expected: impl Into<String>, got: impl Into<String>) -> Self {
        Self::Shape { what: what.into(), expected: expected.into(), got: got.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_layers_suggest_the_closest_names() {
        let layers: Vec<String> =
            (0..12).flat_map(|b| [format!("blocks.{b}.attn"), format!("blocks.{b}.mlp.act")]).chain(["head".into()]).collect();
        let message = DissectError::unknown_layer("blocks.3.mlp.ac", &layers).to_string();
        assert!(message.starts_with("unknown layer `blocks.3.mlp.ac`: did you mean `blocks.3.mlp.act`"), "{message}");
        assert!(message.contains("(the model has 25 layers)") && !message.contains("blocks.11.attn"), "{message}");
        assert_eq!(message.matches('`').count(), 2 + 2 * 3, "three suggestions: {message}");
        assert!(DissectError::unknown_layer("x", &[] as &[String]).to_string().contains("no recordable layers"));
    }
}

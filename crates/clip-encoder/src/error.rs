use std::path::Path;

use thiserror::Error;

/// Errors of the CLIP encoder; each names the file, tensor or input at fault and what was expected.
#[derive(Debug, Error)]
pub enum ClipError {
    #[error("{file}: {error}")]
    Io {
        file: String,
        #[source]
        error: std::io::Error,
    },
    #[error("{file}: {detail}")]
    Config { file: String, detail: String },
    #[error("{file}: {detail}")]
    Weights { file: String, detail: String },
    #[error("{file}: {detail}")]
    Tokenizer { file: String, detail: String },
    #[error("{source_name}: {detail}")]
    Image { source_name: String, detail: String },
    #[error("{what}: {detail}")]
    Input { what: &'static str, detail: String },
    #[error(transparent)]
    Tensor(#[from] cvn_autograd::Error),
}

impl ClipError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        Self::Io { file: path.display().to_string(), error }
    }

    pub(crate) fn input(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Input { what, detail: detail.into() }
    }
}

pub type Result<T> = std::result::Result<T, ClipError>;

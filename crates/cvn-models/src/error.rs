use thiserror::Error;

/// Errors of data loading, model building and checkpoints; each names the file, tensor, layer or
/// flag at fault and what was expected.
#[derive(Debug, Error)]
pub enum Error {
    /// A data file or folder that is missing, unreadable or malformed.
    #[error("{path}: {detail}")]
    Data { path: String, detail: String },
    /// A loader or transform setting that cannot work (batch size 0, crop larger than the image...).
    #[error("{what}: {detail}")]
    Config { what: &'static str, detail: String },
    #[error("unknown model `{name}`; available models: {available}")]
    UnknownModel { name: String, available: String },
    #[error("unknown layer `{name}`; available layers: {available}")]
    UnknownLayer { name: String, available: String },
    /// A checkpoint that is missing, corrupt or does not match the model it should fill.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint { path: String, detail: String },
    #[error(transparent)]
    Tensor(#[from] cvn_autograd::Error),
    #[error(transparent)]
    Lwta(#[from] lwta_kernels::LwtaError),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn data_err<T>(path: impl std::fmt::Display, detail: impl Into<String>) -> Result<T> {
    Err(Error::Data { path: path.to_string(), detail: detail.into() })
}

pub(crate) fn config_err<T>(what: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::Config { what, detail: detail.into() })
}

use thiserror::Error;

/// Errors of tensor operations; each names the operation and what it expected.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("{op}: {detail}")]
    Invalid { op: &'static str, detail: String },
    #[error("device `{device}` is not available: {reason}")]
    DeviceUnavailable { device: String, reason: String },
    #[error("{file}: {detail}")]
    File { file: String, detail: String },
    #[error(transparent)]
    Lwta(#[from] lwta_kernels::LwtaError),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn shape_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::Shape { op, detail: detail.into() })
}

pub(crate) fn invalid<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::Invalid { op, detail: detail.into() })
}

use thiserror::Error;

/// A boxed underlying error (I/O, driver, cuBLAS), kept so `source()` chains reach it.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of tensor operations; each names the operation and what it expected.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("{op}: {detail}")]
    Invalid { op: &'static str, detail: String },
    /// Element types that an op does not take or that do not match.
    #[error("{op}: {detail}")]
    DType { op: &'static str, detail: String },
    /// Inputs on different devices, or an op a device cannot run.
    #[error("{op}: {detail}")]
    Device { op: &'static str, detail: String },
    #[error("device `{device}` is not available: {reason}")]
    DeviceUnavailable { device: String, reason: String },
    #[error("{file}: {detail}")]
    File {
        file: String,
        detail: String,
        #[source]
        source: Option<Source>,
    },
    /// A CUDA driver, cuBLAS or kernel-launch failure (`what` says which call).
    #[error("CUDA: {what}")]
    Cuda {
        what: String,
        #[source]
        source: Option<Source>,
    },
    #[error(transparent)]
    Lwta(#[from] lwta_kernels::LwtaError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The message without the file name of a [`Error::File`] (for callers that name the file
    /// themselves, e.g. after parsing bytes).
    pub fn detail(&self) -> String {
        match self {
            Error::File { detail, .. } => detail.clone(),
            other => other.to_string(),
        }
    }
}

pub(crate) fn shape_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::Shape { op, detail: detail.into() })
}

pub(crate) fn invalid<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::Invalid { op, detail: detail.into() })
}

pub(crate) fn dtype_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::DType { op, detail: detail.into() })
}

//! What can stop a benchmark run. Each error names the input, the configuration or the file,
//! and the fix where there is one.

use dishcam_capture::decode::ImageError;
use dishcam_models::{HeadLookupError, PackError};
use dishcam_runtime::backend::BackendError;
use dishcam_runtime::pipeline::PipelineError;
use dishcam_runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The request cannot be run as asked; the message says why and what to do.
    #[error("{0}")]
    Invalid(String),
    /// An error with what was being done when it happened (a configuration, a file).
    #[error("{context}: {source}")]
    Context {
        context: String,
        source: Box<BenchError>,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Head(#[from] HeadLookupError),
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The `image` crate's own decode or encode error (the naive loop's decoder, generated
    /// photos).
    #[error(transparent)]
    Codec(#[from] image::ImageError),
    #[error("drawing a plot: {0}")]
    Plot(String),
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// `context` for results and options, as the benchmark's own small version of anyhow's.
pub(crate) trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<BenchError>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.with_context(|| what.to_string())
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| BenchError::Context {
            context: what(),
            source: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: &str) -> Result<T> {
        self.ok_or_else(|| BenchError::Invalid(what.to_string()))
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| BenchError::Invalid(what()))
    }
}

/// Refuses the run with a message that names the input and the fix.
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err($crate::error::BenchError::Invalid(format!($($arg)*)))
    };
}
pub(crate) use invalid;

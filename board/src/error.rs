//! Errors of the few operations that can fail outright (running a Jetson tool, parsing its
//! output). Telemetry reads never fail: they report [`crate::Unavailable`] instead.

use std::path::PathBuf;

/// An error running or parsing a board tool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoardError {
    /// The program is not installed where we looked.
    #[error("`{program}` not found in PATH (it ships with JetPack's nvidia-l4t-tools; not a Jetson, or not installed)")]
    ProgramNotFound { program: &'static str },
    /// The program exists but could not be started.
    #[error("could not start {}: {source}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The program ran and exited with an error.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// The program's output did not have the expected shape.
    #[error("could not read {what} from {text:?}")]
    Parse { what: &'static str, text: String },
}

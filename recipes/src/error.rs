//! Typed errors of the recipe crate.

use std::path::PathBuf;

/// The command that rebuilds the recipe index; every index error names it.
pub const REBUILD_COMMAND: &str = "dishcam recipes index build";

/// Everything that can go wrong in this crate. Each variant names the file (or record) involved and,
/// where there is one, the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecipeError {
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file whose content cannot be read as the expected format at all (individual bad records are
    /// skipped and counted instead).
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The index file is truncated, tampered with or of an unknown layout.
    #[error(
        "{path}: recipe index is corrupt ({message}); rebuild it with `{}`",
        REBUILD_COMMAND
    )]
    CorruptIndex {
        /// The index file.
        path: PathBuf,
        /// What check failed.
        message: String,
    },
    /// The index was written by a different (newer or older) layout version.
    #[error("{path}: recipe index has format version {found}, this build reads version {expected}; rebuild it with `{}`", REBUILD_COMMAND)]
    IndexVersion {
        /// The index file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// The index was built with another text encoder than the one asked for.
    #[error("{path}: recipe index was built with text encoder `{index_encoder}` but the pack's text encoder is `{pack_encoder}`; rebuild it with `{}`", REBUILD_COMMAND)]
    EncoderMismatch {
        /// The index file.
        path: PathBuf,
        /// Encoder identity stored in the index.
        index_encoder: String,
        /// Encoder identity the caller uses.
        pack_encoder: String,
    },
    /// Shapes that do not fit (embedding length, dimension).
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A bad argument (empty input, invalid parameter).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// No recipe with that id.
    #[error("no recipe with id `{0}`")]
    NotFound(String),
}

impl RecipeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RecipeError::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn corrupt(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        RecipeError::CorruptIndex {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = RecipeError> = std::result::Result<T, E>;

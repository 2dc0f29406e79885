//! dishcam imageproc: pure pixel work over slices and images, with no files, models or
//! threads. Owns [`preprocess`] (crop, resize, normalise into a caller's NCHW/NHWC buffer, as a
//! pack's manifest describes), [`resize`] (separable resize that keeps its coefficient tables
//! across frames), [`prepare`] (a head's photo preparation: the domain it was fitted in) and
//! [`pixfmt`] (camera pixel formats to RGB).
//!
//! May import `dishcam-models`, for the preprocessing spec that is part of the pack schema;
//! everything that handles pixels imports it.

pub mod pixfmt;
pub mod prepare;
pub mod preprocess;
pub mod resize;

pub use dishcam_models::ParseError;
pub use prepare::{prepare, PrepareError};
pub use preprocess::{PreprocessError, Preprocessor};

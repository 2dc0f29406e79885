//! Platform detection and telemetry for dishcam.
//!
//! Everything reads through a root directory (`/` in production) so tests run on fixture
//! trees. Telemetry that cannot be read is reported as [`Unavailable`] with a reason, never as
//! an error or a panic: a board without RAPL or thermal zones still runs the pipeline.
//!
//! - [`platform`]: which board this is (Jetson model, L4T and JetPack, or arch/CPU/kernel).
//! - [`telemetry`]: the [`Telemetry`] trait, its [`Sample`], and [`detect`] that picks one.
//! - [`tegrastats`] and [`nvpmodel`]: Jetson tools, pure parsers plus their command runners.
//! - [`procfs`], [`thermal`], [`rapl`]: Linux readers behind [`LinuxTelemetry`].
//! - [`sampler`]: a thread that samples into a bounded ring and summarises it.
//!
//! It imports no other dishcam crate; the benchmark and the binary (watch, board info) import it.

pub mod error;
pub mod nvpmodel;
pub mod platform;
pub mod procfs;
pub mod rapl;
pub mod sampler;
pub mod tegrastats;
pub mod telemetry;
pub mod thermal;

pub use error::BoardError;
pub use platform::{detect_platform, Platform};
pub use sampler::{Sampler, Summary};
pub use telemetry::{detect, LinuxTelemetry, Sample, Telemetry, Unavailable};

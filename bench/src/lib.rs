//! dishcam bench: MLPerf-style scenarios (single-stream, multi-stream, offline) over a matrix of
//! backends, precisions and thread counts. The matrix runs interleaved, one query per
//! configuration and column in turn, so machine noise hits every configuration alike; beside
//! the dish chain it times the naive loop an application would write and the bare onnxruntime
//! session, so gains and overhead are measured ratios from the same run. Start-up and resident
//! memory are measured in child processes of the `dishcam` binary.
//!
//! Owns: [`run`] (the harness), [`engine`] (one configuration's columns), [`report`] (JSON and
//! Markdown), [`plot`] (SVG), [`startup`]. May import `dishcam-models`, `dishcam-capture`,
//! `dishcam-runtime`, `dishcam-eval` (LoadGen statistics), `dishcam-recipes` and
//! `dishcam-board`; only the binary imports it.

pub mod engine;
pub mod error;
pub mod plot;
pub mod report;
pub mod run;
pub mod startup;

pub use error::{BenchError, Result};
pub use run::{run, BenchOutput, BenchRequest, Scenario};

//! dishcam eval: how good and how fast, measured.
//!
//! Owns: [`metrics`] (accuracy, per-class accuracy, confusion matrix, NLL, expected calibration
//! error, and their CSV/SVG/Markdown writers), [`evaluate`] (scoring a pack's head on labelled
//! photos and texts, and image <-> recipe retrieval), [`loadgen`] (MLPerf LoadGen-style tail
//! latency estimates and run validity), [`timing`] (per-stage latency samples) and
//! [`prometheus`] (latency histograms and counters in Prometheus' text format, for
//! `dishcam serve`'s `/metrics`).
//!
//! May import `dishcam-models`, `dishcam-capture` (decode options), `dishcam-runtime` (the dish
//! chain it scores), `dishcam-recipes` (retrieval metrics) and `dishcam-board` (telemetry); imported by `dishcam-heads`, the
//! benchmark and the binary.

pub mod evaluate;
pub mod loadgen;
pub mod metrics;
pub mod no_dish;
pub mod prometheus;
pub mod timing;

pub use evaluate::{evaluate_head, evaluate_retrieval, EvalError, HeadEval, RetrievalEval, Split};
pub use metrics::{Metrics, Report};
pub use no_dish::{calibrate_no_dish, evaluate_no_dish, NoDishEval, NoDishEvaluation};
pub use timing::Samples;

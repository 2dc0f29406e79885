//! dishcam INT8 calibration: activation histograms, the calibrators that pick each
//! tensor's amax from them, and TensorRT calibration caches.
//!
//! - [`histogram`]: [`AbsHistogram`], a streaming histogram of |x| built as NVIDIA
//!   pytorch-quantization's `HistogramCalibrator` builds it.
//! - [`amax`]: [`compute_amax`] with [`Method`] `max`, `percentile`, `entropy` or `mse`, giving the
//!   amax pytorch-quantization gives (checked by `tests/amax_parity.rs` against a numpy reference);
//!   [`scale`] and [`saturation`] for reports.
//! - [`trt_cache`]: [`CalibrationCache`], the `TRT-<version>-EntropyCalibration2` text format.
//!
//! - [`qdq`]: the graph rewrite: tensors to calibrate, static Q/DQ for onnxruntime (uint8
//!   activations) and TensorRT (int8 symmetric), dynamic int8 MatMul for text encoders.
//! - [`rounding`]: learned weight rounding (AdaRound) positions, as a table stores them.
//! - [`collect`]: runs the fp32 encoder through a backend with those tensors exposed, builds
//!   their histograms and the [`collect::CalibrationTable`].
//! - [`calibrate`]: the whole job `dishcam calibrate` runs: split the photos, collect, compute
//!   the tables, rank layer sensitivity, check every int8 variant against fp32 on held-out
//!   photos, time them, and write the artefacts and the report into the pack's overlay.
//!
//! May import `dishcam-models`, `dishcam-imageproc`, `dishcam-capture` and `dishcam-runtime`;
//! imported by the installer and the binary.

pub mod amax;
pub mod artefacts;
pub mod calibrate;
pub mod collect;
pub mod histogram;
pub mod qdq;
pub mod rounding;
pub mod trt_cache;

pub use amax::{compute_amax, saturation, scale, CalibError, Method, ParseMethodError};
pub use histogram::{AbsHistogram, HistogramError, DEFAULT_NUM_BINS};
pub use trt_cache::{CacheError, CalibrationCache, LineProblem};

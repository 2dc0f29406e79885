//! dishcam runtime: inference backends (onnxruntime, OpenVINO, tract, TensorRT) behind one trait,
//! tokenisation, encoders, heads and fusion, and [`DishClassifier`], the one chain from pixels
//! (and an optional text) to ranked dishes with stage times, with the live pipeline and
//! smoothing around it. Also the cached parallel [`embedder`] that teach and eval use, and the
//! pack's recipe index ([`pack_recipes`]).
//!
//! Pure computation (softmax, top-k, fusion) lives in free functions that tests call without
//! files; model loading sits at the edges. May import `dishcam-models`, `dishcam-imageproc`,
//! `dishcam-capture` and `dishcam-recipes`; imported by eval, heads, calibration, bench, the
//! installer and the binary.

pub mod autoselect;
pub mod backend;
pub mod classify;
pub mod dataset;
pub mod dish;
pub mod embedder;
pub mod encoder;
pub mod error;
pub mod fusion;
pub mod head;
pub mod pack_recipes;
pub mod pipeline;
pub mod smoothing;
pub mod tensor;
pub mod tokenize;

pub use backend::{Backend, BackendKind};
pub use dish::{
    Answer, DishClassifier, DishOptions, FusionHead, NoDish, NoDishReason, PhotoEncoder, Verdict,
};
pub use encoder::{ImageEncoder, LoadOptions, TextEncoder};
pub use error::RuntimeError;

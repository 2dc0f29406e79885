//! dishcam runtime: backends, preprocessing, tokenisation, encoders, heads, fusion, and
//! [`DishClassifier`], the one chain from pixels (and an optional text) to ranked dishes, with
//! the live pipeline and smoothing around it.
//!
//! Pure computation (crop, resize, normalise, softmax, top-k) lives in free functions that tests
//! call without files; decoding and model loading sit at the edges.

pub mod backend;
pub mod classify;
pub mod dataset;
pub mod dish;
pub mod embedder;
pub mod encoder;
pub mod error;
pub mod fusion;
pub mod head;
pub mod image_io;
pub mod pack_recipes;
pub mod pipeline;
pub mod preprocess;
pub mod resize;
pub mod smoothing;
pub mod source;
pub mod tensor;
pub mod tokenize;

pub use backend::{Backend, BackendKind};
pub use dish::{Answer, DishClassifier, DishOptions, FusionHead, PhotoEncoder};
pub use encoder::{ImageEncoder, LoadOptions, TextEncoder};
pub use error::RuntimeError;

//! dishcam runtime: backends, preprocessing, tokenisation, encoders and heads.
//!
//! Pure computation (crop, resize, normalise, softmax, top-k) lives in free functions that tests
//! call without files; decoding and model loading sit at the edges.

pub mod backend;
pub mod bench;
pub mod classify;
pub mod dataset;
pub mod dish;
pub mod embedder;
pub mod encoder;
pub mod error;
pub mod eval;
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
pub mod timing;
pub mod tokenize;

pub use backend::{Backend, BackendKind};
pub use dish::{Answer, DishClassifier, DishOptions, FusionHead, PhotoEncoder};
pub use encoder::{ImageEncoder, LoadOptions, TextEncoder};
pub use error::RuntimeError;

//! dishcam model packs: the `pack.toml` schema and its validation, packs on disk with their user
//! overlays, verification, and the importers that write ONNX graphs from pretrained weights.
//!
//! This crate depends on no other dishcam crate.

pub mod import;
pub mod lite_heads;
pub mod manifest;
pub mod onnx;
pub mod pack;
pub mod pull;
pub mod runtime_lib;
pub mod torch_pickle;

pub use manifest::{HeadInput, HeadLookupError, Manifest, Precision};
pub use pack::{Home, Pack, PackError};

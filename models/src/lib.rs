//! dishcam model packs: the `pack.toml` schema and its validation (including head lookup,
//! [`Manifest::resolve_head`]), packs on disk with their user overlays, verification of every
//! file and ONNX signature, and the ONNX protobuf helpers that reading and writing pack files
//! share.
//!
//! The bottom of the workspace: it imports no other dishcam crate, and everything else imports
//! it. What builds packs (weights importers, pip, calibration) lives above it, in
//! `dishcam-import` and `dishcam-install`.

pub mod manifest;
pub mod onnx;
pub mod pack;

pub use manifest::{HeadInput, HeadLookupError, Manifest, ParseError, Precision};
pub use pack::{Home, Pack, PackError};

//! dishcam import: pretrained weights in, ONNX graphs out, written by dishcam itself so that a
//! pack needs no PyTorch. A PyTorch checkpoint reader ([`torch_pickle`], a small pickle VM that
//! executes nothing), safetensors through [`Weights`], and graph writers for the families the
//! packs use ([`efficientnet_lite`], [`bert`]); each checks every tensor's shape against the
//! architecture it builds.
//!
//! May import `dishcam-models` (tensor specs and the ONNX writer); imported by the installer.

pub mod bert;
pub mod efficientnet_lite;
pub mod torch_pickle;
pub mod weights;

pub use weights::{ImportError, Weight, Weights};

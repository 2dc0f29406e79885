//! dishcam heads: fitting dish heads on the device (multinomial logistic regression with
//! temperature scaling), the exemplars shipped with a head so that a dish can be added later,
//! and teaching (embed labelled photos or texts with the pack's encoders, fit, save into the
//! pack's overlay).
//!
//! Owns: [`fit`] (the maths), [`exemplars`], [`teach`] (the whole teaching job), [`probe`] (the
//! shortcut probe: can a linear model tell two photo sources apart?). May import
//! `dishcam-models`, `dishcam-capture` (decode options), `dishcam-runtime` (the encoders, through
//! the cached embedder) and `dishcam-eval` (held-out metrics); only the binary imports it.

pub mod error;
pub mod exemplars;
pub mod fit;
pub mod probe;
pub mod teach;

pub use error::TeachError;
pub use teach::{teach, FusionMode, Taught, TeachRequest};

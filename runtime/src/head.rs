//! Classifier heads at run time: a head is either an output of the image encoder (e.g. ImageNet
//! logits) or its own small ONNX model over embeddings (taught heads, fusion heads).

use dishcam_models::manifest::{Dim, Head, TensorSpec};
use dishcam_models::onnx::signature_of;
use dishcam_models::Pack;

use crate::backend::{Backend, ModelSpec, Session};
use crate::encoder::LoadOptions;
use crate::error::RuntimeError;
use crate::tensor::TensorRef;

/// A head that is its own ONNX model: `features` [1, dim] -> `logits` [1, classes].
pub struct HeadModel {
    session: Box<dyn Session>,
    dim: usize,
    classes: usize,
    model: String,
}

impl HeadModel {
    /// Loads `head`'s model at the requested precision (falling back to fp32: heads are tiny).
    pub fn load(
        pack: &Pack,
        head: &Head,
        backend: &dyn Backend,
        opts: &LoadOptions,
    ) -> Result<Self, RuntimeError> {
        let (precision, variant) = head
            .variants
            .get_key_value(&opts.precision)
            .or_else(|| {
                head.variants
                    .get_key_value(&dishcam_models::Precision::Fp32)
            })
            .ok_or_else(|| RuntimeError::UnknownHead {
                pack: pack.manifest.name.clone(),
                head: head.name.clone(),
                available: "no model file (it is an encoder output)".into(),
            })?;
        let bytes = pack.read_verified(
            &format!("heads.{}.variants.{precision}", head.name),
            &variant.onnx,
        )?;
        let path = pack.path(&variant.onnx);
        let sig = signature_of(&bytes, &path.display().to_string())
            .map_err(|e| RuntimeError::HeadModel(e.to_string()))?;
        let [input]: [TensorSpec; 1] = sig.inputs.try_into().map_err(|_| {
            RuntimeError::HeadModel(format!(
                "{}: a head model takes exactly one input",
                path.display()
            ))
        })?;
        let fixed = |s: &TensorSpec| match s.shape.last() {
            Some(Dim::Fixed(v)) if s.shape.len() == 2 => Ok(*v as usize),
            _ => Err(RuntimeError::HeadModel(format!(
                "{}: '{}' must be [batch, n], is {}",
                path.display(),
                s.name,
                s.shape_text()
            ))),
        };
        let dim = fixed(&input)?;
        let output = sig
            .outputs
            .first()
            .cloned()
            .ok_or_else(|| RuntimeError::HeadModel(format!("{}: no output", path.display())))?;
        let classes = fixed(&output)?;
        if classes != head.classes {
            return Err(RuntimeError::HeadModel(format!(
                "{}: outputs {classes} classes but heads.{}.classes is {}",
                path.display(),
                head.name,
                head.classes
            )));
        }
        let session = backend.load(
            &ModelSpec {
                path: &path,
                bytes: &bytes,
                precision: *precision,
                inputs: std::slice::from_ref(&input),
                outputs: std::slice::from_ref(&output),
                fixed_dims: &[("batch", 1)],
            },
            &opts.session,
        )?;
        Ok(Self {
            session,
            dim,
            classes,
            model: path.display().to_string(),
        })
    }

    /// Input width the head expects.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Logits for one feature vector of length [`HeadModel::dim`].
    pub fn logits(&mut self, features: &[f32]) -> Result<Vec<f32>, RuntimeError> {
        if features.len() != self.dim {
            return Err(RuntimeError::OutputSize {
                model: self.model.clone(),
                output: "head input".into(),
                got: features.len(),
                want: self.dim,
            });
        }
        let shape = [1, self.dim];
        let mut out = self.session.run(&[TensorRef::F32 {
            shape: &shape,
            data: features,
        }])?;
        let v = out.pop().and_then(|t| t.into_f32()).unwrap_or_default();
        if v.len() != self.classes {
            return Err(RuntimeError::OutputSize {
                model: self.model.clone(),
                output: "logits".into(),
                got: v.len(),
                want: self.classes,
            });
        }
        Ok(v)
    }
}

/// Reads a head's label file: one label per line, exactly `head.classes` lines.
pub fn read_labels(pack: &Pack, head: &Head) -> Result<Vec<String>, RuntimeError> {
    let bytes = pack.read_verified(&format!("heads.{}.labels", head.name), &head.labels)?;
    let labels: Vec<String> = String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::to_string)
        .collect();
    if labels.len() != head.classes {
        return Err(RuntimeError::HeadModel(format!(
            "{}: {} labels for {} classes",
            pack.path(&head.labels).display(),
            labels.len(),
            head.classes
        )));
    }
    Ok(labels)
}

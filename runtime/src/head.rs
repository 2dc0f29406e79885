//! Classifier heads at run time: a head is either an output of the image encoder (e.g. ImageNet
//! logits) or its own small ONNX model over embeddings (taught heads, fusion heads).

use dishcam_models::manifest::{Dim, Head, HeadKind, TensorSpec};
use dishcam_models::onnx::signature_of;
use dishcam_models::Pack;

use crate::backend::{Backend, ModelSpec, Session};
use crate::encoder::LoadOptions;
use crate::error::RuntimeError;
use crate::fusion::{early_features, late_scores};
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

    /// Logits for one feature vector of length [`HeadModel::dim`] into `out` (one per class),
    /// without allocating on onnxruntime once warm.
    pub fn logits_into(&mut self, features: &[f32], out: &mut [f32]) -> Result<(), RuntimeError> {
        if features.len() != self.dim || out.len() != self.classes {
            return Err(RuntimeError::OutputSize {
                model: self.model.clone(),
                output: "head input or logits".into(),
                got: if features.len() != self.dim {
                    features.len()
                } else {
                    out.len()
                },
                want: if features.len() != self.dim {
                    self.dim
                } else {
                    self.classes
                },
            });
        }
        let shape = [1, self.dim];
        self.session.run_into(
            &[TensorRef::F32 {
                shape: &shape,
                data: features,
            }],
            &mut [out],
        )?;
        Ok(())
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

/// Any head of a pack, ready to score: an image-encoder output, a head model over an image or
/// text embedding or their early fusion, or the late fusion of two head models.
pub enum Classifier {
    /// The image encoder's extra output is already the logits (e.g. ImageNet's).
    EncoderOutput,
    Model {
        kind: HeadKind,
        model: HeadModel,
    },
    Late {
        image: HeadModel,
        text: HeadModel,
        image_temperature: f32,
        text_temperature: f32,
        text_weight: f32,
    },
}

impl Classifier {
    pub fn load(
        pack: &Pack,
        head: &Head,
        backend: &dyn Backend,
        opts: &LoadOptions,
    ) -> Result<Self, RuntimeError> {
        if head.encoder_output.is_some() {
            return Ok(Classifier::EncoderOutput);
        }
        let Some(f) = &head.fuse else {
            return Ok(Classifier::Model {
                kind: head.kind,
                model: HeadModel::load(pack, head, backend, opts)?,
            });
        };
        let part = |name: &str| {
            pack.manifest
                .head(name)
                .ok_or_else(|| RuntimeError::UnknownHead {
                    pack: pack.manifest.name.clone(),
                    head: name.to_string(),
                    available: format!("named by late-fusion head '{}'", head.name),
                })
        };
        let (image, text) = (part(&f.image_head)?, part(&f.text_head)?);
        Ok(Classifier::Late {
            image: HeadModel::load(pack, image, backend, opts)?,
            text: HeadModel::load(pack, text, backend, opts)?,
            image_temperature: image.temperature,
            text_temperature: text.temperature,
            text_weight: f.text_weight,
        })
    }

    /// [`Classifier::scores`] into `out` (one per class). Image and text heads allocate nothing
    /// per call on onnxruntime once warm; fusion heads go through [`Classifier::scores`].
    pub fn scores_into(
        &mut self,
        image: Option<&[f32]>,
        text: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<(), RuntimeError> {
        let size = |got: usize| RuntimeError::OutputSize {
            model: "head".into(),
            output: "scores".into(),
            got,
            want: out.len(),
        };
        match self {
            Classifier::EncoderOutput => {
                let image = image
                    .ok_or_else(|| RuntimeError::HeadModel("this head needs a photo".into()))?;
                if image.len() != out.len() {
                    return Err(size(image.len()));
                }
                out.copy_from_slice(image);
                Ok(())
            }
            Classifier::Model {
                kind: HeadKind::Image,
                model,
            } => model.logits_into(
                image.ok_or_else(|| RuntimeError::HeadModel("this head needs a photo".into()))?,
                out,
            ),
            Classifier::Model {
                kind: HeadKind::Text,
                model,
            } => model.logits_into(
                text.ok_or_else(|| RuntimeError::HeadModel("this head needs a text".into()))?,
                out,
            ),
            _ => {
                let v = self.scores(image, text)?;
                if v.len() != out.len() {
                    return Err(size(v.len()));
                }
                out.copy_from_slice(&v);
                Ok(())
            }
        }
    }

    /// Scores (logits, or late-fused log-probabilities) from the inputs the head reads: the
    /// image embedding (or the encoder output for [`Classifier::EncoderOutput`]) and/or the text
    /// embedding. Softmax with the head's temperature turns them into probabilities.
    pub fn scores(
        &mut self,
        image: Option<&[f32]>,
        text: Option<&[f32]>,
    ) -> Result<Vec<f32>, RuntimeError> {
        let missing = |what: &str| RuntimeError::HeadModel(format!("this head needs {what}"));
        let image_or = || image.ok_or_else(|| missing("a photo"));
        let text_or = || text.ok_or_else(|| missing("a text"));
        match self {
            Classifier::EncoderOutput => Ok(image_or()?.to_vec()),
            Classifier::Model { kind, model } => match kind {
                HeadKind::Image => model.logits(image_or()?),
                HeadKind::Text => model.logits(text_or()?),
                _ => model.logits(&early_features(image_or()?, text_or()?)),
            },
            Classifier::Late {
                image: mi,
                text: mt,
                image_temperature,
                text_temperature,
                text_weight,
            } => Ok(late_scores(
                &mi.logits(image_or()?)?,
                *image_temperature,
                &mt.logits(text_or()?)?,
                *text_temperature,
                *text_weight,
            )),
        }
    }
}

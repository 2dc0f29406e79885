//! Encoders built from a pack: the load path is manifest -> verified file -> backend session
//! -> warm session; the run path reuses its buffers.

use std::path::PathBuf;

use dishcam_models::manifest::{Dim, PackFile, TensorSpec, Variant};
use dishcam_models::{Pack, Precision};
use image::RgbImage;

use crate::backend::{Backend, BackendKind, ModelSpec, Session, SessionOptions};
use crate::error::RuntimeError;
use crate::tensor::TensorRef;
use crate::tokenize::{Encoding, TextTokenizer};
use dishcam_imageproc::preprocess::Preprocessor;

/// How encoders are loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub precision: Precision,
    pub session: SessionOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            precision: Precision::Fp32,
            session: SessionOptions::default(),
        }
    }
}

/// The pack's encoder `part`, or an error naming the pack.
fn part<'a, T>(pack: &Pack, enc: Option<&'a T>, part: &'static str) -> Result<&'a T, RuntimeError> {
    enc.ok_or_else(|| RuntimeError::NoEncoder {
        pack: pack.manifest.name.clone(),
        part,
    })
}

/// The file of the `precision` variant, and its manifest field. TensorRT takes the variant's
/// TensorRT Q/DQ model (`tensorrt_onnx`: int8 symmetric activations) when it has one (the
/// variant's own int8 model is onnxruntime's, with uint8 activations), and makes fp16 from the
/// fp32 model when the pack has no fp16 variant.
fn pick_variant<'a>(
    pack: &Pack,
    part: &'static str,
    variants: &'a std::collections::BTreeMap<Precision, Variant>,
    precision: Precision,
    backend: BackendKind,
) -> Result<(String, &'a PackFile), RuntimeError> {
    let trt = backend == BackendKind::TensorRt;
    let (source, variant) = match variants.get(&precision) {
        None if trt && precision == Precision::Fp16 => {
            (Precision::Fp32, variants.get(&Precision::Fp32))
        }
        v => (precision, v),
    };
    let field = format!("{}.variants.{source}", part.replace(' ', "_"));
    variant
        .map(|v| match v.artefacts.get("tensorrt_onnx") {
            Some(f) if trt => (format!("{field}.artefacts.tensorrt_onnx"), f),
            _ => (field.clone(), &v.onnx),
        })
        .ok_or_else(|| RuntimeError::MissingVariant {
            pack: pack.manifest.name.clone(),
            part,
            precision,
            available: variants
                .keys()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            hint: if precision == Precision::Int8 {
                format!(
                    "run `dishcam calibrate --pack {}` to make one",
                    pack.manifest.name
                )
            } else {
                "choose one of those with --precision".into()
            },
        })
}

/// Photo -> embedding (and any extra outputs, e.g. a head's logits computed by the encoder).
pub struct ImageEncoder {
    session: Box<dyn Session>,
    preprocessor: Preprocessor,
    input: Vec<f32>,
    input_shape: Vec<usize>,
    outputs: Vec<TensorSpec>,
    /// One buffer per output, sized once, for [`ImageEncoder::run_buffered`].
    buffers: Vec<Vec<f32>>,
    model: PathBuf,
}

/// Elements of an output with its named dimensions at 1 (batch 1).
fn output_len(spec: &TensorSpec) -> usize {
    spec.shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => *v as usize,
            Dim::Named(_) => 1,
        })
        .product()
}

impl ImageEncoder {
    /// Loads the pack's image encoder; `extra_outputs` names outputs wanted besides the embedding.
    pub fn load(
        pack: &Pack,
        backend: &dyn Backend,
        opts: &LoadOptions,
        extra_outputs: &[&str],
    ) -> Result<Self, RuntimeError> {
        let enc = part(pack, pack.manifest.image_encoder.as_ref(), "image encoder")?;
        let (field, file) = pick_variant(
            pack,
            "image encoder",
            &enc.variants,
            opts.precision,
            backend.kind(),
        )?;
        let bytes = pack.read_verified(&field, file)?;
        Self::load_model(pack, backend, opts, extra_outputs, &bytes, pack.path(file))
    }

    /// Loads the pack's image encoder from `bytes` instead of its variant file (e.g. a variant
    /// being made by `dishcam calibrate`); `model` names it in messages.
    pub fn load_model(
        pack: &Pack,
        backend: &dyn Backend,
        opts: &LoadOptions,
        extra_outputs: &[&str],
        bytes: &[u8],
        model: PathBuf,
    ) -> Result<Self, RuntimeError> {
        let enc = part(pack, pack.manifest.image_encoder.as_ref(), "image encoder")?;
        let mut outputs = vec![];
        for name in
            std::iter::once(enc.embedding_output.as_str()).chain(extra_outputs.iter().copied())
        {
            let spec = enc
                .outputs
                .iter()
                .find(|o| o.name == name)
                .cloned()
                .ok_or_else(|| RuntimeError::UnknownHead {
                    pack: pack.manifest.name.clone(),
                    head: name.to_string(),
                    available: enc
                        .outputs
                        .iter()
                        .map(|o| o.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            outputs.push(spec);
        }
        let session = backend.load(
            &ModelSpec {
                path: &model,
                bytes,
                precision: opts.precision,
                inputs: std::slice::from_ref(&enc.input),
                outputs: &outputs,
                fixed_dims: &[("batch", 1)],
            },
            &opts.session,
        )?;
        let preprocessor = Preprocessor::new(&enc.preprocess, enc.layout);
        let input_shape = enc
            .input
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(v) => *v as usize,
                Dim::Named(_) => 1,
            })
            .collect();
        Ok(Self {
            session,
            input: vec![0.0; preprocessor.output_len()],
            preprocessor,
            input_shape,
            buffers: outputs.iter().map(|o| vec![0.0; output_len(o)]).collect(),
            outputs,
            model,
        })
    }

    /// Preprocesses `img` into the encoder's input buffer.
    pub fn preprocess(&mut self, img: &RgbImage) -> Result<(), RuntimeError> {
        let (w, h) = img.dimensions();
        self.preprocess_rgb(img.as_raw(), w, h)
    }

    /// Preprocesses packed RGB8 pixels (e.g. a camera frame) into the input buffer.
    pub fn preprocess_rgb(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
    ) -> Result<(), RuntimeError> {
        self.preprocessor.run(rgb, width, height, &mut self.input)?;
        Ok(())
    }

    /// The input tensor's shape (batch 1).
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The preprocessed input tensor (for tests and tools).
    pub fn input(&self) -> &[f32] {
        &self.input
    }

    /// Mutable input tensor, for callers that fill it themselves.
    pub fn input_mut(&mut self) -> &mut [f32] {
        &mut self.input
    }

    /// Host-to-device, compute and device-to-host times of the last run, on GPU backends.
    pub fn device_timings(&self) -> Option<crate::backend::DeviceTimings> {
        self.session.device_timings()
    }

    /// Runs the encoder on the current input into buffers it keeps: the embedding then each
    /// extra output. Allocates nothing per call on onnxruntime once warm.
    pub fn run_buffered(&mut self) -> Result<&[Vec<f32>], RuntimeError> {
        const MAX: usize = 4;
        if self.buffers.len() > MAX {
            let out = self.run()?;
            self.buffers = out;
            return Ok(&self.buffers);
        }
        let mut it = self.buffers.iter_mut();
        let mut slots: [&mut [f32]; MAX] =
            std::array::from_fn(|_| it.next().map_or(&mut [][..], |v| v.as_mut_slice()));
        let n = self.outputs.len();
        self.session.run_into(
            &[TensorRef::F32 {
                shape: &self.input_shape,
                data: &self.input,
            }],
            &mut slots[..n],
        )?;
        Ok(&self.buffers)
    }

    /// The buffers [`ImageEncoder::run_buffered`] last wrote: the embedding then each extra
    /// output.
    pub fn last_outputs(&self) -> &[Vec<f32>] {
        &self.buffers
    }

    /// Runs the encoder on the current input. Returns the embedding then each extra output.
    pub fn run(&mut self) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let out = self.session.run(&[TensorRef::F32 {
            shape: &self.input_shape,
            data: &self.input,
        }])?;
        out.into_iter()
            .zip(&self.outputs)
            .map(|(t, spec)| {
                let want: usize = spec
                    .shape
                    .iter()
                    .map(|d| {
                        if let Dim::Fixed(v) = d {
                            *v as usize
                        } else {
                            1
                        }
                    })
                    .product();
                let v = t.into_f32().unwrap_or_default();
                if v.len() != want {
                    return Err(RuntimeError::OutputSize {
                        model: self.model.display().to_string(),
                        output: spec.name.clone(),
                        got: v.len(),
                        want,
                    });
                }
                Ok(v)
            })
            .collect()
    }
}

/// Text -> sentence embedding.
pub struct TextEncoder {
    session: Box<dyn Session>,
    tokenizer: TextTokenizer,
    inputs: Vec<TensorSpec>,
    embedding_dim: usize,
    normalize_here: bool,
    model: PathBuf,
}

impl TextEncoder {
    pub fn load(
        pack: &Pack,
        backend: &dyn Backend,
        opts: &LoadOptions,
    ) -> Result<Self, RuntimeError> {
        let enc = part(pack, pack.manifest.text_encoder.as_ref(), "text encoder")?;
        let (field, file) = pick_variant(
            pack,
            "text encoder",
            &enc.variants,
            opts.precision,
            backend.kind(),
        )?;
        let bytes = pack.read_verified(&field, file)?;
        Self::load_model(pack, backend, opts, &bytes, pack.path(file))
    }

    /// Loads the pack's text encoder from `bytes` instead of its variant file (e.g. a variant
    /// being made by `dishcam calibrate`); `model` names it in messages.
    pub fn load_model(
        pack: &Pack,
        backend: &dyn Backend,
        opts: &LoadOptions,
        bytes: &[u8],
        model: PathBuf,
    ) -> Result<Self, RuntimeError> {
        let enc = part(pack, pack.manifest.text_encoder.as_ref(), "text encoder")?;
        let tok_bytes = pack.read_verified("text_encoder.tokenizer", &enc.tokenizer)?;
        let tokenizer = TextTokenizer::from_bytes(
            &tok_bytes,
            &pack.path(&enc.tokenizer).display().to_string(),
            enc.max_length,
        )?;
        let output = enc
            .outputs
            .iter()
            .find(|o| o.name == enc.embedding_output)
            .cloned()
            .expect("validated: embedding_output is an output");
        let session = backend.load(
            &ModelSpec {
                path: &model,
                bytes,
                precision: opts.precision,
                inputs: &enc.inputs,
                outputs: std::slice::from_ref(&output),
                fixed_dims: &[("batch", 1)],
            },
            &opts.session,
        )?;
        Ok(Self {
            session,
            tokenizer,
            inputs: enc.inputs.clone(),
            embedding_dim: enc.embedding_dim,
            normalize_here: enc.normalize && !enc.pooled_in_graph,
            model,
        })
    }

    /// Tokenises `text` as the encoder will see it.
    pub fn tokenize(&self, text: &str) -> Result<Encoding, RuntimeError> {
        Ok(self.tokenizer.encode(text)?)
    }

    /// Runs the encoder on one tokenised text.
    pub fn run(&mut self, enc: &Encoding) -> Result<Vec<f32>, RuntimeError> {
        let shape = [1, enc.input_ids.len()];
        let refs: Vec<TensorRef<'_>> = self
            .inputs
            .iter()
            .map(|i| {
                let data: &[i64] = match i.name.as_str() {
                    "input_ids" => &enc.input_ids,
                    "attention_mask" => &enc.attention_mask,
                    _ => &enc.token_type_ids,
                };
                TensorRef::I64 {
                    shape: &shape,
                    data,
                }
            })
            .collect();
        let mut out = self.session.run(&refs)?;
        let v = out.pop().and_then(|t| t.into_f32()).unwrap_or_default();
        if v.len() != self.embedding_dim {
            return Err(RuntimeError::OutputSize {
                model: self.model.display().to_string(),
                output: "sentence embedding".into(),
                got: v.len(),
                want: self.embedding_dim,
            });
        }
        Ok(if self.normalize_here {
            l2_normalised(v)
        } else {
            v
        })
    }

    /// Tokenises and encodes `text`.
    pub fn encode(&mut self, text: &str) -> Result<Vec<f32>, RuntimeError> {
        let enc = self.tokenize(text)?;
        self.run(&enc)
    }
}

/// `v / max(|v|, 1e-12)`.
pub fn l2_normalised(mut v: Vec<f32>) -> Vec<f32> {
    let n = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt()
        .max(1e-12) as f32;
    v.iter_mut().for_each(|x| *x /= n);
    v
}

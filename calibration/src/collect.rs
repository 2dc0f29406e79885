//! Running the fp32 image encoder on calibration photos with every activation to be quantised
//! exposed as an output, and folding those activations into histograms; then the calibration
//! table (per-tensor amax) that the Q/DQ writer and the TensorRT cache are made from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use dishcam_imageproc::preprocess::Preprocessor;
use dishcam_models::manifest::{DType, ImageEncoder, TensorSpec};
use dishcam_models::Precision;
use dishcam_runtime::backend::{Backend, ModelSpec, Session, SessionOptions};
use dishcam_runtime::tensor::TensorRef;
use dishcam_runtime::RuntimeError;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::amax::{compute_amax, saturation, CalibError, Method};
use crate::histogram::{AbsHistogram, DEFAULT_NUM_BINS};
use crate::qdq::{self, QdqError};

/// Errors while collecting statistics or building a table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError {
    #[error(transparent)]
    Graph(#[from] QdqError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("tensor '{tensor}': {source}")]
    Amax { tensor: String, source: CalibError },
}

/// The fp32 encoder with its activations exposed, and their histograms.
pub struct Collector {
    session: Box<dyn Session>,
    preprocessor: Preprocessor,
    input: Vec<f32>,
    input_shape: Vec<usize>,
    names: Vec<String>,
    hists: Vec<AbsHistogram>,
    bounds: BTreeMap<String, f32>,
    /// Per-channel sums (channel axis 1) and the number of values per channel.
    channel_sums: Vec<(Vec<f64>, u64)>,
    samples: usize,
}

impl Collector {
    /// Loads `fp32_onnx` (the encoder described by `enc`) with every tensor to calibrate added
    /// as an output.
    pub fn new(
        enc: &ImageEncoder,
        fp32_onnx: &[u8],
        model_path: &Path,
        backend: &dyn Backend,
        options: &SessionOptions,
    ) -> Result<Self, CollectError> {
        let model = qdq::decode(fp32_onnx)?;
        let names = qdq::calibration_tensors(&model)?;
        let bounds = qdq::bounded_tensors(&model)?
            .into_iter()
            .filter(|(k, _)| names.contains(k))
            .collect();
        let exposed = qdq::encode(&qdq::expose(&model, &names));
        let outputs: Vec<TensorSpec> = names
            .iter()
            .map(|n| TensorSpec::new(n, DType::F32, vec![]))
            .collect();
        let session = backend
            .load(
                &ModelSpec {
                    path: model_path,
                    bytes: &exposed,
                    precision: Precision::Fp32,
                    inputs: std::slice::from_ref(&enc.input),
                    outputs: &outputs,
                    fixed_dims: &[("batch", 1)],
                },
                options,
            )
            .map_err(RuntimeError::from)?;
        let preprocessor = Preprocessor::new(&enc.preprocess, enc.layout);
        let input = vec![0.0; preprocessor.output_len()];
        // Named dimensions (the batch) are 1: calibration runs one photo at a time.
        let input_shape = enc
            .input
            .shape
            .iter()
            .map(|d| match d {
                dishcam_models::manifest::Dim::Fixed(v) => *v as usize,
                dishcam_models::manifest::Dim::Named(_) => 1,
            })
            .collect();
        let hists = names
            .iter()
            .map(|_| AbsHistogram::new(DEFAULT_NUM_BINS))
            .collect();
        Ok(Collector {
            session,
            preprocessor,
            input,
            input_shape,
            names,
            hists,
            bounds,
            channel_sums: Vec::new(),
            samples: 0,
        })
    }

    /// The tensors being calibrated, in graph order.
    pub fn tensors(&self) -> &[String] {
        &self.names
    }

    /// Runs one photo and adds its activations to the histograms.
    pub fn add(&mut self, img: &RgbImage) -> Result<(), CollectError> {
        let (w, h) = img.dimensions();
        self.preprocessor
            .run(img.as_raw(), w, h, &mut self.input)
            .map_err(RuntimeError::from)?;
        let outputs = self
            .session
            .run(&[TensorRef::F32 {
                shape: &self.input_shape,
                data: &self.input,
            }])
            .map_err(RuntimeError::from)?;
        if self.channel_sums.is_empty() {
            self.channel_sums = outputs
                .iter()
                .map(|t| (vec![0.0; t.shape.get(1).copied().unwrap_or(0)], 0))
                .collect();
        }
        for ((hist, sums), t) in self
            .hists
            .iter_mut()
            .zip(&mut self.channel_sums)
            .zip(&outputs)
        {
            if let Some(v) = t.as_f32() {
                hist.collect(v);
                channel_sums(t.shape.as_slice(), v, sums);
            }
        }
        self.samples += 1;
        Ok(())
    }

    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The collected statistics.
    pub fn finish(self) -> Statistics {
        let channel_means = self
            .names
            .iter()
            .zip(&self.channel_sums)
            .filter(|(_, (s, n))| !s.is_empty() && *n > 0)
            .map(|(name, (s, n))| {
                (
                    name.clone(),
                    s.iter().map(|v| (v / *n as f64) as f32).collect(),
                )
            })
            .collect();
        Statistics {
            samples: self.samples,
            tensors: self.names.into_iter().zip(self.hists).collect(),
            bounds: self.bounds,
            channel_means,
        }
    }
}

/// Histograms of every calibrated tensor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Statistics {
    pub samples: usize,
    pub tensors: Vec<(String, AbsHistogram)>,
    /// Tensors with a known range (outputs of `Clip(0, c)`), see [`qdq::bounded_tensors`].
    pub bounds: BTreeMap<String, f32>,
    /// Mean of each channel (axis 1) of each tensor, for bias correction.
    pub channel_means: BTreeMap<String, Vec<f32>>,
}

/// Adds `v` (shape `shape`) to per-channel sums over axis 1; `sums` keeps its channel count
/// (a tensor whose channel count changes between photos stops being summed).
fn channel_sums(shape: &[usize], v: &[f32], sums: &mut (Vec<f64>, u64)) {
    let Some(&c) = shape.get(1) else { return };
    if c == 0 || c != sums.0.len() {
        sums.0.clear();
        return;
    }
    let outer = shape[0].max(1);
    let inner: usize = shape[2..].iter().product();
    for o in 0..outer {
        for (ch, acc) in sums.0.iter_mut().enumerate() {
            let start = (o * c + ch) * inner;
            *acc += v[start..start + inner]
                .iter()
                .map(|&x| x as f64)
                .sum::<f64>();
        }
    }
    sums.1 += (outer * inner) as u64;
}

/// One tensor's calibration result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorAmax {
    pub amax: f32,
    /// Running max of |x| seen in calibration.
    pub max: f32,
    /// Fraction of calibration values above amax (clipped by the quantisation).
    pub saturation: f64,
    /// The amax is the observed max of a bounded activation, not the method's choice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bounded: bool,
}

/// Per-tensor amax from one method: what the Q/DQ writer and the TensorRT cache are made of.
/// Small (one entry per tensor), so a pack can ship it and rebuild its INT8 files without data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationTable {
    /// `entropy`, `percentile:99.99`, `max` or `mse`.
    pub method: String,
    pub samples: usize,
    /// Where the calibration photos came from (free text).
    pub data: String,
    /// sha256 of the fp32 ONNX the table was computed on.
    pub model_sha256: String,
    pub tensors: BTreeMap<String, TensorAmax>,
    /// Layers (node names, see [`qdq::quantisable_layers`]) left in fp32: no Q/DQ on their
    /// weights or inputs, and no TensorRT cache entry for inputs only they read. The most
    /// sensitive layers; see `dishcam calibrate --keep-fp32`.
    #[serde(default)]
    pub keep_fp32: BTreeSet<String>,
    /// Per-channel means of the calibrated tensors (bias correction).
    #[serde(default)]
    pub channel_means: BTreeMap<String, Vec<f32>>,
    /// Learned weight rounding: weight initialiser -> the positions that round the other way
    /// from nearest ([`crate::rounding`]). Empty unless `dishcam calibrate --rounding` gave one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weight_rounding: BTreeMap<String, String>,
}

impl CalibrationTable {
    /// Computes every tensor's amax with `method`.
    pub fn compute(
        stats: &Statistics,
        method: Method,
        data: &str,
        model_sha256: &str,
    ) -> Result<Self, CollectError> {
        let mut tensors = BTreeMap::new();
        for (name, hist) in &stats.tensors {
            let bound = stats.bounds.get(name).copied();
            let amax = match bound {
                Some(b) if hist.max() > 0.0 => Ok(hist.max().min(b)),
                _ => compute_amax(hist, method),
            };
            let amax = match amax {
                Ok(a) => a,
                // A tensor that is zero on every calibration photo: any positive amax works; use
                // the smallest that keeps the scale normal.
                Err(CalibError::Empty) if hist.non_finite() == 0 => f32::MIN_POSITIVE * 127.0,
                Err(source) => {
                    return Err(CollectError::Amax {
                        tensor: name.clone(),
                        source,
                    })
                }
            };
            tensors.insert(
                name.clone(),
                TensorAmax {
                    amax,
                    max: hist.max(),
                    saturation: saturation(hist, amax),
                    bounded: bound.is_some() && hist.max() > 0.0,
                },
            );
        }
        Ok(CalibrationTable {
            method: method.to_string(),
            samples: stats.samples,
            data: data.to_string(),
            model_sha256: model_sha256.to_string(),
            tensors,
            keep_fp32: BTreeSet::new(),
            channel_means: stats.channel_means.clone(),
            weight_rounding: BTreeMap::new(),
        })
    }

    /// Tensor -> amax, as [`qdq::quantise_static`] takes it.
    pub fn amax(&self) -> BTreeMap<String, f32> {
        self.tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.amax))
            .collect()
    }
}

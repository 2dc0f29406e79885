//! Weights by name from any checkpoint format (a PyTorch state dict or safetensors), checked
//! for shape on lookup.

use std::collections::BTreeMap;

/// Errors from reading weights or building a graph from them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("weights lack tensor '{0}'; the checkpoint is not the architecture expected")]
    Missing(String),
    #[error("tensor '{name}' has shape {got:?}, expected {expected:?}")]
    Shape {
        name: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor '{0}' is not a float tensor")]
    NotFloat(String),
    #[error("config: {0}")]
    Config(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

/// A named f32 tensor from a checkpoint.
#[derive(Debug, Clone)]
pub struct Weight {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Named weights from any checkpoint format, looked up by exact name.
#[derive(Debug, Default)]
pub struct Weights {
    tensors: BTreeMap<String, Weight>,
}

impl Weights {
    pub fn new(tensors: BTreeMap<String, Weight>) -> Self {
        Self { tensors }
    }

    /// Reads every float tensor of a PyTorch state dict.
    pub fn from_torch(sd: BTreeMap<String, crate::torch_pickle::TorchTensor>) -> Self {
        let tensors = sd
            .into_iter()
            .filter_map(|(k, t)| {
                let shape = t.shape.clone();
                match t.data {
                    crate::torch_pickle::TensorData::F32(data) => Some((k, Weight { shape, data })),
                    _ => None,
                }
            })
            .collect();
        Self { tensors }
    }

    /// Reads every float tensor of a safetensors file (f32, f16 and bf16 are widened to f32).
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, ImportError> {
        use safetensors::{Dtype, SafeTensors};
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| ImportError::Checkpoint(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                Dtype::F16 => raw
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => raw
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                _ => continue,
            };
            tensors.insert(
                name,
                Weight {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        Ok(Self { tensors })
    }

    /// The tensor `name`, checked to have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&[f32], ImportError> {
        let w = self
            .tensors
            .get(name)
            .ok_or_else(|| ImportError::Missing(name.into()))?;
        if w.shape != shape {
            return Err(ImportError::Shape {
                name: name.into(),
                got: w.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        Ok(&w.data)
    }

    /// The shape of `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|w| w.shape.as_slice())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    /// Strips `prefix` from every name that has it (e.g. `bert.` in a full BertModel checkpoint).
    pub fn strip_prefix(self, prefix: &str) -> Self {
        let tensors = self
            .tensors
            .into_iter()
            .map(|(k, v)| (k.strip_prefix(prefix).map(str::to_string).unwrap_or(k), v))
            .collect();
        Self { tensors }
    }
}

/// `w` ([rows, cols], row-major) transposed to [cols, rows].
pub(crate) fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = w[r * cols + c];
        }
    }
    out
}

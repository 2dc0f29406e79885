//! The small tensor types that cross the backend boundary.

/// Owned tensor data, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// An owned tensor returned by a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self {
            shape,
            data: TensorData::F32(data),
        }
    }

    /// The data as f32, if it is f32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }

    pub fn into_f32(self) -> Option<Vec<f32>> {
        match self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }
}

/// A borrowed input tensor.
#[derive(Debug, Clone, Copy)]
pub enum TensorRef<'a> {
    F32 { shape: &'a [usize], data: &'a [f32] },
    I64 { shape: &'a [usize], data: &'a [i64] },
}

impl TensorRef<'_> {
    pub fn shape(&self) -> &[usize] {
        match self {
            TensorRef::F32 { shape, .. } | TensorRef::I64 { shape, .. } => shape,
        }
    }
}

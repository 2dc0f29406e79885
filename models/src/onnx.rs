//! Writing ONNX graphs (for the importers) and reading an ONNX file's I/O signature (for
//! verification), over the protobuf types that `tract-onnx` generates from `onnx.proto`.

use std::path::Path;

use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::manifest::{DType, Dim, TensorSpec};

/// ONNX IR version written by the importers (ONNX 1.12, the IR of opset 17).
pub const IR_VERSION: i64 = 8;
/// Default-domain opset the importers target.
pub const OPSET: i64 = 17;

/// Errors reading an ONNX file's signature.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxError {
    #[error("{path}: cannot read ({source})")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid ONNX model ({reason}); the file is truncated or not ONNX, re-create it (for a pack: `dishcam models pull`)")]
    Decode { path: String, reason: String },
    #[error("{path}: tensor '{tensor}' has element type {elem_type}, which dishcam does not use")]
    UnsupportedType {
        path: String,
        tensor: String,
        elem_type: i32,
    },
}

/// The graph inputs and outputs of an ONNX model, initialisers excluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub opsets: Vec<(String, i64)>,
}

/// Reads the I/O signature of the ONNX file at `path` without building the graph.
pub fn read_signature(path: &Path) -> Result<Signature, OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        path: path.display().to_string(),
        source,
    })?;
    signature_of(&bytes, &path.display().to_string())
}

/// Reads the I/O signature of an ONNX model held in memory; `name` is used in errors.
pub fn signature_of(bytes: &[u8], name: &str) -> Result<Signature, OnnxError> {
    let model = ModelProto::decode(bytes).map_err(|e| OnnxError::Decode {
        path: name.to_string(),
        reason: e.to_string(),
    })?;
    let graph = model.graph.ok_or_else(|| OnnxError::Decode {
        path: name.to_string(),
        reason: "model has no graph".into(),
    })?;
    let initialisers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let convert = |vi: &ValueInfoProto| -> Result<TensorSpec, OnnxError> {
        let Some(TypeProto {
            value: Some(type_proto::Value::TensorType(t)),
            ..
        }) = &vi.r#type
        else {
            return Err(OnnxError::Decode {
                path: name.to_string(),
                reason: format!("value '{}' is not a tensor", vi.name),
            });
        };
        let dtype = DType::from_onnx(t.elem_type).ok_or(OnnxError::UnsupportedType {
            path: name.to_string(),
            tensor: vi.name.clone(),
            elem_type: t.elem_type,
        })?;
        let shape = t
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(dimension::Value::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as u64),
                        Some(dimension::Value::DimParam(p)) => Dim::Named(p.clone()),
                        _ => Dim::Named("?".into()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(TensorSpec {
            name: vi.name.clone(),
            dtype,
            shape,
        })
    };
    let inputs = graph
        .input
        .iter()
        .filter(|vi| !initialisers.contains(vi.name.as_str()))
        .map(convert)
        .collect::<Result<_, _>>()?;
    let outputs = graph.output.iter().map(convert).collect::<Result<_, _>>()?;
    let opsets = model
        .opset_import
        .iter()
        .map(|o| (o.domain.clone(), o.version))
        .collect();
    Ok(Signature {
        inputs,
        outputs,
        opsets,
    })
}

/// An attribute value for [`GraphBuilder::node`].
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

/// Builds an ONNX graph node by node. Names of intermediate values are generated from the
/// node name so that a graph dump reads like the model it came from.
pub struct GraphBuilder {
    name: String,
    nodes: Vec<NodeProto>,
    initialisers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            nodes: Vec::new(),
            initialisers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            counter: 0,
        }
    }

    /// Declares a graph input.
    pub fn input(&mut self, spec: &TensorSpec) -> String {
        self.inputs.push(value_info(spec));
        spec.name.clone()
    }

    /// Declares `value` as the graph output described by `spec`, renaming it with an Identity
    /// node when the names differ.
    pub fn output(&mut self, value: &str, spec: &TensorSpec) {
        if value != spec.name {
            self.nodes.push(NodeProto {
                input: vec![value.to_string()],
                output: vec![spec.name.clone()],
                name: format!("{}_out", spec.name),
                op_type: "Identity".into(),
                ..Default::default()
            });
        }
        self.outputs.push(value_info(spec));
    }

    /// Adds an f32 constant tensor.
    pub fn f32_tensor(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        let mut raw = Vec::with_capacity(data.len() * 4);
        for v in data {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        self.initialisers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            name: name.to_string(),
            raw_data: raw,
            ..Default::default()
        });
        name.to_string()
    }

    /// Adds an i64 constant tensor.
    pub fn i64_tensor(&mut self, name: &str, dims: &[usize], data: &[i64]) -> String {
        let mut raw = Vec::with_capacity(data.len() * 8);
        for v in data {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        self.initialisers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Int64 as i32,
            name: name.to_string(),
            raw_data: raw,
            ..Default::default()
        });
        name.to_string()
    }

    /// Adds a node with one output and returns the output's name.
    pub fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
    ) -> String {
        self.counter += 1;
        let output = format!("{name}:{}", self.counter);
        let attribute = attrs
            .iter()
            .map(|(n, a)| {
                let mut p = AttributeProto {
                    name: n.to_string(),
                    ..Default::default()
                };
                match a {
                    Attr::Int(i) => {
                        p.r#type = AttributeType::Int as i32;
                        p.i = *i;
                    }
                    Attr::Ints(v) => {
                        p.r#type = AttributeType::Ints as i32;
                        p.ints = v.clone();
                    }
                    Attr::Float(f) => {
                        p.r#type = AttributeType::Float as i32;
                        p.f = *f;
                    }
                }
                p
            })
            .collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: format!("{name}#{}", self.counter),
            op_type: op.to_string(),
            attribute,
            ..Default::default()
        });
        output
    }

    /// Finishes the model; `doc` is stored as the model's doc string.
    pub fn finish(self, doc: &str) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "dishcam".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.to_string(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: self.name,
                initializer: self.initialisers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The named f32 initialiser of an ONNX model (raw or `float_data`), with its dims.
pub fn f32_initialiser(
    bytes: &[u8],
    name: &str,
    tensor: &str,
) -> Result<(Vec<usize>, Vec<f32>), OnnxError> {
    let decode = |reason: String| OnnxError::Decode {
        path: name.to_string(),
        reason,
    };
    let model = ModelProto::decode(bytes).map_err(|e| decode(e.to_string()))?;
    let graph = model
        .graph
        .ok_or_else(|| decode("model has no graph".into()))?;
    let t = graph
        .initializer
        .iter()
        .find(|t| t.name == tensor)
        .ok_or_else(|| decode(format!("no initialiser '{tensor}'")))?;
    if t.data_type != DataType::Float as i32 {
        return Err(decode(format!("initialiser '{tensor}' is not f32")));
    }
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let data: Vec<f32> = if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect()
    };
    if data.len() != dims.iter().product::<usize>() {
        return Err(decode(format!(
            "initialiser '{tensor}' has {} values for dims {dims:?}",
            data.len()
        )));
    }
    Ok((dims, data))
}

/// Serialises a model to bytes.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

fn value_info(spec: &TensorSpec) -> ValueInfoProto {
    let dim = spec
        .shape
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                Dim::Fixed(v) => dimension::Value::DimValue(*v as i64),
                Dim::Named(n) => dimension::Value::DimParam(n.clone()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: spec.name.clone(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: spec.dtype.to_onnx(),
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trips_through_the_builder() {
        let mut g = GraphBuilder::new("t");
        let x = g.input(&TensorSpec::new(
            "x",
            DType::F32,
            vec![Dim::named("batch"), Dim::fixed(4)],
        ));
        let w = g.f32_tensor("w", &[4, 2], &[0.0; 8]);
        let y = g.node("MatMul", "mm", &[&x, &w], &[]);
        g.output(
            &y,
            &TensorSpec::new("y", DType::F32, vec![Dim::named("batch"), Dim::fixed(2)]),
        );
        let bytes = encode(&g.finish("test"));
        let sig = signature_of(&bytes, "mem").unwrap();
        assert_eq!(sig.inputs.len(), 1);
        assert_eq!(sig.inputs[0].name, "x");
        assert_eq!(
            sig.inputs[0].shape,
            vec![Dim::named("batch"), Dim::fixed(4)]
        );
        assert_eq!(sig.outputs[0].name, "y");
        assert_eq!(sig.outputs[0].dtype, DType::F32);
        assert_eq!(sig.opsets, vec![(String::new(), OPSET)]);
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        let err = signature_of(&[0xff, 0x13, 0x00, 0x99, 0x42], "junk.onnx").unwrap_err();
        assert!(matches!(err, OnnxError::Decode { .. }), "{err}");
        assert!(err.to_string().contains("junk.onnx"));
    }
}

//! The tract backend: pure Rust, always built, fp32.
//!
//! tract reads only the first scale of a QuantizeLinear/DequantizeLinear node, so per-channel
//! Q/DQ models would run with wrong numbers; this backend refuses int8 variants instead.

use std::io::Cursor;

use dishcam_models::manifest::{DType, Dim};
use dishcam_models::Precision;
use tract_onnx::prelude::*;

use super::{Backend, BackendError, BackendKind, ModelSpec, Session, SessionOptions};
use crate::tensor::{Tensor as DTensor, TensorData, TensorRef};

/// The tract backend.
pub struct TractBackend;

struct TractSession {
    model: String,
    state: TypedSimpleState,
    /// Fixed sizes of every input dimension, `None` where the model is dynamic.
    input_shapes: Vec<Vec<Option<usize>>>,
}

impl Backend for TractBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Tract
    }

    fn load(
        &self,
        spec: &ModelSpec<'_>,
        options: &SessionOptions,
    ) -> Result<Box<dyn Session>, BackendError> {
        let model_name = spec.path.display().to_string();
        if spec.precision != Precision::Fp32 {
            return Err(BackendError::UnsupportedPrecision {
                model: model_name,
                backend: "tract".into(),
                precision: spec.precision,
                why: "tract runs fp32 only (it reads one scale of per-channel Q/DQ nodes and would compute wrong results); use --backend onnxruntime or --precision fp32".into(),
            });
        }
        if options.threads.is_some_and(|t| t > 1) {
            log::debug!(
                "tract runs single-threaded; ignoring threads = {:?}",
                options.threads
            );
        }
        let load_err = |e: TractError| BackendError::Load {
            model: model_name.clone(),
            backend: "tract".into(),
            reason: e.to_string(),
        };
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_read(&mut Cursor::new(spec.bytes))
            .map_err(load_err)?;
        check_opset(&proto, &model_name)?;
        let mut model = onnx.model_for_proto_model(&proto).map_err(load_err)?;
        let mut input_shapes = Vec::new();
        for (i, input) in spec.inputs.iter().enumerate() {
            let mut dims: TVec<TDim> = tvec![];
            let mut fixed = Vec::new();
            for d in &input.shape {
                match d {
                    Dim::Fixed(v) => {
                        dims.push((*v as i64).into());
                        fixed.push(Some(*v as usize));
                    }
                    Dim::Named(n) => match spec.fixed_dims.iter().find(|(name, _)| name == n) {
                        Some((_, v)) => {
                            dims.push((*v as i64).into());
                            fixed.push(Some(*v));
                        }
                        None => {
                            dims.push(model.symbols.sym(n).into());
                            fixed.push(None);
                        }
                    },
                }
            }
            let dt = match input.dtype {
                DType::F32 => f32::datum_type(),
                DType::I64 => i64::datum_type(),
                other => {
                    return Err(BackendError::Load {
                        model: model_name,
                        backend: "tract".into(),
                        reason: format!(
                            "input '{}' has dtype {other}, which this backend does not feed",
                            input.name
                        ),
                    })
                }
            };
            let position = model
                .input_outlets()
                .map_err(load_err)?
                .iter()
                .position(|o| model.node(o.node).name == input.name)
                .ok_or_else(|| BackendError::Load {
                    model: model_name.clone(),
                    backend: "tract".into(),
                    reason: format!("the model has no input '{}'", input.name),
                })?;
            if position != i {
                return Err(BackendError::Load {
                    model: model_name,
                    backend: "tract".into(),
                    reason: format!(
                        "input '{}' is input {position} of the model but {i} in the manifest",
                        input.name
                    ),
                });
            }
            model
                .set_input_fact(i, InferenceFact::dt_shape(dt, dims))
                .map_err(load_err)?;
            input_shapes.push(fixed);
        }
        let mut outlets = Vec::new();
        for o in spec.outputs {
            let outlet = model
                .find_outlet_label(&o.name)
                .or_else(|| {
                    model
                        .node_by_name(&o.name)
                        .ok()
                        .map(|n| OutletId::new(n.id, 0))
                })
                .ok_or_else(|| BackendError::Load {
                    model: model_name.clone(),
                    backend: "tract".into(),
                    reason: format!("the model has no output '{}'", o.name),
                })?;
            outlets.push(outlet);
        }
        model.select_output_outlets(&outlets).map_err(load_err)?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(load_err)?;
        let state = plan.spawn().map_err(load_err)?;
        Ok(Box::new(TractSession {
            model: model_name,
            state,
            input_shapes,
        }))
    }
}

impl Session for TractSession {
    fn run(&mut self, inputs: &[TensorRef<'_>]) -> Result<Vec<DTensor>, BackendError> {
        let run_err = |reason: String| BackendError::Run {
            model: self.model.clone(),
            reason,
        };
        super::check_inputs(&self.model, inputs, &self.input_shapes)?;
        let mut values: TVec<TValue> = tvec![];
        for input in inputs {
            let t = match input {
                TensorRef::F32 { shape, data } => Tensor::from_shape(shape, data),
                TensorRef::I64 { shape, data } => Tensor::from_shape(shape, data),
            }
            .map_err(|e| run_err(e.to_string()))?;
            values.push(t.into_tvalue());
        }
        let outputs = self
            .state
            .run(values)
            .map_err(|e| run_err(format!("{e:#}")))?;
        outputs
            .into_iter()
            .map(|v| {
                let t = v.into_tensor();
                let shape = t.shape().to_vec();
                if let Ok(view) = t.to_plain_array_view::<f32>() {
                    Ok(DTensor::f32(shape, view.iter().copied().collect()))
                } else if let Ok(view) = t.to_plain_array_view::<i64>() {
                    Ok(DTensor {
                        shape,
                        data: TensorData::I64(view.iter().copied().collect()),
                    })
                } else {
                    Err(run_err(format!(
                        "output of type {:?} is not supported",
                        t.datum_type()
                    )))
                }
            })
            .collect()
    }

    fn model_name(&self) -> &str {
        &self.model
    }
}

/// The newest ONNX operator set tract 0.23 is tested against (its own parser warns above it).
const NEWEST_OPSET: i64 = 18;

/// Refuses a model from a newer ONNX than tract knows. tract would parse it with the semantics
/// of the operator versions it knows and, where an operator changed, compute something else
/// without a word; onnxruntime refuses such models itself.
fn check_opset(proto: &tract_onnx::pb::ModelProto, model: &str) -> Result<(), BackendError> {
    let version = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    if version > NEWEST_OPSET {
        return Err(BackendError::Load {
            model: model.to_string(),
            backend: "tract".into(),
            reason: format!(
                "the model uses ONNX opset {version}, newer than tract knows (up to {NEWEST_OPSET}); re-export it with opset {NEWEST_OPSET} or lower (dishcam's own exports use 17), or use --backend onnxruntime"
            ),
        });
    }
    Ok(())
}

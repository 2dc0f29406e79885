//! The backend suite's problem: one small graph (`Gemm` or `MatMul` over a 4x2 weight whose
//! columns differ in scale by 1000x), its hand-computed answer, and every backend compiled in.
//! The fp32 cases run in `runtime/tests/backends.rs`; the int8 ones, which quantise it with the
//! calibration crate, in `calibration/tests/int8_backends.rs`.

use std::path::Path;

use dishcam_models::manifest::{DType, Dim, TensorSpec};
use dishcam_models::onnx::{encode, GraphBuilder};
use dishcam_models::Precision;
use dishcam_runtime::backend::tensorrt::{Bridge, TensorRtBackend};
use dishcam_runtime::backend::{
    backend, Backend, BackendError, BackendKind, ModelSpec, SessionOptions,
};
use dishcam_runtime::tensor::TensorRef;

use super::trt_mock;

pub fn open(kind: BackendKind) -> Box<dyn Backend> {
    backend(kind).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

/// Opens `kind`, or, for OpenVINO only, prints a loud `SKIPPED (openvino)` line with the reason
/// and the fix when its library is absent (or the build has no `openvino` feature) and returns
/// `None`. Any other backend that does not open is a failure: `scripts/test.sh` installs
/// onnxruntime's library, and `dishcam models pull lite` OpenVINO's too.
pub fn open_or_skip(kind: BackendKind) -> Option<Box<dyn Backend>> {
    match backend(kind) {
        Ok(b) => Some(b),
        Err(e @ (BackendError::Unavailable { .. } | BackendError::NotCompiled { .. }))
            if kind == BackendKind::Openvino =>
        {
            eprintln!("SKIPPED ({kind}): {e}");
            None
        }
        Err(e) => panic!("{kind}: {e}"),
    }
}

/// Every backend kind, opened; TensorRT on the ABI test bridge, absent (with a SKIPPED line)
/// only when there is no C compiler to build it; OpenVINO absent (with a SKIPPED line) only
/// when its library is (see [`open_or_skip`]).
pub fn backends() -> Vec<(BackendKind, Box<dyn Backend>)> {
    BackendKind::ALL
        .into_iter()
        .filter_map(|kind| match kind {
            BackendKind::TensorRt => {
                let lib = trt_mock::mock_bridge("suite", &[])?;
                let bridge = Bridge::open(&lib).unwrap_or_else(|e| panic!("{kind}: {e}"));
                let b = TensorRtBackend::new(bridge, Default::default())
                    .unwrap_or_else(|e| panic!("{kind}: {e}"));
                Some((kind, Box::new(b) as Box<dyn Backend>))
            }
            _ => Some((kind, open_or_skip(kind)?)),
        })
        .collect()
}

pub fn x_spec() -> TensorSpec {
    TensorSpec::new("x", DType::F32, vec![Dim::named("batch"), Dim::fixed(4)])
}

pub fn y_spec() -> TensorSpec {
    TensorSpec::new("y", DType::F32, vec![Dim::named("batch"), Dim::fixed(2)])
}

/// y = x . W + b with W [4, 2]: column 0 is large, column 1 tiny, so one scale for both columns
/// would round column 1 to zero.
pub const W: [f32; 8] = [50.0, 0.01, -20.0, 0.02, 10.0, -0.03, 70.0, 0.04];
pub const B: [f32; 2] = [1.0, -0.5];

/// `Gemm(x, W, b)`, or with `bias == false` a bare `MatMul(x, W)`.
pub fn matmul_model(bias: bool) -> Vec<u8> {
    let mut g = GraphBuilder::new("mm");
    let x = g.input(&x_spec());
    let w = g.f32_tensor("w", &[4, 2], &W);
    let y = if bias {
        let b = g.f32_tensor("b", &[2], &B);
        g.node("Gemm", "gemm", &[&x, &w, &b], &[])
    } else {
        g.node("MatMul", "mm", &[&x, &w], &[])
    };
    g.output(&y, &y_spec());
    encode(&g.finish("backend suite"))
}

pub fn by_hand(x: &[f32], bias: bool) -> Vec<f32> {
    let rows = x.len() / 4;
    let mut y = Vec::new();
    for r in 0..rows {
        for c in 0..2 {
            let b = if bias { B[c] } else { 0.0 };
            y.push(b + (0..4).map(|k| x[r * 4 + k] * W[k * 2 + c]).sum::<f32>());
        }
    }
    y
}

pub fn run(
    b: &dyn Backend,
    bytes: &[u8],
    precision: Precision,
    x: &[f32],
    shape: &[usize],
) -> Result<Vec<f32>, BackendError> {
    let mut s = b.load(
        &ModelSpec {
            path: Path::new("suite.onnx"),
            bytes,
            precision,
            inputs: &[x_spec()],
            outputs: &[y_spec()],
            fixed_dims: &[],
        },
        &SessionOptions {
            threads: Some(1),
            ..Default::default()
        },
    )?;
    let out = s.run(&[TensorRef::F32 { shape, data: x }])?;
    Ok(out[0].as_f32().unwrap().to_vec())
}

pub const X: [f32; 8] = [0.5, -1.0, 0.25, 2.0, 1.5, 0.0, -0.75, 0.1];

//! One backend suite, run on every backend compiled in (as tract's test-rt runs one suite on each
//! runtime): the same small graphs, the same inputs, answers worked out by hand. The lite pack's
//! encoders are checked against PyTorch on every backend in `parity_lite.rs`.
//!
//! TensorRT runs here on the ABI test bridge (`tests/tensorrt/mock_bridge.c`, a CPU stand-in
//! that executes MatMul and Gemm), so on these machines the suite checks the Rust side of the
//! TensorRT backend (building, name binding, shapes, errors), not TensorRT itself.

mod common;

use std::path::Path;

use dishcam_calibration::qdq::{self, ActivationFormat};
use dishcam_models::manifest::{DType, Dim, TensorSpec};
use dishcam_models::onnx::{encode, GraphBuilder};
use dishcam_models::Precision;
use dishcam_runtime::backend::tensorrt::{Bridge, TensorRtBackend};
use dishcam_runtime::backend::{
    backend, Backend, BackendError, BackendKind, ModelSpec, SessionOptions,
};
use dishcam_runtime::tensor::TensorRef;

fn open(kind: BackendKind) -> Box<dyn Backend> {
    backend(kind).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

/// Every backend kind, opened; TensorRT on the ABI test bridge, absent (with a SKIPPED line)
/// only when there is no C compiler to build it.
fn backends() -> Vec<(BackendKind, Box<dyn Backend>)> {
    BackendKind::ALL
        .into_iter()
        .filter_map(|kind| match kind {
            BackendKind::TensorRt => {
                let lib = common::trt_mock::mock_bridge("suite", &[])?;
                let bridge = Bridge::open(&lib).unwrap_or_else(|e| panic!("{kind}: {e}"));
                let b = TensorRtBackend::new(bridge, Default::default())
                    .unwrap_or_else(|e| panic!("{kind}: {e}"));
                Some((kind, Box::new(b) as Box<dyn Backend>))
            }
            _ => Some((kind, open(kind))),
        })
        .collect()
}

fn x_spec() -> TensorSpec {
    TensorSpec::new("x", DType::F32, vec![Dim::named("batch"), Dim::fixed(4)])
}

fn y_spec() -> TensorSpec {
    TensorSpec::new("y", DType::F32, vec![Dim::named("batch"), Dim::fixed(2)])
}

/// y = x . W + b with W [4, 2]: column 0 is large, column 1 tiny, so one scale for both columns
/// would round column 1 to zero.
const W: [f32; 8] = [50.0, 0.01, -20.0, 0.02, 10.0, -0.03, 70.0, 0.04];
const B: [f32; 2] = [1.0, -0.5];

/// `Gemm(x, W, b)`, or with `bias == false` a bare `MatMul(x, W)`.
fn matmul_model(bias: bool) -> Vec<u8> {
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

fn by_hand(x: &[f32], bias: bool) -> Vec<f32> {
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

fn run(
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

const X: [f32; 8] = [0.5, -1.0, 0.25, 2.0, 1.5, 0.0, -0.75, 0.1];

#[test]
fn fp32_graphs_give_the_hand_computed_answer_on_every_backend() {
    let model = matmul_model(true);
    for (kind, b) in backends() {
        let got = run(b.as_ref(), &model, Precision::Fp32, &X, &[2, 4]).unwrap();
        let want = by_hand(&X, true);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{kind}: {got:?} vs {want:?}"
            );
        }
    }
}

#[test]
fn a_wrong_input_shape_is_an_error_naming_the_model_on_every_backend() {
    let model = matmul_model(true);
    for (kind, b) in backends() {
        let err = run(b.as_ref(), &model, Precision::Fp32, &X, &[1, 8]).unwrap_err();
        assert!(
            matches!(err, BackendError::InputShape { .. }),
            "{kind}: {err}"
        );
        assert!(err.to_string().contains("suite.onnx"), "{kind}: {err}");
    }
}

#[test]
fn an_unknown_output_is_a_load_error_on_every_backend() {
    let model = matmul_model(true);
    for (kind, b) in backends() {
        let err = b
            .load(
                &ModelSpec {
                    path: Path::new("suite.onnx"),
                    bytes: &model,
                    precision: Precision::Fp32,
                    inputs: &[x_spec()],
                    outputs: &[TensorSpec::new("nope", DType::F32, vec![])],
                    fixed_dims: &[],
                },
                &SessionOptions::default(),
            )
            .err()
            .expect("unknown output must fail");
        assert!(err.to_string().contains("nope"), "{kind}: {err}");
    }
}

#[test]
fn garbage_bytes_are_a_load_error_on_every_backend() {
    for (kind, b) in backends() {
        let err = run(b.as_ref(), b"not onnx", Precision::Fp32, &X, &[2, 4]).unwrap_err();
        assert!(matches!(err, BackendError::Load { .. }), "{kind}: {err}");
    }
}

/// Per-channel Q/DQ: onnxruntime computes it (each column within its own quantisation error);
/// tract, which reads only the first scale, refuses int8 models outright. Not run on TensorRT:
/// the ABI test bridge has no int8 kernels, so it would test nothing of TensorRT's.
#[test]
fn per_channel_int8_runs_on_onnxruntime_and_is_refused_by_tract() {
    let model = qdq::decode(&matmul_model(true)).unwrap();
    assert_eq!(qdq::calibration_tensors(&model).unwrap(), ["x"]);
    let amax = [("x".to_string(), 2.0f32)].into_iter().collect();
    for format in [ActivationFormat::OrtU8, ActivationFormat::Int8Symmetric] {
        let int8 = qdq::encode(
            &qdq::quantise_static(
                &model,
                &amax,
                &Default::default(),
                &Default::default(),
                &Default::default(),
                format,
            )
            .unwrap(),
        );
        let got = run(
            open(BackendKind::Onnxruntime).as_ref(),
            &int8,
            Precision::Int8,
            &X,
            &[2, 4],
        )
        .unwrap();
        let want = by_hand(&X, true);
        // Column c's error: x rounding (2/127 per element) x |W| + W rounding (max|W_c|/254).
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let c = i % 2;
            let wmax = (0..4).map(|k| W[k * 2 + c].abs()).fold(0.0, f32::max);
            let tol = 4.0 * (2.0 / 127.0) * wmax + 4.0 * 2.0 * wmax / 254.0;
            assert!(
                (g - w).abs() <= tol,
                "{format:?} y[{i}] = {g}, want {w} (tol {tol})"
            );
        }
        let err = run(
            open(BackendKind::Tract).as_ref(),
            &int8,
            Precision::Int8,
            &X,
            &[2, 4],
        )
        .unwrap_err();
        assert!(
            matches!(err, BackendError::UnsupportedPrecision { .. }),
            "tract: {err}"
        );
    }
}

/// Dynamic int8 MatMul (the text encoder's variant) on onnxruntime.
#[test]
fn dynamic_int8_matmul_runs_on_onnxruntime() {
    let model = qdq::decode(&matmul_model(false)).unwrap();
    let int8 = qdq::encode(&qdq::quantise_dynamic(&model).unwrap());
    let got = run(
        open(BackendKind::Onnxruntime).as_ref(),
        &int8,
        Precision::Int8,
        &X,
        &[2, 4],
    )
    .unwrap();
    let want = by_hand(&X, false);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let c = i % 2;
        let wmax = (0..4).map(|k| W[k * 2 + c].abs()).fold(0.0, f32::max);
        // Activations use the row range (asymmetric uint8, ~3.5/255 per step).
        let tol = 4.0 * (3.5 / 255.0) * wmax + 4.0 * 2.0 * wmax / 254.0;
        assert!((g - w).abs() <= tol, "y[{i}] = {g}, want {w} (tol {tol})");
    }
}

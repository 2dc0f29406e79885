//! One backend suite, run on every backend compiled in (as tract's test-rt runs one suite on each
//! runtime): the same small graphs, the same inputs, answers worked out by hand. The lite pack's
//! encoders are checked against PyTorch on every backend in `parity_lite.rs`.
//!
//! TensorRT runs here on the ABI test bridge (`tests/tensorrt/mock_bridge.c`, a CPU stand-in
//! that executes MatMul and Gemm), so on these machines the suite checks the Rust side of the
//! TensorRT backend (building, name binding, shapes, errors), not TensorRT itself.

mod support;

use std::path::Path;

use dishcam_models::manifest::{DType, TensorSpec};
use dishcam_models::Precision;
use dishcam_runtime::backend::{BackendError, ModelSpec, SessionOptions};
use support::backend_suite::*;

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

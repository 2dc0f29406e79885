//! The backend suite's int8 cases: the problem of `runtime/tests/support/backend_suite.rs`
//! quantised by this crate (per-channel static Q/DQ in both activation formats, and dynamic
//! int8 MatMul), run on onnxruntime and OpenVINO (a `SKIPPED (openvino)` line where its library
//! is absent) with the same stated tolerances, and refused by tract.

#[path = "../../runtime/tests/support/mod.rs"]
mod support;

use dishcam_calibration::qdq::{self, ActivationFormat};
use dishcam_models::Precision;
use dishcam_runtime::backend::{Backend, BackendError, BackendKind};
use support::backend_suite::*;

/// The backends that run int8 Q/DQ: onnxruntime, and OpenVINO where its library is.
fn int8_backends() -> Vec<(BackendKind, Box<dyn Backend>)> {
    [BackendKind::Onnxruntime, BackendKind::Openvino]
        .into_iter()
        .filter_map(|k| Some((k, open_or_skip(k)?)))
        .collect()
}

/// Per-channel Q/DQ: onnxruntime and OpenVINO compute it (each column within its own
/// quantisation error); tract, which reads only the first scale, refuses int8 models outright.
/// Not run on TensorRT: the ABI test bridge has no int8 kernels, so it would test nothing of
/// TensorRT's.
#[test]
fn per_channel_int8_runs_on_onnxruntime_and_openvino_and_is_refused_by_tract() {
    let int8_backends = int8_backends();
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
        for (kind, b) in &int8_backends {
            let got = run(b.as_ref(), &int8, Precision::Int8, &X, &[2, 4]).unwrap();
            let want = by_hand(&X, true);
            // Column c's error: x rounding (2/127 per element) x |W| + W rounding (max|W_c|/254).
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let c = i % 2;
                let wmax = (0..4).map(|k| W[k * 2 + c].abs()).fold(0.0, f32::max);
                let tol = 4.0 * (2.0 / 127.0) * wmax + 4.0 * 2.0 * wmax / 254.0;
                assert!(
                    (g - w).abs() <= tol,
                    "{kind} {format:?} y[{i}] = {g}, want {w} (tol {tol})"
                );
            }
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

/// Dynamic int8 MatMul (the text encoder's variant) on onnxruntime and OpenVINO.
#[test]
fn dynamic_int8_matmul_runs_on_onnxruntime_and_openvino() {
    let model = qdq::decode(&matmul_model(false)).unwrap();
    let int8 = qdq::encode(&qdq::quantise_dynamic(&model).unwrap());
    for (kind, b) in int8_backends() {
        let got = run(b.as_ref(), &int8, Precision::Int8, &X, &[2, 4]).unwrap();
        let want = by_hand(&X, false);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let c = i % 2;
            let wmax = (0..4).map(|k| W[k * 2 + c].abs()).fold(0.0, f32::max);
            // Activations use the row range (asymmetric uint8, ~3.5/255 per step).
            let tol = 4.0 * (3.5 / 255.0) * wmax + 4.0 * 2.0 * wmax / 254.0;
            assert!(
                (g - w).abs() <= tol,
                "{kind} y[{i}] = {g}, want {w} (tol {tol})"
            );
        }
    }
}

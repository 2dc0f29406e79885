//! The TensorRT backend against the ABI test bridge (`tests/tensorrt/mock_bridge.c`, the C ABI
//! of `tensorrt-bridge/include/dishcam_trt.h` implemented on the CPU and compiled here with the
//! system C compiler). These tests cover the Rust side: loading and version checks, errors
//! crossing the boundary, binding by tensor name, shapes, device buffer lifetimes, timings and
//! the engine cache. Nothing here runs real TensorRT (see docs/jetson.md).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::trt_mock::mock_bridge;
use dishcam_models::manifest::{DType, Dim, TensorSpec};
use dishcam_models::onnx::{encode, GraphBuilder};
use dishcam_models::Precision;
use dishcam_runtime::backend::tensorrt::cache::{self, EngineDevice, EnginePrecision, Lookup};
use dishcam_runtime::backend::tensorrt::{
    Bridge, BuildRequest, DimRange, EngineOutcome, InputProfile, TensorRtBackend, TensorRtOptions,
    TensorRtSession,
};
use dishcam_runtime::backend::{BackendError, ModelSpec, SessionOptions};
use dishcam_runtime::tensor::TensorRef;

/// The mock of `variant`, or return from the test (no C compiler: already reported).
macro_rules! mock {
    ($variant:expr) => {
        mock!($variant, &[])
    };
    ($variant:expr, $defines:expr) => {
        match mock_bridge($variant, $defines) {
            Some(p) => p,
            None => return,
        }
    };
}

const W: [f32; 8] = [50.0, 0.01, -20.0, 0.02, 10.0, -0.03, 70.0, 0.04];
const B: [f32; 2] = [1.0, -0.5];
const X: [f32; 8] = [0.5, -1.0, 0.25, 2.0, 1.5, 0.0, -0.75, 0.1];

fn x_spec() -> TensorSpec {
    TensorSpec::new("x", DType::F32, vec![Dim::named("batch"), Dim::fixed(4)])
}

fn y_spec() -> TensorSpec {
    TensorSpec::new("y", DType::F32, vec![Dim::named("batch"), Dim::fixed(2)])
}

/// y = Gemm(x, W, b); a graph named `mock-fail:<stage>` makes the mock fail at that stage.
fn gemm_model(graph: &str) -> Vec<u8> {
    let mut g = GraphBuilder::new(graph);
    let x = g.input(&x_spec());
    let w = g.f32_tensor("w", &[4, 2], &W);
    let b = g.f32_tensor("b", &[2], &B);
    let y = g.node("Gemm", "gemm", &[&x, &w, &b], &[]);
    g.output(&y, &y_spec());
    encode(&g.finish("tensorrt tests"))
}

/// The profile of `x` for batches of 1..2 (the graph's batch is dynamic, so builds need one).
fn x_profile() -> Vec<InputProfile> {
    vec![InputProfile {
        name: "x".into(),
        min: vec![1, 4],
        opt: vec![2, 4],
        max: vec![2, 4],
    }]
}

fn by_hand(x: &[f32]) -> Vec<f32> {
    let mut y = Vec::new();
    for r in 0..x.len() / 4 {
        for c in 0..2 {
            y.push(B[c] + (0..4).map(|k| x[r * 4 + k] * W[k * 2 + c]).sum::<f32>());
        }
    }
    y
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-4 * w.abs().max(1.0),
            "{got:?} vs {want:?}"
        );
    }
}

fn open(lib: &Path, options: TensorRtOptions) -> TensorRtBackend {
    TensorRtBackend::new(Bridge::open(lib).unwrap(), options).unwrap()
}

fn spec<'a>(bytes: &'a [u8], inputs: &'a [TensorSpec], outputs: &'a [TensorSpec]) -> ModelSpec<'a> {
    ModelSpec {
        path: Path::new("suite.onnx"),
        bytes,
        precision: Precision::Fp32,
        inputs,
        outputs,
        fixed_dims: &[],
    }
}

fn load(b: &TensorRtBackend, model: &[u8]) -> Result<TensorRtSession, BackendError> {
    b.load_session(
        &spec(model, &[x_spec()], &[y_spec()]),
        &SessionOptions::default(),
    )
}

fn run(s: &mut TensorRtSession, x: &[f32]) -> Result<Vec<f32>, BackendError> {
    use dishcam_runtime::backend::Session;
    let shape = [x.len() / 4, 4];
    let out = s.run(&[TensorRef::F32 {
        shape: &shape,
        data: x,
    }])?;
    Ok(out[0].as_f32().unwrap().to_vec())
}

/// The mock's own counters (not part of the ABI), read through a second handle on the same
/// library: dlopen returns the instance the backend loaded.
struct Counters(libloading::Library);

impl Counters {
    fn new(lib: &Path) -> Counters {
        // Safety: the ABI test bridge's initialisers are trivial.
        Counters(unsafe { libloading::Library::new(lib) }.unwrap())
    }

    /// Live device allocations (0), engines (1), builders (2).
    fn live(&self, what: i32) -> std::ffi::c_long {
        // Safety: `long dishcam_trt_mock_live(int)` in mock_bridge.c.
        unsafe {
            let f = self
                .0
                .get::<unsafe extern "C" fn(i32) -> std::ffi::c_long>("dishcam_trt_mock_live")
                .unwrap();
            f(what)
        }
    }

    fn calls(&self, name: &str) -> std::ffi::c_long {
        let name = std::ffi::CString::new(name).unwrap();
        // Safety: `long dishcam_trt_mock_calls(const char*)` in mock_bridge.c.
        unsafe {
            let f = self
                .0
                .get::<unsafe extern "C" fn(*const std::ffi::c_char) -> std::ffi::c_long>(
                    "dishcam_trt_mock_calls",
                )
                .unwrap();
            f(name.as_ptr())
        }
    }
}

/// Every function of the ABI, as dishcam_trt.h declares them.
fn abi_functions() -> Vec<String> {
    let header =
        std::fs::read_to_string(common::repo().join("tensorrt-bridge/include/dishcam_trt.h"))
            .unwrap();
    let mut names: Vec<String> = header
        .split("dishcam_trt_")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest[name.len()..].starts_with('(').then_some(name)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn tensorrt_bridge_header_compiles_as_c_and_cpp() {
    let include = common::repo().join("tensorrt-bridge/include/dishcam_trt.h");
    for (compiler, args) in [
        ("cc", &["-std=c99", "-pedantic", "-x", "c"][..]),
        ("c++", &["-std=c++17", "-pedantic", "-x", "c++"][..]),
    ] {
        let out = match Command::new(compiler)
            .args(["-fsyntax-only", "-Wall", "-Wextra", "-Werror"])
            .args(args)
            .arg(&include)
            .output()
        {
            Ok(out) => out,
            Err(e) => {
                eprintln!("SKIPPED ({compiler}): not installed ({e})");
                continue;
            }
        };
        assert!(
            out.status.success(),
            "{compiler}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(abi_functions().len(), 24, "{:?}", abi_functions());
}

#[test]
fn tensorrt_missing_bridge_is_a_clear_error_not_a_panic() {
    let err = Bridge::open(Path::new("/nonexistent/libdishcam_trt_bridge.so")).unwrap_err();
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("/nonexistent/libdishcam_trt_bridge.so"),
        "{err}"
    );

    // Through the CLI: `--backend tensorrt` parses, and says where it looked and what to do.
    let home = tempfile::tempdir().unwrap();
    let model = home.path().join("m.onnx");
    std::fs::write(&model, gemm_model("m")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dishcam"))
        .args([
            "models",
            "verify",
            model.to_str().unwrap(),
            "--backend",
            "tensorrt",
        ])
        .env("DISHCAM_HOME", home.path())
        .env("DISHCAM_TRT_BRIDGE", "/nonexistent/bridge.so")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("TensorRT bridge not found at /nonexistent/bridge.so")
            && stderr.contains("build with --features tensorrt on a machine with TensorRT"),
        "{stderr}"
    );
}

#[test]
fn tensorrt_bridge_with_another_abi_version_is_refused() {
    let lib = mock!("abi999", &["MOCK_ABI_VERSION=999"]);
    let err = Bridge::open(&lib).unwrap_err().to_string();
    assert!(err.contains("speaks bridge ABI 999"), "{err}");
    assert!(err.contains("needs ABI 1"), "{err}");
}

#[test]
fn tensorrt_bridge_missing_a_function_is_refused() {
    let lib = mock!("no-enqueue", &["MOCK_OMIT_ENQUEUE"]);
    let err = Bridge::open(&lib).unwrap_err().to_string();
    assert!(err.contains("dishcam_trt_enqueue is missing"), "{err}");
    assert!(err.contains("not a dishcam TensorRT bridge"), "{err}");
}

#[test]
fn tensorrt_runs_a_gemm_and_reports_device_timings() {
    let lib = mock!("default");
    let b = open(&lib, TensorRtOptions::default());
    assert_eq!(b.platform().tensorrt_version(), "8.5.2");
    assert_eq!(b.platform().gpu(), "Mock Orin (CPU) sm87");
    let mut s = load(&b, &gemm_model("gemm")).unwrap();
    assert_eq!(s.last_timings(), None);
    // Two batch sizes: the second reallocates the buffers.
    assert_close(&run(&mut s, &X[..4]).unwrap(), &by_hand(&X[..4]));
    assert_close(&run(&mut s, &X).unwrap(), &by_hand(&X));
    let t = s.last_timings().expect("timings after a run");
    use dishcam_runtime::backend::Session;
    assert_eq!(s.device_timings(), Some(t));
    // The mock's events are host clocks around real copies and a real Gemm.
    assert!(
        t.h2d + t.compute + t.d2h > std::time::Duration::ZERO,
        "{t:?}"
    );
}

#[test]
fn tensorrt_binds_inputs_by_name_not_position() {
    let lib = mock!("default");
    let a = TensorSpec::new("a", DType::F32, vec![Dim::fixed(1), Dim::fixed(3)]);
    let m = TensorSpec::new("m", DType::F32, vec![Dim::fixed(3), Dim::fixed(2)]);
    let y = TensorSpec::new("prod", DType::F32, vec![Dim::fixed(1), Dim::fixed(2)]);
    let mut g = GraphBuilder::new("two inputs");
    let ai = g.input(&a);
    let mi = g.input(&m);
    let p = g.node("MatMul", "mm", &[&ai, &mi], &[]);
    g.output(&p, &y);
    let model = encode(&g.finish("by name"));
    let b = open(&lib, TensorRtOptions::default());
    // The manifest lists the inputs in the other order than the graph: binding is by name.
    let mut s = b
        .load_session(
            &spec(&model, &[m.clone(), a.clone()], std::slice::from_ref(&y)),
            &SessionOptions::default(),
        )
        .unwrap();
    use dishcam_runtime::backend::Session;
    let mv = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let av = [1.0, 10.0, 100.0];
    let out = s
        .run(&[
            TensorRef::F32 {
                shape: &[3, 2],
                data: &mv,
            },
            TensorRef::F32 {
                shape: &[1, 3],
                data: &av,
            },
        ])
        .unwrap();
    assert_eq!(out[0].shape, [1, 2]);
    assert_eq!(out[0].as_f32().unwrap(), [531.0, 642.0]);

    // An output the engine does not have is a load error listing what it has.
    let err = b
        .load_session(
            &spec(
                &model,
                &[a.clone(), m.clone()],
                &[TensorSpec::new("product", DType::F32, vec![])],
            ),
            &SessionOptions::default(),
        )
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no output 'product' (it has: prod)"), "{err}");
    // So is a type the engine does not take.
    let ints = TensorSpec::new("a", DType::I64, vec![Dim::fixed(1), Dim::fixed(3)]);
    let err = b
        .load_session(
            &spec(&model, &[ints, m], std::slice::from_ref(&y)),
            &SessionOptions::default(),
        )
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("'a' is i64 in the manifest and f32 in the engine"),
        "{err}"
    );
}

#[test]
fn tensorrt_bridge_errors_carry_the_stage_and_the_bridge_message() {
    let lib = mock!("default");
    let b = open(&lib, TensorRtOptions::default());
    for (stage, load_fails, needle) in [
        (
            "parse",
            true,
            "ONNX parse error: mock parser: failing on request",
        ),
        (
            "build",
            true,
            "build error: mock builder: failing on request",
        ),
        (
            "load",
            true,
            "engine error: mock runtime: failing on request",
        ),
        (
            "shape",
            false,
            "shape error: mock context: failing on request",
        ),
        (
            "enqueue",
            false,
            "internal error: mock enqueueV3: failing on request",
        ),
        (
            "sync",
            false,
            "CUDA error: cudaStreamSynchronize: failing on request",
        ),
    ] {
        let model = gemm_model(&format!("mock-fail:{stage}"));
        let err = match load(&b, &model) {
            Err(e) => {
                assert!(load_fails, "{stage}: load failed: {e}");
                assert!(matches!(e, BackendError::Load { .. }), "{stage}: {e}");
                e
            }
            Ok(mut s) => {
                assert!(!load_fails, "{stage}: load should have failed");
                let e = run(&mut s, &X).unwrap_err();
                assert!(matches!(e, BackendError::Run { .. }), "{stage}: {e}");
                assert_eq!(
                    s.last_timings(),
                    None,
                    "{stage}: no timings for a failed run"
                );
                e
            }
        };
        let text = err.to_string();
        assert!(text.contains(needle), "{stage}: {text}");
        assert!(text.contains("suite.onnx"), "{stage}: {text}");
    }
    let err = load(&b, b"not onnx").err().unwrap().to_string();
    assert!(
        err.contains("ONNX parse error: malformed protobuf"),
        "{err}"
    );
}

#[test]
fn tensorrt_shapes_outside_the_engine_profile_are_refused() {
    let lib = mock!("default");
    let b = open(
        &lib,
        TensorRtOptions {
            default_range: DimRange {
                min: 1,
                opt: 1,
                max: 2,
            },
            ..Default::default()
        },
    );
    let mut s = load(&b, &gemm_model("gemm")).unwrap();
    // A batch of 3 passes the manifest's [batch, 4] but not the engine's profile (1..2).
    let x3: Vec<f32> = X.iter().chain(&X[..4]).copied().collect();
    let err = run(&mut s, &x3).unwrap_err().to_string();
    assert!(
        err.contains("input 'x': dimension 0 is 3, the engine's profile allows 1..2"),
        "{err}"
    );
    // A wrong row width never reaches the bridge.
    use dishcam_runtime::backend::Session;
    let err = s
        .run(&[TensorRef::F32 {
            shape: &[1, 8],
            data: &X,
        }])
        .unwrap_err();
    assert!(matches!(err, BackendError::InputShape { .. }), "{err}");
    // The session still works after both errors.
    assert_close(&run(&mut s, &X).unwrap(), &by_hand(&X));
}

#[test]
fn tensorrt_device_buffers_and_engines_are_freed_on_drop() {
    // A library of its own, so no other test's allocations share these counters.
    let lib = mock!("lifetimes");
    let counters = Counters::new(&lib);
    let b = open(&lib, TensorRtOptions::default());
    let mut s = load(&b, &gemm_model("gemm")).unwrap();
    assert_eq!(counters.live(1), 1, "one engine");
    assert_eq!(
        counters.live(2),
        0,
        "the builder is destroyed after building"
    );
    assert_eq!(
        counters.live(0),
        0,
        "buffers are allocated on the first run"
    );
    run(&mut s, &X[..4]).unwrap();
    assert_eq!(counters.live(0), 2, "one buffer per I/O tensor");
    run(&mut s, &X).unwrap();
    assert_eq!(
        counters.live(0),
        2,
        "growing replaces buffers, it does not leak them"
    );
    let mut s2 = load(&b, &gemm_model("gemm")).unwrap();
    run(&mut s2, &X).unwrap();
    assert_eq!((counters.live(0), counters.live(1)), (4, 2));
    drop(s);
    assert_eq!((counters.live(0), counters.live(1)), (2, 1));
    // The second session's buffers are intact (the mock refuses copies into freed memory).
    assert_close(&run(&mut s2, &X).unwrap(), &by_hand(&X));
    drop(s2);
    assert_eq!(
        (counters.live(0), counters.live(1), counters.live(2)),
        (0, 0, 0)
    );
    // A failed build destroys its builder too.
    assert!(load(&b, &gemm_model("mock-fail:build")).is_err());
    assert_eq!(counters.live(2), 0);
}

#[test]
fn tensorrt_engine_cache_builds_once_then_loads_and_rebuilds_stale_engines() {
    let lib = mock!("default");
    let dir = tempfile::tempdir().unwrap();
    let b = open(
        &lib,
        TensorRtOptions {
            cache_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    );
    let model = gemm_model("gemm");
    let req = BuildRequest {
        precision: EnginePrecision::Fp16,
        device: EngineDevice::Gpu(0),
        workspace_bytes: 1 << 20,
        calibration_cache: None,
        profiles: x_profile(),
    };
    let key = b.key("gemm", &model, &req, 1);
    let cache_dir = Some(dir.path());
    let (first, outcome) = b.ensure_engine(cache_dir, &key, &model, &req).unwrap();
    assert_eq!(outcome, EngineOutcome::Built);
    let path = dir.path().join(key.file_name());
    assert!(path.is_file());
    let (again, outcome) = b.ensure_engine(cache_dir, &key, &model, &req).unwrap();
    assert_eq!(outcome, EngineOutcome::Cached);
    assert!(again == first, "the cached engine is the one built");
    // An engine from another TensorRT under this name is rebuilt, not loaded.
    let mut foreign = key.clone();
    foreign.tensorrt = "8.6.2".into();
    std::fs::write(&path, cache::encode(&foreign, b"an 8.6 plan")).unwrap();
    let (rebuilt, outcome) = b.ensure_engine(cache_dir, &key, &model, &req).unwrap();
    match outcome {
        EngineOutcome::Rebuilt(why) => assert!(
            why.contains("TensorRT: built for 8.6.2, wanted 8.5.2"),
            "{why}"
        ),
        o => panic!("{o:?}"),
    }
    // (Builds need not be byte-identical: TensorRT's are not. The cache now holds the new one.)
    assert!(
        cache::lookup(dir.path(), &key) == Lookup::Fresh(rebuilt),
        "the rebuilt engine is cached"
    );

    // Sessions go through the same cache: the second load of a model finds its engine.
    let _s = load(&b, &model).unwrap();
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, 2, "the fp16 engine and the session's fp32 one");
    let mtime = |p: &PathBuf| std::fs::metadata(p).unwrap().modified().unwrap();
    let engines: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let before: Vec<_> = engines.iter().map(mtime).collect();
    let _s = load(&b, &model).unwrap();
    assert_eq!(engines.iter().map(mtime).collect::<Vec<_>>(), before);
}

#[test]
fn tensorrt_int8_builds_need_qdq_or_a_calibration_cache() {
    let lib = mock!("default");
    let b = open(&lib, TensorRtOptions::default());
    let model = gemm_model("gemm");
    let mut req = BuildRequest {
        precision: EnginePrecision::Int8Qdq,
        device: EngineDevice::Gpu(0),
        workspace_bytes: 0,
        calibration_cache: None,
        profiles: x_profile(),
    };
    // The mock, like TensorRT, cannot make INT8 from a float graph without scales.
    let err = b.bridge().build(&model, &req).unwrap_err().0;
    assert!(
        err.contains("no Q/DQ nodes and no calibration cache"),
        "{err}"
    );
    req.precision = EnginePrecision::Int8Calibrated;
    let err = b.bridge().build(&model, &req).unwrap_err().0;
    assert!(err.contains("needs a calibration cache"), "{err}");
    let cache = b"TRT-8502-EntropyCalibration2\nx: 3c010204\n";
    req.calibration_cache = Some(cache);
    assert!(b.bridge().build(&model, &req).is_ok());
    req.calibration_cache = Some(b"not a cache");
    let err = b.bridge().build(&model, &req).unwrap_err().0;
    assert!(
        err.contains("invalid argument: not a TensorRT calibration cache"),
        "{err}"
    );

    // TensorRT 10.3: the bridge refuses calibration caches.
    let lib = mock!(
        "trt10",
        &["MOCK_TRT_MAJOR=10", "MOCK_TRT_MINOR=3", "MOCK_TRT_PATCH=0"]
    );
    let b10 = open(&lib, TensorRtOptions::default());
    assert!(!b10.platform().implicit_int8());
    req.calibration_cache = Some(cache);
    let err = b10.bridge().build(&model, &req).unwrap_err().0;
    assert!(err.contains("unsupported: implicit INT8"), "{err}");
}

#[test]
fn tensorrt_every_bridge_function_is_exercised() {
    let lib = mock!("coverage");
    let counters = Counters::new(&lib);
    let dir = tempfile::tempdir().unwrap();
    let b = open(
        &lib,
        TensorRtOptions {
            cache_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    );
    let mut s = load(&b, &gemm_model("gemm")).unwrap();
    assert_close(&run(&mut s, &X).unwrap(), &by_hand(&X));
    drop(s);
    let req = BuildRequest {
        precision: EnginePrecision::Int8Calibrated,
        device: EngineDevice::Gpu(0),
        workspace_bytes: 0,
        calibration_cache: Some(b"TRT-8502-EntropyCalibration2\nx: 3c010204\n"),
        profiles: x_profile(),
    };
    b.bridge().build(&gemm_model("gemm"), &req).unwrap();
    assert!(load(&b, &gemm_model("mock-fail:build")).is_err());
    let missing: Vec<String> = abi_functions()
        .into_iter()
        .filter(|f| counters.calls(f) <= 0)
        .collect();
    assert!(missing.is_empty(), "never called: {missing:?}");
}

/// `dishcam` with the mock bridge and a private home, on the installed lite pack.
fn cli(lib: &Path, home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let pack = common::lite_pack().dir;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dishcam"));
    cmd.args([
        "models",
        "build-engine",
        "--pack",
        pack.to_str().unwrap(),
        "--json",
    ])
    .args(args)
    .env("DISHCAM_HOME", home)
    .env("DISHCAM_TRT_BRIDGE", lib)
    .env("DISHCAM_LOG", "error");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn cli_json(lib: &Path, home: &Path, env: &[(&str, &str)], args: &[&str]) -> serde_json::Value {
    let o = cli(lib, home, env, args);
    assert!(
        o.status.success(),
        "build-engine {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn tensorrt_build_engine_caches_by_key_and_rebuilds_stale_engines() {
    let lib = mock!("default");
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let int8 = ["--precision", "int8"];

    let first = cli_json(&lib, h, &[], &int8);
    assert_eq!(first["outcome"], "built");
    let path = PathBuf::from(first["path"].as_str().unwrap());
    assert_eq!(path.parent().unwrap(), h.join("cache/tensorrt"));
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    for part in [
        "int8-qdq",
        "gpu0",
        "trt8.5.2",
        "mock-orin-cpu-sm87",
        "-b1-",
        "abi1",
    ] {
        assert!(name.contains(part), "{name} lacks {part}");
    }
    assert!(first["source"]
        .as_str()
        .unwrap()
        .ends_with("image_encoder.int8-trt.onnx"));
    assert_eq!(first["tensors"][0]["name"], "pixels");

    let again = cli_json(&lib, h, &[], &int8);
    assert_eq!(
        (&again["outcome"], &again["path"]),
        (&"cached".into(), &first["path"])
    );

    // Another TensorRT: another engine, and the first one stays.
    let newer = cli_json(&lib, h, &[("DISHCAM_TRT_MOCK_VERSION", "8.6.2")], &int8);
    assert_eq!(newer["outcome"], "built");
    assert!(newer["path"].as_str().unwrap().contains("trt8.6.2"));
    assert!(path.is_file());
    // An 8.6.2 engine copied under the 8.5.2 name is foreign: rebuilt, not loaded.
    std::fs::copy(newer["path"].as_str().unwrap(), &path).unwrap();
    let rebuilt = cli_json(&lib, h, &[], &int8);
    assert_eq!(rebuilt["outcome"], "rebuilt");
    assert!(
        rebuilt["reason"]
            .as_str()
            .unwrap()
            .contains("TensorRT: built for 8.6.2, wanted 8.5.2"),
        "{rebuilt}"
    );
    // Another GPU is another key too.
    let other = cli_json(&lib, h, &[("DISHCAM_TRT_MOCK_DEVICE", "Xavier")], &int8);
    assert!(
        other["path"].as_str().unwrap().contains("xavier-sm87"),
        "{other}"
    );
    // --force rebuilds a fresh engine.
    let forced = cli_json(&lib, h, &[], &["--precision", "int8", "--force"]);
    assert_eq!(
        (&forced["outcome"], &forced["reason"]),
        (&"built".into(), &"--force".into())
    );
}

#[test]
fn tensorrt_build_engine_takes_calibration_caches_only_before_10_1() {
    let lib = mock!("default");
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let calib = ["--precision", "int8", "--int8-from", "calibration-cache"];
    let built = cli_json(&lib, h, &[], &calib);
    assert_eq!(built["key"]["precision"], "int8-calib");
    assert!(built["key"]["calibration_sha256"].is_string());
    assert!(
        built["source"]
            .as_str()
            .unwrap()
            .ends_with("image_encoder.onnx"),
        "{built}"
    );
    assert!(built["path"].as_str().unwrap().contains("-int8-calib-"));

    let o = cli(&lib, h, &[("DISHCAM_TRT_MOCK_VERSION", "10.3.0")], &calib);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("needs TensorRT < 10.1, this is 10.3.0"),
        "{err}"
    );
    // auto picks the Q/DQ model on 10.3.
    let auto = cli_json(
        &lib,
        h,
        &[("DISHCAM_TRT_MOCK_VERSION", "10.3.0")],
        &["--precision", "int8"],
    );
    assert_eq!(auto["key"]["precision"], "int8-qdq");
}

#[test]
fn tensorrt_build_engine_for_dla_fp16_and_the_text_encoder() {
    let lib = mock!("default");
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let o = cli(&lib, h, &[], &["--precision", "fp16", "--dla", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("DLA core 0 requested, but Mock Orin (CPU) has 0 DLA core(s)"),
        "{err}"
    );
    let dla = cli_json(
        &lib,
        h,
        &[("DISHCAM_TRT_MOCK_DLA_CORES", "2")],
        &["--precision", "fp16", "--dla", "1"],
    );
    assert!(
        dla["path"].as_str().unwrap().contains("-fp16-dla1-"),
        "{dla}"
    );
    let text = cli_json(
        &lib,
        h,
        &[],
        &["--precision", "fp16", "--encoder", "text", "--batch", "4"],
    );
    let name = text["path"].as_str().unwrap();
    assert!(
        name.contains("text_encoder-") && name.contains("-b4-"),
        "{name}"
    );
    assert!(
        text["key"]["profile"]
            .as_str()
            .unwrap()
            .contains("input_ids:1x1/4x256/4x256"),
        "{text}"
    );
}

#[test]
fn tensorrt_encoders_take_the_packs_tensorrt_qdq_model_and_make_fp16_from_fp32() {
    let lib = mock!("default");
    let pack = common::lite_pack();
    let dir = tempfile::tempdir().unwrap();
    let b = open(
        &lib,
        TensorRtOptions {
            cache_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    );
    let engines = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    for precision in [Precision::Int8, Precision::Fp16] {
        let opts = dishcam_runtime::LoadOptions {
            precision,
            ..Default::default()
        };
        // The mock cannot execute EfficientNet, but building, loading and binding the encoder's
        // input and outputs by name must work.
        dishcam_runtime::ImageEncoder::load(&pack, &b, &opts, &["logits"])
            .unwrap_or_else(|e| panic!("{precision}: {e}"));
    }
    let names = engines();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names[0].starts_with("image_encoder-") && names[0].contains("-fp16-gpu0-"),
        "{names:?}"
    );
    assert!(
        names[1].starts_with("image_encoder_int8_trt-") && names[1].contains("-int8-qdq-gpu0-"),
        "{names:?}"
    );
}

//! TensorRT engines for a pack's encoders (`dishcam models build-engine`): the variant to
//! build from (fp32, or int8 from the Q/DQ model or the calibration cache), the input profiles,
//! the engine cache under a name that holds everything that changes an engine, and a test load.

use std::path::Path;

use dishcam_models::manifest::Precision;
use dishcam_models::{Home, Pack, PackError};
use dishcam_runtime::backend::tensorrt::cache::{EngineDevice, EnginePrecision};
use dishcam_runtime::backend::tensorrt::{
    batch_range, engine_cache_dir, input_profiles, plan_int8, Bridge, BuildRequest, DimRange,
    EngineOutcome, Int8Source, PlatformInfo, TensorRtBackend, TensorRtOptions,
};
use dishcam_runtime::backend::BackendError;
use serde_json::json;

/// Why no engine was built: each names the pack, encoder or file and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error("{field}: {message}")]
    Cache { field: String, message: String },
    #[error("{}: {message}", path.display())]
    Engine {
        path: std::path::PathBuf,
        message: String,
    },
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// What `dishcam models build-engine` asks for.
#[derive(Debug, Clone)]
pub struct EngineRequest {
    pub precision: Precision,
    pub device: EngineDevice,
    /// The text encoder rather than the image encoder.
    pub text: bool,
    /// Largest batch the engine accepts (its profile is 1..N, optimised for N).
    pub batch: usize,
    pub int8_from: Int8Source,
    /// Builder workspace limit in bytes (0: TensorRT's default).
    pub workspace_bytes: u64,
    /// Rebuild even when the cache has a fresh engine.
    pub force: bool,
}

/// TensorRT's own version code, as calibration cache headers carry it (8601, 100300).
fn trt_version_code(p: &PlatformInfo) -> u32 {
    let (a, b, c) = p.tensorrt;
    if a >= 10 {
        a * 10000 + b * 100 + c
    } else {
        a * 1000 + b * 100 + c
    }
}

/// Builds (or finds in the cache) the TensorRT engine of one encoder of `pack`, and loads it
/// once; returns what `models build-engine --json` prints (schema `dishcam.build-engine/1`).
pub fn build_engine(
    pack: &Pack,
    home: &Home,
    args: &EngineRequest,
) -> Result<serde_json::Value, EngineError> {
    let m = &pack.manifest;
    let (part, variants, inputs, max_length) = if args.text {
        let t = m.text_encoder.as_ref().ok_or_else(|| {
            EngineError::Invalid(format!("pack '{}' has no text encoder", m.name))
        })?;
        ("text_encoder", &t.variants, t.inputs.clone(), t.max_length)
    } else {
        let e = m.image_encoder.as_ref().ok_or_else(|| {
            EngineError::Invalid(format!("pack '{}' has no image encoder", m.name))
        })?;
        ("image_encoder", &e.variants, vec![e.input.clone()], 0)
    };
    if args.batch < 1 {
        return Err(EngineError::Invalid("--batch must be at least 1".into()));
    }
    let bridge = Bridge::find()?;
    let backend = TensorRtBackend::new(
        bridge,
        TensorRtOptions {
            device: args.device,
            ..Default::default()
        },
    )?;
    let platform = backend.platform().clone();
    if let EngineDevice::Dla(core) = args.device {
        if core >= platform.dla_cores {
            return Err(EngineError::Invalid(format!(
                "DLA core {core} requested, but {} has {} DLA core(s); leave out --dla to build for the GPU",
                platform.device_name, platform.dla_cores
            )));
        }
    }
    let fp32 = variants.get(&Precision::Fp32).ok_or_else(|| {
        EngineError::Invalid(format!("pack '{}': the {part} has no fp32 variant", m.name))
    })?;
    let int8 = variants.get(&Precision::Int8);
    let (precision, field, file, cache) = match args.precision {
        Precision::Fp32 => (
            EnginePrecision::Fp32,
            format!("{part}.variants.fp32"),
            &fp32.onnx,
            None,
        ),
        Precision::Fp16 => (
            EnginePrecision::Fp16,
            format!("{part}.variants.fp32"),
            &fp32.onnx,
            None,
        ),
        Precision::Int8 => {
            let qdq = int8.and_then(|v| v.artefacts.get("tensorrt_onnx"));
            let cache = int8.and_then(|v| v.artefacts.get("tensorrt_cache"));
            let plan = plan_int8(args.int8_from, qdq.is_some(), cache.is_some(), &platform)
                .map_err(|e| EngineError::Invalid(format!("pack '{}', {part}: {e}", m.name)))?;
            match plan {
                EnginePrecision::Int8Qdq => (
                    plan,
                    format!("{part}.variants.int8.artefacts.tensorrt_onnx"),
                    qdq.expect("planned from it"),
                    None,
                ),
                _ => (plan, format!("{part}.variants.fp32"), &fp32.onnx, cache),
            }
        }
    };
    let onnx = pack.read_verified(&field, file)?;
    let cache_bytes =
        match cache {
            Some(f) => {
                let field = format!("{part}.variants.int8.artefacts.tensorrt_cache");
                let text = String::from_utf8(pack.read_verified(&field, f)?).map_err(|_| {
                    EngineError::Cache {
                        field: field.clone(),
                        message: "not text".into(),
                    }
                })?;
                let mut c = dishcam_calibration::trt_cache::CalibrationCache::parse(&text)
                    .map_err(|e| EngineError::Cache {
                        field: field.clone(),
                        message: format!("{}: {e}", f.file),
                    })?;
                // The scales do not depend on the TensorRT version; the header names the one
                // that reads it.
                let code = trt_version_code(&platform);
                if c.version != code {
                    log::info!("{field}: header version {} rewritten as {code}", c.version);
                    c.version = code;
                }
                Some(c.to_text().into_bytes())
            }
            None => None,
        };
    let ranges: Vec<(&str, DimRange)> = vec![
        ("batch", batch_range(args.batch)),
        (
            "sequence",
            DimRange {
                min: 1,
                opt: max_length.max(1),
                max: max_length.max(1),
            },
        ),
    ];
    let profiles = input_profiles(&inputs, &[], &ranges, batch_range(args.batch));
    let req = BuildRequest {
        precision,
        device: args.device,
        workspace_bytes: args.workspace_bytes,
        calibration_cache: cache_bytes.as_deref(),
        profiles,
    };
    let stem = Path::new(&file.file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| part.to_string());
    let key = backend.key(&stem, &onnx, &req, args.batch);
    let dir = engine_cache_dir(home);
    let path = dir.join(key.file_name());
    if args.force {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(EngineError::Engine {
                    path: path.clone(),
                    message: format!("cannot remove ({e})"),
                })
            }
        }
    }
    let (engine, outcome) = backend
        .ensure_engine(Some(&dir), &key, &onnx, &req)
        .map_err(|e| EngineError::Engine {
            path: pack.path(file),
            message: format!("TensorRT could not build an engine: {e}"),
        })?;
    // Load it once: an engine that does not deserialise here is no use in the cache.
    let loaded = backend
        .bridge()
        .load_engine(&engine, args.device)
        .and_then(|e| e.io())
        .map_err(|e| EngineError::Engine {
            path: path.clone(),
            message: format!("the engine does not load: {e}"),
        })?;
    let (outcome, reason) = match outcome {
        EngineOutcome::Cached => ("cached", None),
        EngineOutcome::Built if args.force => ("built", Some("--force".to_string())),
        EngineOutcome::Built => ("built", None),
        EngineOutcome::Rebuilt(why) => ("rebuilt", Some(why)),
    };
    Ok(json!({
        "schema": "dishcam.build-engine/1",
        "pack": m.name,
        "encoder": part,
        "source": show(&pack.path(file)),
        "path": show(&path),
        "outcome": outcome,
        "reason": reason,
        "device": args.device.to_string(),
        "bridge": show(backend.bridge().path()),
        "key": key,
        "tensors": loaded.iter().map(|t| json!({
            "io": if t.is_input { "input" } else { "output" },
            "name": t.name,
            "dtype": t.dtype_name(),
            "dims": t.dims,
        })).collect::<Vec<_>>(),
    }))
}

//! The TensorRT backend. TensorRT has no C API, so a small C++ bridge
//! (`tensorrt-bridge/`, ABI in `include/dishcam_trt.h`) is compiled on machines that have
//! TensorRT and opened here at run time with `libloading`: this module always compiles, and
//! without the library the backend reports where it looked.
//!
//! Loading a model builds an engine from its ONNX (or takes it from the engine cache, see
//! [`cache`]), binds inputs and outputs by tensor name, and owns one device buffer per I/O
//! tensor (freed on drop). Every run records the host-to-device, compute and device-to-host
//! times with CUDA events ([`TensorRtSession::last_timings`]).

pub mod cache;
mod ffi;

use std::ffi::{c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dishcam_models::manifest::{DType, Dim, TensorSpec};
use dishcam_models::pack::Home;
use dishcam_models::Precision;
use sha2::{Digest, Sha256};

use self::cache::{EngineDevice, EngineKey, EnginePrecision, Lookup};
use super::{
    Backend, BackendError, BackendKind, DeviceTimings, ModelSpec, Session, SessionOptions,
};
use crate::tensor::{Tensor, TensorData, TensorRef};

/// What the bridge (or the engine cache) reported: TensorRT's and CUDA's own words, with the
/// status or the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BridgeError(pub String);

impl From<String> for BridgeError {
    fn from(s: String) -> Self {
        BridgeError(s)
    }
}

impl From<&str> for BridgeError {
    fn from(s: &str) -> Self {
        BridgeError(s.to_string())
    }
}

impl From<BridgeError> for String {
    fn from(e: BridgeError) -> String {
        e.0
    }
}

/// File name of the bridge library.
pub const LIBRARY_NAME: &str = "libdishcam_trt_bridge.so";

/// The environment variable naming the bridge library.
pub const LIBRARY_ENV: &str = "DISHCAM_TRT_BRIDGE";

/// Where the bridge is looked for, in order: `$DISHCAM_TRT_BRIDGE`; next to the running
/// executable (where `cargo build --features tensorrt` puts it, and where to install it);
/// the library this build compiled (with `--features tensorrt`).
pub fn library_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os(LIBRARY_ENV).filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join(LIBRARY_NAME));
        // Test and bench binaries live one level down, in target/<profile>/deps.
        if dir.ends_with("deps") {
            if let Some(up) = dir.parent() {
                out.push(up.join(LIBRARY_NAME));
            }
        }
    }
    if let Some(p) = dishcam_tensorrt_bridge::BUILT_LIBRARY {
        out.push(PathBuf::from(p));
    }
    out
}

fn unavailable(why: String) -> BackendError {
    BackendError::Unavailable {
        backend: "tensorrt".into(),
        why,
    }
}

/// The device and TensorRT the bridge runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformInfo {
    /// `(major, minor, patch)`.
    pub tensorrt: (u32, u32, u32),
    /// CUDA runtime version as CUDA encodes it (11040 = 11.4); 0 when unknown.
    pub cuda_runtime: u32,
    pub compute_capability: (u32, u32),
    pub dla_cores: u32,
    pub device_name: String,
}

impl PlatformInfo {
    pub fn tensorrt_version(&self) -> String {
        let (a, b, c) = self.tensorrt;
        format!("{a}.{b}.{c}")
    }

    /// The GPU or SoC as engine keys name it: device name and compute capability.
    pub fn gpu(&self) -> String {
        let (a, b) = self.compute_capability;
        format!("{} sm{a}{b}", self.device_name)
    }

    /// Whether implicit INT8 (a calibration cache) is usable: TensorRT before 10.1 (deprecated
    /// in 10.1, removed in 11).
    pub fn implicit_int8(&self) -> bool {
        (self.tensorrt.0, self.tensorrt.1) < (10, 1)
    }
}

/// Where an INT8 engine gets its scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Source {
    /// The Q/DQ model when the pack has one, else the calibration cache where TensorRT still
    /// takes it.
    Auto,
    /// Explicit INT8 from the pack's TensorRT Q/DQ model (`tensorrt_onnx`).
    Qdq,
    /// Implicit INT8: the fp32 model plus the pack's calibration cache (`tensorrt_cache`),
    /// TensorRT < 10.1 only.
    CalibrationCache,
}

impl std::str::FromStr for Int8Source {
    type Err = dishcam_models::ParseError;
    fn from_str(s: &str) -> Result<Self, dishcam_models::ParseError> {
        match s {
            "auto" => Ok(Int8Source::Auto),
            "qdq" => Ok(Int8Source::Qdq),
            "calibration-cache" | "cache" => Ok(Int8Source::CalibrationCache),
            other => Err(dishcam_models::ParseError(format!(
                "unknown INT8 source '{other}' (expected auto, qdq or calibration-cache)"
            ))),
        }
    }
}

/// Picks how to build an INT8 engine from what the pack has (`has_qdq`: a TensorRT Q/DQ model,
/// `has_cache`: a calibration cache) and what TensorRT `platform` runs.
pub fn plan_int8(
    source: Int8Source,
    has_qdq: bool,
    has_cache: bool,
    platform: &PlatformInfo,
) -> Result<EnginePrecision, BridgeError> {
    let implicit = platform.implicit_int8();
    let no_qdq = "the pack's int8 variant has no TensorRT Q/DQ model (artefact tensorrt_onnx); run `dishcam calibrate` to write one";
    let no_cache = "the pack's int8 variant has no TensorRT calibration cache (artefact tensorrt_cache); run `dishcam calibrate` to write one";
    let too_new = || {
        format!(
            "implicit INT8 from a calibration cache needs TensorRT < 10.1, this is {}; use the Q/DQ model (--int8-from qdq)",
            platform.tensorrt_version()
        )
    };
    match source {
        Int8Source::Qdq if has_qdq => Ok(EnginePrecision::Int8Qdq),
        Int8Source::Qdq => Err(no_qdq.into()),
        Int8Source::CalibrationCache if !implicit => Err(too_new().into()),
        Int8Source::CalibrationCache if has_cache => Ok(EnginePrecision::Int8Calibrated),
        Int8Source::CalibrationCache => Err(no_cache.into()),
        Int8Source::Auto if has_qdq => Ok(EnginePrecision::Int8Qdq),
        Int8Source::Auto if has_cache && implicit => Ok(EnginePrecision::Int8Calibrated),
        Int8Source::Auto if has_cache => Err(format!(
            "{no_qdq}; its calibration cache cannot be used: {}",
            too_new()
        )
        .into()),
        Int8Source::Auto => Err(no_qdq.into()),
    }
}

/// The opened bridge library.
pub struct Bridge {
    api: ffi::Api,
    path: PathBuf,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("path", &self.path).finish()
    }
}

/// The range one dimension of an input may take in the engine's optimisation profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DimRange {
    pub min: usize,
    pub opt: usize,
    pub max: usize,
}

/// An input's profile: per dimension min / opt / max.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProfile {
    pub name: String,
    pub min: Vec<i64>,
    pub opt: Vec<i64>,
    pub max: Vec<i64>,
}

/// Profiles for `inputs`: fixed dimensions as they are, named ones from `fixed` (one size),
/// else from `ranges`, else `default`. Inputs without a named dimension need no profile.
pub fn input_profiles(
    inputs: &[TensorSpec],
    fixed: &[(&str, usize)],
    ranges: &[(&str, DimRange)],
    default: DimRange,
) -> Vec<InputProfile> {
    let mut out = Vec::new();
    for input in inputs {
        if input.shape.iter().all(|d| matches!(d, Dim::Fixed(_))) {
            continue;
        }
        let mut p = InputProfile {
            name: input.name.clone(),
            min: vec![],
            opt: vec![],
            max: vec![],
        };
        for d in &input.shape {
            let r = match d {
                Dim::Fixed(v) => DimRange {
                    min: *v as usize,
                    opt: *v as usize,
                    max: *v as usize,
                },
                Dim::Named(n) => match fixed.iter().find(|(name, _)| name == n) {
                    Some((_, v)) => DimRange {
                        min: *v,
                        opt: *v,
                        max: *v,
                    },
                    None => ranges
                        .iter()
                        .find(|(name, _)| name == n)
                        .map(|(_, r)| *r)
                        .unwrap_or(default),
                },
            };
            p.min.push(r.min as i64);
            p.opt.push(r.opt as i64);
            p.max.push(r.max as i64);
        }
        out.push(p);
    }
    out
}

/// The profiles as engine keys record them: `name:min/opt/max` with dimensions joined by
/// `x`, inputs joined by `;`.
pub fn profile_text(profiles: &[InputProfile]) -> String {
    let dims = |d: &[i64]| {
        d.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("x")
    };
    profiles
        .iter()
        .map(|p| {
            format!(
                "{}:{}/{}/{}",
                p.name,
                dims(&p.min),
                dims(&p.opt),
                dims(&p.max)
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    pub precision: EnginePrecision,
    pub device: EngineDevice,
    /// 0: TensorRT's default.
    pub workspace_bytes: u64,
    /// For [`EnginePrecision::Int8Calibrated`].
    pub calibration_cache: Option<&'a [u8]>,
    pub profiles: Vec<InputProfile>,
}

impl BuildRequest<'_> {
    fn cuda_device(&self) -> i32 {
        match self.device {
            EngineDevice::Gpu(i) => i as i32,
            EngineDevice::Dla(_) => 0,
        }
    }

    fn dla_core(&self) -> i32 {
        match self.device {
            EngineDevice::Gpu(_) => -1,
            EngineDevice::Dla(c) => c as i32,
        }
    }
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("tensor name {s:?} contains a NUL byte"))
}

fn dims(shape: &[i64]) -> Result<ffi::Dims, String> {
    ffi::Dims::new(shape)
        .ok_or_else(|| format!("shape {shape:?} has more than {} dimensions", ffi::MAX_DIMS))
}

/// Destroys a builder when dropped.
struct BuilderGuard<'a> {
    api: &'a ffi::Api,
    handle: *mut ffi::BuilderHandle,
}

impl Drop for BuilderGuard<'_> {
    fn drop(&mut self) {
        // Safety: the handle came from builder_create and is destroyed exactly once, here.
        unsafe { (self.api.builder_destroy)(self.handle) }
    }
}

impl Bridge {
    /// Opens the bridge at `path` and checks its ABI version.
    pub fn open(path: &Path) -> Result<Arc<Bridge>, BackendError> {
        let api = ffi::Api::open(path).map_err(|e| {
            unavailable(match e {
                ffi::OpenError::Load(why) => {
                    format!("cannot load the TensorRT bridge {}: {why}", path.display())
                }
                ffi::OpenError::MissingSymbol(name, why) => format!(
                    "{} is not a dishcam TensorRT bridge: {name} is missing ({why})",
                    path.display()
                ),
                ffi::OpenError::AbiMismatch { found, expected } => format!(
                    "{} speaks bridge ABI {found}, this dishcam needs ABI {expected}; rebuild the bridge from this source tree (cargo build --features tensorrt)",
                    path.display()
                ),
            })
        })?;
        Ok(Arc::new(Bridge {
            api,
            path: path.to_path_buf(),
        }))
    }

    /// Opens the first bridge of [`library_candidates`] that exists.
    pub fn find() -> Result<Arc<Bridge>, BackendError> {
        let candidates = library_candidates();
        match candidates.iter().find(|p| p.is_file()) {
            Some(p) => Bridge::open(p),
            None => {
                let looked: Vec<String> =
                    candidates.iter().map(|p| p.display().to_string()).collect();
                Err(unavailable(format!(
                    "TensorRT bridge not found at {}; build with --features tensorrt on a machine with TensorRT (or set {LIBRARY_ENV})",
                    looked.join(", ")
                )))
            }
        }
    }

    /// The library file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ABI version the library reports (equal to the one this build needs, or it would
    /// not have opened).
    pub fn abi_version(&self) -> u32 {
        // Safety: no arguments, returns a constant.
        unsafe { (self.api.abi_version)() }
    }

    /// TensorRT version, device name, compute capability and DLA cores of CUDA `device`.
    pub fn platform(&self, device: u32) -> Result<PlatformInfo, BridgeError> {
        let mut p = ffi::Platform {
            trt_major: 0,
            trt_minor: 0,
            trt_patch: 0,
            cuda_runtime: 0,
            cc_major: 0,
            cc_minor: 0,
            dla_cores: 0,
            device_name: [0; 256],
        };
        // Safety: `p` is a valid, writable Platform.
        self.api
            .check(unsafe { (self.api.platform_info)(device as i32, &mut p) })?;
        p.device_name[255] = 0;
        // Safety: the name is NUL-terminated (forced above) inside the array.
        let name = unsafe { CStr::from_ptr(p.device_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let u = |v: i32| v.max(0) as u32;
        Ok(PlatformInfo {
            tensorrt: (u(p.trt_major), u(p.trt_minor), u(p.trt_patch)),
            cuda_runtime: u(p.cuda_runtime),
            compute_capability: (u(p.cc_major), u(p.cc_minor)),
            dla_cores: u(p.dla_cores),
            device_name: name,
        })
    }

    /// Builds and serialises an engine from ONNX bytes.
    pub fn build(&self, onnx: &[u8], req: &BuildRequest<'_>) -> Result<Vec<u8>, BridgeError> {
        let api = &self.api;
        let mut handle = std::ptr::null_mut();
        // Safety: `handle` is a valid out-pointer.
        api.check(unsafe { (api.builder_create)(req.cuda_device(), &mut handle) })?;
        let b = BuilderGuard { api, handle };
        // Safety: `onnx` is valid for its length; the bridge copies what it keeps.
        api.check(unsafe { (api.builder_parse_onnx)(b.handle, onnx.as_ptr().cast(), onnx.len()) })?;
        let mut flags = 0;
        match req.precision {
            EnginePrecision::Fp32 => {}
            EnginePrecision::Fp16 => flags |= ffi::FLAG_FP16,
            // INT8 with FP16 allowed for the layers left in float.
            EnginePrecision::Int8Qdq | EnginePrecision::Int8Calibrated => {
                flags |= ffi::FLAG_INT8 | ffi::FLAG_FP16
            }
        }
        let config = ffi::BuildConfig {
            flags,
            dla_core: req.dla_core(),
            workspace_bytes: req.workspace_bytes,
        };
        // Safety: `config` is a valid BuildConfig for the duration of the call.
        api.check(unsafe { (api.builder_configure)(b.handle, &config) })?;
        if req.precision == EnginePrecision::Int8Calibrated {
            let cache = req
                .calibration_cache
                .ok_or("implicit INT8 needs a calibration cache, and none was given".to_string())?;
            // Safety: `cache` is valid for its length; the bridge copies it.
            api.check(unsafe {
                (api.builder_set_calibration_cache)(b.handle, cache.as_ptr().cast(), cache.len())
            })?;
        }
        for p in &req.profiles {
            let name = cstring(&p.name)?;
            let (min, opt, max) = (dims(&p.min)?, dims(&p.opt)?, dims(&p.max)?);
            // Safety: all pointers are valid for the duration of the call.
            api.check(unsafe {
                (api.builder_set_input_profile)(b.handle, name.as_ptr(), &min, &opt, &max)
            })?;
        }
        let mut data = std::ptr::null();
        let mut size = 0usize;
        // Safety: valid out-pointers; the returned buffer lives until the builder is destroyed,
        // and is copied before `b` drops.
        api.check(unsafe { (api.builder_build)(b.handle, &mut data, &mut size) })?;
        if data.is_null() {
            return Err("the bridge returned an empty engine".into());
        }
        // Safety: `data` points to `size` bytes owned by the live builder.
        Ok(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size) }.to_vec())
    }

    /// Deserialises an engine (one execution context, one stream).
    pub fn load_engine(
        self: &Arc<Self>,
        engine: &[u8],
        device: EngineDevice,
    ) -> Result<Engine, BridgeError> {
        let (cuda, dla) = match device {
            EngineDevice::Gpu(i) => (i as i32, -1),
            EngineDevice::Dla(c) => (0, c as i32),
        };
        let mut handle = std::ptr::null_mut();
        // Safety: `engine` is valid for its length; `handle` is a valid out-pointer.
        self.api.check(unsafe {
            (self.api.engine_load)(cuda, dla, engine.as_ptr().cast(), engine.len(), &mut handle)
        })?;
        Ok(Engine {
            bridge: self.clone(),
            handle,
            device: cuda,
        })
    }

    /// `device_malloc` of `bytes` on `device`.
    fn malloc(self: &Arc<Self>, device: i32, bytes: usize) -> Result<DeviceBuffer, String> {
        let mut ptr = std::ptr::null_mut();
        // Safety: valid out-pointer.
        self.api
            .check(unsafe { (self.api.device_malloc)(device, bytes, &mut ptr) })?;
        Ok(DeviceBuffer {
            bridge: self.clone(),
            ptr,
            bytes,
        })
    }
}

/// One device allocation, freed on drop.
struct DeviceBuffer {
    bridge: Arc<Bridge>,
    ptr: *mut c_void,
    bytes: usize,
}

// Safety: device memory is not tied to a host thread; the buffer is only used through its owner.
unsafe impl Send for DeviceBuffer {}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // Safety: `ptr` came from device_malloc and is freed exactly once, here.
        unsafe { (self.bridge.api.device_free)(self.ptr) }
    }
}

/// An I/O tensor as the engine declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoTensor {
    pub name: String,
    pub is_input: bool,
    /// `DISHCAM_TRT_*` element type.
    pub dtype: i32,
    /// -1 where the size is set at run time.
    pub dims: Vec<i64>,
}

impl IoTensor {
    /// The element type's name (`f32`, `i64`, ...).
    pub fn dtype_name(&self) -> &'static str {
        dtype_name(self.dtype)
    }
}

/// A deserialised engine with its execution context and stream; destroyed on drop.
pub struct Engine {
    bridge: Arc<Bridge>,
    handle: *mut ffi::EngineHandle,
    device: i32,
}

// Safety: the bridge's engine (TensorRT engine, context, stream) may be used from any thread,
// one at a time; `Engine` is only used through `&mut` or by its owning session.
unsafe impl Send for Engine {}

impl Drop for Engine {
    fn drop(&mut self) {
        // Safety: the handle came from engine_load and is destroyed exactly once, here.
        unsafe { (self.bridge.api.engine_destroy)(self.handle) }
    }
}

impl Engine {
    fn check(&self, status: i32) -> Result<(), String> {
        self.bridge.api.check(status)
    }

    /// The engine's named inputs and outputs.
    pub fn io(&self) -> Result<Vec<IoTensor>, BridgeError> {
        let api = &self.bridge.api;
        let mut n = 0;
        // Safety: valid handle and out-pointer.
        self.check(unsafe { (api.engine_io_count)(self.handle, &mut n) })?;
        let mut out = Vec::new();
        for i in 0..n {
            let mut info = ffi::TensorInfo {
                name: std::ptr::null(),
                is_input: 0,
                dtype: 0,
                dims: ffi::Dims::default(),
            };
            // Safety: valid handle and out-pointer.
            self.check(unsafe { (api.engine_io_info)(self.handle, i, &mut info) })?;
            if info.name.is_null() {
                return Err(format!("I/O tensor {i} has no name").into());
            }
            // Safety: the name is a NUL-terminated string owned by the live engine.
            let name = unsafe { CStr::from_ptr(info.name) }
                .to_string_lossy()
                .into_owned();
            out.push(IoTensor {
                name,
                is_input: info.is_input != 0,
                dtype: info.dtype,
                dims: info.dims.as_slice().to_vec(),
            });
        }
        Ok(out)
    }
}

/// How the backend builds engines for [`Backend::load`].
#[derive(Debug, Clone)]
pub struct TensorRtOptions {
    pub device: EngineDevice,
    /// Build fp32 models with FP16 kernels allowed.
    pub fp16: bool,
    /// Where engines are cached; `None` builds every time.
    pub cache_dir: Option<PathBuf>,
    /// Profile of named dimensions not fixed by the model spec (by name).
    pub ranges: Vec<(String, DimRange)>,
    /// Profile of every other named dimension.
    pub default_range: DimRange,
    pub workspace_bytes: u64,
}

impl Default for TensorRtOptions {
    fn default() -> Self {
        Self {
            device: EngineDevice::Gpu(0),
            fp16: false,
            cache_dir: None,
            ranges: Vec::new(),
            default_range: DimRange {
                min: 1,
                opt: 1,
                max: 32,
            },
            workspace_bytes: 0,
        }
    }
}

/// The TensorRT backend: an opened bridge and the platform it runs on.
pub struct TensorRtBackend {
    bridge: Arc<Bridge>,
    platform: PlatformInfo,
    options: TensorRtOptions,
}

impl TensorRtBackend {
    /// Opens the bridge found by [`library_candidates`], caching engines under
    /// The profile range of a batch dimension for batches up to `n`: 1..n, optimised for n.
    pub fn batch_range(n: usize) -> DimRange {
        DimRange {
            min: 1,
            opt: n,
            max: n,
        }
    }

    /// `$DISHCAM_HOME/cache/tensorrt`.
    pub fn from_env() -> Result<TensorRtBackend, BackendError> {
        let options = TensorRtOptions {
            cache_dir: Home::from_env().ok().map(|h| engine_cache_dir(&h)),
            ..Default::default()
        };
        TensorRtBackend::new(Bridge::find()?, options)
    }

    /// A backend over an opened bridge.
    pub fn new(
        bridge: Arc<Bridge>,
        options: TensorRtOptions,
    ) -> Result<TensorRtBackend, BackendError> {
        let cuda = match options.device {
            EngineDevice::Gpu(i) => i,
            EngineDevice::Dla(_) => 0,
        };
        let platform = bridge
            .platform(cuda)
            .map_err(|e| unavailable(format!("{}: {e}", bridge.path().display())))?;
        Ok(TensorRtBackend {
            bridge,
            platform,
            options,
        })
    }

    pub fn bridge(&self) -> &Arc<Bridge> {
        &self.bridge
    }

    pub fn platform(&self) -> &PlatformInfo {
        &self.platform
    }

    /// The key of the engine `req` builds from `onnx` on this platform; `model` is a short
    /// name for humans (the ONNX file's stem).
    pub fn key(&self, model: &str, onnx: &[u8], req: &BuildRequest<'_>, batch: usize) -> EngineKey {
        EngineKey {
            model: model.to_string(),
            model_sha256: hex::encode(Sha256::digest(onnx)),
            precision: req.precision,
            calibration_sha256: req
                .calibration_cache
                .map(|c| hex::encode(Sha256::digest(c))),
            device: req.device,
            tensorrt: self.platform.tensorrt_version(),
            gpu: self.platform.gpu(),
            batch,
            profile: profile_text(&req.profiles),
            abi: self.bridge.abi_version(),
        }
    }

    /// The engine for `key`: from `cache_dir` when a fresh one is there, else built from
    /// `onnx` and stored (atomically). A stale or foreign cached engine is rebuilt, never
    /// loaded.
    pub fn ensure_engine(
        &self,
        cache_dir: Option<&Path>,
        key: &EngineKey,
        onnx: &[u8],
        req: &BuildRequest<'_>,
    ) -> Result<(Vec<u8>, EngineOutcome), BridgeError> {
        let outcome = match cache_dir.map(|d| cache::lookup(d, key)) {
            Some(Lookup::Fresh(engine)) => return Ok((engine, EngineOutcome::Cached)),
            Some(Lookup::Stale(why)) => EngineOutcome::Rebuilt(why),
            Some(Lookup::Missing) | None => EngineOutcome::Built,
        };
        let engine = self.bridge.build(onnx, req)?;
        if let Some(dir) = cache_dir {
            cache::store(dir, key, &engine).map_err(|e| {
                format!(
                    "{}: cannot write the engine ({e})",
                    dir.join(key.file_name()).display()
                )
            })?;
        }
        Ok((engine, outcome))
    }

    /// [`Backend::load`] with the concrete session type (for its timings).
    pub fn load_session(
        &self,
        spec: &ModelSpec<'_>,
        _options: &SessionOptions,
    ) -> Result<TensorRtSession, BackendError> {
        let model = spec.path.display().to_string();
        let load_err = |reason: String| BackendError::Load {
            model: model.clone(),
            backend: "tensorrt".into(),
            reason,
        };
        let precision = match spec.precision {
            Precision::Fp32 if self.options.fp16 => EnginePrecision::Fp16,
            Precision::Fp32 => EnginePrecision::Fp32,
            Precision::Fp16 => EnginePrecision::Fp16,
            Precision::Int8 => EnginePrecision::Int8Qdq,
        };
        // A fixed batch of n gets the profile `models build-engine --batch n` builds (1..n,
        // optimised for n), so that the two share cached engines.
        let fixed_batch = spec
            .fixed_dims
            .iter()
            .find(|(n, _)| *n == "batch")
            .map(|(_, v)| *v);
        let mut ranges: Vec<(&str, DimRange)> = self
            .options
            .ranges
            .iter()
            .map(|(n, r)| (n.as_str(), *r))
            .collect();
        if let Some(b) = fixed_batch {
            ranges.insert(0, ("batch", batch_range(b)));
        }
        let fixed: Vec<(&str, usize)> = spec
            .fixed_dims
            .iter()
            .filter(|(n, _)| *n != "batch")
            .copied()
            .collect();
        let profiles = input_profiles(spec.inputs, &fixed, &ranges, self.options.default_range);
        let batch = ranges
            .iter()
            .find(|(n, _)| *n == "batch")
            .map(|(_, r)| r.max)
            .unwrap_or(self.options.default_range.max);
        let stem = spec
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let device = self.options.device;
        let req = BuildRequest {
            precision,
            device,
            workspace_bytes: self.options.workspace_bytes,
            calibration_cache: None,
            profiles,
        };
        let key = self.key(&stem, spec.bytes, &req, batch);
        let (bytes, outcome) = self
            .ensure_engine(self.options.cache_dir.as_deref(), &key, spec.bytes, &req)
            .map_err(|e| load_err(e.0))?;
        match &outcome {
            EngineOutcome::Rebuilt(why) => {
                log::info!("{model}: rebuilt the TensorRT engine ({why})")
            }
            EngineOutcome::Built => log::info!("{model}: built a TensorRT engine"),
            EngineOutcome::Cached => log::debug!("{model}: cached TensorRT engine"),
        }
        let engine = self
            .bridge
            .load_engine(&bytes, device)
            .map_err(|e| load_err(e.0))?;
        TensorRtSession::bind(engine, spec).map_err(load_err)
    }
}

/// The profile range of a batch dimension for batches up to `n`: 1..n, optimised for n.
pub fn batch_range(n: usize) -> DimRange {
    DimRange {
        min: 1,
        opt: n,
        max: n,
    }
}

/// `$DISHCAM_HOME/cache/tensorrt`.
pub fn engine_cache_dir(home: &Home) -> PathBuf {
    home.cache().join("tensorrt")
}

/// Where an engine came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineOutcome {
    /// A fresh engine from the cache.
    Cached,
    /// Built: there was none.
    Built,
    /// Built: the cached one was stale or foreign, for this reason.
    Rebuilt(String),
}

impl Backend for TensorRtBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::TensorRt
    }

    fn load(
        &self,
        spec: &ModelSpec<'_>,
        options: &SessionOptions,
    ) -> Result<Box<dyn Session>, BackendError> {
        Ok(Box::new(self.load_session(spec, options)?))
    }
}

/// One I/O tensor of a session: its name, type, device buffer and host staging.
struct Binding {
    name: CString,
    display: String,
    dtype: i32,
    is_input: bool,
    buffer: Option<DeviceBuffer>,
    /// Host bytes for inputs that need converting (i64 -> i32) and for every output.
    host: Vec<u8>,
    shape: Vec<usize>,
}

fn element_size(dtype: i32) -> Option<usize> {
    match dtype {
        ffi::DTYPE_F32 | ffi::DTYPE_I32 => Some(4),
        ffi::DTYPE_I64 => Some(8),
        ffi::DTYPE_F16 => Some(2),
        _ => None,
    }
}

fn dtype_name(dtype: i32) -> &'static str {
    match dtype {
        0 => "f32",
        1 => "f16",
        2 => "i8",
        3 => "i32",
        4 => "bool",
        5 => "u8",
        6 => "i64",
        7 => "bf16",
        _ => "an unknown type",
    }
}

/// A loaded engine bound to a model spec's inputs and outputs by name.
pub struct TensorRtSession {
    model: String,
    /// Every I/O tensor of the engine (TensorRT needs an address for each).
    bindings: Vec<Binding>,
    /// Indices into `bindings`, in `ModelSpec::inputs` / `ModelSpec::outputs` order.
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    input_shapes: Vec<Vec<Option<usize>>>,
    last: Option<DeviceTimings>,
    /// Declared last: dropped after the buffers bound to it.
    engine: Engine,
}

impl TensorRtSession {
    fn bind(engine: Engine, spec: &ModelSpec<'_>) -> Result<TensorRtSession, String> {
        let io = engine.io()?;
        let names = |inputs: bool| {
            io.iter()
                .filter(|t| t.is_input == inputs)
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut bindings = Vec::new();
        for t in &io {
            if element_size(t.dtype).is_none() {
                return Err(format!(
                    "engine tensor '{}' has dtype {}, which this backend does not handle",
                    t.name,
                    dtype_name(t.dtype)
                ));
            }
            bindings.push(Binding {
                name: cstring(&t.name)?,
                display: t.name.clone(),
                dtype: t.dtype,
                is_input: t.is_input,
                buffer: None,
                host: Vec::new(),
                shape: Vec::new(),
            });
        }
        let find = |spec: &TensorSpec, input: bool| -> Result<usize, String> {
            let i = io
                .iter()
                .position(|t| t.is_input == input && t.name == spec.name)
                .ok_or_else(|| {
                    format!(
                        "the engine has no {} '{}' (it has: {})",
                        if input { "input" } else { "output" },
                        spec.name,
                        names(input)
                    )
                })?;
            let ok = match spec.dtype {
                DType::F32 => matches!(io[i].dtype, ffi::DTYPE_F32 | ffi::DTYPE_F16),
                DType::I64 => matches!(io[i].dtype, ffi::DTYPE_I64 | ffi::DTYPE_I32),
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "'{}' is {} in the manifest and {} in the engine",
                    spec.name,
                    spec.dtype,
                    dtype_name(io[i].dtype)
                ));
            }
            Ok(i)
        };
        let inputs = spec
            .inputs
            .iter()
            .map(|s| find(s, true))
            .collect::<Result<Vec<_>, _>>()?;
        if inputs.len() != io.iter().filter(|t| t.is_input).count() {
            return Err(format!(
                "the engine has inputs {}, the manifest names {}",
                names(true),
                spec.inputs.len()
            ));
        }
        for &i in &inputs {
            if io[i].dtype == ffi::DTYPE_F16 {
                return Err(format!(
                    "input '{}' is f16 in the engine; this backend feeds f32 inputs",
                    io[i].name
                ));
            }
        }
        let outputs = spec
            .outputs
            .iter()
            .map(|s| find(s, false))
            .collect::<Result<Vec<_>, _>>()?;
        let input_shapes = spec
            .inputs
            .iter()
            .map(|input| {
                input
                    .shape
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(v) => Some(*v as usize),
                        Dim::Named(n) => spec
                            .fixed_dims
                            .iter()
                            .find(|(name, _)| name == n)
                            .map(|(_, v)| *v),
                    })
                    .collect()
            })
            .collect();
        Ok(TensorRtSession {
            model: spec.path.display().to_string(),
            bindings,
            inputs,
            outputs,
            input_shapes,
            last: None,
            engine,
        })
    }

    /// Host-to-device, compute and device-to-host times of the last successful run.
    pub fn last_timings(&self) -> Option<DeviceTimings> {
        self.last
    }

    /// Makes sure binding `i` has a device buffer of at least `bytes`, and that the engine
    /// has its address.
    fn ensure_buffer(&mut self, i: usize, bytes: usize) -> Result<(), String> {
        let b = &mut self.bindings[i];
        if b.buffer.as_ref().is_none_or(|buf| buf.bytes < bytes) {
            // The old buffer is freed before the new one is allocated: TensorRT never sees
            // the old address again, since the new one is set right below.
            b.buffer = None;
            b.buffer = Some(self.engine.bridge.malloc(self.engine.device, bytes)?);
        }
        let ptr = b.buffer.as_ref().expect("allocated above").ptr;
        // Safety: valid handle, NUL-terminated name, and a live device allocation.
        self.engine.check(unsafe {
            (self.engine.bridge.api.set_tensor_address)(self.engine.handle, b.name.as_ptr(), ptr)
        })
    }

    fn run_inner(&mut self, inputs: &[TensorRef<'_>]) -> Result<Vec<Tensor>, String> {
        let api_engine = self.engine.handle;
        // Input shapes first: output shapes (and buffer sizes) follow from them.
        for (k, input) in inputs.iter().enumerate() {
            let b = &mut self.bindings[self.inputs[k]];
            let shape: Vec<i64> = input.shape().iter().map(|&d| d as i64).collect();
            let d = dims(&shape)?;
            // Safety: valid handle, name and dims.
            self.engine.check(unsafe {
                (self.engine.bridge.api.set_input_shape)(api_engine, b.name.as_ptr(), &d)
            })?;
            b.shape = input.shape().to_vec();
            // Host staging for inputs whose type differs from the caller's.
            b.host.clear();
            match (input, b.dtype) {
                (TensorRef::F32 { .. }, ffi::DTYPE_F32)
                | (TensorRef::I64 { .. }, ffi::DTYPE_I64) => {}
                (TensorRef::I64 { data, .. }, ffi::DTYPE_I32) => {
                    for &v in *data {
                        let v = i32::try_from(v).map_err(|_| {
                            format!("input '{}': {v} does not fit the engine's int32", b.display)
                        })?;
                        b.host.extend_from_slice(&v.to_ne_bytes());
                    }
                }
                (_, dtype) => {
                    return Err(format!(
                        "input '{}' is {} in the engine, and was given {}",
                        b.display,
                        dtype_name(dtype),
                        match input {
                            TensorRef::F32 { .. } => "f32",
                            TensorRef::I64 { .. } => "i64",
                        }
                    ))
                }
            }
        }
        for i in 0..self.bindings.len() {
            let (bytes, shape) = {
                let b = &self.bindings[i];
                if b.is_input {
                    let n: usize = b.shape.iter().product();
                    (
                        n * element_size(b.dtype).expect("checked at bind"),
                        b.shape.clone(),
                    )
                } else {
                    let mut d = ffi::Dims::default();
                    // Safety: valid handle, name and out-pointer.
                    self.engine.check(unsafe {
                        (self.engine.bridge.api.tensor_shape)(api_engine, b.name.as_ptr(), &mut d)
                    })?;
                    let shape = d
                        .as_slice()
                        .iter()
                        .map(|&v| usize::try_from(v))
                        .collect::<Result<Vec<usize>, _>>()
                        .map_err(|_| {
                            format!(
                                "output '{}' has shape {:?} after the inputs were set",
                                b.display,
                                d.as_slice()
                            )
                        })?;
                    let n: usize = shape.iter().product();
                    (n * element_size(b.dtype).expect("checked at bind"), shape)
                }
            };
            self.ensure_buffer(i, bytes)?;
            let b = &mut self.bindings[i];
            b.shape = shape;
            if !b.is_input {
                b.host.resize(bytes, 0);
            }
        }
        let api = &self.engine.bridge.api;
        let check = |s| self.engine.bridge.api.check(s);
        // Safety (every call below): valid handle; host pointers are valid for their lengths
        // until `sync` returns (borrowed inputs and the bindings' staging, untouched until
        // then); device pointers are live allocations of at least the copied size.
        check(unsafe { (api.record)(api_engine, ffi::MARK_START) })?;
        for (k, input) in inputs.iter().enumerate() {
            let b = &self.bindings[self.inputs[k]];
            let dst = b.buffer.as_ref().expect("allocated above").ptr;
            let (src, len): (*const c_void, usize) = if !b.host.is_empty() {
                (b.host.as_ptr().cast(), b.host.len())
            } else {
                match input {
                    TensorRef::F32 { data, .. } => {
                        (data.as_ptr().cast(), std::mem::size_of_val(*data))
                    }
                    TensorRef::I64 { data, .. } => {
                        (data.as_ptr().cast(), std::mem::size_of_val(*data))
                    }
                }
            };
            if len > 0 {
                check(unsafe { (api.copy_to_device)(api_engine, dst, src, len) })?;
            }
        }
        check(unsafe { (api.record)(api_engine, ffi::MARK_UPLOADED) })?;
        check(unsafe { (api.enqueue)(api_engine) })?;
        check(unsafe { (api.record)(api_engine, ffi::MARK_COMPUTED) })?;
        for &i in &self.outputs {
            let b = &self.bindings[i];
            let src = b.buffer.as_ref().expect("allocated above").ptr;
            if !b.host.is_empty() {
                check(unsafe {
                    (api.copy_to_host)(
                        api_engine,
                        b.host.as_ptr() as *mut c_void,
                        src,
                        b.host.len(),
                    )
                })?;
            }
        }
        check(unsafe { (api.record)(api_engine, ffi::MARK_DONE) })?;
        let mut t = ffi::Timings::default();
        check(unsafe { (api.sync)(api_engine, &mut t) })?;
        let ms = |v: f32| Duration::from_secs_f64(f64::from(v.max(0.0)) / 1e3);
        self.last = Some(DeviceTimings {
            h2d: ms(t.h2d_ms),
            compute: ms(t.compute_ms),
            d2h: ms(t.d2h_ms),
        });
        Ok(self
            .outputs
            .iter()
            .map(|&i| {
                let b = &self.bindings[i];
                let shape = b.shape.clone();
                let data = match b.dtype {
                    ffi::DTYPE_F32 => TensorData::F32(
                        b.host
                            .chunks_exact(4)
                            .map(|c| f32::from_ne_bytes(c.try_into().expect("4 bytes")))
                            .collect(),
                    ),
                    ffi::DTYPE_F16 => TensorData::F32(
                        b.host
                            .chunks_exact(2)
                            .map(|c| f16_to_f32(u16::from_ne_bytes(c.try_into().expect("2 bytes"))))
                            .collect(),
                    ),
                    ffi::DTYPE_I32 => TensorData::I64(
                        b.host
                            .chunks_exact(4)
                            .map(|c| i64::from(i32::from_ne_bytes(c.try_into().expect("4 bytes"))))
                            .collect(),
                    ),
                    _ => TensorData::I64(
                        b.host
                            .chunks_exact(8)
                            .map(|c| i64::from_ne_bytes(c.try_into().expect("8 bytes")))
                            .collect(),
                    ),
                };
                Tensor { shape, data }
            })
            .collect())
    }
}

/// IEEE half to single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f32.powi(exp - 15),
    }
}

impl Session for TensorRtSession {
    fn model_name(&self) -> &str {
        &self.model
    }

    fn run(&mut self, inputs: &[TensorRef<'_>]) -> Result<Vec<Tensor>, BackendError> {
        super::check_inputs(&self.model, inputs, &self.input_shapes)?;
        self.last = None;
        let result = self.run_inner(inputs);
        if result.is_err() {
            // Copies queued before the failure may still read the caller's inputs or write the
            // staging buffers: wait for the stream before returning (its own error, if any, is
            // secondary to the one reported).
            // Safety: valid handle; a null timings pointer is allowed by the ABI.
            unsafe { (self.engine.bridge.api.sync)(self.engine.handle, std::ptr::null_mut()) };
        }
        result.map_err(|reason| BackendError::Run {
            model: self.model.clone(),
            reason,
        })
    }

    fn device_timings(&self) -> Option<DeviceTimings> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensorrt_profiles_take_fixed_named_and_default_ranges() {
        let inputs = [
            TensorSpec::new(
                "input_ids",
                DType::I64,
                vec![Dim::named("batch"), Dim::named("sequence")],
            ),
            TensorSpec::new("scale", DType::F32, vec![Dim::fixed(3)]),
        ];
        let p = input_profiles(
            &inputs,
            &[("batch", 2)],
            &[(
                "sequence",
                DimRange {
                    min: 1,
                    opt: 128,
                    max: 256,
                },
            )],
            DimRange {
                min: 1,
                opt: 1,
                max: 8,
            },
        );
        assert_eq!(
            p,
            [InputProfile {
                name: "input_ids".into(),
                min: vec![2, 1],
                opt: vec![2, 128],
                max: vec![2, 256],
            }]
        );
        let p = input_profiles(
            &inputs[..1],
            &[],
            &[],
            DimRange {
                min: 1,
                opt: 4,
                max: 8,
            },
        );
        assert_eq!(p[0].max, [8, 8]);
        assert_eq!(p[0].opt, [4, 4]);
    }

    #[test]
    fn tensorrt_int8_plan_prefers_qdq_and_uses_caches_only_before_10_1() {
        let mut p = PlatformInfo {
            tensorrt: (8, 5, 2),
            cuda_runtime: 11040,
            compute_capability: (8, 7),
            dla_cores: 0,
            device_name: "Orin".into(),
        };
        use EnginePrecision::*;
        use Int8Source::*;
        assert_eq!(plan_int8(Auto, true, true, &p), Ok(Int8Qdq));
        assert_eq!(plan_int8(Auto, false, true, &p), Ok(Int8Calibrated));
        assert_eq!(
            plan_int8(CalibrationCache, true, true, &p),
            Ok(Int8Calibrated)
        );
        assert!(plan_int8(CalibrationCache, true, false, &p)
            .unwrap_err()
            .0
            .contains("tensorrt_cache"));
        assert!(plan_int8(Qdq, false, true, &p)
            .unwrap_err()
            .0
            .contains("tensorrt_onnx"));
        p.tensorrt = (10, 3, 0);
        assert_eq!(plan_int8(Auto, true, true, &p), Ok(Int8Qdq));
        assert!(plan_int8(Auto, false, true, &p)
            .unwrap_err()
            .0
            .contains("needs TensorRT < 10.1, this is 10.3.0"));
        assert!(plan_int8(CalibrationCache, true, true, &p)
            .unwrap_err()
            .0
            .contains("--int8-from qdq"));
    }

    #[test]
    fn tensorrt_implicit_int8_stops_at_10_1() {
        let mut p = PlatformInfo {
            tensorrt: (8, 5, 2),
            cuda_runtime: 11040,
            compute_capability: (8, 7),
            dla_cores: 2,
            device_name: "Orin".into(),
        };
        assert!(p.implicit_int8());
        assert_eq!(p.gpu(), "Orin sm87");
        p.tensorrt = (10, 0, 1);
        assert!(p.implicit_int8());
        p.tensorrt = (10, 1, 0);
        assert!(!p.implicit_int8());
        p.tensorrt = (11, 0, 0);
        assert!(!p.implicit_int8());
    }

    #[test]
    fn tensorrt_half_floats_convert() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}

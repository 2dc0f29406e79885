//! `tensorrt-bridge/include/dishcam_trt.h` in Rust: its types, and the library opened at run
//! time with every function resolved up front (a missing symbol is a load error, not a crash
//! later).

use std::ffi::{c_char, c_void, CStr};
use std::path::Path;

use libloading::Library;

pub const MAX_DIMS: usize = 8;
pub const OK: i32 = 0;

/// `dishcam_trt_status` codes.
pub fn status_name(code: i32) -> &'static str {
    match code {
        1 => "invalid argument",
        2 => "ONNX parse error",
        3 => "build error",
        4 => "engine error",
        5 => "CUDA error",
        6 => "unsupported",
        7 => "shape error",
        8 => "internal error",
        _ => "unknown status",
    }
}

pub const DTYPE_F32: i32 = 0;
pub const DTYPE_F16: i32 = 1;
pub const DTYPE_I32: i32 = 3;
pub const DTYPE_I64: i32 = 6;

pub const FLAG_FP16: u32 = 1;
pub const FLAG_INT8: u32 = 2;

pub const MARK_START: i32 = 0;
pub const MARK_UPLOADED: i32 = 1;
pub const MARK_COMPUTED: i32 = 2;
pub const MARK_DONE: i32 = 3;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dims {
    pub rank: i32,
    pub d: [i64; MAX_DIMS],
}

impl Dims {
    /// `None` when the shape has more dimensions than the ABI carries.
    pub fn new(shape: &[i64]) -> Option<Dims> {
        if shape.len() > MAX_DIMS {
            return None;
        }
        let mut d = [0; MAX_DIMS];
        d[..shape.len()].copy_from_slice(shape);
        Some(Dims {
            rank: shape.len() as i32,
            d,
        })
    }

    pub fn as_slice(&self) -> &[i64] {
        &self.d[..self.rank.clamp(0, MAX_DIMS as i32) as usize]
    }
}

#[repr(C)]
pub struct Platform {
    pub trt_major: i32,
    pub trt_minor: i32,
    pub trt_patch: i32,
    pub cuda_runtime: i32,
    pub cc_major: i32,
    pub cc_minor: i32,
    pub dla_cores: i32,
    pub device_name: [c_char; 256],
}

#[repr(C)]
pub struct BuildConfig {
    pub flags: u32,
    pub dla_core: i32,
    pub workspace_bytes: u64,
}

#[repr(C)]
pub struct TensorInfo {
    pub name: *const c_char,
    pub is_input: i32,
    pub dtype: i32,
    pub dims: Dims,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub h2d_ms: f32,
    pub compute_ms: f32,
    pub d2h_ms: f32,
}

/// Opaque `dishcam_trt_builder`.
#[repr(C)]
pub struct BuilderHandle {
    _private: [u8; 0],
}

/// Opaque `dishcam_trt_engine`.
#[repr(C)]
pub struct EngineHandle {
    _private: [u8; 0],
}

type B = *mut BuilderHandle;
type E = *mut EngineHandle;

/// The bridge's functions. The pointers stay valid while `_lib` is loaded, which is as long as
/// this value lives.
pub struct Api {
    pub abi_version: unsafe extern "C" fn() -> u32,
    pub last_error: unsafe extern "C" fn() -> *const c_char,
    pub platform_info: unsafe extern "C" fn(i32, *mut Platform) -> i32,
    pub builder_create: unsafe extern "C" fn(i32, *mut B) -> i32,
    pub builder_parse_onnx: unsafe extern "C" fn(B, *const c_void, usize) -> i32,
    pub builder_configure: unsafe extern "C" fn(B, *const BuildConfig) -> i32,
    pub builder_set_calibration_cache: unsafe extern "C" fn(B, *const c_void, usize) -> i32,
    pub builder_set_input_profile:
        unsafe extern "C" fn(B, *const c_char, *const Dims, *const Dims, *const Dims) -> i32,
    pub builder_build: unsafe extern "C" fn(B, *mut *const c_void, *mut usize) -> i32,
    pub builder_destroy: unsafe extern "C" fn(B),
    pub engine_load: unsafe extern "C" fn(i32, i32, *const c_void, usize, *mut E) -> i32,
    pub engine_io_count: unsafe extern "C" fn(E, *mut i32) -> i32,
    pub engine_io_info: unsafe extern "C" fn(E, i32, *mut TensorInfo) -> i32,
    pub set_input_shape: unsafe extern "C" fn(E, *const c_char, *const Dims) -> i32,
    pub tensor_shape: unsafe extern "C" fn(E, *const c_char, *mut Dims) -> i32,
    pub set_tensor_address: unsafe extern "C" fn(E, *const c_char, *mut c_void) -> i32,
    pub record: unsafe extern "C" fn(E, i32) -> i32,
    pub copy_to_device: unsafe extern "C" fn(E, *mut c_void, *const c_void, usize) -> i32,
    pub copy_to_host: unsafe extern "C" fn(E, *mut c_void, *const c_void, usize) -> i32,
    pub enqueue: unsafe extern "C" fn(E) -> i32,
    pub sync: unsafe extern "C" fn(E, *mut Timings) -> i32,
    pub engine_destroy: unsafe extern "C" fn(E),
    pub device_malloc: unsafe extern "C" fn(i32, usize, *mut *mut c_void) -> i32,
    pub device_free: unsafe extern "C" fn(*mut c_void),
    _lib: Library,
}

/// Why the bridge could not be opened.
#[derive(Debug)]
pub enum OpenError {
    Load(String),
    MissingSymbol(&'static str, String),
    AbiMismatch { found: u32, expected: u32 },
}

macro_rules! resolve {
    ($lib:expr, $name:literal) => {{
        // Safety: the symbol's type is the one dishcam_trt.h declares for it (this table is
        // that header transcribed); the copied pointer is used only while `_lib` is loaded.
        match unsafe { $lib.get(concat!("dishcam_trt_", $name)) } {
            Ok(sym) => *sym,
            Err(e) => {
                return Err(OpenError::MissingSymbol(
                    concat!("dishcam_trt_", $name),
                    e.to_string(),
                ))
            }
        }
    }};
}

impl Api {
    /// Opens the library at `path`, checks its ABI version, resolves every function.
    pub fn open(path: &Path) -> Result<Api, OpenError> {
        // Safety: loading runs the library's initialisers. The bridge's are TensorRT's and
        // CUDA's, which are safe to run; the path is the one the user or the build chose.
        let lib = unsafe { Library::new(path) }.map_err(|e| OpenError::Load(e.to_string()))?;
        let abi_version: unsafe extern "C" fn() -> u32 = resolve!(lib, "abi_version");
        // Safety: takes no arguments and returns a constant.
        let found = unsafe { abi_version() };
        let expected = dishcam_tensorrt_bridge::ABI_VERSION;
        if found != expected {
            return Err(OpenError::AbiMismatch { found, expected });
        }
        Ok(Api {
            abi_version,
            last_error: resolve!(lib, "last_error"),
            platform_info: resolve!(lib, "platform_info"),
            builder_create: resolve!(lib, "builder_create"),
            builder_parse_onnx: resolve!(lib, "builder_parse_onnx"),
            builder_configure: resolve!(lib, "builder_configure"),
            builder_set_calibration_cache: resolve!(lib, "builder_set_calibration_cache"),
            builder_set_input_profile: resolve!(lib, "builder_set_input_profile"),
            builder_build: resolve!(lib, "builder_build"),
            builder_destroy: resolve!(lib, "builder_destroy"),
            engine_load: resolve!(lib, "engine_load"),
            engine_io_count: resolve!(lib, "engine_io_count"),
            engine_io_info: resolve!(lib, "engine_io_info"),
            set_input_shape: resolve!(lib, "set_input_shape"),
            tensor_shape: resolve!(lib, "tensor_shape"),
            set_tensor_address: resolve!(lib, "set_tensor_address"),
            record: resolve!(lib, "record"),
            copy_to_device: resolve!(lib, "copy_to_device"),
            copy_to_host: resolve!(lib, "copy_to_host"),
            enqueue: resolve!(lib, "enqueue"),
            sync: resolve!(lib, "sync"),
            engine_destroy: resolve!(lib, "engine_destroy"),
            device_malloc: resolve!(lib, "device_malloc"),
            device_free: resolve!(lib, "device_free"),
            _lib: lib,
        })
    }

    /// Turns a status into `Err("<status name>: <the bridge's message>")`.
    pub fn check(&self, status: i32) -> Result<(), String> {
        if status == OK {
            return Ok(());
        }
        // Safety: last_error returns a NUL-terminated string owned by the bridge, valid until
        // the next bridge call on this thread; it is copied before any other call.
        let msg = unsafe {
            let p = (self.last_error)();
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Err(format!("{}: {msg}", status_name(status)))
    }
}

//! The OpenVINO backend: the `openvino` crate (feature `openvino`, on by default) opens
//! `libopenvino_c` at run time (`runtime-linking`), so nothing is needed to build it. The library
//! comes from `dishcam models pull` (the pinned `openvino` wheel's libraries, extracted into the
//! cache) or from `DISHCAM_OPENVINO_LIB`. It reads the pack's ONNX files itself (its ONNX front
//! end) and runs fp32 and int8 Q/DQ models on the CPU plugin.
//!
//! The paths and the version are here whatever the features, so `models pull` can fetch the
//! library; without the feature, opening the backend says it is not compiled in.

use std::path::PathBuf;

use dishcam_models::pack::Home;

/// OpenVINO version of the pinned wheel.
pub const OPENVINO_VERSION: &str = "2026.4.1";

/// The C library's file name in the wheel (its soname carries the version without dots).
pub const C_LIBRARY: &str = "libopenvino_c.so.2641";

/// The environment variable naming another `libopenvino_c.so` (its directory must hold the
/// rest of that OpenVINO: `libopenvino.so`, the CPU plugin, the ONNX front end, TBB).
pub const LIBRARY_ENV: &str = "DISHCAM_OPENVINO_LIB";

/// Whether this build has the backend (cargo feature `openvino`).
pub const COMPILED: bool = cfg!(feature = "openvino");

/// Where `dishcam models pull` extracts the libraries: `$DISHCAM_HOME/cache/openvino/<version>/`.
pub fn library_dir(home: &Home) -> PathBuf {
    home.cache().join("openvino").join(OPENVINO_VERSION)
}

/// The C library `dishcam models pull` extracts into [`library_dir`].
pub fn library_path(home: &Home) -> PathBuf {
    library_dir(home).join(C_LIBRARY)
}

/// Where the C library is looked for, in order: `DISHCAM_OPENVINO_LIB`, then the library
/// `dishcam models pull` extracts into the cache.
pub fn library_candidates(home: Option<&Home>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os(LIBRARY_ENV).filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    if let Some(home) = home {
        out.push(library_path(home));
    }
    out
}

#[cfg(feature = "openvino")]
pub use compiled::OpenvinoBackend;
#[cfg(not(feature = "openvino"))]
pub use stub::OpenvinoBackend;

#[cfg(not(feature = "openvino"))]
mod stub {
    use dishcam_models::pack::Home;

    use super::super::{Backend, BackendError, BackendKind, ModelSpec, Session, SessionOptions};

    fn not_compiled() -> BackendError {
        BackendError::NotCompiled {
            backend: "openvino".into(),
            hint: "rebuild dishcam with the `openvino` cargo feature (on by default)".into(),
        }
    }

    /// The OpenVINO backend of a build without the `openvino` feature: it cannot be opened.
    pub struct OpenvinoBackend(());

    impl OpenvinoBackend {
        /// Always an error: this build has no OpenVINO backend.
        pub fn new(_home: Option<&Home>) -> Result<OpenvinoBackend, BackendError> {
            Err(not_compiled())
        }
    }

    impl Backend for OpenvinoBackend {
        fn kind(&self) -> BackendKind {
            BackendKind::Openvino
        }

        fn load(
            &self,
            _spec: &ModelSpec<'_>,
            _options: &SessionOptions,
        ) -> Result<Box<dyn Session>, BackendError> {
            Err(not_compiled())
        }
    }
}

#[cfg(feature = "openvino")]
mod compiled {
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, OnceLock};

    use dishcam_models::manifest::{DType, Dim};
    use dishcam_models::pack::Home;
    use dishcam_models::Precision;
    use openvino::{
        CompiledModel, Core, DeviceType, Dimension, ElementType, InferRequest, PartialShape,
        RwPropertyKey, Shape, Tensor as OvTensor,
    };

    use super::super::{Backend, BackendError, BackendKind, ModelSpec, Session, SessionOptions};
    use super::{library_candidates, LIBRARY_ENV};
    use crate::tensor::{Tensor, TensorData, TensorRef};

    /// The process-wide core: `openvino-sys` holds one library per process, and one core shares
    /// the loaded plugins between sessions (OpenVINO's advice). The core's CPU properties are
    /// set right before each compile, so it sits behind a lock.
    static CORE: OnceLock<Result<(Mutex<Core>, PathBuf), String>> = OnceLock::new();

    /// Loads the library and starts a core once per process; later calls return the first
    /// outcome.
    fn core(home: Option<&Home>) -> Result<&'static (Mutex<Core>, PathBuf), BackendError> {
        let loaded = CORE.get_or_init(|| {
            let candidates = library_candidates(home);
            let Some(path) = candidates.iter().find(|p| p.is_file()) else {
                let looked: Vec<String> =
                    candidates.iter().map(|p| p.display().to_string()).collect();
                return Err(format!(
                    "no OpenVINO library found (looked at {}); run `dishcam models pull lite` (it fetches the pinned OpenVINO {}) or set {LIBRARY_ENV} to a libopenvino_c.so",
                    if looked.is_empty() {
                        "nothing: no dishcam home".into()
                    } else {
                        looked.join(", ")
                    },
                    super::OPENVINO_VERSION,
                ));
            };
            openvino_sys::library::load_from(path.clone())
                .map_err(|e| format!("{}: cannot load OpenVINO ({e})", path.display()))?;
            let core = Core::new()
                .map_err(|e| format!("{}: cannot start OpenVINO ({e})", path.display()))?;
            // Loads the CPU plugin now, so a library without it fails here, not at the first
            // model.
            core.versions("CPU").map_err(|e| {
                format!(
                    "{}: OpenVINO has no CPU plugin next to it ({e}); run `dishcam models pull lite --force` or point {LIBRARY_ENV} at a complete OpenVINO",
                    path.display()
                )
            })?;
            Ok((Mutex::new(core), path.clone()))
        });
        loaded.as_ref().map_err(|why| BackendError::Unavailable {
            backend: "openvino".into(),
            why: why.clone(),
        })
    }

    /// The OpenVINO backend (CPU plugin).
    pub struct OpenvinoBackend {
        core: &'static Mutex<Core>,
        library: &'static Path,
    }

    impl OpenvinoBackend {
        /// Loads the OpenVINO library (see [`library_candidates`]); an error says where it
        /// looked and how to get it.
        pub fn new(home: Option<&Home>) -> Result<OpenvinoBackend, BackendError> {
            let (core, library) = core(home)?;
            Ok(OpenvinoBackend { core, library })
        }

        /// The C library this process runs.
        pub fn library(&self) -> &Path {
            self.library
        }
    }

    struct OvSession {
        model: String,
        request: InferRequest,
        /// Preallocated input and output tensors set on the request by the first `run_into`.
        bound: Option<Bound>,
        input_names: Vec<String>,
        /// Fixed sizes of every input dimension, `None` where the model is dynamic.
        input_shapes: Vec<Vec<Option<usize>>>,
        output_names: Vec<String>,
        /// Fixed sizes of every wanted output's dimensions, `None` where dynamic.
        output_shapes: Vec<Vec<Option<usize>>>,
        /// Kept for the request's lifetime.
        _compiled: CompiledModel,
    }

    /// Tensors set once on the request: `run_into` copies the inputs in, infers, and reads the
    /// outputs OpenVINO wrote into them, with no allocation per run.
    struct Bound {
        inputs: Vec<OvTensor>,
        outputs: Vec<OvTensor>,
    }

    fn fixed_shape(dims: &[Dim], fixed: &[(&str, usize)]) -> Vec<Option<usize>> {
        dims.iter()
            .map(|d| match d {
                Dim::Fixed(v) => Some(*v as usize),
                Dim::Named(n) => fixed.iter().find(|(name, _)| name == n).map(|(_, v)| *v),
            })
            .collect()
    }

    fn partial_shape(shape: &[Option<usize>]) -> Result<PartialShape, openvino::InferenceError> {
        let dims: Vec<Dimension> = shape
            .iter()
            .map(|d| match d {
                Some(v) => Dimension::new(*v as i64, *v as i64),
                None => Dimension::new(-1, -1),
            })
            .collect();
        PartialShape::new(dims.len() as i64, &dims)
    }

    fn ov_shape(shape: &[usize]) -> Result<Shape, openvino::InferenceError> {
        Shape::new(&shape.iter().map(|&d| d as i64).collect::<Vec<_>>())
    }

    impl Backend for OpenvinoBackend {
        fn kind(&self) -> BackendKind {
            BackendKind::Openvino
        }

        fn load(
            &self,
            spec: &ModelSpec<'_>,
            options: &SessionOptions,
        ) -> Result<Box<dyn Session>, BackendError> {
            let model_name = spec.path.display().to_string();
            let load_err = |e: &dyn std::fmt::Display| BackendError::Load {
                model: model_name.clone(),
                backend: "openvino".into(),
                reason: e.to_string(),
            };
            if !matches!(spec.precision, Precision::Fp32 | Precision::Int8) {
                return Err(BackendError::UnsupportedPrecision {
                    model: model_name,
                    backend: "openvino".into(),
                    precision: spec.precision,
                    why: "dishcam runs OpenVINO on fp32 and int8 Q/DQ models; use --precision fp32 or int8".into(),
                });
            }
            if options
                .providers
                .iter()
                .any(|p| *p != super::super::Provider::Cpu)
            {
                log::debug!("openvino runs on its CPU plugin; ignoring execution providers");
            }
            let mut input_names = Vec::new();
            let mut input_shapes = Vec::new();
            for input in spec.inputs {
                if !matches!(input.dtype, DType::F32 | DType::I64) {
                    return Err(load_err(&format!(
                        "input '{}' has dtype {}, which this backend does not feed",
                        input.name, input.dtype
                    )));
                }
                input_names.push(input.name.clone());
                input_shapes.push(fixed_shape(&input.shape, spec.fixed_dims));
            }
            let output_names: Vec<String> = spec.outputs.iter().map(|o| o.name.clone()).collect();
            let output_shapes = spec
                .outputs
                .iter()
                .map(|o| fixed_shape(&o.shape, spec.fixed_dims))
                .collect();

            let mut core = self
                .core
                .lock()
                .map_err(|_| load_err(&"the OpenVINO core lock was poisoned by a panic"))?;
            // The ONNX front end reads the pack's (already verified) bytes; Q/DQ pairs in an
            // int8 variant become int8 kernels in the CPU plugin's own transformations.
            let mut model = core
                .read_model_from_buffer(spec.bytes, None)
                .map_err(|e| load_err(&e))?;
            let inputs_len = model.get_inputs_len().map_err(|e| load_err(&e))?;
            let mut names_in_model = Vec::with_capacity(inputs_len);
            for i in 0..inputs_len {
                let port = model.get_input_by_index(i).map_err(|e| load_err(&e))?;
                names_in_model.push(port.get_name().map_err(|e| load_err(&e))?);
            }
            for name in &input_names {
                if !names_in_model.contains(name) {
                    return Err(load_err(&format!(
                        "the model has no input '{name}' (it has {})",
                        names_in_model.join(", ")
                    )));
                }
            }
            // Named dimensions fixed at load time (e.g. batch = 1) make the shapes static, so
            // the CPU plugin compiles and allocates once instead of per shape.
            if !spec.fixed_dims.is_empty() {
                let shapes = input_shapes
                    .iter()
                    .map(|s| partial_shape(s))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| load_err(&e))?;
                let pairs: Vec<(&str, &PartialShape)> = input_names
                    .iter()
                    .map(String::as_str)
                    .zip(shapes.iter())
                    .collect();
                model.reshape(&pairs).map_err(|e| load_err(&e))?;
            }
            // Set on the core's CPU device right before the compile (the lock keeps another
            // load from changing them in between):
            // - PERFORMANCE_HINT=LATENCY: one stream, every thread on the one request, as a
            //   camera runs one frame at a time (THROUGHPUT would split the threads into streams);
            // - INFERENCE_NUM_THREADS: `SessionOptions::threads`; 0 lets OpenVINO use one
            //   thread per physical core (as onnxruntime's default does);
            // - INFERENCE_PRECISION_HINT=f32: the CPU plugin would otherwise compute fp32 models
            //   in bf16 on CPUs with AMX/AVX512-BF16 and in f16 on ARM, and lose the parity with
            //   PyTorch that the tests state; int8 Q/DQ layers still run int8 kernels.
            let threads = options.threads.map_or(0, |t| t.max(1)).to_string();
            core.set_properties(
                &DeviceType::CPU,
                [
                    (RwPropertyKey::HintPerformanceMode, "LATENCY"),
                    (RwPropertyKey::InferenceNumThreads, threads.as_str()),
                    (RwPropertyKey::HintInferencePrecision, "f32"),
                ],
            )
            .map_err(|e| load_err(&e))?;
            let mut compiled = core
                .compile_model(&model, DeviceType::CPU)
                .map_err(|e| load_err(&e))?;
            drop(core);
            for name in &output_names {
                compiled
                    .get_output_by_name(name)
                    .map_err(|_| load_err(&format!("the model has no output '{name}'")))?;
            }
            let request = compiled.create_infer_request().map_err(|e| load_err(&e))?;
            Ok(Box::new(OvSession {
                model: model_name,
                request,
                bound: None,
                input_names,
                input_shapes,
                output_names,
                output_shapes,
                _compiled: compiled,
            }))
        }
    }

    impl OvSession {
        fn run_err(&self, e: &dyn std::fmt::Display) -> BackendError {
            BackendError::Run {
                model: self.model.clone(),
                reason: e.to_string(),
            }
        }

        /// Makes and sets f32 tensors for every input and output; `None` when a shape is not
        /// fully known at load time or an input is not f32 (then `run_into` copies from `run`).
        fn bind(&mut self, inputs: &[TensorRef<'_>]) -> Result<Option<Bound>, BackendError> {
            let full = |s: &[Option<usize>]| s.iter().copied().collect::<Option<Vec<usize>>>();
            if inputs.iter().any(|i| !matches!(i, TensorRef::F32 { .. })) {
                return Ok(None);
            }
            let (Some(ins), Some(outs)) = (
                self.input_shapes
                    .iter()
                    .map(|s| full(s))
                    .collect::<Option<Vec<_>>>(),
                self.output_shapes
                    .iter()
                    .map(|s| full(s))
                    .collect::<Option<Vec<_>>>(),
            ) else {
                return Ok(None);
            };
            let mut bound = Bound {
                inputs: Vec::new(),
                outputs: Vec::new(),
            };
            for (names, shapes, into) in [
                (&self.input_names, ins, &mut bound.inputs),
                (&self.output_names, outs, &mut bound.outputs),
            ] {
                for (name, shape) in names.iter().zip(shapes) {
                    let t = ov_shape(&shape)
                        .and_then(|s| OvTensor::new(ElementType::F32, &s))
                        .map_err(|e| self.run_err(&format!("'{name}': {e}")))?;
                    self.request
                        .set_tensor(name, &t)
                        .map_err(|e| self.run_err(&format!("'{name}': {e}")))?;
                    into.push(t);
                }
            }
            Ok(Some(bound))
        }
    }

    impl Session for OvSession {
        fn model_name(&self) -> &str {
            &self.model
        }

        fn run_into(
            &mut self,
            inputs: &[TensorRef<'_>],
            outputs: &mut [&mut [f32]],
        ) -> Result<(), BackendError> {
            super::super::check_inputs(&self.model, inputs, &self.input_shapes)?;
            if self.bound.is_none() {
                self.bound = self.bind(inputs)?;
            }
            let Some(bound) = self.bound.as_mut() else {
                let got = self.run(inputs)?;
                return super::super::copy_outputs(&self.model, got, outputs);
            };
            let err = |reason: String| BackendError::Run {
                model: self.model.clone(),
                reason,
            };
            if outputs.len() != bound.outputs.len() {
                return Err(err(format!(
                    "{} output buffers for {} outputs",
                    outputs.len(),
                    bound.outputs.len()
                )));
            }
            for (input, t) in inputs.iter().zip(bound.inputs.iter_mut()) {
                if let TensorRef::F32 { data, .. } = input {
                    t.get_data_mut::<f32>()
                        .map_err(|e| err(e.to_string()))?
                        .copy_from_slice(data);
                }
            }
            self.request.infer().map_err(|e| err(e.to_string()))?;
            for (t, out) in bound.outputs.iter().zip(outputs.iter_mut()) {
                let data = t.get_data::<f32>().map_err(|e| err(e.to_string()))?;
                if data.len() != out.len() {
                    return Err(err(format!(
                        "an output has {} values, the buffer {}",
                        data.len(),
                        out.len()
                    )));
                }
                out.copy_from_slice(data);
            }
            Ok(())
        }

        fn run(&mut self, inputs: &[TensorRef<'_>]) -> Result<Vec<Tensor>, BackendError> {
            super::super::check_inputs(&self.model, inputs, &self.input_shapes)?;
            for (name, input) in self.input_names.iter().zip(inputs) {
                let fill = |ty: ElementType, shape: &[usize], bytes: &[u8]| {
                    let mut t = OvTensor::new(ty, &ov_shape(shape)?)?;
                    t.get_raw_data_mut()?.copy_from_slice(bytes);
                    Ok::<_, openvino::InferenceError>(t)
                };
                let t = match input {
                    TensorRef::F32 { shape, data } => {
                        fill(ElementType::F32, shape, as_bytes_f32(data))
                    }
                    TensorRef::I64 { shape, data } => {
                        fill(ElementType::I64, shape, as_bytes_i64(data))
                    }
                }
                .map_err(|e| self.run_err(&format!("input '{name}': {e}")))?;
                self.request
                    .set_tensor(name, &t)
                    .map_err(|e| self.run_err(&format!("input '{name}': {e}")))?;
            }
            // A previous `run_into` may have set our own output tensors; OpenVINO keeps
            // writing into them, which is what `get_tensor` reads back below.
            self.request.infer().map_err(|e| self.run_err(&e))?;
            self.bound = None;
            self.output_names
                .iter()
                .map(|name| {
                    let t = self
                        .request
                        .get_tensor(name)
                        .map_err(|e| self.run_err(&format!("output '{name}': {e}")))?;
                    to_tensor(&t).map_err(|e| self.run_err(&format!("output '{name}': {e}")))
                })
                .collect()
        }
    }

    fn as_bytes_f32(data: &[f32]) -> &[u8] {
        bytemuck::cast_slice(data)
    }

    fn as_bytes_i64(data: &[i64]) -> &[u8] {
        bytemuck::cast_slice(data)
    }

    fn to_tensor(t: &OvTensor) -> Result<Tensor, String> {
        let shape: Vec<usize> = t
            .get_shape()
            .map_err(|e| e.to_string())?
            .get_dimensions()
            .iter()
            .map(|&d| d as usize)
            .collect();
        match t.get_element_type().map_err(|e| e.to_string())? {
            ElementType::F32 => Ok(Tensor::f32(
                shape,
                t.get_data::<f32>().map_err(|e| e.to_string())?.to_vec(),
            )),
            ElementType::I64 => Ok(Tensor {
                shape,
                data: TensorData::I64(t.get_data::<i64>().map_err(|e| e.to_string())?.to_vec()),
            }),
            other => Err(format!("type {other} is not supported")),
        }
    }
}

//! The onnxruntime backend: the `ort` crate loads `libonnxruntime` at run time (`load-dynamic`),
//! so nothing is needed to build it. The library comes from `dishcam models pull` (the pinned
//! CPU wheel, extracted into the cache) or from `ORT_DYLIB_PATH` (e.g. a CUDA/TensorRT build on a
//! Jetson). It runs fp32 and int8 Q/DQ models with real int8 kernels.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dishcam_models::manifest::{DType, Dim};
use dishcam_models::pack::Home;
use ort::environment::Environment;
use ort::ep;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{OutputSelector, RunOptions, Session as OrtSession};
use ort::value::{DynValue, TensorRef as OrtTensorRef};

use super::{
    Backend, BackendError, BackendKind, GraphOptimization, ModelSpec, Provider, Session,
    SessionOptions,
};
use crate::tensor::{Tensor, TensorData, TensorRef};

/// The process-wide onnxruntime environment; `ort` allows one per process, and the library it
/// loaded stays loaded.
static ENVIRONMENT: OnceLock<Result<(Environment, PathBuf), String>> = OnceLock::new();

/// onnxruntime version; matches the C API version the `ort` crate is built against (api-31).
pub const ORT_VERSION: &str = "1.31.1";

/// Where `dishcam models pull` puts the library: `$DISHCAM_HOME/cache/onnxruntime/<version>/`.
pub fn library_path(home: &Home) -> PathBuf {
    home.cache()
        .join("onnxruntime")
        .join(ORT_VERSION)
        .join(format!("libonnxruntime.so.{ORT_VERSION}"))
}

/// Where the onnxruntime library is looked for, in order: `ORT_DYLIB_PATH`, then the library
/// `dishcam models pull` extracts into the cache.
pub fn library_candidates(home: Option<&Home>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    if let Some(home) = home {
        out.push(library_path(home));
    }
    out
}

/// Loads the library once per process. Later calls return the first outcome.
fn environment(home: Option<&Home>) -> Result<&'static (Environment, PathBuf), BackendError> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let candidates = library_candidates(home);
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            return Err(format!(
                "no onnxruntime library found (looked at {}); run `dishcam models pull lite` or set ORT_DYLIB_PATH to a libonnxruntime.so",
                if looked.is_empty() { "nothing: no dishcam home".into() } else { looked.join(", ") }
            ));
        };
        let builder = ort::init_from(path)
            .map_err(|e| format!("{}: cannot load onnxruntime ({e})", path.display()))?;
        let env = builder
            .with_name("dishcam")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("{}: cannot start onnxruntime ({e})", path.display()))?;
        Ok((env, path.clone()))
    });
    loaded.as_ref().map_err(|why| BackendError::Unavailable {
        backend: "onnxruntime".into(),
        why: why.clone(),
    })
}

/// The onnxruntime backend.
pub struct OrtBackend {
    env: &'static Environment,
    library: &'static Path,
}

impl OrtBackend {
    /// Loads the onnxruntime library (see [`library_candidates`]); an error says where it looked.
    pub fn new(home: Option<&Home>) -> Result<OrtBackend, BackendError> {
        let (env, library) = environment(home)?;
        Ok(OrtBackend { env, library })
    }

    /// The library file this process runs.
    pub fn library(&self) -> &Path {
        self.library
    }
}

struct OrtSessionImpl {
    model: String,
    session: OrtSession,
    run_options: RunOptions<ort::session::HasSelectedOutputs>,
    input_names: Vec<String>,
    /// Fixed sizes of every input dimension, `None` where the model is dynamic.
    input_shapes: Vec<Vec<Option<usize>>>,
    output_names: Vec<String>,
    /// Fixed sizes of every wanted output's dimensions, `None` where dynamic.
    output_shapes: Vec<Vec<Option<usize>>>,
    /// Preallocated inputs and outputs bound to the session, made by the first `run_into`.
    bound: Option<Bound>,
}

/// Tensors bound once to an `IoBinding`: `run_into` copies the inputs in, runs the binding,
/// and copies the outputs out, with no Rust allocation per run.
struct Bound {
    binding: ort::session::IoBinding,
    inputs: Vec<ort::value::Tensor<f32>>,
    outputs: Vec<ort::value::Tensor<f32>>,
}

fn fixed_shape(dims: &[Dim], fixed: &[(&str, usize)]) -> Vec<Option<usize>> {
    dims.iter()
        .map(|d| match d {
            Dim::Fixed(v) => Some(*v as usize),
            Dim::Named(n) => fixed.iter().find(|(name, _)| name == n).map(|(_, v)| *v),
        })
        .collect()
}

fn optimisation_level(level: GraphOptimization) -> GraphOptimizationLevel {
    match level {
        GraphOptimization::Disable => GraphOptimizationLevel::Disable,
        GraphOptimization::Basic => GraphOptimizationLevel::Level1,
        GraphOptimization::Extended => GraphOptimizationLevel::Level2,
        GraphOptimization::All => GraphOptimizationLevel::All,
    }
}

fn providers(list: &[Provider]) -> Vec<ep::ExecutionProviderDispatch> {
    list.iter()
        .map(|p| match p {
            Provider::Cpu => ep::CPU::default().build(),
            Provider::Cuda { device } => ep::CUDA::default().with_device_id(*device as i32).build(),
            Provider::TensorRt {
                device,
                fp16,
                int8,
                engine_cache,
            } => {
                let mut trt = ep::TensorRT::default()
                    .with_device_id(*device as i32)
                    .with_fp16(*fp16)
                    .with_int8(*int8);
                if let Some(dir) = engine_cache {
                    trt = trt
                        .with_engine_cache(true)
                        .with_engine_cache_path(dir.display().to_string());
                }
                trt.build()
            }
        })
        .collect()
}

impl OrtBackend {
    /// A session builder with `options` and the load-time fixed dimensions of `spec`: the
    /// one place both the wrapped and the bare sessions are configured.
    fn builder(
        &self,
        spec: &ModelSpec<'_>,
        options: &SessionOptions,
    ) -> Result<ort::session::builder::SessionBuilder, BackendError> {
        let load_err = |e: &dyn std::fmt::Display| BackendError::Load {
            model: spec.path.display().to_string(),
            backend: "onnxruntime".into(),
            reason: e.to_string(),
        };
        let mut builder = OrtSession::builder(self.env)
            .map_err(|e| load_err(&e))?
            .with_optimization_level(optimisation_level(options.optimization))
            .map_err(|e| load_err(&e))?
            .with_intra_op_spinning(options.spinning)
            .map_err(|e| load_err(&e))?;
        if let Some(t) = options.threads {
            builder = builder
                .with_intra_threads(t.max(1))
                .map_err(|e| load_err(&e))?;
        }
        // Named dimensions fixed at load time let onnxruntime plan memory once.
        for (name, size) in spec.fixed_dims {
            builder = builder
                .with_dimension_override(*name, *size as i64)
                .map_err(|e| load_err(&e))?;
        }
        if !options.providers.is_empty() {
            builder = builder
                .with_execution_providers(providers(&options.providers))
                .map_err(|e| load_err(&e))?;
        }
        Ok(builder)
    }
}

impl Backend for OrtBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Onnxruntime
    }

    fn load(
        &self,
        spec: &ModelSpec<'_>,
        options: &SessionOptions,
    ) -> Result<Box<dyn Session>, BackendError> {
        let model_name = spec.path.display().to_string();
        let load_err = |e: &dyn std::fmt::Display| BackendError::Load {
            model: model_name.clone(),
            backend: "onnxruntime".into(),
            reason: e.to_string(),
        };
        let session = self
            .builder(spec, options)?
            .commit_from_memory(spec.bytes)
            .map_err(|e| load_err(&e))?;

        let mut input_names = Vec::new();
        let mut input_shapes = Vec::new();
        for (i, input) in spec.inputs.iter().enumerate() {
            let position = session
                .inputs()
                .iter()
                .position(|o| o.name() == input.name)
                .ok_or_else(|| load_err(&format!("the model has no input '{}'", input.name)))?;
            if position != i {
                return Err(load_err(&format!(
                    "input '{}' is input {position} of the model but {i} in the manifest",
                    input.name
                )));
            }
            if !matches!(input.dtype, DType::F32 | DType::I64) {
                return Err(load_err(&format!(
                    "input '{}' has dtype {}, which this backend does not feed",
                    input.name, input.dtype
                )));
            }
            input_names.push(input.name.clone());
            input_shapes.push(fixed_shape(&input.shape, spec.fixed_dims));
        }
        let mut selector = OutputSelector::no_default();
        let mut output_names = Vec::new();
        for o in spec.outputs {
            if !session.outputs().iter().any(|out| out.name() == o.name) {
                return Err(load_err(&format!("the model has no output '{}'", o.name)));
            }
            selector = selector.with(o.name.clone());
            output_names.push(o.name.clone());
        }
        let run_options = RunOptions::new()
            .map_err(|e| load_err(&e))?
            .with_outputs(selector);
        Ok(Box::new(OrtSessionImpl {
            model: model_name,
            session,
            run_options,
            input_names,
            input_shapes,
            output_names,
            output_shapes: spec
                .outputs
                .iter()
                .map(|o| fixed_shape(&o.shape, spec.fixed_dims))
                .collect(),
            bound: None,
        }))
    }
}

impl Session for OrtSessionImpl {
    fn run_into(
        &mut self,
        inputs: &[TensorRef<'_>],
        outputs: &mut [&mut [f32]],
    ) -> Result<(), BackendError> {
        super::check_inputs(&self.model, inputs, &self.input_shapes)?;
        if self.bound.is_none() {
            self.bound = self.bind(inputs)?;
        }
        let Some(bound) = self.bound.as_mut() else {
            let got = self.run(inputs)?;
            return super::copy_outputs(&self.model, got, outputs);
        };
        if outputs.len() != bound.outputs.len() {
            return Err(BackendError::Run {
                model: self.model.clone(),
                reason: format!(
                    "{} output buffers for {} outputs",
                    outputs.len(),
                    bound.outputs.len()
                ),
            });
        }
        for (input, t) in inputs.iter().zip(bound.inputs.iter_mut()) {
            if let TensorRef::F32 { data, .. } = input {
                t.extract_tensor_mut().1.copy_from_slice(data);
            }
        }
        // `Session::run_binding` wraps every output in a new reference-counted value on each
        // run; the outputs here are our own bound tensors, so the C call alone is enough.
        let api = ort::api();
        // SAFETY: the session and binding pointers are live for the call; every bound value
        // is owned by `bound` (and by the binding), which outlives it.
        let status = unsafe {
            (api.RunWithBinding)(
                ort::AsPointer::ptr(&self.session).cast_mut(),
                std::ptr::null(),
                ort::AsPointer::ptr(&bound.binding),
            )
        };
        if !status.0.is_null() {
            // SAFETY: a non-null status from onnxruntime carries a message; released once.
            let reason = unsafe {
                let msg = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0))
                    .to_string_lossy()
                    .into_owned();
                (api.ReleaseStatus)(status.0);
                msg
            };
            return Err(BackendError::Run {
                model: self.model.clone(),
                reason,
            });
        }
        for (t, out) in bound.outputs.iter().zip(outputs.iter_mut()) {
            let (_, data) = t.extract_tensor();
            if data.len() != out.len() {
                return Err(BackendError::Run {
                    model: self.model.clone(),
                    reason: format!(
                        "an output has {} values, the buffer {}",
                        data.len(),
                        out.len()
                    ),
                });
            }
            out.copy_from_slice(data);
        }
        Ok(())
    }

    fn run(&mut self, inputs: &[TensorRef<'_>]) -> Result<Vec<Tensor>, BackendError> {
        let model = self.model.clone();
        let run_err = move |reason: String| BackendError::Run {
            model: model.clone(),
            reason,
        };
        super::check_inputs(&self.model, inputs, &self.input_shapes)?;
        let mut values = Vec::with_capacity(inputs.len());
        for (name, input) in self.input_names.iter().zip(inputs) {
            let value: ort::session::SessionInputValue<'_> = match input {
                TensorRef::F32 { shape, data } => OrtTensorRef::from_array_view((*shape, *data))
                    .map_err(|e| run_err(e.to_string()))?
                    .into(),
                TensorRef::I64 { shape, data } => OrtTensorRef::from_array_view((*shape, *data))
                    .map_err(|e| run_err(e.to_string()))?
                    .into(),
            };
            values.push((name.as_str(), value));
        }
        let outputs = self
            .session
            .run_with_options(values, &self.run_options)
            .map_err(|e| run_err(e.to_string()))?;
        self.output_names
            .iter()
            .map(|name| {
                let value = outputs
                    .get(name)
                    .ok_or_else(|| run_err(format!("output '{name}' is missing")))?;
                to_tensor(value).map_err(|e| run_err(format!("output '{name}': {e}")))
            })
            .collect()
    }
}

impl OrtSessionImpl {
    /// Binds preallocated f32 tensors for every input and output; `None` when a shape is not
    /// fully known at load time or an input is not f32 (then `run_into` copies from `run`).
    fn bind(&self, inputs: &[TensorRef<'_>]) -> Result<Option<Bound>, BackendError> {
        let err = |e: ort::Error| BackendError::Run {
            model: self.model.clone(),
            reason: e.to_string(),
        };
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
        let allocator = ort::memory::Allocator::default();
        let mut binding = self.session.create_binding().map_err(err)?;
        let mut inputs = Vec::new();
        for (name, shape) in self.input_names.iter().zip(ins) {
            let t = ort::value::Tensor::<f32>::new(&allocator, shape).map_err(err)?;
            binding.bind_input(name.as_str(), &t).map_err(err)?;
            inputs.push(t);
        }
        let mut outputs = Vec::new();
        for (name, shape) in self.output_names.iter().zip(outs) {
            let mut t = ort::value::Tensor::<f32>::new(&allocator, shape).map_err(err)?;
            binding.bind_output(name.as_str(), &mut t).map_err(err)?;
            outputs.push(t);
        }
        Ok(Some(Bound {
            binding,
            inputs,
            outputs,
        }))
    }
}

fn to_tensor(value: &DynValue) -> Result<Tensor, String> {
    if let Ok((shape, data)) = value.try_extract_tensor::<f32>() {
        return Ok(Tensor::f32(
            shape.iter().map(|&d| d as usize).collect(),
            data.to_vec(),
        ));
    }
    if let Ok((shape, data)) = value.try_extract_tensor::<i64>() {
        return Ok(Tensor {
            shape: shape.iter().map(|&d| d as usize).collect(),
            data: TensorData::I64(data.to_vec()),
        });
    }
    Err(format!("type {:?} is not supported", value.dtype()))
}

/// A raw `ort` session with none of dishcam's wrapping (no shape checks, no output copies into
/// [`Tensor`]s): the loop an application writes against `ort` directly. `dishcam bench` runs it
/// beside the wrapped session, interleaved, so the wrapper's overhead is measured, not assumed.
pub struct BareSession {
    session: OrtSession,
    run_options: RunOptions<ort::session::HasSelectedOutputs>,
    input: String,
    output: String,
}

impl OrtBackend {
    /// Loads `spec` as a [`BareSession`] with the same options as [`Backend::load`]. Only the
    /// first input and first wanted output are used: it is for single-input encoders.
    pub fn bare(
        &self,
        spec: &ModelSpec<'_>,
        options: &SessionOptions,
    ) -> Result<BareSession, BackendError> {
        let load_err = |e: &dyn std::fmt::Display| BackendError::Load {
            model: spec.path.display().to_string(),
            backend: "onnxruntime".into(),
            reason: e.to_string(),
        };
        let (Some(input), Some(output)) = (spec.inputs.first(), spec.outputs.first()) else {
            return Err(load_err(&"a bare session needs one input and one output"));
        };
        let session = self
            .builder(spec, options)?
            .commit_from_memory(spec.bytes)
            .map_err(|e| load_err(&e))?;
        let run_options = RunOptions::new()
            .map_err(|e| load_err(&e))?
            .with_outputs(OutputSelector::no_default().with(output.name.clone()));
        Ok(BareSession {
            session,
            run_options,
            input: input.name.clone(),
            output: output.name.clone(),
        })
    }
}

impl BareSession {
    /// Runs on `data` of `shape` and returns the first output value (read, as an application
    /// reading its result would).
    pub fn run(&mut self, shape: &[usize], data: &[f32]) -> Result<f32, BackendError> {
        let err = |e: ort::Error| BackendError::Run {
            model: "bare session".into(),
            reason: e.to_string(),
        };
        let value = OrtTensorRef::from_array_view((shape, data)).map_err(err)?;
        let outputs = self
            .session
            .run_with_options(
                ort::inputs![self.input.as_str() => value],
                &self.run_options,
            )
            .map_err(err)?;
        let (_, out) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(err)?;
        Ok(out.first().copied().unwrap_or(f32::NAN))
    }
}

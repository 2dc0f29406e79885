// The TensorRT bridge: dishcam_trt.h over TensorRT 8.5 to 11 and the CUDA runtime.
//
// NOT COMPILED OR RUN on the machines dishcam is developed on (no GPU, no TensorRT headers
// there); it is compiled on boards by `cargo build --features tensorrt` (see build.rs and
// docs/jetson.md). The Rust side is tested against tests/tensorrt/mock_bridge.c, which
// implements the same header on the CPU.
//
// Every extern "C" function catches everything: no exception crosses the boundary. Errors are
// a status code plus a message kept per thread (dishcam_trt_last_error).

#include "dishcam_trt.h"

#include <NvInfer.h>
#include <NvInferVersion.h>
#include <NvOnnxParser.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#if NV_TENSORRT_MAJOR < 8 || (NV_TENSORRT_MAJOR == 8 && NV_TENSORRT_MINOR < 5)
#error "dishcam's TensorRT bridge needs TensorRT 8.5 or newer (named I/O tensors, enqueueV3)"
#endif

// Implicit INT8 (calibrators, BuilderFlag::kINT8) exists up to TensorRT 10.x and is removed in 11.
#if NV_TENSORRT_MAJOR < 11
#define DISHCAM_TRT_HAS_IMPLICIT_INT8 1
#else
#define DISHCAM_TRT_HAS_IMPLICIT_INT8 0
#endif

namespace {

thread_local std::string g_last_error;

dishcam_trt_status fail(dishcam_trt_status code, const std::string& message) {
    g_last_error = message;
    return code;
}

// TensorRT's log: errors are kept for the message of the failing call, warnings go to stderr
// when DISHCAM_TRT_VERBOSE is set.
class Logger : public nvinfer1::ILogger {
  public:
    void log(Severity severity, const char* msg) noexcept override {
        try {
            if (severity <= Severity::kERROR) {
                std::lock_guard<std::mutex> guard(mutex_);
                if (!errors_.empty()) errors_ += "; ";
                errors_ += msg;
            } else if (severity <= Severity::kWARNING && std::getenv("DISHCAM_TRT_VERBOSE")) {
                std::fprintf(stderr, "tensorrt: %s\n", msg);
            }
        } catch (...) {
        }
    }
    // The errors logged since the last call, or `fallback`.
    std::string take(const std::string& fallback) {
        std::lock_guard<std::mutex> guard(mutex_);
        std::string out = errors_.empty() ? fallback : fallback + ": " + errors_;
        errors_.clear();
        return out;
    }

  private:
    std::mutex mutex_;
    std::string errors_;
};

Logger& logger() {
    static Logger instance;
    return instance;
}

dishcam_trt_status cuda_fail(const char* what, cudaError_t e) {
    return fail(DISHCAM_TRT_E_CUDA, std::string(what) + ": " + cudaGetErrorString(e));
}

#define CUDA_TRY(what, call)                                                                       \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return cuda_fail(what, e_);                                         \
    } while (0)

nvinfer1::Dims to_trt(const dishcam_trt_dims& d) {
    nvinfer1::Dims out{};
    out.nbDims = d.rank;
    // Dims holds int32_t before TensorRT 10 and int64_t since.
    using Dim = std::remove_reference_t<decltype(out.d[0])>;
    for (int i = 0; i < d.rank && i < nvinfer1::Dims::MAX_DIMS; ++i) out.d[i] = static_cast<Dim>(d.d[i]);
    return out;
}

dishcam_trt_dims from_trt(const nvinfer1::Dims& d) {
    dishcam_trt_dims out{};
    out.rank = d.nbDims < 0 ? -1 : d.nbDims;
    for (int i = 0; i < d.nbDims && i < DISHCAM_TRT_MAX_DIMS; ++i) out.d[i] = d.d[i];
    return out;
}

int32_t from_trt(nvinfer1::DataType t) {
    switch (t) {
    case nvinfer1::DataType::kFLOAT: return DISHCAM_TRT_F32;
    case nvinfer1::DataType::kHALF: return DISHCAM_TRT_F16;
    case nvinfer1::DataType::kINT8: return DISHCAM_TRT_I8;
    case nvinfer1::DataType::kINT32: return DISHCAM_TRT_I32;
    case nvinfer1::DataType::kBOOL: return DISHCAM_TRT_BOOL;
    case nvinfer1::DataType::kUINT8: return DISHCAM_TRT_U8;
#if NV_TENSORRT_MAJOR >= 10
    case nvinfer1::DataType::kINT64: return DISHCAM_TRT_I64;
    case nvinfer1::DataType::kBF16: return DISHCAM_TRT_BF16;
#endif
    default: return DISHCAM_TRT_OTHER;
    }
}

#if DISHCAM_TRT_HAS_IMPLICIT_INT8
// Serves a calibration cache written by dishcam (TRT-<version>-EntropyCalibration2); it never
// calibrates, so getBatch reports no data.
class CacheCalibrator : public nvinfer1::IInt8EntropyCalibrator2 {
  public:
    explicit CacheCalibrator(std::vector<char> cache) : cache_(std::move(cache)) {}
    int32_t getBatchSize() const noexcept override { return 1; }
    bool getBatch(void**, const char**, int32_t) noexcept override { return false; }
    const void* readCalibrationCache(std::size_t& length) noexcept override {
        length = cache_.size();
        return cache_.data();
    }
    void writeCalibrationCache(const void*, std::size_t) noexcept override {}

  private:
    std::vector<char> cache_;
};
#endif

struct Profile {
    std::string name;
    nvinfer1::Dims min, opt, max;
};

}  // namespace

struct dishcam_trt_builder {
    int32_t device = 0;
    std::unique_ptr<nvinfer1::IBuilder> builder;
    std::unique_ptr<nvinfer1::INetworkDefinition> network;
    std::unique_ptr<nvonnxparser::IParser> parser;
    std::unique_ptr<nvinfer1::IBuilderConfig> config;
#if DISHCAM_TRT_HAS_IMPLICIT_INT8
    std::unique_ptr<CacheCalibrator> calibrator;
#endif
    std::vector<Profile> profiles;
    std::unique_ptr<nvinfer1::IHostMemory> serialized;
};

struct dishcam_trt_engine {
    int32_t device = 0;
    std::unique_ptr<nvinfer1::IRuntime> runtime;
    std::unique_ptr<nvinfer1::ICudaEngine> engine;
    std::unique_ptr<nvinfer1::IExecutionContext> context;
    cudaStream_t stream = nullptr;
    cudaEvent_t events[4] = {nullptr, nullptr, nullptr, nullptr};
    bool recorded[4] = {false, false, false, false};
    std::vector<std::string> names;

    ~dishcam_trt_engine() {
        // The context goes before the engine, the engine before the runtime.
        context.reset();
        engine.reset();
        runtime.reset();
        for (auto& ev : events)
            if (ev) cudaEventDestroy(ev);
        if (stream) cudaStreamDestroy(stream);
    }
};

#define GUARD_BEGIN try {
#define GUARD_END                                                                                  \
    }                                                                                              \
    catch (const std::exception& ex) {                                                             \
        return fail(DISHCAM_TRT_E_INTERNAL, std::string("C++ exception: ") + ex.what());           \
    }                                                                                              \
    catch (...) {                                                                                  \
        return fail(DISHCAM_TRT_E_INTERNAL, "unknown C++ exception");                              \
    }

extern "C" {

uint32_t dishcam_trt_abi_version(void) { return DISHCAM_TRT_ABI_VERSION; }

const char* dishcam_trt_last_error(void) { return g_last_error.c_str(); }

dishcam_trt_status dishcam_trt_platform_info(int32_t device, dishcam_trt_platform* out) {
    GUARD_BEGIN
    if (!out) return fail(DISHCAM_TRT_E_ARGUMENT, "platform_info: null output");
    std::memset(out, 0, sizeof *out);
    // getInferLibVersion: MAJOR*1000+MINOR*100+PATCH before 10, MAJOR*10000+MINOR*100+PATCH since.
    int32_t v = getInferLibVersion();
    if (v >= 100000) {
        out->trt_major = v / 10000;
        out->trt_minor = (v / 100) % 100;
    } else {
        out->trt_major = v / 1000;
        out->trt_minor = (v / 100) % 10;
    }
    out->trt_patch = v % 100;
    int runtime_version = 0;
    if (cudaRuntimeGetVersion(&runtime_version) == cudaSuccess) out->cuda_runtime = runtime_version;
    cudaDeviceProp prop{};
    CUDA_TRY("cudaGetDeviceProperties", cudaGetDeviceProperties(&prop, device));
    out->cc_major = prop.major;
    out->cc_minor = prop.minor;
    std::snprintf(out->device_name, sizeof out->device_name, "%s", prop.name);
    CUDA_TRY("cudaSetDevice", cudaSetDevice(device));
    std::unique_ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger()));
    if (!runtime) return fail(DISHCAM_TRT_E_INTERNAL, logger().take("createInferRuntime failed"));
    out->dla_cores = runtime->getNbDLACores();
    return DISHCAM_TRT_OK;
    GUARD_END
}

dishcam_trt_status dishcam_trt_builder_create(int32_t device, dishcam_trt_builder** out) {
    GUARD_BEGIN
    if (!out) return fail(DISHCAM_TRT_E_ARGUMENT, "builder_create: null output");
    *out = nullptr;
    CUDA_TRY("cudaSetDevice", cudaSetDevice(device));
    auto b = std::make_unique<dishcam_trt_builder>();
    b->device = device;
    b->builder.reset(nvinfer1::createInferBuilder(logger()));
    if (!b->builder) return fail(DISHCAM_TRT_E_BUILD, logger().take("createInferBuilder failed"));
#if NV_TENSORRT_MAJOR < 10
    uint32_t flags = 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kEXPLICIT_BATCH);
#else
    uint32_t flags = 0;  // explicit batch is the only mode
#endif
    b->network.reset(b->builder->createNetworkV2(flags));
    if (!b->network) return fail(DISHCAM_TRT_E_BUILD, logger().take("createNetworkV2 failed"));
    b->parser.reset(nvonnxparser::createParser(*b->network, logger()));
    if (!b->parser) return fail(DISHCAM_TRT_E_BUILD, logger().take("createParser failed"));
    b->config.reset(b->builder->createBuilderConfig());
    if (!b->config) return fail(DISHCAM_TRT_E_BUILD, logger().take("createBuilderConfig failed"));
    *out = b.release();
    return DISHCAM_TRT_OK;
    GUARD_END
}

dishcam_trt_status dishcam_trt_builder_parse_onnx(dishcam_trt_builder* b, const void* onnx, size_t size) {
    GUARD_BEGIN
    if (!b || !onnx) return fail(DISHCAM_TRT_E_ARGUMENT, "parse_onnx: null argument");
    if (b->parser->parse(onnx, size)) return DISHCAM_TRT_OK;
    std::string msg = "ONNX parse error";
    for (int32_t i = 0; i < b->parser->getNbErrors(); ++i) {
        auto* e = b->parser->getError(i);
        msg += std::string(i ? "; " : ": ") + e->desc() + " (node " + std::to_string(e->node()) + ")";
    }
    logger().take("");
    return fail(DISHCAM_TRT_E_PARSE, msg);
    GUARD_END
}

dishcam_trt_status dishcam_trt_builder_configure(dishcam_trt_builder* b, const dishcam_trt_build_config* c) {
    GUARD_BEGIN
    if (!b || !c) return fail(DISHCAM_TRT_E_ARGUMENT, "configure: null argument");
    if (c->flags & ~(DISHCAM_TRT_FLAG_FP16 | DISHCAM_TRT_FLAG_INT8))
        return fail(DISHCAM_TRT_E_ARGUMENT, "configure: unknown flags " + std::to_string(c->flags));
    if (c->workspace_bytes)
        b->config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE, c->workspace_bytes);
    if (c->flags & DISHCAM_TRT_FLAG_FP16) b->config->setFlag(nvinfer1::BuilderFlag::kFP16);
    if (c->flags & DISHCAM_TRT_FLAG_INT8) {
#if DISHCAM_TRT_HAS_IMPLICIT_INT8
        b->config->setFlag(nvinfer1::BuilderFlag::kINT8);
#endif
        // TensorRT 11: INT8 comes only from the network's Q/DQ nodes; nothing to set.
    }
    if (c->dla_core >= 0) {
        int32_t cores = b->builder->getNbDLACores();
        if (c->dla_core >= cores)
            return fail(DISHCAM_TRT_E_UNSUPPORTED, "DLA core " + std::to_string(c->dla_core) + " requested, this device has " +
                                                       std::to_string(cores));
        b->config->setDefaultDeviceType(nvinfer1::DeviceType::kDLA);
        b->config->setDLACore(c->dla_core);
        b->config->setFlag(nvinfer1::BuilderFlag::kGPU_FALLBACK);
    }
    return DISHCAM_TRT_OK;
    GUARD_END
}

dishcam_trt_status dishcam_trt_builder_set_calibration_cache(dishcam_trt_builder* b, const void* cache, size_t size) {
    GUARD_BEGIN
    if (!b || !cache) return fail(DISHCAM_TRT_E_ARGUMENT, "set_calibration_cache: null argument");
#if DISHCAM_TRT_HAS_IMPLICIT_INT8
    const char* bytes = static_cast<const char*>(cache);
    b->calibrator = std::make_unique<CacheCalibrator>(std::vector<char>(bytes, bytes + size));
    b->config->setInt8Calibrator(b->calibrator.get());
    return DISHCAM_TRT_OK;
#else
    (void)size;
    return fail(DISHCAM_TRT_E_UNSUPPORTED, "TensorRT " + std::to_string(NV_TENSORRT_MAJOR) +
                                               " has no implicit INT8 calibration; build from the Q/DQ model");
#endif
    GUARD_END
}

dishcam_trt_status dishcam_trt_builder_set_input_profile(dishcam_trt_builder* b, const char* input, const dishcam_trt_dims* min,
                                                         const dishcam_trt_dims* opt, const dishcam_trt_dims* max) {
    GUARD_BEGIN
    if (!b || !input || !min || !opt || !max) return fail(DISHCAM_TRT_E_ARGUMENT, "set_input_profile: null argument");
    if (min->rank > DISHCAM_TRT_MAX_DIMS || min->rank != opt->rank || opt->rank != max->rank)
        return fail(DISHCAM_TRT_E_SHAPE, std::string("profile of '") + input + "': ranks differ");
    b->profiles.push_back(Profile{input, to_trt(*min), to_trt(*opt), to_trt(*max)});
    return DISHCAM_TRT_OK;
    GUARD_END
}

dishcam_trt_status dishcam_trt_builder_build(dishcam_trt_builder* b, const void** data, size_t* size) {
    GUARD_BEGIN
    if (!b || !data || !size) return fail(DISHCAM_TRT_E_ARGUMENT, "build: null argument");
    CUDA_TRY("cudaSetDevice", cudaSetDevice(b->device));
    if (!b->profiles.empty()) {
        nvinfer1::IOptimizationProfile* profile = b->builder->createOptimizationProfile();
        for (const auto& p : b->profiles) {
            bool ok = profile->setDimensions(p.name.c_str(), nvinfer1::OptProfileSelector::kMIN, p.min) &&
                      profile->setDimensions(p.name.c_str(), nvinfer1::OptProfileSelector::kOPT, p.opt) &&
                      profile->setDimensions(p.name.c_str(), nvinfer1::OptProfileSelector::kMAX, p.max);
            if (!ok) return fail(DISHCAM_TRT_E_SHAPE, logger().take("invalid optimisation profile for '" + p.name + "'"));
        }
        if (b->config->addOptimizationProfile(profile) < 0)
            return fail(DISHCAM_TRT_E_SHAPE, logger().take("addOptimizationProfile failed"));
    }
    b->serialized.reset(b->builder->buildSerializedNetwork(*b->network, *b->config));
    if (!b->serialized || b->serialized->size() == 0)
        return fail(DISHCAM_TRT_E_BUILD, logger().take("buildSerializedNetwork failed"));
    *data = b->serialized->data();
    *size = b->serialized->size();
    return DISHCAM_TRT_OK;
    GUARD_END
}

void dishcam_trt_builder_destroy(dishcam_trt_builder* b) {
    try {
        if (!b) return;
        // The parser refers to the network, the network to the builder.
        b->parser.reset();
        b->network.reset();
        b->config.reset();
        delete b;
    } catch (...) {
    }
}

dishcam_trt_status dishcam_trt_engine_load(int32_t device, int32_t dla_core, const void* data, size_t size, dishcam_trt_engine** out) {
    GUARD_BEGIN
    if (!data || !out) return fail(DISHCAM_TRT_E_ARGUMENT, "engine_load: null argument");
    *out = nullptr;
    CUDA_TRY("cudaSetDevice", cudaSetDevice(device));
    auto e = std::make_unique<dishcam_trt_engine>();
    e->device = device;
    e->runtime.reset(nvinfer1::createInferRuntime(logger()));
    if (!e->runtime) return fail(DISHCAM_TRT_E_ENGINE, logger().take("createInferRuntime failed"));
    if (dla_core >= 0) e->runtime->setDLACore(dla_core);
    e->engine.reset(e->runtime->deserializeCudaEngine(data, size));
    if (!e->engine) return fail(DISHCAM_TRT_E_ENGINE, logger().take("deserializeCudaEngine failed"));
    e->context.reset(e->engine->createExecutionContext());
    if (!e->context) return fail(DISHCAM_TRT_E_ENGINE, logger().take("createExecutionContext failed"));
    CUDA_TRY("cudaStreamCreate", cudaStreamCreate(&e->stream));
    for (auto& ev : e->events) CUDA_TRY("cudaEventCreate", cudaEventCreate(&ev));
    for (int32_t i = 0; i < e->engine->getNbIOTensors(); ++i) e->names.emplace_back(e->engine->getIOTensorName(i));
    *out = e.release();
    return DISHCAM_TRT_OK;
    GUARD_END
}

dishcam_trt_status dishcam_trt_engine_io_count(dishcam_trt_engine* e, int32_t* count) {
    GUARD_BEGIN
    if (!e || !count) return fail(DISHCAM_TRT_E_ARGUMENT, "io_count: null argument");
    *count = static_cast<int32_t>(e->names.size());
    return DISHCAM_TRT_OK;
    GUARD_END
}

dishcam_trt_status dishcam_trt_engine_io_info(dishcam_trt_engine* e, int32_t index, dishcam_trt_tensor_info* out) {
    GUARD_BEGIN
    if (!e || !out) return fail(DISHCAM_TRT_E_ARGUMENT, "io_info: null argument");
    if (index < 0 || index >= static_cast<int32_t>(e->names.size()))
        return fail(DISHCAM_TRT_E_ARGUMENT, "io_info: index " + std::to_string(index) + " out of range");
    const char* name = e->names[index].c_str();
    out->name = name;
    out->is_input = e->engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? 1 : 0;
    out->dtype = from_trt(e->engine->getTensorDataType(name));
    out->dims = from_trt(e->engine->getTensorShape(name));
    return DISHCAM_TRT_OK;
    GUARD_END
}

dishcam_trt_status dishcam_trt_set_input_shape(dishcam_trt_engine* e, const char* name, const dishcam_trt_dims* dims) {
    GUARD_BEGIN
    if (!e || !name || !dims) return fail(DISHCAM_TRT_E_ARGUMENT, "set_input_shape: null argument");
    if (!e->context->setInputShape(name, to_trt(*dims)))
        return fail(DISHCAM_TRT_E_SHAPE, logger().take(std::string("setInputShape('") + name + "') failed"));
    return DISHCAM_TRT_OK;
    GUARD_END
}

dishcam_trt_status dishcam_trt_tensor_shape(dishcam_trt_engine* e, const char* name, dishcam_trt_dims* out) {
    GUARD_BEGIN
    if (!e || !name || !out) return fail(DISHCAM_TRT_E_ARGUMENT, "tensor_shape: null argument");
    nvinfer1::Dims d = e->context->getTensorShape(name);
    if (d.nbDims < 0) return fail(DISHCAM_TRT_E_ARGUMENT, logger().take(std::string("no shape for tensor '") + name + "'"));
    *out = from_trt(d);
    return DISHCAM_TRT_OK;
    GUARD_END
}

dishcam_trt_status dishcam_trt_set_tensor_address(dishcam_trt_engine* e, const char* name, void* device_ptr) {
    GUARD_BEGIN
    if (!e || !name) return fail(DISHCAM_TRT_E_ARGUMENT, "set_tensor_address: null argument");
    if (!e->context->setTensorAddress(name, device_ptr))
        return fail(DISHCAM_TRT_E_ARGUMENT, logger().take(std::string("setTensorAddress('") + name + "') failed"));
    return DISHCAM_TRT_OK;
    GUARD_END
}

dishcam_trt_status dishcam_trt_record(dishcam_trt_engine* e, int32_t mark) {
    GUARD_BEGIN
    if (!e) return fail(DISHCAM_TRT_E_ARGUMENT, "record: null engine");
    if (mark < 0 || mark > 3) return fail(DISHCAM_TRT_E_ARGUMENT, "record: mark " + std::to_string(mark) + " is not 0..3");
    CUDA_TRY("cudaEventRecord", cudaEventRecord(e->events[mark], e->stream));
    e->recorded[mark] = true;
    return DISHCAM_TRT_OK;
    GUARD_END
}

dishcam_trt_status dishcam_trt_copy_to_device(dishcam_trt_engine* e, void* dst, const void* src, size_t bytes) {
    GUARD_BEGIN
    if (!e || !dst || !src) return fail(DISHCAM_TRT_E_ARGUMENT, "copy_to_device: null argument");
    CUDA_TRY("cudaMemcpyAsync(host to device)", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, e->stream));
    return DISHCAM_TRT_OK;
    GUARD_END
}

dishcam_trt_status dishcam_trt_copy_to_host(dishcam_trt_engine* e, void* dst, const void* src, size_t bytes) {
    GUARD_BEGIN
    if (!e || !dst || !src) return fail(DISHCAM_TRT_E_ARGUMENT, "copy_to_host: null argument");
    CUDA_TRY("cudaMemcpyAsync(device to host)", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, e->stream));
    return DISHCAM_TRT_OK;
    GUARD_END
}

dishcam_trt_status dishcam_trt_enqueue(dishcam_trt_engine* e) {
    GUARD_BEGIN
    if (!e) return fail(DISHCAM_TRT_E_ARGUMENT, "enqueue: null engine");
    if (!e->context->enqueueV3(e->stream)) return fail(DISHCAM_TRT_E_INTERNAL, logger().take("enqueueV3 failed"));
    return DISHCAM_TRT_OK;
    GUARD_END
}

dishcam_trt_status dishcam_trt_sync(dishcam_trt_engine* e, dishcam_trt_timings* t) {
    GUARD_BEGIN
    if (!e) return fail(DISHCAM_TRT_E_ARGUMENT, "sync: null engine");
    CUDA_TRY("cudaStreamSynchronize", cudaStreamSynchronize(e->stream));
    if (t) {
        for (bool r : e->recorded)
            if (!r) return fail(DISHCAM_TRT_E_ARGUMENT, "sync: timings asked for, but not all four marks were recorded");
        CUDA_TRY("cudaEventElapsedTime", cudaEventElapsedTime(&t->h2d_ms, e->events[0], e->events[1]));
        CUDA_TRY("cudaEventElapsedTime", cudaEventElapsedTime(&t->compute_ms, e->events[1], e->events[2]));
        CUDA_TRY("cudaEventElapsedTime", cudaEventElapsedTime(&t->d2h_ms, e->events[2], e->events[3]));
    }
    for (bool& r : e->recorded) r = false;
    return DISHCAM_TRT_OK;
    GUARD_END
}

void dishcam_trt_engine_destroy(dishcam_trt_engine* e) {
    try {
        if (e) cudaSetDevice(e->device);
        delete e;
    } catch (...) {
    }
}

dishcam_trt_status dishcam_trt_device_malloc(int32_t device, size_t bytes, void** out) {
    GUARD_BEGIN
    if (!out) return fail(DISHCAM_TRT_E_ARGUMENT, "device_malloc: null output");
    *out = nullptr;
    CUDA_TRY("cudaSetDevice", cudaSetDevice(device));
    CUDA_TRY("cudaMalloc", cudaMalloc(out, bytes ? bytes : 1));
    return DISHCAM_TRT_OK;
    GUARD_END
}

void dishcam_trt_device_free(void* ptr) {
    if (ptr) cudaFree(ptr);
}

}  // extern "C"

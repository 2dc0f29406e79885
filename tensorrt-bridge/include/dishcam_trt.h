/*
 * dishcam_trt.h: THE C ABI between dishcam (Rust, which opens the bridge library at run time)
 * and the TensorRT bridge (tensorrt-bridge/src/bridge.cpp, built on boards with TensorRT).
 *
 * Rules of the boundary:
 *  - Plain C only: fixed-width integers, opaque handles, structs of fixed layout. It compiles as
 *    C99 and as C++.
 *  - No exception, no C++ object crosses it. Every function that can fail returns a
 *    dishcam_trt_status; on failure dishcam_trt_last_error() describes what happened (on the
 *    calling thread, until the next call on that thread).
 *  - The caller checks dishcam_trt_abi_version() == DISHCAM_TRT_ABI_VERSION before anything
 *    else. Any change to a signature, a struct or a constant below bumps the version.
 *  - Handles are owned by the caller and released with the matching destroy/free function.
 *    Strings and buffers returned by the bridge stay valid for the lifetime of the handle that
 *    returned them.
 *
 * Implementations: bridge.cpp (TensorRT 8.5 to 11) and tests/tensorrt/mock_bridge.c (a CPU
 * stand-in used by dishcam's tests).
 */
#ifndef DISHCAM_TRT_H
#define DISHCAM_TRT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DISHCAM_TRT_ABI_VERSION 1u

/* Status codes (int32_t). */
#define DISHCAM_TRT_OK 0
#define DISHCAM_TRT_E_ARGUMENT 1    /* a null handle, an unknown tensor name, a bad value */
#define DISHCAM_TRT_E_PARSE 2       /* the ONNX parser rejected the model */
#define DISHCAM_TRT_E_BUILD 3       /* building the engine failed */
#define DISHCAM_TRT_E_ENGINE 4      /* deserialising the engine or creating a context failed */
#define DISHCAM_TRT_E_CUDA 5        /* a CUDA call failed */
#define DISHCAM_TRT_E_UNSUPPORTED 6 /* not possible with this TensorRT version or device */
#define DISHCAM_TRT_E_SHAPE 7       /* a shape outside the engine's optimisation profile */
#define DISHCAM_TRT_E_INTERNAL 8    /* anything else, including a caught C++ exception */

/* Tensor element types (int32_t). */
#define DISHCAM_TRT_F32 0
#define DISHCAM_TRT_F16 1
#define DISHCAM_TRT_I8 2
#define DISHCAM_TRT_I32 3
#define DISHCAM_TRT_BOOL 4
#define DISHCAM_TRT_U8 5
#define DISHCAM_TRT_I64 6
#define DISHCAM_TRT_BF16 7
#define DISHCAM_TRT_OTHER 99

/* Build flags (bits of dishcam_trt_build_config.flags). */
#define DISHCAM_TRT_FLAG_FP16 1u
#define DISHCAM_TRT_FLAG_INT8 2u

/* Timing marks, recorded on the engine's stream in this order around one run. */
#define DISHCAM_TRT_MARK_START 0    /* before the host-to-device copies */
#define DISHCAM_TRT_MARK_UPLOADED 1 /* after them, before enqueue */
#define DISHCAM_TRT_MARK_COMPUTED 2 /* after enqueue, before the device-to-host copies */
#define DISHCAM_TRT_MARK_DONE 3     /* after them */

#define DISHCAM_TRT_MAX_DIMS 8
#define DISHCAM_TRT_NAME_LEN 256

typedef int32_t dishcam_trt_status;

typedef struct dishcam_trt_builder dishcam_trt_builder;
typedef struct dishcam_trt_engine dishcam_trt_engine;

/* A shape; -1 marks a dimension fixed only at run time. */
typedef struct dishcam_trt_dims {
    int32_t rank;
    int64_t d[DISHCAM_TRT_MAX_DIMS];
} dishcam_trt_dims;

/* What the engine cache keys on, and what the device can do. */
typedef struct dishcam_trt_platform {
    int32_t trt_major;
    int32_t trt_minor;
    int32_t trt_patch;
    int32_t cuda_runtime; /* e.g. 11040 for CUDA 11.4; 0 when unknown */
    int32_t cc_major;     /* compute capability */
    int32_t cc_minor;
    int32_t dla_cores;
    char device_name[DISHCAM_TRT_NAME_LEN]; /* NUL-terminated */
} dishcam_trt_platform;

typedef struct dishcam_trt_build_config {
    uint32_t flags;           /* DISHCAM_TRT_FLAG_* */
    int32_t dla_core;         /* -1: GPU only; n >= 0: DLA core n with GPU fallback */
    uint64_t workspace_bytes; /* 0: TensorRT's default */
} dishcam_trt_build_config;

typedef struct dishcam_trt_tensor_info {
    const char* name; /* owned by the engine */
    int32_t is_input; /* 1 input, 0 output */
    int32_t dtype;    /* DISHCAM_TRT_* element type */
    dishcam_trt_dims dims;
} dishcam_trt_tensor_info;

typedef struct dishcam_trt_timings {
    float h2d_ms;     /* MARK_START -> MARK_UPLOADED */
    float compute_ms; /* MARK_UPLOADED -> MARK_COMPUTED */
    float d2h_ms;     /* MARK_COMPUTED -> MARK_DONE */
} dishcam_trt_timings;

/* Version and errors. */
uint32_t dishcam_trt_abi_version(void);
const char* dishcam_trt_last_error(void);
dishcam_trt_status dishcam_trt_platform_info(int32_t device, dishcam_trt_platform* out);

/* Building: create, parse, configure, (calibration cache), (profiles), build, destroy. */
dishcam_trt_status dishcam_trt_builder_create(int32_t device, dishcam_trt_builder** out);
dishcam_trt_status dishcam_trt_builder_parse_onnx(dishcam_trt_builder* b, const void* onnx,
                                                  size_t size);
dishcam_trt_status dishcam_trt_builder_configure(dishcam_trt_builder* b,
                                                 const dishcam_trt_build_config* config);
/* Implicit INT8 from a calibration cache (TensorRT < 10.1; E_UNSUPPORTED where removed). */
dishcam_trt_status dishcam_trt_builder_set_calibration_cache(dishcam_trt_builder* b,
                                                             const void* cache, size_t size);
/* The range a dynamic input may take at run time (one optimisation profile). */
dishcam_trt_status dishcam_trt_builder_set_input_profile(dishcam_trt_builder* b,
                                                         const char* input,
                                                         const dishcam_trt_dims* min,
                                                         const dishcam_trt_dims* opt,
                                                         const dishcam_trt_dims* max);
/* Builds and serialises; *data stays valid until the builder is destroyed. */
dishcam_trt_status dishcam_trt_builder_build(dishcam_trt_builder* b, const void** data,
                                             size_t* size);
void dishcam_trt_builder_destroy(dishcam_trt_builder* b);

/* Running: deserialise into an engine with one execution context, one stream, four events. */
dishcam_trt_status dishcam_trt_engine_load(int32_t device, int32_t dla_core, const void* data,
                                           size_t size, dishcam_trt_engine** out);
dishcam_trt_status dishcam_trt_engine_io_count(dishcam_trt_engine* e, int32_t* count);
dishcam_trt_status dishcam_trt_engine_io_info(dishcam_trt_engine* e, int32_t index,
                                              dishcam_trt_tensor_info* out);
dishcam_trt_status dishcam_trt_set_input_shape(dishcam_trt_engine* e, const char* name,
                                               const dishcam_trt_dims* dims);
/* A tensor's shape under the input shapes set so far (outputs: after every input is set). */
dishcam_trt_status dishcam_trt_tensor_shape(dishcam_trt_engine* e, const char* name,
                                            dishcam_trt_dims* out);
dishcam_trt_status dishcam_trt_set_tensor_address(dishcam_trt_engine* e, const char* name,
                                                  void* device_ptr);
dishcam_trt_status dishcam_trt_record(dishcam_trt_engine* e, int32_t mark);
/* Asynchronous on the engine's stream; host memory must stay valid until dishcam_trt_sync. */
dishcam_trt_status dishcam_trt_copy_to_device(dishcam_trt_engine* e, void* dst,
                                              const void* src, size_t bytes);
dishcam_trt_status dishcam_trt_copy_to_host(dishcam_trt_engine* e, void* dst, const void* src,
                                            size_t bytes);
dishcam_trt_status dishcam_trt_enqueue(dishcam_trt_engine* e);
/* Waits for the stream; fills *timings (may be NULL) from the four marks. */
dishcam_trt_status dishcam_trt_sync(dishcam_trt_engine* e, dishcam_trt_timings* timings);
void dishcam_trt_engine_destroy(dishcam_trt_engine* e);

/* Device memory on `device`. */
dishcam_trt_status dishcam_trt_device_malloc(int32_t device, size_t bytes, void** out);
void dishcam_trt_device_free(void* ptr);

#ifdef __cplusplus
}
#endif

#endif /* DISHCAM_TRT_H */

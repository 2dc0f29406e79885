/*
 * The ABI test bridge: dishcam_trt.h implemented on the CPU, so that dishcam's tests can load a
 * bridge library and exercise every function of the ABI without a GPU or TensorRT.
 *
 * - "Parsing" reads the ONNX protobuf: graph name, inputs, outputs, float initializers, nodes.
 * - The "engine" is a header (TensorRT version it was built for, flags, DLA core, profiles)
 *   followed by the ONNX bytes; it executes Identity, MatMul and Gemm (no attributes) in
 *   float32, and refuses to enqueue anything else.
 * - Device memory is malloc, tracked so that copies into freed or too small buffers fail, and
 *   counted (dishcam_trt_mock_live) so tests can check nothing leaks. Events are host clocks.
 * - dishcam_trt_mock_calls(name) counts the calls of each ABI function, so tests can check that
 *   they reached all of them.
 * - A graph named "mock-fail:<stage>" fails at that stage (parse, build, load, shape, enqueue,
 *   sync) with a message naming it.
 *
 * Compile-time knobs: MOCK_ABI_VERSION, MOCK_TRT_MAJOR/MINOR/PATCH, MOCK_OMIT_ENQUEUE.
 * Environment knobs (read at each call): DISHCAM_TRT_MOCK_VERSION ("10.3.0"),
 * DISHCAM_TRT_MOCK_DEVICE (device name), DISHCAM_TRT_MOCK_DLA_CORES.
 */
#define _POSIX_C_SOURCE 200809L
#include "dishcam_trt.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>

#ifndef MOCK_ABI_VERSION
#define MOCK_ABI_VERSION DISHCAM_TRT_ABI_VERSION
#endif
#ifndef MOCK_TRT_MAJOR
#define MOCK_TRT_MAJOR 8
#define MOCK_TRT_MINOR 5
#define MOCK_TRT_PATCH 2
#endif

#define MAXT 64
#define MAXN 64

static _Thread_local char last_error[512];
/* Counters and the allocation list are shared by all threads; one lock guards them. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long live_allocations, live_engines, live_builders;

/* Not part of the ABI: live device allocations (0), engines (1), builders (2). */
long dishcam_trt_mock_live(int what) {
    pthread_mutex_lock(&lock);
    long n = what == 0 ? live_allocations : what == 1 ? live_engines : live_builders;
    pthread_mutex_unlock(&lock);
    return n;
}

/* Not part of the ABI: how often each ABI function was called (-1 for an unknown name). */
static const char* const fn_names[] = {
    "abi_version", "last_error", "platform_info", "builder_create", "builder_parse_onnx",
    "builder_configure", "builder_set_calibration_cache", "builder_set_input_profile",
    "builder_build", "builder_destroy", "engine_load", "engine_io_count", "engine_io_info",
    "set_input_shape", "tensor_shape", "set_tensor_address", "record", "copy_to_device",
    "copy_to_host", "enqueue", "sync", "engine_destroy", "device_malloc", "device_free"};
#define N_FNS (sizeof fn_names / sizeof fn_names[0])
static long fn_calls[N_FNS];

static void called(const char* name) {
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < N_FNS; i++)
        if (!strcmp(fn_names[i], name)) fn_calls[i]++;
    pthread_mutex_unlock(&lock);
}

long dishcam_trt_mock_calls(const char* name) {
    long n = -1;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < N_FNS; i++)
        if (!strcmp(fn_names[i], name)) n = fn_calls[i];
    pthread_mutex_unlock(&lock);
    return n;
}

static void count(long* counter, long delta) {
    pthread_mutex_lock(&lock);
    *counter += delta;
    pthread_mutex_unlock(&lock);
}

static dishcam_trt_status fail(dishcam_trt_status code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

uint32_t dishcam_trt_abi_version(void) {
    called("abi_version");
    return MOCK_ABI_VERSION;
}

const char* dishcam_trt_last_error(void) {
    called("last_error");
    return last_error;
}

static void version(int* major, int* minor, int* patch) {
    const char* v = getenv("DISHCAM_TRT_MOCK_VERSION");
    *major = MOCK_TRT_MAJOR;
    *minor = MOCK_TRT_MINOR;
    *patch = MOCK_TRT_PATCH;
    if (v && *v) sscanf(v, "%d.%d.%d", major, minor, patch);
}

static int version_code(void) {
    int a, b, c;
    version(&a, &b, &c);
    return a * 10000 + b * 100 + c;
}

static int dla_cores(void) {
    const char* v = getenv("DISHCAM_TRT_MOCK_DLA_CORES");
    return v && *v ? atoi(v) : 0;
}

dishcam_trt_status dishcam_trt_platform_info(int32_t device, dishcam_trt_platform* out) {
    called("platform_info");
    if (!out) return fail(DISHCAM_TRT_E_ARGUMENT, "platform_info: null output");
    if (device != 0) return fail(DISHCAM_TRT_E_CUDA, "CUDA device %d does not exist (mock has device 0)", device);
    memset(out, 0, sizeof *out);
    version(&out->trt_major, &out->trt_minor, &out->trt_patch);
    out->cuda_runtime = 11040;
    out->cc_major = 8;
    out->cc_minor = 7;
    out->dla_cores = dla_cores();
    const char* name = getenv("DISHCAM_TRT_MOCK_DEVICE");
    snprintf(out->device_name, sizeof out->device_name, "%s", name && *name ? name : "Mock Orin (CPU)");
    return DISHCAM_TRT_OK;
}

/* ---- a minimal protobuf reader, enough for ONNX ModelProto ---- */

typedef struct { const uint8_t* p; const uint8_t* end; int bad; } pb;

static uint64_t varint(pb* r) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) { r->bad = 1; return 0; }
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
    r->bad = 1;
    return 0;
}

/* Next field: returns 0 at the end or on malformed input; sets *sub for length-delimited. */
static int field(pb* r, int* num, int* wt, uint64_t* val, pb* sub) {
    if (r->bad || r->p >= r->end) return 0;
    uint64_t key = varint(r);
    *num = (int)(key >> 3);
    *wt = (int)(key & 7);
    if (*num == 0) { r->bad = 1; return 0; }
    switch (*wt) {
    case 0: *val = varint(r); break;
    case 1: if (r->end - r->p < 8) { r->bad = 1; return 0; } memcpy(val, r->p, 8); r->p += 8; break;
    case 5: if (r->end - r->p < 4) { r->bad = 1; return 0; } *val = 0; memcpy(val, r->p, 4); r->p += 4; break;
    case 2: {
        uint64_t len = varint(r);
        if (r->bad || len > (uint64_t)(r->end - r->p)) { r->bad = 1; return 0; }
        sub->p = r->p; sub->end = r->p + len; sub->bad = 0;
        r->p += len;
        break;
    }
    default: r->bad = 1; return 0;
    }
    return !r->bad;
}

static void copy_str(char* dst, size_t cap, pb s) {
    size_t n = (size_t)(s.end - s.p);
    if (n >= cap) n = cap - 1;
    memcpy(dst, s.p, n);
    dst[n] = 0;
}

typedef struct {
    char name[DISHCAM_TRT_NAME_LEN];
    int32_t dtype;
    dishcam_trt_dims dims;   /* declared dims, -1 dynamic */
    float* data;             /* initializers and computed values */
    size_t len;
    dishcam_trt_dims shape;  /* current shape (run time) */
    void* address;           /* I/O: bound device address */
    int shape_set;
} value;

typedef struct {
    char op[64];
    int n_in, n_out, has_attrs;
    char in[3][DISHCAM_TRT_NAME_LEN];
    char out[DISHCAM_TRT_NAME_LEN];
} node;

typedef struct {
    char graph_name[DISHCAM_TRT_NAME_LEN];
    int n_inputs, n_outputs, n_inits, n_nodes, has_qdq, executable;
    value inputs[MAXT], outputs[MAXT], inits[MAXT];
    node nodes[MAXN];
    char unsupported[64];
} network;

static int32_t onnx_dtype(uint64_t t) {
    switch (t) {
    case 1: return DISHCAM_TRT_F32;
    case 10: return DISHCAM_TRT_F16;
    case 3: return DISHCAM_TRT_I8;
    case 6: return DISHCAM_TRT_I32;
    case 9: return DISHCAM_TRT_BOOL;
    case 2: return DISHCAM_TRT_U8;
    case 7: return DISHCAM_TRT_I64;
    default: return DISHCAM_TRT_OTHER;
    }
}

static void parse_value_info(pb s, value* v) {
    int num, wt; uint64_t val; pb sub, t, tt, shp, dim;
    memset(v, 0, sizeof *v);
    while (field(&s, &num, &wt, &val, &sub)) {
        if (num == 1 && wt == 2) copy_str(v->name, sizeof v->name, sub);
        if (num == 2 && wt == 2) {           /* TypeProto */
            t = sub;
            while (field(&t, &num, &wt, &val, &tt)) {
                if (num != 1 || wt != 2) continue;  /* tensor_type */
                while (field(&tt, &num, &wt, &val, &shp)) {
                    if (num == 1 && wt == 0) v->dtype = onnx_dtype(val);
                    if (num == 2 && wt == 2) {     /* TensorShapeProto */
                        while (field(&shp, &num, &wt, &val, &dim)) {
                            if (num != 1 || wt != 2 || v->dims.rank >= DISHCAM_TRT_MAX_DIMS) continue;
                            int64_t d = -1;
                            pb dd = dim; int n2, w2; uint64_t v2; pb s2;
                            while (field(&dd, &n2, &w2, &v2, &s2))
                                if (n2 == 1 && w2 == 0) d = (int64_t)v2;
                            v->dims.d[v->dims.rank++] = d;
                        }
                    }
                }
            }
        }
    }
}

static int parse_initializer(pb s, value* v) {
    int num, wt; uint64_t val; pb sub;
    const uint8_t* raw = NULL; size_t raw_len = 0;
    pb floats = {0};
    memset(v, 0, sizeof *v);
    v->dtype = DISHCAM_TRT_F32;
    while (field(&s, &num, &wt, &val, &sub)) {
        if (num == 1 && wt == 0 && v->dims.rank < DISHCAM_TRT_MAX_DIMS) v->dims.d[v->dims.rank++] = (int64_t)val;
        if (num == 1 && wt == 2) { pb d = sub; while (d.p < d.end && !d.bad && v->dims.rank < DISHCAM_TRT_MAX_DIMS) v->dims.d[v->dims.rank++] = (int64_t)varint(&d); }
        if (num == 2 && wt == 0) v->dtype = onnx_dtype(val);
        if (num == 4 && wt == 2) floats = sub;
        if (num == 8 && wt == 2) copy_str(v->name, sizeof v->name, sub);
        if (num == 9 && wt == 2) { raw = sub.p; raw_len = (size_t)(sub.end - sub.p); }
    }
    if (s.bad) return 0;
    if (v->dtype != DISHCAM_TRT_F32) return 1; /* kept for names only */
    size_t n = 1;
    for (int i = 0; i < v->dims.rank; i++) n *= (size_t)v->dims.d[i];
    const uint8_t* src = raw ? raw : floats.p;
    size_t have = raw ? raw_len : (size_t)(floats.end - floats.p);
    if (!src || have != n * 4) return 1;
    v->data = malloc(n * sizeof(float));
    memcpy(v->data, src, n * 4);
    v->len = n;
    v->shape = v->dims;
    return 1;
}

static void parse_node(pb s, node* n) {
    int num, wt; uint64_t val; pb sub;
    memset(n, 0, sizeof *n);
    while (field(&s, &num, &wt, &val, &sub)) {
        if (num == 1 && wt == 2 && n->n_in < 3) copy_str(n->in[n->n_in++], DISHCAM_TRT_NAME_LEN, sub);
        if (num == 2 && wt == 2) { if (n->n_out == 0) copy_str(n->out, sizeof n->out, sub); n->n_out++; }
        if (num == 4 && wt == 2) copy_str(n->op, sizeof n->op, sub);
        if (num == 5 && wt == 2) n->has_attrs = 1;
    }
}

static void free_network(network* net) {
    for (int i = 0; i < net->n_inits; i++) free(net->inits[i].data);
    free(net);
}

/* Parses ModelProto bytes; NULL with the error set on failure. */
static network* parse_model(const void* data, size_t size) {
    pb r = {(const uint8_t*)data, (const uint8_t*)data + size, 0};
    int num, wt; uint64_t val; pb sub, graph = {0};
    int have_graph = 0;
    while (field(&r, &num, &wt, &val, &sub))
        if (num == 7 && wt == 2) { graph = sub; have_graph = 1; }
    if (r.bad || !have_graph) {
        fail(DISHCAM_TRT_E_PARSE, "ONNX parse error: %s", r.bad ? "malformed protobuf" : "the model has no graph");
        return NULL;
    }
    network* net = calloc(1, sizeof *net);
    net->executable = 1;
    while (field(&graph, &num, &wt, &val, &sub)) {
        if (wt != 2) continue;
        if (num == 1 && net->n_nodes < MAXN) {
            node* n = &net->nodes[net->n_nodes++];
            parse_node(sub, n);
            if (!strcmp(n->op, "QuantizeLinear") || !strcmp(n->op, "DequantizeLinear")) net->has_qdq = 1;
            int ok = (!strcmp(n->op, "Identity") && n->n_in == 1) || (!strcmp(n->op, "MatMul") && n->n_in == 2) ||
                     (!strcmp(n->op, "Gemm") && n->n_in >= 2 && !n->has_attrs);
            if (!ok && net->executable) { net->executable = 0; snprintf(net->unsupported, sizeof net->unsupported, "%s", n->op); }
        } else if (num == 1) {
            net->executable = 0;
            snprintf(net->unsupported, sizeof net->unsupported, "more than %d nodes", MAXN);
        }
        if (num == 2) copy_str(net->graph_name, sizeof net->graph_name, sub);
        if (num == 5 && net->n_inits < MAXT) {
            if (!parse_initializer(sub, &net->inits[net->n_inits++])) graph.bad = 1;
        }
        if (num == 11 && net->n_inputs < MAXT) parse_value_info(sub, &net->inputs[net->n_inputs++]);
        if (num == 12 && net->n_outputs < MAXT) parse_value_info(sub, &net->outputs[net->n_outputs++]);
    }
    /* Graph inputs that are initializers are not network inputs (ONNX IR < 4). */
    int k = 0;
    for (int i = 0; i < net->n_inputs; i++) {
        int is_init = 0;
        for (int j = 0; j < net->n_inits; j++) is_init |= !strcmp(net->inputs[i].name, net->inits[j].name);
        if (!is_init) net->inputs[k++] = net->inputs[i];
    }
    net->n_inputs = k;
    if (graph.bad || net->n_outputs == 0) {
        free_network(net);
        fail(DISHCAM_TRT_E_PARSE, "ONNX parse error: %s", graph.bad ? "malformed graph" : "the graph has no outputs");
        return NULL;
    }
    return net;
}

static int fails_at(const network* net, const char* stage) {
    return !strncmp(net->graph_name, "mock-fail:", 10) && !strcmp(net->graph_name + 10, stage);
}

/* ---- builder ---- */

typedef struct { char name[DISHCAM_TRT_NAME_LEN]; dishcam_trt_dims min, opt, max; } profile;

#define HEADER_MAGIC "DCMOCKENGINE"

typedef struct {
    char magic[12];
    int32_t trt_version;
    uint32_t flags;
    int32_t dla_core;
    int32_t calibration_entries;
    int32_t n_profiles;
    profile profiles[8];
} header;

struct dishcam_trt_builder {
    network* net;
    const uint8_t* onnx;
    size_t onnx_size;
    uint8_t* onnx_copy;
    dishcam_trt_build_config config;
    int configured;
    int calibration_entries;
    int n_profiles;
    profile profiles[8];
    uint8_t* serialized;
};

dishcam_trt_status dishcam_trt_builder_create(int32_t device, dishcam_trt_builder** out) {
    called("builder_create");
    if (!out) return fail(DISHCAM_TRT_E_ARGUMENT, "builder_create: null output");
    if (device != 0) return fail(DISHCAM_TRT_E_CUDA, "CUDA device %d does not exist", device);
    *out = calloc(1, sizeof **out);
    (*out)->config.dla_core = -1;
    count(&live_builders, 1);
    return DISHCAM_TRT_OK;
}

dishcam_trt_status dishcam_trt_builder_parse_onnx(dishcam_trt_builder* b, const void* onnx, size_t size) {
    called("builder_parse_onnx");
    if (!b || !onnx) return fail(DISHCAM_TRT_E_ARGUMENT, "parse_onnx: null argument");
    if (b->net) return fail(DISHCAM_TRT_E_ARGUMENT, "parse_onnx: this builder already holds a network");
    network* net = parse_model(onnx, size);
    if (!net) return DISHCAM_TRT_E_PARSE;
    if (fails_at(net, "parse")) {
        free_network(net);
        return fail(DISHCAM_TRT_E_PARSE, "mock parser: failing on request (graph mock-fail:parse)");
    }
    b->net = net;
    b->onnx_copy = malloc(size);
    memcpy(b->onnx_copy, onnx, size);
    b->onnx = b->onnx_copy;
    b->onnx_size = size;
    return DISHCAM_TRT_OK;
}

dishcam_trt_status dishcam_trt_builder_configure(dishcam_trt_builder* b, const dishcam_trt_build_config* c) {
    called("builder_configure");
    if (!b || !c) return fail(DISHCAM_TRT_E_ARGUMENT, "configure: null argument");
    if (c->flags & ~(DISHCAM_TRT_FLAG_FP16 | DISHCAM_TRT_FLAG_INT8)) return fail(DISHCAM_TRT_E_ARGUMENT, "configure: unknown flags %u", c->flags);
    if (c->dla_core >= dla_cores()) return fail(DISHCAM_TRT_E_UNSUPPORTED, "DLA core %d requested, this device has %d", c->dla_core, dla_cores());
    b->config = *c;
    b->configured = 1;
    return DISHCAM_TRT_OK;
}

dishcam_trt_status dishcam_trt_builder_set_calibration_cache(dishcam_trt_builder* b, const void* cache, size_t size) {
    called("builder_set_calibration_cache");
    if (!b || !cache) return fail(DISHCAM_TRT_E_ARGUMENT, "set_calibration_cache: null argument");
    if (version_code() >= 100100) return fail(DISHCAM_TRT_E_UNSUPPORTED, "implicit INT8 calibration is deprecated in TensorRT 10.1 and removed in 11; use the Q/DQ model");
    const char* text = cache;
    if (size < 4 || memcmp(text, "TRT-", 4)) return fail(DISHCAM_TRT_E_ARGUMENT, "not a TensorRT calibration cache (no TRT- header)");
    int lines = 0;
    for (size_t i = 0; i < size; i++) lines += text[i] == '\n';
    b->calibration_entries = lines > 0 ? lines - 1 : 0;
    return DISHCAM_TRT_OK;
}

dishcam_trt_status dishcam_trt_builder_set_input_profile(dishcam_trt_builder* b, const char* input, const dishcam_trt_dims* min,
                                                         const dishcam_trt_dims* opt, const dishcam_trt_dims* max) {
    called("builder_set_input_profile");
    if (!b || !input || !min || !opt || !max) return fail(DISHCAM_TRT_E_ARGUMENT, "set_input_profile: null argument");
    if (!b->net) return fail(DISHCAM_TRT_E_ARGUMENT, "set_input_profile: parse a model first");
    int found = 0;
    for (int i = 0; i < b->net->n_inputs; i++) found |= !strcmp(b->net->inputs[i].name, input);
    if (!found) return fail(DISHCAM_TRT_E_ARGUMENT, "the network has no input '%s'", input);
    if (min->rank != opt->rank || opt->rank != max->rank) return fail(DISHCAM_TRT_E_SHAPE, "profile of '%s': ranks differ", input);
    for (int i = 0; i < min->rank; i++)
        if (min->d[i] > opt->d[i] || opt->d[i] > max->d[i] || min->d[i] < 0)
            return fail(DISHCAM_TRT_E_SHAPE, "profile of '%s': dimension %d needs 0 <= min <= opt <= max", input, i);
    if (b->n_profiles >= 8) return fail(DISHCAM_TRT_E_ARGUMENT, "too many profiles");
    profile* p = &b->profiles[b->n_profiles++];
    snprintf(p->name, sizeof p->name, "%s", input);
    p->min = *min; p->opt = *opt; p->max = *max;
    return DISHCAM_TRT_OK;
}

dishcam_trt_status dishcam_trt_builder_build(dishcam_trt_builder* b, const void** data, size_t* size) {
    called("builder_build");
    if (!b || !data || !size) return fail(DISHCAM_TRT_E_ARGUMENT, "build: null argument");
    if (!b->net) return fail(DISHCAM_TRT_E_BUILD, "build: no network was parsed");
    if (!b->configured) return fail(DISHCAM_TRT_E_BUILD, "build: configure was not called");
    if (fails_at(b->net, "build")) return fail(DISHCAM_TRT_E_BUILD, "mock builder: failing on request (graph mock-fail:build)");
    for (int i = 0; i < b->net->n_inputs; i++) {
        const value* in = &b->net->inputs[i];
        int dynamic = 0, profiled = 0;
        for (int d = 0; d < in->dims.rank; d++) dynamic |= in->dims.d[d] < 0;
        for (int p = 0; p < b->n_profiles; p++) profiled |= !strcmp(b->profiles[p].name, in->name);
        if (dynamic && !profiled) return fail(DISHCAM_TRT_E_BUILD, "network has dynamic input '%s' but no optimization profile defines it", in->name);
    }
    if ((b->config.flags & DISHCAM_TRT_FLAG_INT8) && !b->net->has_qdq && !b->calibration_entries)
        return fail(DISHCAM_TRT_E_BUILD, "INT8 requested, but the network has no Q/DQ nodes and no calibration cache was set");
    header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, HEADER_MAGIC, 12);
    h.trt_version = version_code();
    h.flags = b->config.flags;
    h.dla_core = b->config.dla_core;
    h.calibration_entries = b->calibration_entries;
    h.n_profiles = b->n_profiles;
    memcpy(h.profiles, b->profiles, sizeof h.profiles);
    free(b->serialized);
    b->serialized = malloc(sizeof h + b->onnx_size);
    memcpy(b->serialized, &h, sizeof h);
    memcpy(b->serialized + sizeof h, b->onnx, b->onnx_size);
    *data = b->serialized;
    *size = sizeof h + b->onnx_size;
    return DISHCAM_TRT_OK;
}

void dishcam_trt_builder_destroy(dishcam_trt_builder* b) {
    called("builder_destroy");
    if (!b) return;
    if (b->net) free_network(b->net);
    free(b->onnx_copy);
    free(b->serialized);
    free(b);
    count(&live_builders, -1);
}

/* ---- device memory ---- */

typedef struct allocation { void* p; size_t n; struct allocation* next; } allocation;
static allocation* allocations;

/* Whether [p, p + bytes) lies inside one live allocation. */
static int find_allocation(const void* p, size_t bytes) {
    int found = 0;
    pthread_mutex_lock(&lock);
    for (allocation* a = allocations; a && !found; a = a->next)
        found = (const char*)p >= (const char*)a->p && (const char*)p + bytes <= (const char*)a->p + a->n;
    pthread_mutex_unlock(&lock);
    return found;
}

dishcam_trt_status dishcam_trt_device_malloc(int32_t device, size_t bytes, void** out) {
    called("device_malloc");
    if (!out) return fail(DISHCAM_TRT_E_ARGUMENT, "device_malloc: null output");
    if (device != 0) return fail(DISHCAM_TRT_E_CUDA, "cudaMalloc: invalid device ordinal %d", device);
    if (bytes == 0) bytes = 1;
    allocation* a = malloc(sizeof *a);
    a->p = malloc(bytes);
    a->n = bytes;
    pthread_mutex_lock(&lock);
    a->next = allocations;
    allocations = a;
    live_allocations++;
    pthread_mutex_unlock(&lock);
    *out = a->p;
    return DISHCAM_TRT_OK;
}

void dishcam_trt_device_free(void* ptr) {
    called("device_free");
    allocation* dead = NULL;
    pthread_mutex_lock(&lock);
    for (allocation** a = &allocations; *a; a = &(*a)->next) {
        if ((*a)->p == ptr) {
            dead = *a;
            *a = dead->next;
            live_allocations--;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    if (dead) {
        free(dead->p);
        free(dead);
    }
}

/* ---- engine ---- */

struct dishcam_trt_engine {
    header h;
    network* net;
    double marks[4];
    int marked[4];
};

dishcam_trt_status dishcam_trt_engine_load(int32_t device, int32_t dla_core, const void* data, size_t size, dishcam_trt_engine** out) {
    called("engine_load");
    if (!data || !out) return fail(DISHCAM_TRT_E_ARGUMENT, "engine_load: null argument");
    if (device != 0) return fail(DISHCAM_TRT_E_CUDA, "CUDA device %d does not exist", device);
    header h;
    if (size < sizeof h || memcmp(data, HEADER_MAGIC, 12)) return fail(DISHCAM_TRT_E_ENGINE, "deserializeCudaEngine: not an engine (bad magic)");
    memcpy(&h, data, sizeof h);
    if (h.trt_version != version_code())
        return fail(DISHCAM_TRT_E_ENGINE, "engine was built with TensorRT %d, this is %d", h.trt_version, version_code());
    if (h.dla_core != dla_core) return fail(DISHCAM_TRT_E_ENGINE, "engine was built for DLA core %d, loading on %d", h.dla_core, dla_core);
    network* net = parse_model((const uint8_t*)data + sizeof h, size - sizeof h);
    if (!net) return fail(DISHCAM_TRT_E_ENGINE, "deserializeCudaEngine: corrupt engine");
    if (fails_at(net, "load")) {
        free_network(net);
        return fail(DISHCAM_TRT_E_ENGINE, "mock runtime: failing on request (graph mock-fail:load)");
    }
    dishcam_trt_engine* e = calloc(1, sizeof *e);
    e->h = h;
    e->net = net;
    count(&live_engines, 1);
    *out = e;
    return DISHCAM_TRT_OK;
}

void dishcam_trt_engine_destroy(dishcam_trt_engine* e) {
    called("engine_destroy");
    if (!e) return;
    free_network(e->net);
    free(e);
    count(&live_engines, -1);
}

dishcam_trt_status dishcam_trt_engine_io_count(dishcam_trt_engine* e, int32_t* count) {
    called("engine_io_count");
    if (!e || !count) return fail(DISHCAM_TRT_E_ARGUMENT, "io_count: null argument");
    *count = e->net->n_inputs + e->net->n_outputs;
    return DISHCAM_TRT_OK;
}

static value* io_at(dishcam_trt_engine* e, int index, int* is_input) {
    if (index < 0) return NULL;
    if (index < e->net->n_inputs) { *is_input = 1; return &e->net->inputs[index]; }
    index -= e->net->n_inputs;
    if (index < e->net->n_outputs) { *is_input = 0; return &e->net->outputs[index]; }
    return NULL;
}

static value* io_named(dishcam_trt_engine* e, const char* name, int* is_input) {
    int n = e->net->n_inputs + e->net->n_outputs;
    for (int i = 0; i < n; i++) {
        value* v = io_at(e, i, is_input);
        if (!strcmp(v->name, name)) return v;
    }
    return NULL;
}

dishcam_trt_status dishcam_trt_engine_io_info(dishcam_trt_engine* e, int32_t index, dishcam_trt_tensor_info* out) {
    called("engine_io_info");
    if (!e || !out) return fail(DISHCAM_TRT_E_ARGUMENT, "io_info: null argument");
    int is_input;
    value* v = io_at(e, index, &is_input);
    if (!v) return fail(DISHCAM_TRT_E_ARGUMENT, "io_info: index %d out of range", index);
    out->name = v->name;
    out->is_input = is_input;
    out->dtype = v->dtype;
    out->dims = v->dims;
    return DISHCAM_TRT_OK;
}

dishcam_trt_status dishcam_trt_set_input_shape(dishcam_trt_engine* e, const char* name, const dishcam_trt_dims* dims) {
    called("set_input_shape");
    if (!e || !name || !dims) return fail(DISHCAM_TRT_E_ARGUMENT, "set_input_shape: null argument");
    int is_input;
    value* v = io_named(e, name, &is_input);
    if (!v || !is_input) return fail(DISHCAM_TRT_E_ARGUMENT, "the engine has no input tensor '%s'", name);
    if (fails_at(e->net, "shape")) return fail(DISHCAM_TRT_E_SHAPE, "mock context: failing on request (graph mock-fail:shape)");
    if (dims->rank != v->dims.rank) return fail(DISHCAM_TRT_E_SHAPE, "input '%s': rank %d given, the engine has %d", name, dims->rank, v->dims.rank);
    const profile* p = NULL;
    for (int i = 0; i < e->h.n_profiles; i++) if (!strcmp(e->h.profiles[i].name, name)) p = &e->h.profiles[i];
    for (int d = 0; d < dims->rank; d++) {
        int64_t lo = v->dims.d[d] >= 0 ? v->dims.d[d] : p ? p->min.d[d] : 0;
        int64_t hi = v->dims.d[d] >= 0 ? v->dims.d[d] : p ? p->max.d[d] : 0;
        if (dims->d[d] < lo || dims->d[d] > hi)
            return fail(DISHCAM_TRT_E_SHAPE, "input '%s': dimension %d is %lld, the engine's profile allows %lld..%lld", name, d,
                        (long long)dims->d[d], (long long)lo, (long long)hi);
    }
    v->shape = *dims;
    v->shape_set = 1;
    return DISHCAM_TRT_OK;
}

/* Values by name during shape inference / execution: inputs, initializers, computed. */
typedef struct { value* v[MAXT * 2 + MAXN]; value computed[MAXN]; int n, n_computed; } scope;

static value* lookup(scope* s, const char* name) {
    for (int i = s->n - 1; i >= 0; i--) if (!strcmp(s->v[i]->name, name)) return s->v[i];
    return NULL;
}

/* Runs the graph: shapes only (compute == 0) or shapes and data. */
static dishcam_trt_status evaluate(dishcam_trt_engine* e, int compute, scope* s) {
    network* net = e->net;
    s->n = 0;
    s->n_computed = 0;
    for (int i = 0; i < net->n_inputs; i++) {
        if (!net->inputs[i].shape_set) return fail(DISHCAM_TRT_E_SHAPE, "input '%s' has no shape set", net->inputs[i].name);
        s->v[s->n++] = &net->inputs[i];
    }
    for (int i = 0; i < net->n_inits; i++) s->v[s->n++] = &net->inits[i];
    if (!net->executable) return fail(DISHCAM_TRT_E_UNSUPPORTED, "the mock bridge cannot execute op '%s'", net->unsupported);
    for (int i = 0; i < net->n_nodes; i++) {
        node* n = &net->nodes[i];
        value* a = lookup(s, n->in[0]);
        value* b = n->n_in > 1 ? lookup(s, n->in[1]) : NULL;
        value* c = n->n_in > 2 ? lookup(s, n->in[2]) : NULL;
        if (!a || (n->n_in > 1 && !b) || (n->n_in > 2 && !c)) return fail(DISHCAM_TRT_E_INTERNAL, "node %s: an input is undefined", n->op);
        value* out = &s->computed[s->n_computed++];
        memset(out, 0, sizeof *out);
        snprintf(out->name, sizeof out->name, "%s", n->out);
        out->dtype = DISHCAM_TRT_F32;
        if (!strcmp(n->op, "Identity")) {
            out->shape = a->shape;
        } else {
            if (a->shape.rank != 2 || b->shape.rank != 2 || a->shape.d[1] != b->shape.d[0])
                return fail(DISHCAM_TRT_E_SHAPE, "%s: shapes do not multiply", n->op);
            out->shape.rank = 2;
            out->shape.d[0] = a->shape.d[0];
            out->shape.d[1] = b->shape.d[1];
        }
        if (compute) {
            size_t len = 1;
            for (int d = 0; d < out->shape.rank; d++) len *= (size_t)out->shape.d[d];
            const float* ad = a->address ? a->address : a->data;
            const float* bd = b ? (b->address ? b->address : b->data) : NULL;
            out->data = calloc(len ? len : 1, sizeof(float));
            out->len = len;
            if (!strcmp(n->op, "Identity")) {
                memcpy(out->data, ad, len * sizeof(float));
            } else {
                int64_t m = a->shape.d[0], k = a->shape.d[1], nn = b->shape.d[1];
                for (int64_t r = 0; r < m; r++)
                    for (int64_t col = 0; col < nn; col++) {
                        float acc = c && c->data ? c->data[c->len == (size_t)nn ? col : 0] : 0.0f;
                        for (int64_t j = 0; j < k; j++) acc += ad[r * k + j] * bd[j * nn + col];
                        out->data[r * nn + col] = acc;
                    }
            }
        }
        s->v[s->n++] = out;
    }
    return DISHCAM_TRT_OK;
}

static void release(scope* s) {
    for (int i = 0; i < s->n_computed; i++) free(s->computed[i].data);
}

dishcam_trt_status dishcam_trt_tensor_shape(dishcam_trt_engine* e, const char* name, dishcam_trt_dims* out) {
    called("tensor_shape");
    if (!e || !name || !out) return fail(DISHCAM_TRT_E_ARGUMENT, "tensor_shape: null argument");
    int is_input;
    value* v = io_named(e, name, &is_input);
    if (!v) return fail(DISHCAM_TRT_E_ARGUMENT, "the engine has no tensor '%s'", name);
    if (is_input) { *out = v->shape_set ? v->shape : v->dims; return DISHCAM_TRT_OK; }
    static _Thread_local scope s;
    dishcam_trt_status st = evaluate(e, 0, &s);
    if (st != DISHCAM_TRT_OK) { release(&s); return st; }
    value* r = lookup(&s, name);
    if (!r) { release(&s); return fail(DISHCAM_TRT_E_INTERNAL, "output '%s' is not computed by the graph", name); }
    *out = r->shape;
    release(&s);
    return DISHCAM_TRT_OK;
}

dishcam_trt_status dishcam_trt_set_tensor_address(dishcam_trt_engine* e, const char* name, void* device_ptr) {
    called("set_tensor_address");
    if (!e || !name) return fail(DISHCAM_TRT_E_ARGUMENT, "set_tensor_address: null argument");
    int is_input;
    value* v = io_named(e, name, &is_input);
    if (!v) return fail(DISHCAM_TRT_E_ARGUMENT, "the engine has no tensor '%s'", name);
    if (device_ptr && !find_allocation(device_ptr, 1)) return fail(DISHCAM_TRT_E_CUDA, "tensor '%s': %p is not device memory", name, device_ptr);
    v->address = device_ptr;
    return DISHCAM_TRT_OK;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

dishcam_trt_status dishcam_trt_record(dishcam_trt_engine* e, int32_t mark) {
    called("record");
    if (!e) return fail(DISHCAM_TRT_E_ARGUMENT, "record: null engine");
    if (mark < 0 || mark > 3) return fail(DISHCAM_TRT_E_ARGUMENT, "record: mark %d is not 0..3", mark);
    e->marks[mark] = now_ms();
    e->marked[mark] = 1;
    return DISHCAM_TRT_OK;
}

dishcam_trt_status dishcam_trt_copy_to_device(dishcam_trt_engine* e, void* dst, const void* src, size_t bytes) {
    called("copy_to_device");
    if (!e || !dst || !src) return fail(DISHCAM_TRT_E_ARGUMENT, "copy_to_device: null argument");
    if (!find_allocation(dst, bytes)) return fail(DISHCAM_TRT_E_CUDA, "cudaMemcpyAsync: %zu bytes to %p is outside any device allocation", bytes, dst);
    memcpy(dst, src, bytes);
    return DISHCAM_TRT_OK;
}

dishcam_trt_status dishcam_trt_copy_to_host(dishcam_trt_engine* e, void* dst, const void* src, size_t bytes) {
    called("copy_to_host");
    if (!e || !dst || !src) return fail(DISHCAM_TRT_E_ARGUMENT, "copy_to_host: null argument");
    if (!find_allocation(src, bytes)) return fail(DISHCAM_TRT_E_CUDA, "cudaMemcpyAsync: %zu bytes from %p is outside any device allocation", bytes, src);
    memcpy(dst, src, bytes);
    return DISHCAM_TRT_OK;
}

#ifndef MOCK_OMIT_ENQUEUE
dishcam_trt_status dishcam_trt_enqueue(dishcam_trt_engine* e) {
    called("enqueue");
    if (!e) return fail(DISHCAM_TRT_E_ARGUMENT, "enqueue: null engine");
    if (fails_at(e->net, "enqueue")) return fail(DISHCAM_TRT_E_INTERNAL, "mock enqueueV3: failing on request (graph mock-fail:enqueue)");
    network* net = e->net;
    for (int i = 0; i < net->n_inputs + net->n_outputs; i++) {
        int is_input;
        value* v = io_at(e, i, &is_input);
        if (!v->address) return fail(DISHCAM_TRT_E_ARGUMENT, "enqueueV3: tensor '%s' has no address", v->name);
        if (!find_allocation(v->address, 1)) return fail(DISHCAM_TRT_E_CUDA, "enqueueV3: tensor '%s' is bound to freed memory", v->name);
    }
    static _Thread_local scope s;
    dishcam_trt_status st = evaluate(e, 1, &s);
    if (st != DISHCAM_TRT_OK) { release(&s); return st; }
    for (int i = 0; i < net->n_outputs; i++) {
        value* o = &net->outputs[i];
        value* r = lookup(&s, o->name);
        if (!r) { release(&s); return fail(DISHCAM_TRT_E_INTERNAL, "output '%s' is not computed", o->name); }
        if (!find_allocation(o->address, r->len * sizeof(float))) {
            release(&s);
            return fail(DISHCAM_TRT_E_CUDA, "enqueueV3: output '%s' needs %zu bytes, its buffer is smaller", o->name, r->len * sizeof(float));
        }
        memcpy(o->address, r->data, r->len * sizeof(float));
    }
    release(&s);
    return DISHCAM_TRT_OK;
}
#endif

dishcam_trt_status dishcam_trt_sync(dishcam_trt_engine* e, dishcam_trt_timings* t) {
    called("sync");
    if (!e) return fail(DISHCAM_TRT_E_ARGUMENT, "sync: null engine");
    if (fails_at(e->net, "sync")) return fail(DISHCAM_TRT_E_CUDA, "cudaStreamSynchronize: failing on request (graph mock-fail:sync)");
    if (t) {
        if (!(e->marked[0] && e->marked[1] && e->marked[2] && e->marked[3]))
            return fail(DISHCAM_TRT_E_ARGUMENT, "sync: timings asked for, but not all four marks were recorded");
        t->h2d_ms = (float)(e->marks[1] - e->marks[0]);
        t->compute_ms = (float)(e->marks[2] - e->marks[1]);
        t->d2h_ms = (float)(e->marks[3] - e->marks[2]);
    }
    memset(e->marked, 0, sizeof e->marked);
    return DISHCAM_TRT_OK;
}

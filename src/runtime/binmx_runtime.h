/*
 * binmx runtime: the C API (the one door into the engine; docs/design.md, "Runtime").
 *
 * Loads a model that model_converter wrote (PREFIX-symbol.json + PREFIX-NNNN.params, folded or
 * not) for one fixed input shape and runs it, without MXNet or Python. Plain C, opaque
 * handles, no exception crosses it: every function that can fail returns 0 on success or -1,
 * and binmx_last_error() then gives a one-line message (thread-local, valid until the next
 * failing call on that thread).
 *
 *   binmx_model* m;
 *   int64_t shape[4] = {1, 3, 224, 224};
 *   if (binmx_model_load("resnet18", 1, shape, 4, 0, &m) != 0) puts(binmx_last_error());
 *   binmx_model_run(m, x, 1 * 3 * 224 * 224, y, binmx_model_output_size(m));
 *   binmx_model_free(m);
 *
 * A model may be run from several threads at once. threads: >= 1, or 0 for the default
 * (OMP_NUM_THREADS when set, else the hardware threads).
 */
#ifndef BINMX_RUNTIME_H_
#define BINMX_RUNTIME_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define BINMX_RT_API __attribute__((visibility("default")))
#else
#define BINMX_RT_API
#endif

typedef struct binmx_model binmx_model;

/* The last error of this thread ("" if none). */
BINMX_RT_API const char* binmx_last_error(void);
/* "0.1.0". */
BINMX_RT_API const char* binmx_runtime_version(void);

/* Loads PREFIX-symbol.json and PREFIX-%04d.params (epoch). */
BINMX_RT_API int binmx_model_load(const char* prefix, int epoch, const int64_t* input_shape,
                                  int ndim, int threads, binmx_model** out);
/* The same from explicit file names. */
BINMX_RT_API int binmx_model_load_files(const char* symbol_path, const char* params_path,
                                        const int64_t* input_shape, int ndim, int threads,
                                        binmx_model** out);
/* The same from bytes in memory (`name` is used in error messages). */
BINMX_RT_API int binmx_model_load_memory(const char* symbol_json, int64_t symbol_len,
                                         const void* params, int64_t params_len,
                                         const int64_t* input_shape, int ndim, int threads,
                                         const char* name, binmx_model** out);
BINMX_RT_API void binmx_model_free(binmx_model* model);

/* Shapes: writes up to `capacity` dims to shape, returns the rank (or -1). */
BINMX_RT_API int binmx_model_input_shape(const binmx_model* model, int64_t* shape, int capacity);
BINMX_RT_API int binmx_model_output_shape(const binmx_model* model, int64_t* shape, int capacity);
BINMX_RT_API int64_t binmx_model_input_size(const binmx_model* model);
BINMX_RT_API int64_t binmx_model_output_size(const binmx_model* model);
BINMX_RT_API int binmx_model_threads(const binmx_model* model);
/* The kernel path in use: "scalar", "avx2", "avx512", "neon". */
BINMX_RT_API const char* binmx_model_isa(const binmx_model* model);
/* Bytes of the activation arena and scratch of one run, and of the parameters loaded. */
BINMX_RT_API int64_t binmx_model_arena_bytes(const binmx_model* model);
BINMX_RT_API int64_t binmx_model_weight_bytes(const binmx_model* model);

/* input: input_len floats (must equal binmx_model_input_size), output: output_len floats
 * (must equal binmx_model_output_size). */
BINMX_RT_API int binmx_model_run(const binmx_model* model, const float* input, int64_t input_len,
                                 float* output, int64_t output_len);

/* Layers of the plan (after fusion), for profiles and summaries. */
BINMX_RT_API int binmx_model_num_layers(const binmx_model* model);
/* name / op point into the model (valid while it lives); shape as above (rank returned). */
BINMX_RT_API int binmx_model_layer(const binmx_model* model, int index, const char** name,
                                   const char** op, int64_t* shape, int capacity, int* rank,
                                   int64_t* binary_macs, int64_t* float_macs);
/* Runs once untimed, then `repeat` times; ms_out[i] = median ms of layer i. */
BINMX_RT_API int binmx_model_profile(const binmx_model* model, const float* input,
                                     int64_t input_len, int repeat, double* ms_out, int num_layers);

#ifdef __cplusplus
}
#endif

#endif /* BINMX_RUNTIME_H_ */

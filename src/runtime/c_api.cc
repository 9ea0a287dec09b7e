// binmx runtime: the C API (binmx_runtime.h) over rt::Model; catches every exception.
#include "binmx_runtime.h"

#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "model.h"
#include "rt_common.h"

struct binmx_model {
  std::unique_ptr<binmx::rt::Model> model;
};

namespace {

thread_local std::string t_error;

int SetError(const std::string& message) {
  t_error = message;
  return -1;
}

template <typename Fn>
int Guard(Fn fn) {
  try {
    fn();
    return 0;
  } catch (const std::bad_alloc&) {
    return SetError("out of memory");
  } catch (const std::exception& e) {
    return SetError(e.what());
  } catch (...) {
    return SetError("unknown error");
  }
}

bool ShapeArg(const int64_t* shape, int ndim, std::vector<int64_t>* out) {
  if (shape == nullptr || ndim < 1 || ndim > 8) {
    SetError("input_shape must have 1 to 8 dimensions, got " + std::to_string(ndim));
    return false;
  }
  out->assign(shape, shape + ndim);
  return true;
}

int CopyShape(const std::vector<int64_t>& s, int64_t* shape, int capacity) {
  if (shape != nullptr) {
    for (int i = 0; i < capacity && i < static_cast<int>(s.size()); ++i) shape[i] = s[i];
  }
  return static_cast<int>(s.size());
}

}  // namespace

extern "C" {

const char* binmx_last_error(void) { return t_error.c_str(); }
const char* binmx_runtime_version(void) { return "0.1.0"; }

int binmx_model_load_files(const char* symbol_path, const char* params_path,
                           const int64_t* input_shape, int ndim, int threads, binmx_model** out) {
  if (out == nullptr) return SetError("out is null");
  *out = nullptr;
  if (symbol_path == nullptr || params_path == nullptr) return SetError("a file name is null");
  std::vector<int64_t> shape;
  if (!ShapeArg(input_shape, ndim, &shape)) return -1;
  return Guard([&] {
    auto m = binmx::rt::Model::Load(symbol_path, params_path, shape, threads);
    *out = new binmx_model{std::move(m)};
  });
}

int binmx_model_load(const char* prefix, int epoch, const int64_t* input_shape, int ndim,
                     int threads, binmx_model** out) {
  if (out == nullptr) return SetError("out is null");
  *out = nullptr;
  if (prefix == nullptr) return SetError("prefix is null");
  if (epoch < 0 || epoch > 9999)
    return SetError("epoch must be in [0, 9999], got " + std::to_string(epoch));
  char suffix[32];
  std::snprintf(suffix, sizeof(suffix), "-%04d.params", epoch);
  const std::string p(prefix);
  return binmx_model_load_files((p + "-symbol.json").c_str(), (p + suffix).c_str(), input_shape,
                                ndim, threads, out);
}

int binmx_model_load_memory(const char* symbol_json, int64_t symbol_len, const void* params,
                            int64_t params_len, const int64_t* input_shape, int ndim, int threads,
                            const char* name, binmx_model** out) {
  if (out == nullptr) return SetError("out is null");
  *out = nullptr;
  if (symbol_json == nullptr || params == nullptr || symbol_len < 0 || params_len < 0) {
    return SetError("symbol or params buffer is null or has a negative length");
  }
  std::vector<int64_t> shape;
  if (!ShapeArg(input_shape, ndim, &shape)) return -1;
  return Guard([&] {
    auto m = binmx::rt::Model::LoadFromMemory(
        std::string(symbol_json, static_cast<size_t>(symbol_len)),
        std::string(static_cast<const char*>(params), static_cast<size_t>(params_len)), shape,
        threads, name ? name : "model");
    *out = new binmx_model{std::move(m)};
  });
}

void binmx_model_free(binmx_model* model) { delete model; }

int binmx_model_input_shape(const binmx_model* m, int64_t* shape, int capacity) {
  if (m == nullptr) return SetError("model is null");
  return CopyShape(m->model->input_shape(), shape, capacity);
}
int binmx_model_output_shape(const binmx_model* m, int64_t* shape, int capacity) {
  if (m == nullptr) return SetError("model is null");
  return CopyShape(m->model->output_shape(), shape, capacity);
}
int64_t binmx_model_input_size(const binmx_model* m) {
  return m == nullptr ? SetError("model is null") : m->model->input_count();
}
int64_t binmx_model_output_size(const binmx_model* m) {
  return m == nullptr ? SetError("model is null") : m->model->output_count();
}
int binmx_model_threads(const binmx_model* m) {
  return m == nullptr ? SetError("model is null") : m->model->threads();
}
const char* binmx_model_isa(const binmx_model* m) {
  return m == nullptr ? "" : binmx::IsaName(m->model->isa());
}
int64_t binmx_model_arena_bytes(const binmx_model* m) {
  return m == nullptr ? SetError("model is null") : static_cast<int64_t>(m->model->arena_bytes());
}
int64_t binmx_model_weight_bytes(const binmx_model* m) {
  return m == nullptr ? SetError("model is null") : static_cast<int64_t>(m->model->weight_bytes());
}

int binmx_model_run(const binmx_model* m, const float* input, int64_t input_len, float* output,
                    int64_t output_len) {
  if (m == nullptr) return SetError("model is null");
  if (input == nullptr || output == nullptr) return SetError("input or output is null");
  if (input_len != m->model->input_count()) {
    return SetError("input has " + std::to_string(input_len) + " floats, the model takes " +
                    std::to_string(m->model->input_count()));
  }
  if (output_len != m->model->output_count()) {
    return SetError("output has room for " + std::to_string(output_len) +
                    " floats, the model gives " + std::to_string(m->model->output_count()));
  }
  return Guard([&] { m->model->Run(input, output); });
}

int binmx_model_num_layers(const binmx_model* m) {
  return m == nullptr ? SetError("model is null") : static_cast<int>(m->model->layers().size());
}

int binmx_model_layer(const binmx_model* m, int index, const char** name, const char** op,
                      int64_t* shape, int capacity, int* rank, int64_t* binary_macs,
                      int64_t* float_macs) {
  if (m == nullptr) return SetError("model is null");
  const auto& layers = m->model->layers();
  if (index < 0 || index >= static_cast<int>(layers.size())) {
    return SetError("layer index " + std::to_string(index) + " out of range");
  }
  const binmx::rt::LayerInfo& li = layers[index];
  if (name) *name = li.name.c_str();
  if (op) *op = li.op.c_str();
  const int r = CopyShape(li.output_shape, shape, capacity);
  if (rank) *rank = r;
  if (binary_macs) *binary_macs = li.binary_macs;
  if (float_macs) *float_macs = li.float_macs;
  return 0;
}

int binmx_model_profile(const binmx_model* m, const float* input, int64_t input_len, int repeat,
                        double* ms_out, int num_layers) {
  if (m == nullptr) return SetError("model is null");
  if (input == nullptr || ms_out == nullptr) return SetError("input or ms_out is null");
  if (input_len != m->model->input_count()) {
    return SetError("input has " + std::to_string(input_len) + " floats, the model takes " +
                    std::to_string(m->model->input_count()));
  }
  if (num_layers != static_cast<int>(m->model->layers().size())) {
    return SetError("ms_out must hold num_layers entries");
  }
  return Guard([&] {
    const std::vector<double> t = m->model->Profile(input, repeat);
    for (size_t i = 0; i < t.size(); ++i) ms_out[i] = t[i];
  });
}

}  // extern "C"

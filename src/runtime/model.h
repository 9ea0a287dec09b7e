/*
 * binmx runtime: a loaded model (docs/design.md, "Runtime").
 *
 * Load reads PREFIX-symbol.json and PREFIX-NNNN.params (what model_converter writes, folded or
 * not, or any MXNet checkpoint of the supported operators), fixes the input shape, and plans:
 * one builder per node (ops_*.cc; an unsupported operator or attribute is an error naming the
 * node, the op and the attribute), weights packed / folded once, every activation placed in
 * one arena by live range. Run executes the steps in order on the model's thread pool; it is
 * thread-safe (each concurrent run takes its own arena from a small free list, so a run
 * allocates nothing once as many runs as ever overlapped have been seen).
 */
#ifndef BINMX_RT_MODEL_H_
#define BINMX_RT_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "params.h"
#include "xnor_gemm.h"

namespace binmx {
namespace rt {

struct LayerInfo {
  std::string name;
  std::string op;
  std::vector<int64_t> output_shape;
  int64_t binary_macs = 0;
  int64_t float_macs = 0;
};

class Model {
 public:
  // threads: >= 1, or 0 for the default (OMP_NUM_THREADS if set, else the hardware threads).
  static std::unique_ptr<Model> Load(const std::string& symbol_path, const std::string& params_path,
                                     const std::vector<int64_t>& input_shape, int threads);
  // The same from bytes in memory (`what` names them in errors).
  static std::unique_ptr<Model> LoadFromMemory(const std::string& symbol_json,
                                               const std::string& params_bytes,
                                               const std::vector<int64_t>& input_shape, int threads,
                                               const std::string& what);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const std::vector<int64_t>& input_shape() const;
  const std::vector<int64_t>& output_shape() const;
  int64_t input_count() const;
  int64_t output_count() const;
  int threads() const;
  Isa isa() const;
  const std::vector<LayerInfo>& layers() const;
  size_t arena_bytes() const;
  size_t weight_bytes() const;

  // x: input_count() floats (the input shape, C order); y: output_count() floats.
  void Run(const float* x, float* y) const;
  // Runs once untimed, then `repeat` times timing every layer; the median ms per layer.
  std::vector<double> Profile(const float* x, int repeat) const;

  struct Impl;

 private:
  Model();
  static std::unique_ptr<Model> FromParts(const std::string& symbol_json,
                                          const std::string& json_what, std::vector<Tensor> list,
                                          const std::vector<int64_t>& input_shape, int threads,
                                          const std::string& what);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rt
}  // namespace binmx

#endif  // BINMX_RT_MODEL_H_

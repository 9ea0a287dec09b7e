/*
 * binmx runtime (internal): what the planner builds and what a run executes.
 *
 * A loaded model is a list of Steps over Values. A Value is one activation array of a fixed
 * shape: NCHW-style float32 (kFloat), or packed sign words (kBits: (N, H, W, ceil(C/64))
 * uint64, bit c % 64 of word c / 64 set = -1, what a converted binary convolution with
 * out_packed hands the next one). Reshapes, Flatten, Dropout and other identities are aliases:
 * a new Value over the storage of another (no step, no copy). Every Value that owns storage
 * gets an offset in one arena, assigned at load time from the values' live ranges, so a run
 * allocates nothing; the model input is read where the caller keeps it.
 *
 * Builders (ops_*.cc) turn graph nodes into steps through the Planner: they read the node's
 * attributes (AttrReader: an unknown or unsupported attribute is a load-time error naming the
 * node, the op and the attribute), check the input shapes, take their parameters (weights are
 * packed / folded once here) and declare their output Value. A builder may absorb the nodes
 * that follow (a float convolution takes the BatchNorm, relu and max-pool that are its only
 * readers) by giving them its output.
 */
#ifndef BINMX_RT_ENGINE_H_
#define BINMX_RT_ENGINE_H_

#include <climits>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "graph.h"
#include "params.h"
#include "xnor_gemm.h"

namespace binmx {
namespace rt {

enum class ValueKind { kFloat, kBits };

struct Value {
  std::vector<int64_t> shape;
  ValueKind kind = ValueKind::kFloat;
  int64_t bit_channels = 0;  // kBits: the true channel count C
  int storage = -1;          // the value whose buffer this one uses (itself unless an alias)
  size_t bytes = 0;
  size_t offset = 0;
  bool external = false;  // the model input: the caller's buffer
  int first = INT_MAX;    // steps that write / read the storage (live range, for the arena)
  int last = -1;
  int64_t Count() const;
};

struct RunCtx {
  void* const* ptrs = nullptr;  // per value
  char* scratch = nullptr;      // ScratchBytes() of the step, 64-byte aligned
  int threads = 1;
  const float* F(int v) const { return static_cast<const float*>(ptrs[v]); }
  float* MutF(int v) const { return static_cast<float*>(ptrs[v]); }
  const uint64_t* B(int v) const { return static_cast<const uint64_t*>(ptrs[v]); }
  uint64_t* MutB(int v) const { return static_cast<uint64_t*>(ptrs[v]); }
};

class Step {
 public:
  virtual ~Step() = default;
  virtual void Run(const RunCtx& ctx) const = 0;
  virtual size_t ScratchBytes() const { return 0; }
  std::string name;  // the graph node (with absorbed nodes: "conv0+bn0+relu0")
  std::string op;
  std::vector<int> inputs;  // values read
  int output = -1;          // value written
  int64_t binary_macs = 0;
  int64_t float_macs = 0;
};

// A node input: a computed value, or a parameter (a variable with an entry in the params file).
struct Operand {
  int value = -1;
  const Tensor* param = nullptr;
  std::string name;  // the producing node's name
};

class Planner {
 public:
  Planner(const Graph& graph, const std::map<std::string, Tensor>& params, Isa isa, int threads);

  const Graph& graph() const { return graph_; }
  Isa isa() const { return isa_; }
  int threads() const { return threads_; }

  int num_inputs(int node) const { return static_cast<int>(graph_.nodes[node].inputs.size()); }
  Operand Input(int node, int k) const;
  // The value of input k; an error naming the node if it is a parameter or packed bits.
  int FloatInput(int node, int k, const char* what) const;
  // Parameter input k as float32, with the expected shape (an error naming the parameter).
  std::vector<float> ParamFloat(int node, int k, const char* what,
                                const std::vector<int64_t>& shape) const;
  const Tensor& Param(int node, int k, const char* what) const;
  void ExpectInputs(int node, int count, const std::string& list) const;

  const Value& value(int v) const { return values_[v]; }
  int NewValue(const std::vector<int64_t>& shape, ValueKind kind = ValueKind::kFloat,
               int64_t bit_channels = 0);
  int Alias(int v, const std::vector<int64_t>& shape);
  void SetOutput(int node, int v);
  void AddStep(std::unique_ptr<Step> step);

  // The node that is the only reader of `node`'s output 0 (no other reader, not a graph
  // output), or -1.
  int SoleReader(int node) const;
  // The nodes that read `node`'s output 0, each once and as its first input, when nothing
  // else reads it (no other output, no other input slot, not a graph output); else empty.
  std::vector<int> FirstInputReaders(int node) const;
  // Marks a later node as computed by the current builder: its output is `v`.
  void Absorb(int node, int v);
  bool absorbed(int node) const { return absorbed_[node]; }

  // A BatchNorm (and the sign layers after it) that a binary convolution takes as its input
  // affine, sgn(x * scale + shift): recorded by the BatchNorm's builder, used by the
  // convolution's (which then reads `value`, the BatchNorm's input).
  struct PendingAffine {
    int value = -1;
    std::vector<float> scale, shift;
    std::string names;  // the absorbed nodes, "bn+act"
  };
  void SetPendingAffine(int conv_node, PendingAffine affine) {
    pending_[conv_node] = std::move(affine);
  }
  const PendingAffine* pending_affine(int conv_node) const {
    auto it = pending_.find(conv_node);
    return it == pending_.end() ? nullptr : &it->second;
  }

  // Used by the model.
  std::vector<Value>& values() { return values_; }
  std::vector<std::unique_ptr<Step>>& steps() { return steps_; }
  void SetNodeValue(int node, int v) { node_value_[node] = v; }
  int NodeValue(int node) const { return node_value_[node]; }
  const Tensor* FindParam(const std::string& name) const;

 private:
  const Graph& graph_;
  const std::map<std::string, Tensor>& params_;
  Isa isa_;
  int threads_;
  std::vector<Value> values_;
  std::vector<std::unique_ptr<Step>> steps_;
  std::vector<int> node_value_;
  std::vector<int> readers_;
  std::vector<int> reader_of_;
  std::vector<std::vector<Edge>> reader_list_;  // {reader node, output of this node it reads}
  std::vector<bool> heads_read_;
  std::vector<bool> absorbed_;
  std::map<int, PendingAffine> pending_;
};

using Builder = std::function<void(Planner& planner, int node)>;
// The op registry (ops_*.cc): op name -> builder.
const std::map<std::string, Builder>& Builders();
void RegisterBasicOps(std::map<std::string, Builder>* table);
void RegisterLayerOps(std::map<std::string, Builder>* table);

// A step made of a lambda (for the simple ops).
class FnStep : public Step {
 public:
  explicit FnStep(std::function<void(const RunCtx&)> fn, size_t scratch = 0)
      : fn_(std::move(fn)), scratch_(scratch) {}
  void Run(const RunCtx& ctx) const override { fn_(ctx); }
  size_t ScratchBytes() const override { return scratch_; }

 private:
  std::function<void(const RunCtx&)> fn_;
  size_t scratch_;
};

// Shared by the builders (ops_basic.cc): BatchNorm in inference mode as a per-channel
// x * scale + shift (its attributes and parameters checked), and Pooling's attributes.
void BatchNormAffine(Planner& pl, int node, int64_t channels, std::vector<float>* scale,
                     std::vector<float>* shift, int* axis_out);
struct PoolParams {
  bool global = false;
  std::string type = "max";
  bool full = false;
  bool count_include_pad = true;
  std::vector<int64_t> kernel, stride, pad;
};
PoolParams ParsePooling(const Node& node);
// An Activation(act_type='relu') with no other attribute (what a float layer can absorb).
bool IsReluNode(const Node& n);
// Output size of a pooling window: valid floor((in + 2p - k) / s) + 1, full ceil(...) + 1.
int64_t PoolOut(int64_t in, int64_t k, int64_t s, int64_t p, bool full);

std::string ShapeText(const std::vector<int64_t>& shape);
// Product of dims with an overflow check (an error naming `what`).
int64_t CheckedCount(const std::vector<int64_t>& shape, const std::string& what);

}  // namespace rt
}  // namespace binmx

#endif  // BINMX_RT_ENGINE_H_

// binmx runtime: the Planner (see engine.h).
#include <cmath>
#include <limits>

#include "engine.h"
#include "rt_common.h"

namespace binmx {
namespace rt {

int64_t Value::Count() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    s += (i ? ", " : "") + std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

int64_t CheckedCount(const std::vector<int64_t>& shape, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) Fail(what + ": negative dimension in shape " + ShapeText(shape));
    if (__builtin_mul_overflow(n, d, &n) || n > (int64_t{1} << 40)) {
      Fail(what + ": shape " + ShapeText(shape) + " has too many elements");
    }
  }
  return n;
}

Planner::Planner(const Graph& graph, const std::map<std::string, Tensor>& params, Isa isa,
                 int threads)
    : graph_(graph), params_(params), isa_(isa), threads_(threads) {
  const size_t n = graph.nodes.size();
  node_value_.assign(n, -1);
  readers_.assign(n, 0);
  reader_of_.assign(n, -1);
  reader_list_.assign(n, {});
  heads_read_.assign(n, false);
  absorbed_.assign(n, false);
  for (size_t i = 0; i < n; ++i) {
    for (const Edge& e : graph.nodes[i].inputs) {
      readers_[e.node] += e.output == 0 ? 1 : 2;  // another output read: never absorbed
      reader_of_[e.node] = static_cast<int>(i);
      reader_list_[e.node].push_back({static_cast<int>(i), e.output});
    }
  }
  for (const Edge& e : graph.heads) {
    readers_[e.node] += 2;
    heads_read_[e.node] = true;
  }
}

const Tensor* Planner::FindParam(const std::string& name) const {
  for (const std::string& key : {"arg:" + name, "aux:" + name, name}) {
    auto it = params_.find(key);
    if (it != params_.end()) return &it->second;
  }
  return nullptr;
}

Operand Planner::Input(int node, int k) const {
  const Node& n = graph_.nodes[node];
  const Edge& e = n.inputs.at(k);
  const Node& src = graph_.nodes[e.node];
  Operand o;
  o.name = src.name;
  if (src.op == "null") {
    o.param = FindParam(src.name);
    if (o.param == nullptr) o.value = node_value_[e.node];
    return o;
  }
  if (e.output != 0) {
    Fail(NodeLabel(n) + ": reads output " + std::to_string(e.output) + " of " + NodeLabel(src) +
         "; the binmx runtime supports the first output only");
  }
  o.value = node_value_[e.node];
  if (o.value < 0) Fail(NodeLabel(n) + ": input " + NodeLabel(src) + " has no value");
  return o;
}

void Planner::ExpectInputs(int node, int count, const std::string& list) const {
  if (num_inputs(node) != count) {
    Fail(NodeLabel(graph_.nodes[node]) + ": expected " + std::to_string(count) + " inputs (" +
         list + "), got " + std::to_string(num_inputs(node)));
  }
}

int Planner::FloatInput(int node, int k, const char* what) const {
  const Operand o = Input(node, k);
  const Node& n = graph_.nodes[node];
  if (o.param != nullptr) {
    Fail(NodeLabel(n) + ": input `" + what + "` ('" + o.name +
         "') is a stored parameter; the runtime expects a computed array there");
  }
  if (o.value < 0) {
    Fail(NodeLabel(n) + ": input `" + what + "` ('" + o.name +
         "') is neither a parameter in the params file nor the model input");
  }
  if (values_[o.value].kind != ValueKind::kFloat) {
    Fail(NodeLabel(n) + ": input `" + what + "` ('" + o.name +
         "') holds packed sign bits; only a binary convolution with in_packed=True reads them");
  }
  return o.value;
}

const Tensor& Planner::Param(int node, int k, const char* what) const {
  const Operand o = Input(node, k);
  const Node& n = graph_.nodes[node];
  if (o.param == nullptr) {
    Fail(NodeLabel(n) + ": parameter `" + what + "` ('" + o.name +
         "') is missing from the params file");
  }
  return *o.param;
}

std::vector<float> Planner::ParamFloat(int node, int k, const char* what,
                                       const std::vector<int64_t>& shape) const {
  const Tensor& t = Param(node, k, what);
  const Node& n = graph_.nodes[node];
  if (t.shape != shape) {
    Fail(NodeLabel(n) + ": parameter `" + what + "` ('" + t.name + "') has shape " +
         ShapeText(t.shape) + ", expected " + ShapeText(shape));
  }
  std::vector<float> f;
  try {
    f = ToFloat32(t);
  } catch (const Error& e) {
    Fail(NodeLabel(n) + ": parameter `" + what + "` ('" + t.name + "'): " + e.what());
  }
  // A non-finite parameter is an error, not a silently wrong output (checked where it is read,
  // once per parameter and load).
  for (size_t i = 0; i < f.size(); ++i) {
    if (!std::isfinite(f[i])) {
      Fail(NodeLabel(n) + ": parameter `" + what + "` ('" + t.name +
           "') holds a non-finite value (" + std::to_string(f[i]) + ") at flat index " +
           std::to_string(i));
    }
  }
  return f;
}

int Planner::NewValue(const std::vector<int64_t>& shape, ValueKind kind, int64_t bit_channels) {
  Value v;
  v.shape = shape;
  v.kind = kind;
  v.bit_channels = bit_channels;
  v.storage = static_cast<int>(values_.size());
  const int64_t count = CheckedCount(shape, "an activation");
  int64_t bytes = 0;
  if (__builtin_mul_overflow(count, int64_t{kind == ValueKind::kFloat ? 4 : 8}, &bytes) ||
      bytes > (int64_t{1} << 40)) {
    Fail("an activation of shape " + ShapeText(shape) + " is too large");
  }
  v.bytes = static_cast<size_t>(bytes);
  values_.push_back(v);
  return v.storage;
}

int Planner::Alias(int v, const std::vector<int64_t>& shape) {
  Value a = values_[v];
  if (CheckedCount(shape, "a reshape") != values_[v].Count()) {
    Fail("internal: alias of " + ShapeText(values_[v].shape) + " as " + ShapeText(shape));
  }
  a.shape = shape;
  values_.push_back(a);
  return static_cast<int>(values_.size()) - 1;
}

void Planner::SetOutput(int node, int v) { node_value_[node] = v; }

void Planner::AddStep(std::unique_ptr<Step> step) {
  const int index = static_cast<int>(steps_.size());
  auto touch = [&](int v) {
    Value& root = values_[values_[v].storage];
    if (index < root.first) root.first = index;
    if (index > root.last) root.last = index;
  };
  for (int v : step->inputs) touch(v);
  touch(step->output);
  steps_.push_back(std::move(step));
}

int Planner::SoleReader(int node) const {
  if (readers_[node] != 1) return -1;
  const int r = reader_of_[node];
  // The reader must read it once, as its first input.
  const Node& rn = graph_.nodes[r];
  if (rn.inputs.empty() || rn.inputs[0].node != node) return -1;
  return r;
}

std::vector<int> Planner::FirstInputReaders(int node) const {
  if (heads_read_[node]) return {};
  std::vector<int> out;
  for (const Edge& r : reader_list_[node]) {  // r.node reads this node; r.output: its output
    const Node& rn = graph_.nodes[r.node];
    if (r.output != 0 || rn.inputs.empty() || rn.inputs[0].node != node) return {};
    int count = 0;
    for (const Edge& e : rn.inputs) count += e.node == node;
    if (count != 1) return {};
    out.push_back(r.node);
  }
  return out;
}

void Planner::Absorb(int node, int v) {
  absorbed_[node] = true;
  node_value_[node] = v;
}

}  // namespace rt
}  // namespace binmx

// binmx runtime: model loading, planning, the arena and runs (see model.h, engine.h).
#include "model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "engine.h"
#include "file_io.h"
#include "graph.h"
#include "params.h"
#include "rt_common.h"
#include "thread_pool.h"

namespace binmx {
namespace rt {

namespace {

constexpr size_t kAlign = 64;

size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

struct AlignedBuffer {
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes) : size(bytes) {
    if (bytes > 0) {
      data = static_cast<char*>(std::aligned_alloc(kAlign, AlignUp(bytes)));
      if (data == nullptr) Fail("out of memory (" + std::to_string(bytes) + " bytes)");
    }
  }
  ~AlignedBuffer() { std::free(data); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  char* data = nullptr;
  size_t size = 0;
};

// A symbol file larger than this is refused before it is read: a parsed JSON value takes
// about 100 bytes, so this bounds the parser's memory too (ResNet-18's file is ~40 KB).
constexpr size_t kMaxSymbolBytes = size_t{16} << 20;

int ResolveThreads(int threads) {
  if (threads < 0)
    Fail("threads must be >= 1 (or 0 for the default), got " + std::to_string(threads));
  if (threads > 256) Fail("threads must be at most 256, got " + std::to_string(threads));
  if (threads == 0) threads = DefaultThreads();
  return std::max(1, std::min(threads, 256));
}

bool IsLabelOnly(const Graph& g, int var) {
  bool read = false;
  for (const Node& n : g.nodes) {
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      if (n.inputs[k].node != var) continue;
      read = true;
      if (!((n.op == "SoftmaxOutput" || n.op == "Softmax") && k == 1)) return false;
    }
  }
  return read;
}

}  // namespace

struct Model::Impl {
  std::vector<int64_t> input_shape, output_shape;
  int threads = 1;
  Isa isa = Isa::kScalar;
  std::vector<Value> values;
  std::vector<std::unique_ptr<Step>> steps;
  std::vector<LayerInfo> layers;
  int input_value = -1;
  int output_value = -1;
  size_t arena_bytes = 0;
  size_t scratch_bytes = 0;
  size_t weight_bytes = 0;
  std::unique_ptr<SpinPool> pool;

  struct Context {
    Context(size_t arena_size, size_t scratch_size) : arena(arena_size), scratch(scratch_size) {}
    AlignedBuffer arena, scratch;
    std::vector<void*> ptrs;
  };
  mutable std::mutex mu;
  mutable std::vector<std::unique_ptr<Context>> free_contexts;

  std::unique_ptr<Context> Acquire() const {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!free_contexts.empty()) {
        std::unique_ptr<Context> c = std::move(free_contexts.back());
        free_contexts.pop_back();
        return c;
      }
    }
    auto c = std::make_unique<Context>(arena_bytes, scratch_bytes);
    c->ptrs.assign(values.size(), nullptr);
    for (size_t v = 0; v < values.size(); ++v) {
      const Value& root = values[values[v].storage];
      if (!root.external && root.bytes > 0) c->ptrs[v] = c->arena.data + root.offset;
    }
    return c;
  }
  void ReleaseContext(std::unique_ptr<Context> c) const {
    std::lock_guard<std::mutex> lock(mu);
    free_contexts.push_back(std::move(c));
  }

  void Build(const Graph& g, std::map<std::string, Tensor>& params, const std::string& what);
  void PlaceArena();
  template <typename Fn>
  void Execute(const float* x, float* y, Fn per_step) const;
};

void Model::Impl::Build(const Graph& g, std::map<std::string, Tensor>& params,
                        const std::string& what) {
  for (const auto& kv : params) weight_bytes += kv.second.nbytes();
  Planner pl(g, params, isa, threads);
  // The data input: the one variable without a parameter that is not only a label.
  std::vector<int> candidates;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op != "null" || pl.FindParam(n.name) != nullptr) continue;
    if (IsLabelOnly(g, static_cast<int>(i))) continue;
    candidates.push_back(static_cast<int>(i));
  }
  int data_node = -1;
  if (candidates.size() == 1) {
    data_node = candidates[0];
  } else {
    for (int c : candidates) {
      if (g.nodes[c].name == "data") data_node = c;
    }
    std::string missing;
    for (int c : candidates) {
      if (c == data_node) continue;
      missing += (missing.empty() ? "'" : ", '") + g.nodes[c].name + "'";
    }
    if (candidates.empty()) Fail(what + ": the graph has no input variable");
    if (data_node < 0) {
      Fail(what + ": cannot tell the data input among the variables without parameters (" +
           missing + "); name it 'data'");
    }
    Fail(what + ": parameter(s) " + missing + " missing from the params file");
  }
  input_value = pl.NewValue(input_shape);
  pl.values()[input_value].external = true;
  pl.SetNodeValue(data_node, input_value);
  const auto& builders = Builders();
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op == "null" || pl.absorbed(static_cast<int>(i))) continue;
    auto it = builders.find(n.op);
    if (it == builders.end()) {
      Fail(what + ": " + NodeLabel(n) + ": operator '" + n.op +
           "' is not supported by the binmx runtime");
    }
    try {
      it->second(pl, static_cast<int>(i));
    } catch (const Error& e) {
      const std::string msg = e.what();
      Fail(msg.rfind(what, 0) == 0 ? msg : what + ": " + msg);
    } catch (const std::exception& e) {
      Fail(what + ": " + NodeLabel(n) + ": " + e.what());
    }
    if (pl.NodeValue(static_cast<int>(i)) < 0 && !pl.absorbed(static_cast<int>(i))) {
      Fail(what + ": internal: " + NodeLabel(n) + " produced no value");
    }
  }
  const Edge head = g.heads[0];
  if (g.nodes[head.node].op != "null" && head.output != 0) {
    Fail(what + ": the first output reads output " + std::to_string(head.output) + " of " +
         NodeLabel(g.nodes[head.node]) + "; the runtime supports the first output only");
  }
  output_value = pl.NodeValue(head.node);
  if (output_value < 0) {
    Fail(what + ": the first output ('" + g.nodes[head.node].name +
         "') is not computed from the input");
  }
  if (pl.values()[output_value].kind != ValueKind::kFloat) {
    Fail(what + ": the first output holds packed sign bits");
  }
  values = std::move(pl.values());
  steps = std::move(pl.steps());
  output_shape = values[output_value].shape;
  // The output stays alive to the end.
  Value& out_root = values[values[output_value].storage];
  out_root.last = static_cast<int>(steps.size());
  if (out_root.first == INT_MAX) out_root.first = 0;
  for (const auto& s : steps) {
    LayerInfo li;
    li.name = s->name;
    li.op = s->op;
    li.output_shape = values[s->output].shape;
    li.binary_macs = s->binary_macs;
    li.float_macs = s->float_macs;
    layers.push_back(li);
    scratch_bytes = std::max(scratch_bytes, s->ScratchBytes());
  }
  PlaceArena();
}

// Greedy placement by size: each storage gets the lowest offset that overlaps no placed
// storage whose live range intersects its own.
void Model::Impl::PlaceArena() {
  std::vector<int> roots;
  for (size_t v = 0; v < values.size(); ++v) {
    const Value& val = values[v];
    if (val.storage == static_cast<int>(v) && !val.external && val.bytes > 0 && val.last >= 0) {
      roots.push_back(static_cast<int>(v));
    }
  }
  std::sort(roots.begin(), roots.end(), [&](int a, int b) {
    return values[a].bytes != values[b].bytes ? values[a].bytes > values[b].bytes : a < b;
  });
  std::vector<int> placed;
  arena_bytes = 0;
  for (int v : roots) {
    Value& val = values[v];
    const size_t size = AlignUp(val.bytes);
    std::vector<std::pair<size_t, size_t>> busy;
    for (int u : placed) {
      const Value& o = values[u];
      if (o.first <= val.last && val.first <= o.last) busy.push_back({o.offset, AlignUp(o.bytes)});
    }
    std::sort(busy.begin(), busy.end());
    size_t offset = 0;
    for (const auto& b : busy) {
      if (offset + size <= b.first) break;
      offset = std::max(offset, b.first + b.second);
    }
    val.offset = offset;
    arena_bytes = std::max(arena_bytes, offset + size);
    placed.push_back(v);
  }
}

template <typename Fn>
void Model::Impl::Execute(const float* x, float* y, Fn per_step) const {
  std::unique_ptr<Context> ctx = Acquire();
  struct Release {
    const Impl* impl;
    std::unique_ptr<Context>* ctx;
    ~Release() { impl->ReleaseContext(std::move(*ctx)); }
  } release{this, &ctx};
  // The output's storage is the caller's y itself when that is possible (an arena value of
  // the output's own size, y not overlapping x): the last step writes the result in place
  // instead of into the arena and a copy (one pass over the output less, whose cold stores
  // cost as much as a fast layer's kernel). Set on every run: contexts are reused.
  const int out_root = values[output_value].storage;
  const size_t out_bytes = values[output_value].bytes;
  const size_t in_bytes = static_cast<size_t>(CheckedCount(input_shape, "input")) * sizeof(float);
  const auto xa = reinterpret_cast<uintptr_t>(x), ya = reinterpret_cast<uintptr_t>(y);
  const bool direct_out = !values[out_root].external && values[out_root].bytes == out_bytes &&
                          (ya + out_bytes <= xa || xa + in_bytes <= ya);
  for (size_t v = 0; v < values.size(); ++v) {
    const Value& root = values[values[v].storage];
    if (root.external) {
      ctx->ptrs[v] = const_cast<float*>(x);
    } else if (values[v].storage == out_root) {
      ctx->ptrs[v] = direct_out ? static_cast<void*>(y) : ctx->arena.data + root.offset;
    }
  }
  InlineRunner inline_runner;
  const bool own_pool = pool && pool->TryAcquire();
  struct PoolRelease {
    SpinPool* pool;
    bool own;
    ~PoolRelease() {
      if (own) pool->Release();
    }
  } pool_release{pool.get(), own_pool};
  ScopedRunner scoped(own_pool ? static_cast<ParallelRunner*>(pool.get()) : &inline_runner);
  RunCtx rc;
  rc.ptrs = ctx->ptrs.data();
  rc.scratch = ctx->scratch.data;
  rc.threads = own_pool ? threads : 1;
  for (size_t i = 0; i < steps.size(); ++i) per_step(i, *steps[i], rc);
  if (!direct_out) std::memcpy(y, ctx->ptrs[output_value], out_bytes);
}

Model::Model() : impl_(std::make_unique<Impl>()) {}
Model::~Model() = default;

namespace {

void CheckInputShape(const std::vector<int64_t>& input_shape) {
  if (input_shape.empty() || input_shape.size() > 8) {
    Fail("input_shape must have 1 to 8 dimensions, got " + std::to_string(input_shape.size()));
  }
  for (int64_t d : input_shape) {
    if (d <= 0) Fail("input_shape must be positive, got " + ShapeText(input_shape));
  }
  CheckedCount(input_shape, "input_shape");
}

}  // namespace

std::unique_ptr<Model> Model::FromParts(const std::string& symbol_json,
                                        const std::string& json_what, std::vector<Tensor> list,
                                        const std::vector<int64_t>& input_shape, int threads,
                                        const std::string& what) {
  std::unique_ptr<Model> m(new Model());
  Impl& im = *m->impl_;
  im.threads = ResolveThreads(threads);
  im.isa = DefaultIsa();
  im.input_shape = input_shape;
  const Graph g = ParseGraph(symbol_json, json_what);
  std::map<std::string, Tensor> params;
  for (Tensor& t : list) {
    std::string name = t.name;
    params.emplace(name, std::move(t));
  }
  list.clear();
  im.Build(g, params, what);
  params.clear();
  if (im.threads > 1) im.pool = std::make_unique<SpinPool>(im.threads);
  return m;
}

std::unique_ptr<Model> Model::LoadFromMemory(const std::string& symbol_json,
                                             const std::string& params_bytes,
                                             const std::vector<int64_t>& input_shape, int threads,
                                             const std::string& what) {
  CheckInputShape(input_shape);
  ResolveThreads(threads);
  std::vector<Tensor> list = ParseParams(reinterpret_cast<const uint8_t*>(params_bytes.data()),
                                         params_bytes.size(), what + ".params");
  return FromParts(symbol_json, what + "-symbol.json", std::move(list), input_shape, threads, what);
}

std::unique_ptr<Model> Model::Load(const std::string& symbol_path, const std::string& params_path,
                                   const std::vector<int64_t>& input_shape, int threads) {
  CheckInputShape(input_shape);
  ResolveThreads(threads);
  const std::string json = ReadWholeFile(symbol_path, kMaxSymbolBytes);
  std::vector<Tensor> list = ReadParams(params_path);
  return FromParts(json, symbol_path, std::move(list), input_shape, threads, params_path);
}

const std::vector<int64_t>& Model::input_shape() const { return impl_->input_shape; }
const std::vector<int64_t>& Model::output_shape() const { return impl_->output_shape; }
int64_t Model::input_count() const { return CheckedCount(impl_->input_shape, "input"); }
int64_t Model::output_count() const { return CheckedCount(impl_->output_shape, "output"); }
int Model::threads() const { return impl_->threads; }
Isa Model::isa() const { return impl_->isa; }
const std::vector<LayerInfo>& Model::layers() const { return impl_->layers; }
size_t Model::arena_bytes() const { return impl_->arena_bytes + impl_->scratch_bytes; }
size_t Model::weight_bytes() const { return impl_->weight_bytes; }

void Model::Run(const float* x, float* y) const {
  impl_->Execute(x, y, [](size_t, const Step& s, const RunCtx& rc) { s.Run(rc); });
}

std::vector<double> Model::Profile(const float* x, int repeat) const {
  if (repeat < 1 || repeat > 100000)
    Fail("repeat must be in [1, 100000], got " + std::to_string(repeat));
  std::vector<float> y(static_cast<size_t>(output_count()));
  Run(x, y.data());
  const size_t n = impl_->steps.size();
  std::vector<std::vector<double>> times(n);
  for (int r = 0; r < repeat; ++r) {
    impl_->Execute(x, y.data(), [&](size_t i, const Step& s, const RunCtx& rc) {
      const auto t0 = std::chrono::steady_clock::now();
      s.Run(rc);
      const auto t1 = std::chrono::steady_clock::now();
      times[i].push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    });
  }
  std::vector<double> med(n);
  for (size_t i = 0; i < n; ++i) {
    std::vector<double>& t = times[i];
    std::sort(t.begin(), t.end());
    med[i] = t.size() % 2 ? t[t.size() / 2] : 0.5 * (t[t.size() / 2 - 1] + t[t.size() / 2]);
  }
  return med;
}

const std::map<std::string, Builder>& Builders() {
  static const std::map<std::string, Builder> table = [] {
    std::map<std::string, Builder> t;
    RegisterBasicOps(&t);
    RegisterLayerOps(&t);
    return t;
  }();
  return table;
}

}  // namespace rt
}  // namespace binmx

/*
 * binmx runtime: builders of the simple operators, on float32 arrays in MXNet's layout.
 *
 *   Activation      relu max(x, 0), sigmoid 1/(1+e^-x), tanh, softrelu log(1+e^x),
 *                   softsign x/(1+|x|)
 *   LeakyReLU       leaky x>0 ? x : slope*x; prelu with a per-channel gamma (axis 1);
 *                   elu slope*(e^x-1); selu; gelu x*Phi(x); rrelu (inference: slope (l+u)/2)
 *   clip            min(max(x, a_min), a_max) (NaN stays NaN)
 *   elemwise_add, _Plus, _plus, broadcast_add    a + b (broadcast over size-1 dims)
 *   Concat          along `dim`;  transpose (axes); QNHWCToNCHW (N,H,W,C) -> (N,C,H,W)
 *   Flatten, Reshape (0, -1, -2, -3, -4, reverse), Dropout (mode='training'), identity,
 *   _copy, BlockGrad: aliases, no copy
 *   softmax (axis, temperature), SoftmaxOutput (label ignored), SoftmaxActivation
 *   Pooling         max / avg / sum, global_pool, valid / full, count_include_pad (MXNet's
 *                   window rules: an avg window counts the padded cells inside H + 2p)
 *   BatchNorm       inference: x * s_c + t_c, s = gamma / sqrt(var + eps) (gamma = 1 with
 *                   fix_gamma), t = beta - mean * s, along `axis`
 *   QChannelAffine  x * scale_c + shift_c (then max(., 0) with relu): binmx's operator
 *   QActivation     act_bit 1: sgn(x) (+1 for x >= 0 and NaN); 2..31: round((2^k-1) clip(x,0,1))
 *                   / (2^k-1); 32 or backward_only: x
 * Elementwise loops split into chunks on the model's threads (engine.h).
 */
#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "engine.h"
#include "float_ops.h"
#include "parallel.h"
#include "rt_common.h"

namespace binmx {
namespace rt {

namespace {

constexpr int64_t kGrain = 16384;

// fn(begin, end) over [0, n) in chunks of at least kGrain elements.
template <typename Fn>
void ForRange(int64_t n, int threads, Fn fn) {
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(n / kGrain, 64));
  if (tasks == 1 || threads == 1) {
    fn(int64_t{0}, n);
    return;
  }
  ParallelFor(tasks, threads, [&](int64_t b, int64_t e) { fn(n * b / tasks, n * e / tasks); });
}

void FinishStep(Planner& pl, int node, std::unique_ptr<Step> step, std::vector<int> inputs,
                int output) {
  const Node& n = pl.graph().nodes[node];
  step->name = n.name;
  step->op = n.op;
  step->inputs = std::move(inputs);
  step->output = output;
  pl.SetOutput(node, output);
  pl.AddStep(std::move(step));
}

// A step y = f(x) over the whole value, f applied to ranges: f(x + b, y + b, count).
template <typename F>
void AddRangeStep(Planner& pl, int node, int in, F f) {
  const int out = pl.NewValue(pl.value(in).shape);
  const int64_t n = pl.value(in).Count();
  auto step = std::make_unique<FnStep>([in, out, n, f](const RunCtx& ctx) {
    const float* x = ctx.F(in);
    float* y = ctx.MutF(out);
    ForRange(n, ctx.threads, [&](int64_t b, int64_t e) { f(x + b, y + b, e - b); });
  });
  FinishStep(pl, node, std::move(step), {in}, out);
}

// The same with a per-element function, y[i] = f(x[i]).
template <typename F>
void AddElementwise(Planner& pl, int node, int in, F f) {
  AddRangeStep(pl, node, in, [f](const float* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
  });
}

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// exp(x) for float x, branch-free so that loops of it vectorise: x = k ln2 + r with
// |r| <= ln2 / 2 (ln2 split in two parts), exp(r) by its Taylor series to r^7 (truncation
// error below 2e-8 relative), 2^k put into the exponent field; x clamped to [-87, 88].
inline float FastExp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // Round to nearest by adding and subtracting 1.5 * 2^23 (|x log2e| < 2^22): no libm call.
  const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - k * 0.693145751953125f) - k * 1.428606765330187e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// tanh(x) = sgn(x) (1 - 2 / (exp(2|x|) + 1)); below |x| = 2^-4 its odd series to x^7 (no
// cancellation). Within a few 1e-7 of std::tanh; NaN stays NaN. Vectorises (no libm call).
inline float FastTanh(float x) {
  const float a = std::fabs(x);
  const float e = FastExp(2.0f * a);
  const float big = 1.0f - 2.0f / (e + 1.0f);
  const float x2 = x * x;
  const float small =
      a * (1.0f + x2 * (-1.0f / 3.0f + x2 * (2.0f / 15.0f + x2 * (-17.0f / 315.0f))));
  const float t = a < 0.0625f ? small : big;
  return x != x ? x : std::copysign(t, x);
}
// tanh over an array. One clone per x86 vector width, picked by the CPU at load time (GCC
// target_clones): FastTanh is a fixed sequence of IEEE operations (no contraction: the runtime
// builds with -ffp-contract=off), so every clone gives the same bits as the scalar loop.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void TanhArray(const float* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = FastTanh(x[i]);
}

float SoftRelu(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

void BuildActivation(Planner& pl, int node) {
  AttrReader r(pl.graph().nodes[node]);
  const std::string act = r.Str("act_type", "");
  r.Finish();
  pl.ExpectInputs(node, 1, "data");
  const int in = pl.FloatInput(node, 0, "data");
  if (act == "relu") {
    AddElementwise(pl, node, in, [](float x) { return x > 0.0f ? x : (x == x ? 0.0f : x); });
  } else if (act == "sigmoid") {
    AddElementwise(pl, node, in, [](float x) { return Sigmoid(x); });
  } else if (act == "tanh") {
    AddRangeStep(pl, node, in, TanhArray);
  } else if (act == "softrelu") {
    AddElementwise(pl, node, in, [](float x) { return SoftRelu(x); });
  } else if (act == "softsign") {
    AddElementwise(pl, node, in, [](float x) { return x / (1.0f + std::fabs(x)); });
  } else {
    r.Fail("act_type", "'" + act + "' is not supported (relu, sigmoid, tanh, softrelu, softsign)");
  }
}

void BuildLeakyRelu(Planner& pl, int node) {
  AttrReader r(pl.graph().nodes[node]);
  const std::string act = r.Str("act_type", "leaky");
  const float slope = static_cast<float>(r.Float("slope", 0.25));
  const double lower = r.Float("lower_bound", 0.125), upper = r.Float("upper_bound", 0.334);
  r.Finish();
  const int in = pl.FloatInput(node, 0, "data");
  if (act == "prelu") {
    pl.ExpectInputs(node, 2, "data, gamma");
    const std::vector<int64_t>& shape = pl.value(in).shape;
    if (shape.size() < 2) r.FailNode("prelu needs an input with a channel axis");
    const Tensor& g = pl.Param(node, 1, "gamma");
    const int64_t c = shape[1];
    const int64_t gc = g.NumElements();
    if (!(gc == c || gc == 1) || g.shape.size() != 1) {
      r.FailNode("prelu gamma ('" + g.name + "') has shape " + ShapeText(g.shape) + ", expected (" +
                 std::to_string(c) + ",) or (1,)");
    }
    std::vector<float> gamma = pl.ParamFloat(node, 1, "gamma", g.shape);
    if (gc == 1) gamma.assign(c, gamma[0]);
    const int64_t outer = shape[0];
    const int64_t inner = pl.value(in).Count() / std::max<int64_t>(1, outer * c);
    const int out = pl.NewValue(shape);
    auto step = std::make_unique<FnStep>([=](const RunCtx& ctx) {
      const float* x = ctx.F(in);
      float* y = ctx.MutF(out);
      ForRange(outer * c, ctx.threads, [&](int64_t b, int64_t e) {
        for (int64_t row = b; row < e; ++row) {
          const float s = gamma[row % c];
          for (int64_t i = row * inner; i < (row + 1) * inner; ++i) {
            y[i] = x[i] > 0.0f ? x[i] : s * x[i];
          }
        }
      });
    });
    FinishStep(pl, node, std::move(step), {in}, out);
    return;
  }
  pl.ExpectInputs(node, 1, "data");
  if (act == "leaky") {
    AddElementwise(pl, node, in, [slope](float x) { return x > 0.0f ? x : slope * x; });
  } else if (act == "rrelu") {
    const float s = static_cast<float>((lower + upper) / 2.0);
    AddElementwise(pl, node, in, [s](float x) { return x > 0.0f ? x : s * x; });
  } else if (act == "elu") {
    AddElementwise(pl, node, in, [slope](float x) { return x > 0.0f ? x : slope * std::expm1(x); });
  } else if (act == "selu") {
    AddElementwise(pl, node, in, [](float x) {
      const float a = 1.6732632423543772f, l = 1.0507009873554805f;
      return x > 0.0f ? l * x : l * a * std::expm1(x);
    });
  } else if (act == "gelu") {
    AddElementwise(pl, node, in,
                   [](float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); });
  } else {
    r.Fail("act_type", "'" + act + "' is not supported (leaky, prelu, elu, selu, gelu, rrelu)");
  }
}

void BuildClip(Planner& pl, int node) {
  AttrReader r(pl.graph().nodes[node]);
  bool has_min = false, has_max = false;
  const float lo = static_cast<float>(r.OptFloat("a_min", &has_min));
  const float hi = static_cast<float>(r.OptFloat("a_max", &has_max));
  r.Finish();
  if (!has_min || !has_max) r.FailNode("clip needs both a_min and a_max");
  if (!(lo <= hi)) r.FailNode("clip: a_min > a_max");
  pl.ExpectInputs(node, 1, "data");
  const int in = pl.FloatInput(node, 0, "data");
  AddElementwise(pl, node, in, [lo, hi](float x) { return x < lo ? lo : (x > hi ? hi : x); });
}

void BuildQActivation(Planner& pl, int node) {
  AttrReader r(pl.graph().nodes[node]);
  const int bits = static_cast<int>(r.Int("act_bit", 1, 1, 32));
  const bool backward_only = r.Bool("backward_only", false);
  r.Float("grad_cancel", 1.0);
  r.Finish();
  pl.ExpectInputs(node, 1, "data");
  const int in = pl.FloatInput(node, 0, "data");
  if (backward_only || bits >= 32) {
    pl.SetOutput(node, pl.Alias(in, pl.value(in).shape));
  } else if (bits == 1) {
    AddElementwise(pl, node, in, [](float x) { return x < 0.0f ? -1.0f : 1.0f; });
  } else {
    const double levels = static_cast<double>((int64_t{1} << bits) - 1);
    AddElementwise(pl, node, in, [levels](float x) {
      const double a = std::min(1.0, std::max(0.0, static_cast<double>(x)));
      return static_cast<float>(std::nearbyint(levels * a) / levels);
    });
  }
}

enum class BinOp { kAdd, kSub, kMul };

BinOp BinOpOf(const std::string& op) {
  if (op == "elemwise_sub" || op == "_Minus" || op == "_minus" || op == "broadcast_sub") {
    return BinOp::kSub;
  }
  if (op == "elemwise_mul" || op == "_Mul" || op == "_mul" || op == "broadcast_mul") {
    return BinOp::kMul;
  }
  return BinOp::kAdd;
}

inline float Apply(BinOp k, float a, float b) {
  return k == BinOp::kAdd ? a + b : (k == BinOp::kSub ? a - b : a * b);
}

// a (+ - *) b with MXNet's broadcast (broadcast_*: same rank, a dim of 1 repeats), or
// elementwise on equal shapes.
void BuildAdd(Planner& pl, int node) {
  const Node& n = pl.graph().nodes[node];
  const BinOp kind = BinOpOf(n.op);
  const bool broadcast = n.op.rfind("broadcast_", 0) == 0;
  AttrReader r(n);
  r.Finish();
  pl.ExpectInputs(node, 2, "lhs, rhs");
  const int a = pl.FloatInput(node, 0, "lhs");
  const int b = pl.FloatInput(node, 1, "rhs");
  const std::vector<int64_t> sa = pl.value(a).shape, sb = pl.value(b).shape;
  if (sa == sb) {
    const int out = pl.NewValue(sa);
    const int64_t count = pl.value(a).Count();
    auto step = std::make_unique<FnStep>([=](const RunCtx& ctx) {
      const float* x = ctx.F(a);
      const float* y = ctx.F(b);
      float* z = ctx.MutF(out);
      ForRange(count, ctx.threads, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i) z[i] = Apply(kind, x[i], y[i]);
      });
    });
    FinishStep(pl, node, std::move(step), {a, b}, out);
    return;
  }
  if (!broadcast || sa.size() != sb.size()) {
    AttrReader(n).FailNode("shapes " + ShapeText(sa) + " and " + ShapeText(sb) + " differ" +
                           (broadcast ? " in rank" : ""));
  }
  const size_t nd = sa.size();
  std::vector<int64_t> so(nd);
  for (size_t d = 0; d < nd; ++d) {
    if (sa[d] != sb[d] && sa[d] != 1 && sb[d] != 1) {
      AttrReader(n).FailNode("shapes " + ShapeText(sa) + " and " + ShapeText(sb) +
                             " do not broadcast");
    }
    so[d] = std::max(sa[d], sb[d]);
  }
  const int out = pl.NewValue(so);
  // Strides of a and b over the output index (0 on a broadcast dim).
  std::vector<int64_t> ta(nd), tb(nd);
  int64_t ra = 1, rb = 1;
  for (size_t d = nd; d-- > 0;) {
    ta[d] = sa[d] == 1 ? 0 : ra;
    tb[d] = sb[d] == 1 ? 0 : rb;
    ra *= sa[d];
    rb *= sb[d];
  }
  const int64_t count = pl.value(out).Count();
  auto step = std::make_unique<FnStep>([=](const RunCtx& ctx) {
    const float* x = ctx.F(a);
    const float* y = ctx.F(b);
    float* z = ctx.MutF(out);
    ForRange(count, ctx.threads, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        int64_t rem = i, ia = 0, ib = 0;
        for (size_t d = nd; d-- > 0;) {
          const int64_t idx = rem % so[d];
          rem /= so[d];
          ia += idx * ta[d];
          ib += idx * tb[d];
        }
        z[i] = Apply(kind, x[ia], y[ib]);
      }
    });
  });
  FinishStep(pl, node, std::move(step), {a, b}, out);
}

// x (op) scalar: _plus_scalar, _minus_scalar, _rminus_scalar, _mul_scalar, _div_scalar,
// _rdiv_scalar (float32 arithmetic, as MXNet's).
void BuildScalar(Planner& pl, int node) {
  const Node& n = pl.graph().nodes[node];
  AttrReader r(n);
  const float c = static_cast<float>(r.Float("scalar", 0.0));
  r.Bool("is_int", false);
  r.Finish();
  if (!r.Has("scalar")) r.Fail("scalar", "is required");
  pl.ExpectInputs(node, 1, "data");
  const int in = pl.FloatInput(node, 0, "data");
  const std::string& op = n.op;
  if (op == "_plus_scalar") {
    AddElementwise(pl, node, in, [c](float x) { return x + c; });
  } else if (op == "_minus_scalar") {
    AddElementwise(pl, node, in, [c](float x) { return x - c; });
  } else if (op == "_rminus_scalar") {
    AddElementwise(pl, node, in, [c](float x) { return c - x; });
  } else if (op == "_mul_scalar") {
    AddElementwise(pl, node, in, [c](float x) { return x * c; });
  } else if (op == "_div_scalar") {
    AddElementwise(pl, node, in, [c](float x) { return x / c; });
  } else {
    AddElementwise(pl, node, in, [c](float x) { return c / x; });
  }
}

// relu, sigmoid, tanh as operators of their own (mx.sym.relu ...).
void BuildNamedActivation(Planner& pl, int node) {
  const Node& n = pl.graph().nodes[node];
  AttrReader r(n);
  r.Finish();
  pl.ExpectInputs(node, 1, "data");
  const int in = pl.FloatInput(node, 0, "data");
  if (n.op == "relu") {
    AddElementwise(pl, node, in, [](float x) { return x > 0.0f ? x : (x == x ? 0.0f : x); });
  } else if (n.op == "sigmoid") {
    AddElementwise(pl, node, in, [](float x) { return Sigmoid(x); });
  } else {
    AddElementwise(pl, node, in, [](float x) { return FastTanh(x); });
  }
}

int NormAxis(AttrReader& r, const char* key, int64_t axis, size_t ndim) {
  const int64_t nd = static_cast<int64_t>(ndim);
  if (axis < -nd || axis >= nd) {
    r.Fail(key,
           std::to_string(axis) + " is out of range for a rank-" + std::to_string(nd) + " input");
  }
  return static_cast<int>(axis < 0 ? axis + nd : axis);
}

void BuildConcat(Planner& pl, int node) {
  AttrReader r(pl.graph().nodes[node]);
  const int64_t num_args = r.Int("num_args", pl.num_inputs(node), 1, 1 << 20);
  const int64_t dim_attr = r.Int("dim", 1, -64, 64);
  r.Finish();
  if (num_args != pl.num_inputs(node)) {
    r.Fail("num_args", std::to_string(num_args) + " but the node has " +
                           std::to_string(pl.num_inputs(node)) + " inputs");
  }
  std::vector<int> ins;
  for (int k = 0; k < pl.num_inputs(node); ++k) ins.push_back(pl.FloatInput(node, k, "data"));
  std::vector<int64_t> shape = pl.value(ins[0]).shape;
  const int dim = NormAxis(r, "dim", dim_attr, shape.size());
  int64_t total = 0;
  std::vector<int64_t> sizes;
  for (int v : ins) {
    const std::vector<int64_t>& s = pl.value(v).shape;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (s.size() != shape.size() || (static_cast<int>(d) != dim && s[d] != shape[d])) {
        r.FailNode("inputs of shapes " + ShapeText(shape) + " and " + ShapeText(s) +
                   " cannot be concatenated along dim " + std::to_string(dim));
      }
    }
    sizes.push_back(s[dim]);
    total += s[dim];
  }
  shape[dim] = total;
  const int out = pl.NewValue(shape);
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; ++d) outer *= shape[d];
  for (size_t d = dim + 1; d < shape.size(); ++d) inner *= shape[d];
  auto step = std::make_unique<FnStep>([=](const RunCtx& ctx) {
    float* z = ctx.MutF(out);
    int64_t off = 0;
    for (size_t k = 0; k < ins.size(); ++k) {
      const float* x = ctx.F(ins[k]);
      const int64_t run = sizes[k] * inner;
      for (int64_t o = 0; o < outer; ++o) {
        std::memcpy(z + o * total * inner + off, x + o * run, sizeof(float) * run);
      }
      off += run;
    }
  });
  FinishStep(pl, node, std::move(step), ins, out);
}

void BuildIdentity(Planner& pl, int node) {
  const Node& n = pl.graph().nodes[node];
  AttrReader r(n);
  if (n.op == "Dropout") {
    const std::string mode = r.Str("mode", "training");
    if (mode != "training")
      r.Fail("mode", "'" + mode +
                         "' applies dropout at inference; "
                         "only mode='training' (identity) is supported");
    r.Float("p", 0.5);
    r.Ignore("axes");
    r.Ignore("cudnn_off");
  }
  r.Finish();
  if (pl.num_inputs(node) < 1) r.FailNode("expected an input");
  const int in = pl.FloatInput(node, 0, "data");
  pl.SetOutput(node, pl.Alias(in, pl.value(in).shape));
}

void BuildFlatten(Planner& pl, int node) {
  AttrReader r(pl.graph().nodes[node]);
  r.Finish();
  pl.ExpectInputs(node, 1, "data");
  const int in = pl.FloatInput(node, 0, "data");
  const std::vector<int64_t>& s = pl.value(in).shape;
  if (s.empty()) r.FailNode("cannot flatten a 0-d array");
  int64_t rest = 1;
  for (size_t d = 1; d < s.size(); ++d) rest *= s[d];
  pl.SetOutput(node, pl.Alias(in, {s[0], rest}));
}

// MXNet's Reshape codes: 0 copy, -1 infer, -2 copy the rest, -3 merge two, -4 split one in two.
std::vector<int64_t> ReshapeShape(AttrReader& r, std::vector<int64_t> in, std::vector<int64_t> spec,
                                  bool reverse) {
  if (reverse) {
    std::reverse(in.begin(), in.end());
    std::reverse(spec.begin(), spec.end());
    // -4's two following values are reversed too; reversing the whole spec keeps them adjacent
    // but in the wrong order, which MXNet accepts as written after the reversal.
  }
  std::vector<int64_t> out;
  int infer = -1;
  size_t i = 0;  // input dim
  const std::string spec_err = "shape code out of range for input " + ShapeText(in);
  for (size_t k = 0; k < spec.size(); ++k) {
    const int64_t c = spec[k];
    if (c > 0) {
      out.push_back(c);
      ++i;
    } else if (c == 0) {
      if (i >= in.size()) r.Fail("shape", spec_err);
      out.push_back(in[i++]);
    } else if (c == -1) {
      if (infer >= 0) r.Fail("shape", "more than one -1");
      infer = static_cast<int>(out.size());
      out.push_back(1);
      ++i;
    } else if (c == -2) {
      while (i < in.size()) out.push_back(in[i++]);
    } else if (c == -3) {
      if (i + 1 >= in.size()) r.Fail("shape", spec_err);
      out.push_back(in[i] * in[i + 1]);
      i += 2;
    } else if (c == -4) {
      if (i >= in.size() || k + 2 >= spec.size()) r.Fail("shape", spec_err);
      int64_t a = spec[k + 1], b = spec[k + 2];
      const int64_t d = in[i++];
      if (a == -1 && b > 0 && d % b == 0) a = d / b;
      if (b == -1 && a > 0 && d % a == 0) b = d / a;
      if (a <= 0 || b <= 0 || a * b != d)
        r.Fail("shape", "-4 split does not match dim " + std::to_string(d));
      out.push_back(a);
      out.push_back(b);
      k += 2;
    } else {
      r.Fail("shape", "unknown code " + std::to_string(c));
    }
  }
  int64_t total = 1;
  for (int64_t d : in) total *= d;
  if (infer >= 0) {
    int64_t known = 1;
    for (size_t d = 0; d < out.size(); ++d) {
      if (static_cast<int>(d) != infer) known *= out[d];
    }
    if (known == 0 || total % known != 0) r.Fail("shape", "cannot infer -1 for " + ShapeText(in));
    out[infer] = total / known;
  }
  if (reverse) std::reverse(out.begin(), out.end());
  return out;
}

void BuildReshape(Planner& pl, int node) {
  AttrReader r(pl.graph().nodes[node]);
  std::vector<int64_t> spec = r.IntList("shape", {});
  const bool reverse = r.Bool("reverse", false);
  const std::vector<int64_t> target = r.IntList("target_shape", {});
  const bool keep_highest = r.Bool("keep_highest", false);
  r.Finish();
  pl.ExpectInputs(node, 1, "data");
  const int in = pl.FloatInput(node, 0, "data");
  std::vector<int64_t> shape;
  if (spec.empty() && !target.empty()) {
    // The deprecated form: target_shape with 0 = infer, keep_highest keeps dim 0.
    spec = target;
    for (int64_t& c : spec) {
      if (c == 0) c = -1;
    }
    if (keep_highest) spec.insert(spec.begin(), 0);
  }
  if (spec.empty()) r.Fail("shape", "is required");
  shape = ReshapeShape(r, pl.value(in).shape, spec, reverse);
  if (CheckedCount(shape, NodeLabel(pl.graph().nodes[node])) != pl.value(in).Count()) {
    r.Fail("shape", "gives " + ShapeText(shape) + ", which does not hold the " +
                        std::to_string(pl.value(in).Count()) + " elements of " +
                        ShapeText(pl.value(in).shape));
  }
  pl.SetOutput(node, pl.Alias(in, shape));
}

// out = permutation of x by axes (out dim d = in dim axes[d]).
void AddTranspose(Planner& pl, int node, int in, const std::vector<int64_t>& axes) {
  const std::vector<int64_t>& s = pl.value(in).shape;
  const size_t nd = s.size();
  std::vector<int64_t> so(nd), stride_in(nd), stride_out_src(nd);
  int64_t st = 1;
  for (size_t d = nd; d-- > 0;) {
    stride_in[d] = st;
    st *= s[d];
  }
  bool identity = true;
  for (size_t d = 0; d < nd; ++d) {
    so[d] = s[axes[d]];
    stride_out_src[d] = stride_in[axes[d]];
    identity = identity && axes[d] == static_cast<int64_t>(d);
  }
  if (identity) {
    pl.SetOutput(node, pl.Alias(in, s));
    return;
  }
  const int out = pl.NewValue(so);
  // Rows of the output's last dim; each row gathers with the stride of its source dim.
  const int64_t last = nd ? so[nd - 1] : 1;
  const int64_t rows = last ? pl.value(out).Count() / last : 0;
  auto step = std::make_unique<FnStep>([=](const RunCtx& ctx) {
    const float* x = ctx.F(in);
    float* y = ctx.MutF(out);
    ParallelFor(std::max<int64_t>(1, std::min<int64_t>(rows, 256)), ctx.threads,
                [&](int64_t b, int64_t e) {
                  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(rows, 256));
                  for (int64_t row = rows * b / tasks; row < rows * e / tasks; ++row) {
                    int64_t rem = row, src = 0;
                    for (size_t d = nd - 1; d-- > 0;) {
                      src += (rem % so[d]) * stride_out_src[d];
                      rem /= so[d];
                    }
                    const int64_t step_src = stride_out_src[nd - 1];
                    float* yr = y + row * last;
                    for (int64_t j = 0; j < last; ++j) yr[j] = x[src + j * step_src];
                  }
                });
  });
  FinishStep(pl, node, std::move(step), {in}, out);
}

void BuildTranspose(Planner& pl, int node) {
  AttrReader r(pl.graph().nodes[node]);
  std::vector<int64_t> axes = r.IntList("axes", {});
  r.Finish();
  pl.ExpectInputs(node, 1, "data");
  const int in = pl.FloatInput(node, 0, "data");
  const size_t nd = pl.value(in).shape.size();
  if (nd == 0) r.FailNode("cannot transpose a 0-d array");
  if (axes.empty()) {
    for (size_t d = nd; d-- > 0;) axes.push_back(static_cast<int64_t>(d));
  }
  if (axes.size() != nd)
    r.Fail("axes", "has " + std::to_string(axes.size()) + " entries for a rank-" +
                       std::to_string(nd) + " input");
  std::vector<bool> seen(nd, false);
  for (int64_t& a : axes) {
    a = NormAxis(r, "axes", a, nd);
    if (seen[a]) r.Fail("axes", "is not a permutation");
    seen[a] = true;
  }
  // transpose(0, 2, 3, 1) read only by QNHWCToNCHW (fold's oneDNN hand-over): both vanish.
  const int reader = pl.SoleReader(node);
  if (reader >= 0 && pl.graph().nodes[reader].op == "QNHWCToNCHW" && nd == 4 &&
      axes == std::vector<int64_t>{0, 2, 3, 1} && pl.graph().nodes[reader].attrs.empty()) {
    pl.SetOutput(node, pl.Alias(in, {pl.value(in).shape[0], pl.value(in).shape[2],
                                     pl.value(in).shape[3], pl.value(in).shape[1]}));
    pl.Absorb(reader, pl.Alias(in, pl.value(in).shape));
    return;
  }
  AddTranspose(pl, node, in, axes);
}

void BuildNhwcToNchw(Planner& pl, int node) {
  AttrReader r(pl.graph().nodes[node]);
  r.Finish();
  pl.ExpectInputs(node, 1, "data");
  const int in = pl.FloatInput(node, 0, "data");
  if (pl.value(in).shape.size() != 4) {
    r.FailNode("expected a rank-4 (N, H, W, C) input, got " + ShapeText(pl.value(in).shape));
  }
  AddTranspose(pl, node, in, {0, 3, 1, 2});
}

// Softmax over `axis` of x viewed as (outer, n, inner).
void AddSoftmax(Planner& pl, int node, int in, int axis, float temperature) {
  const std::vector<int64_t>& s = pl.value(in).shape;
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; ++d) outer *= s[d];
  for (size_t d = axis + 1; d < s.size(); ++d) inner *= s[d];
  const int64_t n = s[axis];
  const int out = pl.NewValue(s);
  auto step = std::make_unique<FnStep>([=](const RunCtx& ctx) {
    const float* x = ctx.F(in);
    float* y = ctx.MutF(out);
    ForRange(outer * inner, ctx.threads, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t o = t / inner, q = t % inner;
        const float* xr = x + o * n * inner + q;
        float* yr = y + o * n * inner + q;
        float m = -INFINITY;
        for (int64_t i = 0; i < n; ++i) m = std::max(m, xr[i * inner] / temperature);
        double sum = 0.0;
        for (int64_t i = 0; i < n; ++i) {
          const float v = std::exp(xr[i * inner] / temperature - m);
          yr[i * inner] = v;
          sum += v;
        }
        const float inv = static_cast<float>(1.0 / sum);
        for (int64_t i = 0; i < n; ++i) yr[i * inner] *= inv;
      }
    });
  });
  FinishStep(pl, node, std::move(step), {in}, out);
}

void BuildSoftmax(Planner& pl, int node) {
  const Node& n = pl.graph().nodes[node];
  AttrReader r(n);
  const int in = pl.FloatInput(node, 0, "data");
  const std::vector<int64_t>& s = pl.value(in).shape;
  if (s.empty()) r.FailNode("softmax of a 0-d array");
  if (n.op == "softmax") {
    const int64_t axis = r.Int("axis", -1, -64, 64);
    bool has_t = false;
    double t = r.OptFloat("temperature", &has_t);
    r.Str("dtype", "None");
    if (r.Bool("use_length", false)) r.Fail("use_length", "True is not supported");
    r.Finish();
    pl.ExpectInputs(node, 1, "data");
    if (has_t && !(t > 0.0)) r.Fail("temperature", "must be positive");
    AddSoftmax(pl, node, in, NormAxis(r, "axis", axis, s.size()), has_t ? float(t) : 1.0f);
  } else if (n.op == "SoftmaxOutput" || n.op == "Softmax") {
    const bool multi = r.Bool("multi_output", false);
    const bool preserve = r.Bool("preserve_shape", false);
    for (const char* k : {"grad_scale", "ignore_label", "use_ignore", "normalization", "out_grad",
                          "smooth_alpha"}) {
      r.Ignore(k);
    }
    r.Finish();
    if (pl.num_inputs(node) < 1 || pl.num_inputs(node) > 2) r.FailNode("expected data[, label]");
    if (multi) {
      if (s.size() < 2) r.FailNode("multi_output needs a channel axis");
      AddSoftmax(pl, node, in, 1, 1.0f);
    } else if (preserve) {
      AddSoftmax(pl, node, in, static_cast<int>(s.size()) - 1, 1.0f);
    } else {
      int64_t rest = 1;
      for (size_t d = 1; d < s.size(); ++d) rest *= s[d];
      const int flat = pl.Alias(in, {s[0], rest});
      AddSoftmax(pl, node, flat, 1, 1.0f);
      pl.SetOutput(node, pl.Alias(pl.NodeValue(node), s));
    }
  } else {  // SoftmaxActivation
    const std::string mode = r.Str("mode", "instance");
    r.Finish();
    pl.ExpectInputs(node, 1, "data");
    if (mode == "channel") {
      if (s.size() < 2) r.FailNode("mode='channel' needs a channel axis");
      AddSoftmax(pl, node, in, 1, 1.0f);
    } else if (mode == "instance") {
      int64_t rest = 1;
      for (size_t d = 1; d < s.size(); ++d) rest *= s[d];
      const int flat = pl.Alias(in, {s[0], rest});
      AddSoftmax(pl, node, flat, 1, 1.0f);
      pl.SetOutput(node, pl.Alias(pl.NodeValue(node), s));
    } else {
      r.Fail("mode", "'" + mode + "' is not supported (instance, channel)");
    }
  }
}

// Per-channel affine (BatchNorm inference, QChannelAffine) along `axis`.
void AddChannelAffine(Planner& pl, int node, int in, int axis, std::vector<float> scale,
                      std::vector<float> shift, bool relu) {
  const std::vector<int64_t>& s = pl.value(in).shape;
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; ++d) outer *= s[d];
  for (size_t d = axis + 1; d < s.size(); ++d) inner *= s[d];
  const int64_t c = s[axis];
  const int out = pl.NewValue(s);
  auto step = std::make_unique<FnStep>([=](const RunCtx& ctx) {
    const float* x = ctx.F(in);
    float* y = ctx.MutF(out);
    const int64_t rows = outer * c;
    const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(rows, 128));
    ParallelFor(tasks, ctx.threads, [&](int64_t b, int64_t e) {
      for (int64_t row = rows * b / tasks; row < rows * e / tasks; ++row) {
        const float sc = scale[row % c], sh = shift[row % c];
        const float* xr = x + row * inner;
        float* yr = y + row * inner;
        if (relu) {
          for (int64_t i = 0; i < inner; ++i) {
            const float p = xr[i] * sc;
            const float v = p + sh;
            yr[i] = v > 0.0f ? v : (v == v ? 0.0f : v);
          }
        } else {
          for (int64_t i = 0; i < inner; ++i) {
            const float p = xr[i] * sc;
            yr[i] = p + sh;
          }
        }
      }
    });
  });
  FinishStep(pl, node, std::move(step), {in}, out);
}

}  // namespace

bool IsReluNode(const Node& n) {
  if (n.op != "Activation") return false;
  for (const auto& kv : n.attrs) {
    if (kv.first.rfind("__", 0) == 0) continue;
    if (kv.first != "act_type" || kv.second != "relu") return false;
  }
  return n.attrs.count("act_type") == 1;
}

// BatchNorm in inference mode as (scale, shift) per channel; shared with the layer builders.
void BatchNormAffine(Planner& pl, int node, int64_t channels, std::vector<float>* scale,
                     std::vector<float>* shift, int* axis_out) {
  AttrReader r(pl.graph().nodes[node]);
  const double eps = r.Float("eps", 1e-3);
  const bool fix_gamma = r.Bool("fix_gamma", true);
  r.Bool("use_global_stats", false);
  r.Float("momentum", 0.9);
  r.Ignore("cudnn_off");
  r.Bool("output_mean_var", false);  // only output 0 may be read (Planner::Input checks)
  const int64_t axis = r.Int("axis", 1, -8, 8);
  bool has = false;
  r.OptFloat("min_calib_range", &has);
  if (has) r.Fail("min_calib_range", "quantized BatchNorm is not supported");
  r.OptFloat("max_calib_range", &has);
  if (has) r.Fail("max_calib_range", "quantized BatchNorm is not supported");
  r.Finish();
  pl.ExpectInputs(node, 5, "data, gamma, beta, moving_mean, moving_var");
  if (!(eps > 0.0)) r.Fail("eps", "must be positive");
  const std::vector<int64_t> cs = {channels};
  const std::vector<float> gamma = pl.ParamFloat(node, 1, "gamma", cs);
  const std::vector<float> beta = pl.ParamFloat(node, 2, "beta", cs);
  const std::vector<float> mean = pl.ParamFloat(node, 3, "moving_mean", cs);
  const std::vector<float> var = pl.ParamFloat(node, 4, "moving_var", cs);
  scale->resize(channels);
  shift->resize(channels);
  for (int64_t c = 0; c < channels; ++c) {
    const float g = fix_gamma ? 1.0f : gamma[c];
    const float s = static_cast<float>(g / std::sqrt(static_cast<double>(var[c]) + eps));
    (*scale)[c] = s;
    (*shift)[c] = beta[c] - mean[c] * s;
  }
  if (axis_out) *axis_out = static_cast<int>(axis);
}

int64_t BatchNormChannels(Planner& pl, int node, const std::vector<int64_t>& shape) {
  AttrReader r(pl.graph().nodes[node]);
  const int64_t axis = r.Int("axis", 1, -8, 8);
  const int a = NormAxis(r, "axis", axis, shape.size());
  return shape[a];
}

namespace {

// Attribute `key` of a node as text, or `def` when absent (names starting "__" never asked).
std::string AttrOr(const Node& n, const char* key, const std::string& def) {
  auto it = n.attrs.find(key);
  return it == n.attrs.end() ? def : it->second;
}

bool IsTrueText(const std::string& v) { return v == "True" || v == "true" || v == "1"; }

// Only known attributes with the given values (plus MXNet's "__" ones).
bool OnlyAttrs(const Node& n, const std::set<std::string>& allowed) {
  for (const auto& kv : n.attrs) {
    if (kv.first.rfind("__", 0) != 0 && allowed.count(kv.first) == 0) return false;
  }
  return true;
}

// A QActivation that passes the sign through to a binary layer: act_bit 1 (sgn) or
// backward_only (identity); either way the next binary layer's sign is the same.
bool IsSignPassThrough(const Node& n) {
  if (n.op != "QActivation" || !OnlyAttrs(n, {"act_bit", "backward_only", "grad_cancel"})) {
    return false;
  }
  return AttrOr(n, "act_bit", "1") == "1" || IsTrueText(AttrOr(n, "backward_only", "False"));
}

// A 1-bit QConvolution that takes the sign of a float input itself (no input affine yet).
bool IsSignConv(const Node& n) {
  if (n.op != "QConvolution") return false;
  const std::string act = AttrOr(n, "act_bit", "1");
  return act == "1" && AttrOr(n, "weight_bit", act) == "1" &&
         !IsTrueText(AttrOr(n, "input_affine", "False")) &&
         !IsTrueText(AttrOr(n, "in_packed", "False"));
}

// A 1-bit QFullyConnected that takes the sign of its (flattened) input itself.
bool IsSignDense(const Node& n) {
  if (n.op != "QFullyConnected") return false;
  const std::string act = AttrOr(n, "act_bit", "1");
  return act == "1" && AttrOr(n, "weight_bit", act) == "1" &&
         !IsTrueText(AttrOr(n, "input_affine", "False")) &&
         IsTrueText(AttrOr(n, "flatten", "True"));
}

void BuildBatchNorm(Planner& pl, int node) {
  const int in = pl.FloatInput(node, 0, "data");
  const std::vector<int64_t>& s = pl.value(in).shape;
  if (s.empty()) AttrReader(pl.graph().nodes[node]).FailNode("BatchNorm of a 0-d array");
  std::vector<float> scale, shift;
  int axis = 1;
  BatchNormAffine(pl, node, BatchNormChannels(pl, node, s), &scale, &shift, &axis);
  AttrReader r(pl.graph().nodes[node]);
  axis = NormAxis(r, "axis", axis, s.size());
  // BatchNorm [-> sign QActivations] -> binary QConvolution, each the only reader of the one
  // before: the convolution computes sgn(x * scale + shift) in its packing pass (docs/design.md
  // §9; the converter's fold rewrite 1 at load time).
  // The same for a binary QFullyConnected (flatten=True): the per-channel affine repeated
  // over each channel's H * W features. The readers may fan out (a residual unit's 3x3 conv
  // and its 1x1 shortcut read one sign): every path must end in such a layer.
  if (axis == 1 && (s.size() == 4 || s.size() == 2)) {
    std::vector<int> layers, passes;
    bool all = true;
    std::vector<int> todo = {node};
    while (!todo.empty() && all) {
      const int x = todo.back();
      todo.pop_back();
      const std::vector<int> readers = pl.FirstInputReaders(x);
      if (readers.empty()) all = false;
      for (int r : readers) {
        const Node& rn = pl.graph().nodes[r];
        if (IsSignPassThrough(rn)) {
          passes.push_back(r);
          todo.push_back(r);
        } else if ((s.size() == 4 && IsSignConv(rn)) || IsSignDense(rn)) {
          layers.push_back(r);
        } else {
          all = false;
        }
      }
    }
    if (all && !layers.empty()) {
      std::string names = pl.graph().nodes[node].name;
      for (int c : passes) {
        names += "+" + pl.graph().nodes[c].name;
        AttrReader qa(pl.graph().nodes[c]);  // still checked: act_bit's range
        qa.Int("act_bit", 1, 1, 32);
        qa.Bool("backward_only", false);
        qa.Float("grad_cancel", 1.0);
        qa.Finish();
        pl.Absorb(c, -1);
      }
      for (int layer : layers) {
        Planner::PendingAffine affine;
        affine.value = in;
        const bool dense = pl.graph().nodes[layer].op == "QFullyConnected";
        const int64_t inner = s.size() == 4 && dense ? s[2] * s[3] : 1;
        for (size_t c = 0; c < scale.size(); ++c) {
          affine.scale.insert(affine.scale.end(), inner, scale[c]);
          affine.shift.insert(affine.shift.end(), inner, shift[c]);
        }
        affine.names = names;
        pl.SetPendingAffine(layer, std::move(affine));
      }
      pl.Absorb(node, -1);
      return;
    }
  }
  // A relu that is its only reader joins it.
  bool relu = false;
  const int reader = pl.SoleReader(node);
  if (reader >= 0 && IsReluNode(pl.graph().nodes[reader])) relu = true;
  AddChannelAffine(pl, node, in, axis, scale, shift, relu);
  if (relu) pl.Absorb(reader, pl.NodeValue(node));
}

void BuildQChannelAffine(Planner& pl, int node) {
  AttrReader r(pl.graph().nodes[node]);
  const bool relu = r.Bool("relu", false);
  r.Finish();
  pl.ExpectInputs(node, 3, "data, scale, shift");
  const int in = pl.FloatInput(node, 0, "data");
  const std::vector<int64_t>& s = pl.value(in).shape;
  if (s.size() < 2) r.FailNode("expected an input with a channel axis, got " + ShapeText(s));
  const std::vector<float> scale = pl.ParamFloat(node, 1, "scale", {s[1]});
  const std::vector<float> shift = pl.ParamFloat(node, 2, "shift", {s[1]});
  AddChannelAffine(pl, node, in, 1, scale, shift, relu);
}

}  // namespace

PoolParams ParsePooling(const Node& node) {
  AttrReader r(node);
  PoolParams p;
  p.global = r.Bool("global_pool", false);
  p.type = r.Str("pool_type", "max");
  const std::string conv = r.Str("pooling_convention", "valid");
  p.count_include_pad = r.Bool("count_include_pad", true);
  p.kernel = r.Tuple("kernel", 2, {1, 1}, 1, int64_t{1} << 30, !p.global);
  p.stride = r.Tuple("stride", 2, {1, 1}, 1, int64_t{1} << 30);
  p.pad = r.Tuple("pad", 2, {0, 0}, 0, int64_t{1} << 30);
  const std::string layout = r.Str("layout", "None");
  r.Ignore("cudnn_off");
  bool has_p = false;
  r.OptFloat("p_value", &has_p);
  r.Finish();
  if (p.type != "max" && p.type != "avg" && p.type != "sum") {
    r.Fail("pool_type", "'" + p.type + "' is not supported (max, avg, sum)");
  }
  if (conv != "valid" && conv != "full") {
    r.Fail("pooling_convention", "'" + conv + "' is not supported (valid, full)");
  }
  if (layout != "None" && layout != "NCHW") r.Fail("layout", "only NCHW is supported");
  p.full = conv == "full";
  return p;
}

int64_t PoolOut(int64_t in, int64_t k, int64_t s, int64_t p, bool full) {
  const int64_t span = in + 2 * p - k;
  if (span < 0) return 0;
  return full ? 1 + (span + s - 1) / s : 1 + span / s;
}

namespace {

void BuildPooling(Planner& pl, int node) {
  const Node& n = pl.graph().nodes[node];
  PoolParams p = ParsePooling(n);
  pl.ExpectInputs(node, 1, "data");
  const int in = pl.FloatInput(node, 0, "data");
  const std::vector<int64_t> s = pl.value(in).shape;
  if (s.size() != 4) AttrReader(n).FailNode("expected a rank-4 NCHW input, got " + ShapeText(s));
  const int64_t h = s[2], w = s[3];
  int64_t kh = p.kernel[0], kw = p.kernel[1], sh = p.stride[0], sw = p.stride[1];
  int64_t ph = p.pad[0], pw = p.pad[1];
  if (p.global) {
    kh = h;
    kw = w;
    sh = sw = 1;
    ph = pw = 0;
  }
  const int64_t oh = PoolOut(h, kh, sh, ph, p.full), ow = PoolOut(w, kw, sw, pw, p.full);
  if (oh <= 0 || ow <= 0) {
    AttrReader(n).FailNode("the pooling window is larger than the padded input " + ShapeText(s));
  }
  const int out = pl.NewValue({s[0], s[1], oh, ow});
  const int type = p.type == "max" ? 0 : (p.type == "avg" ? 1 : 2);
  const bool include_pad = p.count_include_pad;
  const bool interior = ph == 0 && pw == 0 && (oh - 1) * sh + kh <= h && (ow - 1) * sw + kw <= w;
  const Isa isa = pl.isa();
  auto step = std::make_unique<FnStep>([=](const RunCtx& ctx) {
    const float* x = ctx.F(in);
    float* y = ctx.MutF(out);
    const int64_t planes = s[0] * s[1];
    ParallelFor(planes, ctx.threads, [&](int64_t b, int64_t e) {
      if (interior && type == 0 &&
          MaxPoolInterior(x + b * h * w, e - b, h, w, kh, kw, sh, sw, oh, ow, y + b * oh * ow,
                          isa)) {
        return;
      }
      for (int64_t pidx = b; pidx < e; ++pidx) {
        const float* xp = x + pidx * h * w;
        float* yp = y + pidx * oh * ow;
        if (interior && type == 0) {  // every window inside the image: no bounds per output
          // Tap by tap over a whole output row (the loop over ox vectorises), taps in the
          // same (ky, kx) order as below, so NaN propagates the same way.
          for (int64_t oy = 0; oy < oh; ++oy) {
            const float* base = xp + oy * sh * w;
            float* yr = yp + oy * ow;
            for (int64_t ox = 0; ox < ow; ++ox) yr[ox] = base[ox * sw];
            for (int64_t ky = 0; ky < kh; ++ky) {
              for (int64_t kx = ky == 0 ? 1 : 0; kx < kw; ++kx) {
                const float* r = base + ky * w + kx;
                for (int64_t ox = 0; ox < ow; ++ox) {
                  const float v = r[ox * sw], m = yr[ox];
                  yr[ox] = ((v > m) | (v != v)) ? v : m;
                }
              }
            }
          }
          continue;
        }
        for (int64_t oy = 0; oy < oh; ++oy) {
          int64_t y0 = oy * sh - ph, y1 = std::min(y0 + kh, h + ph);
          const int64_t wh = y1 - y0;
          y0 = std::max<int64_t>(y0, 0);
          y1 = std::min(y1, h);
          for (int64_t ox = 0; ox < ow; ++ox) {
            int64_t x0 = ox * sw - pw, x1 = std::min(x0 + kw, w + pw);
            const int64_t ww = x1 - x0;
            x0 = std::max<int64_t>(x0, 0);
            x1 = std::min(x1, w);
            if (type == 0) {
              float m = -INFINITY;
              for (int64_t yy = y0; yy < y1; ++yy) {
                for (int64_t xx = x0; xx < x1; ++xx) {
                  const float v = xp[yy * w + xx];
                  m = (v > m || v != v) ? v : m;
                }
              }
              yp[oy * ow + ox] = m;
            } else {
              float sum = 0.0f;
              for (int64_t yy = y0; yy < y1; ++yy) {
                for (int64_t xx = x0; xx < x1; ++xx) sum += xp[yy * w + xx];
              }
              if (type == 1) {
                const int64_t count = include_pad ? wh * ww : (y1 - y0) * (x1 - x0);
                sum = count > 0 ? sum / static_cast<float>(count) : 0.0f;
              }
              yp[oy * ow + ox] = sum;
            }
          }
        }
      }
    });
  });
  FinishStep(pl, node, std::move(step), {in}, out);
}

}  // namespace

void RegisterBasicOps(std::map<std::string, Builder>* t) {
  (*t)["Activation"] = BuildActivation;
  (*t)["LeakyReLU"] = BuildLeakyRelu;
  (*t)["clip"] = BuildClip;
  (*t)["QActivation"] = BuildQActivation;
  for (const char* op :
       {"elemwise_add", "_Plus", "_plus", "broadcast_add", "elemwise_sub", "_Minus", "_minus",
        "broadcast_sub", "elemwise_mul", "_Mul", "_mul", "broadcast_mul"}) {
    (*t)[op] = BuildAdd;
  }
  for (const char* op : {"_plus_scalar", "_minus_scalar", "_rminus_scalar", "_mul_scalar",
                         "_div_scalar", "_rdiv_scalar"}) {
    (*t)[op] = BuildScalar;
  }
  for (const char* op : {"relu", "sigmoid", "tanh"}) (*t)[op] = BuildNamedActivation;
  (*t)["Concat"] = BuildConcat;
  (*t)["concat"] = BuildConcat;
  for (const char* op : {"Dropout", "identity", "_copy", "BlockGrad", "stop_gradient"}) {
    (*t)[op] = BuildIdentity;
  }
  (*t)["Flatten"] = BuildFlatten;
  (*t)["flatten"] = BuildFlatten;
  (*t)["Reshape"] = BuildReshape;
  (*t)["reshape"] = BuildReshape;
  (*t)["transpose"] = BuildTranspose;
  (*t)["QNHWCToNCHW"] = BuildNhwcToNchw;
  for (const char* op : {"softmax", "SoftmaxOutput", "Softmax", "SoftmaxActivation"}) {
    (*t)[op] = BuildSoftmax;
  }
  (*t)["BatchNorm"] = BuildBatchNorm;
  (*t)["QChannelAffine"] = BuildQChannelAffine;
  (*t)["Pooling"] = BuildPooling;
}

}  // namespace rt
}  // namespace binmx

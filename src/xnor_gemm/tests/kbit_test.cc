/*
 * binmx core test of the integer k-bit convolution and dense layer (kbit.h), self-contained (no
 * framework); built and run by tests/test_kbit_core.py (plainly and under ASan + UBSan).
 * Exit code 0 = pass.
 *
 * Plain references, written from the DoReFa definitions (docs/design.md §3) and not from the
 * kernels: fake-quant floats a = rint(A clip(x, 0, 1)) / A and w = 2 rint(B (tanh W / (2 max) +
 * 1/2)) / B - 1 (sgn for weight_bit 1), the integer levels la = A a and mw = B w (checked to be
 * integers, which is the claim that the integer path reproduces the fake quantisation), and
 *     D[n][f][oy][ox] = sum_{c', i, j} lpad * mw,   lpad = la inside the image, pad_value * A
 *     outside (the float path pads the quantised activation with the float pad_value).
 * Compared on every available ISA with 1 and 2 threads:
 *   - the integers D (out_dot) with ==;
 *   - the float output with == against float(double(D_ref) * ds) + bias (the documented
 *     epilogue), and, with no bias, within 1 ulp of the exact alpha * D / (A * B) (long double).
 * Sizes: depths and channel counts at word / vector boundaries (1..10, 63-65, 127-129,
 * 511-513), filter counts around 16, strides, pads (0 and +-1 pad values), dilations, groups;
 * the direct int8 kernel over C 1..5 and kernels 1..7 (kbit_direct.cc). KbitConv2dReluPool:
 * the reference outputs, then relu and MXNet's max pool (window clipped, NaN wins, empty window
 * -inf), compared with ==, for alpha of both signs, zeros and non-finite values; batches over
 * one image block; both bit-serial convolution paths (direct for C/g >= 32 at 3x3, im2col below).
 */
#include "kbit.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "conv.h"
#include "xnor_gemm.h"

namespace {

int g_failures = 0;
int64_t g_cases = 0;

#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    if (!(cond)) {                                                         \
      ++g_failures;                                                        \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                   \
      std::fprintf(stderr, "\n");                                          \
      if (g_failures > 20) std::exit(1);                                   \
    }                                                                      \
  } while (0)

using binmx::Conv2dParams;
using binmx::Isa;

// Activations: mostly in [-0.2, 1.2] (both clip sides), with exact level ties k / (2A) where
// representable and the floats next to them, 0, -0, 1, NaN and infinities mixed in.
std::vector<float> RandomActs(std::mt19937_64& gen, int64_t count, int ka) {
  std::uniform_real_distribution<float> dist(-0.2f, 1.2f);
  const int a_max = (1 << ka) - 1;
  std::vector<float> v(static_cast<size_t>(count));
  for (auto& x : v) {
    const uint64_t r = gen() % 32;
    if (r == 0)
      x = 0.0f;
    else if (r == 1)
      x = -0.0f;
    else if (r == 2)
      x = 1.0f;
    else if (r == 3)
      x = std::numeric_limits<float>::quiet_NaN();
    else if (r == 4)
      x = (gen() % 2) ? INFINITY : -INFINITY;
    else if (r < 9)
      x = static_cast<float>(static_cast<double>(gen() % (2 * a_max + 1)) / (2.0 * a_max));
    else if (r < 11)  // the float next to a tie, either side
      x = std::nextafter(
          static_cast<float>(static_cast<double>(gen() % (2 * a_max + 1)) / (2.0 * a_max)),
          (gen() % 2) ? INFINITY : -INFINITY);
    else
      x = dist(gen);
  }
  return v;
}

std::vector<float> RandomWeights(std::mt19937_64& gen, int64_t count) {
  std::normal_distribution<float> dist(0.0f, 0.7f);
  std::vector<float> v(static_cast<size_t>(count));
  for (auto& x : v) {
    const uint64_t r = gen() % 32;
    x = r == 0 ? 0.0f : r == 1 ? -0.0f : dist(gen);
  }
  return v;
}

// Fake-quant activation (op_common.h's QuantizeAct) and its level.
int RefActLevel(float x, int ka) {
  const double a_max = (1 << ka) - 1;
  double a = static_cast<double>(x);
  if (!(a > 0.0)) a = 0.0;  // NaN and negatives
  if (a > 1.0) a = 1.0;
  const float fq = static_cast<float>(std::nearbyint(a_max * a) / a_max);
  const double level = static_cast<double>(fq) * a_max;
  const int li = static_cast<int>(std::lround(level));
  CHECK(std::fabs(level - li) < 1e-4, "activation level %f not an integer", level);
  return li;
}

// Fake-quant weights (op_common.h's QuantizeWeight) as odd integers mw = B w.
std::vector<int> RefWeightInts(const std::vector<float>& w, int kw) {
  std::vector<int> out(w.size());
  if (kw == 1) {
    for (size_t i = 0; i < w.size(); ++i) out[i] = w[i] < 0.0f ? -1 : 1;
    return out;
  }
  const double b_max = (1 << kw) - 1;
  double max_t = 0.0;
  for (float v : w) max_t = std::max(max_t, std::fabs(std::tanh(double{v})));
  for (size_t i = 0; i < w.size(); ++i) {
    const double t = max_t > 0.0 ? std::tanh(double{w[i]}) / (2.0 * max_t) : 0.0;
    const float fq = static_cast<float>(2.0 * (std::nearbyint(b_max * (t + 0.5)) / b_max) - 1.0);
    const double m = static_cast<double>(fq) * b_max;
    out[i] = static_cast<int>(std::lround(m));
    CHECK(std::fabs(m - out[i]) < 1e-4 && (out[i] & 1) != 0, "weight int %f not odd", m);
  }
  return out;
}

std::vector<int64_t> RefConv(const std::vector<float>& x, const std::vector<int>& mw,
                             const Conv2dParams& p, int ka) {
  const int64_t oh = p.OutH(), ow = p.OutW(), cg = p.GroupChannels(), fg = p.GroupFilters();
  const int64_t a_max = (1 << ka) - 1;
  std::vector<int64_t> out(static_cast<size_t>(p.batch * p.num_filter * oh * ow));
  for (int64_t n = 0; n < p.batch; ++n) {
    for (int64_t f = 0; f < p.num_filter; ++f) {
      const int64_t g = f / fg;
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          int64_t dot = 0;
          for (int64_t c = 0; c < cg; ++c) {
            for (int64_t i = 0; i < p.kernel_h; ++i) {
              for (int64_t j = 0; j < p.kernel_w; ++j) {
                const int64_t y = oy * p.stride_h - p.pad_h + i * p.dilate_h;
                const int64_t xx = ox * p.stride_w - p.pad_w + j * p.dilate_w;
                const bool inside = y >= 0 && y < p.in_h && xx >= 0 && xx < p.in_w;
                const int64_t lv =
                    inside ? RefActLevel(
                                 x[((n * p.channels + g * cg + c) * p.in_h + y) * p.in_w + xx], ka)
                           : p.pad_value * a_max;
                dot += lv * mw[((f * cg + c) * p.kernel_h + i) * p.kernel_w + j];
              }
            }
          }
          out[((n * p.num_filter + f) * oh + oy) * ow + ox] = dot;
        }
      }
    }
  }
  return out;
}

// ulp of float v (the spacing at |v|).
double Ulp(float v) {
  const float a = std::fabs(v);
  return static_cast<double>(std::nextafter(a, INFINITY) - a);
}

void CheckOutputs(const char* what, const std::vector<int64_t>& ref,
                  const std::vector<int32_t>& dot, const std::vector<float>& out,
                  const std::vector<float>& alpha, const std::vector<float>* bias,
                  int64_t per_f_inner, int64_t f_all, bool rows, int ka, int kw, Isa isa,
                  int threads) {
  const double denom = static_cast<double>(((1 << ka) - 1) * ((1 << kw) - 1));
  for (size_t i = 0; i < ref.size(); ++i) {
    const int64_t f =
        rows ? static_cast<int64_t>(i) % f_all : (static_cast<int64_t>(i) / per_f_inner) % f_all;
    if (dot[i] != ref[i]) {
      CHECK(false, "%s isa=%s threads=%d ka=%d kw=%d: D[%zu] = %d, expected %lld", what,
            binmx::IsaName(isa), threads, ka, kw, i, dot[i], static_cast<long long>(ref[i]));
      return;
    }
    const double ds = static_cast<double>(alpha[f]) / denom;
    float want = static_cast<float>(static_cast<double>(ref[i]) * ds);
    if (bias == nullptr) {
      const long double exact = static_cast<long double>(ref[i]) * alpha[f] / denom;
      CHECK(std::fabs(static_cast<long double>(want) - exact) <= Ulp(want),
            "%s: %.9g is over 1 ulp from %.12Lg", what, want, exact);
    } else {
      want += (*bias)[f];
    }
    if (!(out[i] == want || (std::isnan(out[i]) && std::isnan(want)))) {
      CHECK(false, "%s isa=%s threads=%d ka=%d kw=%d: out[%zu] = %.9g, expected %.9g", what,
            binmx::IsaName(isa), threads, ka, kw, i, out[i], want);
      return;
    }
  }
}

void RunConvCase(std::mt19937_64& gen, const Conv2dParams& p, int ka, int kw, bool use_bias) {
  const int64_t n_x = p.batch * p.channels * p.in_h * p.in_w;
  const int64_t n_w = p.num_filter * p.FilterSize();
  const std::vector<float> x = RandomActs(gen, n_x, ka);
  const std::vector<float> wf = RandomWeights(gen, n_w);
  const std::vector<int> mw = RefWeightInts(wf, kw);
  const std::vector<int64_t> ref = RefConv(x, mw, p, ka);
  std::vector<float> alpha(static_cast<size_t>(p.num_filter)), bias(alpha.size());
  for (auto& a : alpha) a = std::uniform_real_distribution<float>(0.1f, 2.0f)(gen);
  for (auto& b : bias) b = std::normal_distribution<float>()(gen);
  const int64_t ohw = p.OutH() * p.OutW();
  for (Isa isa : binmx::AvailableIsas()) {
    binmx::KbitWeights w;
    binmx::PrepareKbitConv(wf.data(), p, ka, kw, isa, &w);
    for (int threads : {1, 2}) {
      ++g_cases;
      const binmx::GemmConfig cfg{isa, threads};
      std::vector<int32_t> dot(ref.size(), -7);
      std::vector<float> out(ref.size(), -7.0f);
      binmx::KbitArgs args;
      args.x = x.data();
      args.out_dot = dot.data();
      binmx::KbitConv2d(args, w, p, cfg);
      args.out_dot = nullptr;
      args.out = out.data();
      args.alpha = alpha.data();
      args.bias = use_bias ? bias.data() : nullptr;
      binmx::KbitConv2d(args, w, p, cfg);
      CheckOutputs("conv", ref, dot, out, alpha, use_bias ? &bias : nullptr, ohw, p.num_filter,
                   false, ka, kw, isa, threads);
    }
  }
}

void RunDenseCase(std::mt19937_64& gen, int64_t rows, int64_t depth, int64_t hidden, int ka,
                  int kw) {
  const std::vector<float> x = RandomActs(gen, rows * depth, ka);
  const std::vector<float> wf = RandomWeights(gen, hidden * depth);
  const std::vector<int> mw = RefWeightInts(wf, kw);
  std::vector<int64_t> ref(static_cast<size_t>(rows * hidden));
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t h = 0; h < hidden; ++h) {
      int64_t d = 0;
      for (int64_t k = 0; k < depth; ++k)
        d += RefActLevel(x[m * depth + k], ka) * mw[h * depth + k];
      ref[m * hidden + h] = d;
    }
  }
  std::vector<float> alpha(static_cast<size_t>(hidden), 1.0f), bias(alpha.size());
  for (auto& b : bias) b = std::normal_distribution<float>()(gen);
  for (Isa isa : binmx::AvailableIsas()) {
    binmx::KbitWeights w;
    binmx::PrepareKbitDense(wf.data(), depth, hidden, ka, kw, isa, &w);
    for (int threads : {1, 2}) {
      ++g_cases;
      const binmx::GemmConfig cfg{isa, threads};
      std::vector<int32_t> dot(ref.size(), -7);
      std::vector<float> out(ref.size(), -7.0f);
      binmx::KbitArgs args;
      args.x = x.data();
      args.out_dot = dot.data();
      binmx::KbitDense(args, w, rows, cfg);
      args.out_dot = nullptr;
      args.out = out.data();
      args.bias = bias.data();
      binmx::KbitDense(args, w, rows, cfg);
      CheckOutputs("dense", ref, dot, out, alpha, &bias, 1, hidden, true, ka, kw, isa, threads);
    }
  }
}

struct PoolGeo {
  int64_t k, s, pad;
  bool full;
};

// MXNet's max Pooling of the reference outputs: window clipped to the input, a NaN wins, an
// empty window -inf (relu is applied before, to every conv output, as the separate layers do).
std::vector<float> RefReluPool(const std::vector<float>& conv, int64_t planes, int64_t h, int64_t w,
                               bool relu, const PoolGeo& q, int64_t* ph, int64_t* pw) {
  const int64_t span_h = h + 2 * q.pad - q.k, span_w = w + 2 * q.pad - q.k;
  *ph = q.full ? 1 + (span_h + q.s - 1) / q.s : 1 + span_h / q.s;
  *pw = q.full ? 1 + (span_w + q.s - 1) / q.s : 1 + span_w / q.s;
  std::vector<float> out(static_cast<size_t>(planes * *ph * *pw));
  for (int64_t pl = 0; pl < planes; ++pl) {
    for (int64_t oy = 0; oy < *ph; ++oy) {
      for (int64_t ox = 0; ox < *pw; ++ox) {
        float m = -INFINITY;
        for (int64_t y = oy * q.s - q.pad; y < oy * q.s - q.pad + q.k; ++y) {
          for (int64_t x = ox * q.s - q.pad; x < ox * q.s - q.pad + q.k; ++x) {
            if (y < 0 || y >= h || x < 0 || x >= w) continue;
            float v = conv[(pl * h + y) * w + x];
            if (relu) v = v > 0.0f ? v : (v == v ? 0.0f : v);
            if (v > m || v != v) m = v;
          }
        }
        out[(pl * *ph + oy) * *pw + ox] = m;
      }
    }
  }
  return out;
}

// KbitConv2dReluPool against the reference convolution (the documented epilogue per value),
// then relu and the pool above, with ==. alpha_kind: 0 positive, 1 mixed signs and zeros,
// 2 a NaN and an infinity among them (the float pool path).
void RunPoolCase(std::mt19937_64& gen, const Conv2dParams& p, int ka, int kw, bool relu,
                 const PoolGeo* q, int alpha_kind, bool use_bias, bool want_direct) {
  const int64_t n_x = p.batch * p.channels * p.in_h * p.in_w;
  const int64_t n_w = p.num_filter * p.FilterSize();
  const std::vector<float> x = RandomActs(gen, n_x, ka);
  const std::vector<float> wf = RandomWeights(gen, n_w);
  const std::vector<int> mw = RefWeightInts(wf, kw);
  const std::vector<int64_t> ref = RefConv(x, mw, p, ka);
  const int64_t f_all = p.num_filter, oh = p.OutH(), ow = p.OutW();
  std::vector<float> alpha(static_cast<size_t>(f_all)), bias(alpha.size());
  for (size_t f = 0; f < alpha.size(); ++f) {
    alpha[f] = std::uniform_real_distribution<float>(0.1f, 2.0f)(gen);
    if (alpha_kind >= 1 && gen() % 2) alpha[f] = -alpha[f];
    if (alpha_kind >= 1 && gen() % 7 == 0) alpha[f] = (gen() % 2) ? 0.0f : -0.0f;
    bias[f] = (gen() % 5 == 0) ? 0.0f : std::normal_distribution<float>()(gen);
  }
  if (alpha_kind == 2) {
    alpha[0] = std::numeric_limits<float>::quiet_NaN();
    if (f_all > 1) alpha[1] = -INFINITY;
  }
  const double denom = static_cast<double>(((1 << ka) - 1) * ((1 << kw) - 1));
  std::vector<float> conv(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    const int64_t f = (static_cast<int64_t>(i) / (oh * ow)) % f_all;
    float v = static_cast<float>(static_cast<double>(ref[i]) * (double{alpha[f]} / denom));
    if (use_bias) v += bias[f];
    conv[i] = v;
  }
  int64_t ph = oh, pw = ow;
  std::vector<float> want;
  if (q != nullptr) {
    want = RefReluPool(conv, p.batch * f_all, oh, ow, relu, *q, &ph, &pw);
  } else {
    want = conv;
    for (auto& v : want) v = relu ? (v > 0.0f ? v : (v == v ? 0.0f : v)) : v;
  }
  binmx::KbitMaxPool kp;
  if (q != nullptr) {
    kp.kernel_h = kp.kernel_w = q->k;
    kp.stride_h = kp.stride_w = q->s;
    kp.pad_h = kp.pad_w = q->pad;
    kp.full_convention = q->full;
  }
  for (Isa isa : binmx::AvailableIsas()) {
    binmx::KbitWeights w;
    binmx::PrepareKbitConv(wf.data(), p, ka, kw, isa, &w);
    CHECK(binmx::KbitDirectApplies(w, p) == want_direct, "direct kernel taken: %d, expected %d",
          static_cast<int>(binmx::KbitDirectApplies(w, p)), static_cast<int>(want_direct));
    for (int threads : {1, 2}) {
      ++g_cases;
      std::vector<float> out(want.size(), -7.0f);
      binmx::KbitArgs args;
      args.x = x.data();
      args.out = out.data();
      args.alpha = alpha.data();
      args.bias = use_bias ? bias.data() : nullptr;
      binmx::KbitConv2dReluPool(args, w, p, relu, q ? &kp : nullptr, {isa, threads});
      for (size_t i = 0; i < want.size(); ++i) {
        if (!(out[i] == want[i] || (std::isnan(out[i]) && std::isnan(want[i])))) {
          CHECK(false,
                "pool isa=%s threads=%d ka=%d kw=%d relu=%d pool=%lld/%lld/%lld%s alpha=%d: "
                "out[%zu] = %.9g, expected %.9g (pooled %lldx%lld)",
                binmx::IsaName(isa), threads, ka, kw, static_cast<int>(relu),
                static_cast<long long>(q ? q->k : 0), static_cast<long long>(q ? q->s : 0),
                static_cast<long long>(q ? q->pad : 0), q && q->full ? " full" : "", alpha_kind, i,
                out[i], want[i], static_cast<long long>(ph), static_cast<long long>(pw));
          break;
        }
      }
    }
  }
}

Conv2dParams Geo(int64_t n, int64_t c, int64_t h, int64_t w, int64_t f, int64_t k, int64_t s,
                 int64_t pad, int64_t dil, int64_t groups, int pad_value) {
  Conv2dParams p;
  p.batch = n;
  p.channels = c;
  p.in_h = h;
  p.in_w = w;
  p.num_filter = f;
  p.kernel_h = p.kernel_w = k;
  p.stride_h = p.stride_w = s;
  p.pad_h = p.pad_w = pad;
  p.dilate_h = p.dilate_w = dil;
  p.groups = groups;
  p.pad_value = pad_value;
  return p;
}

void CheckErrors() {
  Conv2dParams p = Geo(1, 4, 5, 5, 4, 3, 1, 1, 1, 1, 0);
  std::vector<float> wf(static_cast<size_t>(4 * 4 * 9), 0.5f);
  binmx::KbitWeights w;
  bool threw = false;
  try {
    binmx::PrepareKbitConv(wf.data(), p, 9, 9, Isa::kScalar, &w);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "act_bit 9 must be rejected");
  std::vector<uint8_t> bad(wf.size(), 4);
  threw = false;
  try {
    binmx::PrepareKbitConvLevels(bad.data(), p, 2, 2, Isa::kScalar, &w);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "a weight level >= 2^weight_bit must be rejected");
  CHECK(binmx::KbitPathFor(2, 1, 10) == binmx::KbitPath::kBitSerial, "bit-serial for (2,1)");
  CHECK(binmx::KbitPathFor(8, 8, 10) == binmx::KbitPath::kInt8, "int8 for (8,8)");
  CHECK(binmx::KbitPathFor(1, 2, 10) == binmx::KbitPath::kNone, "no kernel for act_bit 1");
  CHECK(binmx::KbitPathFor(16, 16, 10) == binmx::KbitPath::kNone, "no kernel for 16 bits");
  CHECK(binmx::KbitPathFor(8, 8, binmx::kKbitMaxDepth + 1) == binmx::KbitPath::kNone, "depth");
  // KbitConv2dReluPool: a pool larger than the padded output, a zero stride, out_dot.
  binmx::PrepareKbitConv(wf.data(), p, 8, 8, Isa::kScalar, &w);
  std::vector<float> x(4 * 5 * 5, 0.5f), y(4 * 5 * 5);
  binmx::KbitArgs args;
  args.x = x.data();
  args.out = y.data();
  binmx::KbitMaxPool bad_pools[2];
  bad_pools[0].kernel_h = bad_pools[0].kernel_w = 8;
  bad_pools[1].kernel_h = bad_pools[1].kernel_w = 2;
  bad_pools[1].stride_w = 0;
  for (const binmx::KbitMaxPool& q : bad_pools) {
    threw = false;
    try {
      binmx::KbitConv2dReluPool(args, w, p, true, &q, {Isa::kScalar, 1});
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    CHECK(threw, "a bad max pool must be rejected");
  }
  std::vector<int32_t> dot(y.size());
  args.out = nullptr;
  args.out_dot = dot.data();
  threw = false;
  try {
    binmx::KbitConv2dReluPool(args, w, p, true, nullptr, {Isa::kScalar, 1});
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "out_dot with relu must be rejected");
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  std::mt19937_64 gen(20261207);
  std::printf("available:");
  for (Isa isa : binmx::AvailableIsas()) std::printf(" %s", binmx::IsaName(isa));
  std::printf("\n");
  CheckErrors();
  const int pairs[][2] = {{2, 1}, {2, 2}, {2, 3}, {2, 4}, {3, 1}, {3, 2}, {3, 3},
                          {3, 4}, {4, 1}, {4, 2}, {4, 3}, {4, 4}, {5, 5}, {8, 8},
                          {8, 1}, {2, 8}, {6, 3}, {7, 8}, {8, 5}};
  // Depth boundaries with 1x1 kernels (depth = C) and dense layers.
  const int64_t depths[] = {1,  2,  3,  4,   5,   6,   7,   8,   9,  10,
                            63, 64, 65, 127, 128, 129, 511, 512, 513};
  for (const auto& kk : pairs) {
    const int ka = kk[0], kw = kk[1];
    for (int64_t d : depths) {
      if (quick && d > 130) continue;
      const int64_t f = 1 + static_cast<int64_t>(gen() % 34);
      RunConvCase(gen, Geo(1, d, 3, 2, f, 1, 1, 0, 1, 1, 0), ka, kw, true);
      RunDenseCase(gen, 1 + static_cast<int64_t>(gen() % 6), d, f, ka, kw);
    }
    // Spatial geometry: kernels, strides, pads with every pad value, dilations, groups. The
    // full channel grid for one pair of each kernel kind and the widest bit widths, a sample
    // for the others (same code paths, different unrolled micro-kernels).
    const bool full = (ka == 2 && kw == 1) || (ka == 4 && kw == 4) || (ka == 8 && kw == 8) ||
                      (ka == 5 && kw == 5);
    const int64_t all_chans[] = {1, 3, 8, 17, 32, 63, 64, 65, 127, 129};
    const int64_t some_chans[] = {3, 64};
    const int64_t* chans = full ? all_chans : some_chans;
    const int n_chans = full ? 10 : 2;
    for (int ci = 0; ci < n_chans; ++ci) {
      const int64_t c = chans[ci];
      for (int pad_value : {0, 1, -1}) {
        const int64_t f = 16 + static_cast<int64_t>(gen() % 3) - 1;  // 15..17
        RunConvCase(gen, Geo(2, c, 6, 7, f, 3, 1, 1, 1, 1, pad_value), ka, kw, pad_value == 0);
        RunConvCase(gen, Geo(1, c, 9, 8, f, 3, 2, 2, 1, 1, pad_value), ka, kw, true);
        RunConvCase(gen, Geo(1, c, 9, 9, 5, 3, 1, 2, 2, 1, pad_value), ka, kw, false);
        if (!quick || ci == 0) {
          RunConvCase(gen, Geo(1, c, 11, 10, 64, 7, 2, 3, 1, 1, pad_value), ka, kw, true);
        }
      }
    }
    RunConvCase(gen, Geo(1, 8, 5, 5, 6, 3, 1, 1, 1, 2, 0), ka, kw, true);
    RunConvCase(gen, Geo(2, 12, 6, 5, 9, 3, 2, 1, 1, 3, -1), ka, kw, true);
    RunConvCase(gen, Geo(1, 130, 4, 4, 40, 3, 1, 1, 1, 2, 1), ka, kw, true);
    RunConvCase(gen, Geo(1, 128, 5, 6, 32, 3, 1, 1, 1, 2, -1), ka, kw, true);  // C/g = 64
    RunConvCase(gen, Geo(9, 64, 4, 5, 9, 3, 1, 1, 1, 1, 1), ka, kw, true);     // 2 image blocks
    if (!quick) RunConvCase(gen, Geo(1, 3, 20, 20, 64, 7, 2, 3, 1, 1, 0), ka, kw, true);  // stem
  }
  // The direct int8 kernel (few channels): C 1..5 (and C * kw up to 64), kernels 1..7 with
  // kh != kw, strides 1..3, pads, odd sizes, pad_value 0 / +1, dilate_h, filter counts around
  // the 16-filter vectors and the 64-filter tile, every int8 bit pair.
  const int direct_pairs[][2] = {{8, 8}, {5, 5}, {8, 1}, {2, 8}, {6, 3}, {7, 8}, {8, 5}};
  for (const auto& kk : direct_pairs) {
    const int ka = kk[0], kw = kk[1];
    const bool full = ka == 8 && kw == 8;
    for (int64_t c = 1; c <= 5; ++c) {
      for (int64_t k = 1; k <= 7; ++k) {
        if (!full && (k % 2 == 0 || c % 2 == 0)) continue;
        const int64_t s = 1 + static_cast<int64_t>(gen() % 2);
        const int64_t pad = std::min<int64_t>(k / 2 + static_cast<int64_t>(gen() % 2), k - 1);
        const int64_t f_counts[] = {1, 15, 16, 17, 33, 48, 63, 64, 65, 80};
        const int64_t f = f_counts[gen() % 10];
        Conv2dParams p = Geo(1 + static_cast<int64_t>(gen() % 2), c, 7 + 2 * k, 6 + k, f, k, s, pad,
                             1, 1, static_cast<int>(gen() % 2));
        p.kernel_w = std::max<int64_t>(1, k - static_cast<int64_t>(gen() % 2));
        p.pad_w = std::min(p.pad_w, p.kernel_w - 1);
        if (gen() % 4 == 0) p.dilate_h = 2;
        if (gen() % 4 == 0) p.stride_w = 3;
        RunConvCase(gen, p, ka, kw, gen() % 2 == 0);
        if (quick && !full) continue;
        RunPoolCase(gen, p, ka, kw, true, nullptr, 1, true, true);
      }
    }
    // C * kw at the 16 / 32 / 64-byte moves of the row builder.
    for (int64_t c : {16, 21, 32, 64}) {
      RunConvCase(gen, Geo(1, c, 5, 6, 20, 1, 1, 0, 1, 1, 0), ka, kw, true);
      RunConvCase(gen, Geo(1, c / 2 + 1, 6, 5, 20, 2, 1, 1, 1, 1, 1), ka, kw, true);
    }
  }
  // Fused relu + max pool: integer pooling under the direct kernel (alpha of both signs and
  // zeros), the float pool otherwise (non-finite alpha; bit-serial; pad_value -1; 65 channels).
  const PoolGeo pools[] = {{3, 2, 1, false}, {3, 2, 1, true}, {2, 2, 0, false},
                           {3, 1, 1, false}, {2, 3, 0, true}, {1, 1, 0, false},
                           {4, 3, 2, true},  {2, 2, 2, false}};  // the last: pad >= kernel
  for (const PoolGeo& q : pools) {
    for (int alpha_kind : {0, 1, 2}) {
      for (bool relu : {true, false}) {
        const Conv2dParams stem = Geo(2, 3, 23, 21, 24, 7, 2, 3, 1, 1, 0);
        RunPoolCase(gen, stem, 8, 8, relu, &q, alpha_kind, alpha_kind != 0 || relu, true);
        if (quick && alpha_kind == 2) continue;
        RunPoolCase(gen, Geo(1, 2, 12, 13, 70, 3, 1, 1, 1, 1, 1), 5, 3, relu, &q, alpha_kind, true,
                    true);
        RunPoolCase(gen, Geo(1, 5, 11, 9, 17, 3, 1, 1, 1, 1, -1), 8, 8, relu, &q, alpha_kind, true,
                    false);
        RunPoolCase(gen, Geo(1, 17, 9, 10, 16, 3, 1, 1, 1, 1, 0), 2, 1, relu, &q, alpha_kind, true,
                    false);
      }
    }
  }
  if (!quick) {
    // The 8-bit ResNet stem at full size (224 x 224 -> 112 x 112 -> 56 x 56).
    const PoolGeo q{3, 2, 1, false};
    RunPoolCase(gen, Geo(1, 3, 224, 224, 64, 7, 2, 3, 1, 1, 0), 8, 8, true, &q, 1, true, true);
  }
  std::printf("kbit cases: %lld, %d failures\n", static_cast<long long>(g_cases), g_failures);
  return g_failures == 0 ? 0 : 1;
}

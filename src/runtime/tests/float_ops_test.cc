/*
 * Test of the runtime's float layers (float_ops.h) against a straightforward reference written
 * here: convolution summed in double over (c, i, j) with explicit bounds checks, then + bias,
 * relu and MXNet's max-pool (padding never wins, an empty window gives -FLT_MAX); dense summed
 * in double. Every available kernel path (portable, avx2, avx512) at threads 1, 2 and 3.
 *
 * Tolerance: |got - ref| <= (K + 2) * 2^-23 * (sum_k |x_k * w_k| + |bias|), K the number of
 * terms. That is the worst-case rounding bound of any float summation order of K products plus
 * the bias add (Higham's gamma_n ~ n * 2^-24, doubled for margin), so a correct kernel can never
 * exceed it, and, being relative to each output's own sum of magnitudes, it does not hide
 * errors in small outputs the way a tolerance relative to max |output| would. relu and max are
 * 1-Lipschitz, so a pooled value gets the largest tolerance of its window.
 * Thread-count invariance is exact: the outputs at 2 and 3 threads are compared bit for bit
 * (memcmp) with those at 1 thread.
 * Usage: rt_float_ops_test [--quick]   (prints one line per failure, exits non-zero on any)
 */
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "float_ops.h"

using binmx::Isa;
using binmx::rt::FloatConv;
using binmx::rt::FloatConvGeometry;
using binmx::rt::FloatDense;
using binmx::rt::MaxPoolSpec;

namespace {

int g_failures = 0;
int g_checks = 0;

void Failure(const std::string& msg) {
  ++g_failures;
  if (g_failures <= 40) std::printf("FAIL %s\n", msg.c_str());
}

struct Buffer {  // 64-byte aligned float storage
  explicit Buffer(size_t bytes) : raw(bytes / sizeof(float) + 32) {}
  float* data() {
    auto p = reinterpret_cast<uintptr_t>(raw.data());
    return reinterpret_cast<float*>((p + 63) / 64 * 64);
  }
  std::vector<float> raw;
};

std::vector<float> Random(size_t n, std::mt19937* rng, bool with_zeros = true) {
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    v[i] = d(*rng);
    if (with_zeros && i % 13 == 5) v[i] = 0.0f;  // exact zeros, as relu'd inputs have
  }
  return v;
}

std::string Describe(const FloatConvGeometry& g, bool bias, bool relu, const MaxPoolSpec* p) {
  char b[512];
  std::snprintf(b, sizeof(b),
                "N%lld C%lld %lldx%lld F%lld k%lldx%lld s%lldx%lld p%lldx%lld d%lldx%lld g%lld "
                "bias%d relu%d",
                (long long)g.batch, (long long)g.channels, (long long)g.in_h, (long long)g.in_w,
                (long long)g.filters, (long long)g.kernel_h, (long long)g.kernel_w,
                (long long)g.stride_h, (long long)g.stride_w, (long long)g.pad_h,
                (long long)g.pad_w, (long long)g.dilate_h, (long long)g.dilate_w,
                (long long)g.groups, bias ? 1 : 0, relu ? 1 : 0);
  std::string s = b;
  if (p != nullptr) {
    std::snprintf(b, sizeof(b), " pool k%lldx%lld s%lldx%lld p%lldx%lld %s", (long long)p->kernel_h,
                  (long long)p->kernel_w, (long long)p->stride_h, (long long)p->stride_w,
                  (long long)p->pad_h, (long long)p->pad_w, p->full_convention ? "full" : "valid");
    s += b;
  }
  return s;
}

// Reference conv (+ bias + relu + pool): values and tolerances, NCHW.
void ReferenceConv(const FloatConvGeometry& g, const float* x, const float* w, const float* bias,
                   bool relu, const MaxPoolSpec* pool, std::vector<double>* out,
                   std::vector<double>* tol, std::vector<int64_t>* shape) {
  const int64_t oh = (g.in_h + 2 * g.pad_h - (g.dilate_h * (g.kernel_h - 1) + 1)) / g.stride_h + 1;
  const int64_t ow = (g.in_w + 2 * g.pad_w - (g.dilate_w * (g.kernel_w - 1) + 1)) / g.stride_w + 1;
  const int64_t cg = g.channels / g.groups, fg = g.filters / g.groups;
  const int64_t terms = cg * g.kernel_h * g.kernel_w;
  std::vector<double> conv(g.batch * g.filters * oh * ow), ctol(conv.size());
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t f = 0; f < g.filters; ++f) {
      const int64_t gr = f / fg;
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          double s = 0, a = 0;
          for (int64_t c = 0; c < cg; ++c) {
            for (int64_t i = 0; i < g.kernel_h; ++i) {
              const int64_t iy = oy * g.stride_h - g.pad_h + i * g.dilate_h;
              if (iy < 0 || iy >= g.in_h) continue;
              for (int64_t j = 0; j < g.kernel_w; ++j) {
                const int64_t ix = ox * g.stride_w - g.pad_w + j * g.dilate_w;
                if (ix < 0 || ix >= g.in_w) continue;
                const double xv = x[((n * g.channels + gr * cg + c) * g.in_h + iy) * g.in_w + ix];
                const double wv = w[((f * cg + c) * g.kernel_h + i) * g.kernel_w + j];
                s += xv * wv;
                a += std::fabs(xv * wv);
              }
            }
          }
          if (bias != nullptr) {
            s += bias[f];
            a += std::fabs(bias[f]);
          }
          if (relu) s = s > 0 ? s : 0;
          const int64_t idx = ((n * g.filters + f) * oh + oy) * ow + ox;
          conv[idx] = s;
          ctol[idx] = (terms + 2) * std::ldexp(1.0, -23) * a;
        }
      }
    }
  }
  if (pool == nullptr) {
    *out = conv;
    *tol = ctol;
    *shape = {g.batch, g.filters, oh, ow};
    return;
  }
  auto pool_out = [](int64_t in, int64_t k, int64_t s, int64_t p, bool full) {
    const int64_t num = in + 2 * p - k;
    return full ? 1 + static_cast<int64_t>(std::ceil(static_cast<double>(num) / s)) : 1 + num / s;
  };
  const int64_t ph =
      pool_out(oh, pool->kernel_h, pool->stride_h, pool->pad_h, pool->full_convention);
  const int64_t pw =
      pool_out(ow, pool->kernel_w, pool->stride_w, pool->pad_w, pool->full_convention);
  out->assign(g.batch * g.filters * ph * pw, 0.0);
  tol->assign(out->size(), 0.0);
  for (int64_t nf = 0; nf < g.batch * g.filters; ++nf) {
    for (int64_t py = 0; py < ph; ++py) {
      for (int64_t px = 0; px < pw; ++px) {
        double m = std::numeric_limits<float>::lowest(), t = 0;
        for (int64_t i = 0; i < pool->kernel_h; ++i) {
          const int64_t y = py * pool->stride_h - pool->pad_h + i;
          if (y < 0 || y >= oh) continue;
          for (int64_t j = 0; j < pool->kernel_w; ++j) {
            const int64_t xx = px * pool->stride_w - pool->pad_w + j;
            if (xx < 0 || xx >= ow) continue;
            m = std::max(m, conv[(nf * oh + y) * ow + xx]);
            t = std::max(t, ctol[(nf * oh + y) * ow + xx]);
          }
        }
        (*out)[(nf * ph + py) * pw + px] = m;
        (*tol)[(nf * ph + py) * pw + px] = t;
      }
    }
  }
  *shape = {g.batch, g.filters, ph, pw};
}

std::vector<Isa> Isas() { return binmx::AvailableIsas(); }

// Runs one conv case on every ISA and thread count; returns false on a failure.
void CheckConv(const FloatConvGeometry& g, bool with_bias, bool relu, const MaxPoolSpec* pool,
               std::mt19937* rng) {
  const int64_t cg = g.channels / g.groups;
  std::vector<float> x = Random(g.batch * g.channels * g.in_h * g.in_w, rng);
  std::vector<float> w = Random(g.filters * cg * g.kernel_h * g.kernel_w, rng);
  std::vector<float> b = Random(g.filters, rng, false);
  const std::vector<float> x0 = x, w0 = w;
  std::vector<double> ref, tol;
  std::vector<int64_t> shape;
  ReferenceConv(g, x.data(), w.data(), with_bias ? b.data() : nullptr, relu, pool, &ref, &tol,
                &shape);
  const std::string what = Describe(g, with_bias, relu, pool);
  for (Isa isa : Isas()) {
    std::vector<float> first;
    for (int threads : {1, 2, 3}) {
      ++g_checks;
      try {
        FloatConv conv(g, w.data(), with_bias ? b.data() : nullptr, relu, pool, isa);
        if (conv.OutputShape() != shape) {
          Failure(what + ": output shape differs from the reference");
          return;
        }
        Buffer scratch(conv.ScratchBytes(threads));
        std::fill(scratch.raw.begin(), scratch.raw.end(), std::nanf(""));
        std::vector<float> y(ref.size(), std::nanf(""));
        conv.Run(x.data(), y.data(), scratch.data(), threads);
        if (x != x0 || w != w0) Failure(what + ": an input was modified");
        if (threads == 1) {
          for (size_t i = 0; i < y.size(); ++i) {
            const double err = std::fabs(static_cast<double>(y[i]) - ref[i]);
            if (!(err <= tol[i])) {  // also catches NaN (an output never written)
              char buf[200];
              std::snprintf(buf, sizeof(buf), " [%s t%d] index %zu: got %.9g want %.9g (tol %.3g)",
                            conv.PathName(), threads, i, y[i], ref[i], tol[i]);
              Failure(what + buf);
              break;
            }
          }
          first = y;
        } else if (std::memcmp(first.data(), y.data(), y.size() * sizeof(float)) != 0) {
          Failure(what + " [" + conv.PathName() + "]: threads=" + std::to_string(threads) +
                  " differs from threads=1");
        }
      } catch (const std::exception& e) {
        Failure(what + ": threw " + e.what());
        return;
      }
    }
  }
}

void CheckDense(int64_t rows, int64_t depth, int64_t hidden, bool with_bias, bool relu,
                std::mt19937* rng) {
  std::vector<float> x = Random(rows * depth, rng), w = Random(hidden * depth, rng);
  std::vector<float> b = Random(hidden, rng, false);
  const std::vector<float> x0 = x, w0 = w;
  std::vector<double> ref(rows * hidden), tol(rows * hidden);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t h = 0; h < hidden; ++h) {
      double s = 0, a = 0;
      for (int64_t d = 0; d < depth; ++d) {
        s += static_cast<double>(x[r * depth + d]) * w[h * depth + d];
        a += std::fabs(static_cast<double>(x[r * depth + d]) * w[h * depth + d]);
      }
      if (with_bias) {
        s += b[h];
        a += std::fabs(b[h]);
      }
      if (relu) s = s > 0 ? s : 0;
      ref[r * hidden + h] = s;
      tol[r * hidden + h] = (depth + 2) * std::ldexp(1.0, -23) * a;
    }
  }
  char what[160];
  std::snprintf(what, sizeof(what), "dense rows%lld depth%lld hidden%lld bias%d relu%d",
                (long long)rows, (long long)depth, (long long)hidden, with_bias, relu);
  for (Isa isa : Isas()) {
    std::vector<float> first;
    for (int threads : {1, 2, 3}) {
      ++g_checks;
      try {
        FloatDense dense(depth, hidden, w.data(), with_bias ? b.data() : nullptr, relu, isa);
        Buffer scratch(dense.ScratchBytes(rows, threads));
        std::vector<float> y(rows * hidden, std::nanf(""));
        dense.Run(x.data(), rows, y.data(), scratch.data(), threads);
        if (x != x0 || w != w0) Failure(std::string(what) + ": an input was modified");
        if (threads == 1) {
          for (size_t i = 0; i < y.size(); ++i) {
            if (!(std::fabs(y[i] - ref[i]) <= tol[i])) {
              char buf[200];
              std::snprintf(buf, sizeof(buf), " [%s] index %zu: got %.9g want %.9g (tol %.3g)",
                            dense.PathName(), i, y[i], ref[i], tol[i]);
              Failure(std::string(what) + buf);
              break;
            }
          }
          first = y;
        } else if (std::memcmp(first.data(), y.data(), y.size() * sizeof(float)) != 0) {
          Failure(std::string(what) + " [" + dense.PathName() +
                  "]: threads=" + std::to_string(threads) + " differs from threads=1");
        }
      } catch (const std::exception& e) {
        Failure(std::string(what) + ": threw " + e.what());
        return;
      }
    }
  }
}

FloatConvGeometry Geo(int64_t n, int64_t c, int64_t h, int64_t w, int64_t f, int64_t kh, int64_t kw,
                      int64_t s = 1, int64_t p = 0, int64_t d = 1, int64_t g = 1) {
  FloatConvGeometry geo{};
  geo.batch = n;
  geo.channels = c;
  geo.in_h = h;
  geo.in_w = w;
  geo.filters = f;
  geo.kernel_h = kh;
  geo.kernel_w = kw;
  geo.stride_h = geo.stride_w = s;
  geo.pad_h = geo.pad_w = p;
  geo.dilate_h = geo.dilate_w = d;
  geo.groups = g;
  return geo;
}

// Each must throw binmx::rt::Error (and nothing else).
template <class Fn>
void ExpectError(const char* what, Fn fn) {
  ++g_checks;
  try {
    fn();
    Failure(std::string("no error for ") + what);
  } catch (const binmx::rt::Error& e) {
    if (std::strlen(e.what()) < 10) Failure(std::string("unhelpful message for ") + what);
  } catch (const std::exception& e) {
    Failure(std::string("wrong exception type for ") + what + ": " + e.what());
  }
}

// MaxPoolInterior against the Pooling layer's rule, bit for bit, NaNs included: every window
// folds m = (v > m || v != v) ? v : m from its first cell in (ky, kx) order.
void CheckMaxPoolInterior(std::mt19937* rng) {
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  int taken = 0;
  for (int t = 0; t < 400; ++t) {
    const int64_t kh = 1 + (*rng)() % 3, kw = 1 + (*rng)() % 3, sh = 1 + (*rng)() % 3,
                  sw = 1 + (*rng)() % 3, oh = 1 + (*rng)() % 6, ow = 1 + (*rng)() % 20;
    const int64_t h = (oh - 1) * sh + kh + (*rng)() % 2, w = (ow - 1) * sw + kw + (*rng)() % 3;
    const int64_t planes = 1 + (*rng)() % 5;
    std::vector<float> x(static_cast<size_t>(planes * h * w));
    for (float& v : x) v = ((*rng)() % 17 == 0) ? std::nanf("") : u(*rng);
    std::vector<float> want(static_cast<size_t>(planes * oh * ow));
    for (int64_t p = 0; p < planes; ++p) {
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          float m = 0.0f;
          for (int64_t ky = 0; ky < kh; ++ky) {
            for (int64_t kx = 0; kx < kw; ++kx) {
              const float v = x[(p * h + oy * sh + ky) * w + ox * sw + kx];
              m = (ky == 0 && kx == 0) || v > m || v != v ? v : m;
            }
          }
          want[(p * oh + oy) * ow + ox] = m;
        }
      }
    }
    for (Isa isa : Isas()) {
      std::vector<float> got(want.size() + 1, 77.0f);
      if (!binmx::rt::MaxPoolInterior(x.data(), planes, h, w, kh, kw, sh, sw, oh, ow, got.data(),
                                      isa)) {
        continue;
      }
      ++taken;
      ++g_checks;
      if (got.back() != 77.0f || std::memcmp(got.data(), want.data(), 4 * want.size()) != 0) {
        Failure("MaxPoolInterior differs from the Pooling rule on " +
                std::string(binmx::IsaName(isa)) + " (k " + std::to_string(kh) + "x" +
                std::to_string(kw) + ", s " + std::to_string(sh) + "x" + std::to_string(sw) +
                ", out " + std::to_string(oh) + "x" + std::to_string(ow) + ")");
      }
    }
  }
  std::printf("MaxPoolInterior: %d shapes took a kernel\n", taken);
}

void CheckErrors() {
  std::vector<float> w(1 << 12, 0.5f);
  const Isa isa = binmx::AvailableIsas().back();
  ExpectError("channels not a multiple of groups", [&] {
    FloatConv(Geo(1, 3, 8, 8, 4, 3, 3, 1, 0, 1, 2), w.data(), nullptr, false, nullptr, isa);
  });
  ExpectError("filters not a multiple of groups", [&] {
    FloatConv(Geo(1, 4, 8, 8, 3, 3, 3, 1, 0, 1, 2), w.data(), nullptr, false, nullptr, isa);
  });
  ExpectError("kernel larger than the padded input", [&] {
    FloatConv(Geo(1, 1, 4, 4, 1, 7, 7, 1, 1), w.data(), nullptr, false, nullptr, isa);
  });
  ExpectError("dilated kernel larger than the input", [&] {
    FloatConv(Geo(1, 1, 5, 5, 1, 3, 3, 1, 0, 3), w.data(), nullptr, false, nullptr, isa);
  });
  ExpectError("zero stride", [&] {
    FloatConv(Geo(1, 1, 5, 5, 1, 3, 3, 0), w.data(), nullptr, false, nullptr, isa);
  });
  ExpectError("negative pad", [&] {
    FloatConv(Geo(1, 1, 5, 5, 1, 3, 3, 1, -1), w.data(), nullptr, false, nullptr, isa);
  });
  ExpectError("zero batch",
              [&] { FloatConv(Geo(0, 1, 5, 5, 1, 3, 3), w.data(), nullptr, false, nullptr, isa); });
  ExpectError("overflowing sizes", [&] {
    FloatConv(Geo(int64_t{1} << 30, 1 << 20, 1 << 20, 1 << 20, 1, 1, 1), w.data(), nullptr, false,
              nullptr, isa);
  });
  ExpectError("huge kernel", [&] {
    FloatConv(Geo(1, 1, int64_t{1} << 62, 5, 1, int64_t{1} << 61, 1), w.data(), nullptr, false,
              nullptr, isa);
  });
  ExpectError("null weight",
              [&] { FloatConv(Geo(1, 1, 5, 5, 1, 3, 3), nullptr, nullptr, false, nullptr, isa); });
  MaxPoolSpec bad_pad{3, 3, 2, 2, 3, 3, false};
  ExpectError("pool pad >= kernel", [&] {
    FloatConv(Geo(1, 1, 8, 8, 1, 1, 1), w.data(), nullptr, false, &bad_pad, isa);
  });
  MaxPoolSpec too_big{9, 9, 1, 1, 0, 0, false};
  ExpectError("pool kernel larger than the conv output", [&] {
    FloatConv(Geo(1, 1, 8, 8, 1, 1, 1), w.data(), nullptr, false, &too_big, isa);
  });
  MaxPoolSpec zero_stride{2, 2, 0, 0, 0, 0, false};
  ExpectError("pool stride 0", [&] {
    FloatConv(Geo(1, 1, 8, 8, 1, 1, 1), w.data(), nullptr, false, &zero_stride, isa);
  });
  FloatConv ok(Geo(1, 1, 8, 8, 1, 3, 3), w.data(), nullptr, false, nullptr, isa);
  std::vector<float> x(64), y(36), scratch(ok.ScratchBytes(1) / 4 + 16);
  ExpectError("threads = 0 (ScratchBytes)", [&] { ok.ScratchBytes(0); });
  ExpectError("threads = 0 (Run)", [&] { ok.Run(x.data(), y.data(), scratch.data(), 0); });
  ExpectError("null x", [&] { ok.Run(nullptr, y.data(), scratch.data(), 1); });
  ExpectError("null scratch", [&] { ok.Run(x.data(), y.data(), nullptr, 1); });
  std::vector<float> big(256);
  ExpectError("y overlapping x", [&] { ok.Run(big.data(), big.data() + 40, scratch.data(), 1); });
  ExpectError("dense depth 0", [&] { FloatDense(0, 4, w.data(), nullptr, false, isa); });
  ExpectError("dense null weight", [&] { FloatDense(4, 4, nullptr, nullptr, false, isa); });
  FloatDense dense(4, 4, w.data(), nullptr, false, isa);
  ExpectError("dense rows < 0", [&] { dense.ScratchBytes(-1, 1); });
  ExpectError("dense threads = 0", [&] { dense.ScratchBytes(2, 0); });
  ExpectError("dense null scratch", [&] { dense.Run(x.data(), 2, y.data(), nullptr, 1); });
  ExpectError("dense y overlapping x", [&] { dense.Run(big.data(), 1, big.data(), nullptr, 1); });
}

// Two threads running one FloatConv at once (own scratch each) give the single-run result.
// (Panels, and on AVX-512 the direct method.)
void CheckConcurrentRuns(const FloatConvGeometry& g, std::mt19937* rng) {
  MaxPoolSpec pool{3, 3, 2, 2, 1, 1, false};
  std::vector<float> x = Random(g.batch * g.channels * g.in_h * g.in_w, rng);
  std::vector<float> w = Random(g.filters * g.channels * g.kernel_h * g.kernel_w, rng);
  for (Isa isa : Isas()) {
    ++g_checks;
    FloatConv conv(g, w.data(), nullptr, true, &pool, isa);
    const std::vector<int64_t> s = conv.OutputShape();
    const size_t count = s[0] * s[1] * s[2] * s[3];
    std::vector<float> want(count), a(count), b(count);
    Buffer s0(conv.ScratchBytes(1)), s1(conv.ScratchBytes(2)), s2(conv.ScratchBytes(2));
    conv.Run(x.data(), want.data(), s0.data(), 1);
    auto many = [&](std::vector<float>* out, Buffer* s) {
      for (int i = 0; i < 20; ++i) conv.Run(x.data(), out->data(), s->data(), 2);
    };
    std::thread t1(many, &a, &s1);
    std::thread t2(many, &b, &s2);
    t1.join();
    t2.join();
    if (want != a || want != b) {
      Failure(std::string("concurrent runs differ [") + conv.PathName() + "]");
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::mt19937 rng(20261207);
  std::printf("paths:");
  for (Isa isa : Isas()) std::printf(" %s->%s", binmx::IsaName(isa), binmx::rt::FloatPathName(isa));
  std::printf("\n");

  CheckErrors();
  CheckMaxPoolInterior(&rng);
  CheckConcurrentRuns(Geo(2, 3, 23, 19, 17, 5, 5, 2, 2), &rng);
  CheckConcurrentRuns(Geo(2, 3, 21, 55, 32, 7, 7, 2, 3), &rng);

  // Real model shapes: ResNet-18 stem (conv 7x7/2 + relu + pool 3x3/2 pad 1), LeNet conv0.
  {
    MaxPoolSpec stem_pool{3, 3, 2, 2, 1, 1, false};
    CheckConv(Geo(1, 3, quick ? 64 : 224, quick ? 64 : 224, 64, 7, 7, 2, 3), true, true, &stem_pool,
              &rng);
    CheckConv(Geo(2, 1, 28, 28, 64, 5, 5), true, false, nullptr, &rng);
    MaxPoolSpec lenet_pool{2, 2, 2, 2, 0, 0, false};
    CheckConv(Geo(3, 1, 28, 28, 20, 5, 5), true, true, &lenet_pool, &rng);
    CheckConv(Geo(1, 64, 14, 14, 64, 3, 3, 1, 1), true, true, nullptr, &rng);
    CheckConv(Geo(1, 128, 9, 9, 256, 1, 1, 2), false, false, nullptr, &rng);  // 1x1 stride 2
    CheckConv(Geo(2, 17, 7, 9, 33, 1, 1), true, false, nullptr, &rng);        // 1x1 direct, tail
    CheckConv(Geo(1, 16, 35, 35, 17, 1, 1), true, true, nullptr, &rng);       // 1225 px: tail
  }
  // Geometries for the direct path (AVX-512, AVX2: <= 8 channels a group, filters a group a
  // multiple of 16, K >= 64, stride 1 or 2 along x, out_w near whole tiles); most take it, and
  // at least 20 must on each of those ISAs.
  int direct_cases[3] = {0, 0, 0};
  for (int64_t c : {1, 2, 3, 8}) {
    for (int64_t f : {16, 32, 48, 64}) {
      for (int64_t s : {1, 2}) {
        const int64_t k = c >= 3 ? 3 + 2 * ((c + f / 16 + s) % 3) : 7;  // 3, 5, 7; 7 for c < 3
        const int64_t p = (c + s) % 4 < k ? (c + s) % 4 : 0;
        for (int64_t ow : {4, 8, 12, 14, 18, 24, 27, 28, 42}) {
          const int64_t d = (f == 48 && ow == 14) ? 2 : 1;
          const int64_t span = d * (k - 1) + 1;
          FloatConvGeometry g =
              Geo(1 + (c == 2), c, 4 + c + span, (ow - 1) * s + span - 2 * p, f, k, k, s, p, d);
          if (f == 32 && ow == 27) g.groups = 2, g.channels = 2 * c;
          MaxPoolSpec pool{3, 3, 2, 2, 1, 1, ow == 27};
          const bool with_pool = (f / 16 + ow) % 2 == 0;
          CheckConv(g, f != 48, ow != 42, with_pool ? &pool : nullptr, &rng);
          for (Isa isa : Isas()) {
            std::vector<float> w(f * (g.channels / g.groups) * k * k, 0.5f);
            FloatConv conv(g, w.data(), nullptr, false, nullptr, isa);
            if (std::strcmp(conv.Method(), "direct") == 0) ++direct_cases[static_cast<int>(isa)];
          }
        }
      }
    }
  }
  for (Isa isa : Isas()) {
    // The direct (channels-last) method exists on the x86 paths only; NEON runs panels.
    if (isa != Isa::kAvx2 && isa != Isa::kAvx512) continue;
    std::printf("direct method on %s: %d geometries\n", binmx::IsaName(isa),
                direct_cases[static_cast<int>(isa)]);
    ++g_checks;
    if (direct_cases[static_cast<int>(isa)] < 20) {
      Failure(std::string("only ") + std::to_string(direct_cases[static_cast<int>(isa)]) +
              " geometries took the direct method on " + binmx::IsaName(isa));
    }
  }
  // Widths around the panel width (16 / 32) and outputs of width 1.
  for (int64_t w : {1, 2, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65}) {
    CheckConv(Geo(1, 2, 3, w, 5, 1, 1), true, false, nullptr, &rng);
    CheckConv(Geo(1, 3, 4, w + 2, 17, 3, 3), false, true, nullptr, &rng);
    CheckConv(Geo(1, 3, 5, w, 16, 3, 3, 2, 1), true, true, nullptr, &rng);
  }
  // Pools: every (k, s, p) with p < k on a few sizes, both conventions.
  for (int64_t h : {1, 2, 5, 8, 13}) {
    for (int64_t k = 1; k <= 3; ++k) {
      for (int64_t s = 1; s <= 3; ++s) {
        for (int64_t p = 0; p < k; ++p) {
          for (bool full : {false, true}) {
            if (k > h + 2 * p) continue;
            MaxPoolSpec pool{k, k, s, s, p, p, full};
            CheckConv(Geo(1, 2, h, h + 3, 3, 1, 1), true, (h + k) % 2 == 0, &pool, &rng);
            MaxPoolSpec pool2{k, 3 - (k == 3 ? 1 : 0), s, 2, p, 0, full};
            if (pool2.kernel_w > h + 3 + 2 * pool2.pad_w) continue;
            CheckConv(Geo(2, 3, h + 2, h + 3, 5, 3, 3, 1, 1), false, true, &pool2, &rng);
          }
        }
      }
    }
  }
  // Pooled rows around the two-register path's limits (padded width 32, 16 outputs).
  for (int64_t w : {14, 15, 16, 17, 23, 24, 25, 29, 30, 31, 32, 33}) {
    for (const MaxPoolSpec& pool :
         {MaxPoolSpec{2, 2, 2, 2, 0, 0, false}, MaxPoolSpec{3, 3, 2, 2, 1, 1, false},
          MaxPoolSpec{3, 3, 2, 2, 1, 1, true}, MaxPoolSpec{2, 2, 1, 1, 1, 1, true},
          MaxPoolSpec{3, 3, 1, 1, 2, 2, false}}) {
      CheckConv(Geo(1, 1, 6, w, 16, 1, 1), true, w % 2 == 0, &pool, &rng);
    }
  }
  // Random geometries drawn from the grid.
  const int64_t channels[] = {1, 2, 3, 7, 16, 17, 64};
  const int64_t filters[] = {1, 5, 16, 17, 33, 64};
  const int64_t kernels[][2] = {{1, 1}, {3, 3}, {5, 5}, {7, 7}, {1, 3}};
  const int cases = quick ? 60 : 400;
  for (int t = 0; t < cases; ++t) {
    auto pick = [&](int n) { return static_cast<int>(rng() % n); };
    FloatConvGeometry g{};
    g.batch = 1 + pick(2);
    g.groups = int64_t{1} << pick(3);
    g.channels = channels[pick(7)] * g.groups;
    g.filters = filters[pick(6)] * g.groups;
    if (g.channels > 64 && pick(2)) g.channels = g.groups;
    const int kk = pick(5);
    g.kernel_h = kernels[kk][0];
    g.kernel_w = kernels[kk][1];
    if (pick(4) == 0) std::swap(g.kernel_h, g.kernel_w);
    g.stride_h = 1 + pick(3);
    g.stride_w = pick(3) ? g.stride_h : 1 + pick(3);
    g.pad_h = pick(4);
    g.pad_w = pick(2) ? g.pad_h : pick(4);
    g.dilate_h = 1 + (pick(4) == 0);
    g.dilate_w = pick(2) ? g.dilate_h : 1 + pick(2);
    g.in_h = 1 + pick(19);
    g.in_w = 1 + pick(37);
    if (g.OutH() <= 0 || g.OutW() <= 0) {
      --t;
      continue;
    }
    const bool with_pool = pick(3) == 0;
    MaxPoolSpec pool{1 + pick(3), 1 + pick(3), 1 + pick(3), 1 + pick(3), 0, 0, pick(2) == 1};
    pool.pad_h = pick(static_cast<int>(pool.kernel_h));
    pool.pad_w = pick(static_cast<int>(pool.kernel_w));
    if (with_pool &&
        (pool.kernel_h > g.OutH() + 2 * pool.pad_h || pool.kernel_w > g.OutW() + 2 * pool.pad_w)) {
      --t;
      continue;
    }
    CheckConv(g, pick(2) == 1, pick(2) == 1, with_pool ? &pool : nullptr, &rng);
  }
  // Dense: depths and widths around vector and panel boundaries, the ResNet classifier.
  for (int64_t depth : {1, 2, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 129, 512}) {
    for (int64_t hidden : {1, 5, 16, 17, 33, 64}) {
      for (int64_t rows : {1, 2, 3, 7, 15}) {
        CheckDense(rows, depth, hidden, (depth + hidden + rows) % 2 == 0, rows % 3 == 0, &rng);
      }
    }
  }
  CheckDense(1, 512, 1000, true, false, &rng);
  CheckDense(29, 512, 1000, true, true, &rng);
  CheckDense(64, 800, 10, true, false, &rng);

  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}

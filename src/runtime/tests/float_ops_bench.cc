/*
 * Timing driver for the runtime's float layers (float_ops.h): median (and best) milliseconds and
 * GFLOP/s (2 * multiply-adds / time) of the float layers of binmx's models, at 1 and 2 threads
 * (the best of N shows the kernel's own speed on a machine shared with other work).
 * No assertions: the numbers go to benchmarks/README.md.
 * Usage: rt_float_bench [--isa scalar|avx2|avx512] [--reps N]
 */
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "float_ops.h"

using binmx::rt::FloatConv;
using binmx::rt::FloatConvGeometry;
using binmx::rt::FloatDense;
using binmx::rt::MaxPoolSpec;

namespace {

struct Aligned {  // 64-byte aligned float storage
  explicit Aligned(size_t floats) : raw(floats + 16) {}
  float* data() {
    auto p = reinterpret_cast<uintptr_t>(raw.data());
    return reinterpret_cast<float*>((p + 63) / 64 * 64);
  }
  std::vector<float> raw;
};

std::vector<float> Random(size_t n, std::mt19937* rng) {
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& e : v) e = d(*rng);
  return v;
}

struct Timing {
  double median_ms, best_ms;
};

template <class Fn>
Timing Time(int reps, Fn fn) {
  for (int i = 0; i < 3; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms[0]};
}

void Print(const char* name, const char* path, const char* method, int threads, Timing t,
           double flops) {
  std::printf("%-42s %-7s %-10s t=%d  median %8.3f ms %6.1f GFLOP/s   best %8.3f ms %6.1f\n", name,
              path, method, threads, t.median_ms, flops / t.median_ms * 1e-6, t.best_ms,
              flops / t.best_ms * 1e-6);
}

FloatConvGeometry Geo(int64_t n, int64_t c, int64_t h, int64_t w, int64_t f, int64_t k, int64_t s,
                      int64_t p) {
  FloatConvGeometry g{};
  g.batch = n;
  g.channels = c;
  g.in_h = h;
  g.in_w = w;
  g.filters = f;
  g.kernel_h = g.kernel_w = k;
  g.stride_h = g.stride_w = s;
  g.pad_h = g.pad_w = p;
  return g;
}

void BenchConv(const char* name, const FloatConvGeometry& g, bool relu, const MaxPoolSpec* pool,
               binmx::Isa isa, int reps, std::mt19937* rng) {
  const std::vector<float> w =
      Random(g.filters * g.channels / g.groups * g.kernel_h * g.kernel_w, rng);
  const std::vector<float> b = Random(g.filters, rng);
  const std::vector<float> x = Random(g.batch * g.channels * g.in_h * g.in_w, rng);
  FloatConv conv(g, w.data(), b.data(), relu, pool, isa);
  const std::vector<int64_t> s = conv.OutputShape();
  std::vector<float> y(s[0] * s[1] * s[2] * s[3]);
  const double flops = 2.0 * g.batch * g.filters * g.OutH() * g.OutW() * (g.channels / g.groups) *
                       g.kernel_h * g.kernel_w;
  for (int threads : {1, 2}) {
    Aligned scratch(conv.ScratchBytes(threads) / sizeof(float));
    const Timing t = Time(reps, [&] { conv.Run(x.data(), y.data(), scratch.data(), threads); });
    Print(name, conv.PathName(), conv.Method(), threads, t, flops);
  }
}

void BenchDense(const char* name, int64_t rows, int64_t depth, int64_t hidden, binmx::Isa isa,
                int reps, std::mt19937* rng) {
  const std::vector<float> w = Random(hidden * depth, rng), b = Random(hidden, rng);
  const std::vector<float> x = Random(rows * depth, rng);
  FloatDense dense(depth, hidden, w.data(), b.data(), false, isa);
  std::vector<float> y(rows * hidden);
  const double flops = 2.0 * rows * depth * hidden;
  for (int threads : {1, 2}) {
    Aligned scratch(dense.ScratchBytes(rows, threads) / sizeof(float));
    const Timing t =
        Time(reps, [&] { dense.Run(x.data(), rows, y.data(), scratch.data(), threads); });
    Print(name, dense.PathName(), "dense", threads, t, flops);
  }
}

}  // namespace

int main(int argc, char** argv) {
  binmx::Isa isa = binmx::AvailableIsas().back();
  int reps = 50;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--isa") == 0 && i + 1 < argc) {
      if (!binmx::ParseIsa(argv[++i], &isa)) {
        std::fprintf(stderr, "unknown ISA '%s'\n", argv[i]);
        return 2;
      }
    } else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--isa scalar|avx2|avx512] [--reps N]\n", argv[0]);
      return 2;
    }
  }
  std::printf("float layers, isa=%s -> %s, %d runs each (FLOP = 2 * MACs of the conv)\n",
              binmx::IsaName(isa), binmx::rt::FloatPathName(isa), reps);
  std::mt19937 rng(7);
  const MaxPoolSpec stem_pool{3, 3, 2, 2, 1, 1, false};
  BenchConv("resnet18 stem 7x7/2 3->64 224 +relu+pool", Geo(1, 3, 224, 224, 64, 7, 2, 3), true,
            &stem_pool, isa, reps, &rng);
  BenchConv("resnet18 stem 7x7/2 3->64 224 +relu", Geo(1, 3, 224, 224, 64, 7, 2, 3), true, nullptr,
            isa, reps, &rng);
  BenchConv("3x3 64->64 56x56 pad 1 +relu", Geo(1, 64, 56, 56, 64, 3, 1, 1), true, nullptr, isa,
            reps, &rng);
  BenchConv("1x1/2 128->256 28x28 (shortcut)", Geo(1, 128, 28, 28, 256, 1, 2, 0), false, nullptr,
            isa, reps, &rng);
  BenchConv("1x1 128->128 28x28 (no im2col)", Geo(1, 128, 28, 28, 128, 1, 1, 0), false, nullptr,
            isa, reps, &rng);
  {
    MaxPoolSpec lp{2, 2, 2, 2, 0, 0, false};
    BenchConv("lenet conv0+pool 5x5 1->64 28x28 batch 1", Geo(1, 1, 28, 28, 64, 5, 1, 0), true, &lp,
              isa, reps * 10, &rng);
  }
  BenchConv("lenet conv0 5x5 1->64 28x28 batch 1", Geo(1, 1, 28, 28, 64, 5, 1, 0), false, nullptr,
            isa, reps, &rng);
  BenchConv("lenet conv0 5x5 1->64 28x28 batch 64", Geo(64, 1, 28, 28, 64, 5, 1, 0), false, nullptr,
            isa, std::max(1, reps / 5), &rng);
  BenchDense("fc 512->1000 rows 1", 1, 512, 1000, isa, reps, &rng);
  BenchDense("fc 512->1000 rows 16", 16, 512, 1000, isa, reps, &rng);
  return 0;
}

/*
 * Timing driver of the integer k-bit convolution of the core (src/xnor_gemm/kbit.h), no MXNet:
 * one layer, weights prepared once, median of N calls of KbitConv2d. For profiling (perf) and
 * quick kernel comparisons; benchmarks/bench_kbit.py is the benchmark of record.
 *
 *   bench_kbit_core SIZE CHANNELS_IN FILTERS KERNEL STRIDE ACT_BIT WEIGHT_BIT [REPEATS] [ISA]
 * [pool]
 *
 * "pool": KbitConv2dReluPool with a relu and a 3x3/2 max pool (pad 1) behind the convolution
 * (the stem of a ResNet: 224 3 64 7 2 8 8 100 avx512 pool).
 *
 * With BINMX_BENCH_COLD=1 every timed call starts with cold caches (64 MB written between
 * calls), as the calls of bench_kbit.py do, which alternate with MXNet's.
 */
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kbit.h"
#include "xnor_gemm.h"

int main(int argc, char** argv) {
  if (argc < 8) {
    std::fprintf(stderr, "usage: %s SIZE CIN F K STRIDE ACT_BIT WEIGHT_BIT [REPEATS] [ISA]\n",
                 argv[0]);
    return 2;
  }
  binmx::Conv2dParams p;
  p.in_h = p.in_w = std::atoi(argv[1]);
  p.channels = std::atoi(argv[2]);
  p.num_filter = std::atoi(argv[3]);
  p.kernel_h = p.kernel_w = std::atoi(argv[4]);
  p.stride_h = p.stride_w = std::atoi(argv[5]);
  p.pad_h = p.pad_w = p.kernel_h / 2;
  const int ka = std::atoi(argv[6]), kw = std::atoi(argv[7]);
  const int repeats = argc > 8 ? std::atoi(argv[8]) : 100;
  binmx::Isa isa = binmx::DefaultIsa();
  if (argc > 9 && !binmx::ParseIsa(argv[9], &isa)) return 2;
  const bool pooled = argc > 10 && std::string(argv[10]) == "pool";
  binmx::KbitMaxPool pool;
  pool.kernel_h = pool.kernel_w = 3;
  pool.stride_h = pool.stride_w = 2;
  pool.pad_h = pool.pad_w = 1;
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> u(-0.1f, 1.1f);
  std::vector<float> x(static_cast<size_t>(p.channels * p.in_h * p.in_w));
  std::vector<float> w(static_cast<size_t>(p.num_filter * p.FilterSize()));
  for (auto& v : x) v = u(gen);
  for (auto& v : w) v = u(gen) - 0.5f;
  std::vector<float> out(static_cast<size_t>(p.num_filter * p.OutH() * p.OutW()));
  binmx::KbitWeights kw_prep;
  binmx::PrepareKbitConv(w.data(), p, ka, kw, isa, &kw_prep);
  binmx::KbitArgs args;
  args.x = x.data();
  args.out = out.data();
  const binmx::GemmConfig cfg{isa, 1};
  const char* cold_env = std::getenv("BINMX_BENCH_COLD");
  const bool cold = cold_env != nullptr && std::string(cold_env) == "1";
  std::vector<char> flush(cold ? size_t{64} << 20 : 0);
  std::vector<double> t;
  for (int r = 0; r < repeats + 3; ++r) {
    if (cold) {
      for (size_t i = 0; i < flush.size(); i += 64) flush[i] = static_cast<char>(flush[i] + r);
    }
    const auto t0 = std::chrono::steady_clock::now();
    if (pooled) {
      binmx::KbitConv2dReluPool(args, kw_prep, p, true, &pool, cfg);
    } else {
      binmx::KbitConv2d(args, kw_prep, p, cfg);
    }
    const auto t1 = std::chrono::steady_clock::now();
    if (r >= 3) t.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(t.begin(), t.end());
  std::printf("%s%s%s a%d/w%d %s: median %.3f ms, min %.3f ms\n", binmx::KbitPathName(kw_prep.path),
              binmx::KbitDirectApplies(kw_prep, p) ? " direct" : "", pooled ? " +relu+pool" : "",
              ka, kw, binmx::IsaName(isa), t[t.size() / 2], t[0]);
  return 0;
}

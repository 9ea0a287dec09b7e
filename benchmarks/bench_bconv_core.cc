/*
 * binmx benchmark: the direct binary convolution (bconv.h) alone, no MXNet, no Python.
 *
 * ResNet-18's 3x3 layers (stride 1, pad 1, packed weights, alpha and bias given):
 * 56x56x64, 28x28x128, 14x14x256, 7x7x512. For each layer and ISA path: warm-up, then the
 * median (and min) of `reps` timed calls; every path's output is compared bit for bit with
 * the scalar path's first. With reps = 1 it makes exactly one timed call per layer, which is
 * what `valgrind --tool=callgrind` instruction counts want.
 *
 *   bench_bconv_core [--reps N] [--batch B] [--threads T] [--isa scalar|avx2|avx512|neon|all]
 *                    [--layer 56|28|14|7|all] [--check 0|1]
 * (--check 0 skips the scalar reference call, e.g. under callgrind).
 * Built by CMake with -DBINMX_TESTS=ON (target bench_bconv_core), or ad hoc:
 *   g++ -O2 -std=c++17 -Isrc/xnor_gemm benchmarks/bench_bconv_core.cc <core objects> -lpthread
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

#include "bconv.h"
#include "conv.h"
#include "xnor_gemm.h"

namespace {

struct Layer {
  int size, ch;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 200, batch = 1, threads = 1, check = 1;
  std::string isa_arg = "all", layer_arg = "all";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--reps")
      reps = std::atoi(argv[i + 1]);
    else if (k == "--batch")
      batch = std::atoi(argv[i + 1]);
    else if (k == "--threads")
      threads = std::atoi(argv[i + 1]);
    else if (k == "--isa")
      isa_arg = argv[i + 1];
    else if (k == "--layer")
      layer_arg = argv[i + 1];
    else if (k == "--check")
      check = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  // Available paths up to the default one (BINMX_ISA caps it), fastest first, scalar last.
  std::vector<std::pair<std::string, binmx::Isa>> isas;
  const binmx::Isa best = binmx::DefaultIsa();
  const std::vector<binmx::Isa> available = binmx::AvailableIsas();  // slowest first
  const size_t cap = std::find(available.begin(), available.end(), best) - available.begin();
  for (size_t i = cap + 1; i-- > 0;) {
    const std::string name = binmx::IsaName(available[i]);
    if (isa_arg == "all" || isa_arg == name) isas.push_back({name, available[i]});
  }

  const Layer layers[] = {{56, 64}, {28, 128}, {14, 256}, {7, 512}};
  std::mt19937 gen(0);
  std::normal_distribution<float> nd;
  std::printf("batch %d, threads %d, reps %d (median / min ms)\n", batch, threads, reps);
  for (const Layer& L : layers) {
    if (layer_arg != "all" && std::atoi(layer_arg.c_str()) != L.size) continue;
    binmx::Conv2dParams p;
    p.batch = batch;
    p.channels = L.ch;
    p.in_h = p.in_w = L.size;
    p.num_filter = L.ch;
    p.kernel_h = p.kernel_w = 3;
    p.pad_h = p.pad_w = 1;
    std::vector<float> x(static_cast<size_t>(batch) * L.ch * L.size * L.size);
    std::vector<float> w(static_cast<size_t>(L.ch) * L.ch * 9), alpha(L.ch), bias(L.ch);
    for (float& v : x) v = nd(gen);
    for (float& v : w) v = nd(gen);
    for (float& v : alpha) v = std::abs(nd(gen));
    for (float& v : bias) v = nd(gen);
    std::vector<uint64_t> wp(static_cast<size_t>(binmx::PackedConvWeightWords(p)));
    binmx::PackConvWeights(w.data(), p, wp.data());
    const size_t out_n = static_cast<size_t>(batch) * L.ch * p.OutH() * p.OutW();
    std::vector<float> ref(out_n), out(out_n);
    binmx::BinaryConvArgs args;
    args.x = x.data();
    args.w_packed = wp.data();
    args.alpha = alpha.data();
    args.bias = bias.data();
    args.out = ref.data();
    if (check) binmx::BinaryConv2d(args, p, binmx::GemmConfig{binmx::Isa::kScalar, 1});
    args.out = out.data();
    for (const auto& [name, isa] : isas) {
      const binmx::GemmConfig cfg{isa, threads};
      std::fill(out.begin(), out.end(), 0.0f);
      const int warm = reps > 1 ? 3 : 0;
      for (int i = 0; i < warm; ++i) binmx::BinaryConv2d(args, p, cfg);
      std::vector<double> t;
      for (int i = 0; i < reps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        binmx::BinaryConv2d(args, p, cfg);
        t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                        .count());
      }
      // Compared after the timed calls (with reps = 1 there is no warm-up call before them).
      const bool same = std::memcmp(out.data(), ref.data(), out_n * sizeof(float)) == 0;
      std::printf("%2dx%-2dx%-3d %-6s %8.4f %8.4f %s\n", L.size, L.size, L.ch, name.c_str(),
                  Median(t), *std::min_element(t.begin(), t.end()),
                  !check ? "(unchecked)"
                  : same ? ""
                         : "MISMATCH vs scalar");
    }
  }
  return 0;
}

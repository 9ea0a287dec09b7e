/*
 * binmx benchmark for a real aarch64 board (qemu gives no timing): the direct binary
 * convolution (bconv.h) on the binary layers of ResNet-18 at 224x224, batch 1.
 *
 * Layers (the float first conv 7x7/2 3->64 and the classifier are not binary, not here):
 *   conv2_x  3x3   64->64   56x56        x4      conv3_1 3x3   64->128  56->28 /2   x1
 *   conv3_x  3x3  128->128  28x28        x3      down3   1x1   64->128  56->28 /2   x1
 *   conv4_1  3x3  128->256  28->14 /2    x1      conv4_x 3x3  256->256  14x14       x3
 *   down4    1x1  128->256  28->14 /2    x1      conv5_1 3x3  256->512  14->7  /2   x1
 *   conv5_x  3x3  512->512  7x7          x3      down5   1x1  256->512  14->7  /2   x1
 * (1.70 G binary MACs in all; many binary ResNets keep the 1x1 shortcuts in float, so their
 * rows are printed apart as well.) Every layer has zero padding (the correction path), alpha
 * and bias (the fused epilogue).
 *
 * For each layer and path: `warmup` untimed calls, then the median of `reps` timed calls;
 *   Gop/s = 2 * binary MACs / median time (a MAC = one xnor and one add, as FLOPs count a
 *   multiply-add as 2), and the ratio to the portable scalar path measured in the same run
 *   (the baseline). Every path's output is compared bit for bit with the scalar path's.
 * Then the ResNet-18 binary-layer latency: the sum over layers of median x count.
 * --packed 1 measures the inference chaining the runtime uses (packed sign words in and out,
 * bconv.h "Packed chaining") instead of float NCHW in and out.
 *
 *   bench_arm64 [--reps 20] [--warmup 3] [--threads 1] [--isa best|all|neon|scalar]
 *               [--packed 0|1] [--layer NAME] [--baseline 0|1] [--quick]
 * --quick: 1 warm-up, 2 reps (a smoke run, e.g. under qemu-aarch64, where times mean nothing).
 * --layer conv2_x: that layer only; --baseline 0: no scalar run and no bit check (for
 * benchmarks/arm64_icount.sh, which counts executed instructions under qemu).
 * Built by CMake for aarch64 only (cross or native): target bench_arm64.
 */
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include "bconv.h"
#include "conv.h"
#include "xnor_gemm.h"

namespace {

struct Layer {
  const char* name;
  int in_size, cin, cout, kernel, stride, count;
};

constexpr Layer kLayers[] = {
    {"conv2_x", 56, 64, 64, 3, 1, 4},   {"conv3_1", 56, 64, 128, 3, 2, 1},
    {"conv3_x", 28, 128, 128, 3, 1, 3}, {"down3", 56, 64, 128, 1, 2, 1},
    {"conv4_1", 28, 128, 256, 3, 2, 1}, {"conv4_x", 14, 256, 256, 3, 1, 3},
    {"down4", 28, 128, 256, 1, 2, 1},   {"conv5_1", 14, 256, 512, 3, 2, 1},
    {"conv5_x", 7, 512, 512, 3, 1, 3},  {"down5", 14, 256, 512, 1, 2, 1},
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// First line of `path` that starts with `key` (e.g. /proc/cpuinfo's "CPU part"), or "".
std::string FirstLine(const char* path, const std::string& key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (line.compare(0, key.size(), key) == 0) return line;
  }
  return "";
}

void PrintMachine(int threads) {
  std::ifstream model("/proc/device-tree/model");
  std::string board;
  if (model) std::getline(model, board, '\0');
  std::printf("board: %s\n", board.empty() ? "(no /proc/device-tree/model)" : board.c_str());
  for (const char* key : {"model name", "CPU implementer", "CPU part", "BogoMIPS"}) {
    const std::string line = FirstLine("/proc/cpuinfo", key);
    if (!line.empty()) std::printf("%s\n", line.c_str());
  }
#if defined(__aarch64__) && defined(__linux__)
  const unsigned long hwcap = getauxval(AT_HWCAP);
  std::printf("HWCAP: asimd %s, asimddp (ARMv8.2 dotprod) %s\n",
              (hwcap & HWCAP_ASIMD) ? "yes" : "no", (hwcap & HWCAP_ASIMDDP) ? "yes" : "no");
#endif
  std::printf("available paths:");
  for (binmx::Isa isa : binmx::AvailableIsas()) std::printf(" %s", binmx::IsaName(isa));
  std::printf("; threads %d\n", threads);
}

struct LayerData {
  binmx::Conv2dParams p;
  std::vector<float> x, alpha, bias, out_scale, out_shift;
  std::vector<uint64_t> wp, x_bits;
  int64_t macs = 0;
};

LayerData MakeLayer(const Layer& L, std::mt19937& gen) {
  std::normal_distribution<float> nd;
  LayerData d;
  binmx::Conv2dParams& p = d.p;
  p.channels = L.cin;
  p.in_h = p.in_w = L.in_size;
  p.num_filter = L.cout;
  p.kernel_h = p.kernel_w = L.kernel;
  p.stride_h = p.stride_w = L.stride;
  p.pad_h = p.pad_w = L.kernel / 2;
  d.x.resize(static_cast<size_t>(L.cin) * L.in_size * L.in_size);
  for (float& v : d.x) v = nd(gen);
  std::vector<float> w(static_cast<size_t>(L.cout) * p.FilterSize());
  for (float& v : w) v = nd(gen);
  d.wp.resize(static_cast<size_t>(binmx::PackedConvWeightWords(p)));
  binmx::PackConvWeights(w.data(), p, d.wp.data());
  for (int f = 0; f < L.cout; ++f) {
    d.alpha.push_back(std::abs(nd(gen)) + 0.1f);
    d.bias.push_back(nd(gen));
    d.out_scale.push_back(std::abs(nd(gen)) + 0.1f);
    d.out_shift.push_back(nd(gen));
  }
  // Packed input (N, H, W, words): the signs of x, channels last.
  const int64_t words = binmx::WordsFor(L.cin), hw = int64_t{L.in_size} * L.in_size;
  d.x_bits.assign(static_cast<size_t>(hw * words), 0);
  for (int64_t c = 0; c < L.cin; ++c) {
    for (int64_t i = 0; i < hw; ++i) {
      if (d.x[c * hw + i] < 0.0f) d.x_bits[i * words + c / 64] |= uint64_t{1} << (c % 64);
    }
  }
  d.macs = int64_t{L.cout} * p.OutH() * p.OutW() * p.FilterSize();
  return d;
}

struct Timing {
  double ms = 0;
  bool same = true;
};

Timing TimeLayer(const LayerData& d, binmx::Isa isa, int threads, bool packed, int warmup, int reps,
                 std::vector<float>* out, std::vector<uint64_t>* bits,
                 const std::vector<float>* ref, const std::vector<uint64_t>* ref_bits) {
  binmx::BinaryConvArgs args;
  args.w_packed = d.wp.data();
  args.alpha = d.alpha.data();
  args.bias = d.bias.data();
  if (packed) {
    args.x_bits = d.x_bits.data();
    args.out_bits = bits->data();
    args.out_scale = d.out_scale.data();
    args.out_shift = d.out_shift.data();
  } else {
    args.x = d.x.data();
    args.out = out->data();
  }
  const binmx::GemmConfig cfg{isa, threads};
  binmx::BinaryConv2d(args, d.p, cfg);
  Timing t;
  if (ref != nullptr) {
    t.same = packed ? *bits == *ref_bits
                    : std::memcmp(out->data(), ref->data(), out->size() * sizeof(float)) == 0;
  }
  for (int i = 1; i < warmup; ++i) binmx::BinaryConv2d(args, d.p, cfg);
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    binmx::BinaryConv2d(args, d.p, cfg);
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  t.ms = Median(ms);
  return t;
}

int Usage(const char* bad) {
  std::fprintf(stderr,
               "bad option %s\nusage: bench_arm64 [--reps N] [--warmup N] [--threads N] "
               "[--isa best|all|neon|scalar] [--packed 0|1] [--quick]\n",
               bad);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20, warmup = 3, threads = 1, packed = 0, baseline = 1;
  std::string isa_arg = "best", layer_arg;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--quick") {
      reps = 2;
      warmup = 1;
      continue;
    }
    if (i + 1 >= argc) return Usage(argv[i]);
    const char* v = argv[++i];
    if (k == "--reps") {
      reps = std::atoi(v);
    } else if (k == "--warmup") {
      warmup = std::atoi(v);
    } else if (k == "--threads") {
      threads = std::atoi(v);
    } else if (k == "--isa") {
      isa_arg = v;
    } else if (k == "--packed") {
      packed = std::atoi(v);
    } else if (k == "--layer") {
      layer_arg = v;
    } else if (k == "--baseline") {
      baseline = std::atoi(v);
    } else {
      return Usage(argv[i - 1]);
    }
  }
  if (reps < 1 || warmup < 1 || threads < 1 || (packed != 0 && packed != 1) ||
      (baseline != 0 && baseline != 1)) {
    return Usage("(reps, warmup and threads must be >= 1; packed and baseline 0 or 1)");
  }
  if (!layer_arg.empty() && std::none_of(std::begin(kLayers), std::end(kLayers),
                                         [&](const Layer& L) { return layer_arg == L.name; })) {
    return Usage(layer_arg.c_str());
  }
  std::vector<binmx::Isa> isas;
  try {
    if (isa_arg == "best") {
      isas.push_back(binmx::DefaultIsa());
    } else if (isa_arg == "all") {
      for (binmx::Isa isa : binmx::AvailableIsas()) {
        if (isa != binmx::Isa::kScalar) isas.push_back(isa);
      }
    } else {
      binmx::Isa isa;
      if (!binmx::ParseIsa(isa_arg, &isa)) return Usage(isa_arg.c_str());
      binmx::RequireIsa(isa);
      isas.push_back(isa);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_arm64: %s\n", e.what());
    return 2;
  }
  // The scalar path is the baseline, measured in the same run.
  if (baseline) {
    isas.erase(std::remove(isas.begin(), isas.end(), binmx::Isa::kScalar), isas.end());
    isas.insert(isas.begin(), binmx::Isa::kScalar);
  }

  PrintMachine(threads);
  std::printf(
      "ResNet-18 binary layers, 224x224, batch 1, %s in/out; warm-up %d, median of %d; "
      "Gop/s = 2 x binary MACs / s; ratio = scalar ms / path ms\n",
      packed ? "packed sign words" : "float NCHW", warmup, reps);
  std::printf("%-8s %-22s %7s %3s", "layer", "shape", "MMAC", "x");
  for (binmx::Isa isa : isas) std::printf(" %9s ms %7s", binmx::IsaName(isa), "Gop/s");
  std::printf(" %7s %s\n", "ratio", "check");

  std::mt19937 gen(0);
  std::vector<double> total(isas.size(), 0.0), total_no_down(isas.size(), 0.0);
  int64_t macs_all = 0;
  bool all_same = true;
  for (const Layer& L : kLayers) {
    if (!layer_arg.empty() && layer_arg != L.name) continue;
    const LayerData d = MakeLayer(L, gen);
    const int64_t out_n = int64_t{L.cout} * d.p.OutH() * d.p.OutW();
    std::vector<float> ref(static_cast<size_t>(out_n)), out(ref.size());
    std::vector<uint64_t> ref_bits(
        static_cast<size_t>(d.p.OutH() * d.p.OutW() * binmx::WordsFor(L.cout))),
        bits(ref_bits.size());
    char shape[64];
    std::snprintf(shape, sizeof(shape), "%dx%d %d->%d %dx%d/%d", L.in_size, L.in_size, L.cin,
                  L.cout, L.kernel, L.kernel, L.stride);
    std::printf("%-8s %-22s %7.1f %3d", L.name, shape, d.macs / 1e6, L.count);
    double scalar_ms = 0, best_ratio = 0;
    bool same = true;
    for (size_t i = 0; i < isas.size(); ++i) {
      const bool base = i == 0 && baseline;
      const Timing t = TimeLayer(d, isas[i], threads, packed != 0, warmup, reps, base ? &ref : &out,
                                 base ? &ref_bits : &bits, base || !baseline ? nullptr : &ref,
                                 base || !baseline ? nullptr : &ref_bits);
      same = same && t.same;
      if (base) scalar_ms = t.ms;
      best_ratio = baseline ? scalar_ms / t.ms : 0.0;
      total[i] += t.ms * L.count;
      if (L.kernel != 1) total_no_down[i] += t.ms * L.count;
      std::printf(" %12.3f %7.1f", t.ms, 2.0 * d.macs / (t.ms * 1e6));
    }
    all_same = all_same && same;
    macs_all += d.macs * L.count;
    std::printf(" %7.2f %s\n", best_ratio,
                !baseline ? "(unchecked)"
                : same    ? "same bits"
                          : "MISMATCH vs scalar");
  }
  std::printf("\nResNet-18 binary layers (%.2f G binary MACs), latency sum in ms:\n",
              macs_all / 1e9);
  for (size_t i = 0; i < isas.size(); ++i) {
    std::printf(
        "  %-7s all binary layers %9.2f ms (%6.1f Gop/s)   without the 1x1 shortcuts "
        "%9.2f ms\n",
        binmx::IsaName(isas[i]), total[i], 2.0 * macs_all / (total[i] * 1e6), total_no_down[i]);
  }
  if (!all_same) {
    std::printf("MISMATCH: a path's output differs from the scalar path's\n");
    return 1;
  }
  return 0;
}

/*
 * binmx-run: runs a converted model with the binmx runtime, no MXNet and no Python.
 *
 *   binmx-run --model PREFIX --epoch N --input in.npy [--output out.npy] [--threads N]
 *             [--profile] [--bench N] [--repeat N]
 *
 * --input is a float32 .npy of the model's input shape (N, C, H, W); the input shape is taken
 * from it. Without --output the argmax of each row of the output is printed. --profile prints
 * the per-layer table (op, output shape, binary and float MACs, median ms over --repeat runs,
 * share of the total, Gop/s with 2 ops per MAC); --bench N prints the median and p90 latency
 * of N runs and the process's peak resident memory. Errors: one line "binmx-run: error: ..." on
 * stderr and exit status 1 (2 for a usage error).
 */
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "binmx_runtime.h"
#include "npy.h"
#include "rt_common.h"

namespace {

[[noreturn]] void Usage(const std::string& message) {
  std::fprintf(stderr, "binmx-run: error: %s\n", message.c_str());
  std::fprintf(stderr,
               "usage: binmx-run --model PREFIX --epoch N --input in.npy [--output out.npy] "
               "[--threads N] [--profile] [--repeat N] [--bench N]\n");
  std::exit(2);
}

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "binmx-run: error: %s\n", message.c_str());
  std::exit(1);
}

long ParseCount(const char* flag, const char* text, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi) {
    Usage(std::string(flag) + " expects an integer in [" + std::to_string(lo) + ", " +
          std::to_string(hi) + "], got '" + text + "'");
  }
  return v;
}

std::string ShapeStr(const int64_t* s, int n) {
  std::string out = "(";
  for (int i = 0; i < n; ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (n == 1 ? ",)" : ")");
}

// The process's peak resident memory in KiB (Linux: VmHWM of /proc/self/status, which counts
// this program only, not what a parent held before the exec), or -1.
long PeakRssKiB() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  long kib = -1;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, "VmHWM:", 6) == 0) kib = std::strtol(line + 6, nullptr, 10);
  }
  std::fclose(f);
  return kib;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, input, output;
  long epoch = -1, threads = 0, bench = 0, repeat = 20;
  bool profile = false, have_threads = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* flag) -> const char* {
      if (i + 1 >= argc) Usage(std::string(flag) + " needs a value");
      return argv[++i];
    };
    if (a == "--model") {
      model = value("--model");
    } else if (a == "--epoch") {
      epoch = ParseCount("--epoch", value("--epoch"), 0, 9999);
    } else if (a == "--input") {
      input = value("--input");
    } else if (a == "--output") {
      output = value("--output");
    } else if (a == "--threads") {
      threads = ParseCount("--threads", value("--threads"), 1, 256);
      have_threads = true;
    } else if (a == "--bench") {
      bench = ParseCount("--bench", value("--bench"), 1, 1000000);
    } else if (a == "--repeat") {
      repeat = ParseCount("--repeat", value("--repeat"), 1, 100000);
    } else if (a == "--profile") {
      profile = true;
    } else if (a == "-h" || a == "--help") {
      std::printf(
          "usage: binmx-run --model PREFIX --epoch N --input in.npy [--output out.npy] "
          "[--threads N] [--profile] [--repeat N] [--bench N]\n");
      return 0;
    } else {
      Usage("unknown argument '" + a + "'");
    }
  }
  if (model.empty()) Usage("--model is required");
  if (epoch < 0) Usage("--epoch is required");
  if (input.empty()) Usage("--input is required");
  (void)have_threads;

  binmx::rt::NpyArray x;
  try {
    x = binmx::rt::ReadNpyFloat32(input);
  } catch (const std::exception& e) {
    Die(e.what());
  }
  if (x.shape.empty()) Die("--input " + input + " is a 0-d array; expected (N, C, H, W)");
  binmx_model* m = nullptr;
  if (binmx_model_load(model.c_str(), static_cast<int>(epoch), x.shape.data(),
                       static_cast<int>(x.shape.size()), static_cast<int>(threads), &m) != 0) {
    Die(binmx_last_error());
  }
  int64_t oshape[16];
  const int orank = binmx_model_output_shape(m, oshape, 16);
  std::vector<float> y(static_cast<size_t>(binmx_model_output_size(m)));
  const int64_t in_len = static_cast<int64_t>(x.data.size());
  if (binmx_model_run(m, x.data.data(), in_len, y.data(), static_cast<int64_t>(y.size())) != 0) {
    Die(binmx_last_error());
  }
  if (!output.empty()) {
    try {
      binmx::rt::WriteNpyFloat32(output, y.data(), std::vector<int64_t>(oshape, oshape + orank));
    } catch (const std::exception& e) {
      Die(e.what());
    }
    std::printf("wrote %s %s\n", output.c_str(), ShapeStr(oshape, orank).c_str());
  } else {
    const int64_t rows = orank > 0 ? oshape[0] : 1;
    const int64_t cols = rows > 0 ? static_cast<int64_t>(y.size()) / rows : 0;
    std::printf("output %s, argmax per row:", ShapeStr(oshape, orank).c_str());
    for (int64_t r = 0; r < rows && cols > 0; ++r) {
      const float* row = y.data() + r * cols;
      std::printf(" %lld", static_cast<long long>(std::max_element(row, row + cols) - row));
    }
    std::printf("\n");
  }
  std::printf("threads %d, isa %s\n", binmx_model_threads(m), binmx_model_isa(m));
  if (profile) {
    const int n = binmx_model_num_layers(m);
    std::vector<double> ms(static_cast<size_t>(n));
    if (binmx_model_profile(m, x.data.data(), in_len, static_cast<int>(repeat), ms.data(), n) !=
        0) {
      Die(binmx_last_error());
    }
    double total = 0.0;
    for (double t : ms) total += t;
    std::printf("%-36s %-16s %-20s %14s %14s %9s %7s %8s\n", "layer", "op", "output", "binary MACs",
                "float MACs", "ms", "share", "Gop/s");
    int64_t tb = 0, tf = 0;
    for (int i = 0; i < n; ++i) {
      const char* name = nullptr;
      const char* op = nullptr;
      int64_t shape[16];
      int rank = 0;
      int64_t bm = 0, fm = 0;
      binmx_model_layer(m, i, &name, &op, shape, 16, &rank, &bm, &fm);
      tb += bm;
      tf += fm;
      const double gops = ms[i] > 0.0 ? 2.0 * static_cast<double>(bm + fm) / (ms[i] * 1e6) : 0.0;
      std::printf("%-36.36s %-16.16s %-20s %14lld %14lld %9.4f %6.1f%% %8.1f\n", name, op,
                  ShapeStr(shape, std::min(rank, 16)).c_str(), static_cast<long long>(bm),
                  static_cast<long long>(fm), ms[i], total > 0 ? 100.0 * ms[i] / total : 0.0, gops);
    }
    std::printf("%-36s %-16s %-20s %14lld %14lld %9.4f %6.1f%%\n", "total (sum of medians)", "", "",
                static_cast<long long>(tb), static_cast<long long>(tf), total, 100.0);
  }
  if (bench > 0) {
    std::vector<double> t;
    t.reserve(static_cast<size_t>(bench));
    for (long r = 0; r < bench; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      if (binmx_model_run(m, x.data.data(), in_len, y.data(), static_cast<int64_t>(y.size())) !=
          0) {
        Die(binmx_last_error());
      }
      const auto t1 = std::chrono::steady_clock::now();
      t.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::vector<double> sorted = t;
    std::sort(sorted.begin(), sorted.end());
    const double p90 =
        sorted[std::min(sorted.size() - 1, static_cast<size_t>(0.9 * sorted.size()))];
    std::printf("bench: %ld runs, median %.6f ms, p90 %.6f ms\n", bench, Median(t), p90);
    const long kib = PeakRssKiB();
    if (kib >= 0) std::printf("peak resident memory: %.1f MiB\n", kib / 1024.0);
  }
  binmx_model_free(m);
  return 0;
}

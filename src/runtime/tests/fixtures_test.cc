/*
 * rt_fixtures_test FIXTURE_DIR: runs every stored fixture (runtime/tests/fixtures, written by
 * tools/make_runtime_fixtures.py from MXNet + binmx) through the runtime's C API at 1 and 2
 * threads and compares with MXNet's output: `exact` cases (a binary layer, integer outputs)
 * with ==, the others within 1e-4 x max |output| (float layers sum in another order than
 * oneDNN) with the same argmax per row. No MXNet, no Python: this is what the aarch64 check
 * runs under qemu. Exit status 0 when every case passes.
 */
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "binmx_runtime.h"
#include "json.h"
#include "npy.h"

namespace {

int64_t ArgMax(const float* row, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (row[i] > row[best]) best = i;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s FIXTURE_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  std::ifstream f(dir + "/index.json");
  if (!f) {
    std::fprintf(stderr, "cannot read %s/index.json\n", dir.c_str());
    return 2;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  int failures = 0, checks = 0;
  try {
    const binmx::rt::Json index = binmx::rt::ParseJson(ss.str(), "index.json");
    for (const auto& kv : index.members()) {
      const std::string& name = kv.first;
      const bool exact = kv.second.Find("exact")->AsBool("exact");
      const binmx::rt::NpyArray x = binmx::rt::ReadNpyFloat32(dir + "/" + name + "/input.npy");
      const binmx::rt::NpyArray ref = binmx::rt::ReadNpyFloat32(dir + "/" + name + "/output.npy");
      for (int threads : {1, 2}) {
        ++checks;
        binmx_model* m = nullptr;
        const std::string prefix = dir + "/" + name + "/model";
        if (binmx_model_load(prefix.c_str(), 1, x.shape.data(), static_cast<int>(x.shape.size()),
                             threads, &m) != 0) {
          std::printf("FAIL %s threads=%d: load: %s\n", name.c_str(), threads, binmx_last_error());
          ++failures;
          continue;
        }
        std::vector<float> y(ref.data.size());
        if (binmx_model_output_size(m) != static_cast<int64_t>(y.size()) ||
            binmx_model_run(m, x.data.data(), static_cast<int64_t>(x.data.size()), y.data(),
                            static_cast<int64_t>(y.size())) != 0) {
          std::printf("FAIL %s threads=%d: run: %s\n", name.c_str(), threads, binmx_last_error());
          ++failures;
          binmx_model_free(m);
          continue;
        }
        double max_ref = 0.0, max_diff = 0.0;
        int64_t mismatches = 0;
        for (size_t i = 0; i < y.size(); ++i) {
          max_ref = std::fmax(max_ref, std::fabs(ref.data[i]));
          const double d = std::fabs(static_cast<double>(y[i]) - ref.data[i]);
          if (!(d <= max_diff)) max_diff = d;
          if (y[i] != ref.data[i]) ++mismatches;
        }
        bool ok = exact ? mismatches == 0 : max_diff <= 1e-4 * max_ref;
        const int64_t rows = ref.shape.empty() ? 1 : ref.shape[0];
        const int64_t cols = static_cast<int64_t>(y.size()) / (rows ? rows : 1);
        for (int64_t r = 0; r < rows && !exact; ++r) {
          if (ArgMax(y.data() + r * cols, cols) != ArgMax(ref.data.data() + r * cols, cols)) {
            ok = false;
          }
        }
        std::printf("%s %s threads=%d isa=%s max|diff|=%.3g (max|ref| %.3g)%s\n",
                    ok ? "ok  " : "FAIL", name.c_str(), threads, binmx_model_isa(m), max_diff,
                    max_ref, exact ? " exact" : "");
        if (!ok) ++failures;
        binmx_model_free(m);
      }
    }
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  std::printf("%d checks, %d failures\n", checks, failures);
  return failures == 0 && checks > 0 ? 0 : 1;
}

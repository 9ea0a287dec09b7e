/*
 * binmx core: portable kernels of the direct int8 convolution (base flags; contract in
 * kbit_direct_kernels.h). No row kernel: the driver builds the rows and runs the path's int8
 * tile. Pooling maxima on int32, the epilogue one value at a time in double.
 */
#include <algorithm>

#include "kbit_direct_kernels.h"

namespace binmx {
namespace internal {
namespace {

void HMax(const int32_t* d, int64_t ow, int64_t fs, int64_t k, int64_t s, int64_t pad, int64_t px0,
          int64_t px1, int32_t* hp) {
  for (int64_t px = px0; px < px1; ++px) {
    const int64_t x0 = std::max<int64_t>(px * s - pad, 0);
    const int64_t x1 = std::min(px * s - pad + k, ow);
    if (x0 >= x1) continue;
    int32_t* dst = hp + px * fs;
    std::copy(d + x0 * fs, d + (x0 + 1) * fs, dst);
    for (int64_t x = x0 + 1; x < x1; ++x) {
      const int32_t* src = d + x * fs;
      for (int64_t f = 0; f < fs; ++f) dst[f] = std::max(dst[f], src[f]);
    }
  }
}

void VMax(const int32_t* const* rows, int64_t nrows, int64_t n, int32_t* out) {
  std::copy(rows[0], rows[0] + n, out);
  for (int64_t r = 1; r < nrows; ++r) {
    for (int64_t i = 0; i < n; ++i) out[i] = std::max(out[i], rows[r][i]);
  }
}

void Epilogue(const int32_t* d, int64_t np, int64_t nf, int64_t fs, const int32_t* neg,
              const double* ds, const float* bias, bool relu, float* out, int64_t os) {
  for (int64_t f = 0; f < nf; ++f) {
    for (int64_t p = 0; p < np; ++p) {
      int32_t dv = d[p * fs + f];
      if (neg != nullptr && neg[f] != 0) dv = -dv;
      float v = static_cast<float>(static_cast<double>(dv) * ds[f]);
      if (bias != nullptr) v += bias[f];
      if (relu) v = v > 0.0f ? v : (v == v ? 0.0f : v);
      out[f * os + p] = v;
    }
  }
}

}  // namespace

KbitDirectSpec ScalarKbitDirect() { return KbitDirectSpec{nullptr, HMax, VMax, Epilogue, nullptr}; }

}  // namespace internal
}  // namespace binmx

/*
 * binmx core: portable k-bit kernel path (base flags; contract in kbit_kernels.h).
 * Plain loops: the bit-serial tile sums popcount(x AND w) << (i + j) filter by filter, the
 * int8 tile multiplies u8 levels by s8 weights 4 depths at a time, both into 64-bit sums.
 */
#include <algorithm>
#include <cmath>

#include "kbit_kernels.h"

namespace binmx {
namespace internal {
namespace {

void BitSerialTile(const uint64_t* x, int64_t np, int64_t words, int ka, const uint64_t* w, int kw,
                   int64_t nf, int64_t fs, int32_t* r, int64_t rs) {
  for (int64_t p = 0; p < np; ++p) {
    for (int64_t f = 0; f < nf; ++f) {
      int64_t sum = 0;
      for (int64_t wd = 0; wd < words; ++wd) {
        for (int i = 0; i < ka; ++i) {
          const uint64_t xv = x[(p * words + wd) * ka + i];
          for (int j = 0; j < kw; ++j) {
            sum += static_cast<int64_t>(__builtin_popcountll(xv & w[(wd * kw + j) * fs + f]))
                   << (i + j);
          }
        }
      }
      r[p * rs + f] = static_cast<int32_t>(sum);
    }
  }
}

void Int8Tile(const uint32_t* x, int64_t np, int64_t kq, const uint32_t* w, int64_t nf, int64_t fs,
              int32_t* r, int64_t rs) {
  for (int64_t p = 0; p < np; ++p) {
    for (int64_t f = 0; f < nf; ++f) {
      int64_t sum = 0;
      for (int64_t k = 0; k < kq; ++k) {
        const uint32_t a = x[p * kq + k], b = w[k * fs + f];
        for (int s = 0; s < 32; s += 8) {
          sum += static_cast<int64_t>((a >> s) & 0xFF) *
                 static_cast<int8_t>(static_cast<uint8_t>((b >> s) & 0xFF));
        }
      }
      r[p * rs + f] = static_cast<int32_t>(sum);
    }
  }
}

void Planes(const uint8_t* row, int64_t n, int ka, uint64_t* out) {
  const int64_t words = (n + 63) / 64;
  std::fill(out, out + words * ka, uint64_t{0});
  for (int64_t d = 0; d < n; ++d) {
    for (int i = 0; i < ka; ++i) {
      out[(d / 64) * ka + i] |= static_cast<uint64_t>((row[d] >> i) & 1) << (d % 64);
    }
  }
}

void Levels(const float* x, int64_t n, int ka, uint8_t* out) {
  const double a_levels = static_cast<double>((1 << ka) - 1);
  for (int64_t i = 0; i < n; ++i) {
    const double a = std::min(1.0, std::max(0.0, static_cast<double>(x[i])));
    out[i] = static_cast<uint8_t>(std::nearbyint(a_levels * a));
  }
}

void LevelsNhwc(const float* x, int64_t c, int64_t stride, int64_t hw, int ka, uint8_t* out) {
  constexpr int64_t kBlock = 64;
  uint8_t tmp[kBlock];
  for (int64_t q0 = 0; q0 < hw; q0 += kBlock) {
    const int64_t nq = std::min(kBlock, hw - q0);
    for (int64_t ch = 0; ch < c; ++ch) {
      Levels(x + ch * stride + q0, nq, ka, tmp);
      for (int64_t q = 0; q < nq; ++q) out[(q0 + q) * c + ch] = tmp[q];
    }
  }
}

int64_t RowSum(const uint8_t* row, int64_t n) {
  int64_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += row[i];
  return s;
}

void Epilogue(const int32_t* r, const int32_t* corr, int64_t rs, const int64_t* l, int64_t coff,
              int64_t np, int64_t nf, const double* ds, const float* bias, float* out, int64_t os,
              bool transposed) {
  for (int64_t p = 0; p < np; ++p) {
    const double base = static_cast<double>(coff * l[p]);
    for (int64_t f = 0; f < nf; ++f) {
      double d = 2.0 * static_cast<double>(r[p * rs + f]) + base;
      if (corr != nullptr) d += static_cast<double>(corr[p * rs + f]);
      float v = static_cast<float>(d * ds[f]);
      if (bias != nullptr) v += bias[f];
      out[transposed ? f * os + p : p * os + f] = v;
    }
  }
}

}  // namespace

KbitSpec ScalarKbit() {
  return KbitSpec{BitSerialTile, Int8Tile, Int8Format::kQuad, Planes, Levels,
                  LevelsNhwc,    RowSum,   Epilogue};
}

}  // namespace internal
}  // namespace binmx

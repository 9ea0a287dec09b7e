/*
 * binmx core: portable direct binary convolution kernel (no ISA flags; __builtin_popcountll).
 * Contract in bconv_kernels.h. Tile: 4 filters x 4 pixels of scalar accumulators.
 */
#include "bconv_kernels.h"

namespace binmx {
namespace internal {
namespace {

constexpr int kFb = 4;
constexpr int kPb = 4;

float Finish(const BconvTile& t, int64_t f, int64_t q, uint64_t pop) {
  int32_t dot = t.k_depth - 2 * static_cast<int32_t>(pop);
  if (t.pid != nullptr) dot -= t.ct[f * t.ct_stride + t.pid[q]];
  const float a = t.alpha != nullptr ? t.alpha[f] : 1.0f;
  const float b = t.bias != nullptr ? t.bias[f] : 0.0f;
  const float prod = static_cast<float>(dot) * a;
  float v = prod + b;
  if (t.residual != nullptr) v = v + t.residual[f * t.out_fstride + q];
  return v;
}

void Tile(const BconvTile& t) {
  for (int64_t f = t.f0; f < t.f1; f += kFb) {
    const int fn = static_cast<int>(t.f1 - f < kFb ? t.f1 - f : kFb);
    for (int64_t q = t.q0; q < t.q1; q += kPb) {
      const int qn = static_cast<int>(t.q1 - q < kPb ? t.q1 - q : kPb);
      uint64_t acc[kFb][kPb] = {};
      for (int64_t k = 0; k < t.kwords; ++k) {
        const uint64_t* xp = t.planes + t.koff[k] + q;
        for (int r = 0; r < fn; ++r) {
          const uint64_t wv = t.w[(f + r) * t.kwords + k];
          for (int c = 0; c < qn; ++c) acc[r][c] += __builtin_popcountll(wv ^ xp[c]);
        }
      }
      for (int r = 0; r < fn; ++r) {
        for (int c = 0; c < qn; ++c) {
          t.out[(f + r) * t.out_fstride + q + c] = Finish(t, f + r, q + c, acc[r][c]);
        }
      }
    }
  }
}

void Pack(const float* x, int64_t ch_stride, int n_ch, int64_t width, const float* scale,
          const float* shift, uint64_t* out) {
  for (int64_t p = 0; p < width; ++p) out[p] = 0;
  for (int c = 0; c < n_ch; ++c) {
    const float* xc = x + c * ch_stride;
    const uint64_t bit = uint64_t{1} << c;
    if (scale != nullptr) {
      const float s = scale[c], o = shift[c];
      for (int64_t p = 0; p < width; ++p) {
        const float prod = xc[p] * s;
        out[p] |= (prod + o < 0.0f) ? bit : uint64_t{0};
      }
    } else {
      for (int64_t p = 0; p < width; ++p) out[p] |= (xc[p] < 0.0f) ? bit : uint64_t{0};
    }
  }
}

void PackAffine(const float* x, int64_t rows, int64_t k, int64_t ld, const float* scale,
                const float* shift, uint64_t* out) {
  const int64_t words = (k + 63) / 64;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ld;
    for (int64_t w = 0; w < words; ++w) {
      const int64_t begin = w * 64;
      const int64_t len = (k - begin) < 64 ? (k - begin) : 64;
      uint64_t word = 0;
      for (int64_t j = 0; j < len; ++j) {
        const float prod = row[begin + j] * scale[begin + j];
        word |= static_cast<uint64_t>(prod + shift[begin + j] < 0.0f) << j;
      }
      out[r * words + w] = word;
    }
  }
}

void PopRows(const uint64_t* w, int64_t rows, int64_t words, int32_t* pop) {
  for (int64_t r = 0; r < rows; ++r) {
    int32_t s = 0;
    for (int64_t i = 0; i < words; ++i) s += __builtin_popcountll(w[r * words + i]);
    pop[r] = s;
  }
}

}  // namespace

BconvSpec ScalarBconv() { return BconvSpec{&Tile, &Pack, &PackAffine, &PopRows}; }

}  // namespace internal
}  // namespace binmx

/*
 * binmx core: portable kernel path (no ISA flags; __builtin_popcountll).
 *
 * Tile: kMr = 3 rows of A x kNc = 4 panel columns, 12 scalar accumulators, loop over words:
 *     pop[r][c] += popcount(A[m + r][w] ^ panel[w * 4 + c]);  dot = k - 2 * pop.
 * Pack: element j of a row sets bit j % 64 of word j / 64 when x[j] < 0 (so +-0.0 and NaN
 * give bit 0); tail bits 0.
 */
#include "kernels.h"

namespace binmx {
namespace internal {
namespace {

constexpr int kMr = 3;
constexpr int kNc = 4;

void Store(const GemmOut& out, int64_t m, int64_t n, uint64_t pop) {
  const int32_t dot = static_cast<int32_t>(out.k - 2 * static_cast<int64_t>(pop));
  if (out.ci != nullptr) {
    out.ci[m * out.ldc + n] = dot;
  } else {
    const float s = out.scale != nullptr ? out.scale[m] : 1.0f;
    const float o = out.bias != nullptr ? out.bias[m] : 0.0f;
    const float prod = static_cast<float>(dot) * s;
    out.cf[m * out.ldc + n] = prod + o;
  }
}

template <int MR>
void Micro(const uint64_t* a, int64_t words, const uint64_t* panel, int64_t m, int64_t n0,
           int64_t ncols, const GemmOut& out) {
  uint64_t acc[MR][kNc] = {};
  const uint64_t* ar[MR];
  for (int r = 0; r < MR; ++r) ar[r] = a + (m + r) * words;
  for (int64_t w = 0; w < words; ++w) {
    const uint64_t* p = panel + w * kNc;
    for (int r = 0; r < MR; ++r) {
      const uint64_t x = ar[r][w];
      for (int c = 0; c < kNc; ++c) acc[r][c] += __builtin_popcountll(x ^ p[c]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < ncols; ++c) Store(out, m + r, n0 + c, acc[r][c]);
  }
}

void Tile(const uint64_t* a, int64_t words, const uint64_t* panel, int64_t m0, int64_t m1,
          int64_t n0, int64_t ncols, const GemmOut& out) {
  int64_t m = m0;
  for (; m + kMr <= m1; m += kMr) Micro<kMr>(a, words, panel, m, n0, ncols, out);
  switch (m1 - m) {
    case 2:
      Micro<2>(a, words, panel, m, n0, ncols, out);
      break;
    case 1:
      Micro<1>(a, words, panel, m, n0, ncols, out);
      break;
    default:
      break;
  }
}

void Pack(const float* x, int64_t rows, int64_t k, int64_t ld, uint64_t* out) {
  const int64_t words = (k + 63) / 64;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ld;
    uint64_t* dst = out + r * words;
    for (int64_t w = 0; w < words; ++w) {
      const int64_t begin = w * 64;
      const int64_t len = (k - begin) < 64 ? (k - begin) : 64;
      uint64_t word = 0;
      for (int64_t j = 0; j < len; ++j) word |= static_cast<uint64_t>(row[begin + j] < 0.0f) << j;
      dst[w] = word;
    }
  }
}

void Gemv(const uint64_t* a, int64_t words, const uint64_t* b, int64_t m0, int64_t m1,
          const GemmOut& out) {
  for (int64_t m = m0; m < m1; ++m) {
    const uint64_t* row = a + m * words;
    uint64_t pop = 0;
    for (int64_t w = 0; w < words; ++w) pop += __builtin_popcountll(row[w] ^ b[w]);
    Store(out, m, 0, pop);
  }
}

}  // namespace

KernelSpec ScalarKernel() { return KernelSpec{kNc, kMr, &Tile, &Pack, &Gemv}; }

}  // namespace internal
}  // namespace binmx

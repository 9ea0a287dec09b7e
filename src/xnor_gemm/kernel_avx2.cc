/*
 * binmx core: AVX2 kernel path (compiled with -mavx2 -mpopcnt only).
 *
 * Tile: kMr = 4 rows of A x 2 ymm vectors of the B panel (kNc = 8 columns, 4 uint64 lanes per
 * vector). Popcount by nibble lookup: for x = broadcast(A[m + r][w]) ^ panel[w][4v .. 4v + 3],
 *     cnt8 = vpshufb(lut, x & 0x0f) + vpshufb(lut, (x >> 4) & 0x0f)     (per byte, <= 8)
 * is added into byte accumulators; every kFlush = 31 words (31 * 8 = 248 < 256, so no byte
 * overflows) vpsadbw folds them into the 64-bit column sums. dot = k - 2 * pop; the float
 * output is (float(dot) * scale) + bias with separate roundings (scalar epilogue, same bits as
 * the other paths).
 * A scalar-popcnt variant was not benchmarked: on Intel cores scalar popcnt issues on one
 * port (1 word per cycle) against the lookup's estimated ~1.5 words per cycle, so this path
 * uses the lookup for every shape (an estimate, not a measurement).
 * Pack: 8 floats per vcmpltps + vmovmskps (x < 0: +-0.0 and NaN give 0), 8 masks per word.
 */
#include <immintrin.h>

#include "kernels.h"

namespace binmx {
namespace internal {
namespace {

constexpr int kMr = 4;
constexpr int kNv = 2;
constexpr int kNc = 4 * kNv;
constexpr int64_t kFlush = 31;

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

template <int MR, int NV>
void Micro(const uint64_t* a, int64_t words, const uint64_t* panel, int64_t m, int64_t n0,
           int64_t ncols, const GemmOut& out) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                       1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  const uint64_t* ar[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) ar[r] = a + (m + r) * words;
  __m256i sum[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) sum[r][v] = zero;
  }
  for (int64_t w0 = 0; w0 < words; w0 += kFlush) {
    const int64_t w1 = words - w0 < kFlush ? words : w0 + kFlush;
    __m256i acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = zero;
    }
    for (int64_t w = w0; w < w1; ++w) {
      const uint64_t* p = panel + w * kNc;
      __m256i bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        bv[v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(p + 4 * v));
      }
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const __m256i av = _mm256_set1_epi64x(static_cast<long long>(ar[r][w]));
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          const __m256i x = _mm256_xor_si256(av, bv[v]);
          const __m256i lo = _mm256_and_si256(x, low4);
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low4);
          acc[r][v] = _mm256_add_epi8(acc[r][v], _mm256_shuffle_epi8(lut, lo));
          acc[r][v] = _mm256_add_epi8(acc[r][v], _mm256_shuffle_epi8(lut, hi));
        }
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        sum[r][v] = _mm256_add_epi64(sum[r][v], _mm256_sad_epu8(acc[r][v], zero));
      }
    }
  }
  alignas(32) uint64_t pops[4 * NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(pops + 4 * v), sum[r][v]);
    }
    for (int64_t c = 0; c < ncols; ++c) Store(out, m + r, n0 + c, pops[c]);
  }
}

template <int NV>
void TileNv(const uint64_t* a, int64_t words, const uint64_t* panel, int64_t m0, int64_t m1,
            int64_t n0, int64_t ncols, const GemmOut& out) {
  int64_t m = m0;
  for (; m + kMr <= m1; m += kMr) Micro<kMr, NV>(a, words, panel, m, n0, ncols, out);
  switch (m1 - m) {
    case 3:
      Micro<3, NV>(a, words, panel, m, n0, ncols, out);
      break;
    case 2:
      Micro<2, NV>(a, words, panel, m, n0, ncols, out);
      break;
    case 1:
      Micro<1, NV>(a, words, panel, m, n0, ncols, out);
      break;
    default:
      break;
  }
}

void Tile(const uint64_t* a, int64_t words, const uint64_t* panel, int64_t m0, int64_t m1,
          int64_t n0, int64_t ncols, const GemmOut& out) {
  if (ncols > 4) {
    TileNv<2>(a, words, panel, m0, m1, n0, ncols, out);
  } else {
    TileNv<1>(a, words, panel, m0, m1, n0, ncols, out);
  }
}

inline uint64_t SignBits8(const float* p) {
  const __m256 v = _mm256_loadu_ps(p);
  const __m256 neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
  return static_cast<uint32_t>(_mm256_movemask_ps(neg));
}

void Pack(const float* x, int64_t rows, int64_t k, int64_t ld, uint64_t* out) {
  const int64_t words = (k + 63) / 64;
  const int64_t full = k / 64;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ld;
    uint64_t* dst = out + r * words;
    for (int64_t w = 0; w < full; ++w) {
      const float* p = row + 64 * w;
      uint64_t word = 0;
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) word |= SignBits8(p + 8 * q) << (8 * q);
      dst[w] = word;
    }
    if (full < words) {
      const int64_t begin = 64 * full;
      const int64_t len = k - begin;
      uint64_t word = 0;
      int64_t j = 0;
      for (; j + 8 <= len; j += 8) word |= SignBits8(row + begin + j) << j;
      for (; j < len; ++j) word |= static_cast<uint64_t>(row[begin + j] < 0.0f) << j;
      dst[full] = word;
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

KernelSpec Avx2Kernel() { return KernelSpec{kNc, kMr, &Tile, &Pack, &Gemv}; }

}  // namespace internal
}  // namespace binmx

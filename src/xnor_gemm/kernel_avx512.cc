/*
 * binmx core: AVX-512 VPOPCNTDQ kernel path
 * (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vpopcntdq only).
 *
 * Tile: kMr = 6 rows of A x up to 4 zmm vectors of the B panel (kNc = 32 columns, 8 uint64
 * lanes per vector), 24 zmm accumulators. Per word w and row r, A[m + r][w] is broadcast and
 *     acc[r][v] += vpopcntq(broadcast(A[m + r][w]) ^ panel[w][8v .. 8v + 7])
 * Epilogue: vpmovqd to int32, dot = k - 2 * pop, masked stores for a partial panel; the float
 * output is (float(dot) * scale) + bias with separate roundings.
 * Pack: 16 floats per vcmpltps into a mask (x < 0: +-0.0 and NaN give 0), 4 masks per word.
 */
#include <immintrin.h>

#include "kernels.h"

namespace binmx {
namespace internal {
namespace {

constexpr int kMr = 6;
constexpr int kNv = 4;
constexpr int kNc = 8 * kNv;

template <int MR, int NV>
void Micro(const uint64_t* a, int64_t words, const uint64_t* panel, int64_t m, int64_t n0,
           int64_t ncols, const GemmOut& out) {
  __m512i acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_si512();
  }
  const uint64_t* ar[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) ar[r] = a + (m + r) * words;
  for (int64_t w = 0; w < words; ++w) {
    const uint64_t* p = panel + w * kNc;
    __m512i bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_si512(p + 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512i av = _mm512_set1_epi64(static_cast<long long>(ar[r][w]));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        acc[r][v] = _mm512_add_epi64(acc[r][v], _mm512_popcnt_epi64(_mm512_xor_si512(av, bv[v])));
      }
    }
  }
  const __m256i kv = _mm256_set1_epi32(static_cast<int32_t>(out.k));
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    const int64_t row = m + r;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const int64_t left = ncols - 8 * v;
      const __mmask8 mask =
          left >= 8 ? static_cast<__mmask8>(0xff) : static_cast<__mmask8>((1u << left) - 1u);
      const __m256i pop = _mm512_maskz_cvtepi64_epi32(static_cast<__mmask8>(0xff), acc[r][v]);
      const __m256i dot = _mm256_sub_epi32(kv, _mm256_add_epi32(pop, pop));
      const int64_t offset = row * out.ldc + n0 + 8 * v;
      if (out.ci != nullptr) {
        _mm256_mask_storeu_epi32(out.ci + offset, mask, dot);
      } else {
        const __m256 s = _mm256_set1_ps(out.scale != nullptr ? out.scale[row] : 1.0f);
        const __m256 o = _mm256_set1_ps(out.bias != nullptr ? out.bias[row] : 0.0f);
        const __m256 prod = _mm256_mul_ps(_mm256_cvtepi32_ps(dot), s);
        _mm256_mask_storeu_ps(out.cf + offset, mask, _mm256_add_ps(prod, o));
      }
    }
  }
}

template <int NV>
void TileNv(const uint64_t* a, int64_t words, const uint64_t* panel, int64_t m0, int64_t m1,
            int64_t n0, int64_t ncols, const GemmOut& out) {
  int64_t m = m0;
  for (; m + kMr <= m1; m += kMr) Micro<kMr, NV>(a, words, panel, m, n0, ncols, out);
  switch (m1 - m) {
    case 5:
      Micro<5, NV>(a, words, panel, m, n0, ncols, out);
      break;
    case 4:
      Micro<4, NV>(a, words, panel, m, n0, ncols, out);
      break;
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
  switch ((ncols + 7) / 8) {
    case 4:
      TileNv<4>(a, words, panel, m0, m1, n0, ncols, out);
      break;
    case 3:
      TileNv<3>(a, words, panel, m0, m1, n0, ncols, out);
      break;
    case 2:
      TileNv<2>(a, words, panel, m0, m1, n0, ncols, out);
      break;
    case 1:
      TileNv<1>(a, words, panel, m0, m1, n0, ncols, out);
      break;
    default:
      break;
  }
}

inline uint64_t SignBits16(const float* x, __mmask16 load_mask) {
  const __m512 v = _mm512_maskz_loadu_ps(load_mask, x);
  return _mm512_mask_cmp_ps_mask(load_mask, v, _mm512_setzero_ps(), _CMP_LT_OQ);
}

void Pack(const float* x, int64_t rows, int64_t k, int64_t ld, uint64_t* out) {
  const int64_t words = (k + 63) / 64;
  const int64_t full = k / 64;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ld;
    uint64_t* dst = out + r * words;
    for (int64_t w = 0; w < full; ++w) {
      const float* p = row + 64 * w;
      const __m512 zero = _mm512_setzero_ps();
      const uint64_t b0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p), zero, _CMP_LT_OQ);
      const uint64_t b1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + 16), zero, _CMP_LT_OQ);
      const uint64_t b2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + 32), zero, _CMP_LT_OQ);
      const uint64_t b3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + 48), zero, _CMP_LT_OQ);
      dst[w] = b0 | (b1 << 16) | (b2 << 32) | (b3 << 48);
    }
    if (full < words) {
      const int64_t len = k - 64 * full;
      const float* p = row + 64 * full;
      uint64_t word = 0;
      for (int q = 0; q < 4 && 16 * q < len; ++q) {
        const int64_t n = len - 16 * q < 16 ? len - 16 * q : 16;
        const __mmask16 mask = static_cast<__mmask16>((1u << n) - 1u);
        word |= SignBits16(p + 16 * q, mask) << (16 * q);
      }
      dst[full] = word;
    }
  }
}

uint64_t SumLanes(__m512i v) {  // (GCC 12's extract / reduce intrinsics warn under -Wall)
  alignas(64) uint64_t t[8];
  _mm512_store_si512(t, v);
  return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

// Eight rows at a time: 8 words per vpopcntq (a masked load for the tail), then the eight
// accumulators' lane sums by an add tree of unpacks and 128-bit shuffles (lane r = row r), and
// a vector epilogue. Leftover rows go one by one.
void Gemv(const uint64_t* a, int64_t words, const uint64_t* b, int64_t m0, int64_t m1,
          const GemmOut& out) {
  const int64_t full = words / 8 * 8;
  const __mmask8 tail = static_cast<__mmask8>((1u << (words - full)) - 1u);
  int64_t m = m0;
  for (; m + 8 <= m1; m += 8) {
    const uint64_t* r0 = a + m * words;
    __m512i acc[8];
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) acc[r] = _mm512_setzero_si512();
    for (int64_t w = 0; w < full; w += 8) {
      const __m512i bv = _mm512_loadu_si512(b + w);
#pragma GCC unroll 8
      for (int r = 0; r < 8; ++r) {
        const __m512i x = _mm512_xor_si512(_mm512_loadu_si512(r0 + r * words + w), bv);
        acc[r] = _mm512_add_epi64(acc[r], _mm512_popcnt_epi64(x));
      }
    }
    if (tail != 0) {
      const __m512i bv = _mm512_maskz_loadu_epi64(tail, b + full);
#pragma GCC unroll 8
      for (int r = 0; r < 8; ++r) {
        const __m512i x =
            _mm512_xor_si512(_mm512_maskz_loadu_epi64(tail, r0 + r * words + full), bv);
        acc[r] = _mm512_add_epi64(acc[r], _mm512_popcnt_epi64(x));
      }
    }
    // (The maskz forms with all lanes set: GCC 12's plain forms warn under -Wall.)
    // Pairs: lane 2c + e of p[i] = half-sum of row 2i + e over 128-bit chunk c.
    __m512i pr[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      pr[i] = _mm512_add_epi64(_mm512_maskz_unpacklo_epi64(0xff, acc[2 * i], acc[2 * i + 1]),
                               _mm512_maskz_unpackhi_epi64(0xff, acc[2 * i], acc[2 * i + 1]));
    }
    // Chunks: fold chunks (0, 1) and (2, 3) of two pair vectors into one.
    const auto fold = [](__m512i x, __m512i y) {
      return _mm512_add_epi64(_mm512_maskz_shuffle_i64x2(0xff, x, y, 0x88),
                              _mm512_maskz_shuffle_i64x2(0xff, x, y, 0xdd));
    };
    const __m512i q0 = fold(pr[0], pr[1]), q1 = fold(pr[2], pr[3]);
    const __m512i pop = fold(q0, q1);  // lane r: row m + r
    const __m256i pop32 = _mm512_maskz_cvtepi64_epi32(0xff, pop);
    const __m256i dot = _mm256_sub_epi32(_mm256_set1_epi32(static_cast<int32_t>(out.k)),
                                         _mm256_add_epi32(pop32, pop32));
    if (out.ci != nullptr) {
      if (out.ldc == 1) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.ci + m), dot);
      } else {
        alignas(32) int32_t d[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(d), dot);
        for (int r = 0; r < 8; ++r) out.ci[(m + r) * out.ldc] = d[r];
      }
    } else {
      const __m256 s = out.scale != nullptr ? _mm256_loadu_ps(out.scale + m) : _mm256_set1_ps(1.0f);
      const __m256 o = out.bias != nullptr ? _mm256_loadu_ps(out.bias + m) : _mm256_set1_ps(0.0f);
      const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(dot), s), o);
      if (out.ldc == 1) {
        _mm256_storeu_ps(out.cf + m, v);
      } else {
        alignas(32) float d[8];
        _mm256_store_ps(d, v);
        for (int r = 0; r < 8; ++r) out.cf[(m + r) * out.ldc] = d[r];
      }
    }
  }
  for (; m < m1; ++m) {
    const uint64_t* r0 = a + m * words;
    __m512i acc = _mm512_setzero_si512();
    for (int64_t w = 0; w < full; w += 8) {
      acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(r0 + w),
                                                                       _mm512_loadu_si512(b + w))));
    }
    if (tail != 0) {
      acc = _mm512_add_epi64(
          acc, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_maskz_loadu_epi64(tail, r0 + full),
                                                    _mm512_maskz_loadu_epi64(tail, b + full))));
    }
    const int32_t dot = static_cast<int32_t>(out.k - 2 * static_cast<int64_t>(SumLanes(acc)));
    if (out.ci != nullptr) {
      out.ci[m * out.ldc] = dot;
    } else {
      const float sc = out.scale != nullptr ? out.scale[m] : 1.0f;
      const float o = out.bias != nullptr ? out.bias[m] : 0.0f;
      const float prod = static_cast<float>(dot) * sc;
      out.cf[m * out.ldc] = prod + o;
    }
  }
}

}  // namespace

KernelSpec Avx512Kernel() { return KernelSpec{kNc, kMr, &Tile, &Pack, &Gemv}; }

}  // namespace internal
}  // namespace binmx

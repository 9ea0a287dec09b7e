/*
 * binmx core: AVX-512 k-bit kernel path (compiled with -mavx512f -mavx512bw -mavx512vl
 * -mavx512vpopcntdq -mavx512vnni; contract in kbit_kernels.h). The int8 tile runs only where
 * the CPU has AVX512_VNNI (kbit.cc checks).
 *
 * Bit-serial tile: 4 pixels x 2 zmm of filters (16 filters, 64-bit lanes), per word the
 *   2 x kw weight planes loaded once and each pixel's ka planes broadcast:
 *     acc[p][v] += vpopcntq(broadcast(x_i) AND w_j[v]) << (i + j)
 * Int8 tile: 4 pixels x 4 zmm of filters (64 filters, 32-bit lanes):
 *     acc[p][v] = vpdpbusd(acc[p][v], broadcast(4 u8 levels of p), 4 s8 weights of 16 filters)
 * Planes: vptestmb of 64 level bytes against 1 << i gives word wd of plane i directly.
 * Levels: 8 floats -> double, max(x, 0) (NaN -> 0), min(., 1), times A (exact), vrndscalepd to
 *   nearest even, to int32, to u8. Epilogue: 8 filters a step, int32 -> double, D * ds -> float.
 */
#include <immintrin.h>

#include "kbit_kernels.h"

namespace binmx {
namespace internal {
namespace {

template <int MR, int KA, int KW>
void BitSerialMicro(const uint64_t* x, int64_t words, const uint64_t* w, int64_t fs, int32_t* r,
                    int64_t rs) {
  constexpr int kNv = 2;
  __m512i acc[MR][kNv];
#pragma GCC unroll 4
  for (int p = 0; p < MR; ++p) {
    acc[p][0] = _mm512_setzero_si512();
    acc[p][1] = _mm512_setzero_si512();
  }
  for (int64_t wd = 0; wd < words; ++wd) {
    __m512i wv[kNv][KW];
#pragma GCC unroll 4
    for (int j = 0; j < KW; ++j) {
      const uint64_t* wp = w + (wd * KW + j) * fs;
      wv[0][j] = _mm512_loadu_si512(wp);
      wv[1][j] = _mm512_loadu_si512(wp + 8);
    }
#pragma GCC unroll 4
    for (int p = 0; p < MR; ++p) {
      const uint64_t* xp = x + (p * words + wd) * KA;
#pragma GCC unroll 4
      for (int i = 0; i < KA; ++i) {
        const __m512i b = _mm512_set1_epi64(static_cast<long long>(xp[i]));
#pragma GCC unroll 2
        for (int v = 0; v < kNv; ++v) {
#pragma GCC unroll 4
          for (int j = 0; j < KW; ++j) {
            __m512i c = _mm512_popcnt_epi64(_mm512_and_si512(b, wv[v][j]));
            if (i + j > 0) c = _mm512_slli_epi64(c, i + j);
            acc[p][v] = _mm512_add_epi64(acc[p][v], c);
          }
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < MR; ++p) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(r + p * rs), _mm512_cvtepi64_epi32(acc[p][0]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(r + p * rs + 8),
                        _mm512_cvtepi64_epi32(acc[p][1]));
  }
}

template <int KA, int KW>
void BitSerialFixed(const uint64_t* x, int64_t np, int64_t words, const uint64_t* w, int64_t nf,
                    int64_t fs, int32_t* r, int64_t rs) {
  for (int64_t f = 0; f < nf; f += 16) {
    int64_t p = 0;
    for (; p + 4 <= np; p += 4) {
      BitSerialMicro<4, KA, KW>(x + p * words * KA, words, w + f, fs, r + p * rs + f, rs);
    }
    for (; p < np; ++p) {
      BitSerialMicro<1, KA, KW>(x + p * words * KA, words, w + f, fs, r + p * rs + f, rs);
    }
  }
}

template <int KA>
void BitSerialKa(const uint64_t* x, int64_t np, int64_t words, const uint64_t* w, int kw,
                 int64_t nf, int64_t fs, int32_t* r, int64_t rs) {
  switch (kw) {
    case 1:
      return BitSerialFixed<KA, 1>(x, np, words, w, nf, fs, r, rs);
    case 2:
      return BitSerialFixed<KA, 2>(x, np, words, w, nf, fs, r, rs);
    case 3:
      return BitSerialFixed<KA, 3>(x, np, words, w, nf, fs, r, rs);
    default:
      return BitSerialFixed<KA, 4>(x, np, words, w, nf, fs, r, rs);
  }
}

void BitSerialTile(const uint64_t* x, int64_t np, int64_t words, int ka, const uint64_t* w,
                   int kw, int64_t nf, int64_t fs, int32_t* r, int64_t rs) {
  switch (ka) {
    case 2:
      return BitSerialKa<2>(x, np, words, w, kw, nf, fs, r, rs);
    case 3:
      return BitSerialKa<3>(x, np, words, w, kw, nf, fs, r, rs);
    default:
      return BitSerialKa<4>(x, np, words, w, kw, nf, fs, r, rs);
  }
}

template <int MR, int NV>
void Int8Micro(const uint32_t* x, int64_t kq, const uint32_t* w, int64_t fs, int32_t* r,
               int64_t rs) {
  __m512i acc[MR][NV];
#pragma GCC unroll 4
  for (int p = 0; p < MR; ++p) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[p][v] = _mm512_setzero_si512();
  }
  for (int64_t k = 0; k < kq; ++k) {
    __m512i wv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_si512(w + k * fs + 16 * v);
#pragma GCC unroll 4
    for (int p = 0; p < MR; ++p) {
      const __m512i b = _mm512_set1_epi32(static_cast<int>(x[p * kq + k]));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[p][v] = _mm512_dpbusd_epi32(acc[p][v], b, wv[v]);
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < MR; ++p) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_storeu_si512(r + p * rs + 16 * v, acc[p][v]);
  }
}

template <int NV>
void Int8Cols(const uint32_t* x, int64_t np, int64_t kq, const uint32_t* w, int64_t fs,
              int32_t* r, int64_t rs) {
  int64_t p = 0;
  for (; p + 4 <= np; p += 4) Int8Micro<4, NV>(x + p * kq, kq, w, fs, r + p * rs, rs);
  for (; p < np; ++p) Int8Micro<1, NV>(x + p * kq, kq, w, fs, r + p * rs, rs);
}

void Int8Tile(const uint32_t* x, int64_t np, int64_t kq, const uint32_t* w, int64_t nf,
              int64_t fs, int32_t* r, int64_t rs) {
  int64_t f = 0;
  for (; f + 64 <= nf; f += 64) Int8Cols<4>(x, np, kq, w + f, fs, r + f, rs);
  for (; f < nf; f += 16) Int8Cols<1>(x, np, kq, w + f, fs, r + f, rs);
}

void Planes(const uint8_t* row, int64_t n, int ka, uint64_t* out) {
  const int64_t full = n / 64;
  for (int64_t wd = 0; wd < full; ++wd) {
    const __m512i v = _mm512_loadu_si512(row + wd * 64);
    for (int i = 0; i < ka; ++i) {
      out[wd * ka + i] = _mm512_test_epi8_mask(v, _mm512_set1_epi8(static_cast<char>(1 << i)));
    }
  }
  const int64_t rest = n - full * 64;
  if (rest > 0) {
    const __mmask64 m = (~uint64_t{0}) >> (64 - rest);
    const __m512i v = _mm512_maskz_loadu_epi8(m, row + full * 64);
    for (int i = 0; i < ka; ++i) {
      out[full * ka + i] = _mm512_test_epi8_mask(v, _mm512_set1_epi8(static_cast<char>(1 << i)));
    }
  }
}

void Levels(const float* x, int64_t n, int ka, uint8_t* out) {
  const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0);
  const __m512d a_levels = _mm512_set1_pd(static_cast<double>((1 << ka) - 1));
  int64_t i = 0;
  for (; i < n; i += 8) {
    const int64_t left = n - i;
    const __mmask8 m = left >= 8 ? static_cast<__mmask8>(0xFF)
                                 : static_cast<__mmask8>((1u << left) - 1u);
    const __m256 xf = _mm256_maskz_loadu_ps(m, x + i);
    __m512d d = _mm512_cvtps_pd(xf);
    d = _mm512_max_pd(d, zero);  // second operand when either is NaN: NaN -> 0
    d = _mm512_min_pd(d, one);
    d = _mm512_roundscale_pd(_mm512_mul_pd(d, a_levels),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i q = _mm512_cvtpd_epi32(d);
    _mm_mask_storeu_epi8(out + i, m, _mm256_cvtepi32_epi8(q));
  }
}

void Epilogue(const int32_t* r, const int32_t* corr, int64_t rs, const int64_t* l, int64_t coff,
              int64_t np, int64_t nf, const double* ds, const float* bias, float* out,
              int64_t os) {
  const __m512d two = _mm512_set1_pd(2.0);
  for (int64_t p = 0; p < np; ++p) {
    const __m512d base = _mm512_set1_pd(static_cast<double>(coff * l[p]));
    for (int64_t f = 0; f < nf; f += 8) {
      const int64_t left = nf - f;
      const __mmask8 m = left >= 8 ? static_cast<__mmask8>(0xFF)
                                   : static_cast<__mmask8>((1u << left) - 1u);
      __m512d d = _mm512_cvtepi32_pd(_mm256_maskz_loadu_epi32(m, r + p * rs + f));
      d = _mm512_add_pd(_mm512_mul_pd(d, two), base);  // exact: integers below 2^53
      if (corr != nullptr) {
        d = _mm512_add_pd(d, _mm512_cvtepi32_pd(_mm256_maskz_loadu_epi32(m, corr + p * rs + f)));
      }
      __m256 v = _mm512_cvtpd_ps(_mm512_mul_pd(d, _mm512_maskz_loadu_pd(m, ds + f)));
      if (bias != nullptr) v = _mm256_add_ps(v, _mm256_maskz_loadu_ps(m, bias + f));
      _mm256_mask_storeu_ps(out + p * os + f, m, v);
    }
  }
}

}  // namespace

KbitSpec Avx512Kbit() {
  return KbitSpec{BitSerialTile, Int8Tile, Int8Format::kQuad, Planes, Levels, Epilogue};
}

}  // namespace internal
}  // namespace binmx

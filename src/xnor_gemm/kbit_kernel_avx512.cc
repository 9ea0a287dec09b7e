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

void BitSerialTile(const uint64_t* x, int64_t np, int64_t words, int ka, const uint64_t* w, int kw,
                   int64_t nf, int64_t fs, int32_t* r, int64_t rs) {
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
void Int8Cols(const uint32_t* x, int64_t np, int64_t kq, const uint32_t* w, int64_t fs, int32_t* r,
              int64_t rs) {
  int64_t p = 0;
  for (; p + 4 <= np; p += 4) Int8Micro<4, NV>(x + p * kq, kq, w, fs, r + p * rs, rs);
  for (; p < np; ++p) Int8Micro<1, NV>(x + p * kq, kq, w, fs, r + p * rs, rs);
}

void Int8Tile(const uint32_t* x, int64_t np, int64_t kq, const uint32_t* w, int64_t nf, int64_t fs,
              int32_t* r, int64_t rs) {
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
    const __mmask8 m =
        left >= 8 ? static_cast<__mmask8>(0xFF) : static_cast<__mmask8>((1u << left) - 1u);
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

// 16 x 16 byte transpose: v[r][j] -> v[j][r] (SSE2 unpacks: bytes, words, dwords, qwords).
void Transpose16(__m128i v[16]) {
  __m128i a[16], b[16], c[16];
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm_unpacklo_epi8(v[2 * i], v[2 * i + 1]);
    a[2 * i + 1] = _mm_unpackhi_epi8(v[2 * i], v[2 * i + 1]);
  }
  for (int q = 0; q < 4; ++q) {  // rows 4q .. 4q + 3
    const int o = 4 * q;
    b[o] = _mm_unpacklo_epi16(a[o], a[o + 2]);
    b[o + 1] = _mm_unpackhi_epi16(a[o], a[o + 2]);
    b[o + 2] = _mm_unpacklo_epi16(a[o + 1], a[o + 3]);
    b[o + 3] = _mm_unpackhi_epi16(a[o + 1], a[o + 3]);
  }
  for (int h = 0; h < 2; ++h) {  // rows 8h .. 8h + 7
    const int o = 8 * h;
    for (int k = 0; k < 4; ++k) {
      c[o + 2 * k] = _mm_unpacklo_epi32(b[o + k], b[o + k + 4]);
      c[o + 2 * k + 1] = _mm_unpackhi_epi32(b[o + k], b[o + k + 4]);
    }
  }
  for (int k = 0; k < 8; ++k) {
    v[2 * k] = _mm_unpacklo_epi64(c[k], c[k + 8]);
    v[2 * k + 1] = _mm_unpackhi_epi64(c[k], c[k + 8]);
  }
}

// Levels of 16 floats (mask: the valid ones; the others read as 0) as 16 bytes.
__m128i Level16(const float* x, __mmask16 m, int ka) {
  const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0);
  const __m512d a_levels = _mm512_set1_pd(static_cast<double>((1 << ka) - 1));
  const __m512 xf = _mm512_maskz_loadu_ps(m, x);
  __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(xf));
  __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(xf), 1)));
  lo = _mm512_min_pd(_mm512_max_pd(lo, zero), one);  // max: NaN -> 0
  hi = _mm512_min_pd(_mm512_max_pd(hi, zero), one);
  lo = _mm512_roundscale_pd(_mm512_mul_pd(lo, a_levels),
                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  hi = _mm512_roundscale_pd(_mm512_mul_pd(hi, a_levels),
                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512i q =
      _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtpd_epi32(lo)), _mm512_cvtpd_epi32(hi), 1);
  return _mm512_cvtepi32_epi8(q);
}

void LevelsNhwc(const float* x, int64_t c, int64_t stride, int64_t hw, int ka, uint8_t* out) {
  for (int64_t q0 = 0; q0 < hw; q0 += 16) {
    const int64_t nq = hw - q0 < 16 ? hw - q0 : 16;
    const __mmask16 m =
        nq == 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << nq) - 1u);
    int64_t c0 = 0;
    if (nq == 16) {
      for (; c0 + 16 <= c; c0 += 16) {
        __m128i v[16];
        for (int r = 0; r < 16; ++r) v[r] = Level16(x + (c0 + r) * stride + q0, m, ka);
        Transpose16(v);
        for (int r = 0; r < 16; ++r) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (q0 + r) * c + c0), v[r]);
        }
      }
    }
    for (; c0 < c; ++c0) {
      alignas(16) uint8_t tmp[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), Level16(x + c0 * stride + q0, m, ka));
      for (int64_t q = 0; q < nq; ++q) out[(q0 + q) * c + c0] = tmp[q];
    }
  }
}

int64_t RowSum(const uint8_t* row, int64_t n) {
  __m512i acc = _mm512_setzero_si512();
  for (int64_t i = 0; i < n; i += 64) {
    const int64_t left = n - i;
    const __mmask64 m = left >= 64 ? ~uint64_t{0} : (~uint64_t{0}) >> (64 - left);
    acc = _mm512_add_epi64(
        acc, _mm512_sad_epu8(_mm512_maskz_loadu_epi8(m, row + i), _mm512_setzero_si512()));
  }
  return _mm512_reduce_add_epi64(acc);
}

// One output: D = 2 R + coff L (+ corr), float(D * ds) + bias (the scalar form of the vectors).
float EpilogueOne(const int32_t* r, const int32_t* corr, int64_t rs, const int64_t* l, int64_t coff,
                  int64_t p, int64_t f, const double* ds, const float* bias) {
  double d = 2.0 * static_cast<double>(r[p * rs + f]) + static_cast<double>(coff * l[p]);
  if (corr != nullptr) d += static_cast<double>(corr[p * rs + f]);
  float v = static_cast<float>(d * ds[f]);
  if (bias != nullptr) v += bias[f];
  return v;
}

// 8 filters [f, f + 8) of pixel p.
__m256 EpilogueVec(const int32_t* r, const int32_t* corr, int64_t rs, const int64_t* l,
                   int64_t coff, int64_t p, int64_t f, const double* ds, const float* bias) {
  __m512d d =
      _mm512_cvtepi32_pd(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + p * rs + f)));
  d = _mm512_add_pd(_mm512_mul_pd(d, _mm512_set1_pd(2.0)),
                    _mm512_set1_pd(static_cast<double>(coff * l[p])));  // exact: below 2^53
  if (corr != nullptr) {
    d = _mm512_add_pd(d, _mm512_cvtepi32_pd(_mm256_loadu_si256(
                             reinterpret_cast<const __m256i*>(corr + p * rs + f))));
  }
  __m256 v = _mm512_cvtpd_ps(_mm512_mul_pd(d, _mm512_loadu_pd(ds + f)));
  if (bias != nullptr) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + f));
  return v;
}

// 8 x 8 float transpose: v[r][j] -> v[j][r].
void Transpose8(__m256 v[8]) {
  __m256 t[8], u[8];
  for (int k = 0; k < 4; ++k) {
    t[2 * k] = _mm256_unpacklo_ps(v[2 * k], v[2 * k + 1]);
    t[2 * k + 1] = _mm256_unpackhi_ps(v[2 * k], v[2 * k + 1]);
  }
  for (int h = 0; h < 2; ++h) {
    const int o = 4 * h;
    u[o] = _mm256_shuffle_ps(t[o], t[o + 2], 0x44);
    u[o + 1] = _mm256_shuffle_ps(t[o], t[o + 2], 0xEE);
    u[o + 2] = _mm256_shuffle_ps(t[o + 1], t[o + 3], 0x44);
    u[o + 3] = _mm256_shuffle_ps(t[o + 1], t[o + 3], 0xEE);
  }
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x20);
    v[k + 4] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x31);
  }
}

void Epilogue(const int32_t* r, const int32_t* corr, int64_t rs, const int64_t* l, int64_t coff,
              int64_t np, int64_t nf, const double* ds, const float* bias, float* out, int64_t os,
              bool transposed) {
  const int64_t nf8 = nf / 8 * 8;
  if (!transposed) {
    for (int64_t p = 0; p < np; ++p) {
      for (int64_t f = 0; f < nf8; f += 8) {
        _mm256_storeu_ps(out + p * os + f, EpilogueVec(r, corr, rs, l, coff, p, f, ds, bias));
      }
      for (int64_t f = nf8; f < nf; ++f) {
        out[p * os + f] = EpilogueOne(r, corr, rs, l, coff, p, f, ds, bias);
      }
    }
    return;
  }
  const int64_t np8 = np / 8 * 8;
  for (int64_t p0 = 0; p0 < np8; p0 += 8) {
    for (int64_t f = 0; f < nf8; f += 8) {
      __m256 v[8];
      for (int k = 0; k < 8; ++k) v[k] = EpilogueVec(r, corr, rs, l, coff, p0 + k, f, ds, bias);
      Transpose8(v);
      for (int k = 0; k < 8; ++k) _mm256_storeu_ps(out + (f + k) * os + p0, v[k]);
    }
    for (int64_t f = nf8; f < nf; ++f) {
      for (int64_t p = p0; p < p0 + 8; ++p) {
        out[f * os + p] = EpilogueOne(r, corr, rs, l, coff, p, f, ds, bias);
      }
    }
  }
  for (int64_t p = np8; p < np; ++p) {
    for (int64_t f = 0; f < nf; ++f) {
      out[f * os + p] = EpilogueOne(r, corr, rs, l, coff, p, f, ds, bias);
    }
  }
}

}  // namespace

KbitSpec Avx512Kbit() {
  return KbitSpec{BitSerialTile, Int8Tile, Int8Format::kQuad, Planes, Levels,
                  LevelsNhwc,    RowSum,   Epilogue};
}

}  // namespace internal
}  // namespace binmx

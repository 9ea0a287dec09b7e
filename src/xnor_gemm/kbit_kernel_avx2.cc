/*
 * binmx core: AVX2 k-bit kernel path (compiled with -mavx2 -mpopcnt; contract in
 * kbit_kernels.h).
 *
 * Bit-serial tile: no vector popcount in AVX2; filters innermost, scalar popcnt on
 *   (broadcast word AND 4 filter words) with 64-bit sums, 4 pixels a step.
 * Int8 tile (kPair weights: 2 s16 per 32-bit lane): the pixel's 4 u8 levels split into two
 *   pairs of 16-bit values, each broadcast and multiplied by 8 filters' pairs with vpmaddwd
 *   (16 x 16 -> 32-bit, pair summed; exact: |255 * 128 * 2| < 2^31). 4 pixels x 2 ymm.
 * Planes: vpmovmskb of (32 level bytes << (7 - i)) gives 32 bits of plane i.
 * Levels: 4 floats -> double, clip, times A, vroundpd to nearest even, to int32, to u8.
 * Epilogue: 4 filters a step in double.
 */
#include <immintrin.h>

#include "kbit_kernels.h"

namespace binmx {
namespace internal {
namespace {

template <int MR>
void BitSerialMicro(const uint64_t* x, int64_t words, int ka, const uint64_t* w, int kw, int64_t fs,
                    int32_t* r, int64_t rs) {
  // 16 filters x MR pixels of 64-bit sums.
  int64_t acc[MR][16];
  for (int p = 0; p < MR; ++p) {
    for (int f = 0; f < 16; ++f) acc[p][f] = 0;
  }
  for (int64_t wd = 0; wd < words; ++wd) {
    for (int j = 0; j < kw; ++j) {
      const uint64_t* wp = w + (wd * kw + j) * fs;
      for (int p = 0; p < MR; ++p) {
        const uint64_t* xp = x + (p * words + wd) * ka;
        for (int i = 0; i < ka; ++i) {
          const uint64_t b = xp[i];
          const int s = i + j;
          for (int f = 0; f < 16; ++f) {
            acc[p][f] += static_cast<int64_t>(_mm_popcnt_u64(b & wp[f])) << s;
          }
        }
      }
    }
  }
  for (int p = 0; p < MR; ++p) {
    for (int f = 0; f < 16; ++f) r[p * rs + f] = static_cast<int32_t>(acc[p][f]);
  }
}

void BitSerialTile(const uint64_t* x, int64_t np, int64_t words, int ka, const uint64_t* w, int kw,
                   int64_t nf, int64_t fs, int32_t* r, int64_t rs) {
  for (int64_t f = 0; f < nf; f += 16) {
    int64_t p = 0;
    for (; p + 4 <= np; p += 4) {
      BitSerialMicro<4>(x + p * words * ka, words, ka, w + f, kw, fs, r + p * rs + f, rs);
    }
    for (; p < np; ++p) {
      BitSerialMicro<1>(x + p * words * ka, words, ka, w + f, kw, fs, r + p * rs + f, rs);
    }
  }
}

template <int MR>
void Int8Micro(const uint32_t* x, int64_t kq, const uint32_t* w, int64_t fs, int32_t* r,
               int64_t rs) {
  __m256i acc[MR][2];
#pragma GCC unroll 4
  for (int p = 0; p < MR; ++p) acc[p][0] = acc[p][1] = _mm256_setzero_si256();
  for (int64_t k = 0; k < kq; ++k) {
    const __m256i w00 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 2 * k * fs));
    const __m256i w01 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 2 * k * fs + 8));
    const __m256i w10 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (2 * k + 1) * fs));
    const __m256i w11 =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (2 * k + 1) * fs + 8));
#pragma GCC unroll 4
    for (int p = 0; p < MR; ++p) {
      const uint32_t u = x[p * kq + k];
      const __m256i lo = _mm256_set1_epi32(static_cast<int>((u & 0xFFu) | ((u & 0xFF00u) << 8)));
      const __m256i hi =
          _mm256_set1_epi32(static_cast<int>(((u >> 16) & 0xFFu) | ((u >> 8) & 0xFF0000u)));
      acc[p][0] = _mm256_add_epi32(acc[p][0], _mm256_madd_epi16(lo, w00));
      acc[p][1] = _mm256_add_epi32(acc[p][1], _mm256_madd_epi16(lo, w01));
      acc[p][0] = _mm256_add_epi32(acc[p][0], _mm256_madd_epi16(hi, w10));
      acc[p][1] = _mm256_add_epi32(acc[p][1], _mm256_madd_epi16(hi, w11));
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < MR; ++p) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(r + p * rs), acc[p][0]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(r + p * rs + 8), acc[p][1]);
  }
}

void Int8Tile(const uint32_t* x, int64_t np, int64_t kq, const uint32_t* w, int64_t nf, int64_t fs,
              int32_t* r, int64_t rs) {
  for (int64_t f = 0; f < nf; f += 16) {
    int64_t p = 0;
    for (; p + 4 <= np; p += 4) Int8Micro<4>(x + p * kq, kq, w + f, fs, r + p * rs + f, rs);
    for (; p < np; ++p) Int8Micro<1>(x + p * kq, kq, w + f, fs, r + p * rs + f, rs);
  }
}

void Planes(const uint8_t* row, int64_t n, int ka, uint64_t* out) {
  const int64_t words = (n + 63) / 64;
  for (int64_t wd = 0; wd < words; ++wd) {
    alignas(32) uint8_t buf[64];
    const int64_t left = n - wd * 64;
    const uint8_t* src = row + wd * 64;
    if (left < 64) {
      for (int64_t t = 0; t < 64; ++t) buf[t] = t < left ? src[t] : 0;
      src = buf;
    }
    const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
    const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32));
    for (int i = 0; i < ka; ++i) {
      const __m128i sh = _mm_cvtsi32_si128(7 - i);
      // Bit i of every byte moved to bit 7 (16-bit shifts: neighbours' bits land lower).
      const uint32_t m0 = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_sll_epi16(v0, sh)));
      const uint32_t m1 = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_sll_epi16(v1, sh)));
      out[wd * ka + i] = static_cast<uint64_t>(m0) | (static_cast<uint64_t>(m1) << 32);
    }
  }
}

void Levels(const float* x, int64_t n, int ka, uint8_t* out) {
  const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0);
  const __m256d a_levels = _mm256_set1_pd(static_cast<double>((1 << ka) - 1));
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    __m256d d = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
    d = _mm256_max_pd(d, zero);  // second operand when either is NaN: NaN -> 0
    d = _mm256_min_pd(d, one);
    d = _mm256_round_pd(_mm256_mul_pd(d, a_levels), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    alignas(16) int32_t q[4];
    _mm_store_si128(reinterpret_cast<__m128i*>(q), _mm256_cvtpd_epi32(d));
    for (int t = 0; t < 4; ++t) out[i + t] = static_cast<uint8_t>(q[t]);
  }
  for (; i < n; ++i) {
    __m128d d = _mm_set_sd(static_cast<double>(x[i]));
    d = _mm_max_sd(d, _mm_setzero_pd());
    d = _mm_min_sd(d, _mm_set_sd(1.0));
    d = _mm_round_sd(d, _mm_mul_sd(d, _mm_set_sd(static_cast<double>((1 << ka) - 1))),
                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    out[i] = static_cast<uint8_t>(_mm_cvtsd_si32(d));
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

// Levels of n <= 16 floats as 16 bytes (lanes past n: 0).
__m128i Level16(const float* x, int64_t n, int ka) {
  alignas(32) float buf[16];
  const float* src = x;
  if (n < 16) {
    for (int64_t i = 0; i < 16; ++i) buf[i] = i < n ? x[i] : 0.0f;
    src = buf;
  }
  const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0);
  const __m256d a_levels = _mm256_set1_pd(static_cast<double>((1 << ka) - 1));
  __m128i q[4];
  for (int k = 0; k < 4; ++k) {
    __m256d d = _mm256_cvtps_pd(_mm_loadu_ps(src + 4 * k));
    d = _mm256_min_pd(_mm256_max_pd(d, zero), one);  // max: NaN -> 0
    d = _mm256_round_pd(_mm256_mul_pd(d, a_levels), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q[k] = _mm256_cvtpd_epi32(d);
  }
  // int32 (0..255) -> bytes: saturating packs keep the values.
  const __m128i w01 = _mm_packs_epi32(q[0], q[1]), w23 = _mm_packs_epi32(q[2], q[3]);
  return _mm_packus_epi16(w01, w23);
}

void LevelsNhwc(const float* x, int64_t c, int64_t stride, int64_t hw, int ka, uint8_t* out) {
  for (int64_t q0 = 0; q0 < hw; q0 += 16) {
    const int64_t nq = hw - q0 < 16 ? hw - q0 : 16;
    int64_t c0 = 0;
    if (nq == 16) {
      for (; c0 + 16 <= c; c0 += 16) {
        __m128i v[16];
        for (int r = 0; r < 16; ++r) v[r] = Level16(x + (c0 + r) * stride + q0, 16, ka);
        Transpose16(v);
        for (int r = 0; r < 16; ++r) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (q0 + r) * c + c0), v[r]);
        }
      }
    }
    for (; c0 < c; ++c0) {
      alignas(16) uint8_t tmp[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), Level16(x + c0 * stride + q0, nq, ka));
      for (int64_t q = 0; q < nq; ++q) out[(q0 + q) * c + c0] = tmp[q];
    }
  }
}

int64_t RowSum(const uint8_t* row, int64_t n) {
  __m256i acc = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc = _mm256_add_epi64(
        acc, _mm256_sad_epu8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i)),
                             _mm256_setzero_si256()));
  }
  alignas(32) int64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
  int64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n; ++i) s += row[i];
  return s;
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
  const __m256d two = _mm256_set1_pd(2.0);
  const __m256d base = _mm256_set1_pd(static_cast<double>(coff * l[p]));
  __m128 half[2];
  for (int h = 0; h < 2; ++h) {
    const int64_t i = p * rs + f + 4 * h;
    __m256d d = _mm256_cvtepi32_pd(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r + i)));
    d = _mm256_add_pd(_mm256_mul_pd(d, two), base);  // exact: integers below 2^53
    if (corr != nullptr) {
      d = _mm256_add_pd(
          d, _mm256_cvtepi32_pd(_mm_loadu_si128(reinterpret_cast<const __m128i*>(corr + i))));
    }
    half[h] = _mm256_cvtpd_ps(_mm256_mul_pd(d, _mm256_loadu_pd(ds + f + 4 * h)));
  }
  __m256 v = _mm256_insertf128_ps(_mm256_castps128_ps256(half[0]), half[1], 1);
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

KbitSpec Avx2Kbit() {
  return KbitSpec{BitSerialTile, Int8Tile, Int8Format::kPair, Planes, Levels,
                  LevelsNhwc,    RowSum,   Epilogue};
}

}  // namespace internal
}  // namespace binmx

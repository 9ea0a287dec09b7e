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
void BitSerialMicro(const uint64_t* x, int64_t words, int ka, const uint64_t* w, int kw,
                    int64_t fs, int32_t* r, int64_t rs) {
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

void BitSerialTile(const uint64_t* x, int64_t np, int64_t words, int ka, const uint64_t* w,
                   int kw, int64_t nf, int64_t fs, int32_t* r, int64_t rs) {
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
    const __m256i w10 =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (2 * k + 1) * fs));
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

void Int8Tile(const uint32_t* x, int64_t np, int64_t kq, const uint32_t* w, int64_t nf,
              int64_t fs, int32_t* r, int64_t rs) {
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

void Epilogue(const int32_t* r, const int32_t* corr, int64_t rs, const int64_t* l, int64_t coff,
              int64_t np, int64_t nf, const double* ds, const float* bias, float* out,
              int64_t os) {
  const __m256d two = _mm256_set1_pd(2.0);
  for (int64_t p = 0; p < np; ++p) {
    const double base_s = static_cast<double>(coff * l[p]);
    const __m256d base = _mm256_set1_pd(base_s);
    int64_t f = 0;
    for (; f + 4 <= nf; f += 4) {
      __m256d d = _mm256_cvtepi32_pd(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r + p * rs + f)));
      d = _mm256_add_pd(_mm256_mul_pd(d, two), base);  // exact: integers below 2^53
      if (corr != nullptr) {
        d = _mm256_add_pd(d, _mm256_cvtepi32_pd(_mm_loadu_si128(
                                 reinterpret_cast<const __m128i*>(corr + p * rs + f))));
      }
      __m128 v = _mm256_cvtpd_ps(_mm256_mul_pd(d, _mm256_loadu_pd(ds + f)));
      if (bias != nullptr) v = _mm_add_ps(v, _mm_loadu_ps(bias + f));
      _mm_storeu_ps(out + p * os + f, v);
    }
    for (; f < nf; ++f) {
      double d = 2.0 * static_cast<double>(r[p * rs + f]) + base_s;
      if (corr != nullptr) d += static_cast<double>(corr[p * rs + f]);
      float v = static_cast<float>(d * ds[f]);
      if (bias != nullptr) v += bias[f];
      out[p * os + f] = v;
    }
  }
}

}  // namespace

KbitSpec Avx2Kbit() {
  return KbitSpec{BitSerialTile, Int8Tile, Int8Format::kPair, Planes, Levels, Epilogue};
}

}  // namespace internal
}  // namespace binmx

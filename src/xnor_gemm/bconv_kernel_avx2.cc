/*
 * binmx core: AVX2 direct binary convolution kernel (compiled with -mavx2 -mpopcnt only).
 * Contract in bconv_kernels.h.
 *
 * Tile: kFb = 4 filters x kPv = 2 ymm vectors of 4 output pixels (uint64 lanes). Popcount by
 * nibble lookup: x = broadcast(W[f][k]) ^ X_k[q ..]; bytes = vpshufb(lut, x & 15) +
 * vpshufb(lut, (x >> 4) & 15), summed in byte lanes for up to 31 tap-words (<= 8 each, so
 * <= 248), then folded into uint64 lanes with vpsadbw. Epilogue as the AVX-512 kernel (masked
 * gather of the border correction, float(dot) * alpha + bias, masked store into NCHW).
 * Pack: 8 pixels per vcmpltps; the sign-extended compare lanes AND bit c are ORed into the
 * 8 pixel words.
 */
#include <immintrin.h>

#include "bconv_kernels.h"

namespace binmx {
namespace internal {
namespace {

constexpr int kFb = 4;
constexpr int kPv = 2;
constexpr int64_t kByteSteps = 31;

template <int FB, int PV>
void Micro(const BconvTile& t, int64_t f, int64_t q) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                       1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  __m256i acc[FB][PV];
  for (int r = 0; r < FB; ++r) {
    for (int v = 0; v < PV; ++v) acc[r][v] = zero;
  }
  const int64_t kwords = t.kwords;
  const uint64_t* wr = t.w + f * kwords;
  const uint64_t* xq = t.planes + q;
  for (int64_t k0 = 0; k0 < kwords; k0 += kByteSteps) {
    const int64_t k1 = kwords - k0 < kByteSteps ? kwords : k0 + kByteSteps;
    __m256i a8[FB][PV];
#pragma GCC unroll 4
    for (int r = 0; r < FB; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < PV; ++v) a8[r][v] = zero;
    }
    for (int64_t k = k0; k < k1; ++k) {
      const uint64_t* xp = xq + t.koff[k];
      __m256i xv[PV];
#pragma GCC unroll 4
      for (int v = 0; v < PV; ++v) {
        xv[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp + 4 * v));
      }
#pragma GCC unroll 4
      for (int r = 0; r < FB; ++r) {
        const __m256i wv = _mm256_set1_epi64x(static_cast<long long>(wr[r * kwords + k]));
#pragma GCC unroll 4
        for (int v = 0; v < PV; ++v) {
          const __m256i x = _mm256_xor_si256(wv, xv[v]);
          const __m256i lo = _mm256_and_si256(x, low4);
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low4);
          const __m256i c =
              _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
          a8[r][v] = _mm256_add_epi8(a8[r][v], c);
        }
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < FB; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < PV; ++v) {
        acc[r][v] = _mm256_add_epi64(acc[r][v], _mm256_sad_epu8(a8[r][v], zero));
      }
    }
  }
  const __m128i kv = _mm_set1_epi32(t.k_depth);
  const __m128i zero4 = _mm_setzero_si128();
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const __m128i lane_ids = _mm_setr_epi32(0, 1, 2, 3);
  for (int v = 0; v < PV; ++v) {
    const int64_t qv = q + 4 * v;
    const int64_t left = t.q1 - qv;
    if (left <= 0) break;
    const __m128i lanes =
        _mm_cmpgt_epi32(_mm_set1_epi32(static_cast<int>(left < 4 ? left : 4)), lane_ids);
    __m128i pidv = zero4, border = zero4;
    bool any_border = false;
    if (t.pid != nullptr) {
      pidv = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t.pid + qv));
      border = _mm_andnot_si128(_mm_cmpeq_epi32(pidv, zero4), lanes);
      any_border = _mm_movemask_epi8(border) != 0;
    }
    for (int r = 0; r < FB; ++r) {
      const int64_t fr = f + r;
      const __m128i pop = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(acc[r][v], even));
      __m128i dot = _mm_sub_epi32(kv, _mm_add_epi32(pop, pop));
      if (any_border) {
        const __m128i corr = _mm_mask_i32gather_epi32(
            zero4, reinterpret_cast<const int*>(t.ct + fr * t.ct_stride), pidv, border, 4);
        dot = _mm_sub_epi32(dot, corr);
      }
      const __m128 a = _mm_set1_ps(t.alpha != nullptr ? t.alpha[fr] : 1.0f);
      const __m128 b = _mm_set1_ps(t.bias != nullptr ? t.bias[fr] : 0.0f);
      __m128 y = _mm_add_ps(_mm_mul_ps(_mm_cvtepi32_ps(dot), a), b);
      const int64_t off = fr * t.out_fstride + qv;
      if (t.residual != nullptr) y = _mm_add_ps(y, _mm_maskload_ps(t.residual + off, lanes));
      _mm_maskstore_ps(t.out + off, lanes, y);
    }
  }
}

template <int FB>
void Rows(const BconvTile& t, int64_t f) {
  int64_t q = t.q0;
  for (; q + 4 * kPv <= t.q1; q += 4 * kPv) Micro<FB, kPv>(t, f, q);
  if (q < t.q1) Micro<FB, 1>(t, f, q), q += 4;
  if (q < t.q1) Micro<FB, 1>(t, f, q);
}

void Tile(const BconvTile& t) {
  int64_t f = t.f0;
  for (; f + kFb <= t.f1; f += kFb) Rows<kFb>(t, f);
  switch (t.f1 - f) {
    case 3:
      Rows<3>(t, f);
      break;
    case 2:
      Rows<2>(t, f);
      break;
    case 1:
      Rows<1>(t, f);
      break;
    default:
      break;
  }
}

__m256i LaneMask8(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

void Pack(const float* x, int64_t ch_stride, int n_ch, int64_t width, const float* scale,
          const float* shift, uint64_t* out) {
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t p0 = 0; p0 < width; p0 += 8) {
    const int64_t n = width - p0 < 8 ? width - p0 : 8;
    const __m256i lm = LaneMask8(n);
    __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
    __m256i bit = _mm256_set1_epi64x(1);
    const float* xp = x + p0;
    for (int c = 0; c < n_ch; ++c) {
      __m256 v =
          n == 8 ? _mm256_loadu_ps(xp + c * ch_stride) : _mm256_maskload_ps(xp + c * ch_stride, lm);
      if (scale != nullptr) {
        v = _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(scale[c])), _mm256_set1_ps(shift[c]));
      }
      const __m256i m = _mm256_castps_si256(_mm256_cmp_ps(v, zero, _CMP_LT_OQ));
      const __m256i m_lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(m));
      const __m256i m_hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(m, 1));
      acc0 = _mm256_or_si256(acc0, _mm256_and_si256(m_lo, bit));
      acc1 = _mm256_or_si256(acc1, _mm256_and_si256(m_hi, bit));
      bit = _mm256_slli_epi64(bit, 1);
    }
    if (n == 8) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + p0), acc0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + p0 + 4), acc1);
    } else {
      alignas(32) uint64_t tmp[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), acc0);
      _mm256_store_si256(reinterpret_cast<__m256i*>(tmp + 4), acc1);
      for (int64_t i = 0; i < n; ++i) out[p0 + i] = tmp[i];
    }
  }
}

void PackAffine(const float* x, int64_t rows, int64_t k, int64_t ld, const float* scale,
                const float* shift, uint64_t* out) {
  const int64_t words = (k + 63) / 64;
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ld;
    for (int64_t wd = 0; wd < words; ++wd) {
      uint64_t word = 0;
      for (int q = 0; q < 8; ++q) {
        const int64_t j0 = wd * 64 + 8 * q;
        if (j0 >= k) break;
        const int64_t n = k - j0 < 8 ? k - j0 : 8;
        const __m256i lm = LaneMask8(n);
        __m256 v = _mm256_maskload_ps(row + j0, lm);
        v = _mm256_add_ps(_mm256_mul_ps(v, _mm256_maskload_ps(scale + j0, lm)),
                          _mm256_maskload_ps(shift + j0, lm));
        const uint64_t m =
            static_cast<uint64_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ)));
        word |= (m & ((1u << n) - 1u)) << (8 * q);
      }
      out[r * words + wd] = word;
    }
  }
}

void PopRows(const uint64_t* w, int64_t rows, int64_t words, int32_t* pop) {
  for (int64_t r = 0; r < rows; ++r) {
    int64_t s = 0;
    for (int64_t i = 0; i < words; ++i) s += _mm_popcnt_u64(w[r * words + i]);
    pop[r] = static_cast<int32_t>(s);
  }
}

}  // namespace

BconvSpec Avx2Bconv() { return BconvSpec{&Tile, &Pack, &PackAffine, &PopRows}; }

}  // namespace internal
}  // namespace binmx

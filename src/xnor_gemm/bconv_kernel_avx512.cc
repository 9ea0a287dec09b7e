/*
 * binmx core: AVX-512 VPOPCNTDQ direct binary convolution kernel
 * (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vpopcntdq -mpopcnt only).
 * Contract in bconv_kernels.h.
 *
 * Tile: kFb = 8 filters x kPv = 3 zmm vectors of 8 output pixels (uint64 lanes), 24 zmm
 * accumulators. Per tap-word k: 3 unaligned loads of input words (24 consecutive pixels),
 * 8 weight-word broadcasts, and acc[r][v] += vpopcntq(broadcast(W[f + r][k]) ^ X_k[q + 8v ..]).
 * Epilogue per vector: vpmovqd, dot = K - 2 pop, border correction by a masked gather of
 * ct[f][pid[q]] on the lanes with pid != 0, float(dot) * alpha + bias (+ residual), masked
 * store straight into NCHW (8 consecutive pixels of one filter are 8 consecutive floats).
 * Pack: 16 pixels per vcmpltps (x * s + t < 0), the 16-bit mask ORs bit c into the 16 pixel
 * words with two masked vporq (pixel words live in 2 zmm).
 */
#include <immintrin.h>

#include "bconv_kernels.h"

namespace binmx {
namespace internal {
namespace {

constexpr int kFb = 8;
constexpr int kPv = 3;

template <int FB, int PV>
void Micro(const BconvTile& t, int64_t f, int64_t q) {
  __m512i acc[FB][PV];
#pragma GCC unroll 8
  for (int r = 0; r < FB; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < PV; ++v) acc[r][v] = _mm512_setzero_si512();
  }
  const int64_t kwords = t.kwords;
  const uint64_t* wr = t.w + f * kwords;
  const uint64_t* xq = t.planes + q;
  for (int64_t k = 0; k < kwords; ++k) {
    const uint64_t* xp = xq + t.koff[k];
    __m512i xv[PV];
#pragma GCC unroll 4
    for (int v = 0; v < PV; ++v) xv[v] = _mm512_loadu_si512(xp + 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < FB; ++r) {
      const __m512i wv = _mm512_set1_epi64(static_cast<long long>(wr[r * kwords + k]));
#pragma GCC unroll 4
      for (int v = 0; v < PV; ++v) {
        acc[r][v] = _mm512_add_epi64(acc[r][v], _mm512_popcnt_epi64(_mm512_xor_si512(wv, xv[v])));
      }
    }
  }
  const __m256i kv = _mm256_set1_epi32(t.k_depth);
  const __m256i zero = _mm256_setzero_si256();
#pragma GCC unroll 4
  for (int v = 0; v < PV; ++v) {
    const int64_t qv = q + 8 * v;
    const int64_t left = t.q1 - qv;
    if (left <= 0) break;
    const __mmask8 mask = left >= 8 ? static_cast<__mmask8>(0xff)
                                    : static_cast<__mmask8>((1u << left) - 1u);
    __m256i pidv = zero;
    __mmask8 border = 0;
    if (t.pid != nullptr) {
      pidv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.pid + qv));
      border = _mm256_mask_cmpneq_epi32_mask(mask, pidv, zero);
    }
#pragma GCC unroll 8
    for (int r = 0; r < FB; ++r) {
      const int64_t fr = f + r;
      const __m256i pop = _mm512_maskz_cvtepi64_epi32(static_cast<__mmask8>(0xff), acc[r][v]);
      __m256i dot = _mm256_sub_epi32(kv, _mm256_add_epi32(pop, pop));
      if (border != 0) {
        const __m256i corr =
            _mm256_mmask_i32gather_epi32(zero, border, pidv, t.ct + fr, 4);
        dot = _mm256_sub_epi32(dot, corr);
      }
      const __m256 a = _mm256_set1_ps(t.alpha != nullptr ? t.alpha[fr] : 1.0f);
      const __m256 b = _mm256_set1_ps(t.bias != nullptr ? t.bias[fr] : 0.0f);
      __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(dot), a), b);
      const int64_t off = fr * t.out_fstride + qv;
      if (t.residual != nullptr) y = _mm256_add_ps(y, _mm256_maskz_loadu_ps(mask, t.residual + off));
      _mm256_mask_storeu_ps(t.out + off, mask, y);
    }
  }
}

template <int FB>
void Rows(const BconvTile& t, int64_t f) {
  int64_t q = t.q0;
  for (; q + 8 * kPv <= t.q1; q += 8 * kPv) Micro<FB, kPv>(t, f, q);
  const int64_t left = t.q1 - q;
  if (left > 16) {
    Micro<FB, 3>(t, f, q);
  } else if (left > 8) {
    Micro<FB, 2>(t, f, q);
  } else if (left > 0) {
    Micro<FB, 1>(t, f, q);
  }
}

void Tile(const BconvTile& t) {
  int64_t f = t.f0;
  for (; f + kFb <= t.f1; f += kFb) Rows<kFb>(t, f);
  switch (t.f1 - f) {
    case 7:
      Rows<7>(t, f);
      break;
    case 6:
      Rows<6>(t, f);
      break;
    case 5:
      Rows<5>(t, f);
      break;
    case 4:
      Rows<4>(t, f);
      break;
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

void Pack(const float* x, int64_t ch_stride, int n_ch, int64_t width, const float* scale,
          const float* shift, uint64_t* out) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t p0 = 0; p0 < width; p0 += 16) {
    const int64_t n = width - p0 < 16 ? width - p0 : 16;
    const __mmask16 lm = static_cast<__mmask16>((1u << n) - 1u);
    __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
    __m512i bit = _mm512_set1_epi64(1);
    const float* xp = x + p0;
    if (scale != nullptr) {
      for (int c = 0; c < n_ch; ++c) {
        __m512 v = _mm512_maskz_loadu_ps(lm, xp + c * ch_stride);
        v = _mm512_add_ps(_mm512_mul_ps(v, _mm512_set1_ps(scale[c])), _mm512_set1_ps(shift[c]));
        const __mmask16 m = _mm512_mask_cmp_ps_mask(lm, v, zero, _CMP_LT_OQ);
        acc0 = _mm512_mask_or_epi64(acc0, static_cast<__mmask8>(m), acc0, bit);
        acc1 = _mm512_mask_or_epi64(acc1, static_cast<__mmask8>(m >> 8), acc1, bit);
        bit = _mm512_add_epi64(bit, bit);
      }
    } else {
      for (int c = 0; c < n_ch; ++c) {
        const __m512 v = _mm512_maskz_loadu_ps(lm, xp + c * ch_stride);
        const __mmask16 m = _mm512_mask_cmp_ps_mask(lm, v, zero, _CMP_LT_OQ);
        acc0 = _mm512_mask_or_epi64(acc0, static_cast<__mmask8>(m), acc0, bit);
        acc1 = _mm512_mask_or_epi64(acc1, static_cast<__mmask8>(m >> 8), acc1, bit);
        bit = _mm512_add_epi64(bit, bit);
      }
    }
    _mm512_mask_storeu_epi64(out + p0, static_cast<__mmask8>(lm), acc0);
    if (n > 8) _mm512_mask_storeu_epi64(out + p0 + 8, static_cast<__mmask8>(lm >> 8), acc1);
  }
}

void PackAffine(const float* x, int64_t rows, int64_t k, int64_t ld, const float* scale,
                const float* shift, uint64_t* out) {
  const int64_t words = (k + 63) / 64;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ld;
    for (int64_t wd = 0; wd < words; ++wd) {
      uint64_t word = 0;
      for (int q = 0; q < 4; ++q) {
        const int64_t j0 = wd * 64 + 16 * q;
        if (j0 >= k) break;
        const int64_t n = k - j0 < 16 ? k - j0 : 16;
        const __mmask16 lm = static_cast<__mmask16>((1u << n) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(lm, row + j0);
        v = _mm512_add_ps(_mm512_mul_ps(v, _mm512_maskz_loadu_ps(lm, scale + j0)),
                          _mm512_maskz_loadu_ps(lm, shift + j0));
        const uint64_t m = _mm512_mask_cmp_ps_mask(lm, v, zero, _CMP_LT_OQ);
        word |= m << (16 * q);
      }
      out[r * words + wd] = word;
    }
  }
}

void PopRows(const uint64_t* w, int64_t rows, int64_t words, int32_t* pop) {
  if (words >= 8) {
    for (int64_t r = 0; r < rows; ++r) {
      const uint64_t* row = w + r * words;
      __m512i acc = _mm512_setzero_si512();
      for (int64_t i = 0; i < words; i += 8) {
        const int64_t n = words - i < 8 ? words - i : 8;
        const __mmask8 m = static_cast<__mmask8>((1u << n) - 1u);
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_maskz_loadu_epi64(m, row + i)));
      }
      alignas(64) uint64_t lanes[8];
      _mm512_store_si512(lanes, acc);
      uint64_t sum = 0;
      for (int i = 0; i < 8; ++i) sum += lanes[i];
      pop[r] = static_cast<int32_t>(sum);
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    int64_t s = 0;
    for (int64_t i = 0; i < words; ++i) s += _mm_popcnt_u64(w[r * words + i]);
    pop[r] = static_cast<int32_t>(s);
  }
}

}  // namespace

BconvSpec Avx512Bconv() { return BconvSpec{&Tile, &Pack, &PackAffine, &PopRows}; }

}  // namespace internal
}  // namespace binmx

/*
 * binmx core: AVX2 direct bit-serial convolution kernel (compiled with -mavx2 -mpopcnt only).
 * Contract in bsconv_kernels.h.
 *
 * Tile: 2 filters x 2 ymm vectors of 4 output pixels (uint64 lanes). Popcount by nibble
 * lookup, x = X_a[v] & broadcast(W_b[f + r][k]); bytes = vpshufb(lut, x & 15) +
 * vpshufb(lut, (x >> 4) & 15), summed in byte lanes per shift s = a + b (at most
 * min(ka, kw) pairs share a shift, so a step adds <= 8 min(ka, kw) to a byte: kSteps steps
 * stay below 256), then folded into the uint64 sums with vpsadbw << s.
 * Epilogue per vector of 4 pixels: vpermd to int32, D = 2 R - B l (+ a masked gather of the
 * border table by pid), then D, or float(double(D) * ds) + bias, masked store into NCHW.
 * Pack: 8 pixels a step, levels in double (exact, as the AVX-512 kernel), plane bits shifted
 * into the pixels' 64-bit words.
 */
#include <immintrin.h>

#include "bsconv_kernels.h"

namespace binmx {
namespace internal {
namespace {

constexpr int kFb = 2;
constexpr int kPv = 2;

template <int KA, int KW, int PV>
void Micro(const BsconvTile& t, int64_t f, int64_t q) {
  constexpr int kNs = KA + KW - 1;
  constexpr int kMinKk = KA < KW ? KA : KW;
  constexpr int64_t kSteps = 255 / (8 * kMinKk);
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                       1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  __m256i acc[kFb][PV];
  for (int r = 0; r < kFb; ++r) {
    for (int v = 0; v < PV; ++v) acc[r][v] = zero;
  }
  const int64_t kwords = t.kwords, ps = t.pstride;
  const uint64_t* wr = t.w + f * kwords * KW;
  const uint64_t* xq = t.planes + q;
  for (int64_t k0 = 0; k0 < kwords; k0 += kSteps) {
    const int64_t k1 = kwords - k0 < kSteps ? kwords : k0 + kSteps;
    __m256i a8[kNs][kFb][PV];
#pragma GCC unroll 8
    for (int s = 0; s < kNs; ++s) {
#pragma GCC unroll 2
      for (int r = 0; r < kFb; ++r) {
#pragma GCC unroll 2
        for (int v = 0; v < PV; ++v) a8[s][r][v] = zero;
      }
    }
    for (int64_t k = k0; k < k1; ++k) {
      const uint64_t* xp = xq + t.koff[k];
      __m256i xv[KA][PV];
#pragma GCC unroll 4
      for (int a = 0; a < KA; ++a) {
#pragma GCC unroll 2
        for (int v = 0; v < PV; ++v) {
          xv[a][v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp + a * ps + 4 * v));
        }
      }
#pragma GCC unroll 2
      for (int r = 0; r < kFb; ++r) {
#pragma GCC unroll 4
        for (int b = 0; b < KW; ++b) {
          const __m256i wv =
              _mm256_set1_epi64x(static_cast<long long>(wr[(r * KW + b) * kwords + k]));
#pragma GCC unroll 4
          for (int a = 0; a < KA; ++a) {
#pragma GCC unroll 2
            for (int v = 0; v < PV; ++v) {
              const __m256i x = _mm256_and_si256(wv, xv[a][v]);
              const __m256i lo = _mm256_and_si256(x, low4);
              const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low4);
              const __m256i c =
                  _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
              a8[a + b][r][v] = _mm256_add_epi8(a8[a + b][r][v], c);
            }
          }
        }
      }
    }
#pragma GCC unroll 8
    for (int s = 0; s < kNs; ++s) {
#pragma GCC unroll 2
      for (int r = 0; r < kFb; ++r) {
#pragma GCC unroll 2
        for (int v = 0; v < PV; ++v) {
          const __m256i sad = _mm256_sad_epu8(a8[s][r][v], zero);
          acc[r][v] = _mm256_add_epi64(acc[r][v], s == 0 ? sad : _mm256_slli_epi64(sad, s));
        }
      }
    }
  }
  const __m128i bv = _mm_set1_epi32(t.b_max);
  const __m128i zero4 = _mm_setzero_si128();
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const __m128i lane_ids = _mm_setr_epi32(0, 1, 2, 3);
  for (int v = 0; v < PV; ++v) {
    const int64_t qv = q + 4 * v;
    const int64_t left = t.q1 - qv;
    if (left <= 0) break;
    const __m128i lanes =
        _mm_cmpgt_epi32(_mm_set1_epi32(static_cast<int>(left < 4 ? left : 4)), lane_ids);
    const __m128i bl =
        _mm_mullo_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t.l + qv)), bv);
    __m128i pidv = zero4, border = zero4;
    bool any_border = false;
    if (t.pid != nullptr) {
      pidv = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t.pid + qv));
      border = _mm_andnot_si128(_mm_cmpeq_epi32(pidv, zero4), lanes);
      any_border = _mm_movemask_epi8(border) != 0;
    }
    for (int r = 0; r < kFb; ++r) {
      const int64_t fr = f + r;
      if (fr >= t.f1) break;
      const __m128i rv = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(acc[r][v], even));
      __m128i d = _mm_sub_epi32(_mm_add_epi32(rv, rv), bl);
      if (any_border) {
        d = _mm_add_epi32(
            d, _mm_mask_i32gather_epi32(zero4, t.ct + fr * t.ct_stride, pidv, border, 4));
      }
      const int64_t o = fr * t.out_fstride + qv;
      if (t.out_dot != nullptr) {
        _mm_maskstore_epi32(t.out_dot + o, lanes, d);
      } else {
        __m128 y = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtepi32_pd(d), _mm256_set1_pd(t.ds[fr])));
        if (t.bias != nullptr) y = _mm_add_ps(y, _mm_set1_ps(t.bias[fr]));
        _mm_maskstore_ps(t.out + o, lanes, y);
      }
    }
  }
}

template <int KA, int KW>
void TileKK(const BsconvTile& t) {
  for (int64_t f = t.f0; f < t.f1; f += kFb) {
    int64_t q = t.q0;
    for (; q + 4 * kPv <= t.q1; q += 4 * kPv) Micro<KA, KW, kPv>(t, f, q);
    if (q < t.q1) Micro<KA, KW, 1>(t, f, q), q += 4;
    if (q < t.q1) Micro<KA, KW, 1>(t, f, q);
  }
}

template <int KA>
void TileKa(const BsconvTile& t) {
  switch (t.kwb) {
    case 1:
      return TileKK<KA, 1>(t);
    case 2:
      return TileKK<KA, 2>(t);
    case 3:
      return TileKK<KA, 3>(t);
    default:
      return TileKK<KA, 4>(t);
  }
}

void Tile(const BsconvTile& t) {
  switch (t.ka) {
    case 2:
      return TileKa<2>(t);
    case 3:
      return TileKa<3>(t);
    default:
      return TileKa<4>(t);
  }
}

__m256i LaneMask8(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Levels of 4 doubles as int32: rint(A * min(1, max(0, d))), NaN -> 0 (maxpd returns its
// second operand on NaN).
__m128i Level4(__m256d d, __m256d a_levels) {
  d = _mm256_min_pd(_mm256_max_pd(d, _mm256_setzero_pd()), _mm256_set1_pd(1.0));
  d = _mm256_round_pd(_mm256_mul_pd(d, a_levels), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm256_cvtpd_epi32(d);
}

void Pack(const float* x, int64_t ch_stride, int n_ch, int64_t width, int ka, const float*,
          uint64_t* out, int64_t out_stride, int32_t* sums) {
  const __m256d a_levels = _mm256_set1_pd(static_cast<double>((1 << ka) - 1));
  const __m128i one = _mm_set1_epi32(1);
  for (int64_t p0 = 0; p0 < width; p0 += 8) {
    const int64_t n = width - p0 < 8 ? width - p0 : 8;
    const __m256i lm = LaneMask8(n);
    __m256i acc[4][2];
    for (int a = 0; a < 4; ++a) acc[a][0] = acc[a][1] = _mm256_setzero_si256();
    __m128i s_lo = _mm_setzero_si128(), s_hi = _mm_setzero_si128();
    const float* xp = x + p0;
    for (int c = 0; c < n_ch; ++c) {
      const __m256 v =
          n == 8 ? _mm256_loadu_ps(xp + c * ch_stride) : _mm256_maskload_ps(xp + c * ch_stride, lm);
      const __m128i l_lo = Level4(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), a_levels);
      const __m128i l_hi = Level4(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), a_levels);
      s_lo = _mm_add_epi32(s_lo, l_lo);
      s_hi = _mm_add_epi32(s_hi, l_hi);
      const __m128i cnt = _mm_cvtsi32_si128(c);
      for (int a = 0; a < ka; ++a) {
        const __m128i b_lo = _mm_and_si128(_mm_srli_epi32(l_lo, a), one);
        const __m128i b_hi = _mm_and_si128(_mm_srli_epi32(l_hi, a), one);
        acc[a][0] = _mm256_or_si256(acc[a][0], _mm256_sll_epi64(_mm256_cvtepi32_epi64(b_lo), cnt));
        acc[a][1] = _mm256_or_si256(acc[a][1], _mm256_sll_epi64(_mm256_cvtepi32_epi64(b_hi), cnt));
      }
    }
    alignas(32) uint64_t tmp[8];
    for (int a = 0; a < ka; ++a) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), acc[a][0]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(tmp + 4), acc[a][1]);
      for (int64_t i = 0; i < n; ++i) out[a * out_stride + p0 + i] = tmp[i];
    }
    alignas(32) int32_t st[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(st), s_lo);
    _mm_store_si128(reinterpret_cast<__m128i*>(st + 4), s_hi);
    for (int64_t i = 0; i < n; ++i) sums[p0 + i] += st[i];
  }
}

}  // namespace

BsconvSpec Avx2Bsconv() { return BsconvSpec{&Tile, &Pack}; }

}  // namespace internal
}  // namespace binmx

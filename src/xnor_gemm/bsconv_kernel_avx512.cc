/*
 * binmx core: AVX-512 VPOPCNTDQ direct bit-serial convolution kernel (compiled with -mavx512f
 * -mavx512bw -mavx512vl -mavx512vpopcntdq only). Contract in bsconv_kernels.h.
 *
 * Tile: FB filters x PV zmm vectors of 8 output pixels (uint64 lanes). Per tap-word k: the
 * ka x PV plane vectors of the pixels loaded once, then per filter and weight plane b one
 * broadcast and acc[s][r][v] += vpopcntq(X_a[v] & broadcast(W_b[f + r][k])): one
 * accumulator set per shift s = a + b (a2/w1: 2 sets, a2/w2: 3), so no shift in the loop.
 * Epilogue per vector of 8 pixels: R = sum_s acc[s] << s, vpmovqd, D = 2 R - B l (+ the
 * border table permuted by pid), then D, or float(double(D) * ds) + bias, masked store straight
 * into NCHW (8 consecutive pixels of one filter are 8 consecutive outputs). The n < 8 pixels
 * past a tile's last whole vector go, where cheaper, to MicroK: lanes over 8 tap-words of one
 * pixel, 8 filters, the lanes summed at the end (as the binary kernel's tail).
 * Pack: 16 pixels a vector; levels by counting the exact thresholds (ka <= 3: 2^ka - 1 float
 * compares, plane bits as XORs of the nested masks) or in double (ka = 4, as
 * kbit_kernel_avx512.cc); plane bits ORed as bit c into dword lanes (channels 0-31 and 32-63
 * in two passes), interleaved at the end into the pixels' plane words, whose popcounts give
 * the level sums.
 */
#include <immintrin.h>

#include "bsconv_kernels.h"

// GCC 12's headers implement several unmasked intrinsics (vpermd, vpmovqd, ...) with a
// self-initialised "undefined" vector, which -Wall reports as (maybe-)uninitialized once
// inlined (GCC bug 105593, fixed in later releases).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace binmx {
namespace internal {
namespace {

// Register blocking per (ka, kw): one accumulator set per shift a + b (NS = ka + kw - 1: no
// shift in the loop, which measured 10-25% faster than one set and a shift per popcount even
// where it leaves fewer filters a block), PV = 2 pixel vectors, and the widest FB (dividing
// kBsconvFilterAlign) with ka * PV planes + FB * PV * NS accumulators <= 28 live zmm (+ the
// broadcast and a temporary).
template <int KA, int KW>
struct Blocking {
  static constexpr int kNs = KA + KW - 1;
  static constexpr int kPv = 2;
  static constexpr int kFb = (4 * kPv * kNs + kPv * KA <= 28)   ? 4
                             : (2 * kPv * kNs + kPv * KA <= 28) ? 2
                                                                : 1;
};

template <int KA, int KW, int FB, int PV, int NS>
void Micro(const BsconvTile& t, int64_t f, int64_t q) {
  static_assert(NS == KA + KW - 1, "one accumulator set per shift");
  __m512i acc[NS][FB][PV];
#pragma GCC unroll 4
  for (int s = 0; s < NS; ++s) {
#pragma GCC unroll 8
    for (int r = 0; r < FB; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < PV; ++v) acc[s][r][v] = _mm512_setzero_si512();
    }
  }
  const int64_t kwords = t.kwords, ps = t.pstride;
  const uint64_t* wr = t.w + f * kwords * KW;
  const uint64_t* xq = t.planes + q;
  for (int64_t k = 0; k < kwords; ++k) {
    const uint64_t* xp = xq + t.koff[k];
    const uint64_t* wk = wr + k;
    __m512i xv[KA][PV];
#pragma GCC unroll 4
    for (int a = 0; a < KA; ++a) {
#pragma GCC unroll 4
      for (int v = 0; v < PV; ++v) xv[a][v] = _mm512_loadu_si512(xp + a * ps + 8 * v);
    }
#pragma GCC unroll 8
    for (int r = 0; r < FB; ++r) {
#pragma GCC unroll 4
      for (int b = 0; b < KW; ++b) {
        const __m512i wv = _mm512_set1_epi64(static_cast<long long>(wk[(r * KW + b) * kwords]));
#pragma GCC unroll 4
        for (int a = 0; a < KA; ++a) {
#pragma GCC unroll 4
          for (int v = 0; v < PV; ++v) {
            const __m512i c = _mm512_popcnt_epi64(_mm512_and_si512(xv[a][v], wv));
            acc[a + b][r][v] = _mm512_add_epi64(acc[a + b][r][v], c);
          }
        }
      }
    }
  }
  const __m256i bv = _mm256_set1_epi32(t.b_max);
#pragma GCC unroll 4
  for (int v = 0; v < PV; ++v) {
    const int64_t qv = q + 8 * v;
    const int64_t left = t.q1 - qv;
    if (left <= 0) break;
    const __mmask8 mask =
        left >= 8 ? static_cast<__mmask8>(0xff) : static_cast<__mmask8>((1u << left) - 1u);
    const __m256i bl =
        _mm256_mullo_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.l + qv)), bv);
    __m256i pidv = _mm256_setzero_si256();
    __mmask8 border = 0;
    if (t.pid != nullptr) {
      pidv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.pid + qv));
      border = _mm256_mask_test_epi32_mask(mask, pidv, pidv);
    }
#pragma GCC unroll 8
    for (int r = 0; r < FB; ++r) {
      const int64_t fr = f + r;
      if (fr >= t.f1) break;
      __m512i sum = acc[0][r][v];
#pragma GCC unroll 4
      for (int s = 1; s < NS; ++s) {
        sum = _mm512_add_epi64(sum, _mm512_slli_epi64(acc[s][r][v], static_cast<unsigned>(s)));
      }
      const __m256i rv = _mm512_cvtepi64_epi32(sum);
      __m256i d = _mm256_sub_epi32(_mm256_add_epi32(rv, rv), bl);
      if (border != 0) {
        const int32_t* row = t.ct + fr * t.ct_stride;
        __m256i corr;
        if (t.n_patterns <= 16) {
          corr = _mm512_castsi512_si256(
              _mm512_permutexvar_epi32(_mm512_castsi256_si512(pidv), _mm512_loadu_si512(row)));
        } else {
          corr = _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), border, pidv, row, 4);
        }
        d = _mm256_add_epi32(d, corr);
      }
      const int64_t o = fr * t.out_fstride + qv;
      if (t.out_dot != nullptr) {
        _mm256_mask_storeu_epi32(t.out_dot + o, mask, d);
      } else {
        __m256 y = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtepi32_pd(d), _mm512_set1_pd(t.ds[fr])));
        if (t.bias != nullptr) y = _mm256_add_ps(y, _mm256_set1_ps(t.bias[fr]));
        _mm256_mask_storeu_ps(t.out + o, mask, y);
      }
    }
  }
}

// Sum of the 8 qword lanes of each of v[0..7], as lane r of the result.
__m512i SumLanes8(const __m512i* v) {
  __m512i a[4];
  for (int i = 0; i < 4; ++i) {  // lanes (2i, 2i+1) of v[2i], v[2i+1] per 128 bits
    a[i] = _mm512_add_epi64(_mm512_unpacklo_epi64(v[2 * i], v[2 * i + 1]),
                            _mm512_unpackhi_epi64(v[2 * i], v[2 * i + 1]));
  }
  __m512i b[2];
  for (int i = 0; i < 2; ++i) {
    b[i] = _mm512_add_epi64(_mm512_shuffle_i64x2(a[2 * i], a[2 * i + 1], 0x88),
                            _mm512_shuffle_i64x2(a[2 * i], a[2 * i + 1], 0xdd));
  }
  return _mm512_add_epi64(_mm512_shuffle_i64x2(b[0], b[1], 0x88),
                          _mm512_shuffle_i64x2(b[0], b[1], 0xdd));
}

constexpr int64_t kMaxTailWords = 144;  // tap-words per plane (32 KB of stack at ka = 4)

// Tail pixels: the n < 8 pixels past a tile's last whole pixel vector, vectorised over the
// tap-words instead (a pixel vector would spend 8 lanes on n pixels at every k). xb holds
// plane a of pixel p's tap-words at xb + (p * KA + a) * xstride, zero-padded to xstride
// (a multiple of 8); 8 filters' lanes are summed and the epilogue runs per pixel on a vector
// of the 8 filters.
template <int KA, int KW, int NP>
void MicroK(const BsconvTile& t, int64_t f, int64_t q, const uint64_t* xb, int64_t xstride) {
  constexpr int kFb = 8;
  __m512i acc[kFb][NP];
#pragma GCC unroll 8
  for (int r = 0; r < kFb; ++r) {
#pragma GCC unroll 2
    for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_setzero_si512();
  }
  const int64_t kwords = t.kwords;
  const uint64_t* wr = t.w + f * KW * kwords;
  for (int64_t j = 0; j < xstride; j += 8) {
    const int64_t left = kwords - j;
    const __mmask8 m =
        left >= 8 ? static_cast<__mmask8>(0xff) : static_cast<__mmask8>((1u << left) - 1u);
    __m512i xv[NP][KA];
#pragma GCC unroll 2
    for (int p = 0; p < NP; ++p) {
#pragma GCC unroll 4
      for (int a = 0; a < KA; ++a) xv[p][a] = _mm512_load_si512(xb + (p * KA + a) * xstride + j);
    }
#pragma GCC unroll 8
    for (int r = 0; r < kFb; ++r) {
#pragma GCC unroll 4
      for (int b = 0; b < KW; ++b) {
        const __m512i wv = _mm512_maskz_loadu_epi64(m, wr + (r * KW + b) * kwords + j);
#pragma GCC unroll 2
        for (int p = 0; p < NP; ++p) {
#pragma GCC unroll 4
          for (int a = 0; a < KA; ++a) {
            __m512i c = _mm512_popcnt_epi64(_mm512_and_si512(xv[p][a], wv));
            if (a + b > 0) c = _mm512_slli_epi64(c, static_cast<unsigned>(a + b));
            acc[r][p] = _mm512_add_epi64(acc[r][p], c);
          }
        }
      }
    }
  }
  const int64_t nf = t.f1 - f < kFb ? t.f1 - f : kFb;
  const int64_t fs = t.out_fstride;
#pragma GCC unroll 2
  for (int p = 0; p < NP; ++p) {
    __m512i v[kFb];
#pragma GCC unroll 8
    for (int r = 0; r < kFb; ++r) v[r] = acc[r][p];
    const __m256i rv = _mm512_cvtepi64_epi32(SumLanes8(v));
    const int64_t qp = q + p;
    __m256i d = _mm256_sub_epi32(_mm256_add_epi32(rv, rv), _mm256_set1_epi32(t.b_max * t.l[qp]));
    if (t.pid != nullptr && t.pid[qp] != 0) {
      alignas(32) int32_t c[kFb] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t r = 0; r < nf; ++r) c[r] = t.ct[(f + r) * t.ct_stride + t.pid[qp]];
      d = _mm256_add_epi32(d, _mm256_load_si256(reinterpret_cast<const __m256i*>(c)));
    }
    if (t.out_dot != nullptr) {
      alignas(32) int32_t y[kFb];
      _mm256_store_si256(reinterpret_cast<__m256i*>(y), d);
      for (int64_t r = 0; r < nf; ++r) t.out_dot[(f + r) * fs + qp] = y[r];
    } else {
      __m256 yv = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtepi32_pd(d), _mm512_loadu_pd(t.ds + f)));
      if (t.bias != nullptr) yv = _mm256_add_ps(yv, _mm256_loadu_ps(t.bias + f));
      alignas(32) float y[kFb];
      _mm256_store_ps(y, yv);
      for (int64_t r = 0; r < nf; ++r) t.out[(f + r) * fs + qp] = y[r];
    }
  }
}

// Whether the n < 8 tail pixels of a tile go to MicroK (n * ceil(kwords / 8) vector steps per
// filter) rather than to one pixel vector (kwords steps per filter).
bool UseTailK(int64_t n, int64_t kwords) {
  return n > 0 && kwords <= kMaxTailWords && 4 * n * ((kwords + 7) / 8) <= 3 * kwords;
}

template <int KA, int KW>
void TileKK(const BsconvTile& t) {
  using B = Blocking<KA, KW>;
  constexpr int kFb = B::kFb, kPv = B::kPv, kNs = B::kNs;
  static_assert(kPv == 2, "the remainder below is at most two vectors");
  const int64_t n_tail = (t.q1 - t.q0) % 8;
  const bool tail_k = UseTailK(n_tail, t.kwords);
  const int64_t q_end = tail_k ? t.q1 - n_tail : t.q1;  // whole vectors (or all) up to here
  for (int64_t f = t.f0; f < t.f1; f += kFb) {
    int64_t q = t.q0;
    for (; q + 8 * kPv <= q_end; q += 8 * kPv) Micro<KA, KW, kFb, kPv, kNs>(t, f, q);
    if (q + 8 < q_end) {  // 9 .. 15 pixels (no MicroK tail)
      Micro<KA, KW, kFb, 2, kNs>(t, f, q);
    } else if (q < q_end) {
      Micro<KA, KW, kFb, 1, kNs>(t, f, q);
    }
  }
  if (!tail_k) return;
  // Each tail pixel's plane words, gathered once for all the tile's filters.
  const int64_t xstride = (t.kwords + 7) / 8 * 8;
  alignas(64) uint64_t xb[7 * KA * kMaxTailWords];
  for (int64_t p = 0; p < n_tail; ++p) {
    for (int a = 0; a < KA; ++a) {
      uint64_t* dst = xb + (p * KA + a) * xstride;
      const uint64_t* src = t.planes + a * t.pstride + q_end + p;
      for (int64_t k = 0; k < t.kwords; ++k) dst[k] = src[t.koff[k]];
      for (int64_t k = t.kwords; k < xstride; ++k) dst[k] = 0;
    }
  }
  for (int64_t f = t.f0; f < t.f1; f += 8) {
    int64_t p = 0;
    for (; p + 2 <= n_tail; p += 2) {
      MicroK<KA, KW, 2>(t, f, q_end + p, xb + p * KA * xstride, xstride);
    }
    if (p < n_tail) MicroK<KA, KW, 1>(t, f, q_end + p, xb + p * KA * xstride, xstride);
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

// Levels of 16 floats (mask: the valid ones; the others read as 0) in dword lanes:
// rint(A * min(1, max(0, double(x)))), NaN -> 0 (max returns its second operand on NaN).
__m512i Level16(const float* x, __mmask16 m, __m512d a_levels) {
  const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0);
  const __m512 xf = _mm512_maskz_loadu_ps(m, x);
  __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(xf));
  __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(xf), 1)));
  lo = _mm512_min_pd(_mm512_max_pd(lo, zero), one);
  hi = _mm512_min_pd(_mm512_max_pd(hi, zero), one);
  lo = _mm512_roundscale_pd(_mm512_mul_pd(lo, a_levels),
                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  hi = _mm512_roundscale_pd(_mm512_mul_pd(hi, a_levels),
                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtpd_epi32(lo)), _mm512_cvtpd_epi32(hi),
                            1);
}

// Up to 64 pixels (NV vectors of 16) x n_ch <= 64 channels. Levels by counting thresholds
// for ka <= 3 (bit a of the count is the XOR of the compare masks of the thresholds k with
// (k + 1) % 2^a == 0, the masks being nested), in double for ka = 4. Sums from the plane
// words at the end: sum_a popcount(plane a) << a.
template <int KA, int NV>
void PackChunk(const float* xp, int64_t ch_stride, int n_ch, int64_t n, const float* thr,
               uint64_t* out, int64_t out_stride, int32_t* sums) {
  constexpr int kA = (1 << KA) - 1;
  constexpr bool kCount = KA <= 3;
  __m512 tv[kCount ? kA : 1];
#pragma GCC unroll 8
  for (int k = 0; k < (kCount ? kA : 1); ++k) tv[k] = _mm512_set1_ps(thr[k]);
  const __m512d a_levels = _mm512_set1_pd(static_cast<double>(kA));
  __mmask16 lm[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const int64_t left = n - 16 * v;
    lm[v] = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
  }
  __m512i acc[2][KA][NV];
  for (int half = 0; half < 2; ++half) {
    __m512i ac[KA][NV];
#pragma GCC unroll 4
    for (int a = 0; a < KA; ++a) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) ac[a][v] = _mm512_setzero_si512();
    }
    const int c1 = n_ch < 32 * (half + 1) ? n_ch : 32 * (half + 1);
    for (int c = 32 * half; c < c1; ++c) {
      const __m512i bit = _mm512_set1_epi32(static_cast<int>(1u << (c & 31)));
      const float* xc = xp + c * ch_stride;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        if constexpr (kCount) {
          const __m512 x = _mm512_maskz_loadu_ps(lm[v], xc + 16 * v);
          __mmask16 m[kA];
#pragma GCC unroll 8
          for (int k = 0; k < kA; ++k) m[k] = _mm512_cmp_ps_mask(x, tv[k], _CMP_GT_OQ);
          // Plane a's bit is the XOR of the masks m[k], (k + 1) % 2^a == 0: the first ORed
          // in, the others XORed (vector ops under the masks, no mask-register logic).
#pragma GCC unroll 4
          for (int a = 0; a < KA; ++a) {
            const int step = 1 << a;
            ac[a][v] = _mm512_mask_or_epi32(ac[a][v], m[step - 1], ac[a][v], bit);
#pragma GCC unroll 8
            for (int k = 2 * step - 1; k < kA; k += step) {
              ac[a][v] = _mm512_mask_xor_epi32(ac[a][v], m[k], ac[a][v], bit);
            }
          }
        } else {
          const __m512i la = Level16(xc + 16 * v, lm[v], a_levels);
#pragma GCC unroll 4
          for (int a = 0; a < KA; ++a) {
            const __mmask16 b = _mm512_test_epi32_mask(la, _mm512_set1_epi32(1 << a));
            ac[a][v] = _mm512_mask_or_epi32(ac[a][v], b, ac[a][v], bit);
          }
        }
      }
    }
#pragma GCC unroll 4
    for (int a = 0; a < KA; ++a) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[half][a][v] = ac[a][v];
    }
  }
  const __m512i idx0 = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
  const __m512i idx1 = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int a = 0; a < KA; ++a) {
      const __m512i ulo = _mm512_unpacklo_epi32(acc[0][a][v], acc[1][a][v]);
      const __m512i uhi = _mm512_unpackhi_epi32(acc[0][a][v], acc[1][a][v]);
      const __m512i w0 = _mm512_permutex2var_epi64(ulo, idx0, uhi);
      const __m512i w1 = _mm512_permutex2var_epi64(ulo, idx1, uhi);
      uint64_t* o = out + a * out_stride + 16 * v;
      _mm512_mask_storeu_epi64(o, static_cast<__mmask8>(lm[v]), w0);
      _mm512_mask_storeu_epi64(o + 8, static_cast<__mmask8>(lm[v] >> 8), w1);
      s0 = _mm512_add_epi64(s0,
                            _mm512_slli_epi64(_mm512_popcnt_epi64(w0), static_cast<unsigned>(a)));
      s1 = _mm512_add_epi64(s1,
                            _mm512_slli_epi64(_mm512_popcnt_epi64(w1), static_cast<unsigned>(a)));
    }
    const __m512i s = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(s0)),
                                         _mm512_cvtepi64_epi32(s1), 1);
    int32_t* sp = sums + 16 * v;
    _mm512_mask_storeu_epi32(sp, lm[v], _mm512_add_epi32(_mm512_maskz_loadu_epi32(lm[v], sp), s));
  }
}

template <int KA>
void PackKa(const float* x, int64_t ch_stride, int n_ch, int64_t width, const float* thr,
            uint64_t* out, int64_t out_stride, int32_t* sums) {
  for (int64_t p0 = 0; p0 < width; p0 += 64) {
    const int64_t n = width - p0 < 64 ? width - p0 : 64;
    const float* xp = x + p0;
    uint64_t* op = out + p0;
    int32_t* sp = sums + p0;
    switch ((n + 15) / 16) {
      case 4:
        PackChunk<KA, 4>(xp, ch_stride, n_ch, n, thr, op, out_stride, sp);
        break;
      case 3:
        PackChunk<KA, 3>(xp, ch_stride, n_ch, n, thr, op, out_stride, sp);
        break;
      case 2:
        PackChunk<KA, 2>(xp, ch_stride, n_ch, n, thr, op, out_stride, sp);
        break;
      default:
        PackChunk<KA, 1>(xp, ch_stride, n_ch, n, thr, op, out_stride, sp);
        break;
    }
  }
}

void Pack(const float* x, int64_t ch_stride, int n_ch, int64_t width, int ka, const float* thr,
          uint64_t* out, int64_t out_stride, int32_t* sums) {
  switch (ka) {
    case 2:
      return PackKa<2>(x, ch_stride, n_ch, width, thr, out, out_stride, sums);
    case 3:
      return PackKa<3>(x, ch_stride, n_ch, width, thr, out, out_stride, sums);
    default:
      return PackKa<4>(x, ch_stride, n_ch, width, thr, out, out_stride, sums);
  }
}

}  // namespace

BsconvSpec Avx512Bsconv() { return BsconvSpec{&Tile, &Pack}; }

}  // namespace internal
}  // namespace binmx

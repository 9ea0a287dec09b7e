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
 * Pack: 16 pixels per vcmpltps (x * s + t < 0), the 16-bit mask ORs bit c into 16 dword
 * lanes with one masked vpord (channels 0-31 and 32-63 in two zmm), interleaved at the end
 * into the 16 pixel words.
 */
#include <immintrin.h>

#include "bconv_kernels.h"

// GCC 12's headers implement several unmasked intrinsics (vpermd, vpmovqd, vcvtdq2ps,
// vpunpck*, vshufi64x2) with a self-initialised "undefined" vector, which -Wall reports as
// (maybe-)uninitialized once inlined (GCC bug 105593, fixed in later releases).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace binmx {
namespace internal {
namespace {

#ifndef BINMX_BCONV_AVX512_FB
#define BINMX_BCONV_AVX512_FB 8
#endif
#ifndef BINMX_BCONV_AVX512_PV
#define BINMX_BCONV_AVX512_PV 3
#endif
constexpr int kFb = BINMX_BCONV_AVX512_FB;
constexpr int kPv = BINMX_BCONV_AVX512_PV;

// Epilogue of 16 output pixels [qv, qv + 16) (a pair of accumulator vectors; hi may be null)
// for FB filters: pop -> int32 lanes by one vpermt2d, dot = K - 2 pop, border correction
// (a vpermd of the filter's 16-entry ct row by pid, or a gather past 16 patterns), then
// float(dot) * alpha + bias (+ residual), masked store into NCHW. The tile's fields are read
// into locals first (the stores could otherwise alias them, forcing reloads per filter).
template <int FB>
inline void Epilogue16(const BconvTile& t, int64_t f, int64_t qv, const __m512i* lo,
                       const __m512i* hi, int lo_stride) {
  const int64_t left = t.q1 - qv;
  const __mmask16 mask =
      left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i kv = _mm512_set1_epi32(t.k_depth);
  const float* alpha = t.alpha;
  const float* bias = t.bias;
  const float* residual = t.residual;
  const int64_t fstride = t.out_fstride;
  float* out = t.out + f * fstride + qv;
  __m512i dots[FB];
#pragma GCC unroll 8
  for (int r = 0; r < FB; ++r) {
    const __m512i pop = _mm512_permutex2var_epi32(
        lo[r * lo_stride], even, hi != nullptr ? hi[r * lo_stride] : _mm512_setzero_si512());
    dots[r] = _mm512_sub_epi32(kv, _mm512_add_epi32(pop, pop));
  }
  if (t.pid != nullptr) {
    const __m512i pidv = _mm512_maskz_loadu_epi32(mask, t.pid + qv);
    const __mmask16 border = _mm512_test_epi32_mask(pidv, pidv);
    if (border != 0) {
      const int32_t* row = t.ct + f * t.ct_stride;
      const int64_t cs = t.ct_stride;
      if (t.n_patterns <= 16) {
#pragma GCC unroll 8
        for (int r = 0; r < FB; ++r) {
          dots[r] = _mm512_sub_epi32(
              dots[r], _mm512_permutexvar_epi32(pidv, _mm512_loadu_si512(row + r * cs)));
        }
      } else {
#pragma GCC unroll 8
        for (int r = 0; r < FB; ++r) {
          dots[r] = _mm512_sub_epi32(
              dots[r],
              _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), border, pidv, row + r * cs, 4));
        }
      }
    }
  }
  __m512 a[FB], b[FB];
#pragma GCC unroll 8
  for (int r = 0; r < FB; ++r) {
    a[r] = alpha != nullptr ? _mm512_set1_ps(alpha[f + r]) : _mm512_set1_ps(1.0f);
    b[r] = bias != nullptr ? _mm512_set1_ps(bias[f + r]) : _mm512_setzero_ps();
  }
  if (residual == nullptr) {
#pragma GCC unroll 8
    for (int r = 0; r < FB; ++r) {
      const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dots[r]), a[r]), b[r]);
      _mm512_mask_storeu_ps(out + r * fstride, mask, y);
    }
  } else {
    const float* res = residual + f * fstride + qv;
#pragma GCC unroll 8
    for (int r = 0; r < FB; ++r) {
      __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dots[r]), a[r]), b[r]);
      y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, res + r * fstride));
      _mm512_mask_storeu_ps(out + r * fstride, mask, y);
    }
  }
}

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
#pragma GCC unroll 4
  for (int v = 0; v < PV; v += 2) {
    if (q + 8 * v >= t.q1) break;
    Epilogue16<FB>(t, f, q + 8 * v, &acc[0][v], v + 1 < PV ? &acc[0][v + 1] : nullptr, PV);
  }
}

template <int FB>
void Rows(const BconvTile& t, int64_t f) {
  int64_t q = t.q0;
  for (; q + 8 * kPv <= t.q1; q += 8 * kPv) Micro<FB, kPv>(t, f, q);
  const int64_t vecs = (t.q1 - q + 7) / 8;
  if (vecs >= 4) {
    Micro<FB, 4>(t, f, q);  // only when kPv > 4
  } else if (vecs == 3) {
    Micro<FB, 3>(t, f, q);
  } else if (vecs == 2) {
    Micro<FB, 2>(t, f, q);
  } else if (vecs == 1) {
    Micro<FB, 1>(t, f, q);
  }
}

// Sum of the 8 qword lanes of each of v[0..7], as lane r of the result.
__m512i SumLanes8(const __m512i* v) {
  // pairs: lane (2i, 2i+1) of v[r], v[r+1] -> one lane each, interleaved per 128 bits
  __m512i a[4];
  for (int i = 0; i < 4; ++i) {
    a[i] = _mm512_add_epi64(_mm512_unpacklo_epi64(v[2 * i], v[2 * i + 1]),
                            _mm512_unpackhi_epi64(v[2 * i], v[2 * i + 1]));
  }
  // a[i] 128-bit lane L = (v[2i] pair L, v[2i+1] pair L); combine lanes (0,1) and (2,3)
  __m512i b[2];
  for (int i = 0; i < 2; ++i) {
    b[i] = _mm512_add_epi64(_mm512_shuffle_i64x2(a[2 * i], a[2 * i + 1], 0x88),
                            _mm512_shuffle_i64x2(a[2 * i], a[2 * i + 1], 0xdd));
  }
  // b[i] 128-bit lanes: (a[2i] L0+L1, a[2i] L2+L3, a[2i+1] L0+L1, a[2i+1] L2+L3)
  const __m512i c = _mm512_add_epi64(_mm512_shuffle_i64x2(b[0], b[1], 0x88),
                                     _mm512_shuffle_i64x2(b[0], b[1], 0xdd));
  // c lanes: (v0, v1), (v2, v3), (v4, v5), (v6, v7) sums
  return c;
}

constexpr int64_t kMaxTailWords = 576;  // 4.5 KB of stack per tail pixel

// Tail pixels: the n < 8 pixels past a tile's last whole pixel vector, vectorised over the
// tap-words instead (a pixel vector would spend 8 lanes on n pixels at every k). xb holds each
// pixel's kwords input words, zero-padded to xstride (a multiple of 8) words:
//     pop[f][p] = sum_j popcount(W[f][8j .. 8j + 8) ^ xb[p][8j .. 8j + 8))
// (the weight row's last vector is masked to kwords, so the padding adds nothing); the 8 lanes
// are summed per (filter, pixel) and the epilogue runs on a vector of FB filters.
template <int FB, int NP>
void MicroK(const BconvTile& t, int64_t f, int64_t q, const uint64_t* xb, int64_t xstride) {
  __m512i acc[FB][NP];
#pragma GCC unroll 8
  for (int r = 0; r < FB; ++r) {
#pragma GCC unroll 4
    for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_setzero_si512();
  }
  const int64_t kwords = t.kwords;
  const uint64_t* wr = t.w + f * kwords;
  for (int64_t j = 0; j < xstride; j += 8) {
    const int64_t left = kwords - j;
    const __mmask8 m =
        left >= 8 ? static_cast<__mmask8>(0xff) : static_cast<__mmask8>((1u << left) - 1u);
    __m512i xv[NP];
#pragma GCC unroll 4
    for (int p = 0; p < NP; ++p) xv[p] = _mm512_load_si512(xb + p * xstride + j);
#pragma GCC unroll 8
    for (int r = 0; r < FB; ++r) {
      const __m512i wv = _mm512_maskz_loadu_epi64(m, wr + r * kwords + j);
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p) {
        acc[r][p] = _mm512_add_epi64(acc[r][p], _mm512_popcnt_epi64(_mm512_xor_si512(wv, xv[p])));
      }
    }
  }
  const __mmask8 fm = static_cast<__mmask8>((1u << FB) - 1u);
  const __m256i kv = _mm256_set1_epi32(t.k_depth);
  const __m256 a =
      t.alpha != nullptr ? _mm256_maskz_loadu_ps(fm, t.alpha + f) : _mm256_set1_ps(1.0f);
  const __m256 b = t.bias != nullptr ? _mm256_maskz_loadu_ps(fm, t.bias + f) : _mm256_setzero_ps();
  const int64_t fstride = t.out_fstride;
#pragma GCC unroll 4
  for (int p = 0; p < NP; ++p) {
    __m512i v[8];
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) v[r] = r < FB ? acc[r][p] : _mm512_setzero_si512();
    const __m256i pop = _mm512_cvtepi64_epi32(SumLanes8(v));
    __m256i dot = _mm256_sub_epi32(kv, _mm256_add_epi32(pop, pop));
    const int64_t qp = q + p;
    if (t.pid != nullptr && t.pid[qp] != 0) {
      alignas(32) int32_t c[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      const int32_t* col = t.ct + f * t.ct_stride + t.pid[qp];
      for (int r = 0; r < FB; ++r) c[r] = col[r * t.ct_stride];
      dot = _mm256_sub_epi32(dot, _mm256_load_si256(reinterpret_cast<const __m256i*>(c)));
    }
    alignas(32) float y[8];
    _mm256_store_ps(y, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(dot), a), b));
    float* out = t.out + f * fstride + qp;
    if (t.residual == nullptr) {
      for (int r = 0; r < FB; ++r) out[r * fstride] = y[r];
    } else {
      const float* res = t.residual + f * fstride + qp;
      for (int r = 0; r < FB; ++r) out[r * fstride] = y[r] + res[r * fstride];
    }
  }
}

template <int FB>
void TailRows(const BconvTile& t, int64_t f, int64_t q, const uint64_t* xb, int64_t xstride) {
  int64_t p = q;
  for (; p + 3 <= t.q1; p += 3) MicroK<FB, 3>(t, f, p, xb + (p - q) * xstride, xstride);
  if (t.q1 - p == 2) {
    MicroK<FB, 2>(t, f, p, xb + (p - q) * xstride, xstride);
  } else if (t.q1 - p == 1) {
    MicroK<FB, 1>(t, f, p, xb + (p - q) * xstride, xstride);
  }
}

// Whether the n < 8 tail pixels of a tile go to MicroK (n * ceil(kwords / 8) vector steps per
// filter) rather than to one pixel vector (kwords steps per filter).
bool UseTailK(int64_t n, int64_t kwords) {
  return n > 0 && kwords <= kMaxTailWords && 4 * n * ((kwords + 7) / 8) <= 3 * kwords;
}

void Tile(const BconvTile& t) {
  const int64_t n_tail = (t.q1 - t.q0) % 8;
  const bool tail_k = UseTailK(n_tail, t.kwords);
  BconvTile m = t;  // the whole pixel vectors (the whole tile without a MicroK tail)
  if (tail_k) m.q1 = t.q1 - n_tail;
  if (m.q1 > m.q0) {
    int64_t f = m.f0;
    for (; f + kFb <= m.f1; f += kFb) Rows<kFb>(m, f);
    switch (m.f1 - f) {
      case 7:
        Rows<7 % kFb>(m, f);
        break;
      case 6:
        Rows<6 % kFb>(m, f);
        break;
      case 5:
        Rows<5 % kFb>(m, f);
        break;
      case 4:
        Rows<4 % kFb>(m, f);
        break;
      case 3:
        Rows<3>(m, f);
        break;
      case 2:
        Rows<2>(m, f);
        break;
      case 1:
        Rows<1>(m, f);
        break;
      default:
        break;
    }
  }
  if (!tail_k) return;
  // Each tail pixel's input words, gathered once for all the tile's filters.
  const int64_t q = m.q1, xstride = (t.kwords + 7) / 8 * 8;
  alignas(64) uint64_t xb[7 * kMaxTailWords];
  for (int64_t p = 0; p < n_tail; ++p) {
    uint64_t* dst = xb + p * xstride;
    const uint64_t* src = t.planes + q + p;
    for (int64_t k = 0; k < t.kwords; ++k) dst[k] = src[t.koff[k]];
    for (int64_t k = t.kwords; k < xstride; ++k) dst[k] = 0;
  }
  int64_t f = t.f0;
  for (; f + 8 <= t.f1; f += 8) TailRows<8>(t, f, q, xb, xstride);
  switch (t.f1 - f) {
    case 7:
      TailRows<7>(t, f, q, xb, xstride);
      break;
    case 6:
      TailRows<6>(t, f, q, xb, xstride);
      break;
    case 5:
      TailRows<5>(t, f, q, xb, xstride);
      break;
    case 4:
      TailRows<4>(t, f, q, xb, xstride);
      break;
    case 3:
      TailRows<3>(t, f, q, xb, xstride);
      break;
    case 2:
      TailRows<2>(t, f, q, xb, xstride);
      break;
    case 1:
      TailRows<1>(t, f, q, xb, xstride);
      break;
    default:
      break;
  }
}

// Sign bits of up to 64 pixels (4 vectors of 16) x n_ch <= 64 channels, channel by channel
// (4 independent loads per channel keep several cache misses in flight): channel c ORs its
// compare mask into dword lanes (bit c of acc[0] for c < 32, bit c - 32 of acc[1]), one
// masked vpord per 16 pixels; then the two dword halves are interleaved into pixel words.
template <bool kAffine, int NV>
void PackChunk(const float* xp, int64_t ch_stride, int n_ch, int64_t n, const float* scale,
               const float* shift, uint64_t* out) {
  const __m512 zero = _mm512_setzero_ps();
  __mmask16 lm[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const int64_t left = n - 16 * v;
    lm[v] = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
  }
  __m512i acc[2][NV];
  for (int half = 0; half < 2; ++half) {
    __m512i a[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) a[v] = _mm512_setzero_si512();
    const int c1 = n_ch < 32 * (half + 1) ? n_ch : 32 * (half + 1);
    for (int c = 32 * half; c < c1; ++c) {
      const __m512i bit = _mm512_set1_epi32(static_cast<int>(1u << (c & 31)));
      const float* xc = xp + c * ch_stride;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        __m512 x = _mm512_maskz_loadu_ps(lm[v], xc + 16 * v);
        if (kAffine) {
          x = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(scale[c])), _mm512_set1_ps(shift[c]));
        }
        const __mmask16 m = _mm512_mask_cmp_ps_mask(lm[v], x, zero, _CMP_LT_OQ);
        a[v] = _mm512_mask_or_epi32(a[v], m, a[v], bit);
      }
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[half][v] = a[v];
  }
  const __m512i idx0 = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
  const __m512i idx1 = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const __m512i ulo = _mm512_unpacklo_epi32(acc[0][v], acc[1][v]);
    const __m512i uhi = _mm512_unpackhi_epi32(acc[0][v], acc[1][v]);
    _mm512_mask_storeu_epi64(out + 16 * v, static_cast<__mmask8>(lm[v]),
                             _mm512_permutex2var_epi64(ulo, idx0, uhi));
    _mm512_mask_storeu_epi64(out + 16 * v + 8, static_cast<__mmask8>(lm[v] >> 8),
                             _mm512_permutex2var_epi64(ulo, idx1, uhi));
  }
}

template <bool kAffine>
void PackImpl(const float* x, int64_t ch_stride, int n_ch, int64_t width, const float* scale,
              const float* shift, uint64_t* out) {
  for (int64_t p0 = 0; p0 < width; p0 += 64) {
    const int64_t n = width - p0 < 64 ? width - p0 : 64;
    switch ((n + 15) / 16) {
      case 4:
        PackChunk<kAffine, 4>(x + p0, ch_stride, n_ch, n, scale, shift, out + p0);
        break;
      case 3:
        PackChunk<kAffine, 3>(x + p0, ch_stride, n_ch, n, scale, shift, out + p0);
        break;
      case 2:
        PackChunk<kAffine, 2>(x + p0, ch_stride, n_ch, n, scale, shift, out + p0);
        break;
      default:
        PackChunk<kAffine, 1>(x + p0, ch_stride, n_ch, n, scale, shift, out + p0);
        break;
    }
  }
}

void Pack(const float* x, int64_t ch_stride, int n_ch, int64_t width, const float* scale,
          const float* shift, uint64_t* out) {
  if (scale != nullptr) {
    PackImpl<true>(x, ch_stride, n_ch, width, scale, shift, out);
  } else {
    PackImpl<false>(x, ch_stride, n_ch, width, scale, shift, out);
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
  int64_t r = 0;
  if (words >= 4) {
    const int64_t full = words / 8 * 8;
    const __mmask8 tail = static_cast<__mmask8>((1u << (words - full)) - 1u);
    for (; r + 8 <= rows; r += 8) {
      __m512i v[8];
      for (int i = 0; i < 8; ++i) {
        const uint64_t* row = w + (r + i) * words;
        __m512i acc = _mm512_setzero_si512();
        for (int64_t j = 0; j < full; j += 8) {
          acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_loadu_si512(row + j)));
        }
        if (tail != 0) {
          acc = _mm512_add_epi64(acc,
                                 _mm512_popcnt_epi64(_mm512_maskz_loadu_epi64(tail, row + full)));
        }
        v[i] = acc;
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(pop + r), _mm512_cvtepi64_epi32(SumLanes8(v)));
    }
  } else {
    // Short rows (up to 192 channels per tap): 8 rows = 8 * words consecutive words, popcounted
    // as whole vectors, then summed per row.
    for (; r + 8 <= rows; r += 8) {
      alignas(64) int64_t c[24];
      for (int64_t j = 0; j < words; ++j) {
        const __m512i v = _mm512_loadu_si512(w + r * words + 8 * j);
        _mm512_store_si512(c + 8 * j, _mm512_popcnt_epi64(v));
      }
      for (int i = 0; i < 8; ++i) {
        int64_t sum = 0;
        for (int64_t j = 0; j < words; ++j) sum += c[i * words + j];
        pop[r + i] = static_cast<int32_t>(sum);
      }
    }
  }
  for (; r < rows; ++r) {
    int64_t s = 0;
    for (int64_t i = 0; i < words; ++i) s += _mm_popcnt_u64(w[r * words + i]);
    pop[r] = static_cast<int32_t>(s);
  }
}

}  // namespace

BconvSpec Avx512Bconv() { return BconvSpec{&Tile, &Pack, &PackAffine, &PopRows}; }

}  // namespace internal
}  // namespace binmx

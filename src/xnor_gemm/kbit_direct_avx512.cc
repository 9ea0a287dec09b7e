/*
 * binmx core: AVX-512 kernels of the direct int8 convolution (compiled with -mavx512f
 * -mavx512bw -mavx512vl -mavx512vpopcntdq -mavx512vnni; contract in kbit_direct_kernels.h).
 * The row kernel runs only where the CPU has AVX512_VNNI (kbit_direct.cc checks).
 *
 * Row: per chunk of kDirectChunk output pixels, the im2col rows are built with one masked
 * 16 / 32 / 64-byte load (zeros past the segment) and one store per segment, in increasing
 * address order, so that each store's tail is overwritten by the next segment (the bytes past
 * the depth are zeros and meet zero weights); L = vpsadbw of the loaded segments.
 *
 * Tile: 6 pixels x 4 zmm of filters (64, 32-bit lanes),
 *     acc[p][v] = vpdpbusd(acc[p][v], broadcast(4 u8 levels of p), 4 s8 weights of 16 filters),
 * then D = 2 acc + coff L[p] and (D ^ neg) - neg.
 *
 * HMax / VMax: vpmaxsd, 16 filters a vector.
 *
 * Levels (c <= 4): 16 pixels a step; per channel 16 floats -> double, clip, times A, round to
 * nearest even, to int32 (as kbit_kernel_avx512.cc's); the channels or-ed into the bytes of
 * each pixel's int32, then packed to c bytes a pixel.
 *
 * Epilogue: 8 filters of a pixel a step, int32 -> double, times ds, to float, + bias, relu;
 * 8 x 8 transposes write 8 pixels of 8 filter rows.
 */
#include <immintrin.h>

#include <algorithm>

#include "kbit_direct_kernels.h"

namespace binmx {
namespace internal {
namespace {

constexpr int kMr = 6;

// acc + vpdpbusd(b, w). As inline assembly: GCC 12 keeps the intrinsic's accumulators of an
// unrolled tile in registers only with a copy per instruction (and spills from 5 pixels up).
inline __m512i Dp(__m512i acc, __m512i b, __m512i w) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(b), "v"(w));
  return acc;
}

template <int MR, int NV>
void Micro(const uint32_t* x, int64_t kq, const uint32_t* w, int64_t fs, const int32_t* cl,
           const int32_t* neg, int32_t* d) {
  __m512i acc[MR][NV];
#pragma GCC unroll 8
  for (int p = 0; p < MR; ++p) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[p][v] = _mm512_setzero_si512();
  }
  for (int64_t k = 0; k < kq; ++k) {
    __m512i wv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_si512(w + k * fs + 16 * v);
#pragma GCC unroll 8
    for (int p = 0; p < MR; ++p) {
      const __m512i b = _mm512_set1_epi32(static_cast<int>(x[p * kq + k]));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[p][v] = Dp(acc[p][v], b, wv[v]);
    }
  }
  __m512i nv[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    nv[v] = neg != nullptr ? _mm512_loadu_si512(neg + 16 * v) : _mm512_setzero_si512();
  }
#pragma GCC unroll 8
  for (int p = 0; p < MR; ++p) {
    const __m512i base = _mm512_set1_epi32(cl[p]);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      __m512i dv = _mm512_add_epi32(_mm512_slli_epi32(acc[p][v], 1), base);
      dv = _mm512_sub_epi32(_mm512_xor_si512(dv, nv[v]), nv[v]);
      _mm512_storeu_si512(d + p * fs + 16 * v, dv);
    }
  }
}

template <int NV>
void Cols(const uint32_t* x, int64_t np, int64_t kq, const uint32_t* w, int64_t fs,
          const int32_t* cl, const int32_t* neg, int32_t* d) {
  int64_t p = 0;
  for (; p + kMr <= np; p += kMr) Micro<kMr, NV>(x + p * kq, kq, w, fs, cl + p, neg, d + p * fs);
  x += p * kq;
  cl += p;
  d += p * fs;
  switch (np - p) {
    case 5:
      return Micro<5, NV>(x, kq, w, fs, cl, neg, d);
    case 4:
      return Micro<4, NV>(x, kq, w, fs, cl, neg, d);
    case 3:
      return Micro<3, NV>(x, kq, w, fs, cl, neg, d);
    case 2:
      return Micro<2, NV>(x, kq, w, fs, cl, neg, d);
    case 1:
      return Micro<1, NV>(x, kq, w, fs, cl, neg, d);
    default:
      return;
  }
}

// im2col rows of np pixels and their sums: segment i of pixel p (seg <= W bytes) from
// src0 + p * xstep + i * rstep to row p at i * seg, one masked W-byte load (zeros past seg)
// and store each; cl[p] = coff * (sum of the row's bytes), by vpsadbw on the loaded segments.
template <int W>
void BuildRows(const uint8_t* src0, int64_t np, int64_t xstep, int64_t rstep, int64_t kh,
               int64_t seg, uint8_t* rows, int64_t rb, int32_t coff, int32_t* cl) {
  const uint64_t m = seg >= 64 ? ~uint64_t{0} : (uint64_t{1} << seg) - 1;
  for (int64_t p = 0; p < np; ++p) {
    const uint8_t* src = src0 + p * xstep;
    uint8_t* dst = rows + p * rb;
    int64_t sum;
    if constexpr (W == 16) {
      __m128i acc = _mm_setzero_si128();
      for (int64_t i = 0; i < kh; ++i) {
        const __m128i v = _mm_maskz_loadu_epi8(static_cast<__mmask16>(m), src + i * rstep);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i * seg), v);
        acc = _mm_add_epi64(acc, _mm_sad_epu8(v, _mm_setzero_si128()));
      }
      sum = _mm_cvtsi128_si64(acc) + _mm_extract_epi64(acc, 1);
    } else if constexpr (W == 32) {
      __m256i acc = _mm256_setzero_si256();
      for (int64_t i = 0; i < kh; ++i) {
        const __m256i v = _mm256_maskz_loadu_epi8(static_cast<__mmask32>(m), src + i * rstep);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i * seg), v);
        acc = _mm256_add_epi64(acc, _mm256_sad_epu8(v, _mm256_setzero_si256()));
      }
      const __m128i h =
          _mm_add_epi64(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
      sum = _mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1);
    } else {
      __m512i acc = _mm512_setzero_si512();
      for (int64_t i = 0; i < kh; ++i) {
        const __m512i v = _mm512_maskz_loadu_epi8(m, src + i * rstep);
        _mm512_storeu_si512(dst + i * seg, v);
        acc = _mm512_add_epi64(acc, _mm512_sad_epu8(v, _mm512_setzero_si512()));
      }
      sum = _mm512_reduce_add_epi64(acc);
    }
    cl[p] = coff * static_cast<int32_t>(sum);
  }
}

void Row(const DirectRowArgs& a, int64_t oy, int64_t ox_begin, int64_t ox_end, uint8_t* rows,
         int32_t* d) {
  const int64_t seg = a.kw * a.c, rb = a.kq * 4;
  const int64_t rstep = a.dh * a.wp * a.c, xstep = a.sw * a.c;
  const uint8_t* base = a.img + oy * a.sh * a.wp * a.c;
  const int32_t coff = static_cast<int32_t>(a.coff);
  int32_t cl[kDirectChunk];
  for (int64_t ox0 = ox_begin; ox0 < ox_end; ox0 += kDirectChunk) {
    const int64_t np = std::min(kDirectChunk, ox_end - ox0);
    const uint8_t* src0 = base + ox0 * xstep;
    if (seg <= 16) {
      BuildRows<16>(src0, np, xstep, rstep, a.kh, seg, rows, rb, coff, cl);
    } else if (seg <= 32) {
      BuildRows<32>(src0, np, xstep, rstep, a.kh, seg, rows, rb, coff, cl);
    } else {
      BuildRows<64>(src0, np, xstep, rstep, a.kh, seg, rows, rb, coff, cl);
    }
    const uint32_t* x = reinterpret_cast<const uint32_t*>(rows);
    int32_t* dp = d + ox0 * a.fs;
    int64_t f = 0;
    for (; f + 64 <= a.fs; f += 64) {
      Cols<4>(x, np, a.kq, a.w + f, a.fs, cl, a.neg ? a.neg + f : nullptr, dp + f);
    }
    switch ((a.fs - f) / 16) {
      case 3:
        Cols<3>(x, np, a.kq, a.w + f, a.fs, cl, a.neg ? a.neg + f : nullptr, dp + f);
        break;
      case 2:
        Cols<2>(x, np, a.kq, a.w + f, a.fs, cl, a.neg ? a.neg + f : nullptr, dp + f);
        break;
      case 1:
        Cols<1>(x, np, a.kq, a.w + f, a.fs, cl, a.neg ? a.neg + f : nullptr, dp + f);
        break;
      default:
        break;
    }
  }
}

// dst[f] = max_{j < N} src[j * fs + f], f < fs (a multiple of 16).
template <int N>
void MaxOf(const int32_t* src, int64_t fs, int32_t* dst) {
  for (int64_t f = 0; f < fs; f += 16) {
    __m512i m = _mm512_loadu_si512(src + f);
#pragma GCC unroll 4
    for (int j = 1; j < N; ++j) m = _mm512_max_epi32(m, _mm512_loadu_si512(src + j * fs + f));
    _mm512_storeu_si512(dst + f, m);
  }
}

void HMax(const int32_t* d, int64_t ow, int64_t fs, int64_t k, int64_t s, int64_t pad, int64_t px0,
          int64_t px1, int32_t* hp) {
  for (int64_t px = px0; px < px1; ++px) {
    const int64_t x0 = std::max<int64_t>(px * s - pad, 0);
    const int64_t x1 = std::min(px * s - pad + k, ow);
    const int32_t* src = d + x0 * fs;
    int32_t* dst = hp + px * fs;
    switch (x1 - x0) {
      case 1:
        MaxOf<1>(src, fs, dst);
        break;
      case 2:
        MaxOf<2>(src, fs, dst);
        break;
      case 3:
        MaxOf<3>(src, fs, dst);
        break;
      case 4:
        MaxOf<4>(src, fs, dst);
        break;
      default:
        if (x1 <= x0) break;  // an empty window: not written
        for (int64_t f = 0; f < fs; f += 16) {
          __m512i m = _mm512_loadu_si512(src + f);
          for (int64_t x = 1; x < x1 - x0; ++x) {
            m = _mm512_max_epi32(m, _mm512_loadu_si512(src + x * fs + f));
          }
          _mm512_storeu_si512(dst + f, m);
        }
    }
  }
}

// out[i] = max_{r < N} rows[r][i] over whole vectors, then the n % 16 tail masked.
template <int N>
void VMaxN(const int32_t* const* rows, int64_t n, int32_t* out) {
  const int32_t* r[N];
  for (int j = 0; j < N; ++j) r[j] = rows[j];
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i a = _mm512_loadu_si512(r[0] + i);
#pragma GCC unroll 4
    for (int j = 1; j < N; ++j) a = _mm512_max_epi32(a, _mm512_loadu_si512(r[j] + i));
    _mm512_storeu_si512(out + i, a);
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    __m512i a = _mm512_maskz_loadu_epi32(m, r[0] + i);
    for (int j = 1; j < N; ++j) a = _mm512_max_epi32(a, _mm512_maskz_loadu_epi32(m, r[j] + i));
    _mm512_mask_storeu_epi32(out + i, m, a);
  }
}

void VMax(const int32_t* const* rows, int64_t nrows, int64_t n, int32_t* out) {
  switch (nrows) {
    case 1:
      return VMaxN<1>(rows, n, out);
    case 2:
      return VMaxN<2>(rows, n, out);
    case 3:
      return VMaxN<3>(rows, n, out);
    default:
      VMaxN<4>(rows, n, out);
      for (int64_t r = 4; r < nrows; ++r) {
        const int32_t* more[2] = {out, rows[r]};
        VMaxN<2>(more, n, out);
      }
  }
}

// Levels of 16 floats (mask: the valid ones; the others read as 0) as 16 int32.
__m512i Level16(const float* x, __mmask16 m, __m512d a_levels) {
  const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0);
  const __m512 xf = _mm512_maskz_loadu_ps(m, x);
  __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(xf));
  __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(xf), 1)));
  lo = _mm512_min_pd(_mm512_max_pd(lo, zero), one);  // max: NaN -> 0
  hi = _mm512_min_pd(_mm512_max_pd(hi, zero), one);
  lo = _mm512_roundscale_pd(_mm512_mul_pd(lo, a_levels),
                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  hi = _mm512_roundscale_pd(_mm512_mul_pd(hi, a_levels),
                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtpd_epi32(lo)), _mm512_cvtpd_epi32(hi),
                            1);
}

// c <= 4 channels: pixel q's levels as the bytes of one int32 (c0 | c1 << 8 | ...), then the
// c bytes of each packed together: c = 3 by a byte shuffle within each 128-bit lane (12 bytes
// a lane) and a dword permutation of the four lanes' 3 dwords.
void Levels(const float* x, int64_t c, int64_t stride, int64_t n, int ka, uint8_t* out) {
  const __m512d a_levels = _mm512_set1_pd(static_cast<double>((1 << ka) - 1));
  const __m512i shuf3 =
      _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1));
  const __m512i perm3 = _mm512_setr_epi32(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 0, 0, 0, 0);
  for (int64_t q0 = 0; q0 < n; q0 += 16) {
    const int64_t nq = n - q0 < 16 ? n - q0 : 16;
    const __mmask16 m =
        nq == 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << nq) - 1u);
    __m512i v = Level16(x + q0, m, a_levels);
    for (int64_t ch = 1; ch < c; ++ch) {
      v = _mm512_or_si512(v, _mm512_slli_epi32(Level16(x + ch * stride + q0, m, a_levels),
                                               static_cast<int>(8 * ch)));
    }
    const int64_t bytes = nq * c;
    const __mmask64 bm = bytes >= 64 ? ~uint64_t{0} : (~uint64_t{0}) >> (64 - bytes);
    uint8_t* dst = out + q0 * c;
    if (c == 1) {
      _mm_mask_storeu_epi8(dst, static_cast<__mmask16>(bm), _mm512_cvtepi32_epi8(v));
    } else if (c == 2) {
      _mm256_mask_storeu_epi8(dst, static_cast<__mmask32>(bm), _mm512_cvtepi32_epi16(v));
    } else if (c == 3) {
      v = _mm512_permutexvar_epi32(perm3, _mm512_shuffle_epi8(v, shuf3));
      _mm512_mask_storeu_epi8(dst, bm, v);
    } else {
      _mm512_mask_storeu_epi8(dst, bm, v);
    }
  }
}

// One output (the scalar form of Vec8).
float One(int32_t dv, int32_t neg, double ds, const float* bias, int64_t f, bool relu) {
  if (neg != 0) dv = -dv;
  float v = static_cast<float>(static_cast<double>(dv) * ds);
  if (bias != nullptr) v += bias[f];
  if (relu) v = v > 0.0f ? v : (v == v ? 0.0f : v);
  return v;
}

// Filters [f, f + 8) of one pixel. relu: keep v where v > 0 or v is NaN (not <=, unordered),
// else +0.
template <bool kBias, bool kRelu>
__m256 Vec8(const int32_t* dp, __m256i nv, __m512d dsv, __m256 bv) {
  __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(dp));
  x = _mm256_sub_epi32(_mm256_xor_si256(x, nv), nv);
  __m256 v = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtepi32_pd(x), dsv));
  if (kBias) v = _mm256_add_ps(v, bv);
  if (kRelu) v = _mm256_maskz_mov_ps(_mm256_cmp_ps_mask(v, _mm256_setzero_ps(), _CMP_NLE_UQ), v);
  return v;
}

// 8 x 8 float transpose: v[r][j] -> v[j][r].
__attribute__((always_inline)) inline void Transpose8(__m256 v[8]) {
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

template <bool kBias, bool kRelu>
void EpilogueT(const int32_t* d, int64_t np, int64_t nf, int64_t fs, const int32_t* neg,
               const double* ds, const float* bias, float* out, int64_t os) {
  const int64_t nf8 = nf / 8 * 8, np8 = np / 8 * 8;
  for (int64_t f = 0; f < nf8; f += 8) {
    const __m256i nv = neg != nullptr
                           ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(neg + f))
                           : _mm256_setzero_si256();
    const __m512d dsv = _mm512_loadu_pd(ds + f);
    const __m256 bv = kBias ? _mm256_loadu_ps(bias + f) : _mm256_setzero_ps();
    float* o = out + f * os;
    const int32_t* dp = d + f;
    for (int64_t p0 = 0; p0 < np8; p0 += 8) {
      __m256 v[8];
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) v[k] = Vec8<kBias, kRelu>(dp + (p0 + k) * fs, nv, dsv, bv);
      Transpose8(v);
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) _mm256_storeu_ps(o + k * os + p0, v[k]);
    }
    for (int64_t k = 0; k < 8; ++k) {
      for (int64_t p = np8; p < np; ++p) {
        o[k * os + p] = One(d[p * fs + f + k], neg ? neg[f + k] : 0, ds[f + k],
                            kBias ? bias : nullptr, f + k, kRelu);
      }
    }
  }
  for (int64_t f = nf8; f < nf; ++f) {
    for (int64_t p = 0; p < np; ++p) {
      out[f * os + p] =
          One(d[p * fs + f], neg ? neg[f] : 0, ds[f], kBias ? bias : nullptr, f, kRelu);
    }
  }
}

void Epilogue(const int32_t* d, int64_t np, int64_t nf, int64_t fs, const int32_t* neg,
              const double* ds, const float* bias, bool relu, float* out, int64_t os) {
  if (bias != nullptr) {
    if (relu) return EpilogueT<true, true>(d, np, nf, fs, neg, ds, bias, out, os);
    return EpilogueT<true, false>(d, np, nf, fs, neg, ds, bias, out, os);
  }
  if (relu) return EpilogueT<false, true>(d, np, nf, fs, neg, ds, bias, out, os);
  return EpilogueT<false, false>(d, np, nf, fs, neg, ds, bias, out, os);
}

}  // namespace

KbitDirectSpec Avx512KbitDirect() { return KbitDirectSpec{Row, HMax, VMax, Epilogue, Levels}; }

}  // namespace internal
}  // namespace binmx

/*
 * binmx runtime: AVX2 + FMA float kernels (compiled with -mavx2 -mfma only; see
 * float_kernels.h for the contracts).
 *
 * Panel product: tiles of up to kMaxMr = 6 rows x kNr = 16 columns (2 ymm a row, 12 ymm
 * accumulators). Per k: two loads of B[k][0..15] and, per row r, one broadcast of A[r][k]
 * feeding two FMAs. Epilogue: + bias, max(., 0) with relu (vmaxps(v, 0) gives 0 for NaN),
 * masked store (vmaskmovps) of a partial panel.
 * Im2col (float_kernels.h's Im2colPanel): an input row is split into its stride phases with
 * vmaskmovps loads (masked-off lanes are not read), for stride 2 shuffled into even and odd
 * lanes (other strides scalar); then each tap is a 16-float copy.
 * Pool row: vertical vmaxps, horizontal max for stride 1 and 2 (even lanes), else scalar.
 */
#include <immintrin.h>

#include "float_kernels.h"

namespace binmx {
namespace rt {
namespace {

constexpr int kNr = 16;
constexpr int kMaxMr = 6;

// Lanes [lo, hi) of 8 as a vmaskmovps mask (sign bit set = active).
inline __m256i Lanes(int64_t lo, int64_t hi) {
  lo = lo < 0 ? 0 : (lo > 8 ? 8 : lo);
  hi = hi < 0 ? 0 : (hi > 8 ? 8 : hi);
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i ge_lo = _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(static_cast<int>(lo) - 1));
  const __m256i lt_hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(hi)), idx);
  return _mm256_and_si256(ge_lo, lt_hi);
}

// The even lanes of a (0, 2, 4, 6) then of b.
inline __m256 Evens(__m256 a, __m256 b) {
  const __m256 s = _mm256_shuffle_ps(a, b, 0x88);  // a0 a2 b0 b2 | a4 a6 b4 b6
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), 0xd8));
}

// The odd lanes of a (1, 3, 5, 7) then of b.
inline __m256 Odds(__m256 a, __m256 b) {
  const __m256 s = _mm256_shuffle_ps(a, b, 0xdd);  // a1 a3 b1 b3 | a5 a7 b5 b7
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), 0xd8));
}

template <int MR>
void Tile(const float* a, const PanelArgs& p, const float* bias_rows, float* c) {
  __m256 acc[2 * MR];
#pragma GCC unroll 12
  for (int r = 0; r < 2 * MR; ++r) acc[r] = _mm256_setzero_ps();
  const float* b = p.b;
  const int64_t ldb = p.ldb;
  const __m256i m0 = Lanes(0, p.n), m1 = Lanes(0, p.n - 8);
  if (p.b_full) {
    for (int64_t k = 0; k < p.depth; ++k) {
      const __m256 b0 = _mm256_loadu_ps(b);
      const __m256 b1 = _mm256_loadu_ps(b + 8);
      b += ldb;
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r) {
        const __m256 av = _mm256_broadcast_ss(a + r);
        acc[2 * r] = _mm256_fmadd_ps(av, b0, acc[2 * r]);
        acc[2 * r + 1] = _mm256_fmadd_ps(av, b1, acc[2 * r + 1]);
      }
      a += MR;
    }
  } else {
    for (int64_t k = 0; k < p.depth; ++k) {
      const __m256 b0 = _mm256_maskload_ps(b, m0);
      const __m256 b1 = _mm256_maskload_ps(b + 8, m1);
      b += ldb;
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r) {
        const __m256 av = _mm256_broadcast_ss(a + r);
        acc[2 * r] = _mm256_fmadd_ps(av, b0, acc[2 * r]);
        acc[2 * r + 1] = _mm256_fmadd_ps(av, b1, acc[2 * r + 1]);
      }
      a += MR;
    }
  }
  __m256 bc0 = _mm256_setzero_ps(), bc1 = _mm256_setzero_ps();
  if (p.bias != nullptr && p.bias_per_col) {
    bc0 = _mm256_maskload_ps(p.bias, m0);
    bc1 = _mm256_maskload_ps(p.bias + 8, m1);
  }
  const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    __m256 v0 = acc[2 * r], v1 = acc[2 * r + 1];
    if (p.bias != nullptr) {
      if (p.bias_per_col) {
        v0 = _mm256_add_ps(v0, bc0);
        v1 = _mm256_add_ps(v1, bc1);
      } else {
        const __m256 br = _mm256_set1_ps(bias_rows[r]);
        v0 = _mm256_add_ps(v0, br);
        v1 = _mm256_add_ps(v1, br);
      }
    }
    if (p.relu) {
      v0 = _mm256_max_ps(v0, zero);
      v1 = _mm256_max_ps(v1, zero);
    }
    float* cr = c + r * p.ldc;
    if (p.n == kNr) {
      _mm256_storeu_ps(cr, v0);
      _mm256_storeu_ps(cr + 8, v1);
    } else {
      _mm256_maskstore_ps(cr, m0, v0);
      _mm256_maskstore_ps(cr + 8, m1, v1);
    }
  }
}

void Panel(const PanelArgs& p) {
  for (int64_t m0 = 0; m0 < p.m; m0 += p.mr) {
    const int rows = static_cast<int>(p.m - m0 < p.mr ? p.m - m0 : p.mr);
    const float* a = p.a + m0 * p.depth;
    const float* bias_rows = (p.bias != nullptr && !p.bias_per_col) ? p.bias + m0 : nullptr;
    float* c = p.c + m0 * p.ldc;
    switch (rows) {
      case 1: Tile<1>(a, p, bias_rows, c); break;
      case 2: Tile<2>(a, p, bias_rows, c); break;
      case 3: Tile<3>(a, p, bias_rows, c); break;
      case 4: Tile<4>(a, p, bias_rows, c); break;
      case 5: Tile<5>(a, p, bias_rows, c); break;
      default: Tile<6>(a, p, bias_rows, c); break;
    }
  }
}

struct Ops {
  static bool Row(float*, int, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int) {
    return false;
  }
  // ph[phi * ld + t] = row[start + phi + stride * t] inside [0, width), else 0, t < count.
  static void Extract(float* ph, int64_t ld, const float* row, int64_t width, int64_t start,
                      int64_t stride, int64_t count) {
    const int64_t lo = -start, hi = width - start;  // valid source offsets from row + start
    const float* src = row + start;
    if (stride == 1) {
      for (int64_t t = 0; t < count; t += 8) {
        _mm256_storeu_ps(ph + t, _mm256_maskload_ps(src + t, Lanes(lo - t, hi - t)));
      }
    } else if (stride == 2) {
      for (int64_t t = 0; t < count; t += 8) {
        const int64_t e = 2 * t;
        const __m256 c0 = _mm256_maskload_ps(src + e, Lanes(lo - e, hi - e));
        const __m256 c1 = _mm256_maskload_ps(src + e + 8, Lanes(lo - e - 8, hi - e - 8));
        _mm256_storeu_ps(ph + t, Evens(c0, c1));
        _mm256_storeu_ps(ph + ld + t, Odds(c0, c1));
      }
    } else {
      ExtractScalar(ph, ld, row, width, start, stride, count);
    }
  }
  static void Copy(float* dst, const float* src, int len) {
    if (len == kNr) {
      _mm256_storeu_ps(dst, _mm256_loadu_ps(src));
      _mm256_storeu_ps(dst + 8, _mm256_loadu_ps(src + 8));
      return;
    }
    _mm256_maskstore_ps(dst, Lanes(0, len), _mm256_loadu_ps(src));
    _mm256_maskstore_ps(dst + 8, Lanes(0, len - 8), _mm256_loadu_ps(src + 8));
  }
};

void Im2col(const Im2colArgs& a, int64_t q0, int n, float* col) {
  Im2colPanel<Ops>(a, q0, n, kNr, col);
}

void PoolRow(const PoolRowArgs& a) {
  if (a.stride_w > 2) {
    PoolRowScalar(a);
    return;
  }
  float* mid = a.tmp + a.pad_w;
  const __m256 lowest = _mm256_set1_ps(std::numeric_limits<float>::lowest());
  for (int64_t x = 0; x < a.width; x += 8) {
    const __m256i m = Lanes(0, a.width - x);
    __m256 v = lowest;
    if (a.n_rows > 0) {
      v = _mm256_maskload_ps(a.rows + x, m);
      for (int64_t r = 1; r < a.n_rows; ++r) {
        v = _mm256_max_ps(_mm256_maskload_ps(a.rows + r * a.row_stride + x, m), v);
      }
    }
    _mm256_maskstore_ps(mid + x, m, v);
  }
  for (int64_t px = 0; px < a.out_w; px += 8) {
    const float* t = a.tmp + px * a.stride_w;
    __m256 v;
    if (a.stride_w == 1) {
      v = _mm256_loadu_ps(t);
      for (int64_t j = 1; j < a.kernel_w; ++j) v = _mm256_max_ps(_mm256_loadu_ps(t + j), v);
    } else {
      v = Evens(_mm256_loadu_ps(t), _mm256_loadu_ps(t + 8));
      for (int64_t j = 1; j < a.kernel_w; ++j) {
        v = _mm256_max_ps(Evens(_mm256_loadu_ps(t + j), _mm256_loadu_ps(t + j + 8)), v);
      }
    }
    _mm256_maskstore_ps(a.out + px, Lanes(0, a.out_w - px), v);
  }
}

const FloatKernels kAvx2 = {"avx2", kNr, kMaxMr, &Panel, &Im2col, &PoolRow,
                            0,      nullptr, nullptr, nullptr, nullptr};

}  // namespace

const FloatKernels* Avx2FloatKernels() { return &kAvx2; }

}  // namespace rt
}  // namespace binmx

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
 * Direct path (few input channels, see float_kernels.h): 6 output pixels x 16 filters FMA
 * tiles (12 ymm accumulators) broadcasting the padded input; channels-last max-pool; 8 x 8
 * transposes into NCHW.
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
      case 1:
        Tile<1>(a, p, bias_rows, c);
        break;
      case 2:
        Tile<2>(a, p, bias_rows, c);
        break;
      case 3:
        Tile<3>(a, p, bias_rows, c);
        break;
      case 4:
        Tile<4>(a, p, bias_rows, c);
        break;
      case 5:
        Tile<5>(a, p, bias_rows, c);
        break;
      default:
        Tile<6>(a, p, bias_rows, c);
        break;
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

void PoolRowOne(const PoolRowArgs& a) {
  if (a.stride_w > 2) {
    PoolRowScalarOne(a);
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

void PoolRow(const PoolRowArgs& a) { ForEachPoolPlane(a, PoolRowOne); }

// ---- direct (channels-last) path ----

constexpr int kDirectPx = 6;

// One tile: kDirectPx output pixels x 16 filters (2 ymm), 12 ymm accumulators (with the two
// weight vectors and the broadcast, 15 of the 16 ymm registers: 7 pixels would spill). Per tap
// k: two weight vectors w[k][f0 ..], then per pixel t one broadcast of its input value feeding
// two FMAs. SW (the stride along the row) is a template argument: fixed displacements.
template <int SW>
void DirectTile(const DirectRowArgs& a, int64_t ox0, int64_t f0) {
  __m256 acc[kDirectPx][2];
#pragma GCC unroll 6
  for (int t = 0; t < kDirectPx; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  const float* wk = a.w + f0;
  const float* xc = a.x + ox0 * SW;
  for (int64_t c = 0; c < a.channels; ++c, xc += a.chan_stride) {
    const float* xr = xc;
    for (int64_t i = 0; i < a.kernel_h; ++i, xr += a.dilate_h * a.row_stride) {
      const float* xp = xr;
      for (int64_t j = 0; j < a.kernel_w; ++j, xp += a.dilate_w, wk += a.filters) {
        const __m256 w0 = _mm256_loadu_ps(wk), w1 = _mm256_loadu_ps(wk + 8);
#pragma GCC unroll 6
        for (int t = 0; t < kDirectPx; ++t) {
          const __m256 b = _mm256_broadcast_ss(xp + t * SW);
          acc[t][0] = _mm256_fmadd_ps(b, w0, acc[t][0]);
          acc[t][1] = _mm256_fmadd_ps(b, w1, acc[t][1]);
        }
      }
    }
  }
  const __m256 zero = _mm256_setzero_ps();
  __m256 bias0 = zero, bias1 = zero;
  if (a.bias != nullptr) {
    bias0 = _mm256_loadu_ps(a.bias + f0);
    bias1 = _mm256_loadu_ps(a.bias + f0 + 8);
  }
#pragma GCC unroll 6
  for (int t = 0; t < kDirectPx; ++t) {
    __m256 r0 = acc[t][0], r1 = acc[t][1];
    if (a.bias != nullptr) {
      r0 = _mm256_add_ps(r0, bias0);
      r1 = _mm256_add_ps(r1, bias1);
    }
    if (a.relu) {
      r0 = _mm256_max_ps(r0, zero);
      r1 = _mm256_max_ps(r1, zero);
    }
    float* o = a.out + (ox0 + t) * a.ld_pix + f0;
    _mm256_storeu_ps(o, r0);
    _mm256_storeu_ps(o + 8, r1);
  }
}

template <int SW>
void DirectRowT(const DirectRowArgs& a) {
  for (int64_t f0 = 0; f0 < a.filters; f0 += 16) {
    for (int64_t ox0 = 0; ox0 < a.out_w; ox0 += kDirectPx) DirectTile<SW>(a, ox0, f0);
  }
}

void DirectRow(const DirectRowArgs& a) {
  if (a.stride_w == 1) {
    DirectRowT<1>(a);
  } else {
    DirectRowT<2>(a);
  }
}

void HPoolCl(const float* tmp, int64_t channels, int64_t kernel_w, int64_t stride_w, int64_t out_w,
             float* out) {
  for (int64_t px = 0; px < out_w; ++px) {
    const float* t = tmp + px * stride_w * channels;
    float* o = out + px * channels;
    for (int64_t c = 0; c < channels; c += 8) {
      __m256 v = _mm256_loadu_ps(t + c);
      for (int64_t j = 1; j < kernel_w; ++j) {
        v = _mm256_max_ps(_mm256_loadu_ps(t + j * channels + c), v);
      }
      _mm256_storeu_ps(o + c, v);
    }
  }
}

void VMax(const float* row, int64_t count, float* out) {
  for (int64_t x = 0; x < count; x += 8) {
    _mm256_storeu_ps(out + x, _mm256_max_ps(_mm256_loadu_ps(row + x), _mm256_loadu_ps(out + x)));
  }
}

// In-register 8 x 8 transpose: after it, r[i][l] is the old r[l][i].
inline void Transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);      // r_i0 r_j0 r_i1 r_j1 | r_i4 r_j4 r_i5 r_j5
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);  // r_i2 r_j2 r_i3 r_j3 | r_i6 ...
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);          // columns 0 (and 4)
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);      // columns 1 (and 5)
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);  // columns 2 (and 6)
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);  // columns 3 (and 7)
  }
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm256_permute2f128_ps(u[c], u[c + 4], 0x20);
    r[c + 4] = _mm256_permute2f128_ps(u[c], u[c + 4], 0x31);
  }
}

void ToNchw(const float* cl, int64_t pixels, int64_t ld_pix, int64_t channels, float* out,
            int64_t ld_chan) {
  for (int64_t p0 = 0; p0 < pixels; p0 += 8) {
    const int64_t np = pixels - p0 < 8 ? pixels - p0 : 8;
    const __m256i m = Lanes(0, np);
    for (int64_t c0 = 0; c0 < channels; c0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) {
        r[i] = i < np ? _mm256_loadu_ps(cl + (p0 + i) * ld_pix + c0) : _mm256_setzero_ps();
      }
      Transpose8(r);
      for (int c = 0; c < 8; ++c) _mm256_maskstore_ps(out + (c0 + c) * ld_chan + p0, m, r[c]);
    }
  }
}

const FloatKernels kAvx2 = {"avx2",    kNr,        kMaxMr,   &Panel, &Im2col, &PoolRow,
                            kDirectPx, &DirectRow, &HPoolCl, &VMax,  &ToNchw, nullptr};

}  // namespace

const FloatKernels* Avx2FloatKernels() { return &kAvx2; }

}  // namespace rt
}  // namespace binmx

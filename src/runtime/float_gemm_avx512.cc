/*
 * binmx runtime: AVX-512 float kernels (compiled with the AVX-512 flags only; see
 * float_kernels.h for the contracts).
 *
 * Panel product: tiles of up to kMaxMr = 14 rows x kNr = 32 columns (2 zmm a row, 28 zmm
 * accumulators). Per k: two vector loads of B[k][0..31] and, per row r, one broadcast of
 * A[r][k] feeding two FMAs (acc[r][h] = fma(A[r][k], B[k][16h..16h+15], acc[r][h])).
 * Epilogue: + bias, max(., 0) with relu (vmaxps(v, 0) gives 0 for NaN), masked store.
 * Im2col (float_kernels.h's Im2colPanel): for stride 1 or 2 an input row is held in registers
 * as its stride phases (masked loads, vpermt2ps even/odd) and each tap is two vpermt2ps of
 * them; otherwise the phases go through a small buffer (strides > 2: scalar). Masked-off lanes
 * are never read (AVX-512 masked loads suppress them).
 * Pool row: vertical vmaxps over the window rows, horizontal max for stride 1 (shifted loads)
 * or 2 (even lanes of shifted loads); other strides scalar.
 * Direct path (few input channels, see float_kernels.h): 14 output pixels (one even remainder
 * tile of 2..12 for the rest of a row) x 32 (or 16) filters
 * FMA tiles broadcasting the padded input, channels-last max-pool, 16 x 16 transposes into
 * NCHW.
 */
#include <immintrin.h>

#include "float_kernels.h"

// GCC 12's _mm512_max_ps passes _mm512_undefined_ps() as its (unused, unmasked) merge source,
// which -Wmaybe-uninitialized reports once per inlined call.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace binmx {
namespace rt {
namespace {

constexpr int kNr = 32;
constexpr int kMaxMr = 14;

// Bits [lo, hi) of a 16-lane mask (clipped to [0, 16)).
inline __mmask16 Lanes(int64_t lo, int64_t hi) {
  if (lo < 0) lo = 0;
  if (hi > 16) hi = 16;
  if (hi <= lo) return 0;
  return static_cast<__mmask16>(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

template <int MR>
void Tile(const float* a, const PanelArgs& p, const float* bias_rows, float* c) {
  __m512 acc[2 * MR];
#pragma GCC unroll 28
  for (int r = 0; r < 2 * MR; ++r) acc[r] = _mm512_setzero_ps();
  const float* b = p.b;
  const int64_t ldb = p.ldb;
  if (p.b_full) {
    for (int64_t k = 0; k < p.depth; ++k) {
      const __m512 b0 = _mm512_loadu_ps(b);
      const __m512 b1 = _mm512_loadu_ps(b + 16);
      b += ldb;
#pragma GCC unroll 14
      for (int r = 0; r < MR; ++r) {
        const __m512 av = _mm512_set1_ps(a[r]);
        acc[2 * r] = _mm512_fmadd_ps(av, b0, acc[2 * r]);
        acc[2 * r + 1] = _mm512_fmadd_ps(av, b1, acc[2 * r + 1]);
      }
      a += MR;
    }
  } else {
    const __mmask16 m0 = Lanes(0, p.n), m1 = Lanes(0, p.n - 16);
    for (int64_t k = 0; k < p.depth; ++k) {
      const __m512 b0 = _mm512_maskz_loadu_ps(m0, b);
      const __m512 b1 = _mm512_maskz_loadu_ps(m1, b + 16);
      b += ldb;
#pragma GCC unroll 14
      for (int r = 0; r < MR; ++r) {
        const __m512 av = _mm512_set1_ps(a[r]);
        acc[2 * r] = _mm512_fmadd_ps(av, b0, acc[2 * r]);
        acc[2 * r + 1] = _mm512_fmadd_ps(av, b1, acc[2 * r + 1]);
      }
      a += MR;
    }
  }
  const __mmask16 s0 = Lanes(0, p.n), s1 = Lanes(0, p.n - 16);
  __m512 bc0 = _mm512_setzero_ps(), bc1 = _mm512_setzero_ps();
  if (p.bias != nullptr && p.bias_per_col) {
    bc0 = _mm512_maskz_loadu_ps(s0, p.bias);
    bc1 = _mm512_maskz_loadu_ps(s1, p.bias + 16);
  }
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 14
  for (int r = 0; r < MR; ++r) {
    __m512 v0 = acc[2 * r], v1 = acc[2 * r + 1];
    if (p.bias != nullptr) {
      if (p.bias_per_col) {
        v0 = _mm512_add_ps(v0, bc0);
        v1 = _mm512_add_ps(v1, bc1);
      } else {
        const __m512 br = _mm512_set1_ps(bias_rows[r]);
        v0 = _mm512_add_ps(v0, br);
        v1 = _mm512_add_ps(v1, br);
      }
    }
    if (p.relu) {
      v0 = _mm512_max_ps(v0, zero);
      v1 = _mm512_max_ps(v1, zero);
    }
    float* cr = c + r * p.ldc;
    if (p.n == kNr) {
      _mm512_storeu_ps(cr, v0);
      _mm512_storeu_ps(cr + 16, v1);
    } else {
      _mm512_mask_storeu_ps(cr, s0, v0);
      _mm512_mask_storeu_ps(cr + 16, s1, v1);
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
      case 6:
        Tile<6>(a, p, bias_rows, c);
        break;
      case 7:
        Tile<7>(a, p, bias_rows, c);
        break;
      case 8:
        Tile<8>(a, p, bias_rows, c);
        break;
      case 9:
        Tile<9>(a, p, bias_rows, c);
        break;
      case 10:
        Tile<10>(a, p, bias_rows, c);
        break;
      case 11:
        Tile<11>(a, p, bias_rows, c);
        break;
      case 12:
        Tile<12>(a, p, bias_rows, c);
        break;
      case 13:
        Tile<13>(a, p, bias_rows, c);
        break;
      default:
        Tile<14>(a, p, bias_rows, c);
        break;
    }
  }
}

struct Ops {
  // A whole input row in registers, for stride 1 or 2 and taps reaching at most 16 phase steps
  // past the first (qmax <= 16): the row's phases P[phi][0 .. 48) are 3 zmm each (masked loads,
  // vpermt2ps even/odd for stride 2), and tap j = (q * stride + phi) / dilate is the pair
  // P[phi][q .. q + 32) taken with vpermt2ps by index (lane + q). No store is read back.
  static bool Row(float* dst, int nr, const float* row, int64_t width, int64_t start,
                  int64_t stride, int64_t dilate, int64_t kernel_w, int len) {
    if (stride > 2 || (kernel_w - 1) * dilate / stride > 16) return false;
    const int64_t lo = -start, hi = width - start;  // valid source offsets from row + start
    const float* src = row + start;
    __m512 ph[2][3];
    if (stride == 1) {
      for (int u = 0; u < 3; ++u) {
        ph[0][u] = _mm512_maskz_loadu_ps(Lanes(lo - 16 * u, hi - 16 * u), src + 16 * u);
      }
    } else {
      const __m512i even =
          _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
      const __m512i odd =
          _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
      for (int u = 0; u < 3; ++u) {
        const int64_t e = 32 * u;
        const __m512 c0 = _mm512_maskz_loadu_ps(Lanes(lo - e, hi - e), src + e);
        const __m512 c1 = _mm512_maskz_loadu_ps(Lanes(lo - e - 16, hi - e - 16), src + e + 16);
        ph[0][u] = _mm512_permutex2var_ps(c0, even, c1);
        ph[1][u] = _mm512_permutex2var_ps(c0, odd, c1);
      }
    }
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __mmask16 m0 = Lanes(0, len), m1 = Lanes(0, len - 16);
    for (int64_t j = 0; j < kernel_w; ++j) {
      const int64_t off = j * dilate;
      const int64_t q = off / stride;
      const __m512* p = ph[off - q * stride];
      const __m512i idx = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(q)));
      const __m512 v0 = _mm512_permutex2var_ps(p[0], idx, p[1]);
      const __m512 v1 = _mm512_permutex2var_ps(p[1], idx, p[2]);
      float* d = dst + j * nr;
      if (len == kNr) {
        _mm512_storeu_ps(d, v0);
        _mm512_storeu_ps(d + 16, v1);
      } else {
        _mm512_mask_storeu_ps(d, m0, v0);
        _mm512_mask_storeu_ps(d + 16, m1, v1);
      }
    }
    return true;
  }
  // ph[phi * ld + t] = row[start + phi + stride * t] inside [0, width), else 0, t < count.
  static void Extract(float* ph, int64_t ld, const float* row, int64_t width, int64_t start,
                      int64_t stride, int64_t count) {
    // Source offsets e (from row + start) inside the row: e in [-start, width - start).
    const int64_t lo = -start, hi = width - start;
    const float* src = row + start;
    if (stride == 1) {
      for (int64_t t = 0; t < count; t += 16) {
        _mm512_storeu_ps(ph + t, _mm512_maskz_loadu_ps(Lanes(lo - t, hi - t), src + t));
      }
    } else if (stride == 2) {
      const __m512i even =
          _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
      const __m512i odd =
          _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
      for (int64_t t = 0; t < count; t += 16) {
        const int64_t e = 2 * t;
        const __m512 c0 = _mm512_maskz_loadu_ps(Lanes(lo - e, hi - e), src + e);
        const __m512 c1 = _mm512_maskz_loadu_ps(Lanes(lo - e - 16, hi - e - 16), src + e + 16);
        _mm512_storeu_ps(ph + t, _mm512_permutex2var_ps(c0, even, c1));
        _mm512_storeu_ps(ph + ld + t, _mm512_permutex2var_ps(c0, odd, c1));
      }
    } else {
      ExtractScalar(ph, ld, row, width, start, stride, count);
    }
  }
  static void Copy(float* dst, const float* src, int len) {
    if (len == kNr) {
      _mm512_storeu_ps(dst, _mm512_loadu_ps(src));
      _mm512_storeu_ps(dst + 16, _mm512_loadu_ps(src + 16));
      return;
    }
    const __mmask16 m0 = Lanes(0, len), m1 = Lanes(0, len - 16);
    _mm512_mask_storeu_ps(dst, m0, _mm512_maskz_loadu_ps(m0, src));
    _mm512_mask_storeu_ps(dst + 16, m1, _mm512_maskz_loadu_ps(m1, src + 16));
  }
};

void Im2col(const Im2colArgs& a, int64_t q0, int n, float* col) {
  Im2colPanel<Ops>(a, q0, n, kNr, col);
}

// A padded row of at most 32 cells read by at most 16 outputs (LeNet's 24 -> 12): the row stays
// in two registers and the windows are permutes of them. Storing it to tmp and loading the
// shifted windows back would stall every call on store-to-load forwarding. Same operations in
// the same order as the general path below (so the same NaN behaviour).
void PoolRowShort(const PoolRowArgs& a) {
  const __m512 lowest = _mm512_set1_ps(std::numeric_limits<float>::lowest());
  // Lane l of (v0, v1) is padded cell l: input x = l - pad_w.
  const __mmask16 m0 = Lanes(a.pad_w, a.pad_w + a.width);
  const __mmask16 m1 = Lanes(a.pad_w - 16, a.pad_w + a.width - 16);
  __m512 v0 = lowest, v1 = lowest;
  for (int64_t r = 0; r < a.n_rows; ++r) {
    // Lane l reads row[l - pad_w] only where m0 / m1 holds (masked lanes are not accessed).
    const float* row = a.rows + r * a.row_stride;
    const __m512 l0 = _mm512_mask_loadu_ps(lowest, m0, row - a.pad_w);
    const __m512 l1 = _mm512_mask_loadu_ps(lowest, m1, row + (16 - a.pad_w));
    v0 = r == 0 ? l0 : _mm512_max_ps(l0, v0);
    v1 = r == 0 ? l1 : _mm512_max_ps(l1, v1);
  }
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i step = a.stride_w == 1 ? iota : _mm512_add_epi32(iota, iota);
  __m512 v = _mm512_permutex2var_ps(v0, step, v1);
  for (int64_t j = 1; j < a.kernel_w; ++j) {
    const __m512i idx = _mm512_add_epi32(step, _mm512_set1_epi32(static_cast<int>(j)));
    v = _mm512_max_ps(_mm512_permutex2var_ps(v0, idx, v1), v);
  }
  _mm512_mask_storeu_ps(a.out, Lanes(0, a.out_w), v);
}

void PoolRowOne(const PoolRowArgs& a) {
  if (a.stride_w > 2) {
    PoolRowScalarOne(a);
    return;
  }
  float* mid = a.tmp + a.pad_w;
  const __m512 lowest = _mm512_set1_ps(std::numeric_limits<float>::lowest());
  for (int64_t x = 0; x < a.width; x += 16) {
    const __mmask16 m = Lanes(0, a.width - x);
    __m512 v = lowest;
    if (a.n_rows > 0) {
      v = _mm512_maskz_loadu_ps(m, a.rows + x);
      for (int64_t r = 1; r < a.n_rows; ++r) {
        v = _mm512_max_ps(_mm512_maskz_loadu_ps(m, a.rows + r * a.row_stride + x), v);
      }
    }
    _mm512_mask_storeu_ps(mid + x, m, v);
  }
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  for (int64_t px = 0; px < a.out_w; px += 16) {
    const float* t = a.tmp + px * a.stride_w;
    __m512 v;
    if (a.stride_w == 1) {
      v = _mm512_loadu_ps(t);
      for (int64_t j = 1; j < a.kernel_w; ++j) v = _mm512_max_ps(_mm512_loadu_ps(t + j), v);
    } else {
      v = _mm512_permutex2var_ps(_mm512_loadu_ps(t), even, _mm512_loadu_ps(t + 16));
      for (int64_t j = 1; j < a.kernel_w; ++j) {
        const __m512 w =
            _mm512_permutex2var_ps(_mm512_loadu_ps(t + j), even, _mm512_loadu_ps(t + j + 16));
        v = _mm512_max_ps(w, v);
      }
    }
    _mm512_mask_storeu_ps(a.out + px, Lanes(0, a.out_w - px), v);
  }
}

void PoolRow(const PoolRowArgs& a) {
  if (a.stride_w <= 2 && a.out_w <= 16 && (a.out_w - 1) * a.stride_w + a.kernel_w <= 32 &&
      a.pad_w + a.width <= 32) {
    ForEachPoolPlane(a, PoolRowShort);
    return;
  }
  ForEachPoolPlane(a, PoolRowOne);
}

// MaxPoolInterior for short rows: a window row is two registers, each tap a permute of them,
// the max NaN-propagating exactly as the Pooling layer's loop ((v > m) | (v != v) picks v).
void MaxPoolShort(const float* x, int64_t planes, int64_t h, int64_t w, int64_t kh, int64_t kw,
                  int64_t sh, int64_t sw, int64_t oh, int64_t ow, float* y) {
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i step = sw == 1 ? iota : _mm512_add_epi32(iota, iota);
  const int64_t span = (ow - 1) * sw + kw;  // cells a window row reads, <= min(32, w)
  const __mmask16 m0 = Lanes(0, span), m1 = Lanes(0, span - 16), mo = Lanes(0, ow);
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * h * w;
    for (int64_t oy = 0; oy < oh; ++oy) {
      __m512 v = _mm512_setzero_ps();
      for (int64_t ky = 0; ky < kh; ++ky) {
        const float* row = xp + (oy * sh + ky) * w;
        const __m512 r0 = _mm512_maskz_loadu_ps(m0, row);
        const __m512 r1 = _mm512_maskz_loadu_ps(m1, row + 16);
        for (int64_t kx = 0; kx < kw; ++kx) {
          const __m512i idx = _mm512_add_epi32(step, _mm512_set1_epi32(static_cast<int>(kx)));
          const __m512 t = _mm512_permutex2var_ps(r0, idx, r1);
          if (ky == 0 && kx == 0) {
            v = t;
          } else {
            const __mmask16 take =
                _mm512_cmp_ps_mask(t, v, _CMP_GT_OQ) | _mm512_cmp_ps_mask(t, t, _CMP_UNORD_Q);
            v = _mm512_mask_mov_ps(v, take, t);
          }
        }
      }
      _mm512_mask_storeu_ps(y + (p * oh + oy) * ow, mo, v);
    }
  }
}

// ---- direct (channels-last) path ----

constexpr int kDirectPx = 14;      // pixels of a full tile
constexpr int kDirectGranule = 2;  // out_w is a multiple of this: 14-pixel tiles, one shorter

// One tile: PX output pixels (14, or an even remainder) x 16 * NV filters, NV * PX zmm
// accumulators. Per tap k:
// NV weight vectors w[k][f0 ..], then per pixel t one broadcast of its input value feeding NV
// FMAs. SW (the stride along the row) is a template argument so that the 14 broadcasts are
// fixed displacements off one pointer.
template <int NV, int SW, int PX>
void DirectTile(const DirectRowArgs& a, int64_t ox0, int64_t f0) {
  __m512 acc[PX][NV];
#pragma GCC unroll 14
  for (int t = 0; t < PX; ++t) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[t][v] = _mm512_setzero_ps();
  }
  const float* wk = a.w + f0;
  const float* xc = a.x + ox0 * SW;
  for (int64_t c = 0; c < a.channels; ++c, xc += a.chan_stride) {
    const float* xr = xc;
    for (int64_t i = 0; i < a.kernel_h; ++i, xr += a.dilate_h * a.row_stride) {
      const float* xp = xr;
      for (int64_t j = 0; j < a.kernel_w; ++j, xp += a.dilate_w, wk += a.filters) {
        __m512 wv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_ps(wk + 16 * v);
#pragma GCC unroll 14
        for (int t = 0; t < PX; ++t) {
          const __m512 b = _mm512_set1_ps(xp[t * SW]);
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[t][v] = _mm512_fmadd_ps(b, wv[v], acc[t][v]);
        }
      }
    }
  }
  __m512 bias[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    bias[v] = a.bias != nullptr ? _mm512_loadu_ps(a.bias + f0 + 16 * v) : _mm512_setzero_ps();
  }
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 14
  for (int t = 0; t < PX; ++t) {
    float* o = a.out + (ox0 + t) * a.ld_pix + f0;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      __m512 r = acc[t][v];
      if (a.bias != nullptr) r = _mm512_add_ps(r, bias[v]);
      if (a.relu) r = _mm512_max_ps(r, zero);
      _mm512_storeu_ps(o + 16 * v, r);
    }
  }
}

template <int NV, int SW>
void DirectRowT(const DirectRowArgs& a) {
  const int64_t full = a.out_w / kDirectPx * kDirectPx;
  for (int64_t f0 = 0; f0 < a.filters; f0 += 16 * NV) {
    for (int64_t ox0 = 0; ox0 < full; ox0 += kDirectPx) DirectTile<NV, SW, kDirectPx>(a, ox0, f0);
    switch (a.out_w - full) {  // even (out_w is a multiple of kDirectGranule)
      case 12:
        DirectTile<NV, SW, 12>(a, full, f0);
        break;
      case 10:
        DirectTile<NV, SW, 10>(a, full, f0);
        break;
      case 8:
        DirectTile<NV, SW, 8>(a, full, f0);
        break;
      case 6:
        DirectTile<NV, SW, 6>(a, full, f0);
        break;
      case 4:
        DirectTile<NV, SW, 4>(a, full, f0);
        break;
      case 2:
        DirectTile<NV, SW, 2>(a, full, f0);
        break;
      default:
        break;
    }
  }
}

void DirectRow(const DirectRowArgs& a) {
  const bool two = a.filters % 32 == 0;
  if (a.stride_w == 1) {
    two ? DirectRowT<2, 1>(a) : DirectRowT<1, 1>(a);
  } else {
    two ? DirectRowT<2, 2>(a) : DirectRowT<1, 2>(a);
  }
}

void HPoolCl(const float* tmp, int64_t channels, int64_t kernel_w, int64_t stride_w, int64_t out_w,
             float* out) {
  for (int64_t px = 0; px < out_w; ++px) {
    const float* t = tmp + px * stride_w * channels;
    float* o = out + px * channels;
    for (int64_t c = 0; c < channels; c += 16) {
      __m512 v = _mm512_loadu_ps(t + c);
      for (int64_t j = 1; j < kernel_w; ++j) {
        v = _mm512_max_ps(_mm512_loadu_ps(t + j * channels + c), v);
      }
      _mm512_storeu_ps(o + c, v);
    }
  }
}

void VMax(const float* row, int64_t count, float* out) {
  for (int64_t x = 0; x < count; x += 16) {
    _mm512_storeu_ps(out + x, _mm512_max_ps(_mm512_loadu_ps(row + x), _mm512_loadu_ps(out + x)));
  }
}

// In-register 16 x 16 transpose: after it, r[i][l] is the old r[l][i]. Four butterfly stages;
// stage s (block b = 1, 2, 4, 8) swaps the off-diagonal b x b blocks of every 2b x 2b block:
// lane l of the new r[i] (i & b == 0) is r[i][l] or r[i + b][l - b], of the new r[i + b]
// r[i][l + b] or r[i + b][l] (kTransLo / kTransHi: index l or 16 + l - b, l + b or 16 + l).
alignas(64) const int32_t kTransLo[4][16] = {
    {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
    {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
    {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
    {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}};
alignas(64) const int32_t kTransHi[4][16] = {
    {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31},
    {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
    {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
    {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}};

inline void Transpose16(__m512 r[16]) {
#pragma GCC unroll 4
  for (int s = 0; s < 4; ++s) {
    const int b = 1 << s;
    const __m512i ilo = _mm512_load_si512(kTransLo[s]), ihi = _mm512_load_si512(kTransHi[s]);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
      if (i & b) continue;
      const __m512 a0 = r[i], a1 = r[i + b];
      r[i] = _mm512_permutex2var_ps(a0, ilo, a1);
      r[i + b] = _mm512_permutex2var_ps(a0, ihi, a1);
    }
  }
}

void ToNchw(const float* cl, int64_t pixels, int64_t ld_pix, int64_t channels, float* out,
            int64_t ld_chan) {
  for (int64_t p0 = 0; p0 < pixels; p0 += 16) {
    const int64_t np = pixels - p0 < 16 ? pixels - p0 : 16;
    const __mmask16 m = Lanes(0, np);
    for (int64_t c0 = 0; c0 < channels; c0 += 16) {
      __m512 r[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {
        r[i] = i < np ? _mm512_loadu_ps(cl + (p0 + i) * ld_pix + c0) : _mm512_setzero_ps();
      }
      Transpose16(r);
#pragma GCC unroll 16
      for (int c = 0; c < 16; ++c) _mm512_mask_storeu_ps(out + (c0 + c) * ld_chan + p0, m, r[c]);
    }
  }
}

const FloatKernels kAvx512 = {"avx512",       kNr,        kMaxMr,   &Panel, &Im2col, &PoolRow,
                              kDirectGranule, &DirectRow, &HPoolCl, &VMax,  &ToNchw, &MaxPoolShort};

}  // namespace

const FloatKernels* Avx512FloatKernels() { return &kAvx512; }

}  // namespace rt
}  // namespace binmx

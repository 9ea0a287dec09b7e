/*
 * binmx runtime (internal): the per-ISA kernels behind float_ops.h, as one table per path.
 *
 * Panel product (the SGEMM micro-kernel loop), for a panel of n <= nr columns:
 *   C[r][p] = epi(sum_{k < depth} A[r][k] * B[k][p])   for r < m, p < n
 * A is packed in tiles of mr rows (the last tile may have fewer): tile t starts at
 * a + t * mr * depth and holds its rows k-major, A[t * mr + r][k] = tile[k * rows_t + r].
 * B[k][p] = b[k * ldb + p]; with b_full every lane p < nr may be read (a zero-padded panel),
 * else only lanes p < n are. The sum runs over k in increasing order, one FMA (or, portable, one
 * multiply and one add) per k, so a value does not depend on its tile or lane.
 * epi: + bias[r] (bias_per_col false) or + bias[p] (true) when bias is not null, then
 * max(., 0) with relu (NaN gives 0, as MXNet's relu). C[r][p] = c[r * ldc + p].
 *
 * Im2col panel (one image, one group): col[k * nr + p] = the input tap k = (c, i, j) of output
 * pixel q0 + p (pixels row-major over (oy, ox)), 0 in the padding and for p >= n.
 *
 * Pool row: vertical max of n_rows conv rows (rows[r * row_stride + x], x < width) into
 * tmp[pad_w + x], then out[px] = max_{j < kernel_w} tmp[px * stride_w + j] for px < out_w.
 * tmp holds -FLT_MAX outside [pad_w, pad_w + width) (the caller fills it once) and is
 * tmp_floats long (PoolTmpFloats); n_rows = 0 gives -FLT_MAX everywhere.
 */
#ifndef BINMX_RT_FLOAT_KERNELS_H_
#define BINMX_RT_FLOAT_KERNELS_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

namespace binmx {
namespace rt {

struct PanelArgs {
  const float* a;
  int64_t m;
  int mr;
  int64_t depth;
  const float* b;
  int64_t ldb;
  int n;
  bool b_full;
  const float* bias;
  bool bias_per_col;
  bool relu;
  float* c;
  int64_t ldc;
};

struct Im2colArgs {  // x points at channel 0 of the group in one image
  const float* x;
  int64_t channels, in_h, in_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilate_h,
      dilate_w, out_w;
};

struct PoolRowArgs {
  const float* rows;
  int64_t n_rows, row_stride, width, kernel_w, stride_w, pad_w, out_w;
  float* tmp;
  float* out;
  // The same pooled row of `planes` planes (filters): plane i reads rows + i * plane_stride and
  // writes out + i * out_plane_stride (one call per pooled row, not one per filter).
  int64_t planes = 1, plane_stride = 0, out_plane_stride = 0;
};

// Direct (channels-last) conv row, for few input channels: no im2col. x points at the
// zero-padded input xp of one image and group, at padded row oy * stride_h; for ox < out_w
// (a multiple of direct_px; xp is wide enough) and f < filters (a multiple of 16):
//   out[ox * ld_pix + f] = epi(sum_{c, i, j} xp[c * chan_stride + i * dilate_h * row_stride +
//                                               ox * stride_w + j * dilate_w] * w[k * filters + f])
// with k = (c * kernel_h + i) * kernel_w + j summed in increasing order (one FMA each), epi =
// + bias[f] (when not null), then max(., 0) with relu. stride_w is 1 or 2.
struct DirectRowArgs {
  const float* x;
  int64_t chan_stride, row_stride, channels, kernel_h, kernel_w, stride_w, dilate_h, dilate_w;
  int64_t filters;
  const float* w;
  const float* bias;
  bool relu;
  float* out;
  int64_t ld_pix, out_w;
};

struct FloatKernels {
  const char* name;
  int nr;      // panel width (columns per tile)
  int max_mr;  // most rows in a tile
  void (*panel)(const PanelArgs& args);
  void (*im2col)(const Im2colArgs& args, int64_t q0, int n, float* col);
  void (*pool_row)(const PoolRowArgs& args);
  // The direct path (null where a kernel path has none; then every conv uses the panels).
  int direct_px;  // direct_row's out_w must be a multiple of this
  void (*direct_row)(const DirectRowArgs& args);
  // Channels-last max-pool, separable: hpool_cl pools one conv row along x,
  //   out[px * channels + c] = max_{j < kernel_w} tmp[(px * stride_w + j) * channels + c],
  // px < out_w, where tmp is the row with -FLT_MAX in its padding cells (channels a multiple of
  // 16); vmax folds one more row into a running max, out[i] = max(row[i], out[i]) for
  // i < count (a multiple of 16; NaN semantics those of vmaxps(row, out)).
  void (*hpool_cl)(const float* tmp, int64_t channels, int64_t kernel_w, int64_t stride_w,
                   int64_t out_w, float* out);
  void (*vmax)(const float* row, int64_t count, float* out);
  // out[c * ld_chan + p] = cl[p * ld_pix + c] for p < pixels, c < channels (a multiple of 16).
  void (*to_nchw)(const float* cl, int64_t pixels, int64_t ld_pix, int64_t channels, float* out,
                  int64_t ld_chan);
  // MaxPoolInterior (float_ops.h) for rows of at most 16 outputs reading at most 32 cells,
  // stride_w 1 or 2; null where a path has none (the Pooling layer's loops run instead).
  void (*max_pool_short)(const float* x, int64_t planes, int64_t h, int64_t w, int64_t kh,
                         int64_t kw, int64_t sh, int64_t sw, int64_t oh, int64_t ow, float* y);
};

const FloatKernels* PortableFloatKernels();
#ifdef BINMX_RT_BUILT_AVX2
const FloatKernels* Avx2FloatKernels();
#endif
#ifdef BINMX_RT_BUILT_AVX512
const FloatKernels* Avx512FloatKernels();
#endif
#ifdef BINMX_RT_BUILT_NEON
const FloatKernels* NeonFloatKernels();
#endif

// tmp length a pool row needs: room for every window and for a vector's overhang.
inline int64_t PoolTmpFloats(int64_t width, int64_t pad_w, int64_t kernel_w, int64_t stride_w,
                             int64_t out_w) {
  const int64_t windows = out_w * stride_w + kernel_w;
  const int64_t need = std::max(windows, pad_w + width);
  return (need + 2 * 64 + 15) / 16 * 16;
}

// Internal linkage on purpose: every ISA file compiles its own copy of these with its own
// flags, and no copy built with AVX-512 may ever stand in for the portable one.
namespace {

// Scalar strided copy with zeros outside [0, width).
inline void CopyRowScalar(float* dst, const float* row, int64_t width, int64_t ix0, int64_t stride,
                          int len) {
  for (int t = 0; t < len; ++t) {
    const int64_t ix = ix0 + t * stride;
    dst[t] = (ix >= 0 && ix < width) ? row[ix] : 0.0f;
  }
}

// The im2col loop shared by the kernel paths (each instantiates it with its own Ops).
// For each run of output pixels inside one output row and each input row (c, iy) it reads,
// the row is first split into its stride phases,
//   ph[phi * ld + t] = x_row[start + phi + stride * t]   (0 outside the row), t < len + qmax,
// with start = ox0 * stride - pad_w; tap j (offset j * dilate = qq * stride + phi) is then the
// contiguous run ph[phi * ld + qq ..][0 .. len). So the strided, bounds-checked reads happen once
// per input row instead of once per tap.
// Ops::Row(dst, nr, row, width, start, stride, dilate, kernel_w, len) may do a whole input row
// in registers instead (dst[j * nr + t] for j < kernel_w, t < len) and return true, or false.
// Ops::Extract(ph, ld, row, width, start, stride, count) fills the phases (count <= ld - 16);
// Ops::Copy(dst, src, len) copies len <= nr floats (it may read src[0 .. nr), never write past
// dst[len)).
template <class Ops>
inline void Im2colPanel(const Im2colArgs& a, int64_t q0, int n, int nr, float* col) {
  const int64_t taps = a.kernel_h * a.kernel_w;
  const int64_t depth = a.channels * taps;
  const int64_t s = a.stride_w;
  const int64_t qmax = (a.kernel_w - 1) * a.dilate_w / s;
  const int64_t ld = (nr + qmax + 15) / 16 * 16 + 16;
  constexpr int64_t kPhaseFloats = 4096;
  alignas(64) float ph[kPhaseFloats];
  const bool phased = s * ld <= kPhaseFloats;
  if (n < nr) {
    for (int64_t k = 0; k < depth; ++k) {
      std::memset(col + k * nr + n, 0, sizeof(float) * static_cast<size_t>(nr - n));
    }
  }
  int p = 0;
  while (p < n) {
    const int64_t q = q0 + p;
    const int64_t oy = q / a.out_w;
    const int64_t ox = q - oy * a.out_w;
    const int len = static_cast<int>(std::min<int64_t>(n - p, a.out_w - ox));
    const int64_t start = ox * s - a.pad_w;
    for (int64_t c = 0; c < a.channels; ++c) {
      for (int64_t i = 0; i < a.kernel_h; ++i) {
        const int64_t iy = oy * a.stride_h - a.pad_h + i * a.dilate_h;
        float* dst = col + (c * taps + i * a.kernel_w) * nr + p;
        if (iy < 0 || iy >= a.in_h) {
          for (int64_t j = 0; j < a.kernel_w; ++j) {
            std::memset(dst + j * nr, 0, sizeof(float) * static_cast<size_t>(len));
          }
          continue;
        }
        const float* row = a.x + (c * a.in_h + iy) * a.in_w;
        if (Ops::Row(dst, nr, row, a.in_w, start, s, a.dilate_w, a.kernel_w, len)) continue;
        if (phased) {
          Ops::Extract(ph, ld, row, a.in_w, start, s, len + qmax);
          for (int64_t j = 0; j < a.kernel_w; ++j) {
            const int64_t off = j * a.dilate_w;
            const int64_t qq = off / s;
            Ops::Copy(dst + j * nr, ph + (off - qq * s) * ld + qq, len);
          }
        } else {
          for (int64_t j = 0; j < a.kernel_w; ++j) {
            CopyRowScalar(dst + j * nr, row, a.in_w, start + j * a.dilate_w, s, len);
          }
        }
      }
    }
    p += len;
  }
}

// Scalar phase split (Ops::Extract's contract); stride 1 is a zero-padded copy.
inline void ExtractScalar(float* ph, int64_t ld, const float* row, int64_t width, int64_t start,
                          int64_t stride, int64_t count) {
  if (stride == 1) {
    const int64_t t0 = std::min(std::max<int64_t>(-start, 0), count);
    const int64_t t1 = std::max(std::min<int64_t>(width - start, count), t0);
    std::fill(ph, ph + t0, 0.0f);
    std::copy(row + start + t0, row + start + t1, ph + t0);
    std::fill(ph + t1, ph + count, 0.0f);
    return;
  }
  for (int64_t phi = 0; phi < stride; ++phi) {
    float* out = ph + phi * ld;
    for (int64_t t = 0; t < count; ++t) {
      const int64_t ix = start + phi + stride * t;
      out[t] = (ix >= 0 && ix < width) ? row[ix] : 0.0f;
    }
  }
}

// Scalar pool row of one plane (the reference behaviour of every pool_row).
inline void PoolRowScalarOne(const PoolRowArgs& a) {
  float* mid = a.tmp + a.pad_w;
  if (a.n_rows <= 0) {
    for (int64_t x = 0; x < a.width; ++x) mid[x] = std::numeric_limits<float>::lowest();
  } else {
    for (int64_t x = 0; x < a.width; ++x) mid[x] = a.rows[x];
    for (int64_t r = 1; r < a.n_rows; ++r) {
      const float* row = a.rows + r * a.row_stride;
      for (int64_t x = 0; x < a.width; ++x) mid[x] = row[x] > mid[x] ? row[x] : mid[x];
    }
  }
  for (int64_t px = 0; px < a.out_w; ++px) {
    const float* t = a.tmp + px * a.stride_w;
    float m = t[0];
    for (int64_t j = 1; j < a.kernel_w; ++j) m = t[j] > m ? t[j] : m;
    a.out[px] = m;
  }
}

// Calls one(args) for each plane of args (planes = 1 in what it receives).
template <typename One>
inline void ForEachPoolPlane(const PoolRowArgs& a, One one) {
  PoolRowArgs b = a;
  b.planes = 1;
  for (int64_t i = 0; i < a.planes; ++i) {
    b.rows = a.rows + i * a.plane_stride;
    b.out = a.out + i * a.out_plane_stride;
    one(b);
  }
}

inline void PoolRowScalar(const PoolRowArgs& a) { ForEachPoolPlane(a, PoolRowScalarOne); }

}  // namespace
}  // namespace rt
}  // namespace binmx

#endif  // BINMX_RT_FLOAT_KERNELS_H_

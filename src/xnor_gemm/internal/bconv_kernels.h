/*
 * binmx core (internal): the interface between the direct binary convolution driver
 * (bconv.cc) and its per-ISA kernel files bconv_kernel_{scalar,avx2,avx512,neon}.cc.
 *
 * Tile: filters [f0, f1) x output pixels [q0, q1) of one (image, group). For tap-word
 * k < kwords (k = (i * kw + j) * words + word), the input words of consecutive output pixels
 * q are consecutive: X_k[q] = planes[koff[k] + q] (bconv.cc builds the planes so). Then
 *     pop[f][q] = sum_k popcount(X_k[q] ^ w[f * kwords + k]),   dot = k_depth - 2 * pop
 *     dot -= ct[f * ct_stride + pid[q]]           (zero-padding correction; pid null: none)
 *     out[f * out_fstride + q] = float(dot) * alpha[f] + bias[f]  (+ residual[same index])
 * (alpha 1, bias 0 when null; a multiply then an add, never fused). pid[q] is the pixel's
 * border pattern, 0 <= pid[q] < ct_stride, pattern 0 = no padded tap (its ct entries are 0);
 * ct_stride >= 16, so a kernel may load 16 consecutive entries of a filter's row (and permute
 * them by pid) when n_patterns <= 16. The planes hold at least kVecSlack readable words past
 * every position a valid pixel reads, and pid holds zeros past q1, so a kernel may compute
 * whole vectors and store only the valid lanes.
 *
 * Pack: one word of n_ch <= 64 channels for `width` pixels (channel c at x + c * ch_stride):
 *     out[p] = OR_c ((scale ? x*scale[c] + shift[c] : x) < 0) << c
 * PackAffine: binmx::PackRows with the per-column affine (x[r][j] * scale[j] + shift[j] < 0).
 * PopRows: pop[r] = sum of popcounts of the `words` words of row r.
 *
 * Like kernels.h: kernel files must not define inline functions with external linkage.
 */
#ifndef BINMX_BCONV_KERNELS_H_
#define BINMX_BCONV_KERNELS_H_

#include <cstdint>

namespace binmx {
namespace internal {

constexpr int64_t kVecSlack = 64;

struct BconvTile {
  const uint64_t* planes;
  const int64_t* koff;
  int64_t kwords;
  const uint64_t* w;  // rows of kwords words; f indexes rows from here
  int64_t f0, f1, q0, q1;
  int32_t k_depth;
  const int32_t* pid;     // or null; pid[q] = border pattern of pixel q
  const int32_t* ct;      // ct[f * ct_stride + pattern]
  int64_t ct_stride;      // >= 16
  int64_t n_patterns;     // patterns in use (<= ct_stride)
  const float* alpha;     // indexed by f, or null
  const float* bias;      // indexed by f, or null
  const float* residual;  // same layout as out, or null
  float* out;             // out[f * out_fstride + q]
  int64_t out_fstride;
};

using BconvTileFn = void (*)(const BconvTile& t);
using BconvPackFn = void (*)(const float* x, int64_t ch_stride, int n_ch, int64_t width,
                             const float* scale, const float* shift, uint64_t* out);
using PackAffineFn = void (*)(const float* x, int64_t rows, int64_t k, int64_t ld,
                              const float* scale, const float* shift, uint64_t* out);
using PopRowsFn = void (*)(const uint64_t* w, int64_t rows, int64_t words, int32_t* pop);

struct BconvSpec {
  BconvTileFn tile;
  BconvPackFn pack;
  PackAffineFn pack_affine;
  PopRowsFn pop_rows;
};

BconvSpec ScalarBconv();
#ifdef BINMX_BUILT_AVX2
BconvSpec Avx2Bconv();
#endif
#ifdef BINMX_BUILT_AVX512
BconvSpec Avx512Bconv();
#endif
#ifdef BINMX_BUILT_NEON
BconvSpec NeonBconv();
#endif

}  // namespace internal
}  // namespace binmx

#endif  // BINMX_BCONV_KERNELS_H_

/*
 * binmx core (internal): the direct bit-serial k-bit convolution (docs/design.md §3, "Integer
 * k-bit forward"): the driver bsconv.cc, called by KbitConv2d (kbit.cc), and its per-ISA kernel
 * files bsconv_kernel_{scalar,avx2,avx512,neon}.cc. Quantisers and the result: kbit.h.
 *
 * Activation planes. For one (image, group), ka bit-plane images of the quantised input,
 * channels last, 64 channels a word: bit c % 64 of word c / 64 of plane a of a pixel is bit a
 * of the level la of channel c (0 outside the image, whatever the pad_value). Like the binary
 * convolution's planes (bconv.cc), they are stored column-shifted per tap column and row
 * phase, so that tap-word k (k = (i * kw + j) * words + wd) of consecutive output pixels q are
 * consecutive words: plane a of tap-word k of pixel q is planes[koff[k] + a * pstride + q].
 *
 * Tile: filters [f0, f1) x output pixels [q0, q1) of one (image, group), weights w[(f * kwb
 * + b) * kwords + k] = plane b of tap-word k of filter f (bit c % 64 = bit b of lw; filters
 * exist up to f1 rounded up to kBsconvFilterAlign, zero past the true ones):
 *   R[f][q] = sum_{k, a, b} popcount(X_a,k[q] & W_b[f][k]) << (a + b)     (= sum la * lw)
 *   D[f][q] = 2 R - b_max * l[q] + (pid ? ct[f * ct_stride + pid[q]] : 0)  (= sum la * mw)
 *   out_dot[f * out_fstride + q] = D, or out[f * out_fstride + q] = float(double(D) * ds[f])
 *   (+ bias[f]: one float add)
 * l[q] is the level sum of pixel q's receptive field, pid[q] its border pattern (0: no padded
 * tap, ct column 0 is 0) and ct the pad_value * A * (sum over the pattern's padded taps of mw)
 * of each filter, rows of ct_stride >= 16 entries (a kernel may load 16 and permute them by
 * pid when n_patterns <= 16). D fits int32 (kKbitMaxDepth). planes, l and pid hold at least
 * kBsconvSlack readable entries past every position a valid pixel reads, so a kernel may
 * compute whole vectors and store only the valid lanes.
 *
 * Pack: the levels of n_ch <= 64 channels (channel c at x + c * ch_stride) for `width`
 * pixels as ka plane words, out[a * out_stride + p] = OR_c ((la(x_c[p]) >> a) & 1) << c,
 * and sums[p] += sum_c la(x_c[p]); la(x) = rint(A * min(1, max(0, double(x)))), NaN -> 0.
 * thr[k] (k < A) is the largest float x with la(x) <= k (BitSerialThresholds), so that
 * la(x) = #{k : x > thr[k]} exactly, NaN and -inf included; a kernel may count instead.
 *
 * Like kernels.h: kernel files must not define inline functions with external linkage.
 */
#ifndef BINMX_BSCONV_KERNELS_H_
#define BINMX_BSCONV_KERNELS_H_

#include <cstdint>

#include "conv.h"
#include "xnor_gemm.h"

namespace binmx {

struct KbitArgs;
struct KbitWeights;

namespace internal {

constexpr int64_t kBsconvSlack = 64;
// Filter rows of the direct weights are padded to a multiple of this (the widest filter
// block of any kernel), with zero words.
constexpr int64_t kBsconvFilterAlign = 8;

struct BsconvTile {
  const uint64_t* planes;
  const int64_t* koff;
  int64_t kwords;
  int64_t pstride;
  int ka, kwb;
  const uint64_t* w;  // kwb plane rows of kwords words per filter; f indexes filters from here
  int64_t f0, f1, q0, q1;
  const int32_t* l;
  int32_t b_max;
  const int32_t* pid;  // or null
  const int32_t* ct;   // ct[f * ct_stride + pattern]
  int64_t ct_stride;   // >= 16
  int64_t n_patterns;  // <= ct_stride
  const double* ds;    // indexed by f
  const float* bias;   // indexed by f, or null
  float* out;          // out[f * out_fstride + q], or null with out_dot
  int32_t* out_dot;
  int64_t out_fstride;
};

using BsconvTileFn = void (*)(const BsconvTile& t);
using BsconvPackFn = void (*)(const float* x, int64_t ch_stride, int n_ch, int64_t width, int ka,
                              const float* thr, uint64_t* out, int64_t out_stride, int32_t* sums);

struct BsconvSpec {
  BsconvTileFn tile;
  BsconvPackFn pack;
};

BsconvSpec ScalarBsconv();
#ifdef BINMX_BUILT_AVX2
BsconvSpec Avx2Bsconv();
#endif
#ifdef BINMX_BUILT_AVX512
BsconvSpec Avx512Bsconv();
#endif
#ifdef BINMX_BUILT_NEON
BsconvSpec NeonBsconv();
#endif

// thr[0 .. 2^ka - 1) of the Pack contract.
void BitSerialThresholds(int ka, float* thr);
// Whether KbitConv2d takes the direct path for this bit-serial geometry (else the im2col one).
bool UseBitSerialDirect(const Conv2dParams& p);
// The direct weights of one group: w[(f * kwb + b) * kwords + k] from weight levels lt[d][f]
// (d = t * cg + c', filter innermost, rows of f_stride), filters [0, fg) and zero rows up to
// RoundUp(fg, kBsconvFilterAlign).
void PackBitSerialDirect(const uint8_t* lt, int64_t f_stride, int64_t fg, int64_t cg, int64_t taps,
                         int kwb, uint64_t* out);
// KbitConv2d on the direct path (weights prepared with `direct`); arguments checked.
void BitSerialConv2d(const KbitArgs& args, const KbitWeights& w, const Conv2dParams& p,
                     int threads);

}  // namespace internal
}  // namespace binmx

#endif  // BINMX_BSCONV_KERNELS_H_

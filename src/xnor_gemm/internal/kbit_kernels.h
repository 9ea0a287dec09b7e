/*
 * binmx core (internal): the interface between the k-bit driver (kbit.cc) and its per-ISA
 * kernel files kbit_kernel_{scalar,avx2,avx512}.cc. Formulas and quantisers: kbit.h.
 *
 * Tiles compute raw integer sums R for np pixels x nf filters (nf a multiple of 16), filters
 * innermost in memory and in the vector lanes, pixels broadcast:
 *   BitSerial: x[(p * words + wd) * ka + i] = bit plane i of word wd of pixel p's im2col row;
 *              w[(wd * kw + j) * fs + f]   = bit plane j of word wd of filter f;
 *              R[p * rs + f] = sum_{wd, i, j} popcount(x & w) << (i + j)   (= sum la * lw)
 *   Int8:      x[p * kq + k] = 4 u8 levels (depth 4k .. 4k + 3, little-endian bytes);
 *              kQuad weights w[k * fs + f] = 4 s8 (lw - 128) of the same depths;
 *              kPair weights w[(2k + h) * fs + f] = 2 s16 (lw - 128) of depths 4k + 2h, +1;
 *              R[p * rs + f] = sum_depth la * (lw - 128)
 * Planes: one row of n u8 levels (< 2^ka) -> ceil(n / 64) words x ka planes, [wd][i], bit
 *   d % 64 of word d / 64 of plane i = bit i of row[d]; tail bits 0.
 * Levels: out[i] = rint(A * min(1, max(0, double(x[i])))) (NaN -> 0), A = 2^ka - 1.
 * LevelsNhwc: the same for hw pixels of c channels (channel planes `stride` floats apart),
 *   written channels-last: out[q * c + ch] = level of x[ch * stride + q], q < hw (vector
 *   kernels: 16 x 16 byte transposes).
 * RowSum: sum of n u8 values.
 * Epilogue: for p < np, f < nf:
 *   D = 2 R[p * rs + f] + coff * L[p] + (corr ? corr[p * rs + f] : 0)   (exact, in double)
 *   out[p * os + f] (transposed: out[f * os + p]) = float(D * ds[f]) + bias[f]  (bias null:
 *   no add); the transposed form writes NCHW rows directly (8 x 8 transposes).
 * Like kernels.h: kernel files must not define inline functions with external linkage.
 */
#ifndef BINMX_KBIT_KERNELS_H_
#define BINMX_KBIT_KERNELS_H_

#include <cstdint>

namespace binmx {
namespace internal {

enum class Int8Format : int { kQuad = 0, kPair = 1 };

using BitSerialTileFn = void (*)(const uint64_t* x, int64_t np, int64_t words, int ka,
                                 const uint64_t* w, int kw, int64_t nf, int64_t fs, int32_t* r,
                                 int64_t rs);
using Int8TileFn = void (*)(const uint32_t* x, int64_t np, int64_t kq, const uint32_t* w,
                            int64_t nf, int64_t fs, int32_t* r, int64_t rs);
using PlanesFn = void (*)(const uint8_t* row, int64_t n, int ka, uint64_t* out);
using LevelsFn = void (*)(const float* x, int64_t n, int ka, uint8_t* out);
using LevelsNhwcFn = void (*)(const float* x, int64_t c, int64_t stride, int64_t hw, int ka,
                              uint8_t* out);
using RowSumFn = int64_t (*)(const uint8_t* row, int64_t n);
using KbitEpilogueFn = void (*)(const int32_t* r, const int32_t* corr, int64_t rs, const int64_t* l,
                                int64_t coff, int64_t np, int64_t nf, const double* ds,
                                const float* bias, float* out, int64_t os, bool transposed);

struct KbitSpec {
  BitSerialTileFn bitserial;
  Int8TileFn int8;
  Int8Format int8_format;
  PlanesFn planes;
  LevelsFn levels;
  LevelsNhwcFn levels_nhwc;
  RowSumFn row_sum;
  KbitEpilogueFn epilogue;
};

KbitSpec ScalarKbit();
#ifdef BINMX_BUILT_AVX2
KbitSpec Avx2Kbit();
#endif
#ifdef BINMX_BUILT_AVX512
// The int8 tile uses AVX512_VNNI (vpdpbusd): the driver swaps in the AVX2 tile (and its
// kPair weights) on a CPU without it.
KbitSpec Avx512Kbit();
#endif

}  // namespace internal
}  // namespace binmx

#endif  // BINMX_KBIT_KERNELS_H_

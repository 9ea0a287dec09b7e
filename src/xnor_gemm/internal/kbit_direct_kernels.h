/*
 * binmx core (internal): the interface between the direct int8 convolution for few input
 * channels (kbit_direct.cc, docs/design.md §3) and its per-ISA kernel files
 * kbit_direct_{scalar,avx512}.cc. Formulas and quantisers: kbit.h.
 *
 * Image: one image's activation levels, channels-last and padded: pixel (y, x) of the padded
 *   image (hp x wp, the convolution's padding stored as the level pad_value * A) at
 *   img[(y * wp + x) * c], followed by at least kDirectSlack readable bytes.
 * Row (output row oy, pixels ox0 <= ox < ox1; groups 1, dilate_w 1): the im2col row of
 *   output pixel ox is the kh segments of seg = kw * c bytes at
 *     img + ((oy * sh + i * dh) * wp + ox * sw) * c,  i < kh,
 *   one after the other (depth = kh * seg, the order of the packed weights), padded to kq
 *   quads. With kQuad weights w[k * fs + f] (4 s8 lw - 128, zero past the depth):
 *     R = sum_depth la * (lw - 128),  L = sum_depth la,  D = 2 R + coff L  (coff = 256 - B),
 *     d[ox * fs + f] = neg == null ? D : (D ^ neg[f]) - neg[f]  (neg[f] 0 or -1: D or -D),
 *   f < fs. |D| <= depth * 255 * 255 < 2^31 (the driver takes depth <= kDirectMaxDepth).
 * HMax: hp[px * fs + f] = max_{ox in [x0, x1)} d[ox * fs + f], x0 = max(px * s - pad, 0),
 *   x1 = min(px * s - pad + k, ow), px0 <= px < px1; a px with an empty window is not written.
 * VMax: out[i] = max_{r < nrows} rows[r][i], i < n (nrows >= 1).
 * Levels (c <= 4): the levels of n pixels of c channels (channel planes `stride` floats
 *   apart), channels-last: out[q * c + ch] = rint(A * clip(double x[ch * stride + q], 0, 1))
 *   (NaN -> 0), as kbit_kernels.h's LevelsNhwc.
 * Epilogue: for p < np, f < nf, with D = d[p * fs + f] negated where neg[f] = -1 (neg null:
 *   as it is): v = float(double(D) * ds[f]) then + bias[f] (bias null: no add), then with
 *   relu v > 0 ? v : (v == v ? 0 : v); written to out[f * os + p] (an NCHW row).
 * Like kernels.h: kernel files must not define inline functions with external linkage.
 */
#ifndef BINMX_KBIT_DIRECT_KERNELS_H_
#define BINMX_KBIT_DIRECT_KERNELS_H_

#include <cstdint>

#include "conv.h"
#include "kbit.h"
#include "kbit_kernels.h"
#include "xnor_gemm.h"

namespace binmx {
namespace internal {

// Readable bytes after an image (the row builders load whole 16 / 32 / 64-byte vectors).
constexpr int64_t kDirectSlack = 64;
// Most output pixels whose im2col rows a row kernel builds at once.
constexpr int64_t kDirectChunk = 48;

struct DirectRowArgs {
  const uint8_t* img = nullptr;
  int64_t wp = 0, c = 0, kh = 0, kw = 0, sh = 1, sw = 1, dh = 1;
  const uint32_t* w = nullptr;  // kQuad weights [kq][fs]
  int64_t kq = 0, fs = 0, coff = 0;
  const int32_t* neg = nullptr;  // [fs] or null
};

// D of pixels [ox0, ox1) of output row oy into d[ox * fs + f]; rows: scratch of
// kDirectChunk * kq * 4 + kDirectSlack bytes.
using DirectRowFn = void (*)(const DirectRowArgs& a, int64_t oy, int64_t ox0, int64_t ox1,
                             uint8_t* rows, int32_t* d);
using HMaxFn = void (*)(const int32_t* d, int64_t ow, int64_t fs, int64_t k, int64_t s, int64_t pad,
                        int64_t px0, int64_t px1, int32_t* hp);
using VMaxFn = void (*)(const int32_t* const* rows, int64_t nrows, int64_t n, int32_t* out);
using DirectLevelsFn = void (*)(const float* x, int64_t c, int64_t stride, int64_t n, int ka,
                                uint8_t* out);
using DirectEpilogueFn = void (*)(const int32_t* d, int64_t np, int64_t nf, int64_t fs,
                                  const int32_t* neg, const double* ds, const float* bias,
                                  bool relu, float* out, int64_t os);

struct KbitDirectSpec {
  DirectRowFn row;  // null: the driver's row on the path's int8 tile (any weight format)
  HMaxFn hmax;
  VMaxFn vmax;
  DirectEpilogueFn epilogue;
  DirectLevelsFn levels;  // c <= 4; null: the path's LevelsNhwc
};

KbitDirectSpec ScalarKbitDirect();
#ifdef BINMX_BUILT_AVX512
// Its row kernel uses AVX512_VNNI: the driver uses it only where the CPU has it (and the
// weights are kQuad).
KbitDirectSpec Avx512KbitDirect();
#endif

// The k-bit kernels of a path (kbit.cc).
KbitSpec KbitFor(Isa isa);

// The driver (kbit_direct.cc): whether it takes (w, p), and the convolution (then relu, then
// the max pool; pool null: none) with arguments already checked; out_dot only without relu or
// pool. KbitConv2d calls it.
bool DirectApplies(const KbitWeights& w, const Conv2dParams& p);
void DirectConv2d(const KbitArgs& args, const KbitWeights& w, const Conv2dParams& p, bool relu,
                  const KbitMaxPool* pool, int threads);

}  // namespace internal
}  // namespace binmx

#endif  // BINMX_KBIT_DIRECT_KERNELS_H_

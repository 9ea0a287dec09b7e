/*
 * binmx core: integer k-bit convolution and dense layer (DoReFa quantisation, docs/design.md §3),
 * no float im2col, no fake-quant floats. Framework-free (no MXNet, no Python).
 *
 * Quantisers, exactly as the operators define them (op_common.h):
 *   activation, act_bit ka in 2..8:  a = q(clip(x, 0, 1), ka) = la / A,  A = 2^ka - 1,
 *                                     la = rint(A * clip(double x, 0, 1)) in [0, A]
 *                                     (rint half to even; NaN clips to 0)
 *   weight, weight_bit kw in 2..8:   w = 2 q(tanh(W) / (2 max|tanh W|) + 1/2, kw) - 1 = mw / B,
 *                                     B = 2^kw - 1, mw = 2 lw - B odd in [-B, B],
 *                                     lw = rint(B * (tanh(W) / (2 max|tanh W|) + 1/2)) (double;
 *                                     max over the whole tensor; all-zero tensor: lw = rint(B/2))
 *   weight_bit 1:                    w = sgn(W) = mw, B = 1, lw = (W >= 0) (NaN gives +1)
 * Convolution (layouts and Conv2dParams of conv.h, NCHW / OIHW):
 *   D[n][f][oy][ox] = sum_{c', i, j} lpad[n][g*Cg+c'][oy*sh-ph+i*dh][ox*sw-pw+j*dw]
 *                                     * mw[f][c'][i][j]
 *   lpad = la extended by pad_value * A (pad_value 0: zero padding; +-1: the constant +-1 border
 *   of the float path, which pads the quantised activation with the float pad_value)
 *   out = float(double(D) * ds[f]) + bias[f],  ds[f] = double(alpha[f]) / (A * B)  (alpha 1 when
 *   null): D is exact, D * ds rounds once in double, then once to float, so the value before the
 *   bias add is within 1 ulp of the exact alpha * sum a * w (the fake-quant result computed
 *   without rounding); the bias add is one float add, as in the float path.
 * Dense: out[m][h] = float(double(D[m][h]) * ds[h]) + bias[h], D = sum_d la[m][d] * mw[h][d].
 *
 * Paths (KbitPathFor):
 *   bit-serial, ka in {2,3,4}, kw in {1,2,3,4}: la = sum_i 2^i a_i and lw = sum_j 2^j b_j as bit
 *     planes, R = sum_{i,j} 2^(i+j) popcount(a_i AND b_j) = sum la * lw, and D = 2 R - B * L
 *     (L = sum la over the receptive field); a convolution as a direct convolution over
 *     channels-last plane images (bsconv_kernels.h) unless C/g is small for its kernel;
 *   int8, ka, kw in 2..8 otherwise (kw 1 too): u8 activations times s8 weights lw - 128
 *     (AVX-512 VNNI vpdpbusd; AVX2 pmaddwd on 16-bit pairs; portable loops), R = sum la (lw - 128),
 *     D = 2 R + (256 - B) L.
 *   Padding with pad_value +-1 adds pad_value * A * sum over the padded taps of mw (per filter).
 * Layout inside (kbit.cc): activations quantised once into channels-last u8 levels, im2col rows
 * of u8 levels per output pixel (depth index (i * kw + j) * Cg + c'), weights stored with filters
 * innermost so one vector holds 8 (64-bit lanes) or 16 (32-bit lanes) filters and a pixel's
 * words are broadcast. Few input channels (KbitDirectApplies, int8 path): kbit_direct.cc, the
 * same D from padded channels-last levels; the direct bit-serial convolution (bsconv.cc) packs
 * the input once into plane words and keeps output pixels in the vector lanes. Results are
 * identical for every ISA, path and thread count.
 * Functions check their arguments and throw std::invalid_argument.
 */
#ifndef BINMX_KBIT_H_
#define BINMX_KBIT_H_

#include <cstdint>
#include <vector>

#include "conv.h"
#include "xnor_gemm.h"

namespace binmx {

enum class KbitPath : int { kNone = 0, kBitSerial = 1, kInt8 = 2 };

// "float" (kNone: no integer kernel, the caller keeps its float path), "bitserial", "int8".
const char* KbitPathName(KbitPath path);

// Most depth (kh * kw * C/groups, or the dense depth) an integer kernel takes: the int8 path's
// 32-bit accumulators hold depth * 255 * 128 < 2^31.
constexpr int64_t kKbitMaxDepth = 65536;

// The integer path for (act_bit, weight_bit, depth), or kNone.
KbitPath KbitPathFor(int act_bit, int weight_bit, int64_t depth);

// Weight levels lw (see the file comment) of n weights quantised as one tensor, into out[n].
void KbitWeightLevels(const float* w, int64_t n, int weight_bit, uint8_t* out);

// Activation levels la of n values (act_bit 2..8), into out[n]; uses the best path of `isa`.
void KbitActLevels(const float* x, int64_t n, int act_bit, uint8_t* out, Isa isa);

// Weights prepared for one path and ISA: quantised, reordered, with the per-tap sums the
// +-1 padding needs. Build with PrepareKbitConv / PrepareKbitDense; read-only afterwards.
struct KbitWeights {
  KbitPath path = KbitPath::kNone;
  Isa isa = Isa::kScalar;
  int act_bit = 0, weight_bit = 0;
  int64_t groups = 1, filters_per_group = 0, f_pad = 0;  // f_pad: filters_per_group rounded to 16
  int64_t taps = 1, group_channels = 0, depth = 0;       // depth = taps * group_channels
  int64_t units = 0;             // bit-serial: words of 64 depth elements; int8: quads of 4
  bool pairs = false;            // int8 weights as 2 x s16 per lane (the AVX2 tile), else 4 x s8
  bool direct = false;           // bit-serial convolution on the direct path (bsconv.cc)
  std::vector<uint64_t> planes;  // bit-serial im2col / dense: [g][word][j][f_pad]
  // bit-serial direct: [g][f, padded to 8][j][tap t][word of C/g], bit c % 64 = bit j of lw
  std::vector<uint64_t> direct_planes;
  std::vector<uint32_t> packed;   // int8: [g][quad (x2 with pairs)][f_pad] of lw - 128
  std::vector<int32_t> tap_sums;  // [g][tap][f_pad]: sum over c' of mw
};

// From OIHW weight levels lw (KbitWeightLevels of the float weights, or stored integers) for
// the geometry p. Throws when KbitPathFor gives kNone or `isa` is unavailable.
void PrepareKbitConvLevels(const uint8_t* levels, const Conv2dParams& p, int act_bit,
                           int weight_bit, Isa isa, KbitWeights* out);
// Float OIHW weights: KbitWeightLevels over the whole tensor, then the above.
void PrepareKbitConv(const float* w, const Conv2dParams& p, int act_bit, int weight_bit, Isa isa,
                     KbitWeights* out);
// Dense weights (hidden, depth): a 1x1 convolution of depth channels.
void PrepareKbitDenseLevels(const uint8_t* levels, int64_t depth, int64_t hidden, int act_bit,
                            int weight_bit, Isa isa, KbitWeights* out);
void PrepareKbitDense(const float* w, int64_t depth, int64_t hidden, int act_bit, int weight_bit,
                      Isa isa, KbitWeights* out);

struct KbitArgs {
  const float* x = nullptr;      // conv (N, C, H, W); dense (rows, depth)
  const float* alpha = nullptr;  // (F,) or null
  const float* bias = nullptr;   // (F,) or null
  float* out = nullptr;          // conv (N, F, OH, OW); dense (rows, F); must not alias x
  int32_t* out_dot = nullptr;    // instead of out: the exact integers D (tests; |D| < 2^31)
};

// The k-bit convolution above with weights prepared for p (config.isa must be w.isa).
void KbitConv2d(const KbitArgs& args, const KbitWeights& w, const Conv2dParams& p,
                const GemmConfig& config);
// The k-bit dense layer above.
void KbitDense(const KbitArgs& args, const KbitWeights& w, int64_t rows, const GemmConfig& config);

// Direct int8 convolution (kbit_direct.cc, docs/design.md §3): KbitConv2d runs it for the int8
// path with groups 1, dilate_w 1, pad_value 0 or +1, C * kw <= 64 and depth <= 4096 (an 8-bit
// stem); the same results as the general kernel. Whether it takes (w, p):
bool KbitDirectApplies(const KbitWeights& w, const Conv2dParams& p);

// MXNet's max Pooling (pool_type "max", not global) behind a convolution: output size
// 1 + floor((H + 2 pad - kernel) / stride), or ceil with full_convention; a window is clipped
// to the input (padding never wins); an empty window gives -inf.
struct KbitMaxPool {
  int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  bool full_convention = false;
};

// out = maxpool(relu(conv)) (relu when `relu`, the pool when pool is not null) of the k-bit
// convolution above, as the separate layers compute it: equal as values (==). Under the direct
// kernel with finite alpha and bias the pool is taken on the integers D before the epilogue
// (kbit_direct.cc); otherwise the convolution goes to a per-thread buffer first. out is
// (N, F, PH, PW); out_dot is not supported.
void KbitConv2dReluPool(const KbitArgs& args, const KbitWeights& w, const Conv2dParams& p,
                        bool relu, const KbitMaxPool* pool, const GemmConfig& config);

}  // namespace binmx

#endif  // BINMX_KBIT_H_

/*
 * binmx core: convolution geometry (Conv2dParams) and the packed-weight format shared by the
 * binary convolution (bconv.h: direct, channels-last, no im2col) and the float math of the k-bit
 * forward and of every backward pass (float_conv.h). Framework-free (no MXNet, no Python).
 *
 * Layouts
 *   activations  NCHW float32, x[n][c][h][w]
 *   float weight OIHW float32, W[f][c'][i][j] with c' < C/groups (filter f belongs to group
 *                f / (F/groups) and reads channels g*C/groups .. (g+1)*C/groups - 1)
 *   packed conv  uint64 W[f][i][j][word], words = ceil((C/groups)/64); channel c' of tap (i, j)
 *   weight       is bit c' % 64 of word c' / 64; bit 1 = -1 (sgn(w) < 0); tail bits 0.
 *   packed dense uint64 W[h][word], words = ceil(D/64), same bit convention.
 *
 * Binary convolution (act_bit = weight_bit = 1), computed in bconv.h:
 *   out[n][f][y][x] = alpha[f] * sum_{c', i, j} sgn(xpad[n][g*Cg+c'][y*sh-ph+i*dh][x*sw-pw+j*dw])
 *                                                 * sgn(W[f][c'][i][j]) + bias[f]
 * where xpad is the input extended by pad_value: 0 = zero padding (exactly Convolution's),
 * +1 or -1 = a constant +-1 border. Every term is an integer, so the result equals
 * Convolution(sgn x, sgn W) exactly (with alpha = 1).
 * Functions check their arguments and throw std::invalid_argument.
 */
#ifndef BINMX_CONV_H_
#define BINMX_CONV_H_

#include <cstdint>

#include "xnor_gemm.h"

namespace binmx {

struct Conv2dParams {
  int64_t batch = 1;
  int64_t channels = 1;
  int64_t in_h = 1;
  int64_t in_w = 1;
  int64_t num_filter = 1;
  int64_t kernel_h = 1;
  int64_t kernel_w = 1;
  int64_t stride_h = 1;
  int64_t stride_w = 1;
  int64_t pad_h = 0;
  int64_t pad_w = 0;
  int64_t dilate_h = 1;
  int64_t dilate_w = 1;
  int64_t groups = 1;
  int pad_value = 0;  // 0 (zero padding), +1 or -1

  int64_t OutH() const { return (in_h + 2 * pad_h - dilate_h * (kernel_h - 1) - 1) / stride_h + 1; }
  int64_t OutW() const { return (in_w + 2 * pad_w - dilate_w * (kernel_w - 1) - 1) / stride_w + 1; }
  int64_t GroupChannels() const { return channels / groups; }
  int64_t GroupFilters() const { return num_filter / groups; }
  // uint64 words per tap of a packed weight row: ceil((C/groups)/64).
  int64_t TapWords() const { return WordsFor(channels / groups); }
  // Float weights per filter: C/groups * kh * kw.
  int64_t FilterSize() const { return (channels / groups) * kernel_h * kernel_w; }
  // Row phases of the direct convolution's planes: min(stride_h, in_h + 2 pad_h) (a stride
  // past the padded input has one phase per row that exists).
  int64_t Phases() const {
    const int64_t hp = in_h + 2 * pad_h;
    return stride_h < hp ? stride_h : hp;
  }
};

// Upper bounds of the geometry (docs/reliability.md): every size field (batch,
// channels, in_h, in_w, num_filter, kernel, pad, groups) is at most kMaxConvDim, and every
// product that sizes a buffer (input, output, float weights, packed weight words, the direct
// convolution's planes and packing row, the float path's per-image im2col block) is at most
// kMaxConvElements elements. stride and dilate are only required to be positive: a stride
// larger than the padded input gives one output row, and the dilated kernel extent
// dilate * (kernel - 1) + 1 must fit the padded input (computed without overflow). All
// arithmetic is in int64 with overflow-checked products (__builtin_mul_overflow), so no
// attribute value, however large, makes a check wrap around.
constexpr int64_t kMaxConvDim = (int64_t{1} << 31) - 1;
constexpr int64_t kMaxConvElements = int64_t{1} << 40;

// Throws std::invalid_argument naming the first bad field or product (its name and value):
// sizes outside [1, kMaxConvDim] (batch and pad: [0, kMaxConvDim]), stride or dilate < 1,
// channels or num_filter not divisible by groups, pad_value not in {0, 1, -1}, a dilated
// kernel larger than the padded input, or a buffer of more than kMaxConvElements elements.
// The single complete check: BinaryConv2d, PackConvWeights(Fast), UnpackConvWeights, the
// float convolutions, the operators and the runtime all rely on it; after it, every index
// and size product of those functions fits int64.
void ValidateConv2dParams(const Conv2dParams& p);

// The checks of ValidateConv2dParams that do not read batch, channels, in_h or in_w (the
// attributes alone: kernel, stride, dilate, pad, num_filter, groups, pad_value, and the
// dilated kernel extent fitting 64 bits), for shape inference with an unknown input shape.
void ValidateConv2dAttrs(const Conv2dParams& p);

// Words of the direct binary convolution's input planes for the whole batch (bconv.cc):
// batch * groups * kernel_w * Phases() * TapWords() * (ceil((in_h + 2 pad_h) / phases) * OutW()
// + slack), phases = min(stride_h, in_h + 2 pad_h). Valid only after ValidateConv2dParams.
int64_t BconvPlaneWords(const Conv2dParams& p);

// Number of uint64 words of the packed weight: num_filter * kh * kw * TapWords().
int64_t PackedConvWeightWords(const Conv2dParams& p);

// OIHW float weights -> packed (F, kh, kw, TapWords()) words (bit = w < 0). A plain loop: the
// reference that the vectorised PackConvWeightsFast (bconv.h, what the operators use) is
// tested against (tests/test_bconv_core.py, tests/bconv_sanitizer_test.cc).
void PackConvWeights(const float* w, const Conv2dParams& p, uint64_t* out);

// Packed weights -> OIHW +-1 floats (the inverse of PackConvWeights on the signs).
void UnpackConvWeights(const uint64_t* words, const Conv2dParams& p, float* w);

// The binary convolution itself (direct, channels-last, no im2col) is in bconv.h.
// The float helpers (k-bit forward, STE gradients) live in float_conv.h (src/float/, the
// binmx_float target on OpenBLAS).

}  // namespace binmx

#endif  // BINMX_CONV_H_

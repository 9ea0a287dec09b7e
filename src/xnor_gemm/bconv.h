/*
 * binmx core: direct binary (xnor) 2-D convolution and dense layer, no float im2col.
 *
 * Computes, for act_bit = weight_bit = 1 (conv.h has the layouts and Conv2dParams):
 *   a[n][c][y][x] = sgn(x[n][c][y][x] * in_scale[c] + in_shift[c])     (input affine, optional;
 *                   without it sgn(x)); the product and the sum are rounded separately
 *                   (float32, never fused), sgn(v) = -1 iff v < 0 (so -0.0 and NaN give +1)
 *   out[n][f][oy][ox] = float(dot) * alpha[f] + bias[f] (+ residual[n][f][oy][ox])
 *   dot = sum_{c', i, j} apad[n][g*Cg+c'][oy*sh-ph+i*dh][ox*sw-pw+j*dw] * sgn(W[f][c'][i][j])
 * apad = a extended by pad_value (0: zero padding, exactly Convolution's; +1 / -1 constants);
 * alpha 1 and bias 0 when null; the float epilogue is a multiply then an add (then the
 * residual add), so every ISA and thread count gives the same bits.
 *
 * Algorithm (see bconv.cc): one vectorised pass packs the input into per-pixel channel words
 * (channels last, 64 channels a word, padded border = pad word), stored as kw x stride_h
 * column-shifted planes so that the taps of consecutive output pixels are consecutive words;
 * the kernel reads the weights in the packed contract layout (F, kh, kw, words) as they are,
 * keeps FB filters x PV vectors of output pixels in registers, accumulates
 * popcount(x XOR w) in integers, subtracts the zero-padding correction of border pixels
 * (sum of the filter's +-1 weights over the padded taps, from a small per-call table) and
 * writes NCHW floats. Whole batch in one call, parallel over (image, group, pixel block,
 * filter block) with ParallelFor.
 *
 * Packed chaining (inference, groups = 1). With x_bits the activations come packed instead
 * of from x: bit c % 64 of word c / 64 of pixel (n, y, x) set means a = -1 (bits past C are
 * ignored; no input affine). With out_bits the output is not written as floats: bit f % 64 of
 * word f / 64 of output pixel (n, oy, ox) is set iff out * out_scale[f] + out_shift[f] < 0
 * (out the float value above, product and sum rounded separately), which is exactly the bit
 * the next layer's packing pass would take from that float output with the input affine
 * (out_scale, out_shift); no residual.
 *
 * Dense: out[m][h] = float(sum_d sgn(x[m][d] * s[d] + t[d]) sgn(W[h][d])) * alpha[h] + bias[h].
 * Packed weights: bits past C/groups in a tap's last word (past depth for dense) are ignored
 * (masked on a copy when any is set), like those of packed inputs, so the result stays exact.
 * Functions check their arguments and throw std::invalid_argument.
 */
#ifndef BINMX_BCONV_H_
#define BINMX_BCONV_H_

#include <cstdint>
#include <vector>

#include "conv.h"
#include "xnor_gemm.h"

namespace binmx {

// What BinaryConv2d derives from the weights and the geometry alone: the weights with their
// tail bits masked (or a pointer to them), the taps' word offsets and the zero-padding
// correction table. Built by every call unless the caller prepared it once
// (PrepareBinaryConv) and passes it in BinaryConvArgs::tables: an inference engine runs a
// layer many times with the same weights and shape.
struct BinaryConvTables {
  Conv2dParams p{};              // the geometry it was built for (batch not compared)
  const uint64_t* w = nullptr;   // masked weights: w_packed itself or w_copy's data
  std::vector<uint64_t> w_copy;  // the masked copy, when w_packed had tail bits set
  std::vector<int64_t> koff;     // per tap word: its offset in the planes
  std::vector<int32_t> pid, ct;  // pattern per output pixel (+ slack), ct[f][pattern]
  int64_t ct_stride = 16, n_patterns = 1;
  bool corrected = false;  // pid / ct in use (zero padding with border pixels)
};

// Builds the tables for weights w_packed (kept alive and unchanged by the caller while the
// tables are used) and geometry p; isa picks the popcount kernel (results do not depend on it).
void PrepareBinaryConv(const uint64_t* w_packed, const Conv2dParams& p, Isa isa,
                       BinaryConvTables* out);

struct BinaryConvArgs {
  const float* x = nullptr;            // (N, C, H, W)
  const uint64_t* w_packed = nullptr;  // (F, kh, kw, TapWords()) contract layout
  const float* alpha = nullptr;        // (F,) or null
  const float* bias = nullptr;         // (F,) or null
  const float* in_scale = nullptr;     // (C,) or null; given together with in_shift
  const float* in_shift = nullptr;     // (C,) or null
  const float* residual = nullptr;     // (N, F, OH, OW) or null, added last
  float* out = nullptr;                // (N, F, OH, OW); must not alias x or residual
  // Packed activations between two binary layers (groups = 1 only; see "Packed chaining"):
  const uint64_t* x_bits = nullptr;  // instead of x: (N, H, W, WordsFor(C)) sign words
  uint64_t* out_bits = nullptr;      // instead of out: (N, OH, OW, WordsFor(F)) sign words
  const float* out_scale = nullptr;  // (F,), with out_bits
  const float* out_shift = nullptr;  // (F,), with out_bits
  // Prepared tables for this geometry (PrepareBinaryConv); w_packed is then not read. Null:
  // built per call.
  const BinaryConvTables* tables = nullptr;
};

// The direct binary convolution above.
void BinaryConv2d(const BinaryConvArgs& args, const Conv2dParams& p, const GemmConfig& config);

struct BinaryDenseArgs {
  const float* x = nullptr;            // (rows, depth)
  const uint64_t* w_packed = nullptr;  // (hidden, WordsFor(depth))
  const float* alpha = nullptr;        // (hidden,) or null
  const float* bias = nullptr;         // (hidden,) or null
  const float* in_scale = nullptr;     // (depth,) or null; given together with in_shift
  const float* in_shift = nullptr;     // (depth,) or null
  float* out = nullptr;                // (rows, hidden)
};

// The binary dense layer above: rows packed once (vectorised), one xnor GEMM with the epilogue
// fused (rows = 1: straight into out).
void BinaryDense(const BinaryDenseArgs& args, int64_t rows, int64_t depth, int64_t hidden,
                 const GemmConfig& config);

// OIHW float weights -> packed (F, kh, kw, TapWords()) words (bit = w < 0), vectorised
// (same bits as PackConvWeights, its tested reference).
void PackConvWeightsFast(const float* w, const Conv2dParams& p, uint64_t* out);

}  // namespace binmx

#endif  // BINMX_BCONV_H_

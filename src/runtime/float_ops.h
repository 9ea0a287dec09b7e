/*
 * binmx runtime: the float layers a binary network keeps -- convolution (+ bias + relu, with an
 * optional max-pool fused behind it) and the dense (FullyConnected) layer.
 *
 * Layouts: input NCHW, weight OIHW (F, C/groups, kh, kw), output NCHW; dense x (rows, depth),
 * W (hidden, depth), y (rows, hidden), all row-major float32.
 *
 * Convolution (MXNet Convolution, cross-correlation, zero padding):
 *   out[n][f][oy][ox] = sum_{c < C/G, i < kh, j < kw} w[f][c][i][j] *
 *                       x[n][g * C/G + c][oy * sh - ph + i * dh][ox * sw - pw + j * dw]
 *   (g = f / (F/G), taps outside the input count 0), then + bias[f], then max(., 0) with relu,
 *   then max-pool (MXNet Pooling pool_type='max': a window cell in the padding never wins; a
 *   window with no cell inside the input gives -FLT_MAX, as MXNet 1.9.1 does).
 * Dense: y[r][h] = sum_d x[r][d] * W[h][d] + bias[h], then max(., 0) with relu.
 *
 * Method: register-blocked SGEMM micro-kernels per ISA (float_gemm_avx512.cc: 14 x 32 FMA
 * tiles; float_gemm_avx2.cc: 6 x 16; float_gemm_neon.cc: 6 x 16; a portable 4 x 16 / 4 x 8
 * one in float_ops.cc).
 * - Panels (any geometry): the weights are packed once into tiles of filters; a panel of output
 *   pixels is im2col'ed into per-thread scratch (a 1x1 stride-1 unpadded conv reads the input
 *   itself) and multiplied by every filter tile while in cache, bias and relu in the epilogue.
 * - Direct (AVX-512, <= 8 input channels a group, filters a group a multiple of 16, stride 1 or
 *   2 along x: the ResNet stem, LeNet's conv): no im2col; 14 output pixels (and one even
 *   remainder tile) x 32 filters FMA tiles broadcast
 *   the zero-padded input and produce channels-last rows, transposed into NCHW by 16 x 16
 *   blocks.
 * With a pool, the conv rows a pooled row needs are computed into a small per-thread buffer and
 * pooled at once (a row shared by two windows is kept, not recomputed, except at the start of a
 * thread's chunk). Every output value is summed over k = (c, i, j) in one fixed order by one
 * task, so the result is identical for every thread count; different ISAs differ in rounding
 * (FMA vs multiply + add).
 */
#ifndef BINMX_RT_FLOAT_OPS_H_
#define BINMX_RT_FLOAT_OPS_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "rt_common.h"
#include "xnor_gemm.h"

namespace binmx {
namespace rt {

struct FloatConvGeometry {  // NCHW input, OIHW weight (F, C/groups, kh, kw), NCHW output
  int64_t batch, channels, in_h, in_w, filters, kernel_h, kernel_w,
      stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilate_h = 1, dilate_w = 1, groups = 1;
  // MXNet Convolution: (in + 2 * pad - (dilate * (kernel - 1) + 1)) / stride + 1; 0 where that
  // is not a positive size (or a field is out of range).
  int64_t OutH() const;
  int64_t OutW() const;
};

struct MaxPoolSpec {  // MXNet Pooling(pool_type='max'), applied after bias + relu
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h = 0, pad_w = 0;
  bool full_convention = false;
  // Output size (MXNet 1.9.1): valid 1 + floor((H + 2p - k) / s), full 1 + ceil((H + 2p - k) / s)
  // (no trimming of a last window that starts in the padding). MXNet requires p < k and
  // k <= H + 2p; so does FloatConv.
};

// Which kernel path an Isa value maps to here: "avx512", "avx2" or "portable" on x86-64 (a path
// that was not built or that this CPU lacks falls back to the next one down); "neon" for every
// value on aarch64, where Advanced SIMD is baseline.
const char* FloatPathName(binmx::Isa isa);

struct FloatKernels;  // float_kernels.h

class FloatConv {
 public:
  // Validates (Error for bad or overflowing geometry), prepacks the weights into the kernel's
  // layout. bias: (F,) or null. relu: max(., 0) after the bias. pool: nullable, fused after relu.
  FloatConv(const FloatConvGeometry& g, const float* weight, const float* bias, bool relu,
            const MaxPoolSpec* pool, binmx::Isa isa);
  std::vector<int64_t> OutputShape() const;  // NCHW, after the pool
  size_t ScratchBytes(int threads) const;    // scratch one Run needs (threads >= 1)
  // x: NCHW input, y: NCHW output (never aliasing x). const: several threads may Run at once
  // with their own scratch.
  void Run(const float* x, float* y, void* scratch, int threads) const;
  const char* PathName() const;  // the kernel path (FloatPathName)
  // The method: "direct" (channels-last, few input channels), "panels" (im2col panels) or
  // "panels-1x1" (the input read as the im2col matrix).
  const char* Method() const;

 private:
  void ComputeRows(const float* x, int64_t n, int64_t q0, int64_t count, float* c, int64_t ldc,
                   float* col) const;
  void DirectRow(const float* xpad, int64_t n, int64_t oy, float* cl) const;
  void RunPanels(const float* x, float* y, float* scratch, int threads) const;
  void RunDirect(const float* x, float* y, float* scratch, int threads) const;

  FloatConvGeometry g_;
  bool relu_;
  bool has_pool_;
  MaxPoolSpec pool_{};
  const FloatKernels* kern_;
  bool direct_path_ = false;  // the kernel path's direct channels-last conv (few channels)
  std::vector<float> wpack_;  // panels: per group, tiles of mr_ filters, k-major in a tile;
                              // direct: per group [k][filters / groups]
  std::vector<float> bias_;   // empty: none
  int mr_ = 0;
  bool direct_ = false;  // panels, 1x1 stride 1 unpadded: the input is the im2col matrix
  int64_t out_h_, out_w_, pool_h_ = 0, pool_w_ = 0;
  int64_t cg_, fg_, kg_;                      // channels and filters per group, K = cg * kh * kw
  int64_t buf_rows_ = 0;                      // conv rows the pool buffer holds
  int64_t xp_h_ = 0, xp_w_ = 0, out_wr_ = 0;  // direct: padded input, out_w rounded up
  // Scratch: `shared_floats_` once (direct: the padded input), then per thread the parts below
  // (each a multiple of 16 floats).
  int64_t shared_floats_ = 0, col_floats_ = 0, buf_floats_ = 0, tmp_floats_ = 0, out_floats_ = 0;
};

// MXNet's max-pool of `planes` NCHW planes (h, w) whose windows all lie inside the input (no
// padding; oh, ow the output size): y[p][oy][ox] = the window's cells in (ky, kx) order folded
// by m = (v > m || v != v) ? v : m from the first cell (NaN propagates). Returns false, writing
// nothing, when the path of isa has no kernel for this shape (rows of at most 16 outputs
// reading at most 32 cells, stride_w 1 or 2, on AVX-512).
bool MaxPoolInterior(const float* x, int64_t planes, int64_t h, int64_t w, int64_t kh, int64_t kw,
                     int64_t sh, int64_t sw, int64_t oh, int64_t ow, float* y, binmx::Isa isa);

class FloatDense {  // y[r][h] = sum_d x[r][d] * W[h][d] + bias[h] (MXNet FullyConnected)
 public:
  FloatDense(int64_t depth, int64_t hidden, const float* weight /* (hidden, depth) */,
             const float* bias, bool relu, binmx::Isa isa);
  size_t ScratchBytes(int64_t rows, int threads) const;
  void Run(const float* x, int64_t rows, float* y, void* scratch, int threads) const;
  const char* PathName() const;

 private:
  int64_t depth_, hidden_;
  bool relu_;
  const FloatKernels* kern_;
  std::vector<float> wpack_;  // W^T in panels of nr columns: panel p = [depth][nr]
  std::vector<float> bias_;   // padded to a whole panel; empty: none
};

}  // namespace rt
}  // namespace binmx

#endif  // BINMX_RT_FLOAT_OPS_H_

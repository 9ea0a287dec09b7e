/*
 * binmx float math (src/float/, the binmx_float target; not part of the framework-free core,
 * since it links OpenBLAS): the k-bit forward and every straight-through-estimator (STE)
 * backward, on OpenBLAS's single-precision GEMM (PyPI package scipy-openblas32, prefixed CBLAS
 * symbols scipy_cblas_*). Framework-free (no MXNet, no Python).
 *
 * Layouts are those of conv.h: activations NCHW float32, weights OIHW float32 (F, C/groups,
 * kh, kw); the padded input xpad extends x by pad_value (0, +1 or -1).
 *
 * Threads: every function takes `threads` (<= 0 means DefaultThreads()) and splits its work on
 * the binmx pool (parallel.h) into blocks that depend only on the sizes and `threads`; each
 * block calls OpenBLAS single-threaded (OpenBLAS's own thread count is set to 1 once, so its
 * pool never competes with ours). Results are therefore identical run to run for a fixed
 * thread count (a different thread count may change float summation order, never more).
 *
 * Convolutions run as im2col + GEMM over chunks of nb images at once:
 *   col[(c * kh + i) * kw + j][s * OH * OW + pix] = Q(xpad)[n0 + s][g * Cg + c][tap (i, j) of pix]
 *   forward  out_g = W_g (Fg x K) . col (K x nb*OHW)
 *   dx       col   = W_g^T . dy_g, scattered back (col2im, padded positions dropped)
 *   dw       dW_g += dy_g (Fg x nb*OHW) . col^T  (one accumulator per parallel block, reduced
 *            in block order)
 * with K = Cg * kh * kw. Q is the identity or sgn (sgn(v) = -1 for v < 0, else +1; NaN gives
 * +1 as in the sign bits), so a binary layer never materialises a quantised copy of its input.
 * The backward picks one of three equivalent methods by shape (BINMX_FLOAT_CONV=im2col|shift|
 * rows forces one): the im2col above; shifted GEMMs on a shared-padding grid (stride 1, little
 * padding waste); or a channels-last im2col ("rows", >= 8 channels a group and >= 192 output
 * pixels a thread), whose col rows are runs of Cg floats instead of OW floats (conv_rows.cc).
 * Functions check their arguments and throw std::invalid_argument.
 */
#ifndef BINMX_FLOAT_CONV_H_
#define BINMX_FLOAT_CONV_H_

#include <cstdint>

#include "conv.h"

namespace binmx {

// How a convolution reads its input: as given, or through sgn (act_bit = 1).
enum class InputQuant : int { kNone = 0, kSign = 1 };

// Row-major C = alpha * op(A) op(B) + beta * C, C m x n, depth k; op(X) = X^T when trans_x.
// lda / ldb / ldc are the row strides of A, B, C as stored. OpenBLAS sgemm, split over row or
// column blocks of C on `threads` threads (small products run on the caller alone).
void Sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
           int threads);

// out = conv(Q(x), w) * alpha[f] + bias[f]   (alpha, bias may be null: 1 and 0).
void FloatConv2dForward(const float* x, InputQuant quant, const float* w, const float* alpha,
                        const float* bias, float* out, const Conv2dParams& p, int threads);

// Gradients of out = conv(Q(x), w) given dy (N, F, OH, OW):
//   dx (if not null) = conv_transpose(dy, w), times 1[|x_mask| <= grad_cancel] elementwise
//                      when x_mask is not null (the STE of the input quantiser);
//   dw (if not null) = sum_{n, y, x} dy * Q(xpad)   (a padded +-1 counts, a zero pad does not).
// Both are overwritten. To get the gradient of alpha[f] * conv(...), pass w scaled by alpha.
void FloatConv2dBackward(const float* x, InputQuant quant, const float* w, const float* dy,
                         const float* x_mask, float grad_cancel, float* dx, float* dw,
                         const Conv2dParams& p, int threads);

// Dense layer: out (rows x hidden) = Q(x) (rows x depth) . w^T (w: hidden x depth), then
// out[m][h] = out[m][h] * alpha[h] + bias[h] (alpha, bias may be null).
void FloatDenseForward(const float* x, InputQuant quant, const float* w, const float* alpha,
                       const float* bias, float* out, int64_t rows, int64_t depth, int64_t hidden,
                       int threads);

// Dense gradients: dx (rows x depth) = dy . Qw(w), masked by 1[|x_mask| <= grad_cancel] when
// x_mask is not null; dw (hidden x depth) = dy^T . Q(x). Null outputs are skipped; both
// overwritten. Qw is the identity or, with w_quant = kSign, sgn: then Qw(w) is made and used
// a block of hidden rows at a time (it never exists whole).
void FloatDenseBackward(const float* x, InputQuant quant, const float* w, const float* dy,
                        const float* x_mask, float grad_cancel, float* dx, float* dw, int64_t rows,
                        int64_t depth, int64_t hidden, int threads,
                        InputQuant w_quant = InputQuant::kNone);

// db[f] = sum over n < batch and q < inner of dy[(n * channels + f) * inner + q], summed in
// double (NCHW bias gradient; a dense layer is inner = 1).
void BiasGrad(const float* dy, int64_t batch, int64_t channels, int64_t inner, float* db,
              int threads);

// dx[i] = dy[i] * 1[|x[i]| <= grad_cancel] for i < n (dx may be dy).
void SteMask(const float* x, const float* dy, int64_t n, float grad_cancel, float* dx, int threads);

// out[i] = sgn(x[i]) for i < n.
void SignInto(const float* x, int64_t n, float* out, int threads);

// Layout changes of (batch, HW, C) <-> (batch, C, HW) float arrays (NHWC <-> NCHW), exact copies,
// in 16 x 16 AVX-512 tiles where the CPU and BINMX_ISA allow; out must not alias x.
void NhwcToNchw(const float* x, int64_t batch, int64_t hw, int64_t channels, float* out,
                int threads);
void NchwToNhwc(const float* x, int64_t batch, int64_t hw, int64_t channels, float* out,
                int threads);

// Per-channel affine map of a (batch, channels, inner) float array, out = x * scale[c] +
// shift[c] (a multiply then an add, no FMA), then, with relu, max(out, 0) (NaN stays NaN);
// out may be x.
void ChannelAffine(const float* x, int64_t batch, int64_t channels, int64_t inner,
                   const float* scale, const float* shift, bool relu, float* out, int threads);

// Its gradients, given dy and the forward's x and out (out is read only with relu: the mask
// out > 0): dx = dy * m * scale[c], dscale[c] = sum dy * m * x, dshift[c] = sum dy * m over
// batch and inner (float sums, in double; a masked element adds nothing, even a NaN x). Any
// of dx, dscale, dshift may be null (not wanted).
void ChannelAffineBackward(const float* dy, const float* x, const float* out, int64_t batch,
                           int64_t channels, int64_t inner, const float* scale, bool relu,
                           float* dx, float* dscale, float* dshift, int threads);

}  // namespace binmx

#endif  // BINMX_FLOAT_CONV_H_

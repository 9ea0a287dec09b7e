/*
 * binmx CUDA: plain C API of the GPU bit packing, xnor GEMM and binary convolution
 * (libbinmx_cuda.so). Usable from C, C++ (the MXNet "gpu" operators) and ctypes.
 *
 * Conventions are those of the CPU core (xnor_gemm.h, docs/design.md §2):
 *   bit = (x < 0.0f): bit 1 means -1, bit 0 means +1 (so +0.0, -0.0 -> +1);
 *   element j of a row -> word j / 64, bit j % 64 (LSB first); tail bits of the last word are 0;
 *   dot(a, b) = K - 2 * popcount(a XOR b) over the true depth K.
 * Results are bit-identical to the CPU paths (integer arithmetic; float epilogue done as an
 * unfused multiply then add, v = float(dot) * scale + bias, each rounded to nearest).
 *
 * Every pointer argument that names data is a DEVICE pointer (cudaMalloc / CuPy / MXNet GPU
 * NDArray). `stream` is a cudaStream_t passed as void* (NULL = the legacy default stream); all
 * work is enqueued on it asynchronously, nothing synchronizes except the memory helpers.
 * Functions return BINMX_CUDA_OK (0) or an error code; binmx_cuda_last_error() then gives a
 * message (thread-local, valid until the next call from that thread). Nothing is printed.
 *
 * algo: BINMX_CUDA_ALGO_AUTO (0), _SIMT (1, __popcll register-tiled kernel, any GPU) or
 * _TENSOR (2, b1 tensor-core mma.m16n8k256 in the AND form, sm_80+:
 * dot = K - 2 * (popc a + popc b - 2 * popc(a AND b))). AUTO takes BINMX_CUDA_ALGO=simt|tensor
 * from the environment when set, else the library's default for the device.
 */
#ifndef BINMX_CUDA_H_
#define BINMX_CUDA_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden visibility; these entry points are its only exports. */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

#define BINMX_CUDA_API_VERSION 3

enum {
  BINMX_CUDA_OK = 0,
  BINMX_CUDA_ERR_ARGUMENT = 1,    /* bad sizes / null pointers; message names the argument */
  BINMX_CUDA_ERR_CUDA = 2,        /* a CUDA runtime error (launch, memory, driver) */
  BINMX_CUDA_ERR_NO_DEVICE = 3,   /* no usable CUDA device or driver */
  BINMX_CUDA_ERR_UNSUPPORTED = 4, /* e.g. tensor algo on a device below sm_80 */
};

enum { BINMX_CUDA_ALGO_AUTO = 0, BINMX_CUDA_ALGO_SIMT = 1, BINMX_CUDA_ALGO_TENSOR = 2 };

/* BINMX_CUDA_API_VERSION of the built library. */
int binmx_cuda_api_version(void);
/* Number of usable CUDA devices; 0 (and a last-error message saying why) when there is no
 * driver or no device. Never fails otherwise. */
int binmx_cuda_device_count(void);
/* Message of the last failed call on this thread ("" if none). */
const char* binmx_cuda_last_error(void);
/* Compute capability (major * 10 + minor) of the current device, or -1 (last error set). */
int binmx_cuda_device_capability(void);
/* The algo AUTO resolves to on the current device for a problem of `words` words per row. */
int binmx_cuda_resolve_algo(int algo, int64_t words);

/* Memory helpers for hosts without another CUDA binding (ctypes + numpy). Synchronous. */
int binmx_cuda_malloc(void** ptr, size_t bytes);
int binmx_cuda_free(void* ptr);
int binmx_cuda_memcpy_htod(void* dst, const void* src, size_t bytes);
int binmx_cuda_memcpy_dtoh(void* dst, const void* src, size_t bytes);
int binmx_cuda_stream_synchronize(void* stream);

/* Packs `rows` rows of `k` floats (row r starts at x + r * ld) into rows * ceil(k/64) words. */
int binmx_cuda_pack_rows(const float* x, int64_t rows, int64_t k, int64_t ld, uint64_t* out,
                         void* stream);

/* Per-pixel channel packing of an NCHW float tensor, per group:
 * out[((n * h + y) * w + x) * groups * cw + g * cw + c / 64] bit c % 64 = (x[n, g*cg + c, y, x] <
 * 0) with cg = channels / groups and cw = ceil(cg / 64); tail bits 0. With n = num_filter, channels
 * = C / num_group, h = kh, w = kw, groups = 1 this packs a float conv weight (F, C/g, kh, kw) into
 * the packed weight format (F, kh, kw, ceil(C/g/64)). */
int binmx_cuda_pack_nchw(const float* x, int64_t n, int64_t channels, int64_t h, int64_t w,
                         int64_t groups, uint64_t* out, void* stream);

/* C[i * ldc + j] = k - 2 * popcount(A[i] XOR B[j]); A: m x words, B: n x words (row-major
 * packed rows), 0 <= k <= 64 * words, tail bits beyond k zero in both operands. */
int binmx_cuda_xnor_gemm(const uint64_t* a, const uint64_t* b, int64_t m, int64_t n, int64_t words,
                         int64_t k, int32_t* c, int64_t ldc, int algo, void* stream);
/* C[i * ldc + j] = float(dot) * (scale ? scale[i] : 1) + (bias ? bias[i] : 0). */
int binmx_cuda_xnor_gemm_f32(const uint64_t* a, const uint64_t* b, int64_t m, int64_t n,
                             int64_t words, int64_t k, const float* scale, const float* bias,
                             float* c, int64_t ldc, int algo, void* stream);

/* Fully connected: out[b, h] = float(dot(sgn x[b, :], W[h, :])) * alpha[h] + bias[h] over the
 * true depth d; x float (batch, d) row-major, w_packed (num_hidden, ceil(d/64)); alpha, bias
 * optional (NULL). Workspace: binmx_cuda_fully_connected_workspace bytes (the packed x), or
 * NULL to allocate stream-ordered (cudaMallocAsync) inside the call. */
size_t binmx_cuda_fully_connected_workspace(int64_t batch, int64_t d);
int binmx_cuda_fully_connected(const float* x, int64_t batch, int64_t d, const uint64_t* w_packed,
                               int64_t num_hidden, const float* alpha, const float* bias,
                               float* out, void* workspace, size_t workspace_bytes, int algo,
                               void* stream);

/* 2-D binary convolution geometry (all fields int64 for a padding-free ctypes mirror). */
typedef struct binmx_cuda_conv2d_params {
  int64_t batch, channels, height, width; /* input NCHW */
  int64_t num_filter, kernel_h, kernel_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilate_h, dilate_w;
  int64_t num_group;
  int64_t pad_value; /* 0: zero padding (exactly as Convolution), +1 or -1 */
} binmx_cuda_conv2d_params;

/* Output height/width for p (stored to *out_h, *out_w); checks p. */
int binmx_cuda_conv2d_out_shape(const binmx_cuda_conv2d_params* p, int64_t* out_h, int64_t* out_w);
/* Bytes of scratch for binmx_cuda_binary_conv2d (the packed input, the border-correction and
 * tap tables, the bit im2col of a chunk of images: see below), 0 if p (or BINMX_CUDA_CONV /
 * BINMX_CUDA_IM2COL_MAX_BYTES) is invalid. Depends on those two environment variables, which
 * must not change between this query and the call. */
size_t binmx_cuda_binary_conv2d_workspace(const binmx_cuda_conv2d_params* p);
/* out (batch, num_filter, out_h, out_w) float =
 *     Convolution(sgn x, sgn W; stride, pad, dilate, num_group; padding value pad_value)
 *     * alpha[f] + bias[f]
 * x: float NCHW; w_packed: (num_filter, kernel_h, kernel_w, ceil(C/num_group/64)) words with
 * channel c of tap (i, j) in word c / 64, bit c % 64; alpha, bias: (num_filter,) or NULL.
 * Zero padding is exact: taps in the padding are computed as +1 and a per-filter border
 * correction removes them (pad_value 0) or doubles them negative (pad_value -1). */
int binmx_cuda_binary_conv2d(const binmx_cuda_conv2d_params* p, const float* x,
                             const uint64_t* w_packed, const float* alpha, const float* bias,
                             float* out, void* workspace, size_t workspace_bytes, int algo,
                             void* stream);
/* Same, from an input already packed by binmx_cuda_pack_nchw (its scratch, the tables and the
 * im2col, is allocated stream-ordered inside the call; _packed_ws takes it instead). */
int binmx_cuda_binary_conv2d_packed(const binmx_cuda_conv2d_params* p, const uint64_t* x_packed,
                                    const uint64_t* w_packed, const float* alpha, const float* bias,
                                    float* out, int algo, void* stream);
/* API version 3: binmx_cuda_binary_conv2d_packed with caller-provided scratch of
 * binmx_cuda_binary_conv2d_packed_workspace(p) bytes (NULL: allocated stream-ordered; the query
 * may return 0, e.g. BINMX_CUDA_CONV=legacy). */
size_t binmx_cuda_binary_conv2d_packed_workspace(const binmx_cuda_conv2d_params* p);
int binmx_cuda_binary_conv2d_packed_ws(const binmx_cuda_conv2d_params* p, const uint64_t* x_packed,
                                       const uint64_t* w_packed, const float* alpha,
                                       const float* bias, float* out, void* workspace,
                                       size_t workspace_bytes, int algo, void* stream);
/* Convolution kernels (environment, read at every call): BINMX_CUDA_CONV =
 *   auto / im2col (default): pack, per-filter border prefix table, explicit bit im2col of
 *     chunks of images into the scratch (at most BINMX_CUDA_IM2COL_MAX_BYTES bytes, default
 *     32 MiB; a layer whose single-image im2col is larger runs as table), dense xnor GEMM with
 *     the conv epilogue;
 *   table: pack, border prefix table and a per-word tap offset table, implicit-GEMM gather;
 *   legacy (alias implicit): the API version 2 kernels (implicit gather with integer
 *     divisions per word, border correction summed per output).
 * All give bit-identical results. */

/* ---- API version 2: what the MXNet "gpu" operators need beyond the binary kernels ---------
 * (train.cu). Quantisers as docs/design.md §3 / src/float/quantize.h:
 *   Qa: bits 1 sgn(x); 2..31 q(clip(x, 0, 1), k), q(a, k) = rint((2^k - 1) a) / (2^k - 1);
 *       32 identity.   Qw: bits 1 sgn(w); 2..31 2 q(tanh(w) / (2 max|tanh w|) + 1/2, k) - 1;
 *       32 identity. k-bit maths in double, rint = round half to even.
 * Exactness against the CPU operator: sgn, the STE mask, the affine sign and packing, Qa and
 * alpha (mean_abs_rows) are bit-identical (IEEE double adds / multiplies / divisions in the
 * CPU's order, no contraction). Qw (k-bit) differs only where CUDA's and glibc's double tanh
 * differ by an ulp AND that moves a rint decision. The float convolution / dense products, the
 * bias gradient and dalpha sum in another order than OpenBLAS: equal to float rounding, not
 * bit-identical. Float GEMMs run on the library's own deterministic tiled kernel (fixed
 * summation order: results identical run to run), not cuBLAS. */

/* Zeroes `bytes` bytes at device pointer ptr, stream-ordered (cudaMemsetAsync). */
int binmx_cuda_fill_zero(void* ptr, size_t bytes, void* stream);
/* alpha[r] = float(sum_i |w[r * size + i]| (in double, i ascending) / size), as the CPU. */
int binmx_cuda_mean_abs_rows(const float* w, int64_t rows, int64_t size, float* alpha,
                             void* stream);
/* out = Qa(x) over n floats (bits 1..32; out may be x). */
int binmx_cuda_quantize_act(const float* x, int64_t n, int bits, float* out, void* stream);
/* Bytes of scratch for binmx_cuda_quantize_weight (the max |tanh|), or NULL to allocate
 * stream-ordered inside the call. */
size_t binmx_cuda_quantize_weight_workspace(void);
/* out = Qw(w) over n floats, the max taken over all n (bits 1..32; out may not be w). */
int binmx_cuda_quantize_weight(const float* w, int64_t n, int bits, float* out, void* workspace,
                               size_t workspace_bytes, void* stream);
/* out[i] = sgn(x[i] * scale[c] + shift[c]) as +-1.0f, c = (i / inner) % channels; product
 * and sum each rounded to float (the input_affine of a folded BatchNorm). */
int binmx_cuda_affine_sign(const float* x, int64_t n, int64_t channels, int64_t inner,
                           const float* scale, const float* shift, float* out, void* stream);
/* dx[i] = dy[i] * 1[|x[i]| <= grad_cancel] (the STE; dx may be dy). */
int binmx_cuda_ste_mask(const float* x, const float* dy, int64_t n, float grad_cancel, float* dx,
                        void* stream);
/* binmx_cuda_pack_rows / _pack_nchw of the affine input x * scale + shift (< 0 -> bit 1):
 * rows: scale, shift per column j (k of them); nchw: per channel (channels of them). */
int binmx_cuda_pack_rows_affine(const float* x, int64_t rows, int64_t k, int64_t ld,
                                const float* scale, const float* shift, uint64_t* out,
                                void* stream);
int binmx_cuda_pack_nchw_affine(const float* x, int64_t n, int64_t channels, int64_t h, int64_t w,
                                int64_t groups, const float* scale, const float* shift,
                                uint64_t* out, void* stream);
/* Packed conv weight (F, kh, kw, ceil(cg/64)) -> float +-1 (F, cg, kh, kw); a packed dense
 * weight (H, ceil(D/64)) is kh = kw = 1, cg = D. */
int binmx_cuda_unpack_conv_weight(const uint64_t* w_packed, int64_t num_filter, int64_t cg,
                                  int64_t kh, int64_t kw, float* out, void* stream);
/* binmx_cuda_fully_connected from an input already packed (pack_rows / pack_rows_affine). */
int binmx_cuda_fully_connected_packed(const uint64_t* x_packed, int64_t batch, int64_t d,
                                      const uint64_t* w_packed, int64_t num_hidden,
                                      const float* alpha, const float* bias, float* out, int algo,
                                      void* stream);
/* out[r * size + i] = w[r * size + i] * alpha[r]. */
int binmx_cuda_scale_rows(const float* w, const float* alpha, int64_t rows, int64_t size,
                          float* out, void* stream);
/* db[f] = sum over n < batch, q < inner of dy[(n * channels + f) * inner + q] (in double). */
int binmx_cuda_bias_grad(const float* dy, int64_t batch, int64_t channels, int64_t inner, float* db,
                         void* stream);
/* Latent weight gradient from G = d loss / d Qw(W) (without alpha), rows x size:
 *   alpha NULL: dw = G;  else dalpha[r] = sum_i G[r,i] wq[r,i] (double) and
 *   dw[r,i] = alpha[r] * G[r,i] + sgn(w[r,i]) * float(dalpha_r / size) (each op rounded).
 * dw or dalpha may be NULL (w is then unused). */
int binmx_cuda_finish_weight_grad(const float* g, const float* w, const float* wq,
                                  const float* alpha, int64_t rows, int64_t size, float* dw,
                                  float* dalpha, void* stream);

enum { BINMX_CUDA_QUANT_NONE = 0, BINMX_CUDA_QUANT_SIGN = 1 };
/* Float convolution (k-bit forward and every STE backward), im2col + tiled GEMM over chunks of
 * images. x NCHW, w OIHW (F, C/g, kh, kw) float; quant SIGN reads x through sgn; padding with
 * p->pad_value (0, +1, -1).  out = conv(Q x, w) * alpha[f] + bias[f] (alpha, bias optional).
 * Workspace: binmx_cuda_float_conv2d_workspace(p) bytes, or NULL (stream-ordered alloc). */
size_t binmx_cuda_float_conv2d_workspace(const binmx_cuda_conv2d_params* p);
int binmx_cuda_float_conv2d_forward(const binmx_cuda_conv2d_params* p, const float* x, int quant,
                                    const float* w, const float* alpha, const float* bias,
                                    float* out, void* workspace, size_t workspace_bytes,
                                    void* stream);
/* Gradients of out = conv(Q x, w) for dy (N, F, OH, OW), both overwritten, either may be NULL:
 *   dx = conv_transpose(dy, w), times 1[|x_mask| <= grad_cancel] when x_mask is not NULL;
 *   dw = sum over n, pixels of dy * Q(xpad) (a +-1 pad counts, a zero pad does not). */
int binmx_cuda_float_conv2d_backward(const binmx_cuda_conv2d_params* p, const float* x, int quant,
                                     const float* w, const float* dy, const float* x_mask,
                                     float grad_cancel, float* dx, float* dw, void* workspace,
                                     size_t workspace_bytes, void* stream);
/* Dense: out (rows x hidden) = Q(x) (rows x depth) . w^T, then * alpha[h] + bias[h]. */
int binmx_cuda_float_dense_forward(const float* x, int quant, const float* w, const float* alpha,
                                   const float* bias, float* out, int64_t rows, int64_t depth,
                                   int64_t hidden, void* stream);
/* dx = dy . w (masked by 1[|x_mask| <= grad_cancel] when x_mask), dw = dy^T . Q(x). */
int binmx_cuda_float_dense_backward(const float* x, int quant, const float* w, const float* dy,
                                    const float* x_mask, float grad_cancel, float* dx, float* dw,
                                    int64_t rows, int64_t depth, int64_t hidden, void* stream);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BINMX_CUDA_H_ */

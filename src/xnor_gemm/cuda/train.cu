/*
 * binmx CUDA, API version 2 (binmx_cuda.h): the pieces the MXNet "gpu" operators need besides
 * the binary kernels: quantisers, alpha = mean |W_f|, the STE mask, input_affine packing,
 * weight unpacking, bias and weight-gradient reductions, and the float convolution / dense
 * products of the k-bit forward and of every backward.
 *
 * Exactness (see binmx_cuda.h): element-wise maps use explicit round-to-nearest intrinsics
 * (__fmul_rn, __fadd_rn, __dmul_rn, __dadd_rn) so nvcc cannot contract them into an FMA the CPU
 * does not do. MeanAbsRows sums each row sequentially in double, i ascending, exactly as
 * src/float/quantize.h's MeanAbsRows: the same IEEE operations in the same order, so alpha is
 * bit-identical. Block reductions (bias gradient, dalpha) use a fixed tree: deterministic, but
 * in another order than the CPU.
 *
 * Float GEMM: one tiled kernel (32 x 32 outputs per 256-thread block, 16-deep k steps through
 * shared memory, each output accumulated with FMAs, k ascending: run-to-run deterministic) over
 * general strides: A(i, kk) = a[i * a_m + ko * a_ko + ki * a_ki], B(kk, j) likewise, with the
 * depth index kk split as (ko, ki) = (kk / k_inner, kk % k_inner) so that the conv weight
 * gradient sums over (image, pixel) in one launch, and a grid-z batch stride. Optional sgn on
 * the loads of A or B (act_bit = 1 inputs are never materialised). No cuBLAS: the toolkit CI
 * compiles with ships without it, and the summation order stays ours.
 *
 * Convolution = per chunk of nb images and per group g, with K = Cg * kh * kw:
 *   col[s][(c * kh + i) * kw + j][oy * OW + ox] = Q(xpad)[n0 + s][g * Cg + c][tap (i, j)]
 *   forward  out[n0 + s][g Fg + f] = W_g (Fg x K) . col[s]
 *   dW_g     (+)= sum_{s, pix} dy[n0 + s][g Fg + f][pix] col[s][kk][pix]   (k = (s, pix))
 *   dx       dcol[s] = W_g^T . dy_g[s], gathered back to dx (col2im, each dx element summed
 *            over its taps in a fixed order, no atomics) and masked by the STE.
 * nb is the largest count whose col buffer fits kConvChunkBytes (at least 1 image).
 */
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "binmx_cuda.h"
#include "error.h"

namespace binmx {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kConvChunkBytes = int64_t{64} << 20;

std::string Str(int64_t v) { return std::to_string(v); }

unsigned Blocks(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

int LaunchCheck(const char* what) {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? BINMX_CUDA_OK : FailCuda(err, what);
}

int CheckN(const char* name, int64_t n) {
  if (n < 0 || n > (int64_t{1} << 40)) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                std::string("Expected `") + name + "` in [0, 2^40], got " + Str(n));
  }
  return BINMX_CUDA_OK;
}

int CheckBits(int bits) {
  if (bits < 1 || bits > 32) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Expected `bits` in [1, 32] (1 sign, 2..31 DoReFa, 32 float), got " + Str(bits));
  }
  return BINMX_CUDA_OK;
}

#define BINMX_TRY(expr)                   \
  do {                                    \
    const int rc_ = (expr);               \
    if (rc_ != BINMX_CUDA_OK) return rc_; \
  } while (0)

__device__ __forceinline__ float Sgn(float v) { return v < 0.0f ? -1.0f : 1.0f; }  // NaN -> +1

__device__ __forceinline__ float QuantUnit(double a, double levels) {
  return static_cast<float>(__ddiv_rn(rint(__dmul_rn(levels, a)), levels));
}

// ---- element-wise maps ----------------------------------------------------------------------

__global__ void QuantActKernel(const float* __restrict__ x, int64_t n, int bits,
                               float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = x[i];
  if (bits == 1) {
    out[i] = Sgn(v);
  } else if (bits >= 32) {
    out[i] = v;
  } else {
    const double levels = static_cast<double>((int64_t{1} << bits) - 1);
    // clip to [0, 1]; -0.0 and NaN give +0.0, as the CPU's std::max(0.0, x)
    const double a = v > 0.0f ? fmin(1.0, static_cast<double>(v)) : 0.0;
    out[i] = QuantUnit(a, levels);
  }
}

// max |tanh w| as the bits of a non-negative double (their integer order is the value order).
__global__ void MaxAbsTanhKernel(const float* __restrict__ w, int64_t n,
                                 unsigned long long* __restrict__ max_bits) {
  __shared__ double part[kThreads];
  double m = 0.0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    m = fmax(m, fabs(tanh(static_cast<double>(w[i]))));
  }
  part[threadIdx.x] = m;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] = fmax(part[threadIdx.x], part[threadIdx.x + s]);
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    atomicMax(max_bits, static_cast<unsigned long long>(__double_as_longlong(part[0])));
  }
}

__global__ void QuantWeightKernel(const float* __restrict__ w, int64_t n, int bits,
                                  const unsigned long long* __restrict__ max_bits,
                                  float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const double max_t = __longlong_as_double(static_cast<long long>(*max_bits));
  const double levels = static_cast<double>((int64_t{1} << bits) - 1);
  const double t =
      max_t > 0.0 ? __ddiv_rn(tanh(static_cast<double>(w[i])), __dmul_rn(2.0, max_t)) : 0.0;
  // CPU: float(2.0 * QuantizeUnit(t + 0.5, bits) - 1.0), QuantizeUnit kept in double.
  const double qd = __ddiv_rn(rint(__dmul_rn(levels, __dadd_rn(t, 0.5))), levels);
  out[i] = static_cast<float>(__dadd_rn(__dmul_rn(2.0, qd), -1.0));
}

__global__ void AffineSignKernel(const float* __restrict__ x, int64_t n, int64_t channels,
                                 int64_t inner, const float* __restrict__ scale,
                                 const float* __restrict__ shift, float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t c = (i / inner) % channels;
  out[i] = __fadd_rn(__fmul_rn(x[i], scale[c]), shift[c]) < 0.0f ? -1.0f : 1.0f;
}

__global__ void SteMaskKernel(const float* __restrict__ x, const float* dy, int64_t n,
                              float grad_cancel, float* dx) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  dx[i] = fabsf(x[i]) <= grad_cancel ? dy[i] : 0.0f;
}

__global__ void PackRowsAffineKernel(const float* __restrict__ x, int64_t rows, int64_t k,
                                     int64_t ld, int64_t words, const float* __restrict__ scale,
                                     const float* __restrict__ shift, uint64_t* __restrict__ out) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (warp >= rows * words) return;  // whole warps exit together
  const int64_t r = warp / words;
  const int64_t w = warp - r * words;
  const float* row = x + r * ld;
  const int64_t j0 = w * 64 + lane;
  const int64_t j1 = j0 + 32;
  const bool b0 = j0 < k && __fadd_rn(__fmul_rn(row[j0], scale[j0]), shift[j0]) < 0.0f;
  const bool b1 = j1 < k && __fadd_rn(__fmul_rn(row[j1], scale[j1]), shift[j1]) < 0.0f;
  const unsigned lo = __ballot_sync(0xffffffffu, b0);
  const unsigned hi = __ballot_sync(0xffffffffu, b1);
  if (lane == 0) out[warp] = (static_cast<uint64_t>(hi) << 32) | lo;
}

// As api.cu's PackNchwKernel, on x * scale[ch] + shift[ch].
__global__ void PackNchwAffineKernel(const float* __restrict__ x, int64_t n, int64_t channels,
                                     int64_t hw, int64_t groups, int64_t cg, int64_t cw,
                                     const float* __restrict__ scale,
                                     const float* __restrict__ shift, uint64_t* __restrict__ out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * groups * cw * hw) return;
  const int64_t pix = idx % hw;
  int64_t rest = idx / hw;
  const int64_t word = rest % cw;
  rest /= cw;
  const int64_t group = rest % groups;
  const int64_t img = rest / groups;
  const int64_t c0 = group * cg + word * 64;
  const int len = static_cast<int>(cg - word * 64 < 64 ? cg - word * 64 : 64);
  const float* src = x + ((img * channels + c0) * hw + pix);
  uint64_t bits = 0;
  for (int b = 0; b < len; ++b) {
    const float v = __fadd_rn(__fmul_rn(src[b * hw], scale[c0 + b]), shift[c0 + b]);
    bits |= static_cast<uint64_t>(v < 0.0f) << b;
  }
  out[((img * hw + pix) * groups + group) * cw + word] = bits;
}

// out[f][c][i][j] = bit c % 64 of w[f][i][j][c / 64] ? -1 : +1.
__global__ void UnpackConvWeightKernel(const uint64_t* __restrict__ w, int64_t f_all, int64_t cg,
                                       int64_t kh, int64_t kw, int64_t cw,
                                       float* __restrict__ out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t taps = kh * kw;
  if (idx >= f_all * cg * taps) return;
  const int64_t tap = idx % taps;
  const int64_t c = (idx / taps) % cg;
  const int64_t f = idx / (taps * cg);
  const uint64_t word = w[(f * taps + tap) * cw + c / 64];
  out[idx] = (word >> (c % 64)) & 1u ? -1.0f : 1.0f;
}

__global__ void ScaleRowsKernel(const float* __restrict__ w, const float* __restrict__ alpha,
                                int64_t rows, int64_t size, float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * size) return;
  out[i] = __fmul_rn(w[i], alpha[i / size]);
}

// out[i] = out[i] * alpha[c] + bias[c], c = (i / inner) % channels (both optional).
__global__ void EpilogueKernel(float* __restrict__ out, int64_t n, int64_t channels, int64_t inner,
                               const float* __restrict__ alpha, const float* __restrict__ bias) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t c = (i / inner) % channels;
  const float a = alpha ? alpha[c] : 1.0f;
  const float b = bias ? bias[c] : 0.0f;
  out[i] = __fadd_rn(__fmul_rn(out[i], a), b);
}

// ---- reductions -----------------------------------------------------------------------------

// One thread per row, sequential double sum: the CPU's exact operation order.
__global__ void MeanAbsRowsKernel(const float* __restrict__ w, int64_t rows, int64_t size,
                                  float* __restrict__ alpha) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const float* row = w + r * size;
  double s = 0.0;
  for (int64_t i = 0; i < size; ++i) s = __dadd_rn(s, fabs(static_cast<double>(row[i])));
  alpha[r] = static_cast<float>(__ddiv_rn(s, static_cast<double>(size)));
}

__device__ double BlockSum(double v, double* part) {
  part[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] = __dadd_rn(part[threadIdx.x], part[threadIdx.x + s]);
    __syncthreads();
  }
  const double total = part[0];
  __syncthreads();
  return total;
}

// One block per channel f.
__global__ void BiasGradKernel(const float* __restrict__ dy, int64_t batch, int64_t channels,
                               int64_t inner, float* __restrict__ db) {
  __shared__ double part[kThreads];
  const int64_t f = blockIdx.x;
  double s = 0.0;
  for (int64_t n = 0; n < batch; ++n) {
    const float* row = dy + (n * channels + f) * inner;
    for (int64_t q = threadIdx.x; q < inner; q += kThreads) {
      s = __dadd_rn(s, static_cast<double>(row[q]));
    }
  }
  s = BlockSum(s, part);
  if (threadIdx.x == 0) db[f] = static_cast<float>(s);
}

// One block per row r.
__global__ void FinishWeightGradKernel(const float* __restrict__ g, const float* __restrict__ w,
                                       const float* __restrict__ wq,
                                       const float* __restrict__ alpha, int64_t size,
                                       float* __restrict__ dw, float* __restrict__ dalpha) {
  __shared__ double part[kThreads];
  const int64_t r = blockIdx.x;
  const float* gr = g + r * size;
  if (alpha == nullptr) {
    if (dw != nullptr) {
      for (int64_t i = threadIdx.x; i < size; i += kThreads) dw[r * size + i] = gr[i];
    }
    return;
  }
  double da = 0.0;
  for (int64_t i = threadIdx.x; i < size; i += kThreads) {
    da =
        __dadd_rn(da, __dmul_rn(static_cast<double>(gr[i]), static_cast<double>(wq[r * size + i])));
  }
  da = BlockSum(da, part);
  if (dalpha != nullptr && threadIdx.x == 0) dalpha[r] = static_cast<float>(da);
  if (dw != nullptr) {
    const float a = alpha[r];
    const float c = static_cast<float>(__ddiv_rn(da, static_cast<double>(size)));
    for (int64_t i = threadIdx.x; i < size; i += kThreads) {
      dw[r * size + i] = __fadd_rn(__fmul_rn(a, gr[i]), __fmul_rn(Sgn(w[r * size + i]), c));
    }
  }
}

// ---- float GEMM ----------------------------------------------------------------------------

struct GemmArgs {
  int64_t m = 0, n = 0, k = 0, k_inner = 1;
  const float* a = nullptr;
  int64_t a_m = 0, a_ko = 0, a_ki = 0, a_z = 0;
  const float* b = nullptr;
  int64_t b_n = 0, b_ko = 0, b_ki = 0, b_z = 0;
  float* c = nullptr;
  int64_t c_m = 0, c_n = 0, c_z = 0;
  int sign_a = 0, sign_b = 0, accumulate = 0;
};

constexpr int kTile = 32;
constexpr int kTk = 16;

__global__ void __launch_bounds__(kThreads) GemmKernel(GemmArgs g) {
  __shared__ float as[kTk][kTile + 1];
  __shared__ float bs[kTk][kTile + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const float* a = g.a + blockIdx.z * g.a_z;
  const float* b = g.b + blockIdx.z * g.b_z;
  float* c = g.c + blockIdx.z * g.c_z;
  // Coalesce along whichever of (row, depth) is contiguous in memory.
  const bool a_k_fast = g.a_ki == 1;
  const bool b_k_fast = g.b_ki == 1;
  float acc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
  for (int64_t k0 = 0; k0 < g.k; k0 += kTk) {
    for (int e = threadIdx.x; e < kTile * kTk; e += kThreads) {
      const int ii = a_k_fast ? e / kTk : e % kTile;
      const int kk = a_k_fast ? e % kTk : e / kTile;
      const int64_t i = i0 + ii, kq = k0 + kk;
      float v = 0.0f;
      if (i < g.m && kq < g.k) {
        const int64_t ko = kq / g.k_inner, ki = kq - ko * g.k_inner;
        v = a[i * g.a_m + ko * g.a_ko + ki * g.a_ki];
        if (g.sign_a) v = Sgn(v);
      }
      as[kk][ii] = v;
    }
    for (int e = threadIdx.x; e < kTile * kTk; e += kThreads) {
      const int jj = b_k_fast ? e / kTk : e % kTile;
      const int kk = b_k_fast ? e % kTk : e / kTile;
      const int64_t j = j0 + jj, kq = k0 + kk;
      float v = 0.0f;
      if (j < g.n && kq < g.k) {
        const int64_t ko = kq / g.k_inner, ki = kq - ko * g.k_inner;
        v = b[j * g.b_n + ko * g.b_ko + ki * g.b_ki];
        if (g.sign_b) v = Sgn(v);
      }
      bs[kk][jj] = v;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTk; ++kk) {
      const float a0 = as[kk][ty], a1 = as[kk][ty + 16];
      const float b0 = bs[kk][tx], b1 = bs[kk][tx + 16];
      acc[0][0] = fmaf(a0, b0, acc[0][0]);
      acc[0][1] = fmaf(a0, b1, acc[0][1]);
      acc[1][0] = fmaf(a1, b0, acc[1][0]);
      acc[1][1] = fmaf(a1, b1, acc[1][1]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const int64_t i = i0 + ty + 16 * r, j = j0 + tx + 16 * s;
      if (i < g.m && j < g.n) {
        float* dst = c + i * g.c_m + j * g.c_n;
        *dst = g.accumulate ? __fadd_rn(*dst, acc[r][s]) : acc[r][s];
      }
    }
  }
}

int Gemm(const GemmArgs& g, int64_t batch, cudaStream_t stream) {
  if (g.m == 0 || g.n == 0 || batch == 0) return BINMX_CUDA_OK;
  const int64_t gy = (g.m + kTile - 1) / kTile, gx = (g.n + kTile - 1) / kTile;
  if (gy > 65535 || batch > 65535 || gx > 0x7fffffff) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "float GEMM too large for one launch: m = " + Str(g.m) +
                                             ", n = " + Str(g.n) + ", batch = " + Str(batch));
  }
  GemmKernel<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy),
                    static_cast<unsigned>(batch)),
               kThreads, 0, stream>>>(g);
  return LaunchCheck("float gemm launch");
}

// ---- convolution ---------------------------------------------------------------------------

struct Geom {
  int64_t n, c, h, w, f, kh, kw, sh, sw, ph, pw, dh, dw, groups, cg, fg, oh, ow, kdepth;
  float pad_value;
};

int MakeGeom(const binmx_cuda_conv2d_params* p, Geom* g) {
  int64_t oh = 0, ow = 0;
  BINMX_TRY(binmx_cuda_conv2d_out_shape(p, &oh, &ow));  // checks p
  g->n = p->batch;
  g->c = p->channels;
  g->h = p->height;
  g->w = p->width;
  g->f = p->num_filter;
  g->kh = p->kernel_h;
  g->kw = p->kernel_w;
  g->sh = p->stride_h;
  g->sw = p->stride_w;
  g->ph = p->pad_h;
  g->pw = p->pad_w;
  g->dh = p->dilate_h;
  g->dw = p->dilate_w;
  g->groups = p->num_group;
  g->cg = p->channels / p->num_group;
  g->fg = p->num_filter / p->num_group;
  g->oh = oh;
  g->ow = ow;
  g->kdepth = g->cg * g->kh * g->kw;
  g->pad_value = static_cast<float>(p->pad_value);
  return BINMX_CUDA_OK;
}

int64_t ChunkImages(const Geom& g) {
  const int64_t per_image = g.kdepth * g.oh * g.ow * static_cast<int64_t>(sizeof(float));
  int64_t nb = per_image > 0 ? kConvChunkBytes / per_image : g.n;
  if (nb < 1) nb = 1;
  if (nb > g.n) nb = g.n;
  if (nb > 65535) nb = 65535;
  return nb;
}

size_t ConvFloatWorkspace(const Geom& g) {
  return static_cast<size_t>(ChunkImages(g) * g.kdepth * g.oh * g.ow) * sizeof(float);
}

__global__ void Im2colKernel(const float* __restrict__ x, Geom g, int64_t n0, int64_t nb,
                             int64_t group, int sign, float* __restrict__ col) {
  const int64_t ohw = g.oh * g.ow;
  const int64_t total = nb * g.kdepth * ohw;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int64_t pix = idx % ohw;
  const int64_t kk = (idx / ohw) % g.kdepth;
  const int64_t s = idx / (ohw * g.kdepth);
  const int64_t j = kk % g.kw, i = (kk / g.kw) % g.kh, c = kk / (g.kw * g.kh);
  const int64_t y = (pix / g.ow) * g.sh - g.ph + i * g.dh;
  const int64_t xx = (pix % g.ow) * g.sw - g.pw + j * g.dw;
  float v = g.pad_value;
  if (y >= 0 && y < g.h && xx >= 0 && xx < g.w) {
    v = x[(((n0 + s) * g.c + group * g.cg + c) * g.h + y) * g.w + xx];
    if (sign) v = Sgn(v);
  }
  col[idx] = v;
}

// dx[n0 + s][group * cg + c][y][x] = sum over its taps of dcol, times the STE mask.
__global__ void Col2imKernel(const float* __restrict__ dcol, Geom g, int64_t n0, int64_t nb,
                             int64_t group, const float* __restrict__ x_mask, float grad_cancel,
                             float* __restrict__ dx) {
  const int64_t hw = g.h * g.w, ohw = g.oh * g.ow;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= nb * g.cg * hw) return;
  const int64_t xx = idx % g.w, y = (idx / g.w) % g.h;
  const int64_t c = (idx / hw) % g.cg, s = idx / (hw * g.cg);
  const float* base = dcol + (s * g.kdepth + c * g.kh * g.kw) * ohw;
  float sum = 0.0f;
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t ty = y + g.ph - i * g.dh;
    if (ty < 0 || ty % g.sh != 0 || ty / g.sh >= g.oh) continue;
    for (int64_t j = 0; j < g.kw; ++j) {
      const int64_t tx = xx + g.pw - j * g.dw;
      if (tx < 0 || tx % g.sw != 0 || tx / g.sw >= g.ow) continue;
      sum = __fadd_rn(sum, base[(i * g.kw + j) * ohw + (ty / g.sh) * g.ow + tx / g.sw]);
    }
  }
  const int64_t off = (((n0 + s) * g.c + group * g.cg + c) * g.h + y) * g.w + xx;
  if (x_mask != nullptr && !(fabsf(x_mask[off]) <= grad_cancel)) sum = 0.0f;
  dx[off] = sum;
}

int CheckQuant(int quant) {
  if (quant != BINMX_CUDA_QUANT_NONE && quant != BINMX_CUDA_QUANT_SIGN) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Expected `quant` to be 0 (none) or 1 (sign), got " + Str(quant));
  }
  return BINMX_CUDA_OK;
}

// Stream-ordered scratch when the caller passes none.
class Scratch {
 public:
  Scratch(void* given, size_t given_bytes, size_t need, cudaStream_t s)
      : ptr_(given), need_(need), stream_(s) {
    if (given != nullptr && given_bytes < need) {
      rc_ = Fail(BINMX_CUDA_ERR_ARGUMENT,
                 "Expected `workspace_bytes` >= " + Str(static_cast<int64_t>(need)) + ", got " +
                     Str(static_cast<int64_t>(given_bytes)));
    } else if (given == nullptr && need > 0) {
      const cudaError_t err = cudaMallocAsync(&ptr_, need, s);
      if (err != cudaSuccess) {
        rc_ = FailCuda(err, "cudaMallocAsync (workspace)");
        ptr_ = nullptr;
      } else {
        owned_ = true;
      }
    }
  }
  ~Scratch() {
    if (owned_) (void)cudaFreeAsync(ptr_, stream_);
  }
  int rc() const { return rc_; }
  void* get() const { return ptr_; }

 private:
  void* ptr_;
  size_t need_;
  cudaStream_t stream_;
  bool owned_ = false;
  int rc_ = BINMX_CUDA_OK;
};

}  // namespace
}  // namespace cuda
}  // namespace binmx

using namespace binmx::cuda;  // NOLINT: C API implementation file

extern "C" {

int binmx_cuda_fill_zero(void* ptr, size_t bytes, void* stream) {
  if (bytes == 0) return BINMX_CUDA_OK;
  if (ptr == nullptr)
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`ptr` must be a non-null device pointer");
  const cudaError_t err = cudaMemsetAsync(ptr, 0, bytes, static_cast<cudaStream_t>(stream));
  return err == cudaSuccess ? BINMX_CUDA_OK : FailCuda(err, "cudaMemsetAsync");
}

int binmx_cuda_mean_abs_rows(const float* w, int64_t rows, int64_t size, float* alpha,
                             void* stream) {
  BINMX_TRY(CheckN("rows", rows));
  if (size < 1) return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected `size` >= 1, got " + Str(size));
  if (rows == 0) return BINMX_CUDA_OK;
  if (w == nullptr || alpha == nullptr) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`w` and `alpha` must be non-null device pointers");
  }
  MeanAbsRowsKernel<<<Blocks(rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(w, rows, size,
                                                                                      alpha);
  return LaunchCheck("mean_abs_rows launch");
}

int binmx_cuda_quantize_act(const float* x, int64_t n, int bits, float* out, void* stream) {
  BINMX_TRY(CheckN("n", n));
  BINMX_TRY(CheckBits(bits));
  if (n == 0) return BINMX_CUDA_OK;
  if (x == nullptr || out == nullptr) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`x` and `out` must be non-null device pointers");
  }
  QuantActKernel<<<Blocks(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(x, n, bits, out);
  return LaunchCheck("quantize_act launch");
}

size_t binmx_cuda_quantize_weight_workspace(void) { return sizeof(unsigned long long); }

int binmx_cuda_quantize_weight(const float* w, int64_t n, int bits, float* out, void* workspace,
                               size_t workspace_bytes, void* stream) {
  BINMX_TRY(CheckN("n", n));
  BINMX_TRY(CheckBits(bits));
  if (n == 0) return BINMX_CUDA_OK;
  if (w == nullptr || out == nullptr) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`w` and `out` must be non-null device pointers");
  }
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (bits == 1 || bits >= 32) {
    QuantActKernel<<<Blocks(n), kThreads, 0, s>>>(w, n, bits, out);  // sgn / copy
    return LaunchCheck("quantize_weight launch");
  }
  Scratch scratch(workspace, workspace_bytes, binmx_cuda_quantize_weight_workspace(), s);
  BINMX_TRY(scratch.rc());
  auto* max_bits = static_cast<unsigned long long*>(scratch.get());
  cudaError_t err = cudaMemsetAsync(max_bits, 0, sizeof(unsigned long long), s);
  if (err != cudaSuccess) return FailCuda(err, "cudaMemsetAsync");
  const unsigned blocks = Blocks(n) < 1024 ? Blocks(n) : 1024;
  MaxAbsTanhKernel<<<blocks, kThreads, 0, s>>>(w, n, max_bits);
  BINMX_TRY(LaunchCheck("quantize_weight max launch"));
  QuantWeightKernel<<<Blocks(n), kThreads, 0, s>>>(w, n, bits, max_bits, out);
  return LaunchCheck("quantize_weight launch");
}

int binmx_cuda_affine_sign(const float* x, int64_t n, int64_t channels, int64_t inner,
                           const float* scale, const float* shift, float* out, void* stream) {
  BINMX_TRY(CheckN("n", n));
  if (channels < 1 || inner < 1) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Expected `channels`, `inner` >= 1, got " + Str(channels) + ", " + Str(inner));
  }
  if (n == 0) return BINMX_CUDA_OK;
  if (!x || !scale || !shift || !out) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`x`, `scale`, `shift` and `out` must be non-null");
  }
  AffineSignKernel<<<Blocks(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      x, n, channels, inner, scale, shift, out);
  return LaunchCheck("affine_sign launch");
}

int binmx_cuda_ste_mask(const float* x, const float* dy, int64_t n, float grad_cancel, float* dx,
                        void* stream) {
  BINMX_TRY(CheckN("n", n));
  if (n == 0) return BINMX_CUDA_OK;
  if (!x || !dy || !dx) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`x`, `dy` and `dx` must be non-null device pointers");
  }
  SteMaskKernel<<<Blocks(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(x, dy, n,
                                                                               grad_cancel, dx);
  return LaunchCheck("ste_mask launch");
}

int binmx_cuda_pack_rows_affine(const float* x, int64_t rows, int64_t k, int64_t ld,
                                const float* scale, const float* shift, uint64_t* out,
                                void* stream) {
  if (rows < 0 || k < 0 || ld < k) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected rows >= 0, k >= 0, ld >= k, got rows = " +
                                             Str(rows) + ", k = " + Str(k) + ", ld = " + Str(ld));
  }
  const int64_t words = (k + 63) / 64;
  if (rows * words == 0) return BINMX_CUDA_OK;
  if (!x || !scale || !shift || !out) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`x`, `scale`, `shift` and `out` must be non-null");
  }
  PackRowsAffineKernel<<<Blocks(rows * words * 32), kThreads, 0,
                         static_cast<cudaStream_t>(stream)>>>(x, rows, k, ld, words, scale, shift,
                                                              out);
  return LaunchCheck("pack_rows_affine launch");
}

int binmx_cuda_pack_nchw_affine(const float* x, int64_t n, int64_t channels, int64_t h, int64_t w,
                                int64_t groups, const float* scale, const float* shift,
                                uint64_t* out, void* stream) {
  if (n < 0 || channels < 1 || h < 1 || w < 1 || groups < 1 || channels % groups != 0) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Expected n >= 0, channels, h, w, groups >= 1 and channels divisible by groups, "
                "got n = " +
                    Str(n) + ", channels = " + Str(channels) + ", h = " + Str(h) +
                    ", w = " + Str(w) + ", groups = " + Str(groups));
  }
  if (n == 0) return BINMX_CUDA_OK;
  if (!x || !scale || !shift || !out) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`x`, `scale`, `shift` and `out` must be non-null");
  }
  const int64_t cg = channels / groups, cw = (cg + 63) / 64;
  PackNchwAffineKernel<<<Blocks(n * groups * cw * h * w), kThreads, 0,
                         static_cast<cudaStream_t>(stream)>>>(x, n, channels, h * w, groups, cg, cw,
                                                              scale, shift, out);
  return LaunchCheck("pack_nchw_affine launch");
}

int binmx_cuda_unpack_conv_weight(const uint64_t* w_packed, int64_t num_filter, int64_t cg,
                                  int64_t kh, int64_t kw, float* out, void* stream) {
  if (num_filter < 0 || cg < 1 || kh < 1 || kw < 1) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected num_filter >= 0 and cg, kh, kw >= 1, got " +
                                             Str(num_filter) + ", " + Str(cg) + ", " + Str(kh) +
                                             ", " + Str(kw));
  }
  const int64_t total = num_filter * cg * kh * kw;
  BINMX_TRY(CheckN("num_filter * cg * kh * kw", total));
  if (total == 0) return BINMX_CUDA_OK;
  if (!w_packed || !out) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`w_packed` and `out` must be non-null");
  }
  UnpackConvWeightKernel<<<Blocks(total), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      w_packed, num_filter, cg, kh, kw, (cg + 63) / 64, out);
  return LaunchCheck("unpack_conv_weight launch");
}

int binmx_cuda_scale_rows(const float* w, const float* alpha, int64_t rows, int64_t size,
                          float* out, void* stream) {
  BINMX_TRY(CheckN("rows * size", rows < 0 || size < 0 ? -1 : rows * size));
  if (rows * size == 0) return BINMX_CUDA_OK;
  if (!w || !alpha || !out) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`w`, `alpha` and `out` must be non-null");
  }
  ScaleRowsKernel<<<Blocks(rows * size), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      w, alpha, rows, size, out);
  return LaunchCheck("scale_rows launch");
}

int binmx_cuda_bias_grad(const float* dy, int64_t batch, int64_t channels, int64_t inner, float* db,
                         void* stream) {
  if (batch < 0 || channels < 0 || inner < 0 || channels > 0x7fffffff) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected batch, channels, inner >= 0, got " + Str(batch) +
                                             ", " + Str(channels) + ", " + Str(inner));
  }
  if (channels == 0) return BINMX_CUDA_OK;
  if (!db || (batch * inner > 0 && !dy)) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`dy` and `db` must be non-null");
  }
  BiasGradKernel<<<static_cast<unsigned>(channels), kThreads, 0,
                   static_cast<cudaStream_t>(stream)>>>(dy, batch, channels, inner, db);
  return LaunchCheck("bias_grad launch");
}

int binmx_cuda_finish_weight_grad(const float* g, const float* w, const float* wq,
                                  const float* alpha, int64_t rows, int64_t size, float* dw,
                                  float* dalpha, void* stream) {
  if (rows < 0 || rows > 0x7fffffff || size < 1) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Expected rows in [0, 2^31) and size >= 1, got " + Str(rows) + ", " + Str(size));
  }
  if (rows == 0 || (dw == nullptr && dalpha == nullptr)) return BINMX_CUDA_OK;
  if (g == nullptr || (alpha != nullptr && wq == nullptr) ||
      (alpha != nullptr && dw != nullptr && w == nullptr)) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "`g` (and with alpha: `wq`, and `w` when dw is wanted) must be non-null");
  }
  FinishWeightGradKernel<<<static_cast<unsigned>(rows), kThreads, 0,
                           static_cast<cudaStream_t>(stream)>>>(g, w, wq, alpha, size, dw,
                                                                alpha ? dalpha : nullptr);
  return LaunchCheck("finish_weight_grad launch");
}

size_t binmx_cuda_float_conv2d_workspace(const binmx_cuda_conv2d_params* p) {
  Geom g;
  if (MakeGeom(p, &g) != BINMX_CUDA_OK) return 0;
  return ConvFloatWorkspace(g);
}

int binmx_cuda_float_conv2d_forward(const binmx_cuda_conv2d_params* p, const float* x, int quant,
                                    const float* w, const float* alpha, const float* bias,
                                    float* out, void* workspace, size_t workspace_bytes,
                                    void* stream) {
  Geom g;
  BINMX_TRY(MakeGeom(p, &g));
  BINMX_TRY(CheckQuant(quant));
  if (g.n == 0) return BINMX_CUDA_OK;
  if (!x || !w || !out) return Fail(BINMX_CUDA_ERR_ARGUMENT, "`x`, `w` and `out` must be non-null");
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  Scratch scratch(workspace, workspace_bytes, ConvFloatWorkspace(g), s);
  BINMX_TRY(scratch.rc());
  float* col = static_cast<float*>(scratch.get());
  const int64_t nb_max = ChunkImages(g), ohw = g.oh * g.ow;
  for (int64_t n0 = 0; n0 < g.n; n0 += nb_max) {
    const int64_t nb = g.n - n0 < nb_max ? g.n - n0 : nb_max;
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      Im2colKernel<<<Blocks(nb * g.kdepth * ohw), kThreads, 0, s>>>(x, g, n0, nb, grp, quant, col);
      BINMX_TRY(LaunchCheck("im2col launch"));
      GemmArgs a;
      a.m = g.fg;
      a.n = ohw;
      a.k = g.kdepth;
      a.k_inner = g.kdepth;
      a.a = w + grp * g.fg * g.kdepth;
      a.a_m = g.kdepth;
      a.a_ki = 1;
      a.b = col;
      a.b_ki = ohw;
      a.b_n = 1;
      a.b_z = g.kdepth * ohw;
      a.c = out + (n0 * g.f + grp * g.fg) * ohw;
      a.c_m = ohw;
      a.c_n = 1;
      a.c_z = g.f * ohw;
      BINMX_TRY(Gemm(a, nb, s));
    }
  }
  if (alpha != nullptr || bias != nullptr) {
    const int64_t total = g.n * g.f * ohw;
    EpilogueKernel<<<Blocks(total), kThreads, 0, s>>>(out, total, g.f, ohw, alpha, bias);
    BINMX_TRY(LaunchCheck("epilogue launch"));
  }
  return BINMX_CUDA_OK;
}

int binmx_cuda_float_conv2d_backward(const binmx_cuda_conv2d_params* p, const float* x, int quant,
                                     const float* w, const float* dy, const float* x_mask,
                                     float grad_cancel, float* dx, float* dw, void* workspace,
                                     size_t workspace_bytes, void* stream) {
  Geom g;
  BINMX_TRY(MakeGeom(p, &g));
  BINMX_TRY(CheckQuant(quant));
  if (dx == nullptr && dw == nullptr) return BINMX_CUDA_OK;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t ohw = g.oh * g.ow;
  if (g.n == 0) {
    if (dw != nullptr) {
      const cudaError_t err =
          cudaMemsetAsync(dw, 0, sizeof(float) * g.f * g.kdepth, s);  // sum over nothing
      if (err != cudaSuccess) return FailCuda(err, "cudaMemsetAsync");
    }
    return BINMX_CUDA_OK;
  }
  if (!dy || (dw && !x) || (dx && !w)) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`dy`, `x` (for dw) and `w` (for dx) must be non-null");
  }
  Scratch scratch(workspace, workspace_bytes, ConvFloatWorkspace(g), s);
  BINMX_TRY(scratch.rc());
  float* col = static_cast<float*>(scratch.get());
  const int64_t nb_max = ChunkImages(g);
  for (int64_t n0 = 0; n0 < g.n; n0 += nb_max) {
    const int64_t nb = g.n - n0 < nb_max ? g.n - n0 : nb_max;
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      if (dw != nullptr) {
        Im2colKernel<<<Blocks(nb * g.kdepth * ohw), kThreads, 0, s>>>(x, g, n0, nb, grp, quant,
                                                                      col);
        BINMX_TRY(LaunchCheck("im2col launch"));
        GemmArgs a;  // dW_g (Fg x K) (+)= sum over (image, pixel) of dy_g . col^T
        a.m = g.fg;
        a.n = g.kdepth;
        a.k = nb * ohw;
        a.k_inner = ohw;
        a.a = dy + (n0 * g.f + grp * g.fg) * ohw;
        a.a_m = ohw;
        a.a_ko = g.f * ohw;
        a.a_ki = 1;
        a.b = col;
        a.b_n = ohw;
        a.b_ko = g.kdepth * ohw;
        a.b_ki = 1;
        a.c = dw + grp * g.fg * g.kdepth;
        a.c_m = g.kdepth;
        a.c_n = 1;
        a.accumulate = n0 > 0;
        BINMX_TRY(Gemm(a, 1, s));
      }
      if (dx != nullptr) {
        GemmArgs a;  // dcol[s] (K x OHW) = W_g^T . dy_g[s]
        a.m = g.kdepth;
        a.n = ohw;
        a.k = g.fg;
        a.k_inner = g.fg;
        a.a = w + grp * g.fg * g.kdepth;
        a.a_m = 1;
        a.a_ki = g.kdepth;
        a.b = dy + (n0 * g.f + grp * g.fg) * ohw;
        a.b_ki = ohw;
        a.b_n = 1;
        a.b_z = g.f * ohw;
        a.c = col;
        a.c_m = ohw;
        a.c_n = 1;
        a.c_z = g.kdepth * ohw;
        BINMX_TRY(Gemm(a, nb, s));
        Col2imKernel<<<Blocks(nb * g.cg * g.h * g.w), kThreads, 0, s>>>(col, g, n0, nb, grp, x_mask,
                                                                        grad_cancel, dx);
        BINMX_TRY(LaunchCheck("col2im launch"));
      }
    }
  }
  return BINMX_CUDA_OK;
}

int binmx_cuda_float_dense_forward(const float* x, int quant, const float* w, const float* alpha,
                                   const float* bias, float* out, int64_t rows, int64_t depth,
                                   int64_t hidden, void* stream) {
  BINMX_TRY(CheckQuant(quant));
  if (rows < 0 || depth < 0 || hidden < 0) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected rows, depth, hidden >= 0, got " + Str(rows) +
                                             ", " + Str(depth) + ", " + Str(hidden));
  }
  if (rows == 0 || hidden == 0) return BINMX_CUDA_OK;
  if (!out || (depth > 0 && (!x || !w))) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`x`, `w` and `out` must be non-null");
  }
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  GemmArgs a;  // out (rows x hidden) = Q(x) . w^T
  a.m = rows;
  a.n = hidden;
  a.k = depth;
  a.k_inner = depth > 0 ? depth : 1;
  a.a = x;
  a.a_m = depth;
  a.a_ki = 1;
  a.sign_a = quant == BINMX_CUDA_QUANT_SIGN;
  a.b = w;
  a.b_ki = 1;
  a.b_n = depth;
  a.c = out;
  a.c_m = hidden;
  a.c_n = 1;
  BINMX_TRY(Gemm(a, 1, s));
  if (alpha != nullptr || bias != nullptr) {
    EpilogueKernel<<<Blocks(rows * hidden), kThreads, 0, s>>>(out, rows * hidden, hidden, 1, alpha,
                                                              bias);
    BINMX_TRY(LaunchCheck("epilogue launch"));
  }
  return BINMX_CUDA_OK;
}

int binmx_cuda_float_dense_backward(const float* x, int quant, const float* w, const float* dy,
                                    const float* x_mask, float grad_cancel, float* dx, float* dw,
                                    int64_t rows, int64_t depth, int64_t hidden, void* stream) {
  BINMX_TRY(CheckQuant(quant));
  if (rows < 0 || depth < 0 || hidden < 0) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected rows, depth, hidden >= 0, got " + Str(rows) +
                                             ", " + Str(depth) + ", " + Str(hidden));
  }
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (dx != nullptr && rows * depth > 0) {
    if (!dy || !w) return Fail(BINMX_CUDA_ERR_ARGUMENT, "`dy` and `w` must be non-null for dx");
    GemmArgs a;  // dx (rows x depth) = dy . w
    a.m = rows;
    a.n = depth;
    a.k = hidden;
    a.k_inner = hidden > 0 ? hidden : 1;
    a.a = dy;
    a.a_m = hidden;
    a.a_ki = 1;
    a.b = w;
    a.b_ki = depth;
    a.b_n = 1;
    a.c = dx;
    a.c_m = depth;
    a.c_n = 1;
    BINMX_TRY(Gemm(a, 1, s));
    if (x_mask != nullptr) {
      SteMaskKernel<<<Blocks(rows * depth), kThreads, 0, s>>>(x_mask, dx, rows * depth, grad_cancel,
                                                              dx);
      BINMX_TRY(LaunchCheck("ste_mask launch"));
    }
  }
  if (dw != nullptr && hidden * depth > 0) {
    if (!dy || !x) return Fail(BINMX_CUDA_ERR_ARGUMENT, "`dy` and `x` must be non-null for dw");
    GemmArgs a;  // dw (hidden x depth) = dy^T . Q(x)
    a.m = hidden;
    a.n = depth;
    a.k = rows;
    a.k_inner = rows > 0 ? rows : 1;
    a.a = dy;
    a.a_m = 1;
    a.a_ki = hidden;
    a.b = x;
    a.b_ki = depth;
    a.b_n = 1;
    a.sign_b = quant == BINMX_CUDA_QUANT_SIGN;
    a.c = dw;
    a.c_m = depth;
    a.c_n = 1;
    if (rows == 0) {
      const cudaError_t err = cudaMemsetAsync(dw, 0, sizeof(float) * hidden * depth, s);
      if (err != cudaSuccess) return FailCuda(err, "cudaMemsetAsync");
    } else {
      BINMX_TRY(Gemm(a, 1, s));
    }
  }
  return BINMX_CUDA_OK;
}

}  // extern "C"

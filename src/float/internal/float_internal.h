/*
 * binmx float math: what its source files share (private to the binmx_float target; the API
 * is float_conv.h). Per-thread grow-only buffers, the single-threaded OpenBLAS call, the row
 * helpers the cloned loops inline, the batch plan of the convolutions, and the entry points of
 * the backward methods and the channels-last transposes that live in their own files:
 *
 *   blas.cc         OpenBLAS set-up, Gemm1, Sgemm, the per-thread buffers
 *   float_conv.cc   im2col forward and backward, the choice of backward method
 *   conv_shift.cc   the shifted-GEMM backward (stride 1)
 *   conv_rows.cc    the channels-last ("rows") backward
 *   transpose.cc    planar <-> channels-last transposes (16 x 16 AVX-512 tiles where the
 *                   core's ISA choice, DefaultIsa(), is avx512), NHWC <-> NCHW
 *   dense.cc        dense forward and backward
 *   elementwise.cc  bias gradient, STE mask, sign, per-channel affine
 *
 * Loops that run per element are compiled for avx512f, avx2 and the base ISA
 * (BINMX_FLOAT_CLONES, GCC's target_clones; the loader picks one by CPU).
 */
#ifndef BINMX_FLOAT_FLOAT_INTERNAL_H_
#define BINMX_FLOAT_FLOAT_INTERNAL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "conv.h"
#include "float_conv.h"
#include "xnor_gemm.h"

namespace binmx {
namespace float_detail {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(BINMX_NO_TARGET_CLONES)
#define BINMX_FLOAT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
// 16 x 16 tile transposes for the channels-last path (transpose.cc).
#define BINMX_HAVE_TRANSPOSE16 1
#define BINMX_AVX512 __attribute__((target("avx512f")))
#else
#define BINMX_FLOAT_CLONES
#endif

constexpr int64_t kTargetCols = 1024;                // GEMM columns per chunk worth aiming for
constexpr int64_t kRowsTargetCols = 256;             // the same for the channels-last path (its col
                                                     // rows are taps * Cg floats; smaller chunks
                                                     // stay in L2: 256 measured best of 128-1024)
constexpr int64_t kMaxColFloats = 1 << 22;           // 16 MiB col buffer per thread at most
constexpr int64_t kMinSplitWork = int64_t{1} << 20;  // m*n*k below which a GEMM is not split

inline void Require(bool ok, const char* what) {
  if (!ok) throw std::invalid_argument(what);
}

inline int Threads(int threads) { return threads > 0 ? threads : DefaultThreads(); }

// OpenBLAS single-threaded, once per process (its pool would compete with ours).
void InitBlas();

// Grow-only per-thread buffer (no zero fill).
class Scratch {
 public:
  float* Get(int64_t n) {
    if (n > cap_) {
      buf_.reset(new float[static_cast<size_t>(n)]);
      cap_ = n;
    }
    return buf_.get();
  }

 private:
  std::unique_ptr<float[]> buf_;
  int64_t cap_ = 0;
};

// Grow-only per-thread buffer that is all zeros whenever Get returns: its user must set back
// to zero whatever it wrote before the next Get.
class ZeroedScratch {
 public:
  float* Get(int64_t n) {
    if (n > cap_) {
      buf_.reset(new float[static_cast<size_t>(n)]());
      cap_ = n;
    }
    return buf_.get();
  }

 private:
  std::unique_ptr<float[]> buf_;
  int64_t cap_ = 0;
};

struct ThreadBuffers {
  Scratch col, dy, tmp;
  ZeroedScratch zeroed;
  Scratch acc, wt;  // the calling thread's, outside its parallel loops: dW partials, W reordered
};

// The calling thread's buffers.
ThreadBuffers& Buffers();

// One single-threaded OpenBLAS call (sizes checked to fit its 32-bit ints).
void Gemm1(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Row helpers are inlined into their (cloned) callers: rows can be as short as a few floats.
#define BINMX_INLINE inline __attribute__((always_inline))

// dst[k] = Q(src[k * stride]) for k < n.
BINMX_INLINE void CopyRow(const float* __restrict src, int64_t stride, int64_t n, bool sign,
                          float* __restrict dst) {
  if (stride == 1) {
    if (sign) {
      for (int64_t k = 0; k < n; ++k) dst[k] = src[k] < 0.0f ? -1.0f : 1.0f;
    } else {
      std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(n));
    }
    return;
  }
  if (sign) {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[k * stride] < 0.0f ? -1.0f : 1.0f;
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[k * stride];
  }
}

// dst[k * stride] += src[k] for k < n.
BINMX_INLINE void AddRow(const float* __restrict src, int64_t n, int64_t stride,
                         float* __restrict dst) {
  if (stride == 1) {
    for (int64_t k = 0; k < n; ++k) dst[k] += src[k];
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k * stride] += src[k];
  }
}

// dx[i] = dy[i] if |x[i]| <= grad_cancel else 0, and out[i] = sgn(x[i]) (NaN -> +1, as the
// sign bits). Defined here, one cloned copy per file that uses them: a cloned caller calls the
// clone of its own ISA directly, which must be in its own file.
namespace {

[[maybe_unused]] BINMX_FLOAT_CLONES void MaskRange(const float* __restrict x, const float* dy,
                                                   int64_t n, float grad_cancel, float* dx) {
  for (int64_t i = 0; i < n; ++i) dx[i] = std::fabs(x[i]) <= grad_cancel ? dy[i] : 0.0f;
}

[[maybe_unused]] BINMX_FLOAT_CLONES void SignRange(const float* __restrict x, int64_t n,
                                                   float* __restrict out) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] < 0.0f ? -1.0f : 1.0f;
}

}  // namespace

// How a convolution call cuts the batch (see the file comment).
struct Plan {
  int64_t nb = 1;      // images per chunk
  int64_t chunks = 0;  // ceil(batch / nb)
  int parts = 1;       // parallel blocks of consecutive chunks
  int64_t ChunkBegin(int part) const { return chunks * part / parts; }
};

inline Plan MakePlan(const Conv2dParams& p, int threads, int64_t target_cols = kTargetCols) {
  Plan plan;
  const int64_t ohw = p.OutH() * p.OutW(), kdim = p.FilterSize();
  const int64_t per_thread = (p.batch + threads - 1) / threads;
  int64_t nb = (target_cols + ohw - 1) / ohw;
  nb = std::min(nb, std::max<int64_t>(1, kMaxColFloats / std::max<int64_t>(1, kdim * ohw)));
  nb = std::max<int64_t>(1, std::min(nb, per_thread));
  plan.nb = nb;
  plan.chunks = (p.batch + nb - 1) / nb;
  plan.parts = static_cast<int>(std::min<int64_t>(threads, plan.chunks));
  return plan;
}

// The shifted-GEMM backward pays for this shape (stride 1; conv_shift.cc).
bool ShiftPays(const Conv2dParams& p);

// The backward pass with shifted GEMMs (see above); dw was zeroed by the caller.
void ShiftBackward(const float* x, InputQuant quant, const float* w, const float* dy,
                   const float* x_mask, float grad_cancel, float* dx, float* dw,
                   const Conv2dParams& p, int threads);

// The channels-last backward pays for this shape (conv_rows.cc).
bool RowsPay(const Conv2dParams& p, int threads);

// The channels-last ("rows") backward; writes all of dx and dw (conv_rows.cc).
void RowsBackward(const float* x, InputQuant quant, const float* w, const float* dy,
                  const float* x_mask, float grad_cancel, float* dx, float* dw,
                  const Conv2dParams& p, int threads);

// The transposes are defined with BINMX_FLOAT_CLONES in transpose.cc and declared here without
// it: a caller in another file then calls the loader-resolved symbol, never a clone by name
// (the clones are local to their file).

// Whether the channels-last transposes use the 16 x 16 AVX-512 tiles: they were built and the
// core's ISA choice (DefaultIsa(), capped by BINMX_ISA) is avx512 (transpose.cc).
bool UseTranspose16();

// Planar (rows x n, row stride n) -> interleaved (n x rows, row stride ld): dst[i * ld + r] =
// Q(src[r * n + i]), in blocks of 16 rows so that each output line is written whole (tile16:
// in 16 x 16 AVX-512 tiles).
void ToChannelsLast(const float* src, int64_t rows, int64_t n, int64_t ld, bool sign, bool tile16,
                    float* dst);

// The inverse: dst[r * n + i] = src[i * ld + r], times the STE mask 1[|mask[r * n + i]| <=
// grad_cancel] when mask is not null.
void FromChannelsLast(const float* src, int64_t rows, int64_t n, int64_t ld, const float* mask,
                      float grad_cancel, bool tile16, float* dst);

}  // namespace float_detail
}  // namespace binmx

#endif  // BINMX_FLOAT_FLOAT_INTERNAL_H_

/*
 * binmx float math, elementwise and per channel (float_conv.h): the bias gradient (double sums
 * per channel), the STE mask dx = dy * 1[|x| <= grad_cancel], sgn, and the per-channel affine
 * x * scale_c + shift_c (then relu) with its gradient. Parallel over fixed blocks, so results do
 * not depend on the thread count.
 */
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "float_internal.h"
#include "parallel.h"

namespace binmx {

using float_detail::MaskRange;
using float_detail::Require;
using float_detail::SignRange;
using float_detail::Threads;

void BiasGrad(const float* dy, int64_t batch, int64_t channels, int64_t inner, float* db,
              int threads) {
  Require(batch >= 0 && channels >= 0 && inner >= 0, "BiasGrad: bad sizes");
  threads = Threads(threads);
  if (inner == 1) {
    // Dense layer: dy is batch rows of `channels` values; sum down the rows, a block of
    // channels at a time (the same double sums in the same order as below, vectorised over f).
    constexpr int64_t kBlock = 256;
    const int64_t blocks = (channels + kBlock - 1) / kBlock;
    const int64_t tasks =
        batch * channels >= (int64_t{1} << 16) ? blocks : std::min<int64_t>(blocks, 1);
    ParallelFor(tasks, threads, [&](int64_t begin, int64_t end) {
      const int64_t b0 = tasks == blocks ? begin : 0, b1 = tasks == blocks ? end : blocks;
      double acc[kBlock];
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t f0 = b * kBlock, fn = std::min(kBlock, channels - f0);
        for (int64_t f = 0; f < fn; ++f) acc[f] = 0.0;
        for (int64_t n = 0; n < batch; ++n) {
          const float* row = dy + n * channels + f0;
          for (int64_t f = 0; f < fn; ++f) acc[f] += double{row[f]};
        }
        for (int64_t f = 0; f < fn; ++f) db[f0 + f] = static_cast<float>(acc[f]);
      }
    });
    return;
  }
  const int64_t tasks = batch * inner >= 4096 ? channels : (channels > 0 ? 1 : 0);
  ParallelFor(tasks, threads, [&](int64_t begin, int64_t end) {
    const bool all = tasks == 1;
    for (int64_t f = all ? 0 : begin; f < (all ? channels : end); ++f) {
      double s = 0.0;
      for (int64_t n = 0; n < batch; ++n) {
        const float* src = dy + (n * channels + f) * inner;
        float part = 0.0f;  // per-row float partial: vectorises; rows are short
        for (int64_t q = 0; q < inner; ++q) part += src[q];
        s += part;
      }
      db[f] = static_cast<float>(s);
    }
  });
}

namespace {

// fn(i0, i1) over [0, n) in blocks of 64 Ki elements, in parallel.
template <typename Fn>
void ElementwiseBlocks(int64_t n, int threads, Fn&& fn) {
  if (n <= 0) return;
  constexpr int64_t kBlock = 1 << 16;
  ParallelFor((n + kBlock - 1) / kBlock, Threads(threads),
              [&](int64_t begin, int64_t end) { fn(begin * kBlock, std::min(n, end * kBlock)); });
}

}  // namespace

void SteMask(const float* x, const float* dy, int64_t n, float grad_cancel, float* dx,
             int threads) {
  ElementwiseBlocks(n, threads, [&](int64_t i0, int64_t i1) {
    MaskRange(x + i0, dy + i0, i1 - i0, grad_cancel, dx + i0);
  });
}

void SignInto(const float* x, int64_t n, float* out, int threads) {
  ElementwiseBlocks(n, threads,
                    [&](int64_t i0, int64_t i1) { SignRange(x + i0, i1 - i0, out + i0); });
}

void ChannelAffine(const float* x, int64_t batch, int64_t channels, int64_t inner,
                   const float* scale, const float* shift, bool relu, float* out, int threads) {
  if (batch <= 0 || channels <= 0 || inner <= 0) return;
  ParallelFor(batch * channels, Threads(threads), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float s = scale[t % channels], h = shift[t % channels];
      const float* xi = x + t * inner;
      float* yo = out + t * inner;
      if (relu) {
#pragma omp simd
        for (int64_t i = 0; i < inner; ++i) {
          const float v = xi[i] * s + h;
          yo[i] = v < 0.0f ? 0.0f : v;
        }
      } else {
#pragma omp simd
        for (int64_t i = 0; i < inner; ++i) yo[i] = xi[i] * s + h;
      }
    }
  });
}

void ChannelAffineBackward(const float* dy, const float* x, const float* out, int64_t batch,
                           int64_t channels, int64_t inner, const float* scale, bool relu,
                           float* dx, float* dscale, float* dshift, int threads) {
  if (batch <= 0 || channels <= 0 || inner <= 0) return;
  // One task per channel: its sums run over every image, so no two tasks share an output.
  ParallelFor(channels, Threads(threads), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double ss = 0.0, sh = 0.0;
      for (int64_t n = 0; n < batch; ++n) {
        const int64_t off = (n * channels + c) * inner;
        for (int64_t i = 0; i < inner; ++i) {
          if (relu && !(out[off + i] > 0.0f)) {  // masked: no contribution, even from NaN
            if (dx != nullptr) dx[off + i] = 0.0f;
            continue;
          }
          const float g = dy[off + i];
          if (dx != nullptr) dx[off + i] = g * scale[c];
          ss += static_cast<double>(g) * x[off + i];
          sh += g;
        }
      }
      if (dscale != nullptr) dscale[c] = static_cast<float>(ss);
      if (dshift != nullptr) dshift[c] = static_cast<float>(sh);
    }
  });
}
}  // namespace binmx

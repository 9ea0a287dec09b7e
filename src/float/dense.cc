/*
 * binmx float math: the dense layer's forward and STE backward on OpenBLAS (float_conv.h):
 * out = Q(x) . w^T * alpha + bias; dx = dy . Qw(w) (masked), dw = dy^T . Q(x). With a sign
 * weight quantiser, Qw(w) is made a block of hidden rows at a time, in cache.
 */
#include <algorithm>
#include <cstdint>
#include <vector>

#include "float_internal.h"
#include "parallel.h"

namespace binmx {

using namespace float_detail;  // NOLINT(build/namespaces): this target's own helpers

void FloatDenseForward(const float* x, InputQuant quant, const float* w, const float* alpha,
                       const float* bias, float* out, int64_t rows, int64_t depth, int64_t hidden,
                       int threads) {
  Require(rows >= 0 && depth > 0 && hidden > 0, "FloatDenseForward: bad sizes");
  if (rows == 0) return;
  Require(x != nullptr && w != nullptr && out != nullptr, "FloatDenseForward: null pointer");
  threads = Threads(threads);
  std::vector<float> xq;
  const float* xin = x;
  if (quant == InputQuant::kSign) {
    xq.resize(static_cast<size_t>(rows * depth));
    SignInto(x, rows * depth, xq.data(), threads);
    xin = xq.data();
  }
  Sgemm(false, true, rows, hidden, depth, 1.0f, xin, depth, w, depth, 0.0f, out, hidden, threads);
  if (alpha == nullptr && bias == nullptr) return;
  for (int64_t m = 0; m < rows; ++m) {
    float* o = out + m * hidden;
    for (int64_t h = 0; h < hidden; ++h) {
      o[h] = o[h] * (alpha ? alpha[h] : 1.0f) + (bias ? bias[h] : 0.0f);
    }
  }
}

void FloatDenseBackward(const float* x, InputQuant quant, const float* w, const float* dy,
                        const float* x_mask, float grad_cancel, float* dx, float* dw, int64_t rows,
                        int64_t depth, int64_t hidden, int threads, InputQuant w_quant) {
  Require(rows >= 0 && depth > 0 && hidden > 0, "FloatDenseBackward: bad sizes");
  threads = Threads(threads);
  if (dx && rows > 0 && w_quant == InputQuant::kSign) {
    // dx = sum over blocks of hidden rows of dy[:, block] . sgn(w[block, :]): each block's
    // sgn(w) is made in a buffer that stays in cache while the GEMM reads it, instead of a
    // whole sgn(w) going out to memory and back (1024 -> 1000, 64 rows: 1.5 -> 1.2 ms, 1 thread;
    // 128 rows measured best of 32..1000). With several threads, each takes a slice of dx's
    // columns (whole 16-column groups, as Sgemm) and runs its own blocks: one parallel region.
    constexpr int64_t kBlockRows = 128;
    InitBlas();
    const int64_t groups = (depth + 15) / 16;
    const int parts = static_cast<int>(
        std::min<int64_t>({threads, rows * depth * hidden / kMinSplitWork + 1, groups}));
    ParallelFor(parts, threads, [&](int64_t begin, int64_t end) {
      for (int64_t part = begin; part < end; ++part) {
        const int64_t d0 = std::min(depth, groups * part / parts * 16);
        const int64_t d1 = std::min(depth, groups * (part + 1) / parts * 16);
        const int64_t dd = d1 - d0;
        if (dd <= 0) continue;
        const int64_t block =
            std::min(hidden, std::max<int64_t>(1, std::min(kBlockRows, kMaxColFloats / dd)));
        float* wq = Buffers().col.Get(block * dd);
        for (int64_t h0 = 0; h0 < hidden; h0 += block) {
          const int64_t hb = std::min(block, hidden - h0);
          if (dd == depth) {
            SignRange(w + h0 * depth, hb * depth, wq);
          } else {
            for (int64_t h = 0; h < hb; ++h) SignRange(w + (h0 + h) * depth + d0, dd, wq + h * dd);
          }
          Gemm1(false, false, rows, dd, hb, 1.0f, dy + h0, hidden, wq, dd, h0 == 0 ? 0.0f : 1.0f,
                dx + d0, depth);
        }
        if (x_mask) {
          for (int64_t r = 0; r < rows; ++r) {
            float* dr = dx + r * depth + d0;
            MaskRange(x_mask + r * depth + d0, dr, dd, grad_cancel, dr);
          }
        }
      }
    });
  } else if (dx && rows > 0) {
    Sgemm(false, false, rows, depth, hidden, 1.0f, dy, hidden, w, depth, 0.0f, dx, depth, threads);
    if (x_mask) SteMask(x_mask, dx, rows * depth, grad_cancel, dx, threads);
  }
  if (dw) {
    std::vector<float> xq;
    const float* xin = x;
    if (quant == InputQuant::kSign && rows > 0) {
      xq.resize(static_cast<size_t>(rows * depth));
      SignInto(x, rows * depth, xq.data(), threads);
      xin = xq.data();
    }
    Sgemm(true, false, hidden, depth, rows, 1.0f, dy, hidden, xin, depth, 0.0f, dw, depth, threads);
  }
}

}  // namespace binmx

/*
 * binmx float math: OpenBLAS set-up, the single-threaded GEMM call every path makes (Gemm1),
 * the threaded Sgemm of float_conv.h (C split into column or row blocks of whole 16-element
 * groups, one single-threaded OpenBLAS call a block), and the per-thread grow-only buffers.
 */
#include <algorithm>
#include <cstdint>
#include <limits>
#include <mutex>

#include "cblas.h"
#include "float_internal.h"
#include "parallel.h"

namespace binmx {
namespace float_detail {

void InitBlas() {
  static std::once_flag once;
  std::call_once(once, [] { scipy_openblas_set_num_threads(1); });
}

ThreadBuffers& Buffers() {
  thread_local ThreadBuffers buffers;
  return buffers;
}

// One single-threaded OpenBLAS call (sizes checked to fit its 32-bit ints).
void Gemm1(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  Require(m <= kMax && n <= kMax && k <= kMax && lda <= kMax && ldb <= kMax && ldc <= kMax,
          "Sgemm: a dimension exceeds 2^31 - 1");
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i) {
      float* row = c + i * ldc;
      for (int64_t j = 0; j < n; ++j) row[j] = beta == 0.0f ? 0.0f : row[j] * beta;
    }
    return;
  }
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
                    static_cast<int>(lda), b, static_cast<int>(ldb), beta, c,
                    static_cast<int>(ldc));
}

}  // namespace float_detail

using float_detail::Gemm1;
using float_detail::InitBlas;
using float_detail::kMinSplitWork;
using float_detail::Require;
using float_detail::Threads;

void Sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
           int threads) {
  Require(m >= 0 && n >= 0 && k >= 0, "Sgemm: sizes must be >= 0");
  Require(lda >= (trans_a ? m : k) && ldb >= (trans_b ? k : n) && ldc >= n,
          "Sgemm: a leading dimension is smaller than its row");
  InitBlas();
  threads = Threads(threads);
  const int64_t work = m * n * k;
  int parts = static_cast<int>(std::min<int64_t>(threads, work / kMinSplitWork + 1));
  // Split the longer side of C into blocks of whole 16-element groups.
  const bool split_cols = n >= m;
  const int64_t side = split_cols ? n : m;
  parts = static_cast<int>(std::min<int64_t>(parts, (side + 15) / 16));
  if (parts <= 1) {
    Gemm1(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const int64_t groups = (side + 15) / 16;
  ParallelFor(parts, threads, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t s0 = std::min(side, groups * t / parts * 16);
      const int64_t s1 = std::min(side, groups * (t + 1) / parts * 16);
      if (s1 <= s0) continue;
      if (split_cols) {
        Gemm1(trans_a, trans_b, m, s1 - s0, k, alpha, a, lda, b + (trans_b ? s0 * ldb : s0), ldb,
              beta, c + s0, ldc);
      } else {
        Gemm1(trans_a, trans_b, s1 - s0, n, k, alpha, a + (trans_a ? s0 : s0 * lda), lda, b, ldb,
              beta, c + s0 * ldc, ldc);
      }
    }
  });
}

}  // namespace binmx

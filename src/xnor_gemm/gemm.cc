/*
 * binmx core: xnor GEMM driver.
 *
 * C[i, j] = k - 2 * popcount(A[i] XOR B[j]) over packed rows of `words` uint64 words.
 * This first version is the portable reference path; ISA kernels plug in behind it.
 */
#include <stdexcept>
#include <string>

#include "xnor_gemm.h"

namespace binmx {

namespace {

void CheckGemmArgs(const void* a, const void* b, int64_t m, int64_t n, int64_t words, int64_t k,
                   const void* c, int64_t ldc) {
  if (m < 0 || n < 0 || words < 0) throw std::invalid_argument("XnorGemm: negative size");
  if (k < 0 || k > 64 * words) {
    throw std::invalid_argument("XnorGemm: k=" + std::to_string(k) + " must be in [0, 64*words=" +
                                std::to_string(64 * words) + "]");
  }
  if (ldc < n) throw std::invalid_argument("XnorGemm: ldc < n");
  if ((m > 0 && words > 0 && a == nullptr) || (n > 0 && words > 0 && b == nullptr) ||
      (m > 0 && n > 0 && c == nullptr)) {
    throw std::invalid_argument("XnorGemm: null pointer");
  }
}

inline int32_t Dot(const uint64_t* a, const uint64_t* b, int64_t words, int64_t k) {
  int64_t mismatches = 0;
  for (int64_t w = 0; w < words; ++w) mismatches += __builtin_popcountll(a[w] ^ b[w]);
  return static_cast<int32_t>(k - 2 * mismatches);
}

}  // namespace

void XnorGemm(const uint64_t* a, const uint64_t* b, int64_t m, int64_t n, int64_t words,
              int64_t k, int32_t* c, int64_t ldc, const GemmConfig& config) {
  CheckGemmArgs(a, b, m, n, words, k, c, ldc);
  RequireIsa(config.isa);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = Dot(a + i * words, b + j * words, words, k);
  }
}

void XnorGemmF32(const uint64_t* a, const uint64_t* b, int64_t m, int64_t n, int64_t words,
                 int64_t k, const float* scale, const float* bias, float* c, int64_t ldc,
                 const GemmConfig& config) {
  CheckGemmArgs(a, b, m, n, words, k, c, ldc);
  RequireIsa(config.isa);
  for (int64_t i = 0; i < m; ++i) {
    const float s = scale ? scale[i] : 1.0f;
    const float o = bias ? bias[i] : 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      c[i * ldc + j] = static_cast<float>(Dot(a + i * words, b + j * words, words, k)) * s + o;
    }
  }
}

}  // namespace binmx

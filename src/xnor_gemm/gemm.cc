/*
 * binmx core: xnor GEMM driver (ISA-neutral; compiled with the base flags).
 *
 * C[i, j] = k - 2 * popcount(A[i] XOR B[j]) over packed rows of `words` uint64 words, int32 or
 * float (dot * scale[i] + bias[i]) output. B is first copied into column panels of
 * KernelSpec::nc columns in the word-major layout of kernels.h (caller's thread-local scratch).
 * Then C is cut into tasks = (row block) x (panel), row-block-major; ParallelFor hands
 * contiguous runs of tasks to the threads, each calling the ISA tile function. Every C element
 * is computed by the same instructions whatever the task split, so results do not depend on
 * the thread count.
 */
#include <climits>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"
#include "parallel.h"
#include "xnor_gemm.h"

namespace binmx {

namespace internal {
KernelSpec KernelFor(Isa isa);  // dispatch.cc
}  // namespace internal

namespace {

using internal::GemmOut;
using internal::KernelSpec;

void CheckGemmArgs(const void* a, const void* b, int64_t m, int64_t n, int64_t words, int64_t k,
                   const void* c, int64_t ldc) {
  if (m < 0 || n < 0 || words < 0) {
    throw std::invalid_argument("XnorGemm: sizes must be >= 0, got m=" + std::to_string(m) +
                                " n=" + std::to_string(n) + " words=" + std::to_string(words));
  }
  if (k < 0 || k > 64 * words) {
    throw std::invalid_argument("XnorGemm: k=" + std::to_string(k) +
                                " must be in [0, 64*words=" + std::to_string(64 * words) + "]");
  }
  if (k > INT32_MAX) {
    throw std::invalid_argument("XnorGemm: k=" + std::to_string(k) + " does not fit int32");
  }
  if (ldc < n) {
    throw std::invalid_argument("XnorGemm: ldc=" + std::to_string(ldc) +
                                " < n=" + std::to_string(n));
  }
  if ((m > 0 && words > 0 && a == nullptr) || (n > 0 && words > 0 && b == nullptr) ||
      (m > 0 && n > 0 && c == nullptr)) {
    throw std::invalid_argument("XnorGemm: null pointer");
  }
}

// 64-byte aligned per-thread scratch of at least `count` words. The caller's buffer is read by
// the pool threads while the caller waits in ParallelFor, so it stays valid for the whole call.
uint64_t* PanelScratch(int64_t count) {
  thread_local std::vector<uint64_t> buffer;
  const size_t need = static_cast<size_t>(count) + 8;
  if (buffer.size() < need) buffer.assign(need, 0);
  const uintptr_t p = reinterpret_cast<uintptr_t>(buffer.data());
  return reinterpret_cast<uint64_t*>((p + 63) & ~static_cast<uintptr_t>(63));
}

// panel[w * nc + c] = B[n0 + c][w] for c < ncols, 0 for ncols <= c < nc.
void PackPanel(const uint64_t* b, int64_t words, int64_t n0, int64_t ncols, int64_t nc,
               uint64_t* panel) {
  for (int64_t c = 0; c < ncols; ++c) {
    const uint64_t* row = b + (n0 + c) * words;
    for (int64_t w = 0; w < words; ++w) panel[w * nc + c] = row[w];
  }
  if (ncols < nc) {
    for (int64_t w = 0; w < words; ++w) {
      std::memset(panel + w * nc + ncols, 0, sizeof(uint64_t) * (nc - ncols));
    }
  }
}

// Two phases: (1) B -> panels (parallel over panels); (2) tasks = (block of kMrBlocks
// micro-kernel rows) x (panel), row-block-major, so contiguous task ranges carry equal work.
void RunGemm(const uint64_t* a, const uint64_t* b, int64_t m, int64_t n, int64_t words,
             const GemmOut& out, const GemmConfig& config) {
  RequireIsa(config.isa);
  if (m == 0 || n == 0) return;
  const KernelSpec spec = internal::KernelFor(config.isa);
  const int threads = config.threads > 0 ? config.threads : DefaultThreads();
  if (n == 1) {  // one column: no panel (it would pad b to nc columns), row blocks of 64
    const int64_t blocks = (m + 63) / 64;
    ParallelFor(blocks, threads, [&](int64_t begin, int64_t end) {
      spec.gemv(a, words, b, begin * 64, end * 64 < m ? end * 64 : m, out);
    });
    return;
  }
  const int64_t nc = spec.nc;
  const int64_t panels = (n + nc - 1) / nc;
  const int64_t panel_words = nc * words;
  uint64_t* packed = PanelScratch(panels * panel_words);
  ParallelFor(panels, threads, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n0 = p * nc;
      PackPanel(b, words, n0, n - n0 < nc ? n - n0 : nc, nc, packed + p * panel_words);
    }
  });
  // Row blocks of a few micro-kernel steps: fine enough to balance, long enough to amortise
  // the call.
  const int64_t mb = spec.mr * (m >= 64 * spec.mr ? 4 : 1);
  const int64_t mblocks = (m + mb - 1) / mb;
  ParallelFor(mblocks * panels, threads, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t block = t / panels, p = t % panels;
      const int64_t n0 = p * nc;
      const int64_t ncols = n - n0 < nc ? n - n0 : nc;
      const int64_t m0 = block * mb;
      const int64_t m1 = m0 + mb < m ? m0 + mb : m;
      spec.tile(a, words, packed + p * panel_words, m0, m1, n0, ncols, out);
    }
  });
}

}  // namespace

void XnorGemm(const uint64_t* a, const uint64_t* b, int64_t m, int64_t n, int64_t words, int64_t k,
              int32_t* c, int64_t ldc, const GemmConfig& config) {
  CheckGemmArgs(a, b, m, n, words, k, c, ldc);
  RunGemm(a, b, m, n, words, GemmOut{c, nullptr, nullptr, nullptr, ldc, k}, config);
}

void XnorGemmF32(const uint64_t* a, const uint64_t* b, int64_t m, int64_t n, int64_t words,
                 int64_t k, const float* scale, const float* bias, float* c, int64_t ldc,
                 const GemmConfig& config) {
  CheckGemmArgs(a, b, m, n, words, k, c, ldc);
  RunGemm(a, b, m, n, words, GemmOut{nullptr, c, scale, bias, ldc, k}, config);
}

}  // namespace binmx

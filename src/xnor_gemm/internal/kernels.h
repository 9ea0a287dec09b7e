/*
 * binmx core (internal): the interface between the ISA-neutral GEMM driver (gemm.cc, pack.cc)
 * and the per-ISA kernel files kernel_{scalar,avx2,avx512,neon}.cc.
 *
 * The driver cuts C into (row block x column panel) tasks. For a panel of `nc` columns starting
 * at n0 it copies B into panel[w * nc + c] = B[n0 + c][w] (zero for c >= ncols), so a kernel
 * loads nc columns of one word with one or a few vector loads and broadcasts one word of A
 * against them: no horizontal sums, no waste when words is not a multiple of the vector width.
 * The tile function computes rows [m0, m1) x columns [n0, n0 + ncols) of C, ncols <= nc:
 *     pop = sum_w popcount(A[m][w] XOR B[n][w]),  dot = k - 2 * pop
 *     int32 output: C = dot;   float output: C = float(dot) * scale[m] + bias[m]
 * (scale 1 and bias 0 when absent; a multiply then an add, never fused, so every ISA gives the
 * same float bits).
 *
 * Kernel files must not use std:: templates or other inline functions with external linkage:
 * they are compiled with ISA flags, and the linker could keep their copy for scalar callers.
 */
#ifndef BINMX_KERNELS_H_
#define BINMX_KERNELS_H_

#include <cstdint>

namespace binmx {
namespace internal {

struct GemmOut {
  int32_t* ci;         // int32 output, or null
  float* cf;           // float output, or null
  const float* scale;  // per row, or null (float output only)
  const float* bias;   // per row, or null (float output only)
  int64_t ldc;
  int64_t k;
};

using TileFn = void (*)(const uint64_t* a, int64_t words, const uint64_t* panel, int64_t m0,
                        int64_t m1, int64_t n0, int64_t ncols, const GemmOut& out);
// One column of C (n = 1, no panel): rows [m0, m1) of C[m][0] for the single row b of B,
//     pop = sum_w popcount(A[m][w] XOR b[w]), then the tile's epilogue.
// A dense layer at batch 1 is this product; a panel would pad b to nc columns.
using GemvFn = void (*)(const uint64_t* a, int64_t words, const uint64_t* b, int64_t m0, int64_t m1,
                        const GemmOut& out);
// Same contract as binmx::PackRows (arguments already checked).
using PackFn = void (*)(const float* x, int64_t rows, int64_t k, int64_t ld, uint64_t* out);

struct KernelSpec {
  int nc;  // panel width in columns
  int mr;  // rows per micro-kernel step
  TileFn tile;
  PackFn pack;
  GemvFn gemv;
};

KernelSpec ScalarKernel();
#ifdef BINMX_BUILT_AVX2
KernelSpec Avx2Kernel();
#endif
#ifdef BINMX_BUILT_AVX512
KernelSpec Avx512Kernel();
#endif
#ifdef BINMX_BUILT_NEON
KernelSpec NeonKernel();
#endif

}  // namespace internal
}  // namespace binmx

#endif  // BINMX_KERNELS_H_

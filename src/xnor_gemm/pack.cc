/*
 * binmx core: packing float32 rows into uint64 sign words (dispatch to the ISA packers).
 *
 * Row r of k floats -> WordsFor(k) words; element j sets bit j % 64 of word j / 64 when
 * x[j] < 0 (bit 1 = -1). x >= 0, +0.0 and -0.0 (and NaN) give bit 0 (+1). Tail bits stay 0.
 * The vector packers (kernel_avx2.cc: vcmpltps + vmovmskps, kernel_avx512.cc: vcmpltps into a
 * mask register) compare rather than copy the sign bit, so -0.0 packs as +1.
 */
#include <stdexcept>
#include <string>

#include "kernels.h"
#include "xnor_gemm.h"

namespace binmx {

namespace internal {
KernelSpec KernelFor(Isa isa);  // dispatch.cc
}  // namespace internal

void PackRows(const float* x, int64_t rows, int64_t k, int64_t ld, uint64_t* out, Isa isa) {
  if (rows < 0 || k < 0 || ld < k) {
    throw std::invalid_argument(
        "PackRows: need rows >= 0, k >= 0, ld >= k; got rows=" + std::to_string(rows) +
        " k=" + std::to_string(k) + " ld=" + std::to_string(ld));
  }
  if (rows > 0 && k > 0 && (x == nullptr || out == nullptr)) {
    throw std::invalid_argument("PackRows: null pointer");
  }
  RequireIsa(isa);
  if (rows == 0 || k == 0) return;
  internal::KernelFor(isa).pack(x, rows, k, ld, out);
}

void PackRows(const float* x, int64_t rows, int64_t k, int64_t ld, uint64_t* out) {
  PackRows(x, rows, k, ld, out, DefaultIsa());
}

}  // namespace binmx

/*
 * binmx core: packing float32 rows into uint64 sign words.
 *
 * Row r of k floats -> WordsFor(k) words; element j sets bit j % 64 of word j / 64 when
 * x[j] < 0 (bit 1 = -1). x >= 0, +0.0 and -0.0 give bit 0 (+1). Tail bits stay 0.
 * Portable code: the sign test compiles to a compare the vectoriser handles.
 */
#include <cstring>
#include <stdexcept>

#include "xnor_gemm.h"

namespace binmx {

void PackRows(const float* x, int64_t rows, int64_t k, int64_t ld, uint64_t* out) {
  if (rows < 0 || k < 0 || ld < k) throw std::invalid_argument("PackRows: bad sizes");
  const int64_t words = WordsFor(k);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ld;
    uint64_t* dst = out + r * words;
    for (int64_t w = 0; w < words; ++w) {
      const int64_t begin = w * 64;
      const int64_t len = (k - begin) < 64 ? (k - begin) : 64;
      uint64_t word = 0;
      for (int64_t j = 0; j < len; ++j) {
        word |= static_cast<uint64_t>(row[begin + j] < 0.0f) << j;
      }
      dst[w] = word;
    }
  }
}

}  // namespace binmx

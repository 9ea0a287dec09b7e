/*
 * binmx core: public API of the framework-free bit-packing and xnor GEMM library.
 *
 * Bit convention (docs/design.md §2): bit = (x < 0.0f). Every x >= 0, including +0.0 and -0.0,
 * gives bit 0 (meaning +1); x < 0 gives bit 1 (meaning -1). Element j of a row goes to word
 * j / 64, bit j % 64 (LSB first). Tail bits of the last word of a row are 0.
 *
 * Binary dot product over the true depth K of two packed rows a, b:
 *     dot(a, b) = K - 2 * popcount(a XOR b)
 * which equals sum_j sgn(x_j) * sgn(y_j) because tail bits are 0 in both operands.
 *
 * Layout: packed operands are row-major, `words` uint64 words per row, rows contiguous.
 * Nothing here knows MXNet or Python. Functions validate their arguments at this boundary and
 * throw std::invalid_argument (bad arguments) or std::runtime_error (unavailable ISA).
 */
#ifndef BINMX_XNOR_GEMM_H_
#define BINMX_XNOR_GEMM_H_

#include <cstdint>
#include <string>
#include <vector>

namespace binmx {

// CPU kernel paths. The x86 paths are in increasing order of speed; kNeon (aarch64) comes
// after them so that the existing numeric values never change. On one machine the available
// paths are either {scalar, avx2, avx512} (x86-64) or {scalar, neon} (aarch64).
enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kNeon = 3 };

// "scalar", "avx2", "avx512", "neon".
const char* IsaName(Isa isa);
// Parses an ISA name; returns false (and leaves *out untouched) for an unknown name.
bool ParseIsa(const std::string& name, Isa* out);
// True when the kernel for `isa` was compiled into this library.
bool IsaBuilt(Isa isa);
// True when the running CPU (and OS) supports `isa`.
bool IsaSupportedByCpu(Isa isa);
// Paths that were built and that the CPU supports, slowest first (the last is the best).
std::vector<Isa> AvailableIsas();
// The best available path, capped by the environment variable BINMX_ISA (read on every call,
// so a bad value fails every call; docs/design.md §6). Throws std::runtime_error if BINMX_ISA
// names an unknown or unavailable path.
Isa DefaultIsa();
// Throws std::runtime_error unless `isa` is available (built and supported by the CPU).
void RequireIsa(Isa isa);
// Thread count used when a caller passes threads <= 0: OMP_NUM_THREADS when it is a positive
// integer, else the number of hardware threads.
int DefaultThreads();

// Number of uint64 words that hold k bits.
inline int64_t WordsFor(int64_t k) { return (k + 63) / 64; }

// Packs `rows` rows of `k` floats (row r starts at x + r * ld) into rows * WordsFor(k) words,
// row-major. Tail bits are 0. Requires ld >= k.
// Uses DefaultIsa()'s packer; the overload below picks one (throws if it is unavailable).
// Every packer gives the same bits.
void PackRows(const float* x, int64_t rows, int64_t k, int64_t ld, uint64_t* out);
void PackRows(const float* x, int64_t rows, int64_t k, int64_t ld, uint64_t* out, Isa isa);

// Options shared by the GEMM entry points. threads <= 0 means DefaultThreads(). Results are
// identical for every isa and every thread count (float output included: the epilogue is a
// multiply then an add, never fused).
struct GemmConfig {
  Isa isa;
  int threads;
};
GemmConfig DefaultGemmConfig();

// C[i * ldc + j] = k - 2 * popcount(A[i] XOR B[j]) for i < m, j < n.
// A: m x words, B: n x words (row-major packed rows); requires 0 <= k <= 64 * words and the
// tail bits beyond k zero in both operands (as PackRows produces).
void XnorGemm(const uint64_t* a, const uint64_t* b, int64_t m, int64_t n, int64_t words, int64_t k,
              int32_t* c, int64_t ldc, const GemmConfig& config);

// Float output with a fused per-row epilogue:
// C[i * ldc + j] = dot(A[i], B[j]) * (scale ? scale[i] : 1) + (bias ? bias[i] : 0).
void XnorGemmF32(const uint64_t* a, const uint64_t* b, int64_t m, int64_t n, int64_t words,
                 int64_t k, const float* scale, const float* bias, float* c, int64_t ldc,
                 const GemmConfig& config);

}  // namespace binmx

#endif  // BINMX_XNOR_GEMM_H_

/*
 * binmx CUDA internals: the problem description shared by the tiled xnor kernels, the operand
 * loaders and the fused epilogue.
 *
 * One tiled kernel computes C = xnor-dot(A rows, B rows) for two kinds of B:
 *   - dense GEMM: B is n rows of `words` packed words (row stride ldb);
 *   - implicit-GEMM convolution: "row" p of B is output pixel p = (img, oy, ox) and its word kk
 *     (tap = kk / cw, tap = i * kw + j, channel word kk % cw) is gathered on the fly from the
 *     per-pixel channel-packed input (N, H, W, G, cw); a tap in the padding reads 0 (= +1).
 * A is m rows of `words` words (conv: the packed filters of group blockIdx.z).
 * The epilogue turns the xor count into dot = K - 2 * xor, removes (pad_value 0) or negates
 * (pad_value -1) the padded taps' +1 contributions with the per-filter border correction
 *     dot -= (1 - pad_value) * sum_{taps (i,j) in the padding} (cg - 2 * popc(W[f, i, j, :])),
 * converts to float and applies scale then bias, unfused: v = float(dot) * scale + (bias or 0),
 * each step rounded, exactly the CPU's expression (adding 0.0f turns -0.0 into +0.0 there too).
 */
#ifndef BINMX_CUDA_TILE_CUH_
#define BINMX_CUDA_TILE_CUH_

#include <cuda_runtime.h>
#include <stdint.h>

namespace binmx {
namespace cuda {

struct ConvGeom {
  int64_t batch, height, width, out_h, out_w;
  int kh, kw, sh, sw, ph, pw, dh, dw;
  int groups, cw, cg, fg, num_filter, pad_value;
};

struct Problem {
  const uint64_t* a;
  int64_t lda;
  const uint64_t* b;
  int64_t ldb;
  int64_t m, n, k;
  int words;
  // Dense output: C[row * c_sm + col * c_sn]; conv output is NCHW float.
  int32_t* c_i32;
  float* c_f32;
  int64_t c_sm, c_sn;
  const float* scale;  // per row (per filter for conv), optional
  const float* bias;   // per row (per filter for conv), optional
  ConvGeom conv;
};

constexpr int kTileK = 8;  // words of K staged in shared memory per step

// Per-thread state of one loaded B row (dense row pointer, or the conv receptive field origin).
template <bool kConv>
struct BRow {
  const uint64_t* ptr;  // dense: row start (nullptr when out of range); conv: image base
  int iy0, ix0;
  __device__ void Init(const Problem& p, int64_t col) {
    if (col >= p.n) {
      ptr = nullptr;
      iy0 = ix0 = 0;
      return;
    }
    if (!kConv) {
      ptr = p.b + col * p.ldb;
      iy0 = ix0 = 0;
    } else {
      const ConvGeom& g = p.conv;
      const int64_t ohw = g.out_h * g.out_w;
      const int64_t img = col / ohw;
      const int pix = static_cast<int>(col - img * ohw);
      const int oy = pix / static_cast<int>(g.out_w);
      const int ox = pix - oy * static_cast<int>(g.out_w);
      iy0 = oy * g.sh - g.ph;
      ix0 = ox * g.sw - g.pw;
      ptr = p.b + img * g.height * g.width * g.groups * g.cw +
            static_cast<int64_t>(blockIdx.z) * g.cw;
    }
  }
  __device__ uint64_t Load(const Problem& p, int kk) const {
    if (ptr == nullptr || kk >= p.words) return 0;
    if (!kConv) return __ldg(ptr + kk);
    const ConvGeom& g = p.conv;
    const int tap = kk / g.cw;
    const int c = kk - tap * g.cw;
    const int i = tap / g.kw;
    const int j = tap - i * g.kw;
    const int iy = iy0 + i * g.dh;
    const int ix = ix0 + j * g.dw;
    if (iy < 0 || iy >= g.height || ix < 0 || ix >= g.width) return 0;
    return __ldg(ptr + (static_cast<int64_t>(iy) * g.width + ix) * g.groups * g.cw + c);
  }
};

// A row pointer (nullptr when out of range). Conv: filters of group blockIdx.z.
template <bool kConv>
__device__ inline const uint64_t* ARow(const Problem& p, int64_t row) {
  if (row >= p.m) return nullptr;
  const int64_t base = kConv ? static_cast<int64_t>(blockIdx.z) * p.conv.fg : 0;
  return p.a + (base + row) * p.lda;
}

__device__ inline uint64_t LoadA(const Problem& p, const uint64_t* row, int kk) {
  return (row != nullptr && kk < p.words) ? __ldg(row + kk) : 0;
}

// Sum over the taps of output pixel (oy, ox) that fall into the padding of
// (cg - 2 * popc(W[f, tap, :])): what those taps contributed when read as +1.
__device__ inline int BorderSum(const Problem& p, int f, int oy, int ox) {
  const ConvGeom& g = p.conv;
  const int iy0 = oy * g.sh - g.ph;
  const int ix0 = ox * g.sw - g.pw;
  if (iy0 >= 0 && iy0 + (g.kh - 1) * g.dh < g.height && ix0 >= 0 &&
      ix0 + (g.kw - 1) * g.dw < g.width) {
    return 0;
  }
  const uint64_t* w = p.a + static_cast<int64_t>(f) * p.lda;
  int sum = 0;
  for (int i = 0; i < g.kh; ++i) {
    const int iy = iy0 + i * g.dh;
    const bool row_in = iy >= 0 && iy < g.height;
    for (int j = 0; j < g.kw; ++j) {
      const int ix = ix0 + j * g.dw;
      if (row_in && ix >= 0 && ix < g.width) continue;
      const uint64_t* tap = w + (i * g.kw + j) * g.cw;
      int pc = 0;
      for (int c = 0; c < g.cw; ++c) pc += __popcll(__ldg(tap + c));
      sum += g.cg - 2 * pc;
    }
  }
  return sum;
}

// Writes one output element given the xor popcount over all `words` (padding read as +1).
template <bool kConv>
__device__ inline void StoreResult(const Problem& p, int64_t row, int64_t col, int xor_count) {
  if (row >= p.m || col >= p.n) return;
  int dot = static_cast<int>(p.k) - 2 * xor_count;
  if (kConv) {
    const ConvGeom& g = p.conv;
    const int f = static_cast<int>(blockIdx.z) * g.fg + static_cast<int>(row);
    const int64_t ohw = g.out_h * g.out_w;
    const int64_t img = col / ohw;
    const int pix = static_cast<int>(col - img * ohw);
    if (g.pad_value != 1) {
      const int oy = pix / static_cast<int>(g.out_w);
      const int ox = pix - oy * static_cast<int>(g.out_w);
      dot -= (1 - g.pad_value) * BorderSum(p, f, oy, ox);
    }
    float v = static_cast<float>(dot);
    if (p.scale != nullptr) v = __fmul_rn(v, __ldg(p.scale + f));
    v = __fadd_rn(v, p.bias != nullptr ? __ldg(p.bias + f) : 0.0f);  // as the CPU: -0 -> +0
    p.c_f32[(img * g.num_filter + f) * ohw + pix] = v;
  } else {
    const int64_t idx = row * p.c_sm + col * p.c_sn;
    if (p.c_i32 != nullptr) {
      p.c_i32[idx] = dot;
    } else {
      float v = static_cast<float>(dot);
      if (p.scale != nullptr) v = __fmul_rn(v, __ldg(p.scale + row));
      v = __fadd_rn(v, p.bias != nullptr ? __ldg(p.bias + row) : 0.0f);
      p.c_f32[idx] = v;
    }
  }
}

// Tile shapes. Large: more reuse; small: more blocks for problems that fill few SMs.
enum class Tile : int { kLarge = 0, kSmall = 1 };

// Launchers (defined in gemm_simt.cu / gemm_tensor.cu). Grid: x over n tiles, y over m tiles,
// z over conv groups (1 for GEMM). Return the launch error.
cudaError_t LaunchSimt(const Problem& p, bool conv, Tile tile, int groups, cudaStream_t stream);
cudaError_t LaunchTensor(const Problem& p, bool conv, Tile tile, int groups, cudaStream_t stream);
// Number of thread blocks a launch with `tile` would use for an m x n problem (per group).
int64_t TileBlocks(Tile tile, int64_t m, int64_t n);

}  // namespace cuda
}  // namespace binmx

#endif  // BINMX_CUDA_TILE_CUH_

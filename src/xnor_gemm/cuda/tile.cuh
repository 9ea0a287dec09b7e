/*
 * binmx CUDA internals: the problem description shared by the tiled xnor kernels, the operand
 * loaders and the fused epilogue.
 *
 * One tiled kernel computes C = xnor-dot(A rows, B rows). A is m rows of `words` words (conv:
 * the packed filters (F, kh, kw, cw) of group blockIdx.z). The kernel mode says what B is and
 * which epilogue runs:
 *   kModeGemm: B is n dense rows of `words` words (row stride ldb); integer or float output.
 *   kModeConvLegacy (BINMX_CUDA_CONV=legacy): implicit-GEMM convolution. "Row" p of B is output
 *     pixel p = (img, oy, ox); its word kk (tap = kk / cw, tap = i * kw + j, channel word
 *     kk % cw) is gathered on the fly from the per-pixel channel-packed input (N, H, W, G, cw)
 *     with integer divisions per word; a tap in the padding reads 0 (= +1). Border correction
 *     by BorderSum (a loop over the taps and words of the filter for every border output).
 *   kModeConvTable (BINMX_CUDA_CONV=table): the same gather, but word kk's tap offsets come from
 *     a table (ConvTap, one int4 per word): dy = i * dh, dx = j * dw and the linear offset
 *     (dy * W + dx) * G * cw + c, so the loader does one table load, two bounds checks and one
 *     data load, no division. Border correction from the prefix table (below).
 *   kModeConvIm2col (BINMX_CUDA_CONV=im2col): B was written by an explicit bit im2col (rows =
 *     output pixels of a chunk of images, `words` words each, 0 for padded taps, one matrix per
 *     group b_group_stride words apart): the dense loader; conv epilogue with the prefix table.
 * The conv epilogue turns the xor count into dot = K - 2 * xor, removes (pad_value 0) or negates
 * (pad_value -1) the padded taps' +1 contributions with the per-filter border correction
 *     dot -= (1 - pad_value) * sum_{taps (i,j) in the padding} v(f, i, j),
 *     v(f, i, j) = cg - 2 * popc(W[f, i, j, :]),
 * converts to float and applies scale then bias, unfused: v = float(dot) * scale + (bias or 0),
 * each step rounded, exactly the CPU's expression (adding 0.0f turns -0.0 into +0.0 there too).
 * Prefix table (kModeConvTable / kModeConvIm2col): border[f][i][j] = sum_{i' < i, j' < j}
 * v(f, i', j') for 0 <= i <= kh, 0 <= j <= kw. The taps of output (oy, ox) inside the image form
 * the rectangle [i0, i1) x [j0, j1) (BorderSumTable), so the border sum is
 * total - rectangle sum: four table loads. The table is NULL when pad_h = pad_w = 0 (then every
 * tap of every output is inside the image and the border sum is 0).
 */
#ifndef BINMX_CUDA_TILE_CUH_
#define BINMX_CUDA_TILE_CUH_

#include <cuda_runtime.h>
#include <stdint.h>

namespace binmx {
namespace cuda {

enum : int { kModeGemm = 0, kModeConvLegacy = 1, kModeConvTable = 2, kModeConvIm2col = 3 };

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
  // Dense output: C[row * c_sm + col * c_sn]; conv output is NCHW float (images of this call).
  int32_t* c_i32;
  float* c_f32;
  int64_t c_sm, c_sn;
  const float* scale;  // per row (per filter for conv), optional
  const float* bias;   // per row (per filter for conv), optional
  ConvGeom conv;
  const int4* taps;        // kModeConvTable: per word kk {dy, dx, offset low, offset high}
  const int* border;       // conv table modes: prefix table, F x (kh + 1) x (kw + 1), or NULL
  int64_t b_group_stride;  // kModeConvIm2col: words between the groups' B matrices (GEMM: 0)
};

constexpr int kTileK = 8;  // words of K staged in shared memory per step

// Per-thread state of one loaded B row (dense row pointer, or the conv receptive field origin).
template <int kMode>
struct BRow {
  const uint64_t* ptr;  // dense: row start (nullptr when out of range); conv: image + group base
  int64_t base;         // kModeConvTable: (iy0 * W + ix0) * G * cw (may be negative)
  int iy0, ix0;
  __device__ void Init(const Problem& p, int64_t col) {
    base = 0;
    iy0 = ix0 = 0;
    if (col >= p.n) {
      ptr = nullptr;
      return;
    }
    if (kMode == kModeGemm || kMode == kModeConvIm2col) {
      ptr = p.b + static_cast<int64_t>(blockIdx.z) * p.b_group_stride + col * p.ldb;
    } else {
      const ConvGeom& g = p.conv;
      const int64_t ohw = g.out_h * g.out_w;
      const int64_t img = col / ohw;
      const int pix = static_cast<int>(col - img * ohw);
      const int oy = pix / static_cast<int>(g.out_w);
      const int ox = pix - oy * static_cast<int>(g.out_w);
      const int64_t gcw = static_cast<int64_t>(g.groups) * g.cw;
      iy0 = oy * g.sh - g.ph;
      ix0 = ox * g.sw - g.pw;
      base = (static_cast<int64_t>(iy0) * g.width + ix0) * gcw;
      ptr = p.b + img * g.height * g.width * gcw + static_cast<int64_t>(blockIdx.z) * g.cw;
    }
  }
  __device__ uint64_t Load(const Problem& p, int kk) const {
    if (ptr == nullptr || kk >= p.words) return 0;
    if (kMode == kModeGemm || kMode == kModeConvIm2col) return __ldg(ptr + kk);
    const ConvGeom& g = p.conv;
    if (kMode == kModeConvTable) {
      const int4 t = __ldg(p.taps + kk);
      const int iy = iy0 + t.x;  // iy0 + i * dh
      const int ix = ix0 + t.y;  // ix0 + j * dw
      if (iy < 0 || iy >= g.height || ix < 0 || ix >= g.width) return 0;
      const int64_t off = static_cast<int64_t>(
          (static_cast<uint64_t>(static_cast<uint32_t>(t.w)) << 32) | static_cast<uint32_t>(t.z));
      return __ldg(ptr + (base + off));  // base + off = (iy * W + ix) * G * cw + c >= 0
    }
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
template <int kMode>
__device__ inline const uint64_t* ARow(const Problem& p, int64_t row) {
  if (row >= p.m) return nullptr;
  const int64_t base = kMode != kModeGemm ? static_cast<int64_t>(blockIdx.z) * p.conv.fg : 0;
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

// Taps t of one axis with 0 <= o0 + t * d < size, for 0 <= t < k: the range [*t0, *t1)
// (empty when *t0 >= *t1). o0 = out * stride - pad.
__device__ inline void ValidTaps(int o0, int d, int k, int64_t size, int* t0, int* t1) {
  // First t with o0 + t * d >= 0: ceil(-o0 / d) when o0 < 0.
  const int lo = o0 >= 0 ? 0 : (-o0 + d - 1) / d;
  // Last t with o0 + t * d <= size - 1: floor((size - 1 - o0) / d), none when o0 > size - 1.
  const int hi = o0 > size - 1 ? 0 : static_cast<int>((size - 1 - o0) / d) + 1;
  *t0 = lo < k ? lo : k;
  *t1 = hi < k ? hi : k;
}

// BorderSum from the prefix table: total minus the sum over the rectangle of inside taps.
__device__ inline int BorderSumTable(const Problem& p, int f, int oy, int ox) {
  const ConvGeom& g = p.conv;
  const int iy0 = oy * g.sh - g.ph;
  const int ix0 = ox * g.sw - g.pw;
  if (iy0 >= 0 && iy0 + (g.kh - 1) * g.dh < g.height && ix0 >= 0 &&
      ix0 + (g.kw - 1) * g.dw < g.width) {
    return 0;  // every tap inside
  }
  int i0, i1, j0, j1;
  ValidTaps(iy0, g.dh, g.kh, g.height, &i0, &i1);
  ValidTaps(ix0, g.dw, g.kw, g.width, &j0, &j1);
  const int stride = g.kw + 1;
  const int* s = p.border + static_cast<int64_t>(f) * (g.kh + 1) * stride;
  const int total = __ldg(s + g.kh * stride + g.kw);
  if (i0 >= i1 || j0 >= j1) return total;  // every tap in the padding
  const int inside = __ldg(s + i1 * stride + j1) - __ldg(s + i0 * stride + j1) -
                     __ldg(s + i1 * stride + j0) + __ldg(s + i0 * stride + j0);
  return total - inside;
}

// Writes one output element given the xor popcount over all `words` (padding read as +1).
template <int kMode>
__device__ inline void StoreResult(const Problem& p, int64_t row, int64_t col, int xor_count) {
  if (row >= p.m || col >= p.n) return;
  int dot = static_cast<int>(p.k) - 2 * xor_count;
  if (kMode != kModeGemm) {
    const ConvGeom& g = p.conv;
    const int f = static_cast<int>(blockIdx.z) * g.fg + static_cast<int>(row);
    const int64_t ohw = g.out_h * g.out_w;
    const int64_t img = col / ohw;
    const int pix = static_cast<int>(col - img * ohw);
    if (g.pad_value != 1) {
      const int oy = pix / static_cast<int>(g.out_w);
      const int ox = pix - oy * static_cast<int>(g.out_w);
      if (kMode == kModeConvLegacy) {
        dot -= (1 - g.pad_value) * BorderSum(p, f, oy, ox);
      } else if (p.border != nullptr) {
        dot -= (1 - g.pad_value) * BorderSumTable(p, f, oy, ox);
      }
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
// z over conv groups (1 for GEMM). `mode` is one of kMode*. Return the launch error.
cudaError_t LaunchSimt(const Problem& p, int mode, Tile tile, int groups, cudaStream_t stream);
cudaError_t LaunchTensor(const Problem& p, int mode, Tile tile, int groups, cudaStream_t stream);
// Number of thread blocks a launch with `tile` would use for an m x n problem (per group).
int64_t TileBlocks(Tile tile, int64_t m, int64_t n);

}  // namespace cuda
}  // namespace binmx

#endif  // BINMX_CUDA_TILE_CUH_

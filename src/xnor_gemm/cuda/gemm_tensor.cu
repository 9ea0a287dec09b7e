/*
 * binmx CUDA: xnor GEMM on the 1-bit tensor cores (sm_80+), AND form.
 *
 * mma.sync.m16n8k256.row.col.s32.b1.b1.s32.and.popc accumulates popc(a AND b) over 256-bit
 * K slices; with the row popcounts pa = popc(A[m]) and pb = popc(B[n]) over all words,
 *     popc(a XOR b) = pa + pb - 2 * popc(a AND b),   dot = K - 2 * popc(a XOR b).
 * The AND form runs natively on sm_80 and sm_90 (the XOR form is emulated on sm_90).
 * Words beyond `words` (K rounded up to the 8-word shared-memory step) are 0 in both operands,
 * so they add nothing to any of the three counts.
 *
 * Shared memory holds A and B tiles row-major as 32-bit halves, row stride 20 u32 (8 words +
 * 2 words of padding), which makes the fragment loads conflict-free. Fragment layout of
 * m16n8k256 (lane = 4 * g + t): a0 = A[g][u32 t], a1 = A[g + 8][t], a2 = A[g][t + 4],
 * a3 = A[g + 8][t + 4]; b0 = B[n = g][t], b1 = B[g][t + 4]; c0, c1 = C[g][2t, 2t + 1],
 * c2, c3 = C[g + 8][2t, 2t + 1]. Only the pairing of A's and B's K positions matters, and both
 * use the same u32 index, so the result does not depend on the bit order inside a u32.
 * The row popcounts are summed by the threads that stage each row (8 lanes per row, the
 * same lanes every step) and reduced with warp shuffles at the end.
 */
#include "tile.cuh"

namespace binmx {
namespace cuda {
namespace {

constexpr int kRowU32 = 2 * (kTileK + 2);

__device__ __forceinline__ void MmaAndPopc(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                           uint32_t a3, uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  __trap();  // the host never launches this kernel below sm_80
#endif
}

template <int BM, int BN, int WGM, int WGN, int kMode>
__global__ void __launch_bounds__(WGM* WGN * 32) XnorTensorKernel(const Problem p) {
  constexpr int kThreads = WGM * WGN * 32;
  constexpr int kWarpM = BM / WGM;
  constexpr int kWarpN = BN / WGN;
  constexpr int kMi = kWarpM / 16;
  constexpr int kNi = kWarpN / 8;
  constexpr int kLa = BM * kTileK / kThreads;
  constexpr int kLb = BN * kTileK / kThreads;
  static_assert(kMi * 16 == kWarpM && kNi * 8 == kWarpN, "warp tile");
  static_assert(kLa * kThreads == BM * kTileK && kLb * kThreads == BN * kTileK, "tile split");
  static_assert(kTileK % 4 == 0, "a 256-bit mma step is 4 words");
  __shared__ __align__(16) uint32_t as[BM * kRowU32];
  __shared__ __align__(16) uint32_t bs[BN * kRowU32];
  __shared__ int pop_a[BM];
  __shared__ int pop_b[BN];

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int wm = warp / WGN;
  const int wn = warp % WGN;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * BM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * BN;

  const uint64_t* a_rows[kLa];
  BRow<kMode> b_rows[kLb];
#pragma unroll
  for (int l = 0; l < kLa; ++l) a_rows[l] = ARow<kMode>(p, m0 + (tid + l * kThreads) / kTileK);
#pragma unroll
  for (int l = 0; l < kLb; ++l) b_rows[l].Init(p, n0 + (tid + l * kThreads) / kTileK);
  const int kq = tid % kTileK;

  uint64_t next_a[kLa], next_b[kLb];
  int pa[kLa], pb[kLb];
#pragma unroll
  for (int l = 0; l < kLa; ++l) {
    next_a[l] = LoadA(p, a_rows[l], kq);
    pa[l] = 0;
  }
#pragma unroll
  for (int l = 0; l < kLb; ++l) {
    next_b[l] = b_rows[l].Load(p, kq);
    pb[l] = 0;
  }

  int acc[kMi][kNi][4];
#pragma unroll
  for (int i = 0; i < kMi; ++i) {
#pragma unroll
    for (int j = 0; j < kNi; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0;
    }
  }

  for (int k0 = 0; k0 < p.words; k0 += kTileK) {
#pragma unroll
    for (int l = 0; l < kLa; ++l) {
      const int r = (tid + l * kThreads) / kTileK;
      *reinterpret_cast<uint64_t*>(&as[r * kRowU32 + 2 * kq]) = next_a[l];
      pa[l] += __popcll(next_a[l]);
    }
#pragma unroll
    for (int l = 0; l < kLb; ++l) {
      const int r = (tid + l * kThreads) / kTileK;
      *reinterpret_cast<uint64_t*>(&bs[r * kRowU32 + 2 * kq]) = next_b[l];
      pb[l] += __popcll(next_b[l]);
    }
    __syncthreads();
    if (k0 + kTileK < p.words) {
#pragma unroll
      for (int l = 0; l < kLa; ++l) next_a[l] = LoadA(p, a_rows[l], k0 + kTileK + kq);
#pragma unroll
      for (int l = 0; l < kLb; ++l) next_b[l] = b_rows[l].Load(p, k0 + kTileK + kq);
    }
#pragma unroll
    for (int ks = 0; ks < kTileK / 4; ++ks) {
      if (k0 + 4 * ks >= p.words) break;  // an all-zero 256-bit slice adds nothing
      uint32_t af[kMi][4], bf[kNi][2];
#pragma unroll
      for (int i = 0; i < kMi; ++i) {
        const uint32_t* r0 = &as[(wm * kWarpM + i * 16 + g) * kRowU32 + ks * 8];
        const uint32_t* r8 = r0 + 8 * kRowU32;
        af[i][0] = r0[t];
        af[i][1] = r8[t];
        af[i][2] = r0[t + 4];
        af[i][3] = r8[t + 4];
      }
#pragma unroll
      for (int j = 0; j < kNi; ++j) {
        const uint32_t* r = &bs[(wn * kWarpN + j * 8 + g) * kRowU32 + ks * 8];
        bf[j][0] = r[t];
        bf[j][1] = r[t + 4];
      }
#pragma unroll
      for (int i = 0; i < kMi; ++i) {
#pragma unroll
        for (int j = 0; j < kNi; ++j) {
          MmaAndPopc(acc[i][j], af[i][0], af[i][1], af[i][2], af[i][3], bf[j][0], bf[j][1]);
        }
      }
    }
    __syncthreads();
  }

  // Row popcounts: the 8 consecutive lanes that staged a row hold its 8 word columns.
#pragma unroll
  for (int l = 0; l < kLa; ++l) {
    int v = pa[l];
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    v += __shfl_xor_sync(0xffffffffu, v, 4);
    if (kq == 0) pop_a[(tid + l * kThreads) / kTileK] = v;
  }
#pragma unroll
  for (int l = 0; l < kLb; ++l) {
    int v = pb[l];
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    v += __shfl_xor_sync(0xffffffffu, v, 4);
    if (kq == 0) pop_b[(tid + l * kThreads) / kTileK] = v;
  }
  __syncthreads();

#pragma unroll
  for (int i = 0; i < kMi; ++i) {
#pragma unroll
    for (int j = 0; j < kNi; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = wm * kWarpM + i * 16 + g + (e >= 2 ? 8 : 0);
        const int c = wn * kWarpN + j * 8 + 2 * t + (e & 1);
        const int xor_count = pop_a[r] + pop_b[c] - 2 * acc[i][j][e];
        StoreResult<kMode>(p, m0 + r, n0 + c, xor_count);
      }
    }
  }
}

template <int BM, int BN, int WGM, int WGN, int kMode>
cudaError_t Launch(const Problem& p, int groups, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.n + BN - 1) / BN),
                  static_cast<unsigned>((p.m + BM - 1) / BM), static_cast<unsigned>(groups));
  XnorTensorKernel<BM, BN, WGM, WGN, kMode><<<grid, WGM * WGN * 32, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

namespace {

template <int BM, int BN, int WGM, int WGN>
cudaError_t LaunchMode(const Problem& p, int mode, int groups, cudaStream_t stream) {
  switch (mode) {
    case kModeConvLegacy:
      return Launch<BM, BN, WGM, WGN, kModeConvLegacy>(p, groups, stream);
    case kModeConvTable:
      return Launch<BM, BN, WGM, WGN, kModeConvTable>(p, groups, stream);
    case kModeConvIm2col:
      return Launch<BM, BN, WGM, WGN, kModeConvIm2col>(p, groups, stream);
    default:
      return Launch<BM, BN, WGM, WGN, kModeGemm>(p, groups, stream);
  }
}

}  // namespace

cudaError_t LaunchTensor(const Problem& p, int mode, Tile tile, int groups, cudaStream_t stream) {
  if (tile == Tile::kLarge) return LaunchMode<64, 128, 2, 4>(p, mode, groups, stream);
  return LaunchMode<32, 64, 2, 2>(p, mode, groups, stream);
}

}  // namespace cuda
}  // namespace binmx

/*
 * binmx CUDA: register/shared-memory tiled xnor GEMM with __popcll (any GPU).
 *
 * A block computes a BM x BN tile of xor counts acc[m][n] = sum_w popc(A[m][w] XOR B[n][w]);
 * K is walked kTileK words at a time through shared memory (k-major, so a warp reads 16
 * consecutive B words per step without bank conflicts), with the next step's global words
 * prefetched into registers during the popcounts. Each thread owns TM x TN outputs at rows
 * ty + i * TY and columns tx + j * TX. The epilogue (tile.cuh) gives dot = K - 2 * acc.
 */
#include "tile.cuh"

namespace binmx {
namespace cuda {
namespace {

template <int BM, int BN, int TM, int TN, int kMode>
__global__ void __launch_bounds__((BM / TM) * (BN / TN)) XnorSimtKernel(const Problem p) {
  constexpr int kTx = BN / TN;
  constexpr int kTy = BM / TM;
  constexpr int kThreads = kTx * kTy;
  constexpr int kLa = BM * kTileK / kThreads;  // A words each thread stages per step
  constexpr int kLb = BN * kTileK / kThreads;
  static_assert(kLa * kThreads == BM * kTileK && kLb * kThreads == BN * kTileK, "tile split");
  __shared__ uint64_t as[kTileK][BM + 1];
  __shared__ uint64_t bs[kTileK][BN + 1];

  const int tid = threadIdx.x;
  const int tx = tid % kTx;
  const int ty = tid / kTx;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * BM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * BN;

  // Loader slots: slot l of this thread stages word (idx % kTileK) of row (idx / kTileK).
  const uint64_t* a_rows[kLa];
  BRow<kMode> b_rows[kLb];
#pragma unroll
  for (int l = 0; l < kLa; ++l) {
    const int idx = tid + l * kThreads;
    a_rows[l] = ARow<kMode>(p, m0 + idx / kTileK);
  }
#pragma unroll
  for (int l = 0; l < kLb; ++l) {
    const int idx = tid + l * kThreads;
    b_rows[l].Init(p, n0 + idx / kTileK);
  }
  const int kq = tid % kTileK;  // the same for every slot (kThreads is a multiple of kTileK)

  uint64_t next_a[kLa], next_b[kLb];
#pragma unroll
  for (int l = 0; l < kLa; ++l) next_a[l] = LoadA(p, a_rows[l], kq);
#pragma unroll
  for (int l = 0; l < kLb; ++l) next_b[l] = b_rows[l].Load(p, kq);

  int acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i) {
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0;
  }

  for (int k0 = 0; k0 < p.words; k0 += kTileK) {
#pragma unroll
    for (int l = 0; l < kLa; ++l) as[kq][(tid + l * kThreads) / kTileK] = next_a[l];
#pragma unroll
    for (int l = 0; l < kLb; ++l) bs[kq][(tid + l * kThreads) / kTileK] = next_b[l];
    __syncthreads();
    if (k0 + kTileK < p.words) {
#pragma unroll
      for (int l = 0; l < kLa; ++l) next_a[l] = LoadA(p, a_rows[l], k0 + kTileK + kq);
#pragma unroll
      for (int l = 0; l < kLb; ++l) next_b[l] = b_rows[l].Load(p, k0 + kTileK + kq);
    }
    const int steps = p.words - k0 < kTileK ? p.words - k0 : kTileK;  // last step may be short
#pragma unroll
    for (int q = 0; q < kTileK; ++q) {
      if (q >= steps) break;
      uint64_t a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = as[q][ty + i * kTy];
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = bs[q][tx + j * kTx];
#pragma unroll
      for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] += __popcll(a[i] ^ b[j]);
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < TM; ++i) {
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      StoreResult<kMode>(p, m0 + ty + i * kTy, n0 + tx + j * kTx, acc[i][j]);
    }
  }
}

template <int BM, int BN, int TM, int TN, int kMode>
cudaError_t Launch(const Problem& p, int groups, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.n + BN - 1) / BN),
                  static_cast<unsigned>((p.m + BM - 1) / BM), static_cast<unsigned>(groups));
  XnorSimtKernel<BM, BN, TM, TN, kMode><<<grid, (BM / TM) * (BN / TN), 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

int64_t TileBlocks(Tile tile, int64_t m, int64_t n) {
  const int64_t bm = tile == Tile::kLarge ? 64 : 32;
  const int64_t bn = tile == Tile::kLarge ? 128 : 64;
  return ((m + bm - 1) / bm) * ((n + bn - 1) / bn);
}

namespace {

template <int BM, int BN, int TM, int TN>
cudaError_t LaunchMode(const Problem& p, int mode, int groups, cudaStream_t stream) {
  switch (mode) {
    case kModeConvLegacy:
      return Launch<BM, BN, TM, TN, kModeConvLegacy>(p, groups, stream);
    case kModeConvTable:
      return Launch<BM, BN, TM, TN, kModeConvTable>(p, groups, stream);
    case kModeConvIm2col:
      return Launch<BM, BN, TM, TN, kModeConvIm2col>(p, groups, stream);
    default:
      return Launch<BM, BN, TM, TN, kModeGemm>(p, groups, stream);
  }
}

}  // namespace

cudaError_t LaunchSimt(const Problem& p, int mode, Tile tile, int groups, cudaStream_t stream) {
  if (tile == Tile::kLarge) return LaunchMode<64, 128, 4, 8>(p, mode, groups, stream);
  return LaunchMode<32, 64, 2, 4>(p, mode, groups, stream);
}

}  // namespace cuda
}  // namespace binmx

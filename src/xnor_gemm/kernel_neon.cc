/*
 * binmx core: NEON (AArch64 Advanced SIMD) kernel path of the xnor GEMM and of the sign packer.
 * Compiled only for aarch64, where Advanced SIMD is part of the base ISA (no extra flags).
 * Contract in kernels.h.
 *
 * Tile: kMr = 4 rows of A x kNv = 4 q-registers of the B panel (kNc = 8 columns, 2 uint64
 * lanes per register). Per panel word w the micro-kernel loads the 8 column words (4 q loads),
 * broadcasts A[m + r][w] (ld1r) and for each of the 16 (row, register) pairs runs
 *     x = EOR(a_r, b_v);  cnt = CNT(x) (8 byte counts <= 8 per lane);  acc += UADALP(cnt)
 * UADALP adds neighbouring bytes pairwise into the uint16 lanes of acc: 3 NEON instructions per
 * 128 binary MACs, 16 accumulator registers, the panel streamed once per row block.
 * A uint16 lane gains at most 16 per word, so every kChunk = 4095 words (16 * 4095 < 65536) the
 * lanes are folded into 64-bit column sums (UADDLP twice: each uint64 lane is then the popcount
 * of one column), and at the end dot = k - 2 * pop; the float output is
 * (float(dot) * scale) + bias with separate roundings (scalar epilogue, same bits as the other
 * paths; the core is compiled with -ffp-contract=off).
 * Columns past ncols (zero in the panel) use fewer registers: kNv' = ceil(ncols / 2).
 *
 * Pack: 16 floats -> 16 mask bytes (FCMLT #0: x < 0, so +-0.0 and NaN give 0; UZP1 narrows
 * 32 -> 16 -> 8 bits), AND with the bit weights {1, 2, ..., 128} per group of 8 bytes, and
 * three pairwise adds (ADDP) fold 64 bytes into the 8 bytes of one word: byte i holds floats
 * 8i .. 8i + 7, float 8i + j at bit j. A short last word goes through a zero-filled copy.
 */
#include <arm_neon.h>

#if defined(__AARCH64EB__)
#error "the NEON kernels assume little-endian lane order (aarch64, not aarch64_be)"
#endif

#include <cstring>

#include "kernels.h"

namespace binmx {
namespace internal {
namespace {

constexpr int kMr = 4;
constexpr int kNv = 4;
constexpr int kNc = 2 * kNv;
constexpr int64_t kChunk = 4095;

void Store(const GemmOut& out, int64_t m, int64_t n, uint64_t pop) {
  const int32_t dot = static_cast<int32_t>(out.k - 2 * static_cast<int64_t>(pop));
  if (out.ci != nullptr) {
    out.ci[m * out.ldc + n] = dot;
  } else {
    const float s = out.scale != nullptr ? out.scale[m] : 1.0f;
    const float o = out.bias != nullptr ? out.bias[m] : 0.0f;
    const float prod = static_cast<float>(dot) * s;
    out.cf[m * out.ldc + n] = prod + o;
  }
}

template <int MR, int NV>
void Micro(const uint64_t* a, int64_t words, const uint64_t* panel, int64_t m, int64_t n0,
           int64_t ncols, const GemmOut& out) {
  const uint64_t* ar[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) ar[r] = a + (m + r) * words;
  uint64_t pops[MR][2 * NV] = {};
  for (int64_t w0 = 0; w0 < words; w0 += kChunk) {
    const int64_t w1 = words - w0 < kChunk ? words : w0 + kChunk;
    uint16x8_t acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = vdupq_n_u16(0);
    }
    for (int64_t w = w0; w < w1; ++w) {
      const uint64_t* p = panel + w * kNc;
      uint64x2_t bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = vld1q_u64(p + 2 * v);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const uint64x2_t av = vld1q_dup_u64(ar[r] + w);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          const uint8x16_t x = vreinterpretq_u8_u64(veorq_u64(av, bv[v]));
          acc[r][v] = vpadalq_u8(acc[r][v], vcntq_u8(x));
        }
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const uint64x2_t s = vpaddlq_u32(vpaddlq_u16(acc[r][v]));
        pops[r][2 * v] += vgetq_lane_u64(s, 0);
        pops[r][2 * v + 1] += vgetq_lane_u64(s, 1);
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int64_t c = 0; c < ncols; ++c) Store(out, m + r, n0 + c, pops[r][c]);
  }
}

template <int NV>
void TileNv(const uint64_t* a, int64_t words, const uint64_t* panel, int64_t m0, int64_t m1,
            int64_t n0, int64_t ncols, const GemmOut& out) {
  int64_t m = m0;
  for (; m + kMr <= m1; m += kMr) Micro<kMr, NV>(a, words, panel, m, n0, ncols, out);
  switch (m1 - m) {
    case 3:
      Micro<3, NV>(a, words, panel, m, n0, ncols, out);
      break;
    case 2:
      Micro<2, NV>(a, words, panel, m, n0, ncols, out);
      break;
    case 1:
      Micro<1, NV>(a, words, panel, m, n0, ncols, out);
      break;
    default:
      break;
  }
}

void Tile(const uint64_t* a, int64_t words, const uint64_t* panel, int64_t m0, int64_t m1,
          int64_t n0, int64_t ncols, const GemmOut& out) {
  switch ((ncols + 1) / 2) {
    case 1:
      TileNv<1>(a, words, panel, m0, m1, n0, ncols, out);
      break;
    case 2:
      TileNv<2>(a, words, panel, m0, m1, n0, ncols, out);
      break;
    case 3:
      TileNv<3>(a, words, panel, m0, m1, n0, ncols, out);
      break;
    default:
      TileNv<kNv>(a, words, panel, m0, m1, n0, ncols, out);
      break;
  }
}

// 16 floats -> 16 bytes, 0xff where x < 0 (FCMLT #0: -0.0 and NaN give 0).
uint8x16_t SignBytes16(const float* p) {
  const uint32x4_t m0 = vcltzq_f32(vld1q_f32(p));
  const uint32x4_t m1 = vcltzq_f32(vld1q_f32(p + 4));
  const uint32x4_t m2 = vcltzq_f32(vld1q_f32(p + 8));
  const uint32x4_t m3 = vcltzq_f32(vld1q_f32(p + 12));
  const uint16x8_t h0 = vuzp1q_u16(vreinterpretq_u16_u32(m0), vreinterpretq_u16_u32(m1));
  const uint16x8_t h1 = vuzp1q_u16(vreinterpretq_u16_u32(m2), vreinterpretq_u16_u32(m3));
  return vuzp1q_u8(vreinterpretq_u8_u16(h0), vreinterpretq_u8_u16(h1));
}

// 64 mask bytes (floats 0..63 in order) -> one word, float j at bit j.
uint64_t WordFromBytes(uint8x16_t b0, uint8x16_t b1, uint8x16_t b2, uint8x16_t b3) {
  static const uint8_t kWeights[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t wt = vld1q_u8(kWeights);
  const uint8x16_t t0 = vpaddq_u8(vandq_u8(b0, wt), vandq_u8(b1, wt));
  const uint8x16_t t1 = vpaddq_u8(vandq_u8(b2, wt), vandq_u8(b3, wt));
  const uint8x16_t t2 = vpaddq_u8(t0, t1);
  const uint8x16_t t3 = vpaddq_u8(t2, t2);
  return vgetq_lane_u64(vreinterpretq_u64_u8(t3), 0);
}

uint64_t SignWord64(const float* p) {
  return WordFromBytes(SignBytes16(p), SignBytes16(p + 16), SignBytes16(p + 32),
                       SignBytes16(p + 48));
}

void Pack(const float* x, int64_t rows, int64_t k, int64_t ld, uint64_t* out) {
  const int64_t words = (k + 63) / 64;
  const int64_t full = k / 64;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ld;
    uint64_t* dst = out + r * words;
    for (int64_t w = 0; w < full; ++w) dst[w] = SignWord64(row + 64 * w);
    if (full < words) {
      // Zero-filled copy of the short last word: 0.0 packs as bit 0, so the tail bits stay 0.
      float tail[64] = {};
      std::memcpy(tail, row + 64 * full, sizeof(float) * static_cast<size_t>(k - 64 * full));
      dst[full] = SignWord64(tail);
    }
  }
}

// vcntq_u8 counts per byte; vpaddlq folds 16 byte counts into two 64-bit lane sums each step
// (at most 16 per byte lane, so the u8 -> u16 -> u32 -> u64 widening never overflows).
void Gemv(const uint64_t* a, int64_t words, const uint64_t* b, int64_t m0, int64_t m1,
          const GemmOut& out) {
  for (int64_t m = m0; m < m1; ++m) {
    const uint64_t* row = a + m * words;
    uint64x2_t acc = vdupq_n_u64(0);
    int64_t w = 0;
    for (; w + 2 <= words; w += 2) {
      const uint8x16_t x = vreinterpretq_u8_u64(veorq_u64(vld1q_u64(row + w), vld1q_u64(b + w)));
      acc = vaddq_u64(acc, vpaddlq_u32(vpaddlq_u16(vpaddlq_u8(vcntq_u8(x)))));
    }
    uint64_t pop = vgetq_lane_u64(acc, 0) + vgetq_lane_u64(acc, 1);
    for (; w < words; ++w) pop += __builtin_popcountll(row[w] ^ b[w]);
    Store(out, m, 0, pop);
  }
}

}  // namespace

KernelSpec NeonKernel() { return KernelSpec{kNc, kMr, &Tile, &Pack, &Gemv}; }

}  // namespace internal
}  // namespace binmx

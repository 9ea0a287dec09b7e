/*
 * binmx core: NEON (AArch64 Advanced SIMD) direct bit-serial convolution kernel. Compiled only
 * for aarch64 (no extra flags). Contract in bsconv_kernels.h.
 *
 * Tile: FB filters x PV = 2 q-registers of 2 output pixels (uint64 lanes). Per tap-word k: the
 * ka x PV plane registers of the pixels loaded once, per filter and weight plane b one
 * broadcast (ld1r), and per (plane a, register v)
 *     acc[a + b][r][v] = UADALP(acc, CNT(X_a[v] AND W_b[f + r][k]))
 * in uint16 lanes, one accumulator set per shift a + b (no shift in the loop). A lane gains at
 * most 16 per pair, and at most min(ka, kw) pairs share a shift, so every kChunk tap-words the
 * lanes are folded into uint32 (UADALP .4s).
 * Epilogue per register (2 pixels): UADDLP to one uint64 per pixel, R = sum_s (set s) << s,
 * D = 2 R - B l (+ the border table entries of the pixels' patterns) in int64 lanes, then D
 * (XTN), or float(double(D) * ds) + bias (SCVTF .2d, FMUL .2d, FCVTN, FADD: never fused, the
 * core is compiled with -ffp-contract=off), stored into NCHW.
 * Pack: 4 pixels a register; the level by counting the exact thresholds (FCMGT, false for NaN),
 * plane bits as XORs of the nested compare masks; channels 63..32 then 31..0 shifted into two
 * uint32 accumulators per plane (acc = 2 acc - mask, as the binary pack), ZIP1/ZIP2 into the
 * pixel words; level sums from CNT of the plane words.
 */
#include <arm_neon.h>

#if defined(__AARCH64EB__)
#error "the NEON kernels assume little-endian lane order (aarch64, not aarch64_be)"
#endif

#include "bsconv_kernels.h"

namespace binmx {
namespace internal {
namespace {

template <int KA, int KW>
struct Blocking {
  static constexpr int kNs = KA + KW - 1;
  static constexpr int kPv = 2;
  static constexpr int kFb = (4 * kPv * kNs + kPv * KA <= 28)   ? 4
                             : (2 * kPv * kNs + kPv * KA <= 28) ? 2
                                                                : 1;
  static constexpr int kMinKk = KA < KW ? KA : KW;
  static constexpr int64_t kChunk = 65535 / (16 * kMinKk);
};

// acc[s][r][v] over tap-words [k0, k1) (k1 - k0 <= kChunk: no uint16 lane overflows).
template <int KA, int KW, int FB, int PV>
inline void Accumulate(const BsconvTile& t, int64_t f, int64_t q, int64_t k0, int64_t k1,
                       uint16x8_t (&acc)[KA + KW - 1][FB][PV]) {
  constexpr int kNs = KA + KW - 1;
#pragma GCC unroll 8
  for (int s = 0; s < kNs; ++s) {
#pragma GCC unroll 4
    for (int r = 0; r < FB; ++r) {
#pragma GCC unroll 2
      for (int v = 0; v < PV; ++v) acc[s][r][v] = vdupq_n_u16(0);
    }
  }
  const int64_t kwords = t.kwords, ps = t.pstride;
  const uint64_t* wr = t.w + f * KW * kwords;
  const uint64_t* xq = t.planes + q;
  const int64_t* koff = t.koff;
  for (int64_t k = k0; k < k1; ++k) {
    const uint64_t* xp = xq + koff[k];
    uint64x2_t xv[KA][PV];
#pragma GCC unroll 4
    for (int a = 0; a < KA; ++a) {
#pragma GCC unroll 2
      for (int v = 0; v < PV; ++v) xv[a][v] = vld1q_u64(xp + a * ps + 2 * v);
    }
#pragma GCC unroll 4
    for (int r = 0; r < FB; ++r) {
#pragma GCC unroll 4
      for (int b = 0; b < KW; ++b) {
        const uint64x2_t wv = vld1q_dup_u64(wr + (r * KW + b) * kwords + k);
#pragma GCC unroll 4
        for (int a = 0; a < KA; ++a) {
#pragma GCC unroll 2
          for (int v = 0; v < PV; ++v) {
            const uint8x16_t x = vreinterpretq_u8_u64(vandq_u64(wv, xv[a][v]));
            acc[a + b][r][v] = vpadalq_u8(acc[a + b][r][v], vcntq_u8(x));
          }
        }
      }
    }
  }
}

template <int KA, int KW, int FB, int PV>
void Micro(const BsconvTile& t, int64_t f, int64_t q) {
  using B = Blocking<KA, KW>;
  constexpr int kNs = B::kNs;
  constexpr int64_t kChunk = B::kChunk;
  const int64_t kwords = t.kwords;
  uint16x8_t acc[kNs][FB][PV];
  Accumulate<KA, KW, FB, PV>(t, f, q, 0, kwords < kChunk ? kwords : kChunk, acc);
  uint32x4_t sum[kNs][FB][PV];
#pragma GCC unroll 8
  for (int s = 0; s < kNs; ++s) {
#pragma GCC unroll 4
    for (int r = 0; r < FB; ++r) {
#pragma GCC unroll 2
      for (int v = 0; v < PV; ++v) sum[s][r][v] = vpaddlq_u16(acc[s][r][v]);
    }
  }
  for (int64_t k0 = kChunk; k0 < kwords; k0 += kChunk) {
    Accumulate<KA, KW, FB, PV>(t, f, q, k0, kwords - k0 < kChunk ? kwords : k0 + kChunk, acc);
#pragma GCC unroll 8
    for (int s = 0; s < kNs; ++s) {
#pragma GCC unroll 4
      for (int r = 0; r < FB; ++r) {
#pragma GCC unroll 2
        for (int v = 0; v < PV; ++v) sum[s][r][v] = vpadalq_u16(sum[s][r][v], acc[s][r][v]);
      }
    }
  }

  // Epilogue; the tile's fields in locals (the stores could alias them).
  const int32_t* lsum = t.l;
  const int32_t* pid = t.pid;
  const int32_t* ct = t.ct;
  const int64_t ct_stride = t.ct_stride, fstride = t.out_fstride, q1 = t.q1, f1 = t.f1;
  const double* ds = t.ds;
  const float* bias = t.bias;
  float* out = t.out;
  int32_t* out_dot = t.out_dot;
  const int32x2_t bv = vdup_n_s32(t.b_max);
#pragma GCC unroll 2
  for (int v = 0; v < PV; ++v) {
    const int64_t qv = q + 2 * v;
    const int64_t left = q1 - qv;
    if (left <= 0) break;
    const int64x2_t bl = vmovl_s32(vmul_s32(vld1_s32(lsum + qv), bv));  // < 2^31
    int32x2_t pidv = vdup_n_s32(0);
    bool any_border = false;
    if (pid != nullptr) {
      pidv = vld1_s32(pid + qv);
      any_border = vmaxv_u32(vreinterpret_u32_s32(pidv)) != 0;
    }
#pragma GCC unroll 4
    for (int r = 0; r < FB; ++r) {
      const int64_t fr = f + r;
      if (fr >= f1) break;
      uint64x2_t rr = vpaddlq_u32(sum[0][r][v]);
#pragma GCC unroll 8
      for (int s = 1; s < kNs; ++s) {
        rr = vaddq_u64(rr, vshlq_u64(vpaddlq_u32(sum[s][r][v]), vdupq_n_s64(s)));
      }
      const int64x2_t r2 = vreinterpretq_s64_u64(vaddq_u64(rr, rr));
      int64x2_t d = vsubq_s64(r2, bl);
      if (any_border) {
        const int32_t* row = ct + fr * ct_stride;
        int32_t c2[2];
        c2[0] = row[vget_lane_s32(pidv, 0)];
        c2[1] = row[vget_lane_s32(pidv, 1)];
        d = vaddq_s64(d, vmovl_s32(vld1_s32(c2)));
      }
      const int64_t o = fr * fstride + qv;
      if (out_dot != nullptr) {
        const int32x2_t d32 = vmovn_s64(d);
        if (left >= 2) {
          vst1_s32(out_dot + o, d32);
        } else {
          out_dot[o] = vget_lane_s32(d32, 0);
        }
      } else {
        float32x2_t y = vcvt_f32_f64(vmulq_f64(vcvtq_f64_s64(d), vdupq_n_f64(ds[fr])));
        if (bias != nullptr) y = vadd_f32(y, vdup_n_f32(bias[fr]));
        if (left >= 2) {
          vst1_f32(out + o, y);
        } else {
          out[o] = vget_lane_f32(y, 0);
        }
      }
    }
  }
}

template <int KA, int KW>
void TileKK(const BsconvTile& t) {
  using B = Blocking<KA, KW>;
  constexpr int kFb = B::kFb, kPv = B::kPv;
  static_assert(kPv == 2, "the remainder below is at most two registers");
  for (int64_t f = t.f0; f < t.f1; f += kFb) {
    int64_t q = t.q0;
    for (; q + 2 * kPv <= t.q1; q += 2 * kPv) Micro<KA, KW, kFb, kPv>(t, f, q);
    if (q + 2 < t.q1) {  // 3 pixels left
      Micro<KA, KW, kFb, 2>(t, f, q);
    } else if (q < t.q1) {
      Micro<KA, KW, kFb, 1>(t, f, q);
    }
  }
}

template <int KA>
void TileKa(const BsconvTile& t) {
  switch (t.kwb) {
    case 1:
      return TileKK<KA, 1>(t);
    case 2:
      return TileKK<KA, 2>(t);
    case 3:
      return TileKK<KA, 3>(t);
    default:
      return TileKK<KA, 4>(t);
  }
}

void Tile(const BsconvTile& t) {
  switch (t.ka) {
    case 2:
      return TileKa<2>(t);
    case 3:
      return TileKa<3>(t);
    default:
      return TileKa<4>(t);
  }
}

// Plane bit masks (all ones / zero per lane) of the levels of 4 floats: bit a of the count of
// thresholds passed is the XOR of the masks of the thresholds k with (k + 1) % 2^a == 0.
template <int KA>
inline void LevelBits(float32x4_t x, const float32x4_t* thr, uint32x4_t* bits) {
  constexpr int kA = (1 << KA) - 1;
  uint32x4_t m[kA];
#pragma GCC unroll 16
  for (int k = 0; k < kA; ++k) m[k] = vcgtq_f32(x, thr[k]);
#pragma GCC unroll 4
  for (int a = 0; a < KA; ++a) {
    const int step = 1 << a;
    uint32x4_t b = m[step - 1];
#pragma GCC unroll 8
    for (int k = 2 * step - 1; k < kA; k += step) b = veorq_u32(b, m[k]);
    bits[a] = b;
  }
}

// Channels [c_hi - 1 .. c_lo] of NP * 4 pixels, plane a's bit of channel c at bit c - c_lo of
// acc[a][i].
template <int KA, int NP>
void PackHalf(const float* x, int64_t ch_stride, int c_lo, int c_hi, const float32x4_t* thr,
              uint32x4_t (&acc)[KA][NP]) {
#pragma GCC unroll 4
  for (int a = 0; a < KA; ++a) {
#pragma GCC unroll 2
    for (int i = 0; i < NP; ++i) acc[a][i] = vdupq_n_u32(0);
  }
  for (int c = c_hi - 1; c >= c_lo; --c) {
    const float* xc = x + c * ch_stride;
#pragma GCC unroll 2
    for (int i = 0; i < NP; ++i) {
      uint32x4_t bits[KA];
      LevelBits<KA>(vld1q_f32(xc + 4 * i), thr, bits);
#pragma GCC unroll 4
      for (int a = 0; a < KA; ++a) acc[a][i] = vsubq_u32(vaddq_u32(acc[a][i], acc[a][i]), bits[a]);
    }
  }
}

// Pixel pops of a register of two plane words: one uint64 per pixel.
inline uint64x2_t WordPops(uint64x2_t w) {
  return vpaddlq_u32(vpaddlq_u16(vpaddlq_u8(vcntq_u8(vreinterpretq_u8_u64(w)))));
}

template <int KA, int NP>
void PackPixels(const float* x, int64_t ch_stride, int n_ch, const float32x4_t* thr, uint64_t* out,
                int64_t out_stride, int32_t* sums) {
  uint32x4_t lo[KA][NP], hi[KA][NP];
  PackHalf<KA, NP>(x, ch_stride, 0, n_ch < 32 ? n_ch : 32, thr, lo);
  PackHalf<KA, NP>(x, ch_stride, 32, n_ch, thr, hi);  // empty when n_ch <= 32
#pragma GCC unroll 2
  for (int i = 0; i < NP; ++i) {
    uint64x2_t s0 = vdupq_n_u64(0), s1 = vdupq_n_u64(0);
#pragma GCC unroll 4
    for (int a = 0; a < KA; ++a) {
      const uint64x2_t w0 = vreinterpretq_u64_u32(vzip1q_u32(lo[a][i], hi[a][i]));
      const uint64x2_t w1 = vreinterpretq_u64_u32(vzip2q_u32(lo[a][i], hi[a][i]));
      vst1q_u64(out + a * out_stride + 4 * i, w0);
      vst1q_u64(out + a * out_stride + 4 * i + 2, w1);
      s0 = vaddq_u64(s0, vshlq_u64(WordPops(w0), vdupq_n_s64(a)));
      s1 = vaddq_u64(s1, vshlq_u64(WordPops(w1), vdupq_n_s64(a)));
    }
    int32_t* sp = sums + 4 * i;
    const int32x4_t s = vreinterpretq_s32_u32(vcombine_u32(vmovn_u64(s0), vmovn_u64(s1)));
    vst1q_s32(sp, vaddq_s32(vld1q_s32(sp), s));
  }
}

template <int KA>
void PackKa(const float* x, int64_t ch_stride, int n_ch, int64_t width, const float* thr,
            uint64_t* out, int64_t out_stride, int32_t* sums) {
  constexpr int kA = (1 << KA) - 1;
  float32x4_t tv[kA];
#pragma GCC unroll 16
  for (int k = 0; k < kA; ++k) tv[k] = vdupq_n_f32(thr[k]);
  int64_t p = 0;
  for (; p + 8 <= width; p += 8) {
    PackPixels<KA, 2>(x + p, ch_stride, n_ch, tv, out + p, out_stride, sums + p);
  }
  if (p + 4 <= width) {
    PackPixels<KA, 1>(x + p, ch_stride, n_ch, tv, out + p, out_stride, sums + p);
    p += 4;
  }
  for (; p < width; ++p) {  // the last < 4 pixels: the same count, scalar
    uint64_t words[KA] = {};
    int32_t sum = 0;
    for (int c = 0; c < n_ch; ++c) {
      const float v = x[c * ch_stride + p];
      int la = 0;
      for (int k = 0; k < kA; ++k) la += v > thr[k] ? 1 : 0;
      sum += la;
      for (int a = 0; a < KA; ++a) words[a] |= static_cast<uint64_t>((la >> a) & 1) << c;
    }
    for (int a = 0; a < KA; ++a) out[a * out_stride + p] = words[a];
    sums[p] += sum;
  }
}

void Pack(const float* x, int64_t ch_stride, int n_ch, int64_t width, int ka, const float* thr,
          uint64_t* out, int64_t out_stride, int32_t* sums) {
  switch (ka) {
    case 2:
      return PackKa<2>(x, ch_stride, n_ch, width, thr, out, out_stride, sums);
    case 3:
      return PackKa<3>(x, ch_stride, n_ch, width, thr, out, out_stride, sums);
    default:
      return PackKa<4>(x, ch_stride, n_ch, width, thr, out, out_stride, sums);
  }
}

}  // namespace

BsconvSpec NeonBsconv() { return BsconvSpec{&Tile, &Pack}; }

}  // namespace internal
}  // namespace binmx

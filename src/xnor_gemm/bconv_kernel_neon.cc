/*
 * binmx core: NEON (AArch64 Advanced SIMD) direct binary convolution kernel. Compiled only for
 * aarch64 (no extra flags). Contract in bconv_kernels.h.
 *
 * Tile: kFb = 4 filters x kPv = 4 q-registers of 2 output pixels (uint64 lanes) = 4 x 8
 * outputs, 16 uint16x8 accumulators. Per tap-word k: 4 loads of input words (8 consecutive
 * pixels, streamed once per filter block), 4 weight-word broadcasts (ld1r), and per
 * (filter, register) pair
 *     x = EOR(w_f, X_k[q + 2v ..]);  acc[f][v] += UADALP(CNT(x))
 * (3 NEON instructions per 128 binary MACs). A uint16 lane gains at most 16 per tap-word, so
 * every kChunk = 4095 tap-words the lanes are folded into uint32 (UADDLP, then added), and the
 * epilogue folds once more (UADDLP .2d: one uint64 lane = one pixel's popcount).
 * Epilogue per 4 pixels: XTN to int32 lanes, dot = K - 2 pop, border correction ct[f][pid[q]]
 * gathered lane by lane when any of the 4 pixels has pid != 0 (one vector load of pid and a
 * UMAXV decide), then
 * float(dot) * alpha + bias (+ residual) with FMUL and FADD (never fused: the core is compiled
 * with -ffp-contract=off), stored into NCHW (4 consecutive pixels of one filter are 4
 * consecutive floats; a short vector stores lane by lane).
 *
 * Pack: 8 pixels (two float32x4) per step; channels 63..32 then 31..0 are shifted into two
 * uint32 accumulators per register, acc = 2 * acc - mask (FCMLT mask = 0 or ~0, i.e. +1 where
 * x < 0), so channel c ends at bit c % 32; ZIP1/ZIP2 interleave the halves into the pixel
 * words. The affine is a FMUL then a FADD (x * s + t < 0, rounded as the scalar path).
 * PackAffine: the GEMM packer's 16-float compare + ADDP fold with the per-column affine.
 */
#include <arm_neon.h>

#if defined(__AARCH64EB__)
#error "the NEON kernels assume little-endian lane order (aarch64, not aarch64_be)"
#endif

#include "bconv_kernels.h"

namespace binmx {
namespace internal {
namespace {

constexpr int kFb = 4;
constexpr int kPv = 4;
constexpr int64_t kChunk = 4095;

// acc[r][v] = sum over tap-words [k0, k1) of UADALP(CNT(W[f + r][k] ^ X_k[q + 2v ..])), in
// uint16 lanes (k1 - k0 <= kChunk, so no lane overflows).
template <int FB, int PV>
inline void Accumulate(const BconvTile& t, int64_t f, int64_t q, int64_t k0, int64_t k1,
                       uint16x8_t (&acc)[FB][PV]) {
  const int64_t kwords = t.kwords;
  const uint64_t* wr = t.w + f * kwords;
  const uint64_t* xq = t.planes + q;
  const int64_t* koff = t.koff;
#pragma GCC unroll 4
  for (int r = 0; r < FB; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < PV; ++v) acc[r][v] = vdupq_n_u16(0);
  }
  for (int64_t k = k0; k < k1; ++k) {
    const uint64_t* xp = xq + koff[k];
    uint64x2_t xv[PV];
#pragma GCC unroll 4
    for (int v = 0; v < PV; ++v) xv[v] = vld1q_u64(xp + 2 * v);
#pragma GCC unroll 4
    for (int r = 0; r < FB; ++r) {
      const uint64x2_t wv = vld1q_dup_u64(wr + r * kwords + k);
#pragma GCC unroll 4
      for (int v = 0; v < PV; ++v) {
        const uint8x16_t x = vreinterpretq_u8_u64(veorq_u64(wv, xv[v]));
        acc[r][v] = vpadalq_u8(acc[r][v], vcntq_u8(x));
      }
    }
  }
}

template <int FB, int PV>
void Micro(const BconvTile& t, int64_t f, int64_t q) {
  const int64_t kwords = t.kwords;
  // First chunk (the only one below 4096 tap-words) straight into the uint32 sums, so that no
  // second set of 16 registers is live in the hot loop.
  uint16x8_t acc[FB][PV];
  Accumulate<FB, PV>(t, f, q, 0, kwords < kChunk ? kwords : kChunk, acc);
  uint32x4_t sum[FB][PV];
#pragma GCC unroll 4
  for (int r = 0; r < FB; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < PV; ++v) sum[r][v] = vpaddlq_u16(acc[r][v]);
  }
  for (int64_t k0 = kChunk; k0 < kwords; k0 += kChunk) {
    Accumulate<FB, PV>(t, f, q, k0, kwords - k0 < kChunk ? kwords : k0 + kChunk, acc);
#pragma GCC unroll 4
    for (int r = 0; r < FB; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < PV; ++v) sum[r][v] = vpadalq_u16(sum[r][v], acc[r][v]);
    }
  }

  // Epilogue. The tile's fields are read into locals first: the compiler must assume that the
  // output stores alias them, and would reload them for every filter.
  const float* alpha = t.alpha;
  const float* bias = t.bias;
  const float* residual = t.residual;
  float* out = t.out;
  const int64_t fstride = t.out_fstride;
  const int32_t* pid = t.pid;
  const int32_t* ct = t.ct;
  const int64_t ct_stride = t.ct_stride;
  const int64_t q1 = t.q1;
  const int32x4_t kv = vdupq_n_s32(t.k_depth);
  float32x4_t av[FB], bv[FB];
#pragma GCC unroll 4
  for (int r = 0; r < FB; ++r) {
    av[r] = vdupq_n_f32(alpha != nullptr ? alpha[f + r] : 1.0f);
    bv[r] = vdupq_n_f32(bias != nullptr ? bias[f + r] : 0.0f);
  }
#pragma GCC unroll 2
  for (int v4 = 0; v4 < PV; v4 += 2) {  // 4 pixels (two registers) per step
    const int64_t qv = q + 2 * v4;
    const int64_t left = q1 - qv;
    if (left <= 0) break;
    // Border patterns of the 4 pixels (pid is readable, and 0 = no padded tap, past q1).
    int32x4_t pidv = vdupq_n_s32(0);
    bool any_border = false;
    if (pid != nullptr) {
      pidv = vld1q_s32(pid + qv);
      any_border = vmaxvq_u32(vreinterpretq_u32_s32(pidv)) != 0;
    }
#pragma GCC unroll 4
    for (int r = 0; r < FB; ++r) {
      // Pixel pops: uint64 lanes of registers v4 and v4 + 1 (absent past PV: zero).
      const uint32x2_t p01 = vmovn_u64(vpaddlq_u32(sum[r][v4]));
      const uint32x2_t p23 = v4 + 1 < PV ? vmovn_u64(vpaddlq_u32(sum[r][v4 + 1])) : vdup_n_u32(0);
      const int32x4_t pop = vreinterpretq_s32_u32(vcombine_u32(p01, p23));
      int32x4_t dot = vsubq_s32(kv, vaddq_s32(pop, pop));
      if (any_border) {
        const int32_t* row = ct + (f + r) * ct_stride;
        int32_t c4[4];
        c4[0] = row[vgetq_lane_s32(pidv, 0)];
        c4[1] = row[vgetq_lane_s32(pidv, 1)];
        c4[2] = row[vgetq_lane_s32(pidv, 2)];
        c4[3] = row[vgetq_lane_s32(pidv, 3)];
        dot = vsubq_s32(dot, vld1q_s32(c4));
      }
      float32x4_t y = vaddq_f32(vmulq_f32(vcvtq_f32_s32(dot), av[r]), bv[r]);
      const int64_t off = (f + r) * fstride + qv;
      if (left >= 4) {
        if (residual != nullptr) y = vaddq_f32(y, vld1q_f32(residual + off));
        vst1q_f32(out + off, y);
      } else {
        float tmp[4];
        vst1q_f32(tmp, y);
        for (int i = 0; i < left; ++i) {
          float o = tmp[i];
          if (residual != nullptr) o = o + residual[off + i];
          out[off + i] = o;
        }
      }
    }
  }
}

template <int FB>
void Rows(const BconvTile& t, int64_t f) {
  int64_t q = t.q0;
  for (; q + 2 * kPv <= t.q1; q += 2 * kPv) Micro<FB, kPv>(t, f, q);
  // 1..7 pixels left: ceil(left / 2) registers (the planes have slack past q1, pid zeros).
  switch ((t.q1 - q + 1) / 2) {
    case 1:
      Micro<FB, 1>(t, f, q);
      break;
    case 2:
      Micro<FB, 2>(t, f, q);
      break;
    case 3:
      Micro<FB, 3>(t, f, q);
      break;
    case 4:
      Micro<FB, 4>(t, f, q);
      break;
    default:
      break;
  }
}

void Tile(const BconvTile& t) {
  int64_t f = t.f0;
  for (; f + kFb <= t.f1; f += kFb) Rows<kFb>(t, f);
  switch (t.f1 - f) {
    case 3:
      Rows<3>(t, f);
      break;
    case 2:
      Rows<2>(t, f);
      break;
    case 1:
      Rows<1>(t, f);
      break;
    default:
      break;
  }
}

// One pixel word, scalar (the pack's last < 4 pixels), same rounding as the vector lanes.
uint64_t PackOne(const float* x, int64_t ch_stride, int n_ch, const float* scale,
                 const float* shift) {
  uint64_t word = 0;
  for (int c = 0; c < n_ch; ++c) {
    float v = x[c * ch_stride];
    if (scale != nullptr) {
      const float prod = v * scale[c];
      v = prod + shift[c];
    }
    word |= static_cast<uint64_t>(v < 0.0f) << c;
  }
  return word;
}

// Signs of channels [c_hi - 1 .. c_lo] of NP * 4 pixels, channel c at bit c - c_lo.
template <int NP>
void PackHalf(const float* x, int64_t ch_stride, int c_lo, int c_hi, const float* scale,
              const float* shift, uint32x4_t* acc) {
  for (int i = 0; i < NP; ++i) acc[i] = vdupq_n_u32(0);
  for (int c = c_hi - 1; c >= c_lo; --c) {
    const float* xc = x + c * ch_stride;
    float32x4_t v[NP];
#pragma GCC unroll 2
    for (int i = 0; i < NP; ++i) v[i] = vld1q_f32(xc + 4 * i);
    if (scale != nullptr) {
      const float32x4_t s = vdupq_n_f32(scale[c]);
      const float32x4_t o = vdupq_n_f32(shift[c]);
#pragma GCC unroll 2
      for (int i = 0; i < NP; ++i) v[i] = vaddq_f32(vmulq_f32(v[i], s), o);
    }
#pragma GCC unroll 2
    for (int i = 0; i < NP; ++i) acc[i] = vsubq_u32(vaddq_u32(acc[i], acc[i]), vcltzq_f32(v[i]));
  }
}

template <int NP>
void PackPixels(const float* x, int64_t ch_stride, int n_ch, const float* scale, const float* shift,
                uint64_t* out) {
  uint32x4_t lo[NP], hi[NP];
  PackHalf<NP>(x, ch_stride, 0, n_ch < 32 ? n_ch : 32, scale, shift, lo);
  PackHalf<NP>(x, ch_stride, 32, n_ch, scale, shift, hi);  // empty when n_ch <= 32
#pragma GCC unroll 2
  for (int i = 0; i < NP; ++i) {
    vst1q_u64(out + 4 * i, vreinterpretq_u64_u32(vzip1q_u32(lo[i], hi[i])));
    vst1q_u64(out + 4 * i + 2, vreinterpretq_u64_u32(vzip2q_u32(lo[i], hi[i])));
  }
}

void Pack(const float* x, int64_t ch_stride, int n_ch, int64_t width, const float* scale,
          const float* shift, uint64_t* out) {
  int64_t p = 0;
  for (; p + 8 <= width; p += 8) PackPixels<2>(x + p, ch_stride, n_ch, scale, shift, out + p);
  if (p + 4 <= width) {
    PackPixels<1>(x + p, ch_stride, n_ch, scale, shift, out + p);
    p += 4;
  }
  for (; p < width; ++p) out[p] = PackOne(x + p, ch_stride, n_ch, scale, shift);
}

// 16 floats x * s + t -> 16 bytes, 0xff where the result is < 0.
uint8x16_t AffineSignBytes16(const float* x, const float* s, const float* t) {
  uint32x4_t m[4];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const float32x4_t v =
        vaddq_f32(vmulq_f32(vld1q_f32(x + 4 * i), vld1q_f32(s + 4 * i)), vld1q_f32(t + 4 * i));
    m[i] = vcltzq_f32(v);
  }
  const uint16x8_t h0 = vuzp1q_u16(vreinterpretq_u16_u32(m[0]), vreinterpretq_u16_u32(m[1]));
  const uint16x8_t h1 = vuzp1q_u16(vreinterpretq_u16_u32(m[2]), vreinterpretq_u16_u32(m[3]));
  return vuzp1q_u8(vreinterpretq_u8_u16(h0), vreinterpretq_u8_u16(h1));
}

void PackAffine(const float* x, int64_t rows, int64_t k, int64_t ld, const float* scale,
                const float* shift, uint64_t* out) {
  static const uint8_t kWeights[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t wt = vld1q_u8(kWeights);
  const int64_t words = (k + 63) / 64;
  const int64_t full = k / 64;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ld;
    for (int64_t wd = 0; wd < full; ++wd) {
      const int64_t j = 64 * wd;
      uint8x16_t b[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        b[i] = vandq_u8(AffineSignBytes16(row + j + 16 * i, scale + j + 16 * i, shift + j + 16 * i),
                        wt);
      }
      const uint8x16_t t2 = vpaddq_u8(vpaddq_u8(b[0], b[1]), vpaddq_u8(b[2], b[3]));
      out[r * words + wd] = vgetq_lane_u64(vreinterpretq_u64_u8(vpaddq_u8(t2, t2)), 0);
    }
    if (full < words) {  // short last word: scalar, same rounding
      uint64_t word = 0;
      for (int64_t j = 64 * full; j < k; ++j) {
        const float prod = row[j] * scale[j];
        word |= static_cast<uint64_t>(prod + shift[j] < 0.0f) << (j - 64 * full);
      }
      out[r * words + full] = word;
    }
  }
}

void PopRows(const uint64_t* w, int64_t rows, int64_t words, int32_t* pop) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint64_t* row = w + r * words;
    uint32_t s = 0;
    int64_t i = 0;
    for (; i + 2 <= words; i += 2) {
      s += vaddlvq_u8(vcntq_u8(vreinterpretq_u8_u64(vld1q_u64(row + i))));
    }
    if (i < words) s += vaddv_u8(vcnt_u8(vcreate_u8(row[i])));
    pop[r] = static_cast<int32_t>(s);
  }
}

}  // namespace

BconvSpec NeonBconv() { return BconvSpec{&Tile, &Pack, &PackAffine, &PopRows}; }

}  // namespace internal
}  // namespace binmx

/*
 * binmx runtime: NEON float kernels for aarch64 (Advanced SIMD is baseline there; see
 * float_kernels.h for the contracts).
 *
 * Panel product: tiles of up to kMaxMr = 6 rows x kNr = 16 columns (4 q registers a row, 24
 * accumulators). Per k: four loads of B[k][0..15] and, per row r, one ld1r broadcast of
 * A[r][k] feeding four FMAs (vfmaq_f32). Epilogue: + bias, relu as (v > 0 ? v : 0) (NaN gives
 * 0, as MXNet's relu), stores of the n live columns.
 * Im2col (float_kernels.h's Im2colPanel): stride-1 phases are a zero-padded copy, stride-2
 * phases come from vld2q (even / odd lanes) where a group of 4 is inside the row, scalar at
 * the edges; each tap is then a contiguous copy. Pooling uses the scalar reference row.
 */
#include <arm_neon.h>

#include <cstring>

#include "float_kernels.h"

namespace binmx {
namespace rt {
namespace {

constexpr int kNr = 16;
constexpr int kMaxMr = 6;

template <int MR>
void Tile(const float* a, const PanelArgs& p, const float* bias_rows, float* c) {
  float32x4_t acc[MR][4];
  for (int r = 0; r < MR; ++r) {
    for (int v = 0; v < 4; ++v) acc[r][v] = vdupq_n_f32(0.0f);
  }
  float pad[kNr] = {};
  for (int64_t k = 0; k < p.depth; ++k) {
    const float* bk = p.b + k * p.ldb;
    if (!p.b_full) {  // a partial panel read in place: its n columns, zeros after
      std::memcpy(pad, bk, sizeof(float) * static_cast<size_t>(p.n));
      bk = pad;
    }
    float32x4_t b[4];
    for (int v = 0; v < 4; ++v) b[v] = vld1q_f32(bk + 4 * v);
    for (int r = 0; r < MR; ++r) {
      const float32x4_t av = vld1q_dup_f32(a + r);
      for (int v = 0; v < 4; ++v) acc[r][v] = vfmaq_f32(acc[r][v], b[v], av);
    }
    a += MR;
  }
  float32x4_t bc[4];
  if (p.bias != nullptr && p.bias_per_col) {
    float bias_cols[kNr] = {};
    std::memcpy(bias_cols, p.bias, sizeof(float) * static_cast<size_t>(p.n));
    for (int v = 0; v < 4; ++v) bc[v] = vld1q_f32(bias_cols + 4 * v);
  }
  const float32x4_t zero = vdupq_n_f32(0.0f);
  for (int r = 0; r < MR; ++r) {
    float out[kNr];
    for (int v = 0; v < 4; ++v) {
      float32x4_t x = acc[r][v];
      if (p.bias != nullptr) x = vaddq_f32(x, p.bias_per_col ? bc[v] : vdupq_n_f32(bias_rows[r]));
      if (p.relu) x = vbslq_f32(vcgtq_f32(x, zero), x, zero);
      vst1q_f32(out + 4 * v, x);
    }
    std::memcpy(c + r * p.ldc, out, sizeof(float) * static_cast<size_t>(p.n));
  }
}

void Panel(const PanelArgs& p) {
  for (int64_t m0 = 0; m0 < p.m; m0 += p.mr) {
    const int rows = static_cast<int>(p.m - m0 < p.mr ? p.m - m0 : p.mr);
    const float* a = p.a + m0 * p.depth;
    const float* bias_rows = (p.bias != nullptr && !p.bias_per_col) ? p.bias + m0 : nullptr;
    float* c = p.c + m0 * p.ldc;
    switch (rows) {
      case 1:
        Tile<1>(a, p, bias_rows, c);
        break;
      case 2:
        Tile<2>(a, p, bias_rows, c);
        break;
      case 3:
        Tile<3>(a, p, bias_rows, c);
        break;
      case 4:
        Tile<4>(a, p, bias_rows, c);
        break;
      case 5:
        Tile<5>(a, p, bias_rows, c);
        break;
      default:
        Tile<6>(a, p, bias_rows, c);
        break;
    }
  }
}

struct Ops {
  static bool Row(float*, int, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int) {
    return false;
  }
  // ph[phi * ld + t] = row[start + phi + stride * t] inside [0, width), else 0, t < count.
  static void Extract(float* ph, int64_t ld, const float* row, int64_t width, int64_t start,
                      int64_t stride, int64_t count) {
    if (stride == 2) {
      int64_t t = 0;
      for (; t + 4 <= count; t += 4) {
        const int64_t ix = start + 2 * t;  // reads row[ix .. ix + 8)
        if (ix >= 0 && ix + 8 <= width) {
          const float32x4x2_t v = vld2q_f32(row + ix);
          vst1q_f32(ph + t, v.val[0]);
          vst1q_f32(ph + ld + t, v.val[1]);
        } else {
          for (int64_t u = t; u < t + 4; ++u) {
            for (int64_t phi = 0; phi < 2; ++phi) {
              const int64_t i = start + phi + 2 * u;
              ph[phi * ld + u] = (i >= 0 && i < width) ? row[i] : 0.0f;
            }
          }
        }
      }
      for (; t < count; ++t) {
        for (int64_t phi = 0; phi < 2; ++phi) {
          const int64_t i = start + phi + 2 * t;
          ph[phi * ld + t] = (i >= 0 && i < width) ? row[i] : 0.0f;
        }
      }
      return;
    }
    ExtractScalar(ph, ld, row, width, start, stride, count);
  }
  static void Copy(float* dst, const float* src, int len) {
    std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(len));
  }
};

void Im2col(const Im2colArgs& a, int64_t q0, int n, float* col) {
  Im2colPanel<Ops>(a, q0, n, kNr, col);
}

const FloatKernels kNeon = {"neon", kNr,     kMaxMr,  &Panel,  &Im2col, &PoolRowScalar,
                            0,      nullptr, nullptr, nullptr, nullptr, nullptr};

}  // namespace

const FloatKernels* NeonFloatKernels() { return &kNeon; }

}  // namespace rt
}  // namespace binmx

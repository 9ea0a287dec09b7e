/*
 * binmx float math: planar <-> channels-last transposes of float32 matrices (the channels-last
 * backward's and NHWC <-> NCHW's): dst[i * ld + r] = Q(src[r * n + i]) and back, in blocks of 16
 * rows so that each output line is written whole; in 16 x 16 in-register AVX-512 tiles when
 * they were built (GCC on x86-64) and the core's ISA choice is avx512 (DefaultIsa(): the best
 * path this CPU runs, capped by BINMX_ISA, which is read on every call and rejected when
 * unknown, docs/design.md §6). Exact copies (and signs); the result does not depend on the path.
 */
#include <algorithm>
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

// GCC 12's headers implement unmasked AVX-512 intrinsics (vunpck*, vshuff32x4) with a
// self-initialised "undefined" vector, which -Wall reports once inlined (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "float_internal.h"
#include "parallel.h"
#include "xnor_gemm.h"

namespace binmx {
namespace float_detail {

#if defined(BINMX_HAVE_TRANSPOSE16)
namespace {

// In-register transpose of a 16 x 16 float tile: v[k][r] <- v[r][k].
BINMX_AVX512 inline void Transpose16(__m512 v[16]) {
  __m512 t[16];
  for (int k = 0; k < 16; k += 2) {
    t[k] = _mm512_unpacklo_ps(v[k], v[k + 1]);
    t[k + 1] = _mm512_unpackhi_ps(v[k], v[k + 1]);
  }
  for (int k = 0; k < 16; k += 4) {
    v[k] = _mm512_shuffle_ps(t[k], t[k + 2], 0x44);
    v[k + 1] = _mm512_shuffle_ps(t[k], t[k + 2], 0xEE);
    v[k + 2] = _mm512_shuffle_ps(t[k + 1], t[k + 3], 0x44);
    v[k + 3] = _mm512_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
  }
  for (int h = 0; h < 16; h += 8) {
    for (int k = 0; k < 4; ++k) {
      t[h + k] = _mm512_shuffle_f32x4(v[h + k], v[h + k + 4], 0x88);
      t[h + k + 4] = _mm512_shuffle_f32x4(v[h + k], v[h + k + 4], 0xDD);
    }
  }
  for (int k = 0; k < 8; ++k) {
    v[k] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88);
    v[k + 8] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0xDD);
  }
}

// dst[i * ld_dst + r] = Q(src[r * ld_src + i]) for r < rows, i < n, in 16 x 16 tiles (masked at
// the edges).
BINMX_AVX512 void TransposeAvx512(const float* src, int64_t ld_src, int64_t rows, int64_t n,
                                  int64_t ld_dst, bool sign, float* dst) {
  const __m512 one = _mm512_set1_ps(1.0f), minus = _mm512_set1_ps(-1.0f);
  const __m512 zero = _mm512_setzero_ps();
  __m512 v[16];
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int rb = static_cast<int>(std::min<int64_t>(16, rows - r0));
    const __mmask16 rmask = static_cast<__mmask16>((1u << rb) - 1u);
    for (int64_t i0 = 0; i0 < n; i0 += 16) {
      const int ib = static_cast<int>(std::min<int64_t>(16, n - i0));
      const __mmask16 imask = static_cast<__mmask16>((1u << ib) - 1u);
      for (int r = 0; r < 16; ++r) {
        v[r] = r < rb ? _mm512_maskz_loadu_ps(imask, src + (r0 + r) * ld_src + i0) : zero;
        if (sign) {  // NaN compares false: +1, as the sign bits
          v[r] = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v[r], zero, _CMP_LT_OQ), one, minus);
        }
      }
      Transpose16(v);
      for (int k = 0; k < ib; ++k) _mm512_mask_storeu_ps(dst + (i0 + k) * ld_dst + r0, rmask, v[k]);
    }
  }
}

}  // namespace
#endif  // BINMX_HAVE_TRANSPOSE16

bool UseTranspose16() {
#if defined(BINMX_HAVE_TRANSPOSE16)
  return DefaultIsa() == Isa::kAvx512;
#else
  return false;
#endif
}

// Planar (rows x n, row stride n) -> interleaved (n x rows, row stride ld): dst[i * ld + r] =
// Q(src[r * n + i]), in blocks of 16 rows so that each output line is written whole (tile16:
// in 16 x 16 AVX-512 tiles).
BINMX_FLOAT_CLONES void ToChannelsLast(const float* src, int64_t rows, int64_t n, int64_t ld,
                                       bool sign, bool tile16, float* dst) {
#if defined(BINMX_HAVE_TRANSPOSE16)
  if (tile16) return TransposeAvx512(src, n, rows, n, ld, sign, dst);
#endif
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int64_t rb = std::min<int64_t>(16, rows - r0);
    const float* s = src + r0 * n;
    for (int64_t i = 0; i < n; ++i) {
      float* d = dst + i * ld + r0;
      if (sign) {
        for (int64_t r = 0; r < rb; ++r) d[r] = s[r * n + i] < 0.0f ? -1.0f : 1.0f;
      } else {
        for (int64_t r = 0; r < rb; ++r) d[r] = s[r * n + i];
      }
    }
  }
}

// The inverse: dst[r * n + i] = src[i * ld + r], times the STE mask 1[|mask[r * n + i]| <=
// grad_cancel] when mask is not null.
BINMX_FLOAT_CLONES void FromChannelsLast(const float* src, int64_t rows, int64_t n, int64_t ld,
                                         const float* mask, float grad_cancel, bool tile16,
                                         float* dst) {
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int64_t rb = std::min<int64_t>(16, rows - r0);
    float* d = dst + r0 * n;
#if defined(BINMX_HAVE_TRANSPOSE16)
    if (tile16) {
      TransposeAvx512(src + r0, ld, n, rb, n, false, d);
    } else
#endif
    {
      for (int64_t i = 0; i < n; ++i) {
        const float* s = src + i * ld + r0;
        for (int64_t r = 0; r < rb; ++r) d[r * n + i] = s[r];
      }
    }
    if (mask != nullptr) MaskRange(mask + r0 * n, d, rb * n, grad_cancel, d);
  }
}

}  // namespace float_detail

using float_detail::FromChannelsLast;
using float_detail::Threads;
using float_detail::ToChannelsLast;
using float_detail::UseTranspose16;

namespace {

// fn(image offset, c0, channels in the block) for every (image, block of 16 channels), in
// parallel: the task split of the two layout changes.
template <typename Fn>
void ChannelBlocks(int64_t batch, int64_t hw, int64_t channels, int threads, Fn&& fn) {
  if (batch <= 0 || hw <= 0 || channels <= 0) return;
  const int64_t blocks = (channels + 15) / 16;
  ParallelFor(batch * blocks, Threads(threads), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t c0 = (t % blocks) * 16;
      fn((t / blocks) * hw * channels, c0, std::min<int64_t>(16, channels - c0));
    }
  });
}

}  // namespace

void NhwcToNchw(const float* x, int64_t batch, int64_t hw, int64_t channels, float* out,
                int threads) {
  const bool tile16 = UseTranspose16();
  ChannelBlocks(batch, hw, channels, threads, [&](int64_t img, int64_t c0, int64_t cb) {
    FromChannelsLast(x + img + c0, cb, hw, channels, nullptr, 0.0f, tile16, out + img + c0 * hw);
  });
}

void NchwToNhwc(const float* x, int64_t batch, int64_t hw, int64_t channels, float* out,
                int threads) {
  const bool tile16 = UseTranspose16();
  ChannelBlocks(batch, hw, channels, threads, [&](int64_t img, int64_t c0, int64_t cb) {
    ToChannelsLast(x + img + c0 * hw, cb, hw, channels, false, tile16, out + img + c0);
  });
}

}  // namespace binmx

/*
 * binmx float math: the channels-last ("rows") backward of a convolution (float_conv.h).
 *
 * For small output maps the NCHW im2col above copies rows of a few floats (OW) per channel and
 * tap, which costs far more than its bytes. Here a chunk of nb images of one group is first
 * put channels last, so that each (output pixel, tap) of the col matrix is one run of Cg
 * consecutive floats:
 *   xt[(n, y, x)][c]     = Q(x)[n0 + n][g * Cg + c][y][x]                 (nb * H * W x Cg)
 *   dyt[q][f]            = dy[n0 + n][g * Fg + f][oy][ox], q = (n, oy, ox) (P x Fg)
 *   colt[q][t * Cg + c]  = xt[(n, iy, ix)][c], or pad_value outside the image (P x taps * Cg)
 *   dW^T[t * Cg + c][f] += colt^T . dyt                                     (GEMM, K = P)
 *   dcolt                = dyt . wt, wt[f][t * Cg + c] = w[g * Fg + f][c][t] (GEMM, K = Fg)
 *   dxt[(n, iy, ix)][c] += dcolt[q][t * Cg + c] for the taps inside the image
 * and dx is dxt transposed back (times the STE mask). Same chunks and blocks as the im2col path
 * (MakePlan); each block owns its images' dx and its own dW^T accumulator. The valid taps of a
 * kernel row are copied (and added back) as one run of taps * Cg floats (dilate_w = 1); dcolt
 * lives in a per-thread buffer that stays all zeros between uses (the col2im clears each row
 * after reading it), so its GEMM accumulates with beta = 1 and OpenBLAS does not clear the
 * whole block first; the transposes use 16 x 16 AVX-512 tiles where available.
 */
#include <algorithm>
#include <cstdint>
#include <vector>

#include "float_internal.h"
#include "parallel.h"

namespace binmx {
namespace float_detail {
namespace {

// The taps j of one kernel row that land inside the image for output column ox, as copies
// between a col row segment (tap j at j * Cg) and channels-last pixels: `runs` runs of `len`
// floats, the k-th at segment offset begin + k * step and pixel ix + k * dilate_w. The valid
// taps are consecutive, [begin, end) of the segment; outside it is padding. With dilate_w = 1
// they are also adjacent pixels, so they merge into one run of (valid taps) * Cg floats.
struct TapRun {
  int64_t ix = 0, begin = 0, end = 0, runs = 0, len = 0, step = 0, src_step = 0;
};

TapRun MakeTapRun(const Conv2dParams& p, int64_t ox, int64_t cg) {
  TapRun r;
  const int64_t x0 = ox * p.stride_w - p.pad_w;
  int64_t jl = 0, jh = p.kernel_w;
  while (jl < jh && x0 + jl * p.dilate_w < 0) ++jl;
  while (jh > jl && x0 + (jh - 1) * p.dilate_w >= p.in_w) --jh;
  r.ix = x0 + jl * p.dilate_w;
  r.begin = jl * cg;
  r.end = jh * cg;
  if (jh <= jl) {
    r.end = r.begin;
    return r;
  }
  if (p.dilate_w == 1) {
    r.runs = 1;
    r.len = (jh - jl) * cg;
  } else {
    r.runs = jh - jl;
    r.len = cg;
  }
  r.step = cg;
  r.src_step = p.dilate_w * cg;
  return r;
}

// colt[oy * OW + ox][(i * kw + j) * Cg + c] = xi[(iy, ix)][c] of one channels-last image (Cg
// channels), pad_value where the tap falls outside it.
BINMX_FLOAT_CLONES void RowsIm2Col(const float* __restrict xi, const Conv2dParams& p,
                                   const TapRun* runs, float* __restrict colt) {
  const int64_t cg = p.GroupChannels(), kdim = p.FilterSize(), ow = p.OutW();
  const int64_t seg = p.kernel_w * cg;
  const float pad = static_cast<float>(p.pad_value);
  for (int64_t oy = 0; oy < p.OutH(); ++oy) {
    for (int64_t ox = 0; ox < ow; ++ox) {
      float* row = colt + (oy * ow + ox) * kdim;
      const TapRun& r = runs[ox];
      for (int64_t i = 0; i < p.kernel_h; ++i) {
        const int64_t iy = oy * p.stride_h - p.pad_h + i * p.dilate_h;
        float* d = row + i * seg;
        if (iy < 0 || iy >= p.in_h) {
          std::fill(d, d + seg, pad);
          continue;
        }
        std::fill(d, d + r.begin, pad);
        const float* src = xi + (iy * p.in_w + r.ix) * cg;
        for (int64_t k = 0; k < r.runs; ++k) {
          float* __restrict dk = d + r.begin + k * r.step;
          const float* __restrict sk = src + k * r.src_step;
          for (int64_t e = 0; e < r.len; ++e) dk[e] = sk[e];
        }
        std::fill(d + r.end, d + seg, pad);
      }
    }
  }
}

// The adjoint for one image: dxi[(iy, ix)][c] += dcol[...] over the taps inside the image; then
// sets all of dcol (OH * OW rows of K floats) to zero.
BINMX_FLOAT_CLONES void RowsCol2ImAdd(float* __restrict dcol, const Conv2dParams& p,
                                      const TapRun* runs, float* __restrict dxi) {
  const int64_t cg = p.GroupChannels(), kdim = p.FilterSize(), ow = p.OutW();
  const int64_t seg = p.kernel_w * cg;
  for (int64_t oy = 0; oy < p.OutH(); ++oy) {
    for (int64_t ox = 0; ox < ow; ++ox) {
      float* row = dcol + (oy * ow + ox) * kdim;
      const TapRun& r = runs[ox];
      for (int64_t i = 0; i < p.kernel_h; ++i) {
        const int64_t iy = oy * p.stride_h - p.pad_h + i * p.dilate_h;
        if (iy < 0 || iy >= p.in_h) continue;
        const float* src = row + i * seg + r.begin;
        float* dst = dxi + (iy * p.in_w + r.ix) * cg;
        for (int64_t k = 0; k < r.runs; ++k) {
          const float* __restrict sk = src + k * r.step;
          float* __restrict dk = dst + k * r.src_step;
          for (int64_t e = 0; e < r.len; ++e) dk[e] += sk[e];
        }
      }
      std::fill(row, row + kdim, 0.0f);
    }
  }
}

}  // namespace

bool RowsPay(const Conv2dParams& p, int threads) {
  // Runs of >= 8 channels copy well. With few output pixels per thread (small batches) the
  // channels-last GEMMs get too short. Since the kernel-row runs, the zero-kept dcol and the
  // tile transposes, this path also beats shift on wide maps (core, 1 thread, forward excluded:
  // 32x32x64 b32 52.2 -> 46.2 ms, 16x16x128 b32 45.0 -> 39.2, 28x28x128 b4 16.6 -> 15.2,
  // 56x56x64 b4 19.2 -> 18.8), so the output width no longer matters; and im2col from 196
  // output pixels a thread up (7x7x512 b4 23.8 -> 20.4 ms; b2, 98 pixels: 16.3 -> 13.7; b1,
  // 49: a tie at 1 thread; at 2 threads, 98 a thread, im2col was faster on a shared machine).
  const int64_t per_thread = (p.batch + threads - 1) / threads * p.OutH() * p.OutW();
  return p.GroupChannels() >= 8 && per_thread >= 192;
}

void RowsBackward(const float* x, InputQuant quant, const float* w, const float* dy,
                  const float* x_mask, float grad_cancel, float* dx, float* dw,
                  const Conv2dParams& p, int threads) {
  const int64_t taps = p.kernel_h * p.kernel_w, cg = p.GroupChannels(), fg = p.GroupFilters();
  const int64_t kdim = cg * taps, w_size = p.num_filter * kdim, groups = p.groups;
  const int64_t oh = p.OutH(), ow = p.OutW(), ohw = oh * ow, hw = p.in_h * p.in_w;
  const Plan plan = MakePlan(p, threads, kRowsTargetCols);
  const bool sign = quant == InputQuant::kSign;
  const bool tile16 = UseTranspose16();
  std::vector<TapRun> runs(static_cast<size_t>(ow));
  for (int64_t ox = 0; ox < ow; ++ox) runs[ox] = MakeTapRun(p, ox, cg);

  // wt[g][f][t * Cg + c] = w[g * Fg + f][c][t]. wt and the dW^T partials live in the calling
  // thread's grow-only buffers (fresh vectors cost page faults and zeroing on every call: 2 x 9
  // MiB on a 512-channel 3x3 layer); each block's first GEMM into its partial has beta = 0.
  ThreadBuffers& own = Buffers();
  float* wt = dx ? own.wt.Get(w_size) : nullptr;
  if (dx) {
    for (int64_t f = 0; f < p.num_filter; ++f) {
      const float* wf = w + f * kdim;
      float* dst = wt + f * kdim;
      for (int64_t c = 0; c < cg; ++c) {
        for (int64_t t = 0; t < taps; ++t) dst[t * cg + c] = wf[c * taps + t];
      }
    }
  }
  float* acc = dw ? own.acc.Get(plan.parts * w_size) : nullptr;
  ParallelFor(plan.parts, threads, [&](int64_t begin, int64_t end) {
    ThreadBuffers& buf = Buffers();
    float* colt = dw ? buf.col.Get(plan.nb * ohw * kdim) : nullptr;
    float* dcol = dx ? buf.zeroed.Get(plan.nb * ohw * kdim) : nullptr;
    float* dyt = buf.dy.Get(plan.nb * ohw * fg);
    float* xt = buf.tmp.Get(plan.nb * hw * cg);  // xt, then dxt
    for (int64_t part = begin; part < end; ++part) {
      float* acc_p = dw ? acc + part * w_size : nullptr;
      const int64_t first = plan.ChunkBegin(static_cast<int>(part));
      for (int64_t ch = first; ch < plan.ChunkBegin(static_cast<int>(part + 1)); ++ch) {
        const int64_t n0 = ch * plan.nb, cnt = std::min(plan.nb, p.batch - n0);
        const int64_t rows = cnt * ohw;
        for (int64_t g = 0; g < groups; ++g) {
          for (int64_t n = 0; n < cnt; ++n) {
            ToChannelsLast(dy + ((n0 + n) * p.num_filter + g * fg) * ohw, fg, ohw, fg, false,
                           tile16, dyt + n * ohw * fg);
          }
          if (acc_p) {
            for (int64_t n = 0; n < cnt; ++n) {
              ToChannelsLast(x + ((n0 + n) * p.channels + g * cg) * hw, cg, hw, cg, sign, tile16,
                             xt + n * hw * cg);
            }
            for (int64_t n = 0; n < cnt; ++n) {
              RowsIm2Col(xt + n * hw * cg, p, runs.data(), colt + n * ohw * kdim);
            }
            Gemm1(true, false, kdim, fg, rows, 1.0f, colt, kdim, dyt, fg, ch == first ? 0.0f : 1.0f,
                  acc_p + g * fg * kdim, fg);
          }
          if (dx) {
            // dcol is all zeros between uses (RowsCol2ImAdd clears what it read), so the GEMM
            // accumulates (beta = 1) instead of OpenBLAS clearing the whole block first.
            Gemm1(false, false, rows, kdim, fg, 1.0f, dyt, fg, wt + g * fg * kdim, kdim, 1.0f, dcol,
                  kdim);
            float* dxt = xt;
            std::fill(dxt, dxt + cnt * hw * cg, 0.0f);
            for (int64_t n = 0; n < cnt; ++n) {
              RowsCol2ImAdd(dcol + n * ohw * kdim, p, runs.data(), dxt + n * hw * cg);
            }
            for (int64_t n = 0; n < cnt; ++n) {
              const int64_t img = ((n0 + n) * p.channels + g * cg) * hw;
              FromChannelsLast(dxt + n * hw * cg, cg, hw, cg, x_mask ? x_mask + img : nullptr,
                               grad_cancel, tile16, dx + img);
            }
          }
        }
      }
    }
  });
  if (dw) {
    // dw[g * Fg + f][c][t] = sum over blocks of acc[g][t * Cg + c][f], in 16 x 16 tiles of
    // (c, f) with all taps, so that reads and writes both stay within a few cache lines.
    constexpr int64_t kTile = 16;
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t c0 = 0; c0 < cg; c0 += kTile) {
        const int64_t c1 = std::min(cg, c0 + kTile);
        for (int64_t f0 = 0; f0 < fg; f0 += kTile) {
          const int64_t f1 = std::min(fg, f0 + kTile);
          for (int64_t f = f0; f < f1; ++f) {
            float* dwf = dw + (g * fg + f) * kdim;
            for (int64_t c = c0; c < c1; ++c) {
              for (int64_t t = 0; t < taps; ++t) {
                const int64_t k = g * fg * kdim + (t * cg + c) * fg + f;
                float v = acc[k];
                for (int part = 1; part < plan.parts; ++part) v += acc[part * w_size + k];
                dwf[c * taps + t] = v;
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace float_detail
}  // namespace binmx

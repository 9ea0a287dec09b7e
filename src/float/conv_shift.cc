/*
 * binmx float math: the shifted-GEMM backward of a stride-1 convolution (float_conv.h).
 *
 * A chunk of nb images of one group is laid out with shared padding: each image plane has
 * Hs = H + ph rows of Wq = W + pw floats (ph pad rows on top, pw pad columns on the left of
 * every row; a row's right padding is the next row's left padding, an image's bottom padding
 * the next image's top rows), planes of S = Hs * Wq floats back to back, then ph more pad rows
 * and a tail. With dy stored in the same (n, row, col) grid (zeros outside OH x OW), the input
 * value seen by output q = n * S + oy * Wq + ox through tap (i, j) sits at q + off(i, j),
 * off = i * dh * Wq + j * dw, for every valid (oy, ox), so per tap
 *   dW[:, :, tap] += dy (Fg x L) . X[:, off : off + L]^T          (L = nb * S)
 *   dXs[:, off : off + L] += W[:, :, tap]^T (Cg x Fg) . dy          (beta = 1, in place)
 * and dx is the interior of dXs. Positions outside the image or OH x OW meet dy = 0.
 * It costs S / (OH * OW) times the GEMM work of im2col but skips writing and reading the
 * kh*kw times larger col matrix; the choice between the two is ShiftPays().
 */
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "float_internal.h"
#include "parallel.h"

namespace binmx {
namespace float_detail {
namespace {

struct ShiftGeo {
  int64_t wq, hs, plane, len, off_max, ld;  // ld: row length of the X / dXs buffers
};

ShiftGeo MakeShiftGeo(const Conv2dParams& p, int64_t nb) {
  ShiftGeo s;
  s.wq = p.in_w + p.pad_w;
  s.hs = p.in_h + p.pad_h;
  s.plane = s.hs * s.wq;
  s.len = nb * s.plane;
  s.off_max = (p.kernel_h - 1) * p.dilate_h * s.wq + (p.kernel_w - 1) * p.dilate_w;
  s.ld = s.len + std::max(s.off_max, p.pad_h * s.wq) + 1;
  return s;
}

// X[c][..] for images n0 .. n0+cnt of group g, channels-planar with shared padding.
BINMX_FLOAT_CLONES void FillShiftInput(const float* x, const Conv2dParams& p, const ShiftGeo& s,
                                       int64_t n0, int64_t cnt, int64_t g, InputQuant quant,
                                       float* xs) {
  const int64_t cg = p.GroupChannels(), hw = p.in_h * p.in_w;
  const float pad = static_cast<float>(p.pad_value);
  const bool sign = quant == InputQuant::kSign;
  for (int64_t c = 0; c < cg; ++c) {
    float* row_base = xs + c * s.ld;
    for (int64_t n = 0; n < cnt; ++n) {
      const float* src = x + ((n0 + n) * p.channels + g * cg + c) * hw;
      float* dst = row_base + n * s.plane;
      std::fill(dst, dst + p.pad_h * s.wq, pad);
      for (int64_t y = 0; y < p.in_h; ++y) {
        float* row = dst + (y + p.pad_h) * s.wq;
        std::fill(row, row + p.pad_w, pad);
        CopyRow(src + y * p.in_w, 1, p.in_w, sign, row + p.pad_w);
      }
    }
    std::fill(row_base + cnt * s.plane, row_base + s.ld, pad);
  }
}

// D[f][n * S + oy * Wq + ox] = dy[n0 + n][g * fg + f][oy][ox], zeros elsewhere.
BINMX_FLOAT_CLONES void FillShiftDy(const float* dy, const Conv2dParams& p, const ShiftGeo& s,
                                    int64_t n0, int64_t cnt, int64_t g, float* d) {
  const int64_t fg = p.GroupFilters(), oh = p.OutH(), ow = p.OutW(), ohw = oh * ow;
  for (int64_t f = 0; f < fg; ++f) {
    for (int64_t n = 0; n < cnt; ++n) {
      const float* src = dy + ((n0 + n) * p.num_filter + g * fg + f) * ohw;
      float* dst = d + f * s.len + n * s.plane;
      for (int64_t oy = 0; oy < oh; ++oy) {
        std::memcpy(dst + oy * s.wq, src + oy * ow, sizeof(float) * static_cast<size_t>(ow));
        std::fill(dst + oy * s.wq + ow, dst + (oy + 1) * s.wq, 0.0f);
      }
      std::fill(dst + oh * s.wq, dst + s.plane, 0.0f);
    }
  }
}

// dx[n0 + n][g * cg + c] = interior of dXs, times the STE mask when x_mask is not null.
BINMX_FLOAT_CLONES void ExtractShiftDx(const float* dxs, const Conv2dParams& p, const ShiftGeo& s,
                                       int64_t n0, int64_t cnt, int64_t g, const float* x_mask,
                                       float grad_cancel, float* dx) {
  const int64_t cg = p.GroupChannels(), hw = p.in_h * p.in_w, w = p.in_w;
  for (int64_t c = 0; c < cg; ++c) {
    for (int64_t n = 0; n < cnt; ++n) {
      const int64_t img = ((n0 + n) * p.channels + g * cg + c) * hw;
      const float* src = dxs + c * s.ld + n * s.plane + p.pad_h * s.wq + p.pad_w;
      float* dst = dx + img;
      for (int64_t y = 0; y < p.in_h; ++y) {
        const float* __restrict sr = src + y * s.wq;
        float* __restrict dr = dst + y * w;
        if (x_mask) {
          const float* __restrict xr = x_mask + img + y * w;
          for (int64_t k = 0; k < w; ++k) dr[k] = std::fabs(xr[k]) <= grad_cancel ? sr[k] : 0.0f;
        } else {
          for (int64_t k = 0; k < w; ++k) dr[k] = sr[k];
        }
      }
    }
  }
}

}  // namespace

bool ShiftPays(const Conv2dParams& p) {
  if (p.stride_h != 1 || p.stride_w != 1) return false;
  // Extra GEMM work of the shared-padding grid vs the im2col traffic, which costs about
  // kIm2colWork GEMM multiply-adds per col element (so relatively less for many filters).
  constexpr double kIm2colWork = 24.0;  // 16 sent the 16x16x128 ResNet layer to im2col (18% slower)
  const double waste = static_cast<double>((p.in_h + p.pad_h) * (p.in_w + p.pad_w)) /
                       static_cast<double>(p.OutH() * p.OutW());
  return waste <= 1.0 + kIm2colWork / static_cast<double>(p.GroupFilters());
}

// The backward pass with shifted GEMMs (see above); dw was zeroed by the caller.
void ShiftBackward(const float* x, InputQuant quant, const float* w, const float* dy,
                   const float* x_mask, float grad_cancel, float* dx, float* dw,
                   const Conv2dParams& p, int threads) {
  constexpr int64_t kTargetLen = 4096;
  const int64_t taps = p.kernel_h * p.kernel_w, cg = p.GroupChannels(), fg = p.GroupFilters();
  const int64_t kdim = cg * taps, w_size = p.num_filter * kdim, groups = p.groups;
  const int64_t plane = (p.in_h + p.pad_h) * (p.in_w + p.pad_w);
  const int64_t per_thread = (p.batch + threads - 1) / threads;
  int64_t nb = (kTargetLen + plane - 1) / plane;
  nb = std::min(nb, std::max<int64_t>(1, kMaxColFloats / ((2 * cg + fg) * plane)));
  nb = std::max<int64_t>(1, std::min(nb, per_thread));
  const int64_t chunks = (p.batch + nb - 1) / nb;
  const int parts = static_cast<int>(std::min<int64_t>(threads, chunks));
  const ShiftGeo full = MakeShiftGeo(p, nb);

  // Weights per group and tap as Fg x Cg matrices: wt[g][tap][fi][c].
  std::vector<float> wt(dx ? static_cast<size_t>(w_size) : 0);
  if (dx) {
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t fi = 0; fi < fg; ++fi) {
        const float* wf = w + (g * fg + fi) * kdim;
        for (int64_t c = 0; c < cg; ++c) {
          for (int64_t t = 0; t < taps; ++t)
            wt[((g * taps + t) * fg + fi) * cg + c] = wf[c * taps + t];
        }
      }
    }
  }
  // dW accumulators per block, laid out like wt.
  std::vector<float> acc(dw ? static_cast<size_t>(parts * w_size) : 0, 0.0f);
  ParallelFor(parts, threads, [&](int64_t begin, int64_t end) {
    ThreadBuffers& buf = Buffers();
    float* xs = dw ? buf.col.Get(cg * full.ld) : nullptr;
    float* dxs = dx ? buf.tmp.Get(cg * full.ld) : nullptr;
    float* d = buf.dy.Get(fg * full.len);
    for (int64_t part = begin; part < end; ++part) {
      float* acc_p = dw ? acc.data() + part * w_size : nullptr;
      for (int64_t ch = chunks * part / parts; ch < chunks * (part + 1) / parts; ++ch) {
        const int64_t n0 = ch * nb, cnt = std::min(nb, p.batch - n0);
        const ShiftGeo geo = MakeShiftGeo(p, cnt);
        for (int64_t g = 0; g < groups; ++g) {
          FillShiftDy(dy, p, geo, n0, cnt, g, d);
          if (dw) {
            FillShiftInput(x, p, geo, n0, cnt, g, quant, xs);
            for (int64_t t = 0; t < taps; ++t) {
              const int64_t off =
                  (t / p.kernel_w) * p.dilate_h * geo.wq + (t % p.kernel_w) * p.dilate_w;
              Gemm1(false, true, fg, cg, geo.len, 1.0f, d, geo.len, xs + off, geo.ld, 1.0f,
                    acc_p + (g * taps + t) * fg * cg, cg);
            }
          }
          if (dx) {
            std::fill(dxs, dxs + cg * geo.ld, 0.0f);
            for (int64_t t = 0; t < taps; ++t) {
              const int64_t off =
                  (t / p.kernel_w) * p.dilate_h * geo.wq + (t % p.kernel_w) * p.dilate_w;
              Gemm1(true, false, cg, geo.len, fg, 1.0f, wt.data() + (g * taps + t) * fg * cg, cg, d,
                    geo.len, 1.0f, dxs + off, geo.ld);
            }
            ExtractShiftDx(dxs, p, geo, n0, cnt, g, x_mask, grad_cancel, dx);
          }
        }
      }
    }
  });
  if (dw) {
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t t = 0; t < taps; ++t) {
        for (int64_t fi = 0; fi < fg; ++fi) {
          for (int64_t c = 0; c < cg; ++c) {
            const int64_t k = ((g * taps + t) * fg + fi) * cg + c;
            float v = acc[k];
            for (int part = 1; part < parts; ++part) v += acc[part * w_size + k];
            dw[(g * fg + fi) * kdim + c * taps + t] = v;
          }
        }
      }
    }
  }
}

}  // namespace float_detail
}  // namespace binmx

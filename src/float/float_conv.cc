/*
 * binmx float math: the im2col convolution forward and backward on OpenBLAS sgemm (formulas,
 * layouts and the threading contract in float_conv.h), and the choice of backward method
 * (im2col here, conv_shift.cc, conv_rows.cc).
 *
 * Work split: the batch is cut into chunks of nb images (nb * OH * OW >= kTargetCols columns
 * when the batch allows, at most ceil(N / threads) images so every thread gets work, and a col
 * buffer of at most kMaxColFloats floats); the chunks are dealt out to `parts` = min(threads,
 * chunks) contiguous blocks, one per pool task. A block owns its images' dx outright and its own
 * dW accumulator; accumulators are summed in block order at the end. Per-thread col / dy
 * buffers grow and are reused across calls.
 */
#include "float_conv.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "float_internal.h"
#include "parallel.h"

namespace binmx {
namespace float_detail {
namespace {

// Output columns [lo, hi) whose tap offset `off` (= j * dilate - pad) lands inside [0, in).
void ValidRange(int64_t out, int64_t in, int64_t stride, int64_t off, int64_t* lo, int64_t* hi) {
  int64_t l = 0, h = out;
  while (l < out && l * stride + off < 0) ++l;
  while (h > l && (h - 1) * stride + off >= in) --h;
  *lo = l;
  *hi = h;
}

// col[((c * kh + i) * kw + j) * ld + oy * ow + ox] = Q(xpad)[g * cg + c][..], one image.
BINMX_FLOAT_CLONES void Im2Col(const float* x_img, const Conv2dParams& p, int64_t g,
                               InputQuant quant, float* col, int64_t ld) {
  const int64_t oh = p.OutH(), ow = p.OutW(), cg = p.GroupChannels();
  const float pad = static_cast<float>(p.pad_value);
  const bool sign = quant == InputQuant::kSign;
  for (int64_t c = 0; c < cg; ++c) {
    const float* xc = x_img + (g * cg + c) * p.in_h * p.in_w;
    for (int64_t i = 0; i < p.kernel_h; ++i) {
      for (int64_t j = 0; j < p.kernel_w; ++j) {
        float* dst = col + ((c * p.kernel_h + i) * p.kernel_w + j) * ld;
        const int64_t x_off = j * p.dilate_w - p.pad_w;
        int64_t xl, xh;
        ValidRange(ow, p.in_w, p.stride_w, x_off, &xl, &xh);
        for (int64_t oy = 0; oy < oh; ++oy) {
          const int64_t iy = oy * p.stride_h - p.pad_h + i * p.dilate_h;
          float* drow = dst + oy * ow;
          if (iy < 0 || iy >= p.in_h) {
            std::fill(drow, drow + ow, pad);
            continue;
          }
          std::fill(drow, drow + xl, pad);
          if (xh > xl) {
            CopyRow(xc + iy * p.in_w + xl * p.stride_w + x_off, p.stride_w, xh - xl, sign,
                    drow + xl);
          }
          std::fill(drow + xh, drow + ow, pad);
        }
      }
    }
  }
}

// dx_img[g * cg + c][iy][ix] += col[...] for the positions inside the image, one image.
BINMX_FLOAT_CLONES void Col2ImAdd(const float* col, int64_t ld, const Conv2dParams& p, int64_t g,
                                  float* dx_img) {
  const int64_t oh = p.OutH(), ow = p.OutW(), cg = p.GroupChannels();
  for (int64_t c = 0; c < cg; ++c) {
    float* dxc = dx_img + (g * cg + c) * p.in_h * p.in_w;
    for (int64_t i = 0; i < p.kernel_h; ++i) {
      for (int64_t j = 0; j < p.kernel_w; ++j) {
        const float* src = col + ((c * p.kernel_h + i) * p.kernel_w + j) * ld;
        const int64_t x_off = j * p.dilate_w - p.pad_w;
        int64_t xl, xh;
        ValidRange(ow, p.in_w, p.stride_w, x_off, &xl, &xh);
        if (xh <= xl) continue;
        for (int64_t oy = 0; oy < oh; ++oy) {
          const int64_t iy = oy * p.stride_h - p.pad_h + i * p.dilate_h;
          if (iy < 0 || iy >= p.in_h) continue;
          AddRow(src + oy * ow + xl, xh - xl, p.stride_w,
                 dxc + iy * p.in_w + xl * p.stride_w + x_off);
        }
      }
    }
  }
}

// Environment override of the backward method (tests, benchmarks): BINMX_FLOAT_CONV=im2col,
// shift or rows; anything else (or unset) chooses by cost.
enum class Method { kAuto = 0, kIm2col = 1, kShift = 2, kRows = 3 };

Method ForcedMethod() {
  const char* v = std::getenv("BINMX_FLOAT_CONV");
  if (v == nullptr) return Method::kAuto;
  if (std::strcmp(v, "im2col") == 0) return Method::kIm2col;
  if (std::strcmp(v, "shift") == 0) return Method::kShift;
  if (std::strcmp(v, "rows") == 0) return Method::kRows;
  return Method::kAuto;
}

Method ChooseMethod(const Conv2dParams& p, int threads) {
  const Method forced = ForcedMethod();
  if (forced == Method::kRows) return Method::kRows;
  if (forced == Method::kIm2col) return Method::kIm2col;
  const bool unit_stride = p.stride_h == 1 && p.stride_w == 1;
  if (forced == Method::kShift) return unit_stride ? Method::kShift : Method::kIm2col;
  // Measured (see RowsPay): rows wins or ties with >= 8 channels a group and >= 192 output
  // pixels per thread (LeNet 8x8; ResNet maps at batch 32-128, and at batch 4 at 1 thread);
  // otherwise shift where it pays.
  if (RowsPay(p, threads)) return Method::kRows;
  return unit_stride && ShiftPays(p) ? Method::kShift : Method::kIm2col;
}

void CheckConv(const float* x, const float* w, const Conv2dParams& p) {
  ValidateConv2dParams(p);
  Require(p.FilterSize() * p.OutH() * p.OutW() < (int64_t{1} << 31),
          "FloatConv2d: C/groups * kh * kw * OH * OW must be < 2^31");
  Require(p.batch == 0 || (x != nullptr && w != nullptr), "FloatConv2d: null pointer");
}

}  // namespace
}  // namespace float_detail

using namespace float_detail;  // NOLINT(build/namespaces): this target's own helpers

void FloatConv2dForward(const float* x, InputQuant quant, const float* w, const float* alpha,
                        const float* bias, float* out, const Conv2dParams& p, int threads) {
  CheckConv(x, w, p);
  if (p.batch == 0) return;
  Require(out != nullptr, "FloatConv2dForward: null output");
  InitBlas();
  threads = Threads(threads);
  const Plan plan = MakePlan(p, threads);
  const int64_t ohw = p.OutH() * p.OutW(), kdim = p.FilterSize(), fg = p.GroupFilters();
  const int64_t chw = p.channels * p.in_h * p.in_w, f_all = p.num_filter;
  ParallelFor(plan.parts, threads, [&](int64_t begin, int64_t end) {
    ThreadBuffers& buf = Buffers();
    float* col = buf.col.Get(kdim * plan.nb * ohw);
    float* tmp = plan.nb > 1 ? buf.tmp.Get(fg * plan.nb * ohw) : nullptr;
    for (int64_t ch = plan.ChunkBegin(static_cast<int>(begin));
         ch < plan.ChunkBegin(static_cast<int>(end)); ++ch) {
      const int64_t n0 = ch * plan.nb, cnt = std::min(plan.nb, p.batch - n0), cols = cnt * ohw;
      for (int64_t g = 0; g < p.groups; ++g) {
        for (int64_t s = 0; s < cnt; ++s)
          Im2Col(x + (n0 + s) * chw, p, g, quant, col + s * ohw, cols);
        const float* wg = w + g * fg * kdim;
        if (cnt == 1) {
          Gemm1(false, false, fg, cols, kdim, 1.0f, wg, kdim, col, cols, 0.0f,
                out + (n0 * f_all + g * fg) * ohw, ohw);
        } else {
          Gemm1(false, false, fg, cols, kdim, 1.0f, wg, kdim, col, cols, 0.0f, tmp, cols);
          for (int64_t fi = 0; fi < fg; ++fi) {
            for (int64_t s = 0; s < cnt; ++s) {
              std::memcpy(out + ((n0 + s) * f_all + g * fg + fi) * ohw, tmp + fi * cols + s * ohw,
                          sizeof(float) * static_cast<size_t>(ohw));
            }
          }
        }
      }
      if (alpha == nullptr && bias == nullptr) continue;
      for (int64_t s = 0; s < cnt; ++s) {
        for (int64_t f = 0; f < f_all; ++f) {
          const float a = alpha ? alpha[f] : 1.0f, b = bias ? bias[f] : 0.0f;
          float* o = out + ((n0 + s) * f_all + f) * ohw;
          for (int64_t q = 0; q < ohw; ++q) o[q] = o[q] * a + b;
        }
      }
    }
  });
}

void FloatConv2dBackward(const float* x, InputQuant quant, const float* w, const float* dy,
                         const float* x_mask, float grad_cancel, float* dx, float* dw,
                         const Conv2dParams& p, int threads) {
  CheckConv(x, w, p);
  const int64_t ohw = p.OutH() * p.OutW(), kdim = p.FilterSize(), fg = p.GroupFilters();
  const int64_t chw = p.channels * p.in_h * p.in_w, f_all = p.num_filter;
  const int64_t w_size = f_all * kdim;
  if (p.batch == 0) {  // every method below writes all of dw
    if (dw) std::fill(dw, dw + w_size, 0.0f);
    return;
  }
  Require(dy != nullptr, "FloatConv2dBackward: null dy");
  InitBlas();
  threads = Threads(threads);
  const Method method = ChooseMethod(p, threads);
  if (method == Method::kShift) {
    ShiftBackward(x, quant, w, dy, x_mask, grad_cancel, dx, dw, p, threads);
    return;
  }
  if (method == Method::kRows) {
    RowsBackward(x, quant, w, dy, x_mask, grad_cancel, dx, dw, p, threads);
    return;
  }
  const Plan plan = MakePlan(p, threads);
  // dW^T accumulators (per group K x Fg: col . dy^T runs faster in OpenBLAS than dy . col^T),
  // one per block (the first GEMM of a block has beta = 0), summed in block order and
  // transposed at the end; in the calling thread's grow-only buffer, as in RowsBackward.
  float* acc = dw ? Buffers().acc.Get(plan.parts * w_size) : nullptr;
  ParallelFor(plan.parts, threads, [&](int64_t begin, int64_t end) {
    ThreadBuffers& buf = Buffers();
    float* col = buf.col.Get(kdim * plan.nb * ohw);
    float* dyc = plan.nb > 1 ? buf.dy.Get(fg * plan.nb * ohw) : nullptr;
    for (int64_t part = begin; part < end; ++part) {
      float* acc_p = dw == nullptr ? nullptr : acc + part * w_size;
      const int64_t first = plan.ChunkBegin(static_cast<int>(part));
      for (int64_t ch = first; ch < plan.ChunkBegin(static_cast<int>(part + 1)); ++ch) {
        const int64_t n0 = ch * plan.nb, cnt = std::min(plan.nb, p.batch - n0);
        const int64_t cols = cnt * ohw;
        if (dx) std::fill(dx + n0 * chw, dx + (n0 + cnt) * chw, 0.0f);
        for (int64_t g = 0; g < p.groups; ++g) {
          // dy of this chunk and group as an fg x cols matrix.
          const float* dyg = dy + (n0 * f_all + g * fg) * ohw;
          int64_t lddy = ohw;
          if (cnt > 1) {
            for (int64_t fi = 0; fi < fg; ++fi) {
              for (int64_t s = 0; s < cnt; ++s) {
                std::memcpy(dyc + fi * cols + s * ohw, dy + ((n0 + s) * f_all + g * fg + fi) * ohw,
                            sizeof(float) * static_cast<size_t>(ohw));
              }
            }
            dyg = dyc;
            lddy = cols;
          }
          if (acc_p) {
            for (int64_t s = 0; s < cnt; ++s) {
              Im2Col(x + (n0 + s) * chw, p, g, quant, col + s * ohw, cols);
            }
            Gemm1(false, true, kdim, fg, cols, 1.0f, col, cols, dyg, lddy,
                  ch == first ? 0.0f : 1.0f, acc_p + g * fg * kdim, fg);
          }
          if (dx) {
            Gemm1(true, false, kdim, cols, fg, 1.0f, w + g * fg * kdim, kdim, dyg, lddy, 0.0f, col,
                  cols);
            for (int64_t s = 0; s < cnt; ++s) {
              Col2ImAdd(col + s * ohw, cols, p, g, dx + (n0 + s) * chw);
            }
          }
        }
        if (dx && x_mask) {
          float* d = dx + n0 * chw;
          MaskRange(x_mask + n0 * chw, d, cnt * chw, grad_cancel, d);
        }
      }
    }
  });
  if (dw) {
    constexpr int64_t kTile = 16;  // 16 x 16 tiles of (k, fi): see RowsBackward
    for (int64_t g = 0; g < p.groups; ++g) {
      for (int64_t k0 = 0; k0 < kdim; k0 += kTile) {
        const int64_t k1 = std::min(kdim, k0 + kTile);
        for (int64_t f0 = 0; f0 < fg; f0 += kTile) {
          const int64_t f1 = std::min(fg, f0 + kTile);
          for (int64_t fi = f0; fi < f1; ++fi) {
            for (int64_t k = k0; k < k1; ++k) {
              const int64_t i = g * fg * kdim + k * fg + fi;
              float v = acc[i];
              for (int part = 1; part < plan.parts; ++part) v += acc[part * w_size + i];
              dw[(g * fg + fi) * kdim + k] = v;
            }
          }
        }
      }
    }
  }
}

}  // namespace binmx

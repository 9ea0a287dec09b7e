/*
 * binmx core: float convolution / dense forward and STE gradients on OpenBLAS sgemm (see
 * float_conv.h for the formulas, layouts and the threading contract).
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
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

// GCC 12's headers implement unmasked AVX-512 intrinsics (vunpck*, vshuff32x4) with a
// self-initialised "undefined" vector, which -Wall reports once inlined (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "cblas.h"
#include "parallel.h"
#include "xnor_gemm.h"

namespace binmx {

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(BINMX_NO_TARGET_CLONES)
#define BINMX_FLOAT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
// 16 x 16 tile transposes for the channels-last path, used when the CPU has AVX-512F.
#define BINMX_HAVE_TRANSPOSE16 1
#define BINMX_AVX512 __attribute__((target("avx512f")))
#else
#define BINMX_FLOAT_CLONES
#endif

constexpr int64_t kTargetCols = 1024;          // GEMM columns per chunk worth aiming for
constexpr int64_t kRowsTargetCols = 256;       // the same for the channels-last path (its col
                                               // rows are taps * Cg floats; smaller chunks
                                               // stay in L2: 256 measured best of 128-1024)
constexpr int64_t kMaxColFloats = 1 << 22;     // 16 MiB col buffer per thread at most
constexpr int64_t kMinSplitWork = int64_t{1} << 20;  // m*n*k below which a GEMM is not split

void Require(bool ok, const char* what) {
  if (!ok) throw std::invalid_argument(what);
}

int Threads(int threads) { return threads > 0 ? threads : DefaultThreads(); }

void InitBlas() {
  static std::once_flag once;
  std::call_once(once, [] { scipy_openblas_set_num_threads(1); });
}

// Grow-only per-thread buffer (no zero fill).
class Scratch {
 public:
  float* Get(int64_t n) {
    if (n > cap_) {
      buf_.reset(new float[static_cast<size_t>(n)]);
      cap_ = n;
    }
    return buf_.get();
  }

 private:
  std::unique_ptr<float[]> buf_;
  int64_t cap_ = 0;
};

// Grow-only per-thread buffer that is all zeros whenever Get returns: its user must set back
// to zero whatever it wrote before the next Get.
class ZeroedScratch {
 public:
  float* Get(int64_t n) {
    if (n > cap_) {
      buf_.reset(new float[static_cast<size_t>(n)]());
      cap_ = n;
    }
    return buf_.get();
  }

 private:
  std::unique_ptr<float[]> buf_;
  int64_t cap_ = 0;
};

struct ThreadBuffers {
  Scratch col, dy, tmp;
  ZeroedScratch zeroed;
  Scratch acc, wt;  // the calling thread's, outside its parallel loops: dW partials, W reordered
};

ThreadBuffers& Buffers() {
  thread_local ThreadBuffers buffers;
  return buffers;
}

// One single-threaded OpenBLAS call (sizes checked to fit its 32-bit ints).
void Gemm1(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  Require(m <= kMax && n <= kMax && k <= kMax && lda <= kMax && ldb <= kMax && ldc <= kMax,
          "Sgemm: a dimension exceeds 2^31 - 1");
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i) {
      float* row = c + i * ldc;
      for (int64_t j = 0; j < n; ++j) row[j] = beta == 0.0f ? 0.0f : row[j] * beta;
    }
    return;
  }
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
                    static_cast<int>(lda), b, static_cast<int>(ldb), beta, c,
                    static_cast<int>(ldc));
}

// Row helpers are inlined into their (cloned) callers: rows can be as short as a few floats.
#define BINMX_INLINE inline __attribute__((always_inline))

// dst[k] = Q(src[k * stride]) for k < n.
BINMX_INLINE void CopyRow(const float* __restrict src, int64_t stride, int64_t n, bool sign,
                                float* __restrict dst) {
  if (stride == 1) {
    if (sign) {
      for (int64_t k = 0; k < n; ++k) dst[k] = src[k] < 0.0f ? -1.0f : 1.0f;
    } else {
      std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(n));
    }
    return;
  }
  if (sign) {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[k * stride] < 0.0f ? -1.0f : 1.0f;
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[k * stride];
  }
}

// dst[k * stride] += src[k] for k < n.
BINMX_INLINE void AddRow(const float* __restrict src, int64_t n, int64_t stride,
                               float* __restrict dst) {
  if (stride == 1) {
    for (int64_t k = 0; k < n; ++k) dst[k] += src[k];
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k * stride] += src[k];
  }
}

BINMX_FLOAT_CLONES void MaskRange(const float* __restrict x, const float* dy, int64_t n,
                                  float grad_cancel, float* dx) {
  for (int64_t i = 0; i < n; ++i) dx[i] = std::fabs(x[i]) <= grad_cancel ? dy[i] : 0.0f;
}

BINMX_FLOAT_CLONES void SignRange(const float* __restrict x, int64_t n, float* __restrict out) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] < 0.0f ? -1.0f : 1.0f;  // NaN -> +1, as the bits
}

// Output columns [lo, hi) whose tap offset `off` (= j * dilate - pad) lands inside [0, in).
void ValidRange(int64_t out, int64_t in, int64_t stride, int64_t off, int64_t* lo, int64_t* hi) {
  int64_t l = 0, h = out;
  while (l < out && l * stride + off < 0) ++l;
  while (h > l && (h - 1) * stride + off >= in) --h;
  *lo = l;
  *hi = h;
}

// col[((c * kh + i) * kw + j) * ld + oy * ow + ox] = Q(xpad)[g * cg + c][..], one image.
BINMX_FLOAT_CLONES void Im2Col(const float* x_img, const Conv2dParams& p, int64_t g, InputQuant quant, float* col,
            int64_t ld) {
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
BINMX_FLOAT_CLONES void Col2ImAdd(const float* col, int64_t ld, const Conv2dParams& p, int64_t g, float* dx_img) {
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

// How a convolution call cuts the batch (see the file comment).
struct Plan {
  int64_t nb = 1;      // images per chunk
  int64_t chunks = 0;  // ceil(batch / nb)
  int parts = 1;       // parallel blocks of consecutive chunks
  int64_t ChunkBegin(int part) const { return chunks * part / parts; }
};

Plan MakePlan(const Conv2dParams& p, int threads, int64_t target_cols = kTargetCols) {
  Plan plan;
  const int64_t ohw = p.OutH() * p.OutW(), kdim = p.FilterSize();
  const int64_t per_thread = (p.batch + threads - 1) / threads;
  int64_t nb = (target_cols + ohw - 1) / ohw;
  nb = std::min(nb, std::max<int64_t>(1, kMaxColFloats / std::max<int64_t>(1, kdim * ohw)));
  nb = std::max<int64_t>(1, std::min(nb, per_thread));
  plan.nb = nb;
  plan.chunks = (p.batch + nb - 1) / nb;
  plan.parts = static_cast<int>(std::min<int64_t>(threads, plan.chunks));
  return plan;
}

// ---- shifted-GEMM backward (stride 1): no im2col, no col2im ----------------------------
//
// A chunk of nb images of one group is laid out with shared padding: each image plane has
// Hs = H + ph rows of Wq = W + pw floats (ph pad rows on top, pw pad columns on the left of
// every row; a row's right padding is the next row's left padding, an image's bottom padding
// the next image's top rows), planes of S = Hs * Wq floats back to back, then ph more pad rows
// and a tail. With dy stored in the same (n, row, col) grid (zeros outside OH x OW), the input
// value seen by output q = n * S + oy * Wq + ox through tap (i, j) sits at q + off(i, j),
// off = i * dh * Wq + j * dw, for every valid (oy, ox), so per tap
//   dW[:, :, tap] += dy (Fg x L) . X[:, off : off + L]^T          (L = nb * S)
//   dXs[:, off : off + L] += W[:, :, tap]^T (Cg x Fg) . dy          (beta = 1, in place)
// and dx is the interior of dXs. Positions outside the image or OH x OW meet dy = 0.
// It costs S / (OH * OW) times the GEMM work of im2col but skips writing and reading the
// kh*kw times larger col matrix; the choice between the two is ShiftPays().

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

bool ShiftPays(const Conv2dParams& p) {
  if (p.stride_h != 1 || p.stride_w != 1) return false;
  // Extra GEMM work of the shared-padding grid vs the im2col traffic, which costs about
  // kIm2colWork GEMM multiply-adds per col element (so relatively less for many filters).
  constexpr double kIm2colWork = 24.0;  // 16 sent the 16x16x128 ResNet layer to im2col (18% slower)
  const double waste = static_cast<double>((p.in_h + p.pad_h) * (p.in_w + p.pad_w)) /
                       static_cast<double>(p.OutH() * p.OutW());
  return waste <= 1.0 + kIm2colWork / static_cast<double>(p.GroupFilters());
}

// X[c][..] for images n0 .. n0+cnt of group g, channels-planar with shared padding.
BINMX_FLOAT_CLONES void FillShiftInput(const float* x, const Conv2dParams& p, const ShiftGeo& s, int64_t n0,
                    int64_t cnt, int64_t g, InputQuant quant, float* xs) {
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
BINMX_FLOAT_CLONES void FillShiftDy(const float* dy, const Conv2dParams& p, const ShiftGeo& s, int64_t n0,
                 int64_t cnt, int64_t g, float* d) {
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
          for (int64_t t = 0; t < taps; ++t) wt[((g * taps + t) * fg + fi) * cg + c] = wf[c * taps + t];
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
              const int64_t off = (t / p.kernel_w) * p.dilate_h * geo.wq + (t % p.kernel_w) * p.dilate_w;
              Gemm1(false, true, fg, cg, geo.len, 1.0f, d, geo.len, xs + off, geo.ld, 1.0f,
                    acc_p + (g * taps + t) * fg * cg, cg);
            }
          }
          if (dx) {
            std::fill(dxs, dxs + cg * geo.ld, 0.0f);
            for (int64_t t = 0; t < taps; ++t) {
              const int64_t off = (t / p.kernel_w) * p.dilate_h * geo.wq + (t % p.kernel_w) * p.dilate_w;
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

// ---- channels-last im2col backward: whole runs of Cg floats per (output pixel, tap) -------
//
// For small output maps the NCHW im2col above copies rows of a few floats (OW) per channel and
// tap, which costs far more than its bytes. Here a chunk of nb images of one group is first
// put channels last, so that each (output pixel, tap) of the col matrix is one run of Cg
// consecutive floats:
//   xt[(n, y, x)][c]     = Q(x)[n0 + n][g * Cg + c][y][x]                 (nb * H * W x Cg)
//   dyt[q][f]            = dy[n0 + n][g * Fg + f][oy][ox], q = (n, oy, ox) (P x Fg)
//   colt[q][t * Cg + c]  = xt[(n, iy, ix)][c], or pad_value outside the image (P x taps * Cg)
//   dW^T[t * Cg + c][f] += colt^T . dyt                                     (GEMM, K = P)
//   dcolt                = dyt . wt, wt[f][t * Cg + c] = w[g * Fg + f][c][t] (GEMM, K = Fg)
//   dxt[(n, iy, ix)][c] += dcolt[q][t * Cg + c] for the taps inside the image
// and dx is dxt transposed back (times the STE mask). Same chunks and blocks as the im2col path
// (MakePlan); each block owns its images' dx and its own dW^T accumulator. The valid taps of a
// kernel row are copied (and added back) as one run of taps * Cg floats (dilate_w = 1); dcolt
// lives in a per-thread buffer that stays all zeros between uses (the col2im clears each row
// after reading it), so its GEMM accumulates with beta = 1 and OpenBLAS does not clear the
// whole block first; the transposes use 16 x 16 AVX-512 tiles where available.

#if defined(BINMX_HAVE_TRANSPOSE16)
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

#endif

// Whether the channels-last transposes use the AVX-512 tiles: the CPU has AVX-512F and
// BINMX_ISA (the core's ISA cap, dispatch.cc) is unset or avx512, so tests can force the portable
// loops with BINMX_ISA=avx2 or scalar.
bool UseTranspose16() {
#if defined(BINMX_HAVE_TRANSPOSE16)
  if (!__builtin_cpu_supports("avx512f")) return false;
  const char* env = std::getenv("BINMX_ISA");
  return env == nullptr || *env == '\0' || std::strcmp(env, "avx512") == 0;
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
              ToChannelsLast(x + ((n0 + n) * p.channels + g * cg) * hw, cg, hw, cg, sign,
                             tile16, xt + n * hw * cg);
            }
            for (int64_t n = 0; n < cnt; ++n) {
              RowsIm2Col(xt + n * hw * cg, p, runs.data(), colt + n * ohw * kdim);
            }
            Gemm1(true, false, kdim, fg, rows, 1.0f, colt, kdim, dyt, fg,
                  ch == first ? 0.0f : 1.0f, acc_p + g * fg * kdim, fg);
          }
          if (dx) {
            // dcol is all zeros between uses (RowsCol2ImAdd clears what it read), so the GEMM
            // accumulates (beta = 1) instead of OpenBLAS clearing the whole block first.
            Gemm1(false, false, rows, kdim, fg, 1.0f, dyt, fg, wt + g * fg * kdim, kdim, 1.0f,
                  dcol, kdim);
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

void CheckConv(const float* x, const float* w, const Conv2dParams& p) {
  ValidateConv2dParams(p);
  Require(p.FilterSize() * p.OutH() * p.OutW() < (int64_t{1} << 31),
          "FloatConv2d: C/groups * kh * kw * OH * OW must be < 2^31");
  Require(p.batch == 0 || (x != nullptr && w != nullptr), "FloatConv2d: null pointer");
}

}  // namespace

void Sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc, int threads) {
  Require(m >= 0 && n >= 0 && k >= 0, "Sgemm: sizes must be >= 0");
  Require(lda >= (trans_a ? m : k) && ldb >= (trans_b ? k : n) && ldc >= n,
          "Sgemm: a leading dimension is smaller than its row");
  InitBlas();
  threads = Threads(threads);
  const int64_t work = m * n * k;
  int parts = static_cast<int>(std::min<int64_t>(threads, work / kMinSplitWork + 1));
  // Split the longer side of C into blocks of whole 16-element groups.
  const bool split_cols = n >= m;
  const int64_t side = split_cols ? n : m;
  parts = static_cast<int>(std::min<int64_t>(parts, (side + 15) / 16));
  if (parts <= 1) {
    Gemm1(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const int64_t groups = (side + 15) / 16;
  ParallelFor(parts, threads, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t s0 = std::min(side, groups * t / parts * 16);
      const int64_t s1 = std::min(side, groups * (t + 1) / parts * 16);
      if (s1 <= s0) continue;
      if (split_cols) {
        Gemm1(trans_a, trans_b, m, s1 - s0, k, alpha, a, lda, b + (trans_b ? s0 * ldb : s0), ldb,
              beta, c + s0, ldc);
      } else {
        Gemm1(trans_a, trans_b, s1 - s0, n, k, alpha, a + (trans_a ? s0 : s0 * lda), lda, b, ldb,
              beta, c + s0 * ldc, ldc);
      }
    }
  });
}

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
        for (int64_t s = 0; s < cnt; ++s) Im2Col(x + (n0 + s) * chw, p, g, quant, col + s * ohw, cols);
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

void FloatDenseForward(const float* x, InputQuant quant, const float* w, const float* alpha,
                       const float* bias, float* out, int64_t rows, int64_t depth,
                       int64_t hidden, int threads) {
  Require(rows >= 0 && depth > 0 && hidden > 0, "FloatDenseForward: bad sizes");
  if (rows == 0) return;
  Require(x != nullptr && w != nullptr && out != nullptr, "FloatDenseForward: null pointer");
  threads = Threads(threads);
  std::vector<float> xq;
  const float* xin = x;
  if (quant == InputQuant::kSign) {
    xq.resize(static_cast<size_t>(rows * depth));
    SignInto(x, rows * depth, xq.data(), threads);
    xin = xq.data();
  }
  Sgemm(false, true, rows, hidden, depth, 1.0f, xin, depth, w, depth, 0.0f, out, hidden, threads);
  if (alpha == nullptr && bias == nullptr) return;
  for (int64_t m = 0; m < rows; ++m) {
    float* o = out + m * hidden;
    for (int64_t h = 0; h < hidden; ++h) {
      o[h] = o[h] * (alpha ? alpha[h] : 1.0f) + (bias ? bias[h] : 0.0f);
    }
  }
}

void FloatDenseBackward(const float* x, InputQuant quant, const float* w, const float* dy,
                        const float* x_mask, float grad_cancel, float* dx, float* dw,
                        int64_t rows, int64_t depth, int64_t hidden, int threads,
                        InputQuant w_quant) {
  Require(rows >= 0 && depth > 0 && hidden > 0, "FloatDenseBackward: bad sizes");
  threads = Threads(threads);
  if (dx && rows > 0 && w_quant == InputQuant::kSign) {
    // dx = sum over blocks of hidden rows of dy[:, block] . sgn(w[block, :]): each block's
    // sgn(w) is made in a buffer that stays in cache while the GEMM reads it, instead of a
    // whole sgn(w) going out to memory and back (1024 -> 1000, 64 rows: 1.5 -> 1.2 ms, 1 thread;
    // 128 rows measured best of 32..1000). With several threads, each takes a slice of dx's
    // columns (whole 16-column groups, as Sgemm) and runs its own blocks: one parallel region.
    constexpr int64_t kBlockRows = 128;
    InitBlas();
    const int64_t groups = (depth + 15) / 16;
    const int parts = static_cast<int>(std::min<int64_t>(
        {threads, rows * depth * hidden / kMinSplitWork + 1, groups}));
    ParallelFor(parts, threads, [&](int64_t begin, int64_t end) {
      for (int64_t part = begin; part < end; ++part) {
        const int64_t d0 = std::min(depth, groups * part / parts * 16);
        const int64_t d1 = std::min(depth, groups * (part + 1) / parts * 16);
        const int64_t dd = d1 - d0;
        if (dd <= 0) continue;
        const int64_t block =
            std::min(hidden, std::max<int64_t>(1, std::min(kBlockRows, kMaxColFloats / dd)));
        float* wq = Buffers().col.Get(block * dd);
        for (int64_t h0 = 0; h0 < hidden; h0 += block) {
          const int64_t hb = std::min(block, hidden - h0);
          if (dd == depth) {
            SignRange(w + h0 * depth, hb * depth, wq);
          } else {
            for (int64_t h = 0; h < hb; ++h) SignRange(w + (h0 + h) * depth + d0, dd, wq + h * dd);
          }
          Gemm1(false, false, rows, dd, hb, 1.0f, dy + h0, hidden, wq, dd,
                h0 == 0 ? 0.0f : 1.0f, dx + d0, depth);
        }
        if (x_mask) {
          for (int64_t r = 0; r < rows; ++r) {
            float* dr = dx + r * depth + d0;
            MaskRange(x_mask + r * depth + d0, dr, dd, grad_cancel, dr);
          }
        }
      }
    });
  } else if (dx && rows > 0) {
    Sgemm(false, false, rows, depth, hidden, 1.0f, dy, hidden, w, depth, 0.0f, dx, depth,
          threads);
    if (x_mask) SteMask(x_mask, dx, rows * depth, grad_cancel, dx, threads);
  }
  if (dw) {
    std::vector<float> xq;
    const float* xin = x;
    if (quant == InputQuant::kSign && rows > 0) {
      xq.resize(static_cast<size_t>(rows * depth));
      SignInto(x, rows * depth, xq.data(), threads);
      xin = xq.data();
    }
    Sgemm(true, false, hidden, depth, rows, 1.0f, dy, hidden, xin, depth, 0.0f, dw, depth,
          threads);
  }
}

void BiasGrad(const float* dy, int64_t batch, int64_t channels, int64_t inner, float* db,
              int threads) {
  Require(batch >= 0 && channels >= 0 && inner >= 0, "BiasGrad: bad sizes");
  threads = Threads(threads);
  if (inner == 1) {
    // Dense layer: dy is batch rows of `channels` values; sum down the rows, a block of
    // channels at a time (the same double sums in the same order as below, vectorised over f).
    constexpr int64_t kBlock = 256;
    const int64_t blocks = (channels + kBlock - 1) / kBlock;
    const int64_t tasks =
        batch * channels >= (int64_t{1} << 16) ? blocks : std::min<int64_t>(blocks, 1);
    ParallelFor(tasks, threads, [&](int64_t begin, int64_t end) {
      const int64_t b0 = tasks == blocks ? begin : 0, b1 = tasks == blocks ? end : blocks;
      double acc[kBlock];
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t f0 = b * kBlock, fn = std::min(kBlock, channels - f0);
        for (int64_t f = 0; f < fn; ++f) acc[f] = 0.0;
        for (int64_t n = 0; n < batch; ++n) {
          const float* row = dy + n * channels + f0;
          for (int64_t f = 0; f < fn; ++f) acc[f] += double{row[f]};
        }
        for (int64_t f = 0; f < fn; ++f) db[f0 + f] = static_cast<float>(acc[f]);
      }
    });
    return;
  }
  const int64_t tasks = batch * inner >= 4096 ? channels : (channels > 0 ? 1 : 0);
  ParallelFor(tasks, threads, [&](int64_t begin, int64_t end) {
    const bool all = tasks == 1;
    for (int64_t f = all ? 0 : begin; f < (all ? channels : end); ++f) {
      double s = 0.0;
      for (int64_t n = 0; n < batch; ++n) {
        const float* src = dy + (n * channels + f) * inner;
        float part = 0.0f;  // per-row float partial: vectorises; rows are short
        for (int64_t q = 0; q < inner; ++q) part += src[q];
        s += part;
      }
      db[f] = static_cast<float>(s);
    }
  });
}

namespace {

// fn(i0, i1) over [0, n) in blocks of 64 Ki elements, in parallel.
template <typename Fn>
void ElementwiseBlocks(int64_t n, int threads, Fn&& fn) {
  if (n <= 0) return;
  constexpr int64_t kBlock = 1 << 16;
  ParallelFor((n + kBlock - 1) / kBlock, Threads(threads), [&](int64_t begin, int64_t end) {
    fn(begin * kBlock, std::min(n, end * kBlock));
  });
}

}  // namespace

void SteMask(const float* x, const float* dy, int64_t n, float grad_cancel, float* dx,
             int threads) {
  ElementwiseBlocks(n, threads, [&](int64_t i0, int64_t i1) {
    MaskRange(x + i0, dy + i0, i1 - i0, grad_cancel, dx + i0);
  });
}

void SignInto(const float* x, int64_t n, float* out, int threads) {
  ElementwiseBlocks(n, threads, [&](int64_t i0, int64_t i1) {
    SignRange(x + i0, i1 - i0, out + i0);
  });
}

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

void ChannelAffine(const float* x, int64_t batch, int64_t channels, int64_t inner,
                   const float* scale, const float* shift, bool relu, float* out, int threads) {
  if (batch <= 0 || channels <= 0 || inner <= 0) return;
  ParallelFor(batch * channels, Threads(threads), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float s = scale[t % channels], h = shift[t % channels];
      const float* xi = x + t * inner;
      float* yo = out + t * inner;
      if (relu) {
#pragma omp simd
        for (int64_t i = 0; i < inner; ++i) {
          const float v = xi[i] * s + h;
          yo[i] = v < 0.0f ? 0.0f : v;
        }
      } else {
#pragma omp simd
        for (int64_t i = 0; i < inner; ++i) yo[i] = xi[i] * s + h;
      }
    }
  });
}

void ChannelAffineBackward(const float* dy, const float* x, const float* out, int64_t batch,
                           int64_t channels, int64_t inner, const float* scale, bool relu,
                           float* dx, float* dscale, float* dshift, int threads) {
  if (batch <= 0 || channels <= 0 || inner <= 0) return;
  // One task per channel: its sums run over every image, so no two tasks share an output.
  ParallelFor(channels, Threads(threads), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double ss = 0.0, sh = 0.0;
      for (int64_t n = 0; n < batch; ++n) {
        const int64_t off = (n * channels + c) * inner;
        for (int64_t i = 0; i < inner; ++i) {
          if (relu && !(out[off + i] > 0.0f)) {  // masked: no contribution, even from NaN
            if (dx != nullptr) dx[off + i] = 0.0f;
            continue;
          }
          const float g = dy[off + i];
          if (dx != nullptr) dx[off + i] = g * scale[c];
          ss += static_cast<double>(g) * x[off + i];
          sh += g;
        }
      }
      if (dscale != nullptr) dscale[c] = static_cast<float>(ss);
      if (dshift != nullptr) dshift[c] = static_cast<float>(sh);
    }
  });
}

}  // namespace binmx

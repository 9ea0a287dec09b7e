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
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "cblas.h"
#include "parallel.h"
#include "xnor_gemm.h"

namespace binmx {

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(BINMX_NO_TARGET_CLONES)
#define BINMX_FLOAT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BINMX_FLOAT_CLONES
#endif

constexpr int64_t kTargetCols = 1024;          // GEMM columns per chunk worth aiming for
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

struct ThreadBuffers {
  Scratch col, dy, tmp;
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

// dst[k] = Q(src[k * stride]) for k < n.
BINMX_FLOAT_CLONES void CopyRow(const float* __restrict src, int64_t stride, int64_t n, bool sign,
                                float* __restrict dst) {
  if (stride == 1) {
    if (sign) {
      for (int64_t k = 0; k < n; ++k) dst[k] = src[k] >= 0.0f ? 1.0f : -1.0f;
    } else {
      std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(n));
    }
    return;
  }
  if (sign) {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[k * stride] >= 0.0f ? 1.0f : -1.0f;
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[k * stride];
  }
}

// dst[k * stride] += src[k] for k < n.
BINMX_FLOAT_CLONES void AddRow(const float* __restrict src, int64_t n, int64_t stride,
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
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] >= 0.0f ? 1.0f : -1.0f;
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
void Im2Col(const float* x_img, const Conv2dParams& p, int64_t g, InputQuant quant, float* col,
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
void Col2ImAdd(const float* col, int64_t ld, const Conv2dParams& p, int64_t g, float* dx_img) {
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

Plan MakePlan(const Conv2dParams& p, int threads) {
  Plan plan;
  const int64_t ohw = p.OutH() * p.OutW(), kdim = p.FilterSize();
  const int64_t per_thread = (p.batch + threads - 1) / threads;
  int64_t nb = (kTargetCols + ohw - 1) / ohw;
  nb = std::min(nb, std::max<int64_t>(1, kMaxColFloats / std::max<int64_t>(1, kdim * ohw)));
  nb = std::max<int64_t>(1, std::min(nb, per_thread));
  plan.nb = nb;
  plan.chunks = (p.batch + nb - 1) / nb;
  plan.parts = static_cast<int>(std::min<int64_t>(threads, plan.chunks));
  return plan;
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

std::string BlasConfig() {
  const char* s = scipy_openblas_get_config();
  return s ? s : "";
}

std::string BlasCoreName() {
  const char* s = scipy_openblas_get_corename();
  return s ? s : "";
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
  if (dw) std::fill(dw, dw + w_size, 0.0f);
  if (p.batch == 0) return;
  Require(dy != nullptr, "FloatConv2dBackward: null dy");
  InitBlas();
  threads = Threads(threads);
  const Plan plan = MakePlan(p, threads);
  // dW accumulators: block 0 writes dw itself, the others their own slices, summed in order.
  std::vector<float> dw_extra(dw ? static_cast<size_t>((plan.parts - 1) * w_size) : 0, 0.0f);
  ParallelFor(plan.parts, threads, [&](int64_t begin, int64_t end) {
    ThreadBuffers& buf = Buffers();
    float* col = buf.col.Get(kdim * plan.nb * ohw);
    float* dyc = plan.nb > 1 ? buf.dy.Get(fg * plan.nb * ohw) : nullptr;
    for (int64_t part = begin; part < end; ++part) {
      float* acc = dw == nullptr ? nullptr
                   : part == 0   ? dw
                                 : dw_extra.data() + (part - 1) * w_size;
      for (int64_t ch = plan.ChunkBegin(static_cast<int>(part));
           ch < plan.ChunkBegin(static_cast<int>(part + 1)); ++ch) {
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
          if (acc) {
            for (int64_t s = 0; s < cnt; ++s) {
              Im2Col(x + (n0 + s) * chw, p, g, quant, col + s * ohw, cols);
            }
            Gemm1(false, true, fg, kdim, cols, 1.0f, dyg, lddy, col, cols, 1.0f, acc + g * fg * kdim,
                  kdim);
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
    for (int part = 1; part < plan.parts; ++part) {
      const float* src = dw_extra.data() + (part - 1) * w_size;
      for (int64_t i = 0; i < w_size; ++i) dw[i] += src[i];
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
                        int64_t rows, int64_t depth, int64_t hidden, int threads) {
  Require(rows >= 0 && depth > 0 && hidden > 0, "FloatDenseBackward: bad sizes");
  threads = Threads(threads);
  if (dx && rows > 0) {
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

void SteMask(const float* x, const float* dy, int64_t n, float grad_cancel, float* dx,
             int threads) {
  if (n <= 0) return;
  threads = Threads(threads);
  constexpr int64_t kBlock = 1 << 16;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  ParallelFor(blocks, threads, [&](int64_t begin, int64_t end) {
    const int64_t i0 = begin * kBlock, i1 = std::min(n, end * kBlock);
    MaskRange(x + i0, dy + i0, i1 - i0, grad_cancel, dx + i0);
  });
}

void SignInto(const float* x, int64_t n, float* out, int threads) {
  if (n <= 0) return;
  threads = Threads(threads);
  constexpr int64_t kBlock = 1 << 16;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  ParallelFor(blocks, threads, [&](int64_t begin, int64_t end) {
    const int64_t i0 = begin * kBlock, i1 = std::min(n, end * kBlock);
    SignRange(x + i0, i1 - i0, out + i0);
  });
}

}  // namespace binmx

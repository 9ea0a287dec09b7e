/*
 * binmx core: the direct int8 convolution for few input channels (the 8-bit stem: 3 channels,
 * 7x7/2, 64 filters), with an optional relu and max-pool fused (docs/design.md §3). Formulas:
 * kbit.h; kernel contract: kbit_direct_kernels.h. ISA-neutral, base flags.
 *
 * KbitConv2d and KbitConv2dReluPool take it when KbitDirectApplies (int8 path, groups 1,
 * dilate_w 1, pad_value 0 or +1, C * kw <= 64, depth <= kDirectMaxDepth):
 * 1. each image is quantised into padded channels-last levels (the padding stored as the level
 *    pad_value * A), so that an im2col row is kh copies of kw * C contiguous bytes: no bounds
 *    tests, no padding correction, no per-tap bookkeeping;
 * 2. tasks (image, band of output rows) on ParallelFor; per conv output row the row kernel
 *    gives the exact D = sum la * mw of every pixel and filter (int32);
 * 3. no pool: the epilogue float(double(D) * ds[f]) + bias[f] (then relu) writes the NCHW row.
 *    Max pool: e(D) = float(double(D) * ds[f]) + bias[f] is non-decreasing in D where
 *    ds[f] >= 0 and non-increasing where ds[f] < 0 (a product with a constant, two roundings
 *    and the add of a constant are monotone; with finite ds and bias no NaN), so the maximum of
 *    e over a window is e(max D) or e(min D). The maxima are taken on the integers s_f D
 *    (s_f = -1 where ds[f] < 0, else 1): along x after each chunk of a conv row (the row kept
 *    in a ring of kernel_h rows), then across the window's rows; the epilogue runs once per pooled
 * output (a quarter of the conv outputs for a 3x3/2 pool). relu(max) = max(relu), as for the float
 * layers. The result equals the unfused layers' as values (==; without relu a zero's sign may
 *    differ). Non-finite alpha or bias: the convolution, then the float pool (a NaN wins).
 * Results depend neither on the ISA nor on the thread count: integers until the epilogue,
 * which is the same per value everywhere.
 */
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "kbit.h"
#include "kbit_direct_kernels.h"
#include "parallel.h"
#include "scratch.h"

namespace binmx {

namespace internal {
namespace {

constexpr int64_t kDirectMaxDepth = 4096;  // |D| <= 4096 * 255 * 255 < 2^31

void Require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

bool CpuHasVnni() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

struct DirectPath {
  KbitSpec kbit;
  KbitDirectSpec direct;
};

DirectPath DirectPathFor(Isa isa, bool quad_weights) {
  DirectPath dp{KbitFor(isa), ScalarKbitDirect()};
#ifdef BINMX_BUILT_AVX512
  if (isa == Isa::kAvx512) {
    dp.direct = Avx512KbitDirect();
    if (!quad_weights || !CpuHasVnni()) dp.direct.row = nullptr;
  }
#else
  (void)quad_weights;
#endif
  return dp;
}

// The row of kbit_direct_kernels.h on any int8 tile (kQuad or kPair weights): rows built with
// memcpy, L by the path's RowSum, R by its tile, in chunks of kDirectChunk pixels.
void GenericRow(const DirectRowArgs& a, int64_t oy, int64_t ox_begin, int64_t ox_end, uint8_t* rows,
                int32_t* d, const KbitSpec& spec) {
  thread_local Scratch<int32_t> r_s;
  int32_t* r = r_s.Get(static_cast<size_t>(kDirectChunk * a.fs));
  const int64_t seg = a.kw * a.c, depth = a.kh * seg, rb = a.kq * 4;
  int64_t l[kDirectChunk];
  for (int64_t ox0 = ox_begin; ox0 < ox_end; ox0 += kDirectChunk) {
    const int64_t np = std::min(kDirectChunk, ox_end - ox0);
    for (int64_t pi = 0; pi < np; ++pi) {
      uint8_t* row = rows + pi * rb;
      for (int64_t i = 0; i < a.kh; ++i) {
        const uint8_t* src = a.img + ((oy * a.sh + i * a.dh) * a.wp + (ox0 + pi) * a.sw) * a.c;
        std::memcpy(row + i * seg, src, static_cast<size_t>(seg));
      }
      std::memset(row + depth, 0, static_cast<size_t>(rb - depth));
      l[pi] = spec.row_sum(row, depth);
    }
    spec.int8(reinterpret_cast<const uint32_t*>(rows), np, a.kq, a.w, a.fs, a.fs, r, a.fs);
    for (int64_t pi = 0; pi < np; ++pi) {
      int32_t* dst = d + (ox0 + pi) * a.fs;
      const int64_t base = a.coff * l[pi];
      for (int64_t f = 0; f < a.fs; ++f) {
        const int32_t v = static_cast<int32_t>(2 * int64_t{r[pi * a.fs + f]} + base);
        dst[f] = a.neg != nullptr ? (v ^ a.neg[f]) - a.neg[f] : v;
      }
    }
  }
}

int64_t PoolOutSize(int64_t in, int64_t k, int64_t s, int64_t pad, bool full) {
  const int64_t span = in + 2 * pad - k;
  return full ? 1 + (span + s - 1) / s : 1 + span / s;
}

// relu as the Activation layer computes it (NaN kept).
inline float Relu(float v) { return v > 0.0f ? v : (v == v ? 0.0f : v); }
// The max of a Pooling window as that layer takes it: a NaN wins.
inline float MaxNan(float m, float v) { return (v > m || v != v) ? v : m; }

// relu (when asked) then MXNet's max Pooling of (planes, h, w) floats into (planes, ph, pw): a
// window clipped to the image (padding never wins), a NaN wins, an empty window gives -inf
// (without relu); per pooled row the column maxima over the window's rows, then along the row.
void FloatReluMaxPool(const float* x, int64_t planes, int64_t h, int64_t w, const KbitMaxPool& ps,
                      int64_t ph, int64_t pw, bool relu, float* y, int threads) {
  ParallelFor(planes, threads, [&](int64_t b, int64_t e) {
    thread_local Scratch<float> colmax_s;
    float* cm = colmax_s.Get(static_cast<size_t>(w));
    for (int64_t pl = b; pl < e; ++pl) {
      const float* xp = x + pl * h * w;
      float* yp = y + pl * ph * pw;
      // Without a NaN in the plane max(m, v) = v > m ? v : m (vectorised); with one, the
      // NaN-aware form.
      unsigned nan_seen = 0;
      for (int64_t i = 0; i < h * w; ++i) nan_seen |= static_cast<unsigned>(xp[i] != xp[i]);
      const bool nan = nan_seen != 0;
      for (int64_t oy = 0; oy < ph; ++oy) {
        const int64_t y0 = std::max<int64_t>(oy * ps.stride_h - ps.pad_h, 0);
        const int64_t y1 = std::min(oy * ps.stride_h - ps.pad_h + ps.kernel_h, h);
        std::fill(cm, cm + w, -INFINITY);
        for (int64_t yy = y0; yy < y1; ++yy) {
          const float* row = xp + yy * w;
          if (nan) {
            for (int64_t xx = 0; xx < w; ++xx) cm[xx] = MaxNan(cm[xx], row[xx]);
          } else {
            for (int64_t xx = 0; xx < w; ++xx) cm[xx] = row[xx] > cm[xx] ? row[xx] : cm[xx];
          }
        }
        for (int64_t ox = 0; ox < pw; ++ox) {
          const int64_t x0 = std::max<int64_t>(ox * ps.stride_w - ps.pad_w, 0);
          const int64_t x1 = std::min(ox * ps.stride_w - ps.pad_w + ps.kernel_w, w);
          float m = -INFINITY;
          for (int64_t xx = x0; xx < x1; ++xx) m = MaxNan(m, cm[xx]);
          yp[oy * pw + ox] = relu && y0 < y1 && x0 < x1 ? Relu(m) : m;
        }
      }
    }
  });
}

void CheckCall(const KbitWeights& w, const Conv2dParams& p, const GemmConfig& config,
               const char* fn) {
  ValidateConv2dParams(p);
  Require(w.path != KbitPath::kNone, std::string(fn) + ": weights are not prepared");
  Require(config.isa == w.isa, std::string(fn) + ": config.isa (" + IsaName(config.isa) +
                                   ") differs from the ISA the weights were prepared for (" +
                                   IsaName(w.isa) + ")");
  RequireIsa(config.isa);
  Require(p.groups == w.groups && p.GroupFilters() == w.filters_per_group &&
              p.GroupChannels() == w.group_channels && p.kernel_h * p.kernel_w == w.taps,
          std::string(fn) + ": the geometry differs from the one the weights were prepared for");
}

}  // namespace

bool DirectApplies(const KbitWeights& w, const Conv2dParams& p) {
  return w.path == KbitPath::kInt8 && p.groups == 1 && p.dilate_w == 1 &&
         (p.pad_value == 0 || p.pad_value == 1) && p.channels * p.kernel_w <= 64 &&
         w.depth <= kDirectMaxDepth && w.group_channels == p.channels &&
         w.taps == p.kernel_h * p.kernel_w;
}

void DirectConv2d(const KbitArgs& args, const KbitWeights& w, const Conv2dParams& p, bool relu,
                  const KbitMaxPool* pool, int threads) {
  const DirectPath path = DirectPathFor(w.isa, !w.pairs);
  const int64_t n_img = p.batch, c = p.channels, h = p.in_h, wd = p.in_w;
  const int64_t hp = h + 2 * p.pad_h, wp = wd + 2 * p.pad_w;
  const int64_t oh = p.OutH(), ow = p.OutW(), f_all = p.num_filter, fs = w.f_pad;
  const int ka = w.act_bit;
  const int64_t a_max = (int64_t{1} << ka) - 1, b_max = (int64_t{1} << w.weight_bit) - 1;
  const int64_t img_used = hp * wp * c;
  const int64_t img_bytes = RoundUp(img_used + kDirectSlack, 64);

  // 1. Levels into padded channels-last images, one task per (image, padded row).
  thread_local Scratch<uint8_t> img_s;
  uint8_t* imgs = img_s.Get(static_cast<size_t>(n_img * img_bytes));
  const int pad_level = p.pad_value == 1 ? static_cast<int>(a_max) : 0;
  const DirectLevelsFn levels =
      c <= 4 && path.direct.levels != nullptr ? path.direct.levels : path.kbit.levels_nhwc;
  ParallelFor(n_img * hp, threads, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / hp, y = t % hp;
      uint8_t* img = imgs + n * img_bytes;
      uint8_t* row = img + y * wp * c;
      if (y < p.pad_h || y >= p.pad_h + h) {
        std::memset(row, pad_level, static_cast<size_t>(wp * c));
      } else {
        std::memset(row, pad_level, static_cast<size_t>(p.pad_w * c));
        levels(args.x + (n * c * h + (y - p.pad_h)) * wd, c, h * wd, wd, ka, row + p.pad_w * c);
        std::memset(row + (p.pad_w + wd) * c, pad_level, static_cast<size_t>(p.pad_w * c));
      }
      if (y == hp - 1) std::memset(img + img_used, 0, static_cast<size_t>(img_bytes - img_used));
    }
  });

  // Per filter: ds = alpha / (A * B) in double and the sign mask for pooling.
  std::vector<double> ds(static_cast<size_t>(fs), 0.0);
  std::vector<int32_t> neg(static_cast<size_t>(fs), 0);
  const double denom = static_cast<double>(a_max * b_max);
  for (int64_t f = 0; f < f_all; ++f) {
    ds[f] = (args.alpha ? static_cast<double>(args.alpha[f]) : 1.0) / denom;
    neg[f] = ds[f] < 0.0 ? -1 : 0;
  }
  const float* bias_p = args.bias;

  // 2-3. Tasks: (image, band of output rows: conv rows, or pooled rows).
  int64_t pool_h = 0, pool_w = 0;
  if (pool != nullptr) {
    pool_h = PoolOutSize(oh, pool->kernel_h, pool->stride_h, pool->pad_h, pool->full_convention);
    pool_w = PoolOutSize(ow, pool->kernel_w, pool->stride_w, pool->pad_w, pool->full_convention);
  }
  const int64_t units = pool != nullptr ? pool_h : oh;
  int64_t bands = 1;
  if (threads > 1) {
    bands = std::min(units, std::max<int64_t>(1, (2 * threads + n_img - 1) / n_img));
  }
  bool x_empty = false;  // a pooled column whose window lies in the padding (full convention)
  for (int64_t px = 0; pool != nullptr && px < pool_w; ++px) {
    x_empty = x_empty || std::max<int64_t>(px * pool->stride_w - pool->pad_w, 0) >=
                             std::min(px * pool->stride_w - pool->pad_w + pool->kernel_w, ow);
  }
  DirectRowArgs ra;
  ra.wp = wp;
  ra.c = c;
  ra.kh = p.kernel_h;
  ra.kw = p.kernel_w;
  ra.sh = p.stride_h;
  ra.sw = p.stride_w;
  ra.dh = p.dilate_h;
  ra.w = w.packed.data();
  ra.kq = w.units;
  ra.fs = fs;
  ra.coff = 256 - b_max;
  ra.neg = pool != nullptr ? neg.data() : nullptr;
  const size_t rows_bytes = static_cast<size_t>(kDirectChunk * w.units * 4 + kDirectSlack);

  ParallelFor(n_img * bands, threads, [&](int64_t b, int64_t e) {
    thread_local Scratch<uint8_t> rows_s;
    thread_local Scratch<int32_t> d_s, ring_s, acc_s;
    uint8_t* rows = rows_s.Get(rows_bytes);
    int32_t* dbuf = d_s.Get(static_cast<size_t>(ow * fs));
    for (int64_t task = b; task < e; ++task) {
      const int64_t n = task / bands, band = task % bands;
      const int64_t u0 = units * band / bands, u1 = units * (band + 1) / bands;
      DirectRowArgs a = ra;
      a.img = imgs + n * img_bytes;
      auto conv_part = [&](int64_t oy, int64_t ox0, int64_t ox1) {
        if (path.direct.row != nullptr) {
          path.direct.row(a, oy, ox0, ox1, rows, dbuf);
        } else {
          GenericRow(a, oy, ox0, ox1, rows, dbuf, path.kbit);
        }
      };
      if (pool == nullptr) {
        for (int64_t oy = u0; oy < u1; ++oy) {
          conv_part(oy, 0, ow);
          if (args.out_dot != nullptr) {
            int32_t* dst = args.out_dot + n * f_all * oh * ow + oy * ow;
            for (int64_t f = 0; f < f_all; ++f) {
              for (int64_t ox = 0; ox < ow; ++ox) dst[f * oh * ow + ox] = dbuf[ox * fs + f];
            }
          } else {
            path.direct.epilogue(dbuf, ow, f_all, fs, nullptr, ds.data(), bias_p, relu,
                                 args.out + n * f_all * oh * ow + oy * ow, oh * ow);
          }
        }
        continue;
      }
      const KbitMaxPool& ps = *pool;
      const int64_t hrow = pool_w * fs;
      int32_t* ring = ring_s.Get(static_cast<size_t>(ps.kernel_h * hrow));
      int32_t* acc = acc_s.Get(static_cast<size_t>(hrow));
      std::vector<int64_t> tag(static_cast<size_t>(ps.kernel_h), -1);
      std::vector<const int32_t*> win(static_cast<size_t>(ps.kernel_h));
      const int64_t os = pool_h * pool_w;
      for (int64_t py = u0; py < u1; ++py) {
        float* orow = args.out + n * f_all * os + py * pool_w;
        const int64_t y0 = std::max<int64_t>(py * ps.stride_h - ps.pad_h, 0);
        const int64_t y1 = std::min(py * ps.stride_h - ps.pad_h + ps.kernel_h, oh);
        if (y0 >= y1) {  // the window lies in the padding: -inf, as Pooling
          for (int64_t f = 0; f < f_all; ++f)
            std::fill(orow + f * os, orow + f * os + pool_w, -INFINITY);
          continue;
        }
        for (int64_t y = y0; y < y1; ++y) {
          const int64_t slot = y % ps.kernel_h;
          if (tag[slot] == y) continue;
          int32_t* hp_row = ring + slot * hrow;
          if (x_empty) std::fill(hp_row, hp_row + hrow, 0);
          // The conv row in chunks, each followed by the x-maxima of the windows it completes
          // (the chunk's D still in L1).
          int64_t px0 = 0;
          for (int64_t ox0 = 0; ox0 < ow; ox0 += kDirectChunk) {
            const int64_t ox1 = std::min(ow, ox0 + kDirectChunk);
            conv_part(y, ox0, ox1);
            int64_t px1 = px0;
            while (px1 < pool_w &&
                   (ox1 == ow || px1 * ps.stride_w - ps.pad_w + ps.kernel_w <= ox1)) {
              ++px1;
            }
            path.direct.hmax(dbuf, ow, fs, ps.kernel_w, ps.stride_w, ps.pad_w, px0, px1, hp_row);
            px0 = px1;
          }
          tag[slot] = y;
        }
        for (int64_t y = y0; y < y1; ++y) win[y - y0] = ring + (y % ps.kernel_h) * hrow;
        path.direct.vmax(win.data(), y1 - y0, hrow, acc);
        path.direct.epilogue(acc, pool_w, f_all, fs, neg.data(), ds.data(), bias_p, relu, orow, os);
        if (x_empty) {
          for (int64_t px = 0; px < pool_w; ++px) {
            const int64_t x0 = std::max<int64_t>(px * ps.stride_w - ps.pad_w, 0);
            const int64_t x1 = std::min(px * ps.stride_w - ps.pad_w + ps.kernel_w, ow);
            if (x0 >= x1) {
              for (int64_t f = 0; f < f_all; ++f) orow[f * os + px] = -INFINITY;
            }
          }
        }
      }
    }
  });
}

}  // namespace internal

bool KbitDirectApplies(const KbitWeights& w, const Conv2dParams& p) {
  return internal::DirectApplies(w, p);
}

void KbitConv2dReluPool(const KbitArgs& args, const KbitWeights& w, const Conv2dParams& p,
                        bool relu, const KbitMaxPool* pool, const GemmConfig& config) {
  using internal::Require;
  if (!relu && pool == nullptr) {
    KbitConv2d(args, w, p, config);
    return;
  }
  internal::CheckCall(w, p, config, "KbitConv2dReluPool");
  Require(args.x != nullptr && args.out != nullptr && args.out_dot == nullptr,
          "KbitConv2dReluPool: x and out are required (out_dot is not supported)");
  const int64_t oh = p.OutH(), ow = p.OutW();
  int64_t ph = 0, pw = 0;
  if (pool != nullptr) {
    const KbitMaxPool& q = *pool;
    Require(
        q.kernel_h >= 1 && q.kernel_w >= 1 && q.stride_h >= 1 && q.stride_w >= 1 && q.pad_h >= 0 &&
            q.pad_w >= 0 && q.kernel_h <= oh + 2 * q.pad_h && q.kernel_w <= ow + 2 * q.pad_w,
        "KbitConv2dReluPool: bad max pool (kernel " + std::to_string(q.kernel_h) + "x" +
            std::to_string(q.kernel_w) + ", stride " + std::to_string(q.stride_h) + "x" +
            std::to_string(q.stride_w) + ", pad " + std::to_string(q.pad_h) + "x" +
            std::to_string(q.pad_w) + ") for a " + std::to_string(oh) + "x" + std::to_string(ow) +
            " convolution output: kernel and stride >= 1, pad >= 0, kernel <= size + 2 pad");
    ph = internal::PoolOutSize(oh, q.kernel_h, q.stride_h, q.pad_h, q.full_convention);
    pw = internal::PoolOutSize(ow, q.kernel_w, q.stride_w, q.pad_w, q.full_convention);
  }
  if (p.batch == 0) return;
  const int threads = config.threads > 0 ? config.threads : DefaultThreads();
  bool finite = true;
  for (int64_t f = 0; f < p.num_filter; ++f) {
    if (args.alpha != nullptr) finite = finite && std::isfinite(args.alpha[f]);
    if (args.bias != nullptr) finite = finite && std::isfinite(args.bias[f]);
  }
  if (internal::DirectApplies(w, p) && (pool == nullptr || finite)) {
    internal::DirectConv2d(args, w, p, relu, pool, threads);
    return;
  }
  const int64_t planes = p.batch * p.num_filter;
  if (pool == nullptr) {
    KbitConv2d(args, w, p, config);
    float* y = args.out;
    ParallelFor(planes, threads, [&](int64_t b, int64_t e) {
      for (int64_t i = b * oh * ow; i < e * oh * ow; ++i) y[i] = internal::Relu(y[i]);
    });
    return;
  }
  thread_local internal::Scratch<float> conv_s;
  KbitArgs a = args;
  a.out = conv_s.Get(static_cast<size_t>(planes * oh * ow));
  KbitConv2d(a, w, p, config);
  internal::FloatReluMaxPool(a.out, planes, oh, ow, *pool, ph, pw, relu, args.out, threads);
}

}  // namespace binmx

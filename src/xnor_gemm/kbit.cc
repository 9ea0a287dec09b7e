/*
 * binmx core: driver of the integer k-bit convolution and dense layer (formulas in kbit.h,
 * kernel contract in kbit_kernels.h). ISA-neutral, base flags. A bit-serial convolution whose
 * weights were prepared for the direct path (internal::UseBitSerialDirect) goes to bsconv.cc
 * instead; everything below is the im2col path of the others.
 *
 * 1. Levels: the NCHW input is quantised into channels-last u8 levels lv[n][y][x][c] in one
 *    vectorised pass (16 x 16 byte transposes). (Dense: the (rows, depth) input already is
 *    channels-last.)
 * 2. Tasks (image, group, chunk of kPixChunk output pixels, chunk of filters), on ParallelFor.
 *    A task builds the im2col rows of its pixels, row[(i * kw + j) * Cg + c'] = lv at tap (i, j)
 *    or 0 outside the image, with L[p] = the sum of the row, then
 *      bit-serial: the rows' bit planes (PlanesFn), the tile R = sum la * lw, D = 2R - B L;
 *      int8:       the rows as they are (4 levels a 32-bit word), R = sum la (lw - 128),
 *                  D = 2R + (256 - B) L;
 *    plus, for pad_value +-1 and a pixel with padded taps, corr[p][f] = pad_value * A *
 *    sum over its padded taps of tap_sums[f][tap]. The epilogue writes float(D * ds[f]) + bias
 *    to NCHW (conv; 8 x 8 transposes) or to (rows, filters) (dense).
 * Every value is an exact integer until D * ds, so results do not depend on the ISA, the
 * chunking or the thread count.
 */
#include "kbit.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "kbit_direct_kernels.h"
#include "bsconv_kernels.h"
#include "kbit_kernels.h"
#include "parallel.h"
#include "scratch.h"

namespace binmx {

namespace internal {

KbitSpec KbitFor(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      break;
    case Isa::kAvx2:
#ifdef BINMX_BUILT_AVX2
      return Avx2Kbit();
#else
      break;
#endif
    case Isa::kAvx512:
#ifdef BINMX_BUILT_AVX512
    {
      KbitSpec s = Avx512Kbit();
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
      __builtin_cpu_init();
      const bool vnni = __builtin_cpu_supports("avx512vnni");
#else
      const bool vnni = false;
#endif
      if (!vnni) {
        const KbitSpec a = Avx2Kbit();  // every AVX-512 build also builds AVX2
        s.int8 = a.int8;
        s.int8_format = a.int8_format;
      }
      return s;
    }
#else
      break;
#endif
    case Isa::kNeon:  // no NEON k-bit kernel yet: the portable one
      break;
  }
  return ScalarKbit();
}

}  // namespace internal

namespace {

using internal::Int8Format;
using internal::KbitSpec;

constexpr int64_t kPixChunk = 64;

void Require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

using internal::Scratch;

int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// memcpy of n bytes without a library call for the short runs of im2col (a 7x7 stem copies
// 21 bytes a row): 8-byte moves, the last one overlapping.
inline void CopyBytes(uint8_t* dst, const uint8_t* src, int64_t n) {
  if (n < 8) {
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
    return;
  }
  if (n > 256) {
    std::memcpy(dst, src, static_cast<size_t>(n));
    return;
  }
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) std::memcpy(dst + i, src + i, 8);
  if (i < n) std::memcpy(dst + n - 8, src + n - 8, 8);
}

// The shared body of KbitConv2d (int8, and bit-serial off the direct path) and KbitDense on
// channels-last levels lv (N, H, W, C). rows_out: out is (OH * OW, F) per image (dense).
void RunKbit(const uint8_t* lv, const KbitArgs& args, const KbitWeights& w, const Conv2dParams& p,
             const KbitSpec& spec, int threads, bool rows_out) {
  const int64_t n_img = p.batch, c_all = p.channels, h = p.in_h, wd_in = p.in_w;
  const int64_t g_count = p.groups, cg = p.GroupChannels(), fg = p.GroupFilters();
  const int64_t f_all = p.num_filter, f_pad = w.f_pad;
  const int64_t kh = p.kernel_h, kw = p.kernel_w, taps = kh * kw, depth = w.depth;
  const int64_t oh = p.OutH(), ow = p.OutW(), ohw = oh * ow;
  const int ka = w.act_bit, kwb = w.weight_bit;
  const int64_t a_max = (int64_t{1} << ka) - 1, b_max = (int64_t{1} << kwb) - 1;
  const bool bitserial = w.path == KbitPath::kBitSerial;
  const int64_t coff = bitserial ? -b_max : 256 - b_max;
  const int64_t units = w.units;
  const int64_t row_bytes = bitserial ? RoundUp(depth, 64) : units * 4;
  const int64_t w_rows = bitserial ? units * kwb : (w.pairs ? 2 * units : units);

  // ds[g][f] = alpha / (A * B) in double; bias per group, padded with zeros.
  std::vector<double> ds(static_cast<size_t>(g_count * f_pad), 0.0);
  std::vector<float> bias_pad;
  if (args.bias != nullptr) bias_pad.assign(static_cast<size_t>(g_count * f_pad), 0.0f);
  const double denom = static_cast<double>(a_max * b_max);
  for (int64_t g = 0; g < g_count; ++g) {
    for (int64_t f = 0; f < fg; ++f) {
      const int64_t fo = g * fg + f;
      ds[g * f_pad + f] = (args.alpha ? static_cast<double>(args.alpha[fo]) : 1.0) / denom;
      if (args.bias != nullptr) bias_pad[g * f_pad + f] = args.bias[fo];
    }
  }

  const int64_t q_chunks = (ohw + kPixChunk - 1) / kPixChunk;
  const int64_t base_tasks = n_img * g_count * q_chunks;
  int64_t f_chunk = f_pad;
  if (base_tasks < 4 * threads) {
    const int64_t want = (4 * threads + base_tasks - 1) / base_tasks;
    f_chunk = std::max<int64_t>(16, RoundUp((f_pad + want - 1) / want, 16));
  }
  const int64_t f_chunks = (f_pad + f_chunk - 1) / f_chunk;
  const int64_t pad_level = static_cast<int64_t>(p.pad_value) * a_max;
  const bool merge_row = g_count == 1 && p.dilate_w == 1;  // a tap row is contiguous in lv
  const bool need_corr = pad_level != 0 && (p.pad_h > 0 || p.pad_w > 0);

  ParallelFor(base_tasks * f_chunks, threads, [&](int64_t begin, int64_t end) {
    thread_local Scratch<uint8_t> rows_s;
    thread_local Scratch<uint64_t> planes_s;
    thread_local Scratch<int32_t> r_s, corr_s;
    thread_local Scratch<int64_t> l_s;
    thread_local Scratch<char> padded_s;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t fc = task % f_chunks, rest = task / f_chunks;
      const int64_t qc = rest % q_chunks, ng = rest / q_chunks;
      const int64_t g = ng % g_count, n = ng / g_count;
      const int64_t q0 = qc * kPixChunk, np = std::min(kPixChunk, ohw - q0);
      const int64_t f0 = fc * f_chunk, nf = std::min(f_chunk, f_pad - f0);
      int64_t* l = l_s.Get(static_cast<size_t>(np));
      char* padded = padded_s.Get(static_cast<size_t>(np * taps));
      bool any_padded = false;
      int32_t* r = r_s.Get(static_cast<size_t>(np * nf));
      {  // im2col rows of levels, then the tile
        uint8_t* rows = rows_s.Get(static_cast<size_t>(np * row_bytes));
        const uint8_t* lv_img = lv + n * h * wd_in * c_all + g * cg;
        for (int64_t pi = 0; pi < np; ++pi) {
          const int64_t q = q0 + pi, oy = q / ow, ox = q % ow;
          uint8_t* row = rows + pi * row_bytes;
          for (int64_t i = 0; i < kh; ++i) {
            const int64_t iy = oy * p.stride_h - p.pad_h + i * p.dilate_h;
            const int64_t ix0 = ox * p.stride_w - p.pad_w;
            if (merge_row && iy >= 0 && iy < h && ix0 >= 0 && ix0 + kw <= wd_in) {
              // The kw taps of this row are kw consecutive pixels: one copy of kw * C bytes.
              CopyBytes(row + i * kw * cg, lv_img + (iy * wd_in + ix0) * c_all, kw * cg);
              if (need_corr) {
                for (int64_t j = 0; j < kw; ++j) padded[pi * taps + i * kw + j] = 0;
              }
              continue;
            }
            for (int64_t j = 0; j < kw; ++j) {
              const int64_t ix = ox * p.stride_w - p.pad_w + j * p.dilate_w;
              const int64_t t = i * kw + j;
              uint8_t* dst = row + t * cg;
              if (iy < 0 || iy >= h || ix < 0 || ix >= wd_in) {
                std::memset(dst, 0, static_cast<size_t>(cg));
                padded[pi * taps + t] = 1;
                any_padded = true;
              } else {
                CopyBytes(dst, lv_img + (iy * wd_in + ix) * c_all, cg);
                padded[pi * taps + t] = 0;
              }
            }
          }
          std::memset(row + depth, 0, static_cast<size_t>(row_bytes - depth));
          l[pi] = spec.row_sum(row, depth);
        }
        if (bitserial) {
          uint64_t* xb = planes_s.Get(static_cast<size_t>(np * units * ka));
          for (int64_t pi = 0; pi < np; ++pi) {
            spec.planes(rows + pi * row_bytes, depth, ka, xb + pi * units * ka);
          }
          spec.bitserial(xb, np, units, ka, w.planes.data() + g * w_rows * f_pad + f0, kwb, nf,
                         f_pad, r, nf);
        } else {
          spec.int8(reinterpret_cast<const uint32_t*>(rows), np, units,
                    w.packed.data() + g * w_rows * f_pad + f0, nf, f_pad, r, nf);
        }
      }
      const int32_t* corr = nullptr;
      if (need_corr && any_padded) {
        int32_t* c = corr_s.Get(static_cast<size_t>(np * nf));
        std::fill(c, c + np * nf, 0);
        const int32_t* ts = w.tap_sums.data() + g * taps * f_pad + f0;
        for (int64_t pi = 0; pi < np; ++pi) {
          for (int64_t t = 0; t < taps; ++t) {
            if (!padded[pi * taps + t]) continue;
            for (int64_t f = 0; f < nf; ++f) {
              c[pi * nf + f] += static_cast<int32_t>(pad_level * ts[t * f_pad + f]);
            }
          }
        }
        corr = c;
      }
      const int64_t nvalid = std::min(nf, fg - f0);
      if (nvalid <= 0) continue;
      if (args.out_dot != nullptr) {
        for (int64_t pi = 0; pi < np; ++pi) {
          for (int64_t f = 0; f < nvalid; ++f) {
            const int64_t d =
                2 * int64_t{r[pi * nf + f]} + coff * l[pi] + (corr ? corr[pi * nf + f] : 0);
            Require(d >= INT32_MIN && d <= INT32_MAX, "KbitConv2d: out_dot overflows int32");
            const int64_t fo = g * fg + f0 + f;
            const int64_t idx =
                rows_out ? (n * ohw + q0 + pi) * f_all + fo : (n * f_all + fo) * ohw + q0 + pi;
            args.out_dot[idx] = static_cast<int32_t>(d);
          }
        }
        continue;
      }
      const float* bias = args.bias ? bias_pad.data() + g * f_pad + f0 : nullptr;
      const double* dsp = ds.data() + g * f_pad + f0;
      if (rows_out) {
        spec.epilogue(r, corr, nf, l, coff, np, nvalid, dsp, bias,
                      args.out + (n * ohw + q0) * f_all + g * fg + f0, f_all, false);
      } else {
        spec.epilogue(r, corr, nf, l, coff, np, nvalid, dsp, bias,
                      args.out + (n * f_all + g * fg + f0) * ohw + q0, ohw, true);
      }
    }
  });
}

void CheckWeights(const KbitWeights& w, const GemmConfig& config, const char* fn) {
  Require(w.path != KbitPath::kNone, std::string(fn) + ": weights are not prepared");
  Require(config.isa == w.isa, std::string(fn) + ": config.isa (" + IsaName(config.isa) +
                                   ") differs from the ISA the weights were prepared for (" +
                                   IsaName(w.isa) + ")");
  RequireIsa(config.isa);
}

}  // namespace

const char* KbitPathName(KbitPath path) {
  switch (path) {
    case KbitPath::kBitSerial:
      return "bitserial";
    case KbitPath::kInt8:
      return "int8";
    case KbitPath::kNone:
      break;
  }
  return "float";
}

KbitPath KbitPathFor(int act_bit, int weight_bit, int64_t depth) {
  if (depth < 1 || depth > kKbitMaxDepth) return KbitPath::kNone;
  if (act_bit >= 2 && act_bit <= 4 && weight_bit >= 1 && weight_bit <= 4) {
    return KbitPath::kBitSerial;
  }
  if (act_bit >= 2 && act_bit <= 8 && weight_bit >= 1 && weight_bit <= 8) return KbitPath::kInt8;
  return KbitPath::kNone;
}

void KbitWeightLevels(const float* w, int64_t n, int weight_bit, uint8_t* out) {
  Require(weight_bit >= 1 && weight_bit <= 8,
          "KbitWeightLevels: weight_bit must be in 1..8, got " + std::to_string(weight_bit));
  Require(n >= 0 && (n == 0 || (w != nullptr && out != nullptr)), "KbitWeightLevels: bad input");
  if (weight_bit == 1) {
    for (int64_t i = 0; i < n; ++i) out[i] = w[i] < 0.0f ? 0 : 1;  // NaN -> +1, as sgn
    return;
  }
  std::vector<double> th(static_cast<size_t>(n));  // per call: 8 bytes a weight, not kept
  double max_t = 0.0;
  bool nan = false;
  for (int64_t i = 0; i < n; ++i) {
    th[i] = std::tanh(double{w[i]});
    max_t = std::max(max_t, std::fabs(th[i]));
    nan = nan || std::isnan(w[i]);
  }
  Require(!nan, "KbitWeightLevels: the weights contain NaN (no quantisation level)");
  const double levels = static_cast<double>((1 << weight_bit) - 1);
  for (int64_t i = 0; i < n; ++i) {
    const double t = max_t > 0.0 ? th[i] / (2.0 * max_t) : 0.0;
    out[i] = static_cast<uint8_t>(std::nearbyint(levels * (t + 0.5)));
  }
}

void KbitActLevels(const float* x, int64_t n, int act_bit, uint8_t* out, Isa isa) {
  Require(act_bit >= 2 && act_bit <= 8,
          "KbitActLevels: act_bit must be in 2..8, got " + std::to_string(act_bit));
  RequireIsa(isa);
  if (n > 0) internal::KbitFor(isa).levels(x, n, act_bit, out);
}

namespace {

// PrepareKbitConvLevels; dense: a dense layer's weights (never the direct layout).
void PrepareLevels(const uint8_t* levels, const Conv2dParams& p, int act_bit, int weight_bit,
                   Isa isa, bool dense, KbitWeights* out) {
  ValidateConv2dParams(p);
  Require(levels != nullptr && out != nullptr, "PrepareKbitConv: null pointer");
  const int64_t cg = p.GroupChannels(), fg = p.GroupFilters(), g_count = p.groups;
  const int64_t kh = p.kernel_h, kw = p.kernel_w, taps = kh * kw, depth = taps * cg;
  const KbitPath path = KbitPathFor(act_bit, weight_bit, depth);
  Require(path != KbitPath::kNone,
          "PrepareKbitConv: no integer kernel for act_bit=" + std::to_string(act_bit) +
              ", weight_bit=" + std::to_string(weight_bit) + ", depth=" + std::to_string(depth));
  RequireIsa(isa);
  const KbitSpec spec = internal::KbitFor(isa);
  const int64_t n_w = p.num_filter * p.FilterSize();
  uint8_t max_level = 0;
  for (int64_t i = 0; i < n_w; ++i) max_level = std::max(max_level, levels[i]);
  Require(
      max_level < (1 << weight_bit),
      "PrepareKbitConv: weight level " + std::to_string(max_level) + " is not below 2^weight_bit");
  KbitWeights& w = *out;  // vectors keep their capacity from an earlier call
  w.path = path;
  w.isa = isa;
  w.act_bit = act_bit;
  w.weight_bit = weight_bit;
  w.groups = g_count;
  w.filters_per_group = fg;
  w.f_pad = RoundUp(fg, 16);
  w.taps = taps;
  w.group_channels = cg;
  w.depth = depth;
  const int64_t f_pad = w.f_pad;
  const bool pairs = path == KbitPath::kInt8 && spec.int8_format == Int8Format::kPair;
  w.pairs = pairs;
  const int32_t b_max = (1 << weight_bit) - 1;
  const bool direct = path == KbitPath::kBitSerial && !dense && internal::UseBitSerialDirect(p);
  w.direct = direct;
  const int64_t direct_rows = RoundUp(fg, internal::kBsconvFilterAlign);
  const int64_t direct_row = taps * WordsFor(cg) * weight_bit;
  if (direct) {
    w.units = (depth + 63) / 64;
    w.direct_planes.resize(static_cast<size_t>(g_count * direct_rows * direct_row));
    w.planes.clear();
    w.packed.clear();
  } else if (path == KbitPath::kBitSerial) {
    w.units = (depth + 63) / 64;
    w.planes.assign(static_cast<size_t>(g_count * w.units * weight_bit * f_pad), 0);
    w.packed.clear();
    w.direct_planes.clear();
  } else {
    w.units = (depth + 3) / 4;
    w.packed.assign(static_cast<size_t>(g_count * w.units * (pairs ? 2 : 1) * f_pad), 0);
    w.planes.clear();
    w.direct_planes.clear();
  }
  w.tap_sums.assign(static_cast<size_t>(g_count * taps * f_pad), 0);
  // Per group: lt[d][f] = level of filter f at depth d = t * cg + c' (blocks of 64 filters,
  // so that the reads are 64 sequential streams and the writes contiguous), then every
  // layout is written with the filter index innermost.
  thread_local std::vector<uint8_t> lt;
  lt.assign(static_cast<size_t>(depth * f_pad), 0);
  for (int64_t g = 0; g < g_count; ++g) {
    for (int64_t fb = 0; fb < fg; fb += 64) {
      const int64_t fe = std::min(fg, fb + 64);
      for (int64_t c = 0; c < cg; ++c) {
        for (int64_t t = 0; t < taps; ++t) {
          uint8_t* dst = lt.data() + (t * cg + c) * f_pad;
          const uint8_t* src = levels + ((g * fg) * cg + c) * taps + t;
          for (int64_t f = fb; f < fe; ++f) dst[f] = src[f * cg * taps];
        }
      }
    }
    int32_t* ts = w.tap_sums.data() + g * taps * f_pad;
    if (direct) {
      internal::PackBitSerialDirect(lt.data(), f_pad, fg, cg, taps, weight_bit,
                                    w.direct_planes.data() + g * direct_rows * direct_row);
    }
    for (int64_t d = 0; d < depth; ++d) {
      const uint8_t* row = lt.data() + d * f_pad;
      int32_t* tsr = ts + (d / cg) * f_pad;
      for (int64_t f = 0; f < fg; ++f) tsr[f] += 2 * static_cast<int32_t>(row[f]) - b_max;
      if (direct) continue;
      if (path == KbitPath::kBitSerial) {
        const int sh = static_cast<int>(d % 64);
        for (int j = 0; j < weight_bit; ++j) {
          uint64_t* dst = w.planes.data() + ((g * w.units + d / 64) * weight_bit + j) * f_pad;
          for (int64_t f = 0; f < fg; ++f) dst[f] |= static_cast<uint64_t>((row[f] >> j) & 1) << sh;
        }
      } else if (pairs) {
        const int sh = static_cast<int>(16 * (d % 2));
        uint32_t* dst = w.packed.data() + (g * 2 * w.units + d / 2) * f_pad;
        for (int64_t f = 0; f < fg; ++f) {
          dst[f] |= static_cast<uint32_t>(static_cast<uint16_t>(static_cast<int16_t>(row[f] - 128)))
                    << sh;
        }
      } else {
        const int sh = static_cast<int>(8 * (d % 4));
        uint32_t* dst = w.packed.data() + (g * w.units + d / 4) * f_pad;
        for (int64_t f = 0; f < fg; ++f) {
          dst[f] |= static_cast<uint32_t>(static_cast<uint8_t>(static_cast<int8_t>(row[f] - 128)))
                    << sh;
        }
      }
    }
  }
}

}  // namespace

void PrepareKbitConvLevels(const uint8_t* levels, const Conv2dParams& p, int act_bit,
                           int weight_bit, Isa isa, KbitWeights* out) {
  PrepareLevels(levels, p, act_bit, weight_bit, isa, /*dense=*/false, out);
}

void PrepareKbitConv(const float* wf, const Conv2dParams& p, int act_bit, int weight_bit, Isa isa,
                     KbitWeights* out) {
  ValidateConv2dParams(p);
  Require(wf != nullptr, "PrepareKbitConv: null pointer");
  const int64_t n = p.num_filter * p.FilterSize();
  thread_local std::vector<uint8_t> levels;
  levels.resize(static_cast<size_t>(n));
  KbitWeightLevels(wf, n, weight_bit, levels.data());
  PrepareKbitConvLevels(levels.data(), p, act_bit, weight_bit, isa, out);
}

namespace {

Conv2dParams DenseParams(int64_t rows, int64_t depth, int64_t hidden) {
  Conv2dParams p;
  p.batch = 1;
  p.channels = depth;
  p.in_h = rows;
  p.in_w = 1;
  p.num_filter = hidden;
  return p;
}

}  // namespace

void PrepareKbitDenseLevels(const uint8_t* levels, int64_t depth, int64_t hidden, int act_bit,
                            int weight_bit, Isa isa, KbitWeights* out) {
  Require(depth > 0 && hidden > 0, "PrepareKbitDense: bad sizes");
  PrepareLevels(levels, DenseParams(1, depth, hidden), act_bit, weight_bit, isa, /*dense=*/true,
                out);
}

void PrepareKbitDense(const float* wf, int64_t depth, int64_t hidden, int act_bit, int weight_bit,
                      Isa isa, KbitWeights* out) {
  Require(depth > 0 && hidden > 0, "PrepareKbitDense: bad sizes");
  ValidateConv2dParams(DenseParams(1, depth, hidden));
  Require(wf != nullptr, "PrepareKbitDense: null pointer");
  thread_local std::vector<uint8_t> levels;
  levels.resize(static_cast<size_t>(depth * hidden));
  KbitWeightLevels(wf, depth * hidden, weight_bit, levels.data());
  PrepareKbitDenseLevels(levels.data(), depth, hidden, act_bit, weight_bit, isa, out);
}

void KbitConv2d(const KbitArgs& args, const KbitWeights& w, const Conv2dParams& p,
                const GemmConfig& config) {
  ValidateConv2dParams(p);
  CheckWeights(w, config, "KbitConv2d");
  Require(p.groups == w.groups && p.GroupFilters() == w.filters_per_group &&
              p.GroupChannels() == w.group_channels && p.kernel_h * p.kernel_w == w.taps,
          "KbitConv2d: the geometry differs from the one the weights were prepared for");
  if (p.batch == 0) return;
  Require(args.x != nullptr && ((args.out != nullptr) != (args.out_dot != nullptr)),
          "KbitConv2d: x and exactly one of out / out_dot are required");
  const int threads = config.threads > 0 ? config.threads : DefaultThreads();
  if (internal::DirectApplies(w, p)) {  // few input channels: kbit_direct.cc
    internal::DirectConv2d(args, w, p, false, nullptr, threads);
    return;
  }
  if (w.direct) {  // bit-serial, direct: bsconv.cc
    internal::BitSerialConv2d(args, w, p, threads);
    return;
  }
  const KbitSpec spec = internal::KbitFor(config.isa);
  const int64_t n_img = p.batch, c_all = p.channels, hw = p.in_h * p.in_w;
  thread_local Scratch<uint8_t> lv_s;
  uint8_t* lv = lv_s.Get(static_cast<size_t>(n_img * c_all * hw));
  const float* x = args.x;
  const int ka = w.act_bit;
  // Quantise + NCHW -> NHWC, one task per (image, block of pixels).
  constexpr int64_t kPixBlock = 256;
  const int64_t blocks = (hw + kPixBlock - 1) / kPixBlock;
  ParallelFor(n_img * blocks, threads, [&](int64_t b, int64_t e) {
    for (int64_t task = b; task < e; ++task) {
      const int64_t n = task / blocks, q0 = (task % blocks) * kPixBlock;
      const int64_t nq = std::min(kPixBlock, hw - q0);
      spec.levels_nhwc(x + n * c_all * hw + q0, c_all, hw, nq, ka, lv + (n * hw + q0) * c_all);
    }
  });
  RunKbit(lv, args, w, p, spec, threads, /*rows_out=*/false);
}

void KbitDense(const KbitArgs& args, const KbitWeights& w, int64_t rows, const GemmConfig& config) {
  CheckWeights(w, config, "KbitDense");
  Require(rows >= 0, "KbitDense: rows must be >= 0");
  Require(w.groups == 1 && w.taps == 1 && !w.direct,
          "KbitDense: weights were not prepared for a dense layer");
  if (rows == 0) return;
  Require(args.x != nullptr && ((args.out != nullptr) != (args.out_dot != nullptr)),
          "KbitDense: x and exactly one of out / out_dot are required");
  const int64_t depth = w.depth;
  const Conv2dParams p = DenseParams(rows, depth, w.filters_per_group);
  const int threads = config.threads > 0 ? config.threads : DefaultThreads();
  const KbitSpec spec = internal::KbitFor(config.isa);
  thread_local Scratch<uint8_t> lv_s;
  uint8_t* lv = lv_s.Get(static_cast<size_t>(rows * depth));
  const int ka = w.act_bit;
  ParallelFor(rows, threads, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      spec.levels(args.x + m * depth, depth, ka, lv + m * depth);
    }
  });
  RunKbit(lv, args, w, p, spec, threads, /*rows_out=*/true);
}

}  // namespace binmx

/*
 * binmx core: driver of the direct bit-serial k-bit convolution (formulas in kbit.h, kernel
 * contract and plane layout in bsconv_kernels.h, docs/design.md §3). ISA-neutral, base flags.
 *
 * 1. Packing, one task per (image, group, padded row r that some tap reads): the row's
 *    levels as ka plane words per pixel and word of 64 channels (0 at the padded border), and
 *    each pixel's level sum, stored per tap column j and row phase s as
 *        plane(j, s, wd, a)[rr * OW + ox] = plane a of word wd of P[rr * sh + s][ox * sw + j * dw]
 *        sums(j, s)[rr * OW + ox]        = level sum of P[rr * sh + s][ox * sw + j * dw]
 *    (P the padded image), exactly the binary convolution's layout (bconv.cc) with ka planes
 *    per word.
 * 2. l[q] = sum over the taps of the sums: the level sum of the receptive field of output q,
 *    one task per (image, group, pixel chunk).
 * 3. Border table for pad_value +-1 (pad_value 0 needs none: a padded level is 0, as in the
 *    zero planes): the valid taps of an output row are a range [ilo, ihi) of i (columns alike),
 *    so a pixel's padded taps are given by its (row class, column class);
 *    ct[f][pattern] = pad_value * A * sum over the pattern's padded taps of tap_sums[f][t].
 * 4. Kernel tasks (image, group, pixel chunk, filter chunk): R by popcounts in registers,
 *    D = 2 R - B l + ct, the float epilogue written straight into NCHW.
 * Images are processed in blocks of at most 8 whose planes take at most kPlaneBudget bytes.
 */
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "axis_classes.h"
#include "bsconv_kernels.h"
#include "kbit.h"
#include "parallel.h"
#include "scratch.h"

namespace binmx {
namespace internal {

namespace {

BsconvSpec BsconvFor(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      break;
    case Isa::kAvx2:
#ifdef BINMX_BUILT_AVX2
      return Avx2Bsconv();
#else
      break;
#endif
    case Isa::kAvx512:
#ifdef BINMX_BUILT_AVX512
      return Avx512Bsconv();
#else
      break;
#endif
    case Isa::kNeon:
#ifdef BINMX_BUILT_NEON
      return NeonBsconv();
#else
      break;
#endif
  }
  return ScalarBsconv();
}

// Images per block: planes of at most kPlaneBudget bytes, and at most kMaxImageBlock images
// (enough tasks for any thread count, and the planes of a block stay in cache between the
// packing and the kernel).
constexpr int64_t kPlaneBudget = int64_t{32} << 20;
constexpr int64_t kMaxImageBlock = 8;
constexpr int64_t kPrefetchRows = 4;  // into L2 (locality 2), 4 rows ahead: best when cold

int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

struct CallScratch {
  Scratch<uint64_t> planes;
  Scratch<int32_t> sums, l;
  std::vector<int32_t> pid, ct;
  std::vector<int64_t> koff, y_class, x_class;
  std::vector<double> ds;
  std::vector<float> bias;
  std::vector<char> row_used;
};

CallScratch& ThreadScratch() {
  thread_local CallScratch s;
  return s;
}

}  // namespace

void BitSerialThresholds(int ka, float* thr) {
  const int a_max = (1 << ka) - 1;
  const double a_levels = static_cast<double>(a_max);
  for (int k = 0; k < a_max; ++k) {
    // la(x) > k <=> A x > k + 1/2, or A x == k + 1/2 rounding up to the even k + 1 (k odd);
    // A x is exact in double for a float x and A < 2^8. Monotone in x: step to its edge.
    const double half = k + 0.5;
    const auto above = [&](float x) {
      const double y = a_levels * static_cast<double>(x);
      return y > half || (y == half && k % 2 == 1);
    };
    float f = static_cast<float>(half / a_levels);
    while (above(f)) f = std::nextafter(f, -INFINITY);
    while (!above(std::nextafter(f, INFINITY))) f = std::nextafter(f, INFINITY);
    thr[k] = f;
  }
}

bool UseBitSerialDirect(const Conv2dParams& p) {
  // The direct layout spends whole words on each tap: taps * words popcount steps per pixel
  // against ceil(depth / 64) for im2col rows, which it still beats when it is at most twice
  // as many (every C/g >= 32 of a 3x3 kernel, every multiple of 64, every 1x1 kernel; at
  // 28x28, 3x3, a2/w2 the two paths break even near C/g = 32, a2/w1 near 16).
  const int64_t cg = p.GroupChannels(), taps = p.kernel_h * p.kernel_w;
  return taps * WordsFor(cg) <= 2 * WordsFor(taps * cg);
}

void PackBitSerialDirect(const uint8_t* lt, int64_t f_stride, int64_t fg, int64_t cg, int64_t taps,
                         int kwb, uint64_t* out) {
  const int64_t words = WordsFor(cg), kwords = taps * words, row = kwords * kwb;
  std::fill(out, out + RoundUp(fg, kBsconvFilterAlign) * row, uint64_t{0});
  for (int64_t t = 0; t < taps; ++t) {
    for (int64_t c = 0; c < cg; ++c) {
      const uint8_t* lv = lt + (t * cg + c) * f_stride;
      const int sh = static_cast<int>(c % 64);
      uint64_t* dst = out + t * words + c / 64;
      for (int64_t f = 0; f < fg; ++f) {
        for (int b = 0; b < kwb; ++b) {
          dst[f * row + b * kwords] |= static_cast<uint64_t>((lv[f] >> b) & 1) << sh;
        }
      }
    }
  }
}

void BitSerialConv2d(const KbitArgs& args, const KbitWeights& w, const Conv2dParams& p,
                     int threads) {
  const BsconvSpec spec = BsconvFor(w.isa);
  CallScratch& s = ThreadScratch();  // the caller's: the tasks below use it by reference
  const int64_t n_all = p.batch, c_all = p.channels, h = p.in_h, wi = p.in_w, hw = h * wi;
  const int64_t f_all = p.num_filter, g_count = p.groups;
  const int64_t cg = p.GroupChannels(), fg = p.GroupFilters(), words = WordsFor(cg);
  const int64_t fgp = RoundUp(fg, kBsconvFilterAlign);
  const int64_t kh = p.kernel_h, kw = p.kernel_w, taps = kh * kw, kwords = taps * words;
  const int64_t sh = p.stride_h, sw = p.stride_w, ph = p.pad_h, pw = p.pad_w;
  const int64_t dh = p.dilate_h, dw = p.dilate_w;
  const int64_t oh = p.OutH(), ow = p.OutW(), ohw = oh * ow;
  const int64_t hp = h + 2 * ph, wp = wi + 2 * pw, phases = p.Phases();
  const int64_t rows_p = (hp + phases - 1) / phases;
  const int64_t plane = rows_p * ow + kBsconvSlack;
  const int ka = w.act_bit, kwb = w.weight_bit;
  const int64_t a_max = (int64_t{1} << ka) - 1, b_max = (int64_t{1} << kwb) - 1;
  const int64_t pstride = plane;  // plane a of a word follows plane a - 1
  const int64_t ig_words = kw * phases * words * ka * plane;  // per (image, group)
  const int64_t ig_sums = kw * phases * plane;
  const int64_t l_stride = ohw + kBsconvSlack;
  const int64_t img_block = std::max<int64_t>(
      1, std::min({n_all, kMaxImageBlock, kPlaneBudget / (8 * g_count * ig_words)}));

  // ds = alpha / (A B) and the bias, per group, filter rows padded with zeros.
  s.ds.assign(static_cast<size_t>(g_count * fgp), 0.0);
  if (args.bias != nullptr) s.bias.assign(static_cast<size_t>(g_count * fgp), 0.0f);
  const double denom = static_cast<double>(a_max * b_max);
  for (int64_t g = 0; g < g_count; ++g) {
    for (int64_t f = 0; f < fg; ++f) {
      const int64_t fo = g * fg + f;
      s.ds[g * fgp + f] = (args.alpha ? static_cast<double>(args.alpha[fo]) : 1.0) / denom;
      if (args.bias != nullptr) s.bias[g * fgp + f] = args.bias[fo];
    }
  }

  // Tap-word offsets into the planes of one (image, group).
  s.koff.resize(static_cast<size_t>(kwords));
  for (int64_t i = 0; i < kh; ++i) {
    for (int64_t j = 0; j < kw; ++j) {
      for (int64_t wd = 0; wd < words; ++wd) {
        s.koff[(i * kw + j) * words + wd] =
            ((j * phases + (i * dh) % sh) * words + wd) * ka * plane + ((i * dh) / sh) * ow;
      }
    }
  }

  // Border table (pad_value +-1 only).
  const int64_t pad_level = static_cast<int64_t>(p.pad_value) * a_max;
  const int32_t* pid = nullptr;
  int64_t ct_stride = 16, n_pat = 1;
  if (pad_level != 0 && (ph > 0 || pw > 0)) {
    std::vector<std::pair<int64_t, int64_t>> y_ranges, x_ranges;
    AxisClasses(oh, h, sh, ph, dh, kh, &s.y_class, &y_ranges);
    AxisClasses(ow, wi, sw, pw, dw, kw, &s.x_class, &x_ranges);
    const int64_t n_yc = static_cast<int64_t>(y_ranges.size());
    const int64_t n_xc = static_cast<int64_t>(x_ranges.size());
    if (n_yc > 1 || n_xc > 1) {
      n_pat = n_yc * n_xc;
      ct_stride = RoundUp(n_pat, 16);
      s.pid.assign(static_cast<size_t>(l_stride), 0);
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          s.pid[oy * ow + ox] = static_cast<int32_t>(s.y_class[oy] * n_xc + s.x_class[ox]);
        }
      }
      s.ct.assign(static_cast<size_t>(g_count * fgp * ct_stride), 0);
      for (int64_t g = 0; g < g_count; ++g) {
        const int32_t* ts = w.tap_sums.data() + g * taps * w.f_pad;
        int32_t* ctg = s.ct.data() + g * fgp * ct_stride;
        for (int64_t yc = 0; yc < n_yc; ++yc) {
          for (int64_t xc = 0; xc < n_xc; ++xc) {
            const int64_t pat = yc * n_xc + xc;
            for (int64_t i = 0; i < kh; ++i) {
              for (int64_t j = 0; j < kw; ++j) {
                const bool inside = i >= y_ranges[yc].first && i < y_ranges[yc].second &&
                                    j >= x_ranges[xc].first && j < x_ranges[xc].second;
                if (inside) continue;
                const int32_t* tr = ts + (i * kw + j) * w.f_pad;
                for (int64_t f = 0; f < fg; ++f) {
                  ctg[f * ct_stride + pat] += static_cast<int32_t>(pad_level * tr[f]);
                }
              }
            }
          }
        }
      }
      pid = s.pid.data();
    }
  }

  float thr[255];
  BitSerialThresholds(ka, thr);

  // Padded rows some tap reads.
  s.row_used.assign(static_cast<size_t>(hp), 0);
  for (int64_t oy = 0; oy < oh; ++oy) {
    for (int64_t i = 0; i < kh; ++i) s.row_used[oy * sh + i * dh] = 1;
  }

  constexpr int64_t kPixChunk = 240, kFilterChunk = 64;
  const int64_t q_chunks = (ohw + kPixChunk - 1) / kPixChunk;
  const int64_t f_chunks = (fg + kFilterChunk - 1) / kFilterChunk;
  for (int64_t n0 = 0; n0 < n_all; n0 += img_block) {
    const int64_t nb = std::min(img_block, n_all - n0);
    uint64_t* planes = s.planes.Get(static_cast<size_t>(nb * g_count * ig_words));
    int32_t* sums = s.sums.Get(static_cast<size_t>(nb * g_count * ig_sums));
    int32_t* lsum = s.l.Get(static_cast<size_t>(nb * g_count * l_stride));

    // 1. Packing.
    ParallelFor(nb * g_count * hp, threads, [&](int64_t begin, int64_t end) {
      thread_local Scratch<uint64_t> rb_s;
      thread_local Scratch<int32_t> rs_s;
      uint64_t* rb = rb_s.Get(static_cast<size_t>(words * ka * wp));
      int32_t* rs = rs_s.Get(static_cast<size_t>(wp));
      bool primed = false;
      for (int64_t task = begin; task < end; ++task) {
        const int64_t r = task % hp, ng = task / hp, g = ng % g_count, nl = ng / g_count;
        if (!s.row_used[r]) continue;
        std::fill(rs, rs + wp, 0);
        if (r < ph || r >= ph + h) {
          std::fill(rb, rb + words * ka * wp, uint64_t{0});
        } else {
          const float* xr = args.x + ((n0 + nl) * c_all + g * cg) * hw + (r - ph) * wi;
          // Rows kPrefetchRows below (before a thread's first image row also rows 1 .. below),
          // one channel plane per stream: more streams than the hardware prefetchers follow
          // once the input is not in cache.
          const int64_t ahead0 = primed ? kPrefetchRows : 1;
          primed = true;
          const int64_t ahead1 = std::min(kPrefetchRows, ph + h - 1 - r);
          for (int64_t ahead = ahead0; ahead <= ahead1; ++ahead) {
            const char* next = reinterpret_cast<const char*>(xr + ahead * wi);
            for (int64_t c = 0; c < cg; ++c) {
              const char* rowc = next + c * hw * static_cast<int64_t>(sizeof(float));
              for (int64_t b = 0; b < wi * static_cast<int64_t>(sizeof(float)); b += 64) {
                __builtin_prefetch(rowc + b, 0, 2);
              }
            }
          }
          for (int64_t wd = 0; wd < words; ++wd) {
            uint64_t* row = rb + wd * ka * wp;
            for (int a = 0; a < ka; ++a) {
              std::fill(row + a * wp, row + a * wp + pw, uint64_t{0});
              std::fill(row + a * wp + pw + wi, row + (a + 1) * wp, uint64_t{0});
            }
            const int n_ch = static_cast<int>(std::min<int64_t>(64, cg - wd * 64));
            spec.pack(xr + wd * 64 * hw, hw, n_ch, wi, ka, thr, row + pw, wp, rs + pw);
          }
        }
        const int64_t rr = r / sh, phase = r % sh;
        uint64_t* base = planes + ng * ig_words + rr * ow;
        int32_t* sbase = sums + ng * ig_sums + rr * ow;
        for (int64_t j = 0; j < kw; ++j) {
          for (int64_t wd = 0; wd < words; ++wd) {
            for (int a = 0; a < ka; ++a) {
              uint64_t* dst = base + (((j * phases + phase) * words + wd) * ka + a) * plane;
              const uint64_t* src = rb + (wd * ka + a) * wp + j * dw;
              if (sw == 1) {
                std::memcpy(dst, src, sizeof(uint64_t) * ow);
              } else {
                for (int64_t ox = 0; ox < ow; ++ox) dst[ox] = src[ox * sw];
              }
            }
          }
          int32_t* sdst = sbase + (j * phases + phase) * plane;
          const int32_t* ssrc = rs + j * dw;
          for (int64_t ox = 0; ox < ow; ++ox) sdst[ox] = ssrc[ox * sw];
        }
      }
    });

    // 2. Receptive-field level sums.
    ParallelFor(nb * g_count * q_chunks, threads, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t qc = task % q_chunks, ng = task / q_chunks;
        const int64_t q0 = qc * kPixChunk, q1 = std::min(ohw, q0 + kPixChunk);
        int32_t* l = lsum + ng * l_stride;
        std::fill(l + q0, l + q1, 0);
        for (int64_t i = 0; i < kh; ++i) {
          for (int64_t j = 0; j < kw; ++j) {
            const int32_t* src =
                sums + ng * ig_sums + (j * phases + (i * dh) % sh) * plane + ((i * dh) / sh) * ow;
            for (int64_t q = q0; q < q1; ++q) l[q] += src[q];
          }
        }
        if (q1 == ohw) std::fill(l + ohw, l + l_stride, 0);
      }
    });

    // 3. Kernel tasks.
    const int64_t* koff = s.koff.data();
    ParallelFor(nb * g_count * q_chunks * f_chunks, threads, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t fc = task % f_chunks;
        const int64_t qc = (task / f_chunks) % q_chunks;
        const int64_t ng = task / (f_chunks * q_chunks), g = ng % g_count, nl = ng / g_count;
        BsconvTile t;
        t.planes = planes + ng * ig_words;
        t.koff = koff;
        t.kwords = kwords;
        t.pstride = pstride;
        t.ka = ka;
        t.kwb = kwb;
        t.w = w.direct_planes.data() + g * fgp * kwords * kwb;
        t.f0 = fc * kFilterChunk;
        t.f1 = std::min(fg, t.f0 + kFilterChunk);
        t.q0 = qc * kPixChunk;
        t.q1 = std::min(ohw, t.q0 + kPixChunk);
        t.l = lsum + ng * l_stride;
        t.b_max = static_cast<int32_t>(b_max);
        t.pid = pid;
        t.ct = pid ? s.ct.data() + g * fgp * ct_stride : nullptr;
        t.ct_stride = ct_stride;
        t.n_patterns = n_pat;
        t.ds = s.ds.data() + g * fgp;
        t.bias = args.bias ? s.bias.data() + g * fgp : nullptr;
        const int64_t out_off = ((n0 + nl) * f_all + g * fg) * ohw;
        t.out = args.out ? args.out + out_off : nullptr;
        t.out_dot = args.out_dot ? args.out_dot + out_off : nullptr;
        t.out_fstride = ohw;
        spec.tile(t);
      }
    });
  }
}

}  // namespace internal
}  // namespace binmx

/*
 * binmx core: driver of the direct binary convolution and of the binary dense layer
 * (formulas in bconv.h, kernel contract in bconv_kernels.h). ISA-neutral, base flags.
 *
 * Planes. For image n and group g, padded row r (0 <= r < H + 2 ph) and padded column c, the
 * pixel word P[r][c][wd] holds the signs of channels g*Cg + 64 wd .. (pad word outside the
 * image: 0 for pad_value 0 / +1, ones on the true channel bits for -1). For every tap column
 * j < kw and row phase s < min(stride_h, H + 2 ph) it is stored as
 *     plane(j, s, wd)[rr * OW + ox] = P[rr * stride_h + s][ox * stride_w + j * dilate_w][wd]
 * so tap (i, j) of output pixel q = oy * OW + ox is plane(j, (i*dh) % sh, wd)[q + (i*dh)/sh * OW]:
 * consecutive output pixels (across output rows too) read consecutive words, which is what
 * lets the kernel keep whole vectors of output pixels in its registers.
 *
 * Border correction (pad_value 0). The valid taps of output row oy are a range
 * [ilo, ihi) of i (same for columns), so a pixel's padded-tap set is given by its (row class,
 * column class); pid[q] = row_class * n_col_classes + col_class, with class 0 = interior, and
 *     ct[f][pid] = sum_{padded taps t} S[f][t],   S[f][t] = Cg - 2 popcount(W[f][t])
 * (rows of ct_stride >= 16 entries, so a vector kernel can permute a row by pid).
 * (a padded tap is counted as +1 * sgn(w) by the kernel and must count 0).
 */
#include "bconv.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "axis_classes.h"
#include "bconv_kernels.h"
#include "parallel.h"
#include "scratch.h"

namespace binmx {

namespace internal {

BconvSpec BconvFor(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      break;
    case Isa::kAvx2:
#ifdef BINMX_BUILT_AVX2
      return Avx2Bconv();
#else
      break;
#endif
    case Isa::kAvx512:
#ifdef BINMX_BUILT_AVX512
      return Avx512Bconv();
#else
      break;
#endif
    case Isa::kNeon:
#ifdef BINMX_BUILT_NEON
      return NeonBconv();
#else
      break;
#endif
  }
  return ScalarBconv();
}

void AxisClasses(int64_t out, int64_t in, int64_t stride, int64_t pad, int64_t dil, int64_t k,
                 std::vector<int64_t>* cls, std::vector<std::pair<int64_t, int64_t>>* ranges) {
  cls->assign(static_cast<size_t>(out), 0);
  ranges->assign(1, {0, k});
  for (int64_t o = 0; o < out; ++o) {
    int64_t lo = 0, hi = k;
    while (lo < k && o * stride - pad + lo * dil < 0) ++lo;
    while (hi > lo && o * stride - pad + (hi - 1) * dil >= in) --hi;
    int64_t id = -1;
    for (size_t r = 0; r < ranges->size(); ++r) {
      if ((*ranges)[r].first == lo && (*ranges)[r].second == hi) id = static_cast<int64_t>(r);
    }
    if (id < 0) {
      id = static_cast<int64_t>(ranges->size());
      ranges->push_back({lo, hi});
    }
    (*cls)[o] = id;
  }
}

}  // namespace internal

namespace {

using internal::BconvSpec;
using internal::BconvTile;
using internal::kVecSlack;

using internal::Scratch;

struct CallScratch {
  Scratch<uint64_t> planes, dense_x;
  Scratch<float> dense_t, wt;
  std::vector<int32_t> pid, ct, pop, prefix;
  std::vector<int64_t> koff, y_class, x_class;
  std::vector<uint64_t> channel_bits, pad_word, w_masked;
  std::vector<char> row_used;
  BinaryConvTables tables;  // built per call when the caller gives none
};

CallScratch& ThreadScratch() {
  thread_local CallScratch s;
  return s;
}

void Require(bool ok, const char* what) {
  if (!ok) throw std::invalid_argument(what);
}

// Packed weights (rows of `words` words, `bits` valid bits a row) with the bits past `bits`
// cleared: `w` itself when they are already clear (the packers' output), else a masked copy
// in *copy. Bits past the true depth are ignored, as those of packed inputs are, so a packed
// tensor from elsewhere gives the exact result instead of an offset.
const uint64_t* MaskedWeights(const uint64_t* w, int64_t rows, int64_t words, int64_t bits,
                              std::vector<uint64_t>* copy) {
  if (bits % 64 == 0) return w;
  const uint64_t valid = (uint64_t{1} << (bits % 64)) - 1;
  const uint64_t* last = w + (words - 1);
  int64_t r = 0;
  while (r < rows && (last[r * words] & ~valid) == 0) ++r;
  if (r == rows) return w;
  copy->assign(w, w + rows * words);
  for (int64_t i = 0; i < rows; ++i) (*copy)[i * words + words - 1] &= valid;
  return copy->data();
}

// The weight- and geometry-only part of BinaryConv2d (BinaryConvTables); s holds temporaries.
void BuildTables(const uint64_t* w_in, const Conv2dParams& p, const BconvSpec& spec, CallScratch* s,
                 BinaryConvTables* t) {
  const int64_t h = p.in_h, w = p.in_w, f_all = p.num_filter;
  const int64_t cg = p.GroupChannels(), words = p.TapWords();
  const int64_t kh = p.kernel_h, kw = p.kernel_w, taps = kh * kw, kwords = taps * words;
  const int64_t sh = p.stride_h, sw = p.stride_w, ph = p.pad_h, pw = p.pad_w;
  const int64_t dh = p.dilate_h, dw = p.dilate_w;
  const int64_t oh = p.OutH(), ow = p.OutW(), ohw = oh * ow;
  const int64_t hp = h + 2 * ph, phases = p.Phases();
  const int64_t rows_p = (hp + phases - 1) / phases;
  const int64_t plane = rows_p * ow + kVecSlack;
  t->p = p;
  t->w = MaskedWeights(w_in, f_all * taps, words, cg, &t->w_copy);
  const uint64_t* w_packed = t->w;
  // Tap-word offsets into the planes of one (image, group).
  t->koff.resize(static_cast<size_t>(kwords));
  for (int64_t i = 0; i < kh; ++i) {
    for (int64_t j = 0; j < kw; ++j) {
      for (int64_t wd = 0; wd < words; ++wd) {
        const int64_t k = (i * kw + j) * words + wd;
        t->koff[k] = ((j * phases + (i * dh) % sh) * words + wd) * plane + ((i * dh) / sh) * ow;
      }
    }
  }

  // Zero-padding correction table: ct[f][pattern] = sum of S[f][t] over the pattern's
  // padded taps (pattern 0, all taps valid, is 0), ct_stride >= 16 entries per filter.
  t->corrected = false;
  t->ct_stride = 16;
  t->n_patterns = 1;
  t->pid.clear();
  t->ct.clear();
  if (p.pad_value == 0 && (ph > 0 || pw > 0)) {
    std::vector<std::pair<int64_t, int64_t>> y_ranges, x_ranges;
    internal::AxisClasses(oh, h, sh, ph, dh, kh, &s->y_class, &y_ranges);
    internal::AxisClasses(ow, w, sw, pw, dw, kw, &s->x_class, &x_ranges);
    const int64_t n_yc = static_cast<int64_t>(y_ranges.size());
    const int64_t n_xc = static_cast<int64_t>(x_ranges.size());
    if (n_yc > 1 || n_xc > 1) {
      const int64_t n_pat = n_yc * n_xc;
      const int64_t ct_stride = (n_pat + 15) / 16 * 16;
      t->n_patterns = n_pat;
      t->ct_stride = ct_stride;
      t->pid.assign(static_cast<size_t>(ohw + kVecSlack), 0);
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          t->pid[oy * ow + ox] = static_cast<int32_t>(s->y_class[oy] * n_xc + s->x_class[ox]);
        }
      }
      // 2-D prefix sums P[i][j] of S[f][t] over the kh x kw taps, for all filters at once
      // (filter innermost: vector loops); a pattern's padded sum is the total minus the sum
      // over its valid rectangle of rows x cols.
      s->pop.resize(static_cast<size_t>(f_all * taps));
      spec.pop_rows(w_packed, f_all * taps, words, s->pop.data());
      const int32_t cg32 = static_cast<int32_t>(cg);
      const int64_t pw1 = kw + 1;
      s->prefix.assign(static_cast<size_t>((kh + 1) * pw1 * f_all), 0);
      int32_t* pre = s->prefix.data();
      const int32_t* pop = s->pop.data();
      for (int64_t i = 0; i < kh; ++i) {
        for (int64_t j = 0; j < kw; ++j) {
          int32_t* dst = pre + ((i + 1) * pw1 + j + 1) * f_all;
          const int32_t* up = pre + (i * pw1 + j + 1) * f_all;
          const int32_t* left = pre + ((i + 1) * pw1 + j) * f_all;
          const int32_t* diag = pre + (i * pw1 + j) * f_all;
          const int32_t* pt = pop + i * kw + j;  // pop[f * taps + t]
          for (int64_t f = 0; f < f_all; ++f) {
            dst[f] = up[f] + left[f] - diag[f] + (cg32 - 2 * pt[f * taps]);
          }
        }
      }
      t->ct.assign(static_cast<size_t>(f_all * ct_stride), 0);
      int32_t* ct_rows = t->ct.data();
      const int32_t* total = pre + (kh * pw1 + kw) * f_all;
      for (int64_t yc = 0; yc < n_yc; ++yc) {
        const int64_t i0 = y_ranges[yc].first, i1 = y_ranges[yc].second;
        for (int64_t xc = 0; xc < n_xc; ++xc) {
          const int64_t j0 = x_ranges[xc].first, j1 = x_ranges[xc].second;
          const int32_t* a = pre + (i1 * pw1 + j1) * f_all;
          const int32_t* b = pre + (i0 * pw1 + j1) * f_all;
          const int32_t* c = pre + (i1 * pw1 + j0) * f_all;
          const int32_t* d = pre + (i0 * pw1 + j0) * f_all;
          int32_t* col = ct_rows + yc * n_xc + xc;
          for (int64_t f = 0; f < f_all; ++f) {
            col[f * ct_stride] = total[f] - (a[f] - b[f] - c[f] + d[f]);
          }
        }
      }
      t->corrected = true;
    }
  }
}

bool SameGeometry(const Conv2dParams& a, const Conv2dParams& b) {
  return a.channels == b.channels && a.in_h == b.in_h && a.in_w == b.in_w &&
         a.num_filter == b.num_filter && a.kernel_h == b.kernel_h && a.kernel_w == b.kernel_w &&
         a.stride_h == b.stride_h && a.stride_w == b.stride_w && a.pad_h == b.pad_h &&
         a.pad_w == b.pad_w && a.dilate_h == b.dilate_h && a.dilate_w == b.dilate_w &&
         a.groups == b.groups && a.pad_value == b.pad_value;
}

}  // namespace

void PrepareBinaryConv(const uint64_t* w_packed, const Conv2dParams& p, Isa isa,
                       BinaryConvTables* out) {
  ValidateConv2dParams(p);
  Require(w_packed != nullptr && out != nullptr, "PrepareBinaryConv: null pointer");
  RequireIsa(isa);
  Require(p.kernel_h * p.kernel_w * p.GroupChannels() < (int64_t{1} << 24),
          "PrepareBinaryConv: depth kh*kw*C/groups must be < 2^24 (exact in float)");
  BuildTables(w_packed, p, internal::BconvFor(isa), &ThreadScratch(), out);
}

void BinaryConv2d(const BinaryConvArgs& args, const Conv2dParams& p, const GemmConfig& config) {
  ValidateConv2dParams(p);
  if (p.batch == 0) return;
  Require(args.w_packed != nullptr || args.tables != nullptr,
          "BinaryConv2d: null pointer (w_packed or prepared tables are required)");
  Require((args.x != nullptr) != (args.x_bits != nullptr),
          "BinaryConv2d: exactly one of x and x_bits is required");
  Require((args.out != nullptr) != (args.out_bits != nullptr),
          "BinaryConv2d: exactly one of out and out_bits is required");
  Require((args.in_scale == nullptr) == (args.in_shift == nullptr),
          "BinaryConv2d: in_scale and in_shift must be given together");
  Require(args.x_bits == nullptr || args.in_scale == nullptr,
          "BinaryConv2d: x_bits (packed input) takes no input affine");
  Require(args.out_bits == nullptr ||
              (args.out_scale != nullptr && args.out_shift != nullptr && args.residual == nullptr),
          "BinaryConv2d: out_bits needs out_scale and out_shift, and no residual");
  Require((args.x_bits == nullptr && args.out_bits == nullptr) || p.groups == 1,
          "BinaryConv2d: packed input / output need groups = 1");
  RequireIsa(config.isa);
  const BconvSpec spec = internal::BconvFor(config.isa);
  const int threads = config.threads > 0 ? config.threads : DefaultThreads();

  const int64_t n_img = p.batch, c_all = p.channels, h = p.in_h, w = p.in_w;
  const int64_t f_all = p.num_filter, g_count = p.groups;
  const int64_t cg = p.GroupChannels(), fg = p.GroupFilters(), words = p.TapWords();
  const int64_t kh = p.kernel_h, kw = p.kernel_w, taps = kh * kw, kwords = taps * words;
  const int64_t sh = p.stride_h, sw = p.stride_w, ph = p.pad_h, pw = p.pad_w;
  const int64_t dh = p.dilate_h, dw = p.dilate_w;
  const int64_t oh = p.OutH(), ow = p.OutW(), ohw = oh * ow, hw = h * w;
  // Row phases: min(stride_h, hp) (a padded row r sits in phase r % stride_h < hp).
  const int64_t hp = h + 2 * ph, wp = w + 2 * pw, phases = p.Phases();
  const int64_t rows_p = (hp + phases - 1) / phases;
  const int64_t plane = rows_p * ow + kVecSlack;
  const int64_t ig_words = kw * phases * words * plane;  // per (image, group)
  const int64_t depth = taps * cg;
  Require(depth < (int64_t{1} << 24),
          "BinaryConv2d: depth kh*kw*C/groups must be < 2^24 (exact in float)");

  CallScratch& s = ThreadScratch();
  uint64_t* planes = s.planes.Get(static_cast<size_t>(BconvPlaneWords(p)));

  // channel_bits[wd]: the true channel bits of word wd. Pad words: +1 (bit 0) for pad_value
  // 0 / +1; -1 on the true channel bits for -1.
  std::vector<uint64_t>& channel_bits = s.channel_bits;
  std::vector<uint64_t>& pad_word = s.pad_word;
  channel_bits.resize(static_cast<size_t>(words));
  pad_word.resize(static_cast<size_t>(words));
  for (int64_t wd = 0; wd < words; ++wd) {
    const int64_t bits = std::min<int64_t>(64, cg - wd * 64);
    channel_bits[wd] = bits == 64 ? ~uint64_t{0} : ((uint64_t{1} << bits) - 1);
    pad_word[wd] = p.pad_value == -1 ? channel_bits[wd] : 0;
  }

  // 1. Packing pass, one task per (image, group, padded row). Only the padded rows some tap
  // reads (r = oy * stride_h + i * dilate_h) are packed: a strided 1x1 convolution (ResNet's
  // downsampling shortcut) reads every other row. The planes' other rows are never read.
  std::vector<char>& row_used = s.row_used;
  row_used.assign(static_cast<size_t>(hp), 0);
  for (int64_t oy = 0; oy < oh; ++oy) {
    for (int64_t i = 0; i < kh; ++i) row_used[oy * sh + i * dh] = 1;
  }
  const float* x = args.x;
  const uint64_t* x_bits = args.x_bits;
  const float* in_scale = args.in_scale;
  const float* in_shift = args.in_shift;
  ParallelFor(n_img * g_count * hp, threads, [&](int64_t begin, int64_t end) {
    thread_local Scratch<uint64_t> row_scratch;
    uint64_t* rb = row_scratch.Get(static_cast<size_t>(words * wp));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task % hp, ng = task / hp, g = ng % g_count, n = ng / g_count;
      if (!row_used[r]) continue;
      const bool pad_row = r < ph || r >= ph + h;
      for (int64_t wd = 0; wd < words; ++wd) {
        uint64_t* row = rb + wd * wp;
        if (pad_row) {
          std::fill(row, row + wp, pad_word[wd]);
          continue;
        }
        std::fill(row, row + pw, pad_word[wd]);
        std::fill(row + pw + w, row + wp, pad_word[wd]);
        const int64_t c0 = g * cg + wd * 64;
        const int n_ch = static_cast<int>(std::min<int64_t>(64, cg - wd * 64));
        if (x_bits != nullptr) {  // groups = 1: words == WordsFor(C)
          const uint64_t valid = channel_bits[wd];
          const uint64_t* src = x_bits + (n * h + (r - ph)) * w * words + wd;
          for (int64_t xx = 0; xx < w; ++xx) row[pw + xx] = src[xx * words] & valid;
          continue;
        }
        spec.pack(x + (n * c_all + c0) * hw + (r - ph) * w, hw, n_ch, w,
                  in_scale ? in_scale + c0 : nullptr, in_shift ? in_shift + c0 : nullptr, row + pw);
      }
      const int64_t rr = r / sh, phase = r % sh;
      uint64_t* base = planes + ng * ig_words + rr * ow;
      for (int64_t j = 0; j < kw; ++j) {
        for (int64_t wd = 0; wd < words; ++wd) {
          uint64_t* dst = base + ((j * phases + phase) * words + wd) * plane;
          const uint64_t* src = rb + wd * wp + j * dw;
          if (sw == 1) {
            std::memcpy(dst, src, sizeof(uint64_t) * ow);
          } else {
            for (int64_t ox = 0; ox < ow; ++ox) dst[ox] = src[ox * sw];
          }
        }
      }
    }
  });

  // 2-3. Tap offsets and the zero-padding correction table (prepared or built now).
  const BinaryConvTables* tb = args.tables;
  if (tb == nullptr) {
    BuildTables(args.w_packed, p, spec, &s, &s.tables);
    tb = &s.tables;
  } else {
    Require(SameGeometry(tb->p, p),
            "BinaryConv2d: the prepared tables were built for another geometry");
  }
  const uint64_t* w_packed = tb->w;
  const int32_t* pid = tb->corrected ? tb->pid.data() : nullptr;
  const int64_t ct_stride = tb->ct_stride, n_pat = tb->n_patterns;

  // 4. Kernel tasks: (image, group, pixel chunk, filter chunk).
  constexpr int64_t kPixChunk = 240, kFilterChunk = 64;  // a filter chunk = one output word
  static_assert(kFilterChunk == 64, "packed output writes word fc of a filter chunk fc");
  const int64_t q_chunks = (ohw + kPixChunk - 1) / kPixChunk;
  const int64_t f_chunks = (fg + kFilterChunk - 1) / kFilterChunk;
  const int64_t* koff = tb->koff.data();
  const int32_t* ct = tb->ct.data();
  const int64_t out_words = WordsFor(f_all);
  ParallelFor(n_img * g_count * q_chunks * f_chunks, threads, [&](int64_t begin, int64_t end) {
    thread_local Scratch<float> tile_out;
    thread_local Scratch<uint64_t> tile_words;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t fc = task % f_chunks;
      const int64_t qc = (task / f_chunks) % q_chunks;
      const int64_t ng = task / (f_chunks * q_chunks), g = ng % g_count, n = ng / g_count;
      BconvTile t;
      t.planes = planes + ng * ig_words;
      t.koff = koff;
      t.kwords = kwords;
      t.w = w_packed + g * fg * kwords;
      t.f0 = fc * kFilterChunk;
      t.f1 = std::min(fg, t.f0 + kFilterChunk);
      t.q0 = qc * kPixChunk;
      t.q1 = std::min(ohw, t.q0 + kPixChunk);
      t.k_depth = static_cast<int32_t>(depth);
      t.pid = pid;
      t.ct = pid ? ct + g * fg * ct_stride : nullptr;
      t.ct_stride = ct_stride;
      t.n_patterns = n_pat;
      t.alpha = args.alpha ? args.alpha + g * fg : nullptr;
      t.bias = args.bias ? args.bias + g * fg : nullptr;
      const int64_t out_off = (n * f_all + g * fg) * ohw;
      t.residual = args.residual ? args.residual + out_off : nullptr;
      if (args.out_bits == nullptr) {
        t.out = args.out + out_off;
        t.out_fstride = ohw;
        spec.tile(t);
        continue;
      }
      // Packed output (groups = 1): the tile's floats go to a small scratch, in coordinates
      // relative to the tile, then through the packing pass with the next layer's affine.
      const int64_t q0 = t.q0, nq = t.q1 - t.q0, f0 = t.f0, nf = t.f1 - t.f0;
      t.planes += q0;
      if (t.pid != nullptr) t.pid += q0;
      t.w += f0 * kwords;
      if (t.ct != nullptr) t.ct += f0 * ct_stride;
      if (t.alpha != nullptr) t.alpha += f0;
      if (t.bias != nullptr) t.bias += f0;
      t.q0 = 0;
      t.q1 = nq;
      t.f0 = 0;
      t.f1 = nf;
      float* sc = tile_out.Get(static_cast<size_t>(kFilterChunk * kPixChunk));
      t.out = sc;
      t.out_fstride = kPixChunk;
      spec.tile(t);
      uint64_t* bits = args.out_bits + (n * ohw + q0) * out_words + fc;  // word fc: f0 = 64 fc
      uint64_t* dst = out_words == 1 ? bits : tile_words.Get(static_cast<size_t>(nq));
      spec.pack(sc, kPixChunk, static_cast<int>(nf), nq, args.out_scale + f0, args.out_shift + f0,
                dst);
      if (out_words != 1) {
        for (int64_t q = 0; q < nq; ++q) bits[q * out_words] = dst[q];
      }
    }
  });
}

void BinaryDense(const BinaryDenseArgs& args, int64_t rows, int64_t depth, int64_t hidden,
                 const GemmConfig& config) {
  const auto fits = [](int64_t x, int64_t y) {
    int64_t r;
    return !__builtin_mul_overflow(x, y, &r) && r <= kMaxConvElements;
  };
  if (rows < 0 || depth <= 0 || depth > kMaxConvDim || hidden <= 0 || hidden > kMaxConvDim ||
      !fits(rows, depth) || !fits(hidden, depth) || !fits(rows, hidden)) {
    throw std::invalid_argument(
        "BinaryDense: need rows >= 0, 1 <= depth, hidden <= 2^31-1 and rows*depth, "
        "hidden*depth, rows*hidden <= 2^40; got rows=" +
        std::to_string(rows) + " depth=" + std::to_string(depth) +
        " hidden=" + std::to_string(hidden));
  }
  if (rows == 0) return;
  Require(args.x != nullptr && args.w_packed != nullptr && args.out != nullptr,
          "BinaryDense: null pointer (x, w_packed and out are required)");
  Require((args.in_scale == nullptr) == (args.in_shift == nullptr),
          "BinaryDense: in_scale and in_shift must be given together");
  RequireIsa(config.isa);
  const int64_t words = WordsFor(depth);
  CallScratch& s = ThreadScratch();
  const uint64_t* w_packed = MaskedWeights(args.w_packed, hidden, words, depth, &s.w_masked);
  uint64_t* xb = s.dense_x.Get(static_cast<size_t>(rows * words));
  if (args.in_scale != nullptr) {
    internal::BconvFor(config.isa)
        .pack_affine(args.x, rows, depth, depth, args.in_scale, args.in_shift, xb);
  } else {
    PackRows(args.x, rows, depth, depth, xb, config.isa);
  }
  if (rows == 1) {
    // C[h][0] = out[h]: the per-row epilogue of the GEMM is the per-hidden-unit one.
    XnorGemmF32(w_packed, xb, hidden, 1, words, depth, args.alpha, args.bias, args.out, 1, config);
    return;
  }
  float* tmp = s.dense_t.Get(static_cast<size_t>(hidden * rows));
  XnorGemmF32(w_packed, xb, hidden, rows, words, depth, args.alpha, args.bias, tmp, rows, config);
  constexpr int64_t kBlock = 32;  // cache-blocked transpose into (rows, hidden)
  for (int64_t h0 = 0; h0 < hidden; h0 += kBlock) {
    for (int64_t m0 = 0; m0 < rows; m0 += kBlock) {
      const int64_t h1 = std::min(hidden, h0 + kBlock), m1 = std::min(rows, m0 + kBlock);
      for (int64_t m = m0; m < m1; ++m) {
        for (int64_t hh = h0; hh < h1; ++hh) args.out[m * hidden + hh] = tmp[hh * rows + m];
      }
    }
  }
}

void PackConvWeightsFast(const float* wf, const Conv2dParams& p, uint64_t* out) {
  ValidateConv2dParams(p);
  const int64_t cg = p.GroupChannels(), taps = p.kernel_h * p.kernel_w, f_all = p.num_filter;
  float* t = ThreadScratch().wt.Get(static_cast<size_t>(f_all * taps * cg));
  for (int64_t f = 0; f < f_all; ++f) {
    const float* src = wf + f * cg * taps;
    float* dst = t + f * taps * cg;
    for (int64_t c = 0; c < cg; ++c) {
      for (int64_t k = 0; k < taps; ++k) dst[k * cg + c] = src[c * taps + k];
    }
  }
  PackRows(t, f_all * taps, cg, cg, out);
}

}  // namespace binmx

/*
 * binmx core: binary convolution / dense forward (input packing, bit im2col, XnorGemm, border
 * correction, epilogue). See conv.h for layouts and formulas; the float helpers are in
 * float_conv.cc.
 */
#include "conv.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace binmx {

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(BINMX_NO_TARGET_CLONES)
#define BINMX_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define BINMX_CLONES
#endif

// Grow-only per-thread scratch (no zero fill): repeated calls neither allocate nor fault in
// fresh pages. Each buffer keeps the size of the largest call made on its thread.
template <typename T>
class Scratch {
 public:
  T* Get(size_t n) {
    if (n > cap_) {
      buf_.reset(new T[n]);
      cap_ = n;
    }
    return buf_.get();
  }

 private:
  std::unique_ptr<T[]> buf_;
  size_t cap_ = 0;
};

struct ConvScratch {
  Scratch<uint64_t> input_words, patches, bits;
  Scratch<int32_t> acc;
};

ConvScratch& ThreadScratch() {
  thread_local ConvScratch scratch;
  return scratch;
}

void Require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

std::string Field(const char* name, int64_t v) {
  return std::string("Conv2dParams.") + name + "=" + std::to_string(v);
}

// bits[pix] |= (xc[pix] < 0) << bit, for pix < hw.
BINMX_CLONES void OrSignBits(const float* __restrict xc, int64_t hw, int bit,
                             uint64_t* __restrict bits) {
  const uint64_t one = uint64_t{1} << bit;
  for (int64_t i = 0; i < hw; ++i) bits[i] |= (xc[i] < 0.0f) ? one : uint64_t{0};
}

// xb[((n * hw + pix) * groups + g) * words + wd]: channels of group g at pixel pix, packed.
void PackInputChannelsLast(const float* x, const Conv2dParams& p, uint64_t* xb) {
  const int64_t hw = p.in_h * p.in_w;
  const int64_t cg = p.GroupChannels();
  const int64_t words = p.TapWords();
  const int64_t g_count = p.groups;
  uint64_t* bits = ThreadScratch().bits.Get(static_cast<size_t>(hw));
  for (int64_t n = 0; n < p.batch; ++n) {
    for (int64_t g = 0; g < g_count; ++g) {
      for (int64_t wd = 0; wd < words; ++wd) {
        const int64_t c0 = g * cg + wd * 64;
        const int64_t len = std::min<int64_t>(64, cg - wd * 64);
        std::fill(bits, bits + hw, uint64_t{0});
        for (int64_t c = 0; c < len; ++c) {
          OrSignBits(x + (n * p.channels + c0 + c) * hw, hw, static_cast<int>(c), bits);
        }
        uint64_t* dst = xb + (n * hw * g_count + g) * words + wd;
        const int64_t step = g_count * words;
        for (int64_t pix = 0; pix < hw; ++pix) dst[pix * step] = bits[pix];
      }
    }
  }
}

// sums[r] = cg - 2 * popcount(words of tap r) = sum of the tap's +-1 weights, for rows taps.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(BINMX_NO_TARGET_CLONES)
__attribute__((target_clones("popcnt", "default")))
#endif
void TapSums(const uint64_t* w, int64_t rows, int64_t words, int64_t cg, int32_t* sums) {
  for (int64_t r = 0; r < rows; ++r) {
    int64_t neg = 0;
    for (int64_t wd = 0; wd < words; ++wd) neg += __builtin_popcountll(w[r * words + wd]);
    sums[r] = static_cast<int32_t>(cg - 2 * neg);
  }
}

}  // namespace

void ValidateConv2dParams(const Conv2dParams& p) {
  Require(p.batch >= 0, Field("batch", p.batch) + " must be >= 0");
  Require(p.channels > 0, Field("channels", p.channels) + " must be > 0");
  Require(p.in_h > 0 && p.in_w > 0, "Conv2dParams: input height and width must be > 0, got " +
                                        std::to_string(p.in_h) + "x" + std::to_string(p.in_w));
  Require(p.num_filter > 0, Field("num_filter", p.num_filter) + " must be > 0");
  Require(p.kernel_h > 0 && p.kernel_w > 0, "Conv2dParams: kernel must be positive");
  Require(p.stride_h > 0 && p.stride_w > 0, "Conv2dParams: stride must be positive");
  Require(p.dilate_h > 0 && p.dilate_w > 0, "Conv2dParams: dilate must be positive");
  Require(p.pad_h >= 0 && p.pad_w >= 0, "Conv2dParams: pad must be >= 0");
  Require(p.groups > 0, Field("groups", p.groups) + " must be > 0");
  Require(p.channels % p.groups == 0,
          Field("channels", p.channels) + " must be divisible by groups=" +
              std::to_string(p.groups));
  Require(p.num_filter % p.groups == 0,
          Field("num_filter", p.num_filter) + " must be divisible by groups=" +
              std::to_string(p.groups));
  Require(p.pad_value == 0 || p.pad_value == 1 || p.pad_value == -1,
          Field("pad_value", p.pad_value) + " must be 0, 1 or -1");
  Require(p.in_h + 2 * p.pad_h >= p.dilate_h * (p.kernel_h - 1) + 1 &&
              p.in_w + 2 * p.pad_w >= p.dilate_w * (p.kernel_w - 1) + 1,
          "Conv2dParams: the dilated kernel is larger than the padded input");
}

int64_t PackedConvWeightWords(const Conv2dParams& p) {
  return p.num_filter * p.kernel_h * p.kernel_w * p.TapWords();
}

void PackConvWeights(const float* w, const Conv2dParams& p, uint64_t* out) {
  ValidateConv2dParams(p);
  const int64_t cg = p.GroupChannels(), taps = p.kernel_h * p.kernel_w, words = p.TapWords();
  std::memset(out, 0, sizeof(uint64_t) * PackedConvWeightWords(p));
  for (int64_t f = 0; f < p.num_filter; ++f) {
    const float* wf = w + f * cg * taps;
    uint64_t* of = out + f * taps * words;
    for (int64_t c = 0; c < cg; ++c) {
      for (int64_t t = 0; t < taps; ++t) {
        if (wf[c * taps + t] < 0.0f) of[t * words + c / 64] |= uint64_t{1} << (c % 64);
      }
    }
  }
}

void UnpackConvWeights(const uint64_t* words_in, const Conv2dParams& p, float* w) {
  ValidateConv2dParams(p);
  const int64_t cg = p.GroupChannels(), taps = p.kernel_h * p.kernel_w, words = p.TapWords();
  for (int64_t f = 0; f < p.num_filter; ++f) {
    const uint64_t* wf = words_in + f * taps * words;
    float* of = w + f * cg * taps;
    for (int64_t c = 0; c < cg; ++c) {
      for (int64_t t = 0; t < taps; ++t) {
        const bool neg = (wf[t * words + c / 64] >> (c % 64)) & 1u;
        of[c * taps + t] = neg ? -1.0f : 1.0f;
      }
    }
  }
}

void BinaryConv2dForward(const float* x, const uint64_t* w_packed, const float* alpha,
                         const float* bias, float* out, const Conv2dParams& p,
                         const GemmConfig& config) {
  ValidateConv2dParams(p);
  if (p.batch == 0) return;
  Require(x != nullptr && w_packed != nullptr && out != nullptr,
          "BinaryConv2dForward: null pointer");
  const int64_t n_img = p.batch, f_all = p.num_filter, g_count = p.groups;
  const int64_t cg = p.GroupChannels(), fg = p.GroupFilters(), words = p.TapWords();
  const int64_t kh = p.kernel_h, kw = p.kernel_w, taps = kh * kw, row_words = taps * words;
  const int64_t oh = p.OutH(), ow = p.OutW(), ohw = oh * ow, hw = p.in_h * p.in_w;
  const int64_t depth = taps * cg;
  Require(depth < (int64_t{1} << 24), "BinaryConv2dForward: depth kh*kw*C/groups must be < 2^24 (exact in float)");
  const int64_t cols = n_img * ohw;

  // 1. channels-last sign words of the input.
  ConvScratch& scratch = ThreadScratch();
  uint64_t* xb = scratch.input_words.Get(static_cast<size_t>(n_img * hw * g_count * words));
  PackInputChannelsLast(x, p, xb);

  // Words of a padded tap: +1 (bit 0) for pad_value 0 / +1, -1 on the true channels for -1.
  std::vector<uint64_t> pad_words(words, 0);
  if (p.pad_value == -1) {
    for (int64_t wd = 0; wd < words; ++wd) {
      const int64_t bits = std::min<int64_t>(64, cg - wd * 64);
      pad_words[wd] = bits == 64 ? ~uint64_t{0} : ((uint64_t{1} << bits) - 1);
    }
  }

  // Output rows / columns whose taps all fall inside the image: [y_lo, y_hi) x [x_lo, x_hi).
  auto interior = [](int64_t out, int64_t in, int64_t stride, int64_t pad, int64_t dil,
                     int64_t k, int64_t* lo, int64_t* hi) {
    *lo = 0;
    while (*lo < out && *lo * stride - pad < 0) ++*lo;
    *hi = out;
    while (*hi > *lo && (*hi - 1) * stride - pad + (k - 1) * dil >= in) --*hi;
  };
  int64_t y_lo, y_hi, x_lo, x_hi;
  interior(oh, p.in_h, p.stride_h, p.pad_h, p.dilate_h, kh, &y_lo, &y_hi);
  interior(ow, p.in_w, p.stride_w, p.pad_w, p.dilate_w, kw, &x_lo, &x_hi);

  // Border pixels (at least one padded tap), each with the id of its set of padded taps
  // ("pattern"; a 3x3 kernel with pad 1 has 8: 4 edges, 4 corners).
  std::vector<int64_t> border_pix, border_pattern, pattern_start{0}, pattern_taps;
  std::map<std::vector<int64_t>, int64_t> pattern_ids;
  std::vector<int64_t> taps_here;
  for (int64_t oy = 0; oy < oh; ++oy) {
    const bool row_inside = oy >= y_lo && oy < y_hi;
    for (int64_t ox = 0; ox < ow; ++ox) {
      if (row_inside && ox >= x_lo && ox < x_hi) {
        ox = x_hi - 1;  // skip the interior of this row
        continue;
      }
      taps_here.clear();
      for (int64_t i = 0; i < kh; ++i) {
        const int64_t iy = oy * p.stride_h - p.pad_h + i * p.dilate_h;
        for (int64_t j = 0; j < kw; ++j) {
          const int64_t ix = ox * p.stride_w - p.pad_w + j * p.dilate_w;
          if (iy < 0 || iy >= p.in_h || ix < 0 || ix >= p.in_w) taps_here.push_back(i * kw + j);
        }
      }
      if (taps_here.empty()) continue;
      auto it = pattern_ids.find(taps_here);
      if (it == pattern_ids.end()) {
        it = pattern_ids.emplace(taps_here, static_cast<int64_t>(pattern_ids.size())).first;
        pattern_taps.insert(pattern_taps.end(), taps_here.begin(), taps_here.end());
        pattern_start.push_back(static_cast<int64_t>(pattern_taps.size()));
      }
      border_pix.push_back(oy * ow + ox);
      border_pattern.push_back(it->second);
    }
  }
  const int64_t n_patterns = static_cast<int64_t>(pattern_ids.size());

  uint64_t* patches = scratch.patches.Get(static_cast<size_t>(cols * row_words));
  // Batch 1: the GEMM writes float dots straight into the NCHW output (rows = filters).
  // Larger batches: one GEMM over all images into int32 scratch, then scattered to NCHW.
  const bool direct = n_img == 1;
  int32_t* acc = direct ? nullptr : scratch.acc.Get(static_cast<size_t>(fg * cols));
  std::vector<int32_t> tap_sum(static_cast<size_t>(fg * taps));
  std::vector<int32_t> pattern_corr(static_cast<size_t>(n_patterns * fg));
  for (int64_t g = 0; g < g_count; ++g) {
    // 2. bit im2col: one row of taps * words per output pixel, tap-major. Tap-outer, so the
    //    inner loop over output columns is a strided copy with no bounds checks inside
    //    [x_lo_t, x_hi_t), the columns whose tap (i, j) lies inside the image.
    const int64_t pix_step = g_count * words;
    for (int64_t n = 0; n < n_img; ++n) {
      const uint64_t* xn = xb + n * hw * pix_step + g * words;
      uint64_t* pn = patches + n * ohw * row_words;
      for (int64_t i = 0; i < kh; ++i) {
        for (int64_t j = 0; j < kw; ++j) {
          const int64_t t_off = (i * kw + j) * words;
          const int64_t x_off = j * p.dilate_w - p.pad_w;
          int64_t xl = 0, xh = ow;
          while (xl < ow && xl * p.stride_w + x_off < 0) ++xl;
          while (xh > xl && (xh - 1) * p.stride_w + x_off >= p.in_w) --xh;
          for (int64_t oy = 0; oy < oh; ++oy) {
            const int64_t iy = oy * p.stride_h - p.pad_h + i * p.dilate_h;
            uint64_t* dst = pn + oy * ow * row_words + t_off;
            const bool row_pad = iy < 0 || iy >= p.in_h;
            const int64_t a = row_pad ? ow : xl, b = row_pad ? ow : xh;
            for (int64_t ox = 0; ox < a; ++ox) {
              for (int64_t wd = 0; wd < words; ++wd) dst[ox * row_words + wd] = pad_words[wd];
            }
            if (words == 1) {
              const uint64_t* src = xn + (iy * p.in_w + x_off) * pix_step;
              const int64_t sstep = p.stride_w * pix_step;
              for (int64_t ox = a; ox < b; ++ox) dst[ox * row_words] = src[ox * sstep];
            } else {
              for (int64_t ox = a; ox < b; ++ox) {
                const uint64_t* src = xn + (iy * p.in_w + ox * p.stride_w + x_off) * pix_step;
                std::memcpy(dst + ox * row_words, src, sizeof(uint64_t) * words);
              }
            }
            for (int64_t ox = b; ox < ow; ++ox) {
              for (int64_t wd = 0; wd < words; ++wd) dst[ox * row_words + wd] = pad_words[wd];
            }
          }
        }
      }
    }
    // 3. xnor GEMM: acc[fi][n * ohw + pix].
    const uint64_t* wg = w_packed + g * fg * row_words;
    float* out_g = out + g * fg * ohw;  // image 0, filter g * fg
    if (direct) {
      XnorGemmF32(wg, patches, fg, cols, row_words, depth, nullptr, nullptr, out_g, ohw, config);
    } else {
      XnorGemm(wg, patches, fg, cols, row_words, depth, acc, cols, config);
    }

    // 4. zero-padding border correction.
    if (p.pad_value == 0 && !border_pix.empty()) {
      TapSums(wg, fg * taps, words, cg, tap_sum.data());
      // corr[pattern][fi] = sum of the filter's tap sums over the pattern's padded taps.
      for (int64_t q = 0; q < n_patterns; ++q) {
        for (int64_t fi = 0; fi < fg; ++fi) {
          int32_t c = 0;
          for (int64_t t = pattern_start[q]; t < pattern_start[q + 1]; ++t) {
            c += tap_sum[fi * taps + pattern_taps[t]];
          }
          pattern_corr[q * fg + fi] = c;
        }
      }
      for (int64_t fi = 0; fi < fg; ++fi) {
        for (size_t b = 0; b < border_pix.size(); ++b) {
          const int32_t corr = pattern_corr[border_pattern[b] * fg + fi];
          if (direct) {  // exact: both are integers below 2^24
            out_g[fi * ohw + border_pix[b]] -= static_cast<float>(corr);
          } else {
            int32_t* acc_f = acc + fi * cols;
            for (int64_t n = 0; n < n_img; ++n) acc_f[n * ohw + border_pix[b]] -= corr;
          }
        }
      }
    }

    // 5. epilogue into NCHW.
    for (int64_t fi = 0; fi < fg; ++fi) {
      const int64_t f = g * fg + fi;
      const float a = alpha ? alpha[f] : 1.0f;
      const float b = bias ? bias[f] : 0.0f;
      if (direct) {
        if (alpha == nullptr && bias == nullptr) continue;
        float* dst = out_g + fi * ohw;
        for (int64_t q = 0; q < ohw; ++q) dst[q] = dst[q] * a + b;
        continue;
      }
      for (int64_t n = 0; n < n_img; ++n) {
        const int32_t* src = acc + fi * cols + n * ohw;
        float* dst = out + (n * f_all + f) * ohw;
        if (alpha) {
          for (int64_t q = 0; q < ohw; ++q) dst[q] = static_cast<float>(src[q]) * a + b;
        } else {
          for (int64_t q = 0; q < ohw; ++q) dst[q] = static_cast<float>(src[q]) + b;
        }
      }
    }
  }
}

void BinaryDenseForward(const float* x, const uint64_t* w_packed, const float* alpha,
                        const float* bias, float* out, int64_t rows, int64_t depth,
                        int64_t hidden, const GemmConfig& config) {
  Require(rows >= 0 && depth > 0 && hidden > 0, "BinaryDenseForward: bad sizes");
  if (rows == 0) return;
  Require(x != nullptr && w_packed != nullptr && out != nullptr,
          "BinaryDenseForward: null pointer");
  const int64_t words = WordsFor(depth);
  std::vector<uint64_t> xb(static_cast<size_t>(rows * words));
  PackRows(x, rows, depth, depth, xb.data());
  std::vector<int32_t> acc(static_cast<size_t>(rows * hidden));
  XnorGemm(xb.data(), w_packed, rows, hidden, words, depth, acc.data(), hidden, config);
  for (int64_t m = 0; m < rows; ++m) {
    const int32_t* src = acc.data() + m * hidden;
    float* dst = out + m * hidden;
    for (int64_t h = 0; h < hidden; ++h) {
      const float v = static_cast<float>(src[h]);
      dst[h] = (alpha ? v * alpha[h] : v) + (bias ? bias[h] : 0.0f);
    }
  }
}

}  // namespace binmx

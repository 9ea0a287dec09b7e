/*
 * binmx core: convolution geometry checks and the packed conv-weight format (pack / unpack).
 * See conv.h for layouts and formulas; the binary convolution is in bconv.cc, the float
 * helpers in float_conv.cc.
 */
#include "conv.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bconv_kernels.h"

namespace binmx {

namespace {

// The messages are built only when a check fails: ValidateConv2dParams runs on every
// convolution call, and building ten strings each time cost about 1 us per call.
[[noreturn]] void Fail(const std::string& what) { throw std::invalid_argument(what); }

std::string Field(const char* name, int64_t v) {
  return std::string("Conv2dParams.") + name + "=" + std::to_string(v);
}

void InRange(const char* name, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    Fail(Field(name, v) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
}

// The product of `factors` (all >= 0), or kMaxConvElements + 1 when it exceeds
// kMaxConvElements (never wraps).
int64_t BoundedProduct(std::initializer_list<int64_t> factors) {
  int64_t r = 1;
  for (int64_t f : factors) {
    if (f == 0) return 0;
  }
  for (int64_t f : factors) {
    if (__builtin_mul_overflow(r, f, &r) || r > kMaxConvElements) return kMaxConvElements + 1;
  }
  return r;
}

void CheckBuffer(const char* what, std::initializer_list<int64_t> factors) {
  if (BoundedProduct(factors) > kMaxConvElements) {
    std::string text;
    for (int64_t f : factors) text += (text.empty() ? "" : " x ") + std::to_string(f);
    Fail(std::string("Conv2dParams: the ") + what + " (" + text + ") exceeds 2^40 elements");
  }
}

// dilate * (kernel - 1) + 1, or -1 when it does not fit int64.
int64_t DilatedExtent(int64_t dilate, int64_t kernel) {
  int64_t span;
  if (__builtin_mul_overflow(dilate, kernel - 1, &span) || span > INT64_MAX - 1) return -1;
  return span + 1;
}

}  // namespace

void ValidateConv2dAttrs(const Conv2dParams& p) {
  InRange("num_filter", p.num_filter, 1, kMaxConvDim);
  InRange("kernel_h", p.kernel_h, 1, kMaxConvDim);
  InRange("kernel_w", p.kernel_w, 1, kMaxConvDim);
  InRange("stride_h", p.stride_h, 1, INT64_MAX);
  InRange("stride_w", p.stride_w, 1, INT64_MAX);
  InRange("dilate_h", p.dilate_h, 1, INT64_MAX);
  InRange("dilate_w", p.dilate_w, 1, INT64_MAX);
  InRange("pad_h", p.pad_h, 0, kMaxConvDim);
  InRange("pad_w", p.pad_w, 0, kMaxConvDim);
  InRange("groups", p.groups, 1, kMaxConvDim);
  if (p.num_filter % p.groups != 0) {
    Fail(Field("num_filter", p.num_filter) +
         " must be divisible by groups=" + std::to_string(p.groups));
  }
  if (p.pad_value != 0 && p.pad_value != 1 && p.pad_value != -1) {
    Fail(Field("pad_value", p.pad_value) + " must be 0, 1 or -1");
  }
  // The largest padded input is kMaxConvDim + 2 kMaxConvDim < 2^33: a dilated kernel beyond
  // that fits no input.
  constexpr int64_t kMaxPadded = 3 * kMaxConvDim;
  const int64_t eh = DilatedExtent(p.dilate_h, p.kernel_h);
  const int64_t ew = DilatedExtent(p.dilate_w, p.kernel_w);
  if (eh < 0 || eh > kMaxPadded || ew < 0 || ew > kMaxPadded) {
    Fail("Conv2dParams: the dilated kernel (dilate*(kernel-1)+1 with kernel " +
         std::to_string(p.kernel_h) + "x" + std::to_string(p.kernel_w) + ", dilate " +
         std::to_string(p.dilate_h) + "x" + std::to_string(p.dilate_w) +
         ") is larger than any padded input (" + std::to_string(kMaxPadded) + ")");
  }
}

void ValidateConv2dParams(const Conv2dParams& p) {
  InRange("batch", p.batch, 0, kMaxConvDim);
  InRange("channels", p.channels, 1, kMaxConvDim);
  InRange("in_h", p.in_h, 1, kMaxConvDim);
  InRange("in_w", p.in_w, 1, kMaxConvDim);
  ValidateConv2dAttrs(p);
  if (p.channels % p.groups != 0) {
    Fail(Field("channels", p.channels) +
         " must be divisible by groups=" + std::to_string(p.groups));
  }
  // Every term below is < 2^33 after the range checks: no overflow.
  const int64_t hp = p.in_h + 2 * p.pad_h, wp = p.in_w + 2 * p.pad_w;
  const int64_t eh = DilatedExtent(p.dilate_h, p.kernel_h);
  const int64_t ew = DilatedExtent(p.dilate_w, p.kernel_w);
  if (hp < eh || wp < ew) {
    Fail("Conv2dParams: the dilated kernel (" + std::to_string(eh) + "x" + std::to_string(ew) +
         ") is larger than the padded input (" + std::to_string(hp) + "x" + std::to_string(wp) +
         ")");
  }
  const int64_t oh = p.OutH(), ow = p.OutW(), cg = p.GroupChannels();
  CheckBuffer("input batch*channels*in_h*in_w", {p.batch, p.channels, p.in_h, p.in_w});
  CheckBuffer("output batch*num_filter*out_h*out_w", {p.batch, p.num_filter, oh, ow});
  CheckBuffer("weight num_filter*(channels/groups)*kernel_h*kernel_w",
              {p.num_filter, cg, p.kernel_h, p.kernel_w});
  CheckBuffer("packed weight num_filter*kernel_h*kernel_w*words",
              {p.num_filter, p.kernel_h, p.kernel_w, p.TapWords()});
  CheckBuffer("im2col block (channels/groups)*kernel_h*kernel_w*out_h*out_w",
              {cg, p.kernel_h, p.kernel_w, oh, ow});
  CheckBuffer("packing row words*(in_w+2*pad_w)", {p.TapWords(), wp});
  const int64_t phases = p.Phases(), rows = (hp + phases - 1) / phases;
  CheckBuffer("plane (in_h+2*pad_h)/phases*out_w", {rows, ow});
  CheckBuffer(
      "planes batch*groups*kernel_w*phases*words*plane",
      {p.batch, p.groups, p.kernel_w, phases, p.TapWords(), rows * ow + internal::kVecSlack});
}

int64_t BconvPlaneWords(const Conv2dParams& p) {
  const int64_t hp = p.in_h + 2 * p.pad_h, phases = p.Phases();
  const int64_t plane = (hp + phases - 1) / phases * p.OutW() + internal::kVecSlack;
  return p.batch * p.groups * p.kernel_w * phases * p.TapWords() * plane;
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

}  // namespace binmx

/*
 * binmx core: convolution geometry checks and the packed conv-weight format (pack / unpack).
 * See conv.h for layouts and formulas; the binary convolution is in bconv.cc, the float
 * helpers in float_conv.cc.
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

// The messages are built only when a check fails: ValidateConv2dParams runs on every
// convolution call, and building ten strings each time cost about 1 us per call.
[[noreturn]] void Fail(const std::string& what) { throw std::invalid_argument(what); }

std::string Field(const char* name, int64_t v) {
  return std::string("Conv2dParams.") + name + "=" + std::to_string(v);
}

}  // namespace

void ValidateConv2dParams(const Conv2dParams& p) {
  if (p.batch < 0) Fail(Field("batch", p.batch) + " must be >= 0");
  if (p.channels <= 0) Fail(Field("channels", p.channels) + " must be > 0");
  if (p.in_h <= 0 || p.in_w <= 0) {
    Fail("Conv2dParams: input height and width must be > 0, got " + std::to_string(p.in_h) +
         "x" + std::to_string(p.in_w));
  }
  if (p.num_filter <= 0) Fail(Field("num_filter", p.num_filter) + " must be > 0");
  if (p.kernel_h <= 0 || p.kernel_w <= 0) Fail("Conv2dParams: kernel must be positive");
  if (p.stride_h <= 0 || p.stride_w <= 0) Fail("Conv2dParams: stride must be positive");
  if (p.dilate_h <= 0 || p.dilate_w <= 0) Fail("Conv2dParams: dilate must be positive");
  if (p.pad_h < 0 || p.pad_w < 0) Fail("Conv2dParams: pad must be >= 0");
  if (p.groups <= 0) Fail(Field("groups", p.groups) + " must be > 0");
  if (p.channels % p.groups != 0) {
    Fail(Field("channels", p.channels) + " must be divisible by groups=" +
         std::to_string(p.groups));
  }
  if (p.num_filter % p.groups != 0) {
    Fail(Field("num_filter", p.num_filter) + " must be divisible by groups=" +
         std::to_string(p.groups));
  }
  if (p.pad_value != 0 && p.pad_value != 1 && p.pad_value != -1) {
    Fail(Field("pad_value", p.pad_value) + " must be 0, 1 or -1");
  }
  if (p.in_h + 2 * p.pad_h < p.dilate_h * (p.kernel_h - 1) + 1 ||
      p.in_w + 2 * p.pad_w < p.dilate_w * (p.kernel_w - 1) + 1) {
    Fail("Conv2dParams: the dilated kernel is larger than the padded input");
  }
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

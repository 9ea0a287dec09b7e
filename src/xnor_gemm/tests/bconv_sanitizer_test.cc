/*
 * binmx core test of the direct binary convolution and dense layer (bconv.h), self-contained
 * (no framework), built and run under AddressSanitizer + UBSan by
 * tests/test_core_sanitizers.py. Exit code 0 = pass.
 *
 * The kernels read past the valid pixels of their planes by design (whole vectors, kVecSlack
 * words of slack); here every input, weight and output lives in a buffer of exactly its size,
 * so a read or write past one is an ASan report. Each case runs every available ISA with 1, 2
 * and 3 threads against the plain reference below (NCHW, OIHW, sgn(v) = -1 iff v < 0):
 *     dot[n][f][oy][ox] = sum_{c', i, j} apad[n][g*Cg + c'][oy*sh - ph + i*dh][ox*sw - pw + j*dw]
 *                                        * sgn(W[f][c'][i][j])
 *     out = float(dot) * alpha[f] + bias[f] (+ residual), a multiply then an add, each rounded
 * with apad the signs of x (or of x * in_scale[c] + in_shift[c]) extended by pad_value (0, +1 or
 * -1). Integers and floats are compared with ==: the epilogue is not fused on any path.
 * Sizes: channels and filters at word / vector boundaries (1..10, 63-65, 127-129, 511-513).
 */
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <vector>

#include "bconv.h"
#include "conv.h"
#include "xnor_gemm.h"

namespace {

int g_failures = 0;
int g_cases = 0;

#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    if (!(cond)) {                                                         \
      ++g_failures;                                                        \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                   \
      std::fprintf(stderr, "\n");                                          \
      if (g_failures > 20) std::exit(1);                                   \
    }                                                                      \
  } while (0)

using binmx::Conv2dParams;

float Sgn(float v) { return v < 0.0f ? -1.0f : 1.0f; }

// Normal floats with exact +0.0 and -0.0 mixed in (both are +1).
std::vector<float> Random(std::mt19937_64& gen, int64_t count) {
  std::normal_distribution<float> dist;
  std::vector<float> v(static_cast<size_t>(count));
  for (size_t i = 0; i < v.size(); ++i) {
    const uint64_t r = gen() % 16;
    v[i] = r == 0 ? 0.0f : r == 1 ? -0.0f : dist(gen);
  }
  return v;
}

// Affine product and sum rounded separately (volatile keeps the compiler from fusing them).
float Affine(float x, float s, float t) {
  volatile float prod = x * s;
  return prod + t;
}

// Reference integer dots, (N, F, OH, OW). a: the activations before the sign (NCHW).
std::vector<int32_t> RefConv(const std::vector<float>& a, const std::vector<float>& w,
                             const Conv2dParams& p) {
  const int64_t oh = p.OutH(), ow = p.OutW(), cg = p.GroupChannels(), fg = p.GroupFilters();
  std::vector<int32_t> out(static_cast<size_t>(p.batch * p.num_filter * oh * ow));
  for (int64_t n = 0; n < p.batch; ++n) {
    for (int64_t f = 0; f < p.num_filter; ++f) {
      const int64_t g = f / fg;
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          int32_t dot = 0;
          for (int64_t c = 0; c < cg; ++c) {
            for (int64_t i = 0; i < p.kernel_h; ++i) {
              for (int64_t j = 0; j < p.kernel_w; ++j) {
                const int64_t y = oy * p.stride_h - p.pad_h + i * p.dilate_h;
                const int64_t x = ox * p.stride_w - p.pad_w + j * p.dilate_w;
                const bool inside = y >= 0 && y < p.in_h && x >= 0 && x < p.in_w;
                const float av =
                    inside ? Sgn(a[((n * p.channels + g * cg + c) * p.in_h + y) * p.in_w + x])
                           : static_cast<float>(p.pad_value);
                const float wv = Sgn(w[((f * cg + c) * p.kernel_h + i) * p.kernel_w + j]);
                dot += static_cast<int32_t>(av * wv);
              }
            }
          }
          out[((n * p.num_filter + f) * oh + oy) * ow + ox] = dot;
        }
      }
    }
  }
  return out;
}

// Reference packed weight (F, kh, kw, words), bit = w < 0.
std::vector<uint64_t> RefPackWeights(const std::vector<float>& w, const Conv2dParams& p) {
  const int64_t cg = p.GroupChannels(), words = p.TapWords();
  std::vector<uint64_t> out(static_cast<size_t>(binmx::PackedConvWeightWords(p)), 0);
  for (int64_t f = 0; f < p.num_filter; ++f) {
    for (int64_t c = 0; c < cg; ++c) {
      for (int64_t i = 0; i < p.kernel_h; ++i) {
        for (int64_t j = 0; j < p.kernel_w; ++j) {
          if (w[((f * cg + c) * p.kernel_h + i) * p.kernel_w + j] < 0.0f) {
            out[((f * p.kernel_h + i) * p.kernel_w + j) * words + c / 64] |= uint64_t{1}
                                                                             << (c % 64);
          }
        }
      }
    }
  }
  return out;
}

// Pixel words (N, H, W, WordsFor(C)) of NCHW values v: bit c % 64 of word c / 64 = v < 0.
std::vector<uint64_t> RefPackPixels(const std::vector<float>& v, int64_t n, int64_t c, int64_t h,
                                    int64_t w) {
  const int64_t words = binmx::WordsFor(c);
  std::vector<uint64_t> out(static_cast<size_t>(n * h * w * words), 0);
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t ch = 0; ch < c; ++ch) {
      for (int64_t y = 0; y < h; ++y) {
        for (int64_t x = 0; x < w; ++x) {
          if (v[((b * c + ch) * h + y) * w + x] < 0.0f) {
            out[((b * h + y) * w + x) * words + ch / 64] |= uint64_t{1} << (ch % 64);
          }
        }
      }
    }
  }
  return out;
}

struct Options {
  bool epilogue = true;  // alpha and bias
  bool affine = false;   // in_scale / in_shift
  bool residual = false;
  bool packed_in = false;
  bool packed_out = false;
};

// One geometry with the options, every ISA and thread count.
void ConvCase(std::mt19937_64& gen, const Conv2dParams& p, const Options& o) {
  ++g_cases;
  const int64_t n = p.batch, c = p.channels, f = p.num_filter, oh = p.OutH(), ow = p.OutW();
  const int64_t out_count = n * f * oh * ow;
  const std::vector<float> x = Random(gen, n * c * p.in_h * p.in_w);
  const std::vector<float> w = Random(gen, f * p.FilterSize());
  const std::vector<float> alpha = Random(gen, f), bias = Random(gen, f);
  const std::vector<float> in_scale = Random(gen, c), in_shift = Random(gen, c);
  const std::vector<float> out_scale = Random(gen, f), out_shift = Random(gen, f);
  const std::vector<float> residual = Random(gen, out_count);

  std::vector<float> a = x;  // the activations before the sign
  if (o.affine) {
    for (int64_t i = 0; i < static_cast<int64_t>(a.size()); ++i) {
      const int64_t ch = (i / (p.in_h * p.in_w)) % c;
      a[i] = Affine(x[i], in_scale[ch], in_shift[ch]);
    }
  }
  const std::vector<int32_t> dots = RefConv(a, w, p);
  std::vector<float> want(static_cast<size_t>(out_count));
  for (int64_t i = 0; i < out_count; ++i) {
    const int64_t ch = (i / (oh * ow)) % f;
    float v = static_cast<float>(dots[i]);
    if (o.epilogue) v = Affine(v, alpha[ch], bias[ch]);
    if (o.residual) v = v + residual[i];
    want[i] = v;
  }
  std::vector<uint64_t> want_bits;
  if (o.packed_out) {
    std::vector<float> next(want.size());
    for (int64_t i = 0; i < out_count; ++i) {
      const int64_t ch = (i / (oh * ow)) % f;
      next[i] = Affine(want[i], out_scale[ch], out_shift[ch]);
    }
    want_bits = RefPackPixels(next, n, f, oh, ow);
  }

  // The plain packer is the reference of the fast one; both against the test's own packer.
  const std::vector<uint64_t> ref_w = RefPackWeights(w, p);
  std::vector<uint64_t> wp(ref_w.size()), wp_fast(ref_w.size());
  binmx::PackConvWeights(w.data(), p, wp.data());
  binmx::PackConvWeightsFast(w.data(), p, wp_fast.data());
  CHECK(wp == ref_w && wp_fast == ref_w, "packed weights C=%lld F=%lld", (long long)c,
        (long long)f);

  std::vector<uint64_t> x_bits;
  if (o.packed_in) {
    x_bits = RefPackPixels(x, n, c, p.in_h, p.in_w);
    if (c % 64 != 0) {  // bits past C are ignored
      const int64_t words = binmx::WordsFor(c);
      for (size_t i = words - 1; i < x_bits.size(); i += words) {
        x_bits[i] |= (gen() << (c % 64));
      }
    }
  }

  for (binmx::Isa isa : binmx::AvailableIsas()) {
    for (int threads : {1, 2, 3}) {
      binmx::BinaryConvArgs args;
      args.w_packed = wp_fast.data();
      if (o.packed_in) {
        args.x_bits = x_bits.data();
      } else {
        args.x = x.data();
      }
      if (o.epilogue) {
        args.alpha = alpha.data();
        args.bias = bias.data();
      }
      if (o.affine) {
        args.in_scale = in_scale.data();
        args.in_shift = in_shift.data();
      }
      if (o.residual) args.residual = residual.data();
      std::vector<float> out;
      std::vector<uint64_t> out_bits;
      if (o.packed_out) {
        out_bits.assign(want_bits.size(), 0x5555);
        args.out_bits = out_bits.data();
        args.out_scale = out_scale.data();
        args.out_shift = out_shift.data();
      } else {
        out.assign(want.size(), 12345.0f);
        args.out = out.data();
      }
      binmx::BinaryConv2d(args, p, binmx::GemmConfig{isa, threads});
      if (o.packed_out) {
        CHECK(out_bits == want_bits, "packed out isa=%s threads=%d C=%lld F=%lld",
              binmx::IsaName(isa), threads, (long long)c, (long long)f);
        continue;
      }
      for (int64_t i = 0; i < out_count; ++i) {
        if (out[i] == want[i]) continue;
        CHECK(false,
              "isa=%s threads=%d C=%lld F=%lld %lldx%lld k%lldx%lld s%lld,%lld p%lld,%lld "
              "d%lld,%lld g%lld pv%d: out[%lld]=%.9g want %.9g",
              binmx::IsaName(isa), threads, (long long)c, (long long)f, (long long)p.in_h,
              (long long)p.in_w, (long long)p.kernel_h, (long long)p.kernel_w,
              (long long)p.stride_h, (long long)p.stride_w, (long long)p.pad_h, (long long)p.pad_w,
              (long long)p.dilate_h, (long long)p.dilate_w, (long long)p.groups, p.pad_value,
              (long long)i, out[i], want[i]);
        break;
      }
    }
  }
}

Conv2dParams Geometry(int64_t n, int64_t c, int64_t h, int64_t w, int64_t f, int64_t k,
                      int64_t stride, int64_t pad, int64_t dilate, int64_t groups, int pad_value) {
  Conv2dParams p;
  p.batch = n;
  p.channels = c;
  p.in_h = h;
  p.in_w = w;
  p.num_filter = f;
  p.kernel_h = p.kernel_w = k;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = pad;
  p.dilate_h = p.dilate_w = dilate;
  p.groups = groups;
  p.pad_value = pad_value;
  return p;
}

void DenseCase(std::mt19937_64& gen, int64_t rows, int64_t depth, int64_t hidden, bool affine) {
  ++g_cases;
  const std::vector<float> x = Random(gen, rows * depth), w = Random(gen, hidden * depth);
  const std::vector<float> alpha = Random(gen, hidden), bias = Random(gen, hidden);
  const std::vector<float> scale = Random(gen, depth), shift = Random(gen, depth);
  const int64_t words = binmx::WordsFor(depth);
  std::vector<uint64_t> wp(static_cast<size_t>(hidden * words), 0);
  for (int64_t h = 0; h < hidden; ++h) {
    for (int64_t d = 0; d < depth; ++d) {
      if (w[h * depth + d] < 0.0f) wp[h * words + d / 64] |= uint64_t{1} << (d % 64);
    }
  }
  std::vector<float> want(static_cast<size_t>(rows * hidden));
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t h = 0; h < hidden; ++h) {
      int32_t dot = 0;
      for (int64_t d = 0; d < depth; ++d) {
        const float v = affine ? Affine(x[m * depth + d], scale[d], shift[d]) : x[m * depth + d];
        dot += static_cast<int32_t>(Sgn(v) * Sgn(w[h * depth + d]));
      }
      want[m * hidden + h] = Affine(static_cast<float>(dot), alpha[h], bias[h]);
    }
  }
  for (binmx::Isa isa : binmx::AvailableIsas()) {
    for (int threads : {1, 2, 3}) {
      std::vector<float> out(want.size(), 7.0f);
      binmx::BinaryDenseArgs args;
      args.x = x.data();
      args.w_packed = wp.data();
      args.alpha = alpha.data();
      args.bias = bias.data();
      if (affine) {
        args.in_scale = scale.data();
        args.in_shift = shift.data();
      }
      args.out = out.data();
      binmx::BinaryDense(args, rows, depth, hidden, binmx::GemmConfig{isa, threads});
      CHECK(out == want, "dense isa=%s threads=%d rows=%lld depth=%lld hidden=%lld affine=%d",
            binmx::IsaName(isa), threads, (long long)rows, (long long)depth, (long long)hidden,
            affine ? 1 : 0);
    }
  }
}

template <typename F>
bool Throws(F f) {
  try {
    f();
  } catch (const std::invalid_argument&) {
    return true;
  }
  return false;
}

void TestErrors() {
  const Conv2dParams p = Geometry(1, 4, 5, 5, 2, 3, 1, 1, 1, 1, 0);
  std::vector<float> x(100), out(50), s(4);
  std::vector<uint64_t> wp(18), bits(25);
  const binmx::GemmConfig config{binmx::Isa::kScalar, 1};
  auto conv = [&](binmx::BinaryConvArgs a, const Conv2dParams& q) {
    return Throws([&] { binmx::BinaryConv2d(a, q, config); });
  };
  binmx::BinaryConvArgs a;
  a.x = x.data();
  a.w_packed = wp.data();
  a.out = out.data();
  CHECK(!conv(a, p), "valid call threw");
  binmx::BinaryConvArgs b = a;
  b.w_packed = nullptr;
  CHECK(conv(b, p), "null w_packed");
  b = a;
  b.x_bits = bits.data();
  CHECK(conv(b, p), "x and x_bits");
  b = a;
  b.in_scale = s.data();
  CHECK(conv(b, p), "in_scale without in_shift");
  b = a;
  b.out = nullptr;
  b.out_bits = bits.data();
  CHECK(conv(b, p), "out_bits without out_scale / out_shift");
  Conv2dParams q = p;
  q.pad_value = 2;
  CHECK(conv(a, q), "pad_value 2");
  q = p;
  q.groups = 3;
  CHECK(conv(a, q), "groups not dividing channels");
  q = p;
  q.in_h = 1;
  q.pad_h = 0;
  CHECK(conv(a, q), "kernel larger than the padded input");
  binmx::BinaryDenseArgs d;
  d.x = x.data();
  d.w_packed = wp.data();
  CHECK(Throws([&] { binmx::BinaryDense(d, 2, 10, 2, config); }), "dense null out");
  d.out = out.data();
  CHECK(Throws([&] { binmx::BinaryDense(d, 2, 0, 2, config); }), "dense depth 0");
}

}  // namespace

int main() {
  std::mt19937_64 gen(2024);
  std::printf("available:");
  for (binmx::Isa isa : binmx::AvailableIsas()) std::printf(" %s", binmx::IsaName(isa));
  std::printf("\n");
  const int64_t channels[] = {1,  2,  3,  4,   5,   6,   7,   8,   9,  10,
                              63, 64, 65, 127, 128, 129, 511, 512, 513};
  Options plain, ints;
  ints.epilogue = false;
  // Channel grid: 3x3 pad 1 (border correction) on a 5x6 image.
  for (int64_t c : channels) {
    ConvCase(gen, Geometry(2, c, 5, 6, 7, 3, 1, 1, 1, 1, 0), ints);
    ConvCase(gen, Geometry(1, c, 4, 5, 9, 3, 2, 1, 1, 1, 0), plain);
  }
  // Geometry: stride, dilation, groups, pad_value, many border patterns, several chunks.
  for (int pv : {0, 1, -1}) {
    ConvCase(gen, Geometry(2, 5, 9, 8, 6, 3, 2, 1, 1, 1, pv), plain);
    ConvCase(gen, Geometry(1, 9, 12, 11, 3, 3, 1, 2, 2, 1, pv), plain);
    ConvCase(gen, Geometry(1, 6, 7, 7, 5, 7, 1, 3, 1, 1, pv), plain);     // 49 border patterns
    ConvCase(gen, Geometry(2, 130, 6, 5, 66, 3, 1, 1, 1, 2, pv), plain);  // 65 channels a group
    ConvCase(gen, Geometry(1, 12, 6, 6, 12, 3, 1, 1, 1, 12, pv), plain);  // depthwise
    ConvCase(gen, Geometry(1, 4, 2, 3, 2, 3, 1, 1, 1, 1, pv), plain);     // all border
  }
  ConvCase(gen, Geometry(2, 64, 8, 8, 8, 1, 2, 0, 1, 1, 0), plain);    // strided 1x1 shortcut
  ConvCase(gen, Geometry(1, 70, 5, 5, 130, 3, 1, 1, 1, 1, 0), plain);  // three filter chunks
  ConvCase(gen, Geometry(1, 3, 20, 31, 5, 3, 1, 1, 1, 1, 0), plain);   // three pixel chunks
  {
    Conv2dParams p = Geometry(1, 17, 11, 10, 5, 3, 1, 1, 1, 1, 0);
    p.kernel_w = 5;
    p.stride_w = 3;
    p.pad_w = 2;
    p.dilate_h = 2;
    ConvCase(gen, p, plain);  // unequal axes
  }
  // Input affine and residual; packed input (bits past C set); packed output (F grid).
  Options affine_res = plain, packed_in = ints, packed_out = plain;
  affine_res.affine = affine_res.residual = true;
  packed_in.packed_in = true;
  packed_out.packed_out = true;
  for (int64_t c : {1, 7, 63, 64, 65, 129, 513}) {
    ConvCase(gen, Geometry(2, c, 6, 7, 11, 3, 1, 1, 1, 1, 0), affine_res);
    ConvCase(gen, Geometry(2, c, 5, 4, 6, 3, 1, 1, 1, 1, -1), packed_in);
  }
  for (int64_t f : {1, 2, 5, 10, 63, 64, 65, 127, 128, 129}) {
    ConvCase(gen, Geometry(2, 67, 6, 5, f, 3, 1, 1, 1, 1, 0), packed_out);
  }
  Options both = packed_out;
  both.packed_in = true;
  ConvCase(gen, Geometry(1, 129, 7, 6, 65, 3, 1, 1, 1, 1, 0), both);
  // Dense: depth grid, rows 1 (the GEMV path) and more.
  for (int64_t d : channels) {
    DenseCase(gen, 1, d, 10, false);
    DenseCase(gen, 5, d, 3, true);
    DenseCase(gen, 33, d, 65, d % 2 == 1);
  }
  TestErrors();
  std::printf("%d bconv cases, %d failures\n", g_cases, g_failures);
  return g_failures == 0 ? 0 : 1;
}

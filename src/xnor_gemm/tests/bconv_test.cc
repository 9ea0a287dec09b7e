/*
 * binmx core test (self-contained, no framework): the direct binary convolution (bconv.h) and
 * the binary dense layer of every available ISA path (x86-64: scalar, avx2, avx512; aarch64:
 * scalar, neon) against a naive reference written here, integer- and bit-exact (==), at 1
 * and 2 threads.
 *
 * Reference convolution, straight from the formula in bconv.h:
 *   a = sgn(x * in_scale[c] + in_shift[c]) (product and sum rounded separately; sgn(v) = -1
 *       iff v < 0), or the packed input bits; apad = a, or pad_value outside the image
 *   dot[n][f][oy][ox] = sum_{c', i, j} apad[n][g*Cg+c'][oy*sh-ph+i*dh][ox*sw-pw+j*dw]
 *                                      * sgn(W[f][c'][i][j])            (an int, summed in int)
 *   out = float(dot) * alpha[f] + bias[f] (+ residual), each step rounded to float
 *   packed output: bit f of pixel (n, oy, ox) = (out * out_scale[f] + out_shift[f] < 0)
 * Weights are packed by PackConvWeights (conv.cc, portable) and, for the fast packer, checked
 * against it.
 *
 * Grid: the boundary grid (channels per group K = 1..10, 63, 64, 65, 127..129, 511..513, 576,
 * 4608 with 1x1 / 3x3 / strided / dilated / grouped geometry, every pad value, odd filter
 * counts, pixel chunks past 240 and filter chunks past 64) plus >= 500 random configurations
 * (seeded; groups, strides, dilations, pads, pad values, input affine, alpha / bias,
 * residual, packed input and output all drawn). Exit code 0 = pass. Usage:
 *   bconv_test [random_configs=600] [seed=2024]
 *   BINMX_ISA=<name> bconv_test env   -- only checks how BINMX_ISA is read: an available path
 *                                       becomes the default, anything else is an error
 */
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bconv.h"
#include "conv.h"
#include "xnor_gemm.h"

namespace {

int g_failures = 0;
int g_checks = 0;

#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    ++g_checks;                                                            \
    if (!(cond)) {                                                         \
      ++g_failures;                                                        \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                   \
      std::fprintf(stderr, "\n");                                          \
      if (g_failures > 20) std::exit(1);                                   \
    }                                                                      \
  } while (0)

// x * s + t with the product rounded to float before the sum (never fused).
float AffineRounded(float x, float s, float t) {
  volatile float prod = x * s;
  volatile float sum = prod + t;
  return sum;
}

struct Case {
  binmx::Conv2dParams p;
  bool alpha = false, bias = false, affine = false, residual = false;
  bool x_bits = false, out_bits = false;
  // x < 0 and W > 0 everywhere: every xor bit of a valid tap is 1, the largest
  // popcounts, for the narrow-accumulator folds.
  bool extreme = false;
};

std::string Describe(const Case& c) {
  const binmx::Conv2dParams& p = c.p;
  char buf[400];
  std::snprintf(buf, sizeof(buf),
                "N=%lld C=%lld H=%lld W=%lld F=%lld k=%lldx%lld s=%lldx%lld pad=%lldx%lld "
                "d=%lldx%lld g=%lld pad_value=%d alpha=%d bias=%d affine=%d residual=%d "
                "x_bits=%d out_bits=%d",
                (long long)p.batch, (long long)p.channels, (long long)p.in_h, (long long)p.in_w,
                (long long)p.num_filter, (long long)p.kernel_h, (long long)p.kernel_w,
                (long long)p.stride_h, (long long)p.stride_w, (long long)p.pad_h,
                (long long)p.pad_w, (long long)p.dilate_h, (long long)p.dilate_w,
                (long long)p.groups, p.pad_value, c.alpha, c.bias, c.affine, c.residual, c.x_bits,
                c.out_bits);
  return buf;
}

std::vector<float> RandomFloats(std::mt19937_64& gen, int64_t count) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(count));
  for (auto& f : v) f = dist(gen);
  // Exact zeros of both signs must count as +1.
  for (int64_t i = 0; i < count; i += 7) v[i] = (i / 7) % 2 ? 0.0f : -0.0f;
  return v;
}

// Bitwise equality (the inputs hold NaNs, which == never matches).
bool SameBytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// One configuration: reference once, then every ISA at 1 and 2 threads.
void RunCase(std::mt19937_64& gen, const Case& cs) {
  const binmx::Conv2dParams& p = cs.p;
  binmx::ValidateConv2dParams(p);
  const int64_t n_img = p.batch, c_all = p.channels, h = p.in_h, w = p.in_w;
  const int64_t f_all = p.num_filter, cg = p.GroupChannels();
  const int64_t fg = p.GroupFilters(), kh = p.kernel_h, kw = p.kernel_w;
  const int64_t oh = p.OutH(), ow = p.OutW(), ohw = oh * ow;
  const int64_t in_words = binmx::WordsFor(c_all), out_words = binmx::WordsFor(f_all);

  std::vector<float> x = RandomFloats(gen, n_img * c_all * h * w);
  std::vector<float> wf = RandomFloats(gen, f_all * p.FilterSize());
  if (cs.extreme) {
    for (float& v : x) v = -std::fabs(v) - 0.5f;
    for (float& v : wf) v = std::fabs(v) + 0.5f;
  } else {
    // NaN packs as +1 (the comparison x < 0 is false), in the activations and the weights.
    for (size_t i = 3; i < x.size(); i += 11) x[i] = std::nanf("");
    for (size_t i = 5; i < wf.size(); i += 13) wf[i] = std::nanf("");
  }
  std::vector<float> alpha, bias, in_scale, in_shift, residual, out_scale, out_shift;
  std::uniform_real_distribution<float> pos(0.25f, 2.0f), any(-3.0f, 3.0f);
  if (cs.alpha) {
    for (int64_t f = 0; f < f_all; ++f) alpha.push_back(pos(gen) * (f % 5 == 3 ? -1.0f : 1.0f));
  }
  if (cs.bias) {
    for (int64_t f = 0; f < f_all; ++f) bias.push_back(any(gen));
  }
  if (cs.affine) {
    for (int64_t c = 0; c < c_all; ++c) {
      in_scale.push_back(c % 6 == 5 ? 0.0f : any(gen));  // a zero scale: sign of the shift
      in_shift.push_back(c % 4 == 1 ? 0.0f : 0.5f * any(gen));
    }
  }
  if (cs.residual) residual = RandomFloats(gen, n_img * f_all * ohw);
  if (cs.out_bits) {
    for (int64_t f = 0; f < f_all; ++f) {
      out_scale.push_back(any(gen));
      out_shift.push_back(f % 3 == 0 ? 0.0f : any(gen));
    }
  }

  // Activation signs a[n][c][y][x] in {-1, +1} and the packed input (bits past C set, which the
  // kernel must ignore).
  std::vector<int8_t> a(x.size());
  for (int64_t n = 0; n < n_img; ++n) {
    for (int64_t c = 0; c < c_all; ++c) {
      for (int64_t i = 0; i < h * w; ++i) {
        const int64_t idx = (n * c_all + c) * h * w + i;
        const float v = cs.affine ? AffineRounded(x[idx], in_scale[c], in_shift[c]) : x[idx];
        a[idx] = v < 0.0f ? -1 : 1;
      }
    }
  }
  std::vector<uint64_t> xb;
  if (cs.x_bits) {
    xb.assign(static_cast<size_t>(n_img * h * w * in_words), 0);
    for (int64_t n = 0; n < n_img; ++n) {
      for (int64_t i = 0; i < h * w; ++i) {
        uint64_t* word = xb.data() + (n * h * w + i) * in_words;
        for (int64_t c = 0; c < c_all; ++c) {
          if (a[(n * c_all + c) * h * w + i] < 0) word[c / 64] |= uint64_t{1} << (c % 64);
        }
        if (c_all % 64 != 0) word[in_words - 1] |= ~uint64_t{0} << (c_all % 64);
      }
    }
  }

  // Reference.
  std::vector<float> want(static_cast<size_t>(n_img * f_all * ohw));
  for (int64_t n = 0; n < n_img; ++n) {
    for (int64_t f = 0; f < f_all; ++f) {
      const int64_t g = f / fg;
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          int64_t dot = 0;
          for (int64_t c = 0; c < cg; ++c) {
            const int64_t ch = g * cg + c;
            for (int64_t i = 0; i < kh; ++i) {
              const int64_t y = oy * p.stride_h - p.pad_h + i * p.dilate_h;
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t xx = ox * p.stride_w - p.pad_w + j * p.dilate_w;
                int av;
                if (y < 0 || y >= h || xx < 0 || xx >= w) {
                  av = p.pad_value;
                } else {
                  av = a[((n * c_all + ch) * h + y) * w + xx];
                }
                const int ws = wf[((f * cg + c) * kh + i) * kw + j] < 0.0f ? -1 : 1;
                dot += av * ws;
              }
            }
          }
          volatile float prod = static_cast<float>(dot) * (cs.alpha ? alpha[f] : 1.0f);
          volatile float v = prod + (cs.bias ? bias[f] : 0.0f);
          const int64_t idx = ((n * f_all + f) * oh + oy) * ow + ox;
          float o = v;
          if (cs.residual) {
            volatile float r = o + residual[idx];
            o = r;
          }
          want[idx] = o;
        }
      }
    }
  }
  std::vector<uint64_t> want_bits;
  if (cs.out_bits) {
    want_bits.assign(static_cast<size_t>(n_img * ohw * out_words), 0);
    for (int64_t n = 0; n < n_img; ++n) {
      for (int64_t f = 0; f < f_all; ++f) {
        for (int64_t q = 0; q < ohw; ++q) {
          const float v =
              AffineRounded(want[(n * f_all + f) * ohw + q], out_scale[f], out_shift[f]);
          if (v < 0.0f) want_bits[(n * ohw + q) * out_words + f / 64] |= uint64_t{1} << (f % 64);
        }
      }
    }
  }

  std::vector<uint64_t> wp(static_cast<size_t>(binmx::PackedConvWeightWords(p)));
  binmx::PackConvWeights(wf.data(), p, wp.data());
  {
    std::vector<uint64_t> fast(wp.size() + 1, 0xabcdefULL);
    binmx::PackConvWeightsFast(wf.data(), p, fast.data());
    CHECK(std::memcmp(fast.data(), wp.data(), wp.size() * 8) == 0 && fast.back() == 0xabcdefULL,
          "PackConvWeightsFast differs from PackConvWeights: %s", Describe(cs).c_str());
  }
  const std::vector<float> x_copy = x, res_copy = residual;
  const std::vector<uint64_t> xb_copy = xb, wp_copy = wp;

  for (binmx::Isa isa : binmx::AvailableIsas()) {
    // Per-call tables at 1 thread, tables prepared once (PrepareBinaryConv) at 1 and 2.
    binmx::BinaryConvTables tables;
    binmx::PrepareBinaryConv(wp.data(), p, isa, &tables);
    for (const auto& [threads, prepared] : {std::pair{1, false}, {1, true}, {2, true}}) {
      binmx::BinaryConvArgs args;
      args.w_packed = prepared ? nullptr : wp.data();
      args.tables = prepared ? &tables : nullptr;
      if (cs.x_bits) {
        args.x_bits = xb.data();
      } else {
        args.x = x.data();
      }
      if (cs.alpha) args.alpha = alpha.data();
      if (cs.bias) args.bias = bias.data();
      if (cs.affine) {
        args.in_scale = in_scale.data();
        args.in_shift = in_shift.data();
      }
      if (cs.residual) args.residual = residual.data();
      const float kGuard = 12345.5f;
      std::vector<float> out;
      std::vector<uint64_t> bits;
      if (cs.out_bits) {
        bits.assign(want_bits.size() + 1, 0x5a5a5a5aULL);
        args.out_bits = bits.data();
        args.out_scale = out_scale.data();
        args.out_shift = out_shift.data();
      } else {
        out.assign(want.size() + 1, kGuard);
        args.out = out.data();
      }
      binmx::BinaryConv2d(args, p, binmx::GemmConfig{isa, threads});
      const char* name = binmx::IsaName(isa);
      if (cs.out_bits) {
        CHECK(bits.back() == 0x5a5a5a5aULL, "isa=%s wrote past out_bits: %s", name,
              Describe(cs).c_str());
        for (size_t i = 0; i < want_bits.size(); ++i) {
          if (bits[i] != want_bits[i]) {
            CHECK(bits[i] == want_bits[i],
                  "isa=%s threads=%d prepared=%d out_bits word %zu (pixel %zu, word %zu) = "
                  "%016" PRIx64 " want %016" PRIx64 ": %s",
                  name, threads, int{prepared}, i, i / out_words, i % out_words, bits[i],
                  want_bits[i], Describe(cs).c_str());
            break;
          }
        }
      } else {
        CHECK(out.back() == kGuard, "isa=%s wrote past out: %s", name, Describe(cs).c_str());
        for (size_t i = 0; i < want.size(); ++i) {
          if (std::memcmp(&out[i], &want[i], sizeof(float)) != 0) {
            const int64_t q = static_cast<int64_t>(i) % ohw;
            const int64_t nf = static_cast<int64_t>(i) / ohw;
            CHECK(false,
                  "isa=%s threads=%d prepared=%d out[n=%lld][f=%lld][oy=%lld][ox=%lld] = %.9g "
                  "want %.9g: %s",
                  name, threads, int{prepared}, (long long)(nf / f_all), (long long)(nf % f_all),
                  (long long)(q / ow), (long long)(q % ow), out[i], want[i], Describe(cs).c_str());
            break;
          }
        }
      }
      CHECK(SameBytes(x, x_copy) && SameBytes(residual, res_copy) && xb == xb_copy && wp == wp_copy,
            "isa=%s mutated an input: %s", name, Describe(cs).c_str());
    }
  }
}

// Dense: out[m][h] = float(sum_d sgn(x[m][d] * s[d] + t[d]) sgn(W[h][d])) * alpha[h] + bias[h].
void RunDense(std::mt19937_64& gen, int64_t rows, int64_t depth, int64_t hidden, bool affine) {
  const std::vector<float> x = RandomFloats(gen, rows * depth);
  const std::vector<float> wf = RandomFloats(gen, hidden * depth);
  std::uniform_real_distribution<float> any(-2.0f, 2.0f);
  std::vector<float> alpha, bias, s, t;
  for (int64_t i = 0; i < hidden; ++i) {
    alpha.push_back(any(gen));
    bias.push_back(any(gen));
  }
  for (int64_t d = 0; d < depth; ++d) {
    s.push_back(d % 5 == 2 ? 0.0f : any(gen));
    t.push_back(d % 3 == 0 ? 0.0f : any(gen));
  }
  const int64_t words = binmx::WordsFor(depth);
  std::vector<uint64_t> wp(static_cast<size_t>(hidden * words));
  binmx::PackRows(wf.data(), hidden, depth, depth, wp.data(), binmx::Isa::kScalar);
  std::vector<float> want(static_cast<size_t>(rows * hidden));
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t hh = 0; hh < hidden; ++hh) {
      int64_t dot = 0;
      for (int64_t d = 0; d < depth; ++d) {
        const float v = affine ? AffineRounded(x[m * depth + d], s[d], t[d]) : x[m * depth + d];
        dot += ((v < 0.0f) == (wf[hh * depth + d] < 0.0f)) ? 1 : -1;
      }
      want[m * hidden + hh] = AffineRounded(static_cast<float>(dot), alpha[hh], bias[hh]);
    }
  }
  for (binmx::Isa isa : binmx::AvailableIsas()) {
    for (int threads : {1, 2}) {
      std::vector<float> out(want.size() + 1, -7.0f);
      binmx::BinaryDenseArgs args;
      args.x = x.data();
      args.w_packed = wp.data();
      args.alpha = alpha.data();
      args.bias = bias.data();
      if (affine) {
        args.in_scale = s.data();
        args.in_shift = t.data();
      }
      args.out = out.data();
      binmx::BinaryDense(args, rows, depth, hidden, binmx::GemmConfig{isa, threads});
      CHECK(out.back() == -7.0f, "dense isa=%s wrote past out", binmx::IsaName(isa));
      for (size_t i = 0; i < want.size(); ++i) {
        if (std::memcmp(&out[i], &want[i], sizeof(float)) != 0) {
          CHECK(false,
                "dense isa=%s threads=%d rows=%lld depth=%lld hidden=%lld affine=%d "
                "out[%zu]=%.9g want %.9g",
                binmx::IsaName(isa), threads, (long long)rows, (long long)depth, (long long)hidden,
                affine, i, out[i], want[i]);
          break;
        }
      }
    }
  }
}

binmx::Conv2dParams Geometry(int64_t n, int64_t c, int64_t h, int64_t w, int64_t f, int64_t k,
                             int64_t s, int64_t pad, int64_t d, int64_t g, int pad_value) {
  binmx::Conv2dParams p;
  p.batch = n;
  p.channels = c;
  p.in_h = h;
  p.in_w = w;
  p.num_filter = f;
  p.kernel_h = p.kernel_w = k;
  p.stride_h = p.stride_w = s;
  p.pad_h = p.pad_w = pad;
  p.dilate_h = p.dilate_w = d;
  p.groups = g;
  p.pad_value = pad_value;
  return p;
}

// The boundary grid: channel counts around word / vector boundaries through every geometry.
int BoundaryGrid(std::mt19937_64& gen) {
  const int64_t ks[] = {1,  2,  3,   4,   5,   6,   7,   8,   9,   10,  63,
                        64, 65, 127, 128, 129, 511, 512, 513, 576, 4608};
  int cases = 0;
  int turn = 0;
  for (int64_t k : ks) {
    struct Geo {
      int64_t kern, stride, pad, dil, h, w;
    };
    // Spatial sizes shrink as K grows (the reference is O(everything)).
    const bool big = k >= 500;
    const Geo geos[] = {{3, 1, 1, 1, big ? 4 : 7, big ? 5 : 6},
                        {3, 2, 1, 1, big ? 5 : 8, 7},
                        {1, 2, 0, 1, 5, 6},
                        {3, 1, 2, 2, big ? 4 : 6, 5},
                        {2, 1, 0, 1, 4, 5},
                        {3, 1, 0, 1, 5, 4},
                        {1, 1, 0, 1, 3, 3}};
    for (const Geo& geo : geos) {
      if (k == 4608 && geo.kern > 1 && geo.dil > 1) continue;
      for (int pad_value : {0, 1, -1}) {
        Case c;
        const int64_t f = big ? 5 : 7 + (turn % 3) * 2;  // odd filter counts
        c.p = Geometry(1 + turn % 2, k, geo.h, geo.w, f, geo.kern, geo.stride, geo.pad, geo.dil, 1,
                       pad_value);
        c.alpha = turn % 2 == 0;
        c.bias = turn % 3 != 0;
        c.affine = turn % 4 == 1;
        c.residual = turn % 5 == 2;
        c.x_bits = !c.affine && turn % 6 == 3;
        c.out_bits = !c.residual && turn % 7 == 4;
        RunCase(gen, c);
        ++cases;
        ++turn;
      }
    }
    // Grouped: 3 groups of K channels each.
    if (k <= 129) {
      Case c;
      c.p = Geometry(1, 3 * k, 5, 5, 9, 3, 1, 1, 1, 3, turn % 3 - 1);
      c.alpha = c.bias = true;
      c.affine = turn % 2 == 0;
      RunCase(gen, c);
      ++cases;
      ++turn;
    }
  }
  // 4104 tap-words (456 words x 9 taps): past the NEON kernel's 4095-word uint16 fold.
  {
    Case c;
    c.p = Geometry(1, 456 * 64, 3, 3, 5, 3, 1, 1, 1, 1, 0);
    c.alpha = c.bias = true;
    c.extreme = true;
    RunCase(gen, c);
    ++cases;
  }
  // Pixel chunks (> 240 output pixels), filter chunks (> 64 filters, two output words), filter
  // and pixel tails of every kernel width.
  const int64_t fs[] = {1, 2, 3, 4, 5, 8, 9, 13, 65, 130};
  for (int64_t f : fs) {
    for (int out_bits = 0; out_bits < 2; ++out_bits) {
      Case c;
      c.p = Geometry(1, f >= 65 ? 70 : 33, 17, 16, f, 3, 1, 1, 1, 1, 0);
      c.alpha = c.bias = true;
      c.out_bits = out_bits != 0;
      c.x_bits = out_bits != 0;
      RunCase(gen, c);
      ++cases;
    }
  }
  return cases;
}

int RandomConfigs(std::mt19937_64& gen, int count) {
  std::uniform_int_distribution<int> pick(0, 1 << 30);
  auto r = [&](int lo, int hi) { return lo + pick(gen) % (hi - lo + 1); };
  const int64_t cgs[] = {1,  2,  3,   5,   7,   9,   10,  17,  31,  33,  63,  64,
                         65, 96, 100, 127, 128, 129, 200, 255, 257, 511, 513, 576};
  int done = 0;
  while (done < count) {
    Case c;
    binmx::Conv2dParams& p = c.p;
    p.groups = r(0, 3) == 0 ? r(2, 3) : 1;
    const int64_t cg = cgs[r(0, static_cast<int>(sizeof(cgs) / sizeof(cgs[0])) - 1)];
    p.channels = cg * p.groups;
    p.num_filter = p.groups * r(1, 13);
    p.batch = r(1, 2);
    p.kernel_h = r(1, 3);
    p.kernel_w = r(0, 3) == 0 ? r(1, 5) : p.kernel_h;
    p.stride_h = r(1, 3);
    p.stride_w = r(0, 1) ? p.stride_h : r(1, 3);
    p.dilate_h = r(0, 3) == 0 ? 2 : 1;
    p.dilate_w = r(0, 3) == 0 ? r(1, 3) : p.dilate_h;
    p.pad_h = r(0, 3);
    p.pad_w = r(0, 1) ? p.pad_h : r(0, 3);
    p.in_h = r(1, 12);
    p.in_w = r(1, 12);
    p.pad_value = r(0, 2) - 1;
    if (p.in_h + 2 * p.pad_h < p.dilate_h * (p.kernel_h - 1) + 1 ||
        p.in_w + 2 * p.pad_w < p.dilate_w * (p.kernel_w - 1) + 1) {
      continue;  // empty output
    }
    // Keep the reference cheap under emulation.
    const int64_t work = p.batch * p.num_filter * p.OutH() * p.OutW() * p.FilterSize();
    if (work > 3000000) continue;
    c.alpha = r(0, 3) != 0;
    c.bias = r(0, 2) != 0;
    c.residual = r(0, 3) == 0;
    if (p.groups == 1) {
      c.x_bits = r(0, 3) == 0;
      c.out_bits = !c.residual && r(0, 3) == 0;
    }
    c.affine = !c.x_bits && r(0, 2) == 0;
    RunCase(gen, c);
    ++done;
  }
  return done;
}

template <typename F>
bool Throws(F f) {
  try {
    f();
  } catch (const std::invalid_argument&) {
    return true;
  } catch (const std::runtime_error&) {
    return true;
  }
  return false;
}

// Named paths outside this build, or unknown names, are errors (never a silent fallback).
void TestIsaErrors() {
  for (binmx::Isa isa :
       {binmx::Isa::kScalar, binmx::Isa::kAvx2, binmx::Isa::kAvx512, binmx::Isa::kNeon}) {
    const bool available = binmx::IsaBuilt(isa) && binmx::IsaSupportedByCpu(isa);
    CHECK(Throws([&] { binmx::RequireIsa(isa); }) == !available, "RequireIsa(%s)",
          binmx::IsaName(isa));
    binmx::Isa parsed;
    CHECK(binmx::ParseIsa(binmx::IsaName(isa), &parsed) && parsed == isa, "ParseIsa(%s)",
          binmx::IsaName(isa));
  }
  binmx::Isa parsed = binmx::Isa::kScalar;
  CHECK(!binmx::ParseIsa("sve", &parsed) && !binmx::ParseIsa("NEON", &parsed) &&
            parsed == binmx::Isa::kScalar,
        "unknown ISA names must not parse");
  // The best available path is the last one: avx512 / avx2 on x86-64, neon on aarch64.
  const std::vector<binmx::Isa> isas = binmx::AvailableIsas();
  const char* env = std::getenv("BINMX_ISA");
  if (env == nullptr || *env == '\0') {
    CHECK(binmx::DefaultIsa() == isas.back(), "DefaultIsa()=%s, best available %s",
          binmx::IsaName(binmx::DefaultIsa()), binmx::IsaName(isas.back()));
  }
#if defined(__aarch64__)
  CHECK(isas.back() == binmx::Isa::kNeon, "aarch64: neon must be available and the best");
#endif
  uint64_t wp[1] = {0};
  float x[1] = {1.0f}, out[1];
  binmx::BinaryConvArgs args;
  args.x = x;
  args.w_packed = wp;
  args.out = out;
  binmx::Conv2dParams p;
  {  // Tables prepared for one geometry must not be used for another.
    binmx::BinaryConvTables tables;
    binmx::PrepareBinaryConv(wp, p, binmx::Isa::kScalar, &tables);
    binmx::BinaryConvArgs with = args;
    with.tables = &tables;
    binmx::Conv2dParams other = p;
    other.pad_h = 1;
    CHECK(Throws(
              [&] { binmx::BinaryConv2d(with, other, binmx::GemmConfig{binmx::Isa::kScalar, 1}); }),
          "BinaryConv2d with tables of another geometry must throw");
    binmx::BinaryConv2d(with, p, binmx::GemmConfig{binmx::Isa::kScalar, 1});
    CHECK(out[0] == 1.0f, "prepared 1x1 conv: got %g, want 1", out[0]);
  }
  for (binmx::Isa isa : {binmx::Isa::kAvx2, binmx::Isa::kAvx512, binmx::Isa::kNeon}) {
    if (binmx::IsaBuilt(isa) && binmx::IsaSupportedByCpu(isa)) continue;
    CHECK(Throws([&] { binmx::BinaryConv2d(args, p, binmx::GemmConfig{isa, 1}); }),
          "BinaryConv2d on unavailable isa %s must throw", binmx::IsaName(isa));
  }
}

// BINMX_ISA=<name>: the default path is <name> when it is available here; an unknown or
// unavailable name makes DefaultIsa() throw std::runtime_error naming BINMX_ISA.
int CheckIsaEnv() {
  const char* env = std::getenv("BINMX_ISA");
  const std::string name = env != nullptr ? env : "";
  binmx::Isa want = binmx::Isa::kScalar;
  const bool ok = !name.empty() && binmx::ParseIsa(name, &want) && binmx::IsaBuilt(want) &&
                  binmx::IsaSupportedByCpu(want);
  try {
    const binmx::Isa got = binmx::DefaultIsa();
    if (name.empty()) {
      std::printf("BINMX_ISA unset: default %s\n", binmx::IsaName(got));
      return got == binmx::AvailableIsas().back() ? 0 : 1;
    }
    std::printf("BINMX_ISA=%s: default %s\n", name.c_str(), binmx::IsaName(got));
    return ok && got == want ? 0 : 1;
  } catch (const std::runtime_error& e) {
    std::printf("BINMX_ISA=%s: error: %s\n", name.c_str(), e.what());
    const bool named = std::string(e.what()).find("BINMX_ISA='" + name + "'") != std::string::npos;
    return !ok && named ? 0 : 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "env") return CheckIsaEnv();
  const int n_random = argc > 1 ? std::atoi(argv[1]) : 600;
  const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 2024;
  std::mt19937_64 gen(seed);
  std::printf("bconv_test: seed %llu, available:", (unsigned long long)seed);
  for (binmx::Isa isa : binmx::AvailableIsas()) std::printf(" %s", binmx::IsaName(isa));
  std::printf("\n");
  TestIsaErrors();
  const int grid = BoundaryGrid(gen);
  int dense = 0;
  for (int64_t depth : {1, 2, 5, 9, 10, 63, 64, 65, 127, 128, 129, 511, 512, 513, 576, 4608}) {
    for (int64_t rows : {1, 3}) {
      RunDense(gen, rows, depth, depth >= 512 ? 9 : 13, (depth + rows) % 2 == 0);
      ++dense;
    }
  }
  const int random = RandomConfigs(gen, n_random);
  std::printf(
      "%d boundary-grid + %d random conv configurations, %d dense, %d checks, "
      "%d failures\n",
      grid, random, dense, g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}

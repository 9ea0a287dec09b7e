/*
 * binmx core test (self-contained, no framework): every available ISA path against a tiny
 * reference written here, over odd sizes, both output kinds and several thread counts (x86-64:
 * scalar, avx2, avx512; aarch64: scalar, neon); the packers; argument errors; ParallelFor
 * coverage, nesting, concurrent callers and exceptions; the convolution geometry checks (every
 * field and buffer product, overflow-proof) and the direct convolution at extreme strides and
 * with stray tail bits in packed weights.
 * Run under AddressSanitizer + UBSan by tests/test_core_sanitizers.py. Exit code 0 = pass.
 */
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include <string>

#include "bconv.h"
#include "conv.h"
#include "parallel.h"
#include "xnor_gemm.h"

namespace {

int g_failures = 0;

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

// Reference packing: bit j of word j / 64 is (x < 0).
std::vector<uint64_t> RefPack(const std::vector<float>& x, int64_t rows, int64_t k) {
  const int64_t words = (k + 63) / 64;
  std::vector<uint64_t> out(rows * words, 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      if (x[r * k + j] < 0.0f) out[r * words + j / 64] |= uint64_t{1} << (j % 64);
    }
  }
  return out;
}

// Reference dot over +-1 values.
int32_t RefDot(const std::vector<float>& x, int64_t i, const std::vector<float>& y, int64_t j,
               int64_t k) {
  int32_t s = 0;
  for (int64_t t = 0; t < k; ++t) s += ((x[i * k + t] < 0) == (y[j * k + t] < 0)) ? 1 : -1;
  return s;
}

std::vector<float> RandomFloats(std::mt19937_64& gen, int64_t count) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(count);
  for (auto& f : v) f = dist(gen);
  // Exact zeros of both signs must pack as +1.
  if (count > 0) v[0] = -0.0f;
  if (count > 2) v[count / 2] = 0.0f;
  // NaN packs as +1 too (x < 0 is false).
  if (count > 3) v[count / 3 + 1] = std::nanf("");
  return v;
}

// extreme: x < 0 and y > 0 everywhere (but the two exact zeros), so nearly every bit of
// A XOR B is 1: the largest popcounts, for the narrow-accumulator folds.
void TestCase(std::mt19937_64& gen, int64_t m, int64_t n, int64_t k, bool extreme = false) {
  const int64_t words = binmx::WordsFor(k);
  std::vector<float> x = RandomFloats(gen, m * k), y = RandomFloats(gen, n * k);
  if (extreme) {
    for (float& v : x) v = v == 0.0f ? v : -std::fabs(v) - 0.5f;
    for (float& v : y) v = v == 0.0f ? v : std::fabs(v) + 0.5f;
  }
  const std::vector<uint64_t> ra = RefPack(x, m, k), rb = RefPack(y, n, k);
  std::vector<int32_t> expect(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) expect[i * n + j] = RefDot(x, i, y, j, k);
  }
  std::vector<float> scale(m), bias(m);
  for (int64_t i = 0; i < m; ++i) {
    scale[i] = 0.25f + static_cast<float>(i % 7) * 0.37f;
    bias[i] = -1.5f + static_cast<float>(i % 5) * 0.61f;
  }
  for (binmx::Isa isa : binmx::AvailableIsas()) {
    std::vector<uint64_t> pa(m * words + 1, 0xdeadbeef), pb(n * words);
    binmx::PackRows(x.data(), m, k, k, pa.data(), isa);
    binmx::PackRows(y.data(), n, k, k, pb.data(), isa);
    CHECK(std::equal(ra.begin(), ra.end(), pa.begin()) &&
              std::equal(rb.begin(), rb.end(), pb.begin()),
          "pack isa=%s m=%lld n=%lld k=%lld", binmx::IsaName(isa), (long long)m, (long long)n,
          (long long)k);
    CHECK(pa[m * words] == 0xdeadbeef, "pack wrote past the end");
    for (int threads : {1, 2, 3, 7}) {
      const binmx::GemmConfig config{isa, threads};
      // ldc > n with a guard column checks strides and out-of-range writes.
      const int64_t ldc = n + 1;
      std::vector<int32_t> c(m * ldc, 12345);
      binmx::XnorGemm(ra.data(), rb.data(), m, n, words, k, c.data(), ldc, config);
      std::vector<float> cf(m * ldc, 7.0f);
      binmx::XnorGemmF32(ra.data(), rb.data(), m, n, words, k, scale.data(), bias.data(), cf.data(),
                         ldc, config);
      for (int64_t i = 0; i < m; ++i) {
        CHECK(c[i * ldc + n] == 12345 && cf[i * ldc + n] == 7.0f, "guard overwritten");
        for (int64_t j = 0; j < n; ++j) {
          const int32_t e = expect[i * n + j];
          CHECK(c[i * ldc + j] == e,
                "isa=%s threads=%d m=%lld n=%lld k=%lld C[%lld,%lld]=%d want %d",
                binmx::IsaName(isa), threads, (long long)m, (long long)n, (long long)k,
                (long long)i, (long long)j, c[i * ldc + j], e);
          volatile float prod = static_cast<float>(e) * scale[i];
          const float ef = prod + bias[i];
          CHECK(cf[i * ldc + j] == ef, "f32 isa=%s threads=%d C[%lld,%lld]=%.9g want %.9g",
                binmx::IsaName(isa), threads, (long long)i, (long long)j, cf[i * ldc + j], ef);
        }
      }
    }
  }
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

void TestErrors() {
  uint64_t a[2] = {0, 0}, b[2] = {0, 0};
  int32_t c[4];
  const binmx::GemmConfig config{binmx::Isa::kScalar, 1};
  CHECK(Throws([&] { binmx::XnorGemm(a, b, 1, 1, 1, 65, c, 1, config); }), "k > 64*words");
  CHECK(Throws([&] { binmx::XnorGemm(a, b, 1, 1, 1, -1, c, 1, config); }), "k < 0");
  CHECK(Throws([&] { binmx::XnorGemm(a, b, -1, 1, 1, 1, c, 1, config); }), "m < 0");
  CHECK(Throws([&] { binmx::XnorGemm(a, b, 1, 2, 1, 1, c, 1, config); }), "ldc < n");
  CHECK(Throws([&] { binmx::XnorGemm(nullptr, b, 1, 1, 1, 1, c, 1, config); }), "null a");
  float x[4] = {0, 0, 0, 0};
  CHECK(Throws([&] { binmx::PackRows(x, 1, 4, 3, a); }), "ld < k");
  for (binmx::Isa isa : {binmx::Isa::kAvx2, binmx::Isa::kAvx512, binmx::Isa::kNeon}) {
    const bool available = binmx::IsaBuilt(isa) && binmx::IsaSupportedByCpu(isa);
    CHECK(Throws([&] { binmx::RequireIsa(isa); }) == !available, "RequireIsa(%s)",
          binmx::IsaName(isa));
  }
  // Empty products are fine.
  binmx::XnorGemm(a, b, 0, 0, 0, 0, c, 0, config);
  int32_t zero_k[2] = {5, 5};
  binmx::XnorGemm(a, b, 1, 2, 0, 0, zero_k, 2, config);
  CHECK(zero_k[0] == 0 && zero_k[1] == 0, "k=0 gives %d %d", zero_k[0], zero_k[1]);
}

void TestParallelFor() {
  for (int threads : {1, 2, 3, 8}) {
    for (int64_t n : {1, 2, 5, 100}) {
      std::vector<std::atomic<int>> hits(n);
      binmx::ParallelFor(n, threads, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) hits[i]++;
      });
      for (int64_t i = 0; i < n; ++i)
        CHECK(hits[i] == 1, "threads=%d n=%lld i=%lld", threads, (long long)n, (long long)i);
    }
  }
  // Nested calls run inline and still cover everything.
  std::atomic<int64_t> total{0};
  binmx::ParallelFor(4, 2, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      binmx::ParallelFor(10, 2, [&](int64_t b2, int64_t e2) { total += e2 - b2; });
    }
  });
  CHECK(total == 40, "nested total=%lld", (long long)total.load());
  // Concurrent callers take turns and never deadlock.
  std::atomic<int64_t> sum{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep) {
        binmx::ParallelFor(16, 3, [&](int64_t begin, int64_t end) { sum += end - begin; });
      }
    });
  }
  for (auto& t : callers) t.join();
  CHECK(sum == 4 * 50 * 16, "concurrent sum=%lld", (long long)sum.load());
  // An exception in a task reaches the caller; the pool stays usable.
  bool caught = false;
  try {
    binmx::ParallelFor(8, 2, [&](int64_t begin, int64_t) {
      if (begin > 0) throw std::runtime_error("task failed");
    });
  } catch (const std::runtime_error&) {
    caught = true;
  }
  CHECK(caught, "exception not propagated");
  std::atomic<int> after{0};
  binmx::ParallelFor(2, 2, [&](int64_t begin, int64_t end) { after += end - begin; });
  CHECK(after == 2, "pool broken after exception");
}

// ValidateConv2dParams: the message of the first failed check ("" when it passes).
std::string GeometryError(const binmx::Conv2dParams& p) {
  try {
    binmx::ValidateConv2dParams(p);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

binmx::Conv2dParams SmallConv() {
  binmx::Conv2dParams p;
  p.batch = 2;
  p.channels = 8;
  p.in_h = 10;
  p.in_w = 9;
  p.num_filter = 4;
  p.kernel_h = 3;
  p.kernel_w = 3;
  return p;
}

// Direct O(everything) reference of the binary convolution (zero padding, no alpha/bias).
std::vector<float> RefConv(const std::vector<float>& x, const std::vector<float>& w,
                           const binmx::Conv2dParams& p) {
  const int64_t oh = p.OutH(), ow = p.OutW(), cg = p.GroupChannels(), fg = p.GroupFilters();
  std::vector<float> out(p.batch * p.num_filter * oh * ow, 0.0f);
  for (int64_t n = 0; n < p.batch; ++n) {
    for (int64_t f = 0; f < p.num_filter; ++f) {
      const int64_t g = f / fg;
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          int64_t dot = 0;
          for (int64_t c = 0; c < cg; ++c) {
            for (int64_t i = 0; i < p.kernel_h; ++i) {
              for (int64_t j = 0; j < p.kernel_w; ++j) {
                const int64_t y = oy * p.stride_h - p.pad_h + i * p.dilate_h;
                const int64_t xx = ox * p.stride_w - p.pad_w + j * p.dilate_w;
                if (y < 0 || y >= p.in_h || xx < 0 || xx >= p.in_w) continue;
                const float a = x[((n * p.channels + g * cg + c) * p.in_h + y) * p.in_w + xx];
                const float b = w[((f * cg + c) * p.kernel_h + i) * p.kernel_w + j];
                dot += ((a < 0) == (b < 0)) ? 1 : -1;
              }
            }
          }
          out[((n * p.num_filter + f) * oh + oy) * ow + ox] = static_cast<float>(dot);
        }
      }
    }
  }
  return out;
}

void TestGeometry() {
  using binmx::Conv2dParams;
  CHECK(GeometryError(SmallConv()).empty(), "valid: %s", GeometryError(SmallConv()).c_str());
  struct Bad {
    void (*edit)(Conv2dParams*);
    const char* needle;
  };
  const Bad bad[] = {
      {[](Conv2dParams* p) {
         p->kernel_h = (int64_t{1} << 58) + 1;
         p->dilate_h = 64;
       },
       "kernel_h"},
      {[](Conv2dParams* p) { p->dilate_h = int64_t{1} << 62; }, "dilated kernel"},
      {[](Conv2dParams* p) { p->dilate_w = INT64_MAX; }, "dilated kernel"},
      {[](Conv2dParams* p) {
         p->kernel_h = 1;
         p->dilate_h = INT64_MAX;
         p->kernel_w = 0;
       },
       "kernel_w"},
      {[](Conv2dParams* p) { p->pad_h = int64_t{1} << 31; }, "pad_h"},
      {[](Conv2dParams* p) { p->pad_w = -1; }, "pad_w"},
      {[](Conv2dParams* p) { p->pad_h = p->pad_w = int64_t{1} << 25; }, "exceeds 2^40"},
      {[](Conv2dParams* p) { p->in_h = int64_t{1} << 31; }, "in_h"},
      {[](Conv2dParams* p) { p->in_w = 0; }, "in_w"},
      {[](Conv2dParams* p) { p->batch = -1; }, "batch"},
      {[](Conv2dParams* p) { p->channels = INT64_MAX; }, "channels"},
      {[](Conv2dParams* p) { p->num_filter = 0; }, "num_filter"},
      {[](Conv2dParams* p) { p->stride_w = 0; }, "stride_w"},
      {[](Conv2dParams* p) { p->dilate_h = -3; }, "dilate_h"},
      {[](Conv2dParams* p) { p->groups = 3; }, "divisible"},
      {[](Conv2dParams* p) { p->pad_value = 2; }, "pad_value"},
      {[](Conv2dParams* p) { p->in_h = 2; }, "dilated kernel"},
      {[](Conv2dParams* p) {
         p->batch = p->in_h = p->in_w = binmx::kMaxConvDim;
         p->kernel_h = p->kernel_w = 1;
       },
       "exceeds 2^40"},
      {[](Conv2dParams* p) {
         p->channels = p->num_filter = int64_t{1} << 30;
         p->kernel_h = p->kernel_w = 1 << 10;
         p->in_h = p->in_w = 1 << 10;
         p->batch = 1;
       },
       "exceeds 2^40"},
  };
  for (const Bad& b : bad) {
    Conv2dParams p = SmallConv();
    b.edit(&p);
    const std::string e = GeometryError(p);
    CHECK(e.find(b.needle) != std::string::npos, "want '%s', got '%s'", b.needle, e.c_str());
  }
  // Valid extremes: a stride past the padded input (one output row), dilation with kernel 1.
  Conv2dParams p = SmallConv();
  p.stride_h = int64_t{1} << 62;
  p.stride_w = INT64_MAX;
  p.pad_h = 1;
  CHECK(GeometryError(p).empty() && p.OutH() == 1 && p.OutW() == 1, "huge stride: %s",
        GeometryError(p).c_str());
  p = SmallConv();
  p.kernel_h = 1;
  p.dilate_h = INT64_MAX;
  CHECK(GeometryError(p).empty(), "kernel 1 with any dilation: %s", GeometryError(p).c_str());

  // The direct convolution at those strides, and with every tail bit of the packed weights
  // set, on every path: equal to the reference.
  std::mt19937_64 gen(7);
  for (int64_t channels : {5, 64, 70}) {
    for (int64_t stride : {int64_t{1}, int64_t{4}, int64_t{1} << 40}) {
      Conv2dParams q = SmallConv();
      q.channels = channels;
      q.stride_h = stride;
      q.stride_w = stride == 4 ? 1 : stride;
      q.pad_h = q.pad_w = 1;
      const std::vector<float> x = RandomFloats(gen, q.batch * q.channels * q.in_h * q.in_w);
      const std::vector<float> w = RandomFloats(gen, q.num_filter * q.FilterSize());
      const std::vector<float> want = RefConv(x, w, q);
      std::vector<uint64_t> packed(binmx::PackedConvWeightWords(q));
      binmx::PackConvWeights(w.data(), q, packed.data());
      const int64_t words = q.TapWords();
      if (channels % 64 != 0) {
        for (size_t i = words - 1; i < packed.size(); i += words) {
          packed[i] |= ~((uint64_t{1} << (channels % 64)) - 1);
        }
      }
      for (binmx::Isa isa : binmx::AvailableIsas()) {
        for (int threads : {1, 2}) {
          std::vector<float> out(want.size(), -99.0f);
          binmx::BinaryConvArgs args;
          args.x = x.data();
          args.w_packed = packed.data();
          args.out = out.data();
          binmx::BinaryConv2d(args, q, binmx::GemmConfig{isa, threads});
          CHECK(out == want, "bconv isa=%s threads=%d C=%lld stride=%lld", binmx::IsaName(isa),
                threads, (long long)channels, (long long)stride);
        }
      }
    }
  }
  // Dense: stray tail bits in the packed weights are ignored too.
  for (int64_t depth : {1, 63, 65, 200}) {
    const int64_t rows = 3, hidden = 5, words = binmx::WordsFor(depth);
    const std::vector<float> x = RandomFloats(gen, rows * depth);
    const std::vector<float> w = RandomFloats(gen, hidden * depth);
    std::vector<uint64_t> packed = RefPack(w, hidden, depth);
    if (depth % 64 != 0) {
      for (int64_t h = 0; h < hidden; ++h) {
        packed[h * words + words - 1] |= ~((uint64_t{1} << (depth % 64)) - 1);
      }
    }
    for (binmx::Isa isa : binmx::AvailableIsas()) {
      std::vector<float> out(rows * hidden);
      binmx::BinaryDenseArgs args;
      args.x = x.data();
      args.w_packed = packed.data();
      args.out = out.data();
      binmx::BinaryDense(args, rows, depth, hidden, binmx::GemmConfig{isa, 2});
      for (int64_t m = 0; m < rows; ++m) {
        for (int64_t h = 0; h < hidden; ++h) {
          CHECK(out[m * hidden + h] == static_cast<float>(RefDot(x, m, w, h, depth)),
                "dense isa=%s depth=%lld [%lld,%lld]", binmx::IsaName(isa), (long long)depth,
                (long long)m, (long long)h);
        }
      }
    }
  }
  CHECK(Throws([&] {
          binmx::BinaryDenseArgs args;
          float f = 0.0f;
          uint64_t u = 0;
          args.x = &f;
          args.w_packed = &u;
          args.out = &f;
          binmx::BinaryDense(args, int64_t{1} << 40, int64_t{1} << 20, 1,
                             binmx::DefaultGemmConfig());
        }),
        "dense sizes past 2^40");
}

}  // namespace

int main() {
  std::mt19937_64 gen(12345);
  std::printf("available:");
  for (binmx::Isa isa : binmx::AvailableIsas()) std::printf(" %s", binmx::IsaName(isa));
  std::printf("\n");
  const int64_t ks[] = {0,  1,  2,  3,   4,   5,   6,   7,   8,   9,   10,  31,
                        63, 64, 65, 127, 128, 129, 200, 511, 512, 513, 576, 2000};
  const int64_t sizes[] = {1, 2, 3, 5, 7, 8, 9, 13, 17, 33};
  int cases = 0;
  for (int64_t k : ks) {
    for (int64_t m : sizes) {
      for (int64_t n : sizes) {
        if ((m * 7 + n * 3 + k) % 3 != 0 && m > 3 && n > 3) continue;  // thin the grid
        // K = 3..10 (one word, every tail length): a sparser set of shapes.
        const auto sparse = [](int64_t v) {
          return v == 1 || v == 3 || v == 8 || v == 9 || v == 17;
        };
        if (k >= 3 && k <= 10 && k != 5 && !(sparse(m) && sparse(n))) continue;
        TestCase(gen, m, n, k);
        ++cases;
      }
    }
  }
  TestCase(gen, 70, 75, 1152);  // several panels and row blocks on every path
  TestCase(gen, 40, 49, 4608);
  // 4097 words: past the NEON kernel's 4095-word uint16 fold.
  TestCase(gen, 5, 9, 4096 * 64 + 1, /*extreme=*/true);
  cases += 3;
  TestErrors();
  TestParallelFor();
  TestGeometry();
  std::printf("%d gemm cases, %d failures\n", cases, g_failures);
  return g_failures == 0 ? 0 : 1;
}

/*
 * binmx runtime: float convolution (+ bias + relu + fused max-pool) and dense layers -- the
 * validation, weight packing and threaded drivers, plus the portable kernel path (see
 * float_ops.h for the formulas, float_kernels.h for the kernel contracts).
 *
 * Panels, no pool: task = (image n, panel of nr output pixels of the flattened OH x OW plane);
 * per group, the panel is im2col'ed (K x nr) into the thread's scratch and multiplied by the
 * group's filter tiles, written straight into y (row stride OH * OW).
 * Panels with a pool: the batch x POH pooled rows are split into 2 x threads contiguous parts.
 * Pooled row py needs conv rows [py * ps - pp, py * ps - pp + pk) clipped to [0, OH); a part
 * keeps those rows in a buffer [F][buf_rows * OW] (rows in order, the oldest first): rows still
 * needed by the next window are moved to the front, the missing ones computed as one flattened
 * pixel range, then every filter's window is pooled into y.
 * Direct: the input is first copied zero-padded into shared scratch (one parallel pass); task =
 * (image, conv row) or, with a pool, a part of the pooled rows as above. A conv row comes out
 * channels-last [ox][F]; without a pool it is transposed into y; with one it is computed into
 * the middle of a -FLT_MAX-padded row, max-pooled along x into a ring of buf_rows x-pooled
 * rows, and each pooled row is the max over its window's ring rows (max pooling is
 * separable), transposed into y.
 * Dense: task = panel of nr hidden units; x is packed once into tiles of mr rows (for rows = 1
 * the row itself is the tile), W^T was packed into [depth][nr] panels at construction.
 * Per-thread scratch: a ParallelFor chunk claims one of `threads` slots (an atomic flag each)
 * for its duration, so concurrent chunks never share a slot.
 */
#include "float_ops.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "float_kernels.h"
#include "parallel.h"

namespace binmx {
namespace rt {

namespace {

// ---- portable kernel path ----

// Tile sizes by register file: 32 vector registers on aarch64 (4 x 16: 16 accumulators),
// 16 on x86-64 (4 x 8: 8 accumulators, room for SSE's two-operand temporaries).
#if defined(__aarch64__)
constexpr int kPortableNr = 16;
#else
constexpr int kPortableNr = 8;
#endif
constexpr int kPortableMr = 4;

// GCC/Clang vector extension (SSE on x86-64, NEON on aarch64; no intrinsics): 4 floats.
using V4 = float __attribute__((vector_size(16)));

inline V4 LoadV4(const float* p) {
  V4 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// MR x 16 tile: MR * 4 vector accumulators; per k, 4 vector loads of B and MR scalar
// broadcasts, acc += a * b as a multiply then an add (the library builds with
// -ffp-contract=off).
template <int MR>
void PortableTile(const float* a, const PanelArgs& p, const float* bias_rows, float* c) {
  constexpr int NR = kPortableNr;
  V4 acc[MR][NR / 4];
  for (int r = 0; r < MR; ++r) {
    for (int v = 0; v < NR / 4; ++v) acc[r][v] = V4{0.0f, 0.0f, 0.0f, 0.0f};
  }
  float pad[NR] = {};
  for (int64_t k = 0; k < p.depth; ++k) {
    const float* bk = p.b + k * p.ldb;
    if (!p.b_full) {  // a partial panel read in place: copy its n columns, zeros after
      std::memcpy(pad, bk, sizeof(float) * static_cast<size_t>(p.n));
      bk = pad;
    }
    V4 b[NR / 4];
    for (int v = 0; v < NR / 4; ++v) b[v] = LoadV4(bk + 4 * v);
    const float* ak = a + k * MR;
    for (int r = 0; r < MR; ++r) {
      const float av = ak[r];
      for (int v = 0; v < NR / 4; ++v) acc[r][v] += av * b[v];
    }
  }
  for (int r = 0; r < MR; ++r) {
    float out[NR];
    std::memcpy(out, acc[r], sizeof(out));
    float* cr = c + r * p.ldc;
    for (int q = 0; q < p.n; ++q) {
      float v = out[q];
      if (p.bias != nullptr) v += p.bias_per_col ? p.bias[q] : bias_rows[r];
      if (p.relu) v = v > 0.0f ? v : 0.0f;
      cr[q] = v;
    }
  }
}

void PortablePanel(const PanelArgs& p) {
  for (int64_t m0 = 0; m0 < p.m; m0 += p.mr) {
    const int rows = static_cast<int>(std::min<int64_t>(p.mr, p.m - m0));
    const float* a = p.a + m0 * p.depth;
    const float* bias_rows = (p.bias != nullptr && !p.bias_per_col) ? p.bias + m0 : nullptr;
    float* c = p.c + m0 * p.ldc;
    switch (rows) {
      case 1:
        PortableTile<1>(a, p, bias_rows, c);
        break;
      case 2:
        PortableTile<2>(a, p, bias_rows, c);
        break;
      case 3:
        PortableTile<3>(a, p, bias_rows, c);
        break;
      default:
        PortableTile<4>(a, p, bias_rows, c);
        break;
    }
  }
}

struct PortableOps {
  static bool Row(float*, int, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int) {
    return false;
  }
  static void Extract(float* ph, int64_t ld, const float* row, int64_t width, int64_t start,
                      int64_t stride, int64_t count) {
    ExtractScalar(ph, ld, row, width, start, stride, count);
  }
  static void Copy(float* dst, const float* src, int len) {
    std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(len));
  }
};

void PortableIm2col(const Im2colArgs& a, int64_t q0, int n, float* col) {
  Im2colPanel<PortableOps>(a, q0, n, kPortableNr, col);
}

const FloatKernels kPortable = {"portable",      kPortableNr,    kPortableMr, &PortablePanel,
                                &PortableIm2col, &PoolRowScalar, 0,           nullptr,
                                nullptr,         nullptr,        nullptr,     nullptr};

// ---- helpers ----

int64_t Mul(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) {
    Fail(std::string("float layer: ") + what + " overflows 64-bit sizes");
  }
  return r;
}

int64_t RoundUp16(int64_t v) { return (v + 15) / 16 * 16; }

// Sizes are kept well inside what size_t byte counts and int64 index arithmetic can hold.
constexpr int64_t kMaxElements = int64_t{1} << 40;

void CheckElements(int64_t v, const char* what) {
  if (v > kMaxElements) {
    Fail(std::string("float layer: ") + what + " has " + std::to_string(v) +
         " elements, more than the runtime supports (2^40)");
  }
}

int64_t ConvOut(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  if (in <= 0 || k <= 0 || s <= 0 || p < 0 || d <= 0 || in > kMaxElements || k > kMaxElements ||
      s > kMaxElements || p > kMaxElements || d > kMaxElements) {
    return 0;
  }
  if (k - 1 > kMaxElements / d) return 0;  // the dilated span would pass 2^40
  const int64_t span = d * (k - 1) + 1;
  const int64_t num = in + 2 * p - span;
  if (num < 0) return 0;
  return num / s + 1;
}

int64_t PoolOut(int64_t in, int64_t k, int64_t s, int64_t p, bool full) {
  const int64_t num = in + 2 * p - k;
  return full ? 1 + (num + s - 1) / s : 1 + num / s;
}

const FloatKernels* Resolve(Isa isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
#ifdef BINMX_RT_BUILT_AVX512
  if (isa == Isa::kAvx512 && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("fma")) {
    return Avx512FloatKernels();
  }
#endif
#ifdef BINMX_RT_BUILT_AVX2
  if ((isa == Isa::kAvx512 || isa == Isa::kAvx2) && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma")) {
    return Avx2FloatKernels();
  }
#endif
#endif
#ifdef BINMX_RT_BUILT_NEON
  // aarch64: Advanced SIMD is baseline, so every Isa value (kScalar included, and a NEON value
  // when one is added) takes the NEON kernels.
  (void)isa;
  return NeonFloatKernels();
#else
  (void)isa;
  return PortableFloatKernels();
#endif
}

// Tile height for m rows: as few tiles of at most max_mr rows as possible, balanced.
int TileRows(int64_t m, int max_mr) {
  const int64_t tiles = (m + max_mr - 1) / max_mr;
  return static_cast<int>((m + tiles - 1) / tiles);
}

// Packs rows [0, m) of a (row r at a + r * lda, depth columns) into tiles of mr rows, k-major.
void PackTiles(const float* a, int64_t lda, int64_t m, int64_t depth, int mr, float* out) {
  for (int64_t m0 = 0; m0 < m; m0 += mr) {
    const int64_t rows = std::min<int64_t>(mr, m - m0);
    float* tile = out + m0 * depth;
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = a + (m0 + r) * lda;
      for (int64_t k = 0; k < depth; ++k) tile[k * rows + r] = src[k];
    }
  }
}

// `threads` flags (at most kMaxSlots: ParallelFor never runs more threads than that); a
// running chunk holds one, so at most `threads` chunks run at once (the ParallelFor contract)
// and each has scratch of its own. No allocation: Run allocates nothing.
constexpr int kMaxSlots = 256;

class Slots {
 public:
  explicit Slots(int n) : n_(std::min(n, kMaxSlots)) {
    for (int i = 0; i < n_; ++i) busy_[i].store(false, std::memory_order_relaxed);
  }
  int Acquire() {
    for (int i = 0; i < n_; ++i) {
      bool expected = false;
      if (busy_[i].compare_exchange_strong(expected, true, std::memory_order_acquire)) return i;
    }
    Fail("float layer: more concurrent tasks than `threads` scratch slots");
  }
  void Release(int i) { busy_[i].store(false, std::memory_order_release); }

 private:
  int n_;
  std::atomic<bool> busy_[kMaxSlots];
};

class SlotLease {
 public:
  explicit SlotLease(Slots* s) : s_(s), i_(s->Acquire()) {}
  ~SlotLease() { s_->Release(i_); }
  int index() const { return i_; }

 private:
  Slots* s_;
  int i_;
};

// The pooled paths split the batch * pool_h pooled rows into 2 * threads contiguous parts (not
// more: each part recomputes the conv row it shares with the previous one; not fewer: a late
// thread can hand a part over). Values do not depend on the split.
int64_t PoolParts(int64_t units, int threads) {
  return std::min<int64_t>(units, 2 * static_cast<int64_t>(threads));
}

// True when [a, a + na) and [b, b + nb) share an element (compared as addresses).
bool Overlap(const float* a, int64_t na, const float* b, int64_t nb) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + sizeof(float) * static_cast<uintptr_t>(nb) &&
         pb < pa + sizeof(float) * static_cast<uintptr_t>(na);
}

void CheckThreads(int threads) {
  if (threads < 1) Fail("float layer: threads must be >= 1, got " + std::to_string(threads));
}

}  // namespace

const FloatKernels* PortableFloatKernels() { return &kPortable; }

const char* FloatPathName(Isa isa) { return Resolve(isa)->name; }

bool MaxPoolInterior(const float* x, int64_t planes, int64_t h, int64_t w, int64_t kh, int64_t kw,
                     int64_t sh, int64_t sw, int64_t oh, int64_t ow, float* y, Isa isa) {
  const FloatKernels* k = Resolve(isa);
  if (k->max_pool_short == nullptr || (sw != 1 && sw != 2) || ow > 16 || (ow - 1) * sw + kw > 32 ||
      (ow - 1) * sw + kw > w || (oh - 1) * sh + kh > h) {
    return false;
  }
  k->max_pool_short(x, planes, h, w, kh, kw, sh, sw, oh, ow, y);
  return true;
}

// ---- FloatConvGeometry ----

int64_t FloatConvGeometry::OutH() const {
  return ConvOut(in_h, kernel_h, stride_h, pad_h, dilate_h);
}
int64_t FloatConvGeometry::OutW() const {
  return ConvOut(in_w, kernel_w, stride_w, pad_w, dilate_w);
}

// ---- FloatConv ----

FloatConv::FloatConv(const FloatConvGeometry& g, const float* weight, const float* bias, bool relu,
                     const MaxPoolSpec* pool, Isa isa)
    : g_(g), relu_(relu), has_pool_(pool != nullptr), kern_(Resolve(isa)) {
  auto positive = [](int64_t v, const char* name) {
    if (v <= 0 || v > kMaxElements) {
      Fail(std::string("FloatConv: ") + name + " must be in [1, 2^40], got " + std::to_string(v));
    }
  };
  positive(g.batch, "batch");
  positive(g.channels, "channels");
  positive(g.in_h, "in_h");
  positive(g.in_w, "in_w");
  positive(g.filters, "filters");
  positive(g.kernel_h, "kernel_h");
  positive(g.kernel_w, "kernel_w");
  positive(g.stride_h, "stride_h");
  positive(g.stride_w, "stride_w");
  positive(g.dilate_h, "dilate_h");
  positive(g.dilate_w, "dilate_w");
  positive(g.groups, "groups");
  if (g.pad_h < 0 || g.pad_w < 0 || g.pad_h > kMaxElements || g.pad_w > kMaxElements) {
    Fail("FloatConv: pad must be in [0, 2^40], got (" + std::to_string(g.pad_h) + ", " +
         std::to_string(g.pad_w) + ")");
  }
  if (g.channels % g.groups != 0 || g.filters % g.groups != 0) {
    Fail("FloatConv: channels (" + std::to_string(g.channels) + ") and filters (" +
         std::to_string(g.filters) + ") must be multiples of groups (" + std::to_string(g.groups) +
         ")");
  }
  if (weight == nullptr) Fail("FloatConv: weight is null");
  out_h_ = g.OutH();
  out_w_ = g.OutW();
  if (out_h_ <= 0 || out_w_ <= 0) {
    Fail("FloatConv: the dilated kernel (" + std::to_string(g.kernel_h) + "x" +
         std::to_string(g.kernel_w) + ", dilate " + std::to_string(g.dilate_h) + "x" +
         std::to_string(g.dilate_w) + ") is larger than the padded input (" +
         std::to_string(g.in_h) + "x" + std::to_string(g.in_w) + ", pad " +
         std::to_string(g.pad_h) + "x" + std::to_string(g.pad_w) + ")");
  }
  cg_ = g.channels / g.groups;
  fg_ = g.filters / g.groups;
  kg_ = Mul(Mul(cg_, g.kernel_h, "kernel"), g.kernel_w, "kernel");
  CheckElements(Mul(Mul(g.batch, g.channels, "input"), Mul(g.in_h, g.in_w, "input"), "input"),
                "the input");
  CheckElements(Mul(Mul(g.batch, g.filters, "output"), Mul(out_h_, out_w_, "output"), "output"),
                "the output");
  CheckElements(Mul(g.filters, kg_, "weight"), "the weight");
  CheckElements(Mul(kg_, kern_->nr, "im2col panel"), "an im2col panel");
  direct_ = g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 &&
            g.pad_h == 0 && g.pad_w == 0;
  if (has_pool_) {
    pool_ = *pool;
    const MaxPoolSpec& p = pool_;
    if (p.kernel_h <= 0 || p.kernel_w <= 0 || p.stride_h <= 0 || p.stride_w <= 0 || p.pad_h < 0 ||
        p.pad_w < 0 || p.kernel_h > kMaxElements || p.kernel_w > kMaxElements ||
        p.stride_h > kMaxElements || p.stride_w > kMaxElements) {
      Fail("FloatConv: pool kernel and stride must be positive and pad >= 0, got kernel " +
           std::to_string(p.kernel_h) + "x" + std::to_string(p.kernel_w) + ", stride " +
           std::to_string(p.stride_h) + "x" + std::to_string(p.stride_w) + ", pad " +
           std::to_string(p.pad_h) + "x" + std::to_string(p.pad_w));
    }
    if (p.pad_h >= p.kernel_h || p.pad_w >= p.kernel_w) {
      Fail(
          "FloatConv: pool pad must be smaller than the pool kernel (as MXNet requires), got "
          "pad " +
          std::to_string(p.pad_h) + "x" + std::to_string(p.pad_w) + ", kernel " +
          std::to_string(p.kernel_h) + "x" + std::to_string(p.kernel_w));
    }
    if (p.kernel_h > out_h_ + 2 * p.pad_h || p.kernel_w > out_w_ + 2 * p.pad_w) {
      Fail("FloatConv: pool kernel " + std::to_string(p.kernel_h) + "x" +
           std::to_string(p.kernel_w) + " exceeds the padded conv output (" +
           std::to_string(out_h_) + "x" + std::to_string(out_w_) + ", pad " +
           std::to_string(p.pad_h) + "x" + std::to_string(p.pad_w) + ")");
    }
    pool_h_ = PoolOut(out_h_, p.kernel_h, p.stride_h, p.pad_h, p.full_convention);
    pool_w_ = PoolOut(out_w_, p.kernel_w, p.stride_w, p.pad_w, p.full_convention);
    CheckElements(Mul(Mul(g.batch, g.filters, "output"), Mul(pool_h_, pool_w_, "output"), "output"),
                  "the pooled output");
    buf_rows_ = std::min(p.kernel_h, out_h_);
    CheckElements(Mul(Mul(g.filters, buf_rows_, "pool buffer"), out_w_, "pool buffer"),
                  "the pool row buffer");
  }
  // The direct path: for few input channels (the stem's 3), where an im2col panel would be
  // mostly copying, and filters in whole vectors; stride along a row 1 or 2. Taken where a
  // tile's work covers its epilogue and transposes (K >= 16: LeNet's 25 with its fused 2x2
  // pool ran in 24 us against the panels' 29, AVX-512, one run) and rounding out_w up to the
  // kernel's granule wastes at most 1/16 (AVX-512: 14-pixel tiles and one even remainder).
  const int64_t px_tile = kern_->direct_px;
  direct_path_ = kern_->direct_row != nullptr && fg_ % 16 == 0 && cg_ <= 8 && kg_ >= 16 &&
                 (g.stride_w == 1 || g.stride_w == 2) &&
                 16 * ((out_w_ + px_tile - 1) / px_tile * px_tile - out_w_) <= out_w_;
  if (direct_path_) {
    const int64_t px = kern_->direct_px;
    out_wr_ = (out_w_ + px - 1) / px * px;
    xp_h_ = g.in_h + 2 * g.pad_h;
    xp_w_ = std::max(g.in_w + 2 * g.pad_w,
                     (out_wr_ - 1) * g.stride_w + (g.kernel_w - 1) * g.dilate_w + 1);
    shared_floats_ = RoundUp16(Mul(Mul(g.batch, g.channels, "padded input"),
                                   Mul(xp_h_, xp_w_, "padded input"), "padded input"));
    CheckElements(shared_floats_, "the padded input");
    // Per thread: without a pool, one conv row [out_wr][F]; with one, the conv row inside its
    // -FLT_MAX-padded pooling row (tmp), a ring of buf_rows_ x-pooled rows and the output row.
    if (has_pool_) {
      const int64_t cells =
          std::max(pool_w_ * pool_.stride_w + pool_.kernel_w, pool_.pad_w + out_wr_) + 1;
      tmp_floats_ = RoundUp16(Mul(cells, g.filters, "pool buffer"));
      buf_floats_ =
          RoundUp16(Mul(Mul(buf_rows_, pool_w_, "pool buffer"), g.filters, "pool buffer"));
      out_floats_ = RoundUp16(Mul(pool_w_, g.filters, "pool buffer"));
      CheckElements(buf_floats_ + tmp_floats_, "the pool buffers");
    } else {
      buf_floats_ = RoundUp16(Mul(out_wr_, g.filters, "row buffer"));
    }
    // Weights [g][k][f]: w[(g * fg + f)][k] -> wpack[(g * kg + k) * fg + f].
    wpack_.resize(static_cast<size_t>(g.filters * kg_));
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      for (int64_t f = 0; f < fg_; ++f) {
        for (int64_t k = 0; k < kg_; ++k) {
          wpack_[(gr * kg_ + k) * fg_ + f] = weight[(gr * fg_ + f) * kg_ + k];
        }
      }
    }
  } else {
    col_floats_ = direct_ ? 0 : RoundUp16(kg_ * kern_->nr);
    buf_floats_ = has_pool_ ? RoundUp16(g.filters * buf_rows_ * out_w_) : 0;
    tmp_floats_ =
        has_pool_ ? PoolTmpFloats(out_w_, pool_.pad_w, pool_.kernel_w, pool_.stride_w, pool_w_) : 0;
    mr_ = TileRows(fg_, kern_->max_mr);
    wpack_.resize(static_cast<size_t>(g.filters * kg_));
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      PackTiles(weight + gr * fg_ * kg_, kg_, fg_, kg_, mr_, wpack_.data() + gr * fg_ * kg_);
    }
  }
  if (bias != nullptr) bias_.assign(bias, bias + g.filters);
}

std::vector<int64_t> FloatConv::OutputShape() const {
  if (has_pool_) return {g_.batch, g_.filters, pool_h_, pool_w_};
  return {g_.batch, g_.filters, out_h_, out_w_};
}

size_t FloatConv::ScratchBytes(int threads) const {
  CheckThreads(threads);
  const int64_t per = col_floats_ + buf_floats_ + tmp_floats_ + out_floats_;
  return static_cast<size_t>(shared_floats_ + Mul(per, threads, "scratch")) * sizeof(float);
}

const char* FloatConv::PathName() const { return kern_->name; }

const char* FloatConv::Method() const {
  return direct_path_ ? "direct" : (direct_ ? "panels-1x1" : "panels");
}

// Conv outputs for flattened pixels [q0, q0 + count) of image n, all filters:
// C[f][q - q0] at c + f * ldc.
void FloatConv::ComputeRows(const float* x, int64_t n, int64_t q0, int64_t count, float* c,
                            int64_t ldc, float* col) const {
  const int nr = kern_->nr;
  const int64_t hw_in = g_.in_h * g_.in_w;
  for (int64_t p0 = 0; p0 < count; p0 += nr) {
    const int cnt = static_cast<int>(std::min<int64_t>(nr, count - p0));
    for (int64_t gr = 0; gr < g_.groups; ++gr) {
      const float* xg = x + (n * g_.channels + gr * cg_) * hw_in;
      PanelArgs a;
      a.a = wpack_.data() + gr * fg_ * kg_;
      a.m = fg_;
      a.mr = mr_;
      a.depth = kg_;
      if (direct_) {
        a.b = xg + q0 + p0;
        a.ldb = hw_in;
        a.b_full = cnt == nr;
      } else {
        const Im2colArgs ia{xg,          cg_,         g_.in_h,     g_.in_w,  g_.kernel_h,
                            g_.kernel_w, g_.stride_h, g_.stride_w, g_.pad_h, g_.pad_w,
                            g_.dilate_h, g_.dilate_w, out_w_};
        kern_->im2col(ia, q0 + p0, cnt, col);
        a.b = col;
        a.ldb = nr;
        a.b_full = true;
      }
      a.n = cnt;
      a.bias = bias_.empty() ? nullptr : bias_.data() + gr * fg_;
      a.bias_per_col = false;
      a.relu = relu_;
      a.c = c + gr * fg_ * ldc + p0;
      a.ldc = ldc;
      kern_->panel(a);
    }
  }
}

void FloatConv::Run(const float* x, float* y, void* scratch, int threads) const {
  CheckThreads(threads);
  if (x == nullptr || y == nullptr) Fail("FloatConv::Run: x and y must not be null");
  if (scratch == nullptr && ScratchBytes(threads) > 0) {
    Fail("FloatConv::Run: scratch is null but " + std::to_string(ScratchBytes(threads)) +
         " bytes are needed");
  }
  const int64_t in_count = g_.batch * g_.channels * g_.in_h * g_.in_w;
  const std::vector<int64_t> shape = OutputShape();
  const int64_t out_count = shape[0] * shape[1] * shape[2] * shape[3];
  if (Overlap(x, in_count, y, out_count)) Fail("FloatConv::Run: y overlaps x");
  if (direct_path_) {
    RunDirect(x, y, static_cast<float*>(scratch), threads);
  } else {
    RunPanels(x, y, static_cast<float*>(scratch), threads);
  }
}

void FloatConv::RunPanels(const float* x, float* y, float* base, int threads) const {
  const int64_t per = col_floats_ + buf_floats_ + tmp_floats_;
  Slots slots(threads);
  const int64_t ohw = out_h_ * out_w_;
  if (!has_pool_) {
    const int nr = kern_->nr;
    const int64_t panels = (ohw + nr - 1) / nr;
    ParallelFor(g_.batch * panels, threads, [&](int64_t begin, int64_t end) {
      SlotLease lease(&slots);
      float* col = base + lease.index() * per;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / panels;
        const int64_t q0 = (t - n * panels) * nr;
        ComputeRows(x, n, q0, std::min<int64_t>(nr, ohw - q0), y + n * g_.filters * ohw + q0, ohw,
                    col);
      }
    });
    return;
  }
  const MaxPoolSpec& p = pool_;
  const int64_t pooled = pool_h_ * pool_w_;
  const int64_t buf_ld = buf_rows_ * out_w_;
  const int64_t units = g_.batch * pool_h_, parts = PoolParts(units, threads);
  ParallelFor(parts, threads, [&](int64_t part_begin, int64_t part_end) {
    const int64_t begin = units * part_begin / parts, end = units * part_end / parts;
    SlotLease lease(&slots);
    float* col = base + lease.index() * per;
    float* buf = col + col_floats_;
    float* tmp = buf + buf_floats_;
    std::fill(tmp, tmp + tmp_floats_, std::numeric_limits<float>::lowest());
    int64_t cur_n = -1, buf_lo = 0, buf_hi = 0;  // rows [buf_lo, buf_hi) of image cur_n
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / pool_h_;
      const int64_t py = t - n * pool_h_;
      if (n != cur_n) {
        cur_n = n;
        buf_lo = buf_hi = 0;
      }
      const int64_t start = py * p.stride_h - p.pad_h;
      const int64_t lo = std::max<int64_t>(start, 0);
      const int64_t hi = std::min<int64_t>(start + p.kernel_h, out_h_);
      PoolRowArgs pa{buf,        0,       out_w_,  out_w_, p.kernel_w,
                     p.stride_w, p.pad_w, pool_w_, tmp,    nullptr};
      if (hi > lo) {
        if (lo >= buf_hi || lo < buf_lo) {
          buf_lo = buf_hi = lo;
        } else if (lo > buf_lo) {
          const int64_t keep = (buf_hi - lo) * out_w_;
          for (int64_t f = 0; f < g_.filters; ++f) {
            float* row0 = buf + f * buf_ld;
            std::memmove(row0, row0 + (lo - buf_lo) * out_w_, sizeof(float) * keep);
          }
          buf_lo = lo;
        }
        if (hi > buf_hi) {
          ComputeRows(x, n, buf_hi * out_w_, (hi - buf_hi) * out_w_,
                      buf + (buf_hi - buf_lo) * out_w_, buf_ld, col);
          buf_hi = hi;
        }
        pa.n_rows = hi - lo;
      }
      pa.rows = buf;
      pa.out = y + n * g_.filters * pooled + py * pool_w_;
      pa.planes = g_.filters;
      pa.plane_stride = buf_ld;
      pa.out_plane_stride = pooled;
      kern_->pool_row(pa);
    }
  });
}

// One conv row (all filters) of image n by the direct kernel into cl[ox * F + f], ox < out_wr_.
void FloatConv::DirectRow(const float* xpad, int64_t n, int64_t oy, float* cl) const {
  for (int64_t gr = 0; gr < g_.groups; ++gr) {
    DirectRowArgs a;
    a.x = xpad + ((n * g_.channels + gr * cg_) * xp_h_ + oy * g_.stride_h) * xp_w_;
    a.chan_stride = xp_h_ * xp_w_;
    a.row_stride = xp_w_;
    a.channels = cg_;
    a.kernel_h = g_.kernel_h;
    a.kernel_w = g_.kernel_w;
    a.stride_w = g_.stride_w;
    a.dilate_h = g_.dilate_h;
    a.dilate_w = g_.dilate_w;
    a.filters = fg_;
    a.w = wpack_.data() + gr * kg_ * fg_;
    a.bias = bias_.empty() ? nullptr : bias_.data() + gr * fg_;
    a.relu = relu_;
    a.out = cl + gr * fg_;
    a.ld_pix = g_.filters;
    a.out_w = out_wr_;
    kern_->direct_row(a);
  }
}

void FloatConv::RunDirect(const float* x, float* y, float* base, int threads) const {
  // 1. The zero-padded input of every image, shared by all tasks.
  float* xpad = base;
  const int64_t rows = g_.batch * g_.channels * xp_h_;
  ParallelFor(rows, threads, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t nc = r / xp_h_;
      const int64_t iy = r - nc * xp_h_ - g_.pad_h;
      float* dst = xpad + r * xp_w_;
      std::fill(dst, dst + xp_w_, 0.0f);
      if (iy >= 0 && iy < g_.in_h) {
        std::memcpy(dst + g_.pad_w, x + (nc * g_.in_h + iy) * g_.in_w,
                    sizeof(float) * static_cast<size_t>(g_.in_w));
      }
    }
  });
  // 2. Conv rows into a channels-last buffer, pooled there, transposed into y.
  const int64_t per = buf_floats_ + tmp_floats_ + out_floats_;
  float* slots_base = base + shared_floats_;
  Slots slots(threads);
  const int64_t f = g_.filters;
  if (!has_pool_) {
    const int64_t ohw = out_h_ * out_w_;
    ParallelFor(g_.batch * out_h_, threads, [&](int64_t begin, int64_t end) {
      SlotLease lease(&slots);
      float* cl = slots_base + lease.index() * per;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / out_h_;
        const int64_t oy = t - n * out_h_;
        DirectRow(xpad, n, oy, cl);
        kern_->to_nchw(cl, out_w_, f, f, y + n * f * ohw + oy * out_w_, ohw);
      }
    });
    return;
  }
  // With a pool: conv row oy is computed straight into the middle of the padded pooling row
  // tmp (its rounding pixels reset to -FLT_MAX), pooled along x into ring slot oy % buf_rows_,
  // and each pooled row is the max of its window's slots (max pooling is separable).
  const MaxPoolSpec& p = pool_;
  const int64_t pooled = pool_h_ * pool_w_;
  const int64_t hrow = pool_w_ * f;
  const int64_t units = g_.batch * pool_h_, parts = PoolParts(units, threads);
  ParallelFor(parts, threads, [&](int64_t part_begin, int64_t part_end) {
    const int64_t begin = units * part_begin / parts, end = units * part_end / parts;
    SlotLease lease(&slots);
    float* ring = slots_base + lease.index() * per;
    float* tmp = ring + buf_floats_;
    float* out = tmp + tmp_floats_;
    float* mid = tmp + p.pad_w * f;
    const float lowest = std::numeric_limits<float>::lowest();
    std::fill(tmp, tmp + tmp_floats_, lowest);
    int64_t cur_n = -1, done = 0;  // conv rows [.., done) of image cur_n are in the ring
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / pool_h_;
      const int64_t py = t - n * pool_h_;
      const int64_t start = py * p.stride_h - p.pad_h;
      const int64_t lo = std::max<int64_t>(start, 0);
      const int64_t hi = std::min<int64_t>(start + p.kernel_h, out_h_);
      if (n != cur_n || lo > done) {
        cur_n = n;
        done = lo;
      }
      for (; done < hi; ++done) {
        DirectRow(xpad, n, done, mid);
        std::fill(mid + out_w_ * f, mid + out_wr_ * f, lowest);
        kern_->hpool_cl(tmp, f, p.kernel_w, p.stride_w, pool_w_, ring + (done % buf_rows_) * hrow);
      }
      if (hi > lo) {
        std::memcpy(out, ring + (lo % buf_rows_) * hrow, sizeof(float) * hrow);
        for (int64_t r = lo + 1; r < hi; ++r) {
          kern_->vmax(ring + (r % buf_rows_) * hrow, hrow, out);
        }
      } else {
        std::fill(out, out + hrow, lowest);
      }
      kern_->to_nchw(out, pool_w_, f, f, y + n * f * pooled + py * pool_w_, pooled);
    }
  });
}

// ---- FloatDense ----

FloatDense::FloatDense(int64_t depth, int64_t hidden, const float* weight, const float* bias,
                       bool relu, Isa isa)
    : depth_(depth), hidden_(hidden), relu_(relu), kern_(Resolve(isa)) {
  if (depth <= 0 || hidden <= 0 || depth > kMaxElements || hidden > kMaxElements) {
    Fail("FloatDense: depth and hidden must be in [1, 2^40], got depth " + std::to_string(depth) +
         ", hidden " + std::to_string(hidden));
  }
  if (weight == nullptr) Fail("FloatDense: weight is null");
  const int nr = kern_->nr;
  const int64_t panels = (hidden + nr - 1) / nr;
  CheckElements(Mul(Mul(panels, nr, "weight"), depth, "weight"), "the weight");
  wpack_.assign(static_cast<size_t>(panels * nr * depth), 0.0f);
  for (int64_t pn = 0; pn < panels; ++pn) {
    float* panel = wpack_.data() + pn * nr * depth;
    const int64_t cols = std::min<int64_t>(nr, hidden - pn * nr);
    for (int64_t q = 0; q < cols; ++q) {
      const float* src = weight + (pn * nr + q) * depth;
      for (int64_t d = 0; d < depth; ++d) panel[d * nr + q] = src[d];
    }
  }
  if (bias != nullptr) {
    bias_.assign(static_cast<size_t>(panels * nr), 0.0f);
    std::copy(bias, bias + hidden, bias_.begin());
  }
}

size_t FloatDense::ScratchBytes(int64_t rows, int threads) const {
  CheckThreads(threads);
  if (rows < 0 || rows > kMaxElements) {
    Fail("FloatDense: rows must be in [0, 2^40], got " + std::to_string(rows));
  }
  if (rows <= 1) return 0;
  const int64_t floats = Mul(rows, depth_, "packed input");
  CheckElements(floats, "the packed input");
  return static_cast<size_t>(floats) * sizeof(float);
}

const char* FloatDense::PathName() const { return kern_->name; }

void FloatDense::Run(const float* x, int64_t rows, float* y, void* scratch, int threads) const {
  const size_t need = ScratchBytes(rows, threads);
  if (rows == 0) return;
  if (x == nullptr || y == nullptr) Fail("FloatDense::Run: x and y must not be null");
  if (Overlap(x, rows * depth_, y, rows * hidden_)) Fail("FloatDense::Run: y overlaps x");
  if (need > 0 && scratch == nullptr) {
    Fail("FloatDense::Run: scratch is null but " + std::to_string(need) + " bytes are needed");
  }
  const int nr = kern_->nr;
  const int mr = TileRows(rows, kern_->max_mr);
  const float* a = x;
  if (rows > 1) {
    float* packed = static_cast<float*>(scratch);
    const int64_t tiles = (rows + mr - 1) / mr;
    ParallelFor(tiles, threads, [&](int64_t begin, int64_t end) {
      const int64_t r0 = begin * mr;
      const int64_t r1 = std::min<int64_t>(end * mr, rows);
      PackTiles(x + r0 * depth_, depth_, r1 - r0, depth_, mr, packed + r0 * depth_);
    });
    a = packed;
  }
  const int64_t panels = (hidden_ + nr - 1) / nr;
  ParallelFor(panels, threads, [&](int64_t begin, int64_t end) {
    for (int64_t pn = begin; pn < end; ++pn) {
      PanelArgs pa;
      pa.a = a;
      pa.m = rows;
      pa.mr = mr;
      pa.depth = depth_;
      pa.b = wpack_.data() + pn * nr * depth_;
      pa.ldb = nr;
      pa.n = static_cast<int>(std::min<int64_t>(nr, hidden_ - pn * nr));
      pa.b_full = true;
      pa.bias = bias_.empty() ? nullptr : bias_.data() + pn * nr;
      pa.bias_per_col = true;
      pa.relu = relu_;
      pa.c = y + pn * nr;
      pa.ldc = hidden_;
      kern_->panel(pa);
    }
  });
}

}  // namespace rt
}  // namespace binmx

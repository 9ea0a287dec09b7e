/*
 * binmx CUDA: the C API (binmx_cuda.h): argument checks, error state, algorithm and tile
 * choice, and the two packing kernels.
 *
 * PackRows: one warp per output word; lane l tests elements 64w + l and 64w + 32 + l and
 * __ballot_sync gathers the two 32-bit halves (bit j = element 64w + j < 0, tail bits 0).
 * PackNchw: output layout (N, H, W, G, cw) with cw = ceil(C/G/64). binmx_cuda_pack_nchw and the
 * table/im2col convolutions use one thread per BYTE of a word (8 channel loads each, pixels
 * fastest so a warp's loads are coalesced: PrepareKernel's pack section); the legacy
 * convolution keeps the API version 2 kernel (one thread per word, 64 loads).
 * Binary convolution: a plan (PlanConv: mode from BINMX_CUDA_CONV, scratch layout, im2col
 * chunk) and RunConv: PrepareKernel (pack + border prefix table + tap table, one launch), then
 * per chunk Im2colKernel + the xnor GEMM with the conv epilogue (im2col), or the implicit-GEMM
 * xnor kernel (table, legacy). Modes are described in tile.cuh and binmx_cuda.h.
 */
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "binmx_cuda.h"
#include "error.h"
#include "tile.cuh"

namespace binmx {
namespace cuda {

// Error state shared with train.cu (declared in error.h).
namespace {
thread_local std::string g_last_error;
}  // namespace

int Fail(int code, const std::string& message) {
  g_last_error = message;
  return code;
}

int FailCuda(cudaError_t err, const char* what) {
  const int code = (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver)
                       ? BINMX_CUDA_ERR_NO_DEVICE
                       : BINMX_CUDA_ERR_CUDA;
  return Fail(code,
              std::string(what) + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

namespace {

std::string Str(int64_t v) { return std::to_string(v); }

int64_t WordsFor(int64_t k) { return (k + 63) / 64; }

__global__ void PackRowsKernel(const float* __restrict__ x, int64_t rows, int64_t k, int64_t ld,
                               int64_t words, uint64_t* __restrict__ out) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (warp >= rows * words) return;  // whole warps exit together
  const int64_t r = warp / words;
  const int64_t w = warp - r * words;
  const float* row = x + r * ld;
  const int64_t j0 = w * 64 + lane;
  const int64_t j1 = j0 + 32;
  const bool b0 = j0 < k && row[j0] < 0.0f;
  const bool b1 = j1 < k && row[j1] < 0.0f;
  const unsigned lo = __ballot_sync(0xffffffffu, b0);
  const unsigned hi = __ballot_sync(0xffffffffu, b1);
  if (lane == 0) out[warp] = (static_cast<uint64_t>(hi) << 32) | lo;
}

__global__ void PackNchwKernel(const float* __restrict__ x, int64_t n, int64_t channels, int64_t hw,
                               int64_t groups, int64_t cg, int64_t cw, uint64_t* __restrict__ out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * groups * cw * hw) return;
  const int64_t pix = idx % hw;
  int64_t rest = idx / hw;
  const int64_t word = rest % cw;
  rest /= cw;
  const int64_t group = rest % groups;
  const int64_t img = rest / groups;
  const int64_t c0 = word * 64;
  const int len = static_cast<int>(cg - c0 < 64 ? cg - c0 : 64);
  const float* src = x + ((img * channels + group * cg + c0) * hw + pix);
  uint64_t bits = 0;
#pragma unroll 8
  for (int b = 0; b < len; ++b) bits |= static_cast<uint64_t>(src[b * hw] < 0.0f) << b;
  out[((img * hw + pix) * groups + group) * cw + word] = bits;
}

// ---- Convolution preparation (table and im2col modes) --------------------------------------
// One launch, three independent sections of kPrepThreads-thread blocks (a block runs only its
// own section; a section with 0 blocks is skipped):
//   pack   [0, pack_blocks): per-pixel channel packing, one thread per byte of a word. Index
//          (img, group, word, byte, pixel), pixel fastest, so a warp reads 32 consecutive
//          pixels of one channel (coalesced). Byte `byte` of word `word` (little-endian: bits
//          8 * byte .. 8 * byte + 7) holds channels c = 64 * word + 8 * byte + t (t < 8) of the
//          group, bit t = (x[img, group * cg + c, pixel] < 0); channels >= cg give 0 bits.
//   border [.., + border_blocks): the prefix table of tile.cuh, one warp per filter f:
//          s[(i + 1) * (kw + 1) + (j + 1)] = v(f, i, j) = cg - 2 * popc(W[f, i, j, :]), row 0 and
//          column 0 zero, then running sums along rows, then along columns, so that
//          s[i][j] = sum_{i' < i, j' < j} v(f, i', j').
//   taps   [.., + taps_blocks): the tap table of tile.cuh, one thread per word kk < words:
//          tap = kk / cw, c = kk % cw, i = tap / kw, j = tap % kw,
//          {dy = i * dh, dx = j * dw, off = (dy * W + dx) * G * cw + c (int64, low, high)}.
constexpr int kPrepThreads = 256;

struct PrepArgs {
  // pack
  const float* x;
  uint64_t* xp;
  int64_t n, channels, hw, groups, cg, cw, pack_total;
  // border
  const uint64_t* w;
  int* border;
  int num_filter, kh, kw, wcw, wcg;
  // taps
  int4* taps;
  int words, dh, dw;
  int64_t width, gcw;
  unsigned pack_blocks, border_blocks, taps_blocks;
};

template <typename I>
__device__ void PackSection(const PrepArgs& a, I idx) {
  if (idx >= static_cast<I>(a.pack_total)) return;
  const I hw = static_cast<I>(a.hw);
  const I pix = idx % hw;
  I rest = idx / hw;
  const I byte = rest % 8;
  rest /= 8;
  const I word = rest % static_cast<I>(a.cw);
  rest /= static_cast<I>(a.cw);
  const I group = rest % static_cast<I>(a.groups);
  const I img = rest / static_cast<I>(a.groups);
  const int64_t c0 = static_cast<int64_t>(word) * 64 + static_cast<int64_t>(byte) * 8;
  const int64_t left = a.cg - c0;  // channels of this group from c0 on
  const int len = left <= 0 ? 0 : (left < 8 ? static_cast<int>(left) : 8);
  const float* src =
      a.x +
      ((static_cast<int64_t>(img) * a.channels + static_cast<int64_t>(group) * a.cg + c0) * a.hw +
       static_cast<int64_t>(pix));
  unsigned bits = 0;
#pragma unroll
  for (int t = 0; t < 8; ++t) {
    if (t < len) bits |= static_cast<unsigned>(__ldg(src + t * a.hw) < 0.0f) << t;
  }
  const int64_t word_index =
      ((static_cast<int64_t>(img) * a.hw + static_cast<int64_t>(pix)) * a.groups +
       static_cast<int64_t>(group)) *
          a.cw +
      static_cast<int64_t>(word);
  reinterpret_cast<uint8_t*>(a.xp)[word_index * 8 + static_cast<int64_t>(byte)] =
      static_cast<uint8_t>(bits);
}

__device__ void BorderSection(const PrepArgs& a, unsigned block) {
  const int f = static_cast<int>((block * kPrepThreads + threadIdx.x) / 32);
  const int lane = threadIdx.x & 31;
  if (f >= a.num_filter) return;  // whole warps leave together
  const int kh = a.kh, kw = a.kw, stride = a.kw + 1;
  int* s = a.border + static_cast<int64_t>(f) * (kh + 1) * stride;
  const uint64_t* wf = a.w + static_cast<int64_t>(f) * kh * kw * a.wcw;
  for (int t = lane; t < kh * kw; t += 32) {
    const uint64_t* tap = wf + static_cast<int64_t>(t) * a.wcw;
    int pc = 0;
    for (int c = 0; c < a.wcw; ++c) pc += __popcll(__ldg(tap + c));
    const int i = t / kw;
    const int j = t - i * kw;
    s[(i + 1) * stride + (j + 1)] = a.wcg - 2 * pc;
  }
  for (int j = lane; j <= kw; j += 32) s[j] = 0;               // row 0
  for (int i = lane + 1; i <= kh; i += 32) s[i * stride] = 0;  // column 0
  __syncwarp();                               // (also orders the warp's global writes and reads)
  for (int i = lane + 1; i <= kh; i += 32) {  // running sums along row i
    for (int j = 1; j <= kw; ++j) s[i * stride + j] += s[i * stride + j - 1];
  }
  __syncwarp();
  for (int j = lane + 1; j <= kw; j += 32) {  // then along column j
    for (int i = 1; i <= kh; ++i) s[i * stride + j] += s[(i - 1) * stride + j];
  }
}

__device__ void TapsSection(const PrepArgs& a, unsigned block) {
  const int kk = static_cast<int>(block * kPrepThreads + threadIdx.x);
  if (kk >= a.words) return;
  const int tap = kk / a.wcw;
  const int c = kk - tap * a.wcw;
  const int i = tap / a.kw;
  const int j = tap - i * a.kw;
  const int dy = i * a.dh;
  const int dx = j * a.dw;
  const int64_t off = (static_cast<int64_t>(dy) * a.width + dx) * a.gcw + c;
  const uint64_t u = static_cast<uint64_t>(off);
  a.taps[kk] = make_int4(dy, dx, static_cast<int>(static_cast<uint32_t>(u)),
                         static_cast<int>(static_cast<uint32_t>(u >> 32)));
}

template <typename I>
__global__ void __launch_bounds__(kPrepThreads) PrepareKernel(const PrepArgs a) {
  unsigned block = blockIdx.x;
  if (block < a.pack_blocks) {
    PackSection<I>(a, static_cast<I>(block) * kPrepThreads + threadIdx.x);
    return;
  }
  block -= a.pack_blocks;
  if (block < a.border_blocks) {
    BorderSection(a, block);
    return;
  }
  block -= a.border_blocks;
  if (block < a.taps_blocks) TapsSection(a, block);
}

// Explicit bit im2col of images img0 .. img0 + cols / ohw - 1 (kModeConvIm2col's B): one thread
// per word, idx = (z * cols + q) * words + kk for group z, output pixel q of the chunk
// (q = img * ohw + oy * out_w + ox, image img0 + img) and word kk (tap = kk / cw, c = kk % cw,
// i = tap / kw, j = tap % kw); b[idx] = xp word c of group z at input pixel
// (oy * sh - ph + i * dh, ox * sw - pw + j * dw), or 0 when that pixel is in the padding.
// total = groups * cols * words < 2^31 (the plan caps the chunk).
__global__ void Im2colKernel(const uint64_t* __restrict__ xp, const ConvGeom g, int64_t img0,
                             unsigned cols, unsigned words, unsigned total,
                             uint64_t* __restrict__ b) {
  const unsigned idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const unsigned kk = idx % words;
  const unsigned r = idx / words;
  const unsigned z = r / cols;
  const unsigned q = r - z * cols;
  const unsigned ohw = static_cast<unsigned>(g.out_h * g.out_w);
  const unsigned img = q / ohw;
  const unsigned pix = q - img * ohw;
  const int oy = static_cast<int>(pix / static_cast<unsigned>(g.out_w));
  const int ox = static_cast<int>(pix) - oy * static_cast<int>(g.out_w);
  const int tap = static_cast<int>(kk) / g.cw;
  const int c = static_cast<int>(kk) - tap * g.cw;
  const int i = tap / g.kw;
  const int j = tap - i * g.kw;
  const int iy = oy * g.sh - g.ph + i * g.dh;
  const int ix = ox * g.sw - g.pw + j * g.dw;
  uint64_t v = 0;
  if (iy >= 0 && iy < g.height && ix >= 0 && ix < g.width) {
    const int64_t pixel = ((img0 + img) * g.height + iy) * g.width + ix;
    v = __ldg(xp + (pixel * g.groups + z) * g.cw + c);
  }
  b[idx] = v;
}

struct DeviceInfo {
  int capability;
  int sms;
};

int QueryDevice(DeviceInfo* info) {
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return FailCuda(err, "cudaGetDevice");
  int major = 0, minor = 0, sms = 0;
  err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  if (err == cudaSuccess)
    err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (err != cudaSuccess) return FailCuda(err, "cudaDeviceGetAttribute");
  info->capability = major * 10 + minor;
  info->sms = sms;
  return BINMX_CUDA_OK;
}

int AlgoFromEnv() {
  const char* env = std::getenv("BINMX_CUDA_ALGO");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "auto") == 0) return BINMX_CUDA_ALGO_AUTO;
  if (std::strcmp(env, "simt") == 0) return BINMX_CUDA_ALGO_SIMT;
  if (std::strcmp(env, "tensor") == 0) return BINMX_CUDA_ALGO_TENSOR;
  return -1;
}

// Resolves algo for the current device; returns an error code or OK with *out set.
int ResolveAlgo(int algo, const DeviceInfo& dev, int* out) {
  if (algo != BINMX_CUDA_ALGO_AUTO && algo != BINMX_CUDA_ALGO_SIMT &&
      algo != BINMX_CUDA_ALGO_TENSOR) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Expected `algo` to be 0 (auto), 1 (simt) or 2 (tensor), got " + Str(algo));
  }
  if (algo == BINMX_CUDA_ALGO_AUTO) {
    algo = AlgoFromEnv();
    if (algo < 0) {
      return Fail(BINMX_CUDA_ERR_ARGUMENT, std::string("Expected BINMX_CUDA_ALGO to be auto, "
                                                       "simt or tensor, got '") +
                                               std::getenv("BINMX_CUDA_ALGO") + "'");
    }
  }
  if (algo == BINMX_CUDA_ALGO_AUTO) {
    algo = dev.capability >= 80 ? BINMX_CUDA_ALGO_TENSOR : BINMX_CUDA_ALGO_SIMT;
  }
  if (algo == BINMX_CUDA_ALGO_TENSOR && dev.capability < 80) {
    return Fail(BINMX_CUDA_ERR_UNSUPPORTED,
                "algo tensor needs compute capability >= 8.0, device has " +
                    Str(dev.capability / 10) + "." + Str(dev.capability % 10));
  }
  *out = algo;
  return BINMX_CUDA_OK;
}

Tile ChooseTile(const DeviceInfo& dev, int64_t m, int64_t n, int64_t groups) {
  const char* env = std::getenv("BINMX_CUDA_TILE");
  if (env != nullptr && std::strcmp(env, "large") == 0) return Tile::kLarge;
  if (env != nullptr && std::strcmp(env, "small") == 0) return Tile::kSmall;
  // Large tiles reuse more, but only pay when they still give every SM two blocks.
  return TileBlocks(Tile::kLarge, m, n) * groups >= 2 * static_cast<int64_t>(dev.sms)
             ? Tile::kLarge
             : Tile::kSmall;
}

int Run(const Problem& p, int mode, int groups, int algo, void* stream) {
  if (p.m == 0 || p.n == 0) return BINMX_CUDA_OK;
  DeviceInfo dev{0, 0};
  int rc = QueryDevice(&dev);
  if (rc != BINMX_CUDA_OK) return rc;
  int resolved = 0;
  rc = ResolveAlgo(algo, dev, &resolved);
  if (rc != BINMX_CUDA_OK) return rc;
  if ((p.m + 31) / 32 > 65535) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "too many rows for one launch: m = " + Str(p.m));
  }
  const Tile tile = ChooseTile(dev, p.m, p.n, groups);
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const cudaError_t err = resolved == BINMX_CUDA_ALGO_TENSOR
                              ? LaunchTensor(p, mode, tile, groups, s)
                              : LaunchSimt(p, mode, tile, groups, s);
  if (err != cudaSuccess) return FailCuda(err, "xnor kernel launch");
  return BINMX_CUDA_OK;
}

int CheckGemm(const void* a, const void* b, int64_t m, int64_t n, int64_t words, int64_t k,
              const void* c, int64_t ldc) {
  if (m < 0 || n < 0) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Expected `m` and `n` >= 0, got m = " + Str(m) + ", n = " + Str(n));
  }
  if (words < 0 || words > std::numeric_limits<int>::max() - 64) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected 0 <= `words` < 2^31, got " + Str(words));
  }
  if (k < 0 || k > 64 * words) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Expected 0 <= `k` <= 64 * words = " + Str(64 * words) + ", got " + Str(k));
  }
  if (ldc < n) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected `ldc` >= n = " + Str(n) + ", got " + Str(ldc));
  }
  if (m > 0 && n > 0 && (a == nullptr || b == nullptr || c == nullptr)) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`a`, `b` and `c` must be non-null device pointers");
  }
  return BINMX_CUDA_OK;
}

Problem GemmProblem(const uint64_t* a, const uint64_t* b, int64_t m, int64_t n, int64_t words,
                    int64_t k) {
  Problem p;
  std::memset(&p, 0, sizeof(p));
  p.a = a;
  p.lda = words;
  p.b = b;
  p.ldb = words;
  p.m = m;
  p.n = n;
  p.k = k;
  p.words = static_cast<int>(words);
  return p;
}

// Checks the conv geometry; fills geom (and out sizes) when valid.
int CheckConv(const binmx_cuda_conv2d_params* p, ConvGeom* geom) {
  if (p == nullptr) return Fail(BINMX_CUDA_ERR_ARGUMENT, "`params` is null");
  const struct {
    const char* name;
    int64_t value;
    int64_t min;
  } fields[] = {
      {"batch", p->batch, 0},       {"channels", p->channels, 1},     {"height", p->height, 1},
      {"width", p->width, 1},       {"num_filter", p->num_filter, 1}, {"kernel_h", p->kernel_h, 1},
      {"kernel_w", p->kernel_w, 1}, {"stride_h", p->stride_h, 1},     {"stride_w", p->stride_w, 1},
      {"pad_h", p->pad_h, 0},       {"pad_w", p->pad_w, 0},           {"dilate_h", p->dilate_h, 1},
      {"dilate_w", p->dilate_w, 1}, {"num_group", p->num_group, 1}};
  for (const auto& f : fields) {
    if (f.value < f.min || f.value > (int64_t{1} << 30)) {
      return Fail(BINMX_CUDA_ERR_ARGUMENT, std::string("Expected `") + f.name + "` in [" +
                                               Str(f.min) + ", 2^30], got " + Str(f.value));
    }
  }
  if (p->channels % p->num_group != 0) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected `channels` (" + Str(p->channels) +
                                             ") divisible by `num_group` (" + Str(p->num_group) +
                                             ")");
  }
  if (p->num_filter % p->num_group != 0) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected `num_filter` (" + Str(p->num_filter) +
                                             ") divisible by `num_group` (" + Str(p->num_group) +
                                             ")");
  }
  if (p->pad_value < -1 || p->pad_value > 1) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Expected `pad_value` to be 0, 1 or -1, got " + Str(p->pad_value));
  }
  const int64_t span_h = p->dilate_h * (p->kernel_h - 1) + 1;
  const int64_t span_w = p->dilate_w * (p->kernel_w - 1) + 1;
  if (p->height + 2 * p->pad_h < span_h || p->width + 2 * p->pad_w < span_w) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Dilated kernel (" + Str(span_h) + ", " + Str(span_w) +
                                             ") larger than the padded input (" +
                                             Str(p->height + 2 * p->pad_h) + ", " +
                                             Str(p->width + 2 * p->pad_w) + ")");
  }
  if (p->num_group > 65535) {  // one grid z slice per group
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected `num_group` <= 65535, got " + Str(p->num_group));
  }
  const int64_t cg = p->channels / p->num_group;
  const int64_t cw = WordsFor(cg);
  if (p->kernel_h * p->kernel_w * cw > (int64_t{1} << 30)) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "kernel_h * kernel_w * ceil(C/num_group/64) too large");
  }
  geom->batch = p->batch;
  geom->height = p->height;
  geom->width = p->width;
  geom->out_h = (p->height + 2 * p->pad_h - span_h) / p->stride_h + 1;
  geom->out_w = (p->width + 2 * p->pad_w - span_w) / p->stride_w + 1;
  geom->kh = static_cast<int>(p->kernel_h);
  geom->kw = static_cast<int>(p->kernel_w);
  geom->sh = static_cast<int>(p->stride_h);
  geom->sw = static_cast<int>(p->stride_w);
  geom->ph = static_cast<int>(p->pad_h);
  geom->pw = static_cast<int>(p->pad_w);
  geom->dh = static_cast<int>(p->dilate_h);
  geom->dw = static_cast<int>(p->dilate_w);
  geom->groups = static_cast<int>(p->num_group);
  geom->cw = static_cast<int>(cw);
  geom->cg = static_cast<int>(cg);
  geom->fg = static_cast<int>(p->num_filter / p->num_group);
  geom->num_filter = static_cast<int>(p->num_filter);
  geom->pad_value = static_cast<int>(p->pad_value);
  return BINMX_CUDA_OK;
}

int LaunchPackNchw(const float* x, int64_t n, int64_t channels, int64_t hw, int64_t groups,
                   uint64_t* out, cudaStream_t stream) {
  const int64_t cg = channels / groups;
  const int64_t cw = WordsFor(cg);
  const int64_t total = n * groups * cw * hw;
  if (total == 0) return BINMX_CUDA_OK;
  const int threads = 256;
  PackNchwKernel<<<static_cast<unsigned>((total + threads - 1) / threads), threads, 0, stream>>>(
      x, n, channels, hw, groups, cg, cw, out);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? BINMX_CUDA_OK : FailCuda(err, "pack_nchw launch");
}

int LaunchPrepare(PrepArgs a, cudaStream_t stream) {
  a.pack_blocks = static_cast<unsigned>((a.pack_total + kPrepThreads - 1) / kPrepThreads);
  a.border_blocks =
      a.border != nullptr
          ? static_cast<unsigned>((a.num_filter + kPrepThreads / 32 - 1) / (kPrepThreads / 32))
          : 0;
  a.taps_blocks =
      a.taps != nullptr ? static_cast<unsigned>((a.words + kPrepThreads - 1) / kPrepThreads) : 0;
  const unsigned blocks = a.pack_blocks + a.border_blocks + a.taps_blocks;
  if (blocks == 0) return BINMX_CUDA_OK;
  if (a.pack_total < (int64_t{1} << 32) - kPrepThreads) {
    PrepareKernel<uint32_t><<<blocks, kPrepThreads, 0, stream>>>(a);
  } else {
    PrepareKernel<uint64_t><<<blocks, kPrepThreads, 0, stream>>>(a);
  }
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? BINMX_CUDA_OK : FailCuda(err, "conv prepare launch");
}

// Per-pixel channel packing (binmx_cuda_pack_nchw and the table/im2col convolutions).
int LaunchPackBytes(const float* x, int64_t n, int64_t channels, int64_t hw, int64_t groups,
                    uint64_t* out, cudaStream_t stream) {
  PrepArgs a;
  std::memset(&a, 0, sizeof(a));
  a.x = x;
  a.xp = out;
  a.n = n;
  a.channels = channels;
  a.hw = hw;
  a.groups = groups;
  a.cg = channels / groups;
  a.cw = WordsFor(a.cg);
  a.pack_total = n * groups * a.cw * 8 * hw;
  return LaunchPrepare(a, stream);
}

// ---- Convolution plan: mode (BINMX_CUDA_CONV), scratch layout, im2col chunking -------------
constexpr int64_t kIm2colDefaultBytes = int64_t{32} << 20;

struct ConvPlan {
  int mode;       // kModeConvLegacy, kModeConvTable or kModeConvIm2col
  int64_t chunk;  // images per im2col chunk (kModeConvIm2col)
  size_t pack_bytes, border_bytes, taps_bytes, im2col_bytes;  // 0: part not used
  static size_t Round(size_t b) { return (b + 255) / 256 * 256; }
  // Each part starts 256-aligned; 256 spare bytes align the start of any workspace pointer.
  size_t Bytes() const {
    const size_t sum =
        Round(pack_bytes) + Round(border_bytes) + Round(taps_bytes) + Round(im2col_bytes);
    return sum == 0 ? 0 : sum + 256;
  }
};

struct ConvScratch {
  uint64_t* xp;
  int* border;
  int4* taps;
  uint64_t* im2col;
};

ConvScratch Carve(void* ws, const ConvPlan& plan) {
  uintptr_t at = (reinterpret_cast<uintptr_t>(ws) + 255) / 256 * 256;
  auto take = [&at](size_t bytes) -> void* {
    if (bytes == 0) return nullptr;
    void* ptr = reinterpret_cast<void*>(at);
    at += ConvPlan::Round(bytes);
    return ptr;
  };
  ConvScratch s;
  s.xp = static_cast<uint64_t*>(take(plan.pack_bytes));
  s.border = static_cast<int*>(take(plan.border_bytes));
  s.taps = static_cast<int4*>(take(plan.taps_bytes));
  s.im2col = static_cast<uint64_t*>(take(plan.im2col_bytes));
  return s;
}

// BINMX_CUDA_CONV: auto (default: im2col when one image's im2col fits the cap, else table),
// im2col (the same), table, legacy (alias implicit: the pre-table kernels). The cap on the
// im2col buffer: BINMX_CUDA_IM2COL_MAX_BYTES (default 32 MiB, at most 8 GiB).
int PlanConv(const ConvGeom& g, bool pack, ConvPlan* plan) {
  const char* env = std::getenv("BINMX_CUDA_CONV");
  int mode = kModeConvIm2col;
  if (env != nullptr && *env != '\0' && std::strcmp(env, "auto") != 0 &&
      std::strcmp(env, "im2col") != 0) {
    if (std::strcmp(env, "table") == 0) {
      mode = kModeConvTable;
    } else if (std::strcmp(env, "legacy") == 0 || std::strcmp(env, "implicit") == 0) {
      mode = kModeConvLegacy;
    } else {
      return Fail(BINMX_CUDA_ERR_ARGUMENT,
                  std::string("Expected BINMX_CUDA_CONV to be auto, im2col, table, legacy or "
                              "implicit, got '") +
                      env + "'");
    }
  }
  int64_t cap = kIm2colDefaultBytes;
  const char* cap_env = std::getenv("BINMX_CUDA_IM2COL_MAX_BYTES");
  if (cap_env != nullptr && *cap_env != '\0') {
    char* end = nullptr;
    const long long v = std::strtoll(cap_env, &end, 10);
    if (end == cap_env || *end != '\0' || v < 1 || v > (int64_t{1} << 33)) {
      return Fail(BINMX_CUDA_ERR_ARGUMENT,
                  std::string("Expected BINMX_CUDA_IM2COL_MAX_BYTES to be an integer in "
                              "[1, 2^33], got '") +
                      cap_env + "'");
    }
    cap = v;
  }
  const int64_t words = static_cast<int64_t>(g.kh) * g.kw * g.cw;
  const int64_t image_words = static_cast<int64_t>(g.groups) * g.out_h * g.out_w * words;
  int64_t chunk = 0;
  if (mode == kModeConvIm2col) {
    chunk = cap / 8 / image_words;
    if (chunk > g.batch) chunk = g.batch;
    if (chunk < 1) mode = kModeConvTable;  // one image's im2col is over the cap
  }
  std::memset(plan, 0, sizeof(*plan));
  plan->mode = mode;
  plan->chunk = mode == kModeConvIm2col ? chunk : 0;
  if (pack) {
    plan->pack_bytes =
        static_cast<size_t>(g.batch * g.height * g.width * g.groups * g.cw) * sizeof(uint64_t);
  }
  const bool border = mode != kModeConvLegacy && g.pad_value != 1 && (g.ph > 0 || g.pw > 0);
  if (border) {
    plan->border_bytes = static_cast<size_t>(g.num_filter) * (g.kh + 1) * (g.kw + 1) * sizeof(int);
  }
  if (mode == kModeConvTable) plan->taps_bytes = static_cast<size_t>(words) * sizeof(int4);
  if (mode == kModeConvIm2col) {
    plan->im2col_bytes = static_cast<size_t>(chunk * image_words) * sizeof(uint64_t);
  }
  return BINMX_CUDA_OK;
}

// The convolution with scratch carved from `ws` (plan.Bytes() bytes). x: float NCHW to pack into
// the scratch (plan.pack_bytes > 0), or nullptr with x_packed already packed.
int RunConv(const ConvGeom& g, const ConvPlan& plan, void* ws, const float* x,
            const uint64_t* x_packed, const uint64_t* w, const float* alpha, const float* bias,
            float* out, int algo, void* stream) {
  DeviceInfo dev{0, 0};
  int rc = QueryDevice(&dev);
  if (rc != BINMX_CUDA_OK) return rc;
  int resolved = 0;  // before anything is enqueued
  rc = ResolveAlgo(algo, dev, &resolved);
  if (rc != BINMX_CUDA_OK) return rc;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const ConvScratch scratch = Carve(ws, plan);
  const uint64_t* xp = x != nullptr ? scratch.xp : x_packed;
  const int64_t channels = static_cast<int64_t>(g.groups) * g.cg;
  const int64_t ohw = g.out_h * g.out_w;

  Problem p;
  std::memset(&p, 0, sizeof(p));
  p.a = w;
  p.lda = static_cast<int64_t>(g.kh) * g.kw * g.cw;
  p.m = g.fg;
  p.k = static_cast<int64_t>(g.cg) * g.kh * g.kw;
  p.words = static_cast<int>(p.lda);
  p.scale = alpha;
  p.bias = bias;
  p.conv = g;

  if (plan.mode == kModeConvLegacy) {  // the pre-table path, kernel for kernel
    if (x != nullptr) {
      rc = LaunchPackNchw(x, g.batch, channels, g.height * g.width, g.groups, scratch.xp, s);
      if (rc != BINMX_CUDA_OK) return rc;
    }
    p.b = xp;
    p.n = g.batch * ohw;
    p.c_f32 = out;
    return Run(p, kModeConvLegacy, g.groups, resolved, stream);
  }

  PrepArgs a;
  std::memset(&a, 0, sizeof(a));
  if (x != nullptr) {
    a.x = x;
    a.xp = scratch.xp;
    a.n = g.batch;
    a.channels = channels;
    a.hw = g.height * g.width;
    a.groups = g.groups;
    a.cg = g.cg;
    a.cw = g.cw;
    a.pack_total = g.batch * g.groups * g.cw * 8 * a.hw;
  }
  a.w = w;
  a.border = scratch.border;
  a.num_filter = g.num_filter;
  a.kh = g.kh;
  a.kw = g.kw;
  a.wcw = g.cw;
  a.wcg = g.cg;
  a.taps = scratch.taps;
  a.words = p.words;
  a.dh = g.dh;
  a.dw = g.dw;
  a.width = g.width;
  a.gcw = static_cast<int64_t>(g.groups) * g.cw;
  rc = LaunchPrepare(a, s);
  if (rc != BINMX_CUDA_OK) return rc;
  p.border = scratch.border;  // nullptr: no padding or pad_value 1 (no correction)

  if (plan.mode == kModeConvTable) {
    p.b = xp;
    p.n = g.batch * ohw;
    p.c_f32 = out;
    p.taps = scratch.taps;
    return Run(p, kModeConvTable, g.groups, resolved, stream);
  }

  for (int64_t img0 = 0; img0 < g.batch; img0 += plan.chunk) {
    const int64_t images = g.batch - img0 < plan.chunk ? g.batch - img0 : plan.chunk;
    const int64_t cols = images * ohw;
    const int64_t total = static_cast<int64_t>(g.groups) * cols * p.words;  // <= cap / 8
    const int threads = 256;
    Im2colKernel<<<static_cast<unsigned>((total + threads - 1) / threads), threads, 0, s>>>(
        xp, g, img0, static_cast<unsigned>(cols), static_cast<unsigned>(p.words),
        static_cast<unsigned>(total), scratch.im2col);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return FailCuda(err, "im2col launch");
    p.b = scratch.im2col;
    p.ldb = p.words;
    p.b_group_stride = cols * p.words;
    p.n = cols;
    p.c_f32 = out + img0 * g.num_filter * ohw;
    rc = Run(p, kModeConvIm2col, g.groups, resolved, stream);
    if (rc != BINMX_CUDA_OK) return rc;
  }
  return BINMX_CUDA_OK;
}

// binmx_cuda_binary_conv2d (x != nullptr) and _packed_ws (x_packed): plan, workspace check or
// stream-ordered allocation, RunConv, free.
int ConvCall(const binmx_cuda_conv2d_params* params, const float* x, const uint64_t* x_packed,
             const uint64_t* w, const float* alpha, const float* bias, float* out, void* workspace,
             size_t workspace_bytes, int algo, void* stream) {
  ConvGeom g;
  int rc = CheckConv(params, &g);
  if (rc != BINMX_CUDA_OK) return rc;
  if (g.batch == 0) return BINMX_CUDA_OK;
  const bool packed = x == nullptr;  // the caller passes exactly one of x, x_packed
  if ((packed ? x_packed == nullptr : x == nullptr) || w == nullptr || out == nullptr) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, packed
                                             ? "`x_packed`, `w_packed` and `out` must be non-null"
                                             : "`x`, `w_packed` and `out` must be non-null");
  }
  ConvPlan plan;
  rc = PlanConv(g, /*pack=*/!packed, &plan);
  if (rc != BINMX_CUDA_OK) return rc;
  const size_t need = plan.Bytes();
  if (workspace != nullptr && workspace_bytes < need) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Expected `workspace_bytes` >= " + Str(need) + ", got " + Str(workspace_bytes));
  }
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  void* ws = workspace;
  if (ws == nullptr && need > 0) {
    const cudaError_t err = cudaMallocAsync(&ws, need, s);
    if (err != cudaSuccess) return FailCuda(err, "cudaMallocAsync (conv workspace)");
  }
  rc = RunConv(g, plan, ws, x, x_packed, w, alpha, bias, out, algo, stream);
  if (workspace == nullptr && ws != nullptr) {
    const cudaError_t err = cudaFreeAsync(ws, s);
    if (rc == BINMX_CUDA_OK && err != cudaSuccess) return FailCuda(err, "cudaFreeAsync");
  }
  return rc;
}

size_t ConvWorkspaceBytes(const binmx_cuda_conv2d_params* p, bool pack) {
  ConvGeom g;
  if (CheckConv(p, &g) != BINMX_CUDA_OK) return 0;
  ConvPlan plan;
  if (PlanConv(g, pack, &plan) != BINMX_CUDA_OK) return 0;
  return plan.Bytes();
}

}  // namespace
}  // namespace cuda
}  // namespace binmx

using namespace binmx::cuda;  // NOLINT: C API implementation file

extern "C" {

int binmx_cuda_api_version(void) { return BINMX_CUDA_API_VERSION; }

int binmx_cuda_device_count(void) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error so later calls start clean
    FailCuda(err, "cudaGetDeviceCount");
    return 0;
  }
  if (count == 0) Fail(BINMX_CUDA_ERR_NO_DEVICE, "no CUDA device found");
  return count;
}

const char* binmx_cuda_last_error(void) { return g_last_error.c_str(); }

int binmx_cuda_device_capability(void) {
  DeviceInfo dev{0, 0};
  if (QueryDevice(&dev) != BINMX_CUDA_OK) return -1;
  return dev.capability;
}

int binmx_cuda_resolve_algo(int algo, int64_t words) {
  (void)words;
  DeviceInfo dev{0, 0};
  if (QueryDevice(&dev) != BINMX_CUDA_OK) return -1;
  int out = 0;
  if (ResolveAlgo(algo, dev, &out) != BINMX_CUDA_OK) return -1;
  return out;
}

int binmx_cuda_malloc(void** ptr, size_t bytes) {
  if (ptr == nullptr) return Fail(BINMX_CUDA_ERR_ARGUMENT, "`ptr` is null");
  *ptr = nullptr;
  if (bytes == 0) return BINMX_CUDA_OK;
  const cudaError_t err = cudaMalloc(ptr, bytes);
  return err == cudaSuccess ? BINMX_CUDA_OK : FailCuda(err, "cudaMalloc");
}

int binmx_cuda_free(void* ptr) {
  if (ptr == nullptr) return BINMX_CUDA_OK;
  const cudaError_t err = cudaFree(ptr);
  return err == cudaSuccess ? BINMX_CUDA_OK : FailCuda(err, "cudaFree");
}

int binmx_cuda_memcpy_htod(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return BINMX_CUDA_OK;
  const cudaError_t err = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
  return err == cudaSuccess ? BINMX_CUDA_OK : FailCuda(err, "cudaMemcpy host to device");
}

int binmx_cuda_memcpy_dtoh(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return BINMX_CUDA_OK;
  const cudaError_t err = cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
  return err == cudaSuccess ? BINMX_CUDA_OK : FailCuda(err, "cudaMemcpy device to host");
}

int binmx_cuda_stream_synchronize(void* stream) {
  const cudaError_t err = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
  return err == cudaSuccess ? BINMX_CUDA_OK : FailCuda(err, "cudaStreamSynchronize");
}

int binmx_cuda_pack_rows(const float* x, int64_t rows, int64_t k, int64_t ld, uint64_t* out,
                         void* stream) {
  if (rows < 0 || k < 0 || ld < k) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected rows >= 0, k >= 0, ld >= k, got rows = " +
                                             Str(rows) + ", k = " + Str(k) + ", ld = " + Str(ld));
  }
  const int64_t words = WordsFor(k);
  if (rows * words == 0) return BINMX_CUDA_OK;
  if (x == nullptr || out == nullptr) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`x` and `out` must be non-null device pointers");
  }
  const int threads = 256;  // 8 words per block
  const int64_t blocks = (rows * words * 32 + threads - 1) / threads;
  PackRowsKernel<<<static_cast<unsigned>(blocks), threads, 0, static_cast<cudaStream_t>(stream)>>>(
      x, rows, k, ld, words, out);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? BINMX_CUDA_OK : FailCuda(err, "pack_rows launch");
}

int binmx_cuda_pack_nchw(const float* x, int64_t n, int64_t channels, int64_t h, int64_t w,
                         int64_t groups, uint64_t* out, void* stream) {
  if (n < 0 || channels < 1 || h < 1 || w < 1 || groups < 1 || channels % groups != 0) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Expected n >= 0, channels, h, w, groups >= 1 and channels divisible by groups, "
                "got n = " +
                    Str(n) + ", channels = " + Str(channels) + ", h = " + Str(h) +
                    ", w = " + Str(w) + ", groups = " + Str(groups));
  }
  if (n > 0 && (x == nullptr || out == nullptr)) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`x` and `out` must be non-null device pointers");
  }
  return LaunchPackBytes(x, n, channels, h * w, groups, out, static_cast<cudaStream_t>(stream));
}

int binmx_cuda_xnor_gemm(const uint64_t* a, const uint64_t* b, int64_t m, int64_t n, int64_t words,
                         int64_t k, int32_t* c, int64_t ldc, int algo, void* stream) {
  int rc = CheckGemm(a, b, m, n, words, k, c, ldc);
  if (rc != BINMX_CUDA_OK) return rc;
  Problem p = GemmProblem(a, b, m, n, words, k);
  p.c_i32 = c;
  p.c_sm = ldc;
  p.c_sn = 1;
  return Run(p, kModeGemm, 1, algo, stream);
}

int binmx_cuda_xnor_gemm_f32(const uint64_t* a, const uint64_t* b, int64_t m, int64_t n,
                             int64_t words, int64_t k, const float* scale, const float* bias,
                             float* c, int64_t ldc, int algo, void* stream) {
  int rc = CheckGemm(a, b, m, n, words, k, c, ldc);
  if (rc != BINMX_CUDA_OK) return rc;
  Problem p = GemmProblem(a, b, m, n, words, k);
  p.c_f32 = c;
  p.c_sm = ldc;
  p.c_sn = 1;
  p.scale = scale;
  p.bias = bias;
  return Run(p, kModeGemm, 1, algo, stream);
}

size_t binmx_cuda_fully_connected_workspace(int64_t batch, int64_t d) {
  if (batch < 0 || d < 0) return 0;
  return static_cast<size_t>(batch * WordsFor(d)) * sizeof(uint64_t);
}

int binmx_cuda_fully_connected(const float* x, int64_t batch, int64_t d, const uint64_t* w_packed,
                               int64_t num_hidden, const float* alpha, const float* bias,
                               float* out, void* workspace, size_t workspace_bytes, int algo,
                               void* stream) {
  if (batch < 0 || d < 0 || num_hidden < 0) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected batch, d, num_hidden >= 0, got " + Str(batch) +
                                             ", " + Str(d) + ", " + Str(num_hidden));
  }
  if (batch == 0 || num_hidden == 0) return BINMX_CUDA_OK;
  if (x == nullptr || w_packed == nullptr || out == nullptr) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`x`, `w_packed` and `out` must be non-null");
  }
  const size_t need = binmx_cuda_fully_connected_workspace(batch, d);
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  void* ws = workspace;
  if (ws != nullptr && workspace_bytes < need) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Expected `workspace_bytes` >= " + Str(need) + ", got " + Str(workspace_bytes));
  }
  if (ws == nullptr && need > 0) {
    const cudaError_t err = cudaMallocAsync(&ws, need, s);
    if (err != cudaSuccess) return FailCuda(err, "cudaMallocAsync (fully_connected workspace)");
  }
  uint64_t* xp = static_cast<uint64_t*>(ws);
  int rc = binmx_cuda_pack_rows(x, batch, d, d, xp, stream);
  if (rc == BINMX_CUDA_OK) {
    Problem p = GemmProblem(w_packed, xp, num_hidden, batch, WordsFor(d), d);
    p.c_f32 = out;
    p.c_sm = 1;           // row = hidden unit h
    p.c_sn = num_hidden;  // col = sample b: out[b * num_hidden + h]
    p.scale = alpha;
    p.bias = bias;
    rc = Run(p, kModeGemm, 1, algo, stream);
  }
  if (workspace == nullptr && ws != nullptr) {
    const cudaError_t err = cudaFreeAsync(ws, s);
    if (rc == BINMX_CUDA_OK && err != cudaSuccess) return FailCuda(err, "cudaFreeAsync");
  }
  return rc;
}

int binmx_cuda_fully_connected_packed(const uint64_t* x_packed, int64_t batch, int64_t d,
                                      const uint64_t* w_packed, int64_t num_hidden,
                                      const float* alpha, const float* bias, float* out, int algo,
                                      void* stream) {
  if (batch < 0 || d < 0 || num_hidden < 0) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected batch, d, num_hidden >= 0, got " + Str(batch) +
                                             ", " + Str(d) + ", " + Str(num_hidden));
  }
  if (batch == 0 || num_hidden == 0) return BINMX_CUDA_OK;
  if (x_packed == nullptr || w_packed == nullptr || out == nullptr) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`x_packed`, `w_packed` and `out` must be non-null");
  }
  Problem p = GemmProblem(w_packed, x_packed, num_hidden, batch, WordsFor(d), d);
  p.c_f32 = out;
  p.c_sm = 1;
  p.c_sn = num_hidden;
  p.scale = alpha;
  p.bias = bias;
  return Run(p, kModeGemm, 1, algo, stream);
}

int binmx_cuda_conv2d_out_shape(const binmx_cuda_conv2d_params* p, int64_t* out_h, int64_t* out_w) {
  ConvGeom g;
  const int rc = CheckConv(p, &g);
  if (rc != BINMX_CUDA_OK) return rc;
  if (out_h != nullptr) *out_h = g.out_h;
  if (out_w != nullptr) *out_w = g.out_w;
  return BINMX_CUDA_OK;
}

size_t binmx_cuda_binary_conv2d_workspace(const binmx_cuda_conv2d_params* p) {
  return ConvWorkspaceBytes(p, /*pack=*/true);
}

size_t binmx_cuda_binary_conv2d_packed_workspace(const binmx_cuda_conv2d_params* p) {
  return ConvWorkspaceBytes(p, /*pack=*/false);
}

int binmx_cuda_binary_conv2d_packed(const binmx_cuda_conv2d_params* params,
                                    const uint64_t* x_packed, const uint64_t* w_packed,
                                    const float* alpha, const float* bias, float* out, int algo,
                                    void* stream) {
  return ConvCall(params, nullptr, x_packed, w_packed, alpha, bias, out, nullptr, 0, algo, stream);
}

int binmx_cuda_binary_conv2d_packed_ws(const binmx_cuda_conv2d_params* params,
                                       const uint64_t* x_packed, const uint64_t* w_packed,
                                       const float* alpha, const float* bias, float* out,
                                       void* workspace, size_t workspace_bytes, int algo,
                                       void* stream) {
  return ConvCall(params, nullptr, x_packed, w_packed, alpha, bias, out, workspace, workspace_bytes,
                  algo, stream);
}

int binmx_cuda_binary_conv2d(const binmx_cuda_conv2d_params* params, const float* x,
                             const uint64_t* w_packed, const float* alpha, const float* bias,
                             float* out, void* workspace, size_t workspace_bytes, int algo,
                             void* stream) {
  // x == nullptr would select the packed form: reject it here with this function's message.
  if (x == nullptr) {
    ConvGeom g;
    const int rc = CheckConv(params, &g);
    if (rc != BINMX_CUDA_OK || g.batch == 0) return rc;
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`x`, `w_packed` and `out` must be non-null");
  }
  return ConvCall(params, x, nullptr, w_packed, alpha, bias, out, workspace, workspace_bytes, algo,
                  stream);
}

}  // extern "C"

/*
 * binmx CUDA: the C API (binmx_cuda.h): argument checks, error state, algorithm and tile
 * choice, and the two packing kernels.
 *
 * PackRows: one warp per output word; lane l tests elements 64w + l and 64w + 32 + l and
 * __ballot_sync gathers the two 32-bit halves (bit j = element 64w + j < 0, tail bits 0).
 * PackNchw: one thread per (image, group, channel word, pixel), pixels fastest so the 64 channel
 * reads of a warp are coalesced; output layout (N, H, W, G, cw) with cw = ceil(C/G/64).
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
  return Fail(code, std::string(what) + ": " + cudaGetErrorName(err) + ": " +
                        cudaGetErrorString(err));
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

__global__ void PackNchwKernel(const float* __restrict__ x, int64_t n, int64_t channels,
                               int64_t hw, int64_t groups, int64_t cg, int64_t cw,
                               uint64_t* __restrict__ out) {
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
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
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

int Run(const Problem& p, bool conv, int groups, int algo, void* stream) {
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
                              ? LaunchTensor(p, conv, tile, groups, s)
                              : LaunchSimt(p, conv, tile, groups, s);
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
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected 0 <= `k` <= 64 * words = " +
                                             Str(64 * words) + ", got " + Str(k));
  }
  if (ldc < n) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Expected `ldc` >= n = " + Str(n) + ", got " + Str(ldc));
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
  } fields[] = {{"batch", p->batch, 0},       {"channels", p->channels, 1},
                {"height", p->height, 1},     {"width", p->width, 1},
                {"num_filter", p->num_filter, 1}, {"kernel_h", p->kernel_h, 1},
                {"kernel_w", p->kernel_w, 1}, {"stride_h", p->stride_h, 1},
                {"stride_w", p->stride_w, 1}, {"pad_h", p->pad_h, 0},
                {"pad_w", p->pad_w, 0},       {"dilate_h", p->dilate_h, 1},
                {"dilate_w", p->dilate_w, 1}, {"num_group", p->num_group, 1}};
  for (const auto& f : fields) {
    if (f.value < f.min || f.value > (int64_t{1} << 30)) {
      return Fail(BINMX_CUDA_ERR_ARGUMENT, std::string("Expected `") + f.name + "` in [" +
                                               Str(f.min) + ", 2^30], got " + Str(f.value));
    }
  }
  if (p->channels % p->num_group != 0) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected `channels` (" + Str(p->channels) +
                                             ") divisible by `num_group` (" +
                                             Str(p->num_group) + ")");
  }
  if (p->num_filter % p->num_group != 0) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected `num_filter` (" + Str(p->num_filter) +
                                             ") divisible by `num_group` (" +
                                             Str(p->num_group) + ")");
  }
  if (p->pad_value < -1 || p->pad_value > 1) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Expected `pad_value` to be 0, 1 or -1, got " + Str(p->pad_value));
  }
  const int64_t span_h = p->dilate_h * (p->kernel_h - 1) + 1;
  const int64_t span_w = p->dilate_w * (p->kernel_w - 1) + 1;
  if (p->height + 2 * p->pad_h < span_h || p->width + 2 * p->pad_w < span_w) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Dilated kernel (" + Str(span_h) + ", " + Str(span_w) +
                    ") larger than the padded input (" + Str(p->height + 2 * p->pad_h) + ", " +
                    Str(p->width + 2 * p->pad_w) + ")");
  }
  if (p->num_group > 65535) {  // one grid z slice per group
    return Fail(BINMX_CUDA_ERR_ARGUMENT,
                "Expected `num_group` <= 65535, got " + Str(p->num_group));
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

size_t ConvWorkspace(const ConvGeom& g) {
  return static_cast<size_t>(g.batch * g.height * g.width * g.groups * g.cw) * sizeof(uint64_t);
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

int ConvPacked(const binmx_cuda_conv2d_params* params, const ConvGeom& g, const uint64_t* xp,
               const uint64_t* w, const float* alpha, const float* bias, float* out, int algo,
               void* stream) {
  Problem p;
  std::memset(&p, 0, sizeof(p));
  p.a = w;
  p.lda = static_cast<int64_t>(g.kh) * g.kw * g.cw;
  p.b = xp;
  p.ldb = 0;
  p.m = g.fg;
  p.n = g.batch * g.out_h * g.out_w;
  p.k = static_cast<int64_t>(g.cg) * g.kh * g.kw;
  p.words = static_cast<int>(p.lda);
  p.c_f32 = out;
  p.scale = alpha;
  p.bias = bias;
  p.conv = g;
  (void)params;
  return Run(p, /*conv=*/true, g.groups, algo, stream);
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
                "got n = " + Str(n) + ", channels = " + Str(channels) + ", h = " + Str(h) +
                    ", w = " + Str(w) + ", groups = " + Str(groups));
  }
  if (n > 0 && (x == nullptr || out == nullptr)) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`x` and `out` must be non-null device pointers");
  }
  return LaunchPackNchw(x, n, channels, h * w, groups, out, static_cast<cudaStream_t>(stream));
}

int binmx_cuda_xnor_gemm(const uint64_t* a, const uint64_t* b, int64_t m, int64_t n,
                         int64_t words, int64_t k, int32_t* c, int64_t ldc, int algo,
                         void* stream) {
  int rc = CheckGemm(a, b, m, n, words, k, c, ldc);
  if (rc != BINMX_CUDA_OK) return rc;
  Problem p = GemmProblem(a, b, m, n, words, k);
  p.c_i32 = c;
  p.c_sm = ldc;
  p.c_sn = 1;
  return Run(p, /*conv=*/false, 1, algo, stream);
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
  return Run(p, /*conv=*/false, 1, algo, stream);
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
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected `workspace_bytes` >= " + Str(need) +
                                             ", got " + Str(workspace_bytes));
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
    rc = Run(p, /*conv=*/false, 1, algo, stream);
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
  return Run(p, /*conv=*/false, 1, algo, stream);
}

int binmx_cuda_conv2d_out_shape(const binmx_cuda_conv2d_params* p, int64_t* out_h,
                                int64_t* out_w) {
  ConvGeom g;
  const int rc = CheckConv(p, &g);
  if (rc != BINMX_CUDA_OK) return rc;
  if (out_h != nullptr) *out_h = g.out_h;
  if (out_w != nullptr) *out_w = g.out_w;
  return BINMX_CUDA_OK;
}

size_t binmx_cuda_binary_conv2d_workspace(const binmx_cuda_conv2d_params* p) {
  ConvGeom g;
  if (CheckConv(p, &g) != BINMX_CUDA_OK) return 0;
  return ConvWorkspace(g);
}

int binmx_cuda_binary_conv2d_packed(const binmx_cuda_conv2d_params* params,
                                    const uint64_t* x_packed, const uint64_t* w_packed,
                                    const float* alpha, const float* bias, float* out, int algo,
                                    void* stream) {
  ConvGeom g;
  int rc = CheckConv(params, &g);
  if (rc != BINMX_CUDA_OK) return rc;
  if (g.batch == 0) return BINMX_CUDA_OK;
  if (x_packed == nullptr || w_packed == nullptr || out == nullptr) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`x_packed`, `w_packed` and `out` must be non-null");
  }
  return ConvPacked(params, g, x_packed, w_packed, alpha, bias, out, algo, stream);
}

int binmx_cuda_binary_conv2d(const binmx_cuda_conv2d_params* params, const float* x,
                             const uint64_t* w_packed, const float* alpha, const float* bias,
                             float* out, void* workspace, size_t workspace_bytes, int algo,
                             void* stream) {
  ConvGeom g;
  int rc = CheckConv(params, &g);
  if (rc != BINMX_CUDA_OK) return rc;
  if (g.batch == 0) return BINMX_CUDA_OK;
  if (x == nullptr || w_packed == nullptr || out == nullptr) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "`x`, `w_packed` and `out` must be non-null");
  }
  const size_t need = ConvWorkspace(g);
  if (workspace != nullptr && workspace_bytes < need) {
    return Fail(BINMX_CUDA_ERR_ARGUMENT, "Expected `workspace_bytes` >= " + Str(need) +
                                             ", got " + Str(workspace_bytes));
  }
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  void* ws = workspace;
  if (ws == nullptr) {
    const cudaError_t err = cudaMallocAsync(&ws, need, s);
    if (err != cudaSuccess) return FailCuda(err, "cudaMallocAsync (conv workspace)");
  }
  uint64_t* xp = static_cast<uint64_t*>(ws);
  rc = LaunchPackNchw(x, g.batch, params->channels, g.height * g.width, g.groups, xp, s);
  if (rc == BINMX_CUDA_OK) rc = ConvPacked(params, g, xp, w_packed, alpha, bias, out, algo, stream);
  if (workspace == nullptr) {
    const cudaError_t err = cudaFreeAsync(ws, s);
    if (rc == BINMX_CUDA_OK && err != cudaSuccess) return FailCuda(err, "cudaFreeAsync");
  }
  return rc;
}

}  // extern "C"

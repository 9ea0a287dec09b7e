/*
 * binmx operators on the GPU (see q_ops_gpu.h): plain C++ over the libbinmx_cuda C API, every
 * launch on MXNet's stream, scratch from one OpResource::alloc_gpu per call (256-byte aligned
 * slices). Formulas as the CPU functions:
 *   forward   out = alpha_f * conv(Qa(x), Qw(W)) + bias_f   (1-bit: xnor kernels, exact;
 *             other bit widths: float conv), alpha_f = mean |W_f| (bit-identical to the CPU);
 *   backward  dx = conv_transpose(alpha * dy, Qw(W)) * 1[|x| <= grad_cancel] (act_bit < 32),
 *             G = sum dy * Qa(x)pad, dW = G or alpha G + sgn(W)/n dalpha, dbias = sum dy;
 *             packed weights get a zero gradient and the alpha input dalpha.
 * COMPILE-CHECKED ONLY (no GPU MXNet can run it here).
 */
#include "q_ops_gpu.h"

#include <climits>
#include <cstddef>
#include <exception>
#include <string>

#include "binmx_cuda.h"
#include "xnor_gemm.h"

using mxnet::ext::MX_FAIL;
using mxnet::ext::MX_SUCCESS;

namespace binmx {
namespace ops {
namespace {

// One alloc_gpu per call, carved into aligned slices (alloc_gpu takes an int byte count).
class Arena {
 public:
  size_t Add(size_t bytes) {
    const size_t off = total_;
    total_ += (bytes + 255) / 256 * 256;
    return off;
  }
  bool Alloc(const OpResource& res, const char* op) {
    if (total_ == 0) return true;
    if (total_ > static_cast<size_t>(INT_MAX)) {
      MX_ERROR_MSG << op << " (gpu): needs " << total_
                   << " bytes of scratch, more than one alloc_gpu call can give (2^31 - 1)";
      return false;
    }
    base_ = static_cast<char*>(res.alloc_gpu(static_cast<int>(total_)));
    if (base_ == nullptr) {
      MX_ERROR_MSG << op << " (gpu): alloc_gpu(" << total_ << ") failed";
      return false;
    }
    return true;
  }
  template <typename T>
  T* At(size_t off) const {
    return reinterpret_cast<T*>(base_ + off);
  }

 private:
  size_t total_ = 0;
  char* base_ = nullptr;
};

// Turns a failed C API call into MX_ERROR_MSG.
#define BINMX_GPU_CALL(op, expr)                                                      \
  do {                                                                                \
    if ((expr) != BINMX_CUDA_OK) {                                                    \
      MX_ERROR_MSG << (op) << " (gpu): " << #expr << ": " << binmx_cuda_last_error(); \
      return MX_FAIL;                                                                 \
    }                                                                                 \
  } while (0)

bool CheckGpuInputs(const char* op, const std::vector<MXTensor>& in, size_t first, size_t count) {
  if (in.size() < first + count) {
    MX_ERROR_MSG << op << " (gpu): expected " << count << " inputs, got " << in.size() - first;
    return false;
  }
  const int dev = in[first].ctx.dev_id;
  for (size_t i = first; i < first + count; ++i) {
    if (in[i].ctx.dev_type != "gpu" || in[i].ctx.dev_id != dev) {
      MX_ERROR_MSG << op << " (gpu): input " << i - first << " is on " << in[i].ctx.dev_type << "("
                   << in[i].ctx.dev_id << "), expected every input on gpu(" << dev << ")";
      return false;
    }
  }
  return true;
}

binmx_cuda_conv2d_params ToCuda(const Conv2dParams& p) {
  binmx_cuda_conv2d_params c;
  c.batch = p.batch;
  c.channels = p.channels;
  c.height = p.in_h;
  c.width = p.in_w;
  c.num_filter = p.num_filter;
  c.kernel_h = p.kernel_h;
  c.kernel_w = p.kernel_w;
  c.stride_h = p.stride_h;
  c.stride_w = p.stride_w;
  c.pad_h = p.pad_h;
  c.pad_w = p.pad_w;
  c.dilate_h = p.dilate_h;
  c.dilate_w = p.dilate_w;
  c.num_group = p.groups;
  c.pad_value = p.pad_value;
  return c;
}

template <typename T>
const T* Ptr(const std::vector<MXTensor>& v, int i) {
  return i >= 0 ? static_cast<const T*>(v[i].data_ptr) : nullptr;
}

constexpr const char* kConv = "QConvolution";
constexpr const char* kFc = "QFullyConnected";
constexpr const char* kAct = "QActivation";

}  // namespace

// ---- QConvolution ----------------------------------------------------------------------------

MXReturnValue QConvForwardGpu(const GpuConvSpec& s, std::vector<MXTensor>* inputs,
                              std::vector<MXTensor>* outputs, const OpResource& res) {
  if (!GpuLayoutMatches(kConv, s) || !CheckGpuInputs(kConv, *inputs, 0, s.num_inputs)) {
    return MX_FAIL;
  }
  const Conv2dParams& p = s.p;
  ValidateConv2dParams(p);
  const binmx_cuda_conv2d_params cp = ToCuda(p);
  void* stream = res.get_cuda_stream();
  const std::vector<MXTensor>& in = *inputs;
  const float* x = Ptr<float>(in, 0);
  const float* bias = Ptr<float>(in, s.bias_index);
  float* out = static_cast<float*>((*outputs)[0].data_ptr);
  const int64_t f_all = p.num_filter, fsize = p.FilterSize(), xn = in[0].size();

  Arena arena;
  const bool own_alpha = s.scaling && !s.packed;
  const size_t o_alpha = own_alpha ? arena.Add(sizeof(float) * f_all) : 0;
  size_t o_wp = 0, o_ws = 0, o_xq = 0, o_wq = 0, o_qws = 0, ws_bytes = 0;
  size_t o_pws = 0, pws_bytes = 0;  // the packed-input conv's scratch (input_affine path)
  const bool need_xq = !s.binary() && (s.input_affine || (s.act_bit > 1 && s.act_bit < 32));
  if (s.binary()) {
    if (!s.packed) o_wp = arena.Add(sizeof(uint64_t) * PackedConvWeightWords(p));
    ws_bytes = binmx_cuda_binary_conv2d_workspace(&cp);  // also holds the packed input
    o_ws = arena.Add(ws_bytes);
    if (s.input_affine) {
      pws_bytes = binmx_cuda_binary_conv2d_packed_workspace(&cp);
      o_pws = arena.Add(pws_bytes);
    }
  } else {
    if (need_xq) o_xq = arena.Add(sizeof(float) * xn);
    o_wq = arena.Add(sizeof(float) * f_all * fsize);
    o_qws = arena.Add(binmx_cuda_quantize_weight_workspace());
    ws_bytes = binmx_cuda_float_conv2d_workspace(&cp);
    o_ws = arena.Add(ws_bytes);
  }
  if (!arena.Alloc(res, kConv)) return MX_FAIL;

  const float* alpha = s.scaling ? Ptr<float>(in, s.alpha_index) : nullptr;
  if (own_alpha) {
    float* a = arena.At<float>(o_alpha);
    BINMX_GPU_CALL(kConv, binmx_cuda_mean_abs_rows(Ptr<float>(in, 1), f_all, fsize, a, stream));
    alpha = a;
  }
  if (s.binary()) {
    const uint64_t* wp = Ptr<uint64_t>(in, 1);
    if (!s.packed) {
      uint64_t* packed = arena.At<uint64_t>(o_wp);
      BINMX_GPU_CALL(kConv, binmx_cuda_pack_nchw(Ptr<float>(in, 1), f_all, p.GroupChannels(),
                                                 p.kernel_h, p.kernel_w, 1, packed, stream));
      wp = packed;
    }
    if (s.input_affine) {
      uint64_t* xp = arena.At<uint64_t>(o_ws);
      BINMX_GPU_CALL(kConv,
                     binmx_cuda_pack_nchw_affine(x, p.batch, p.channels, p.in_h, p.in_w, p.groups,
                                                 Ptr<float>(in, s.in_scale_index),
                                                 Ptr<float>(in, s.in_shift_index), xp, stream));
      BINMX_GPU_CALL(kConv, binmx_cuda_binary_conv2d_packed_ws(&cp, xp, wp, alpha, bias, out,
                                                               arena.At<void>(o_pws), pws_bytes,
                                                               BINMX_CUDA_ALGO_AUTO, stream));
    } else {
      BINMX_GPU_CALL(kConv,
                     binmx_cuda_binary_conv2d(&cp, x, wp, alpha, bias, out, arena.At<void>(o_ws),
                                              ws_bytes, BINMX_CUDA_ALGO_AUTO, stream));
    }
    return MX_SUCCESS;
  }
  const float* xin = x;
  int quant = s.act_bit == 1 ? BINMX_CUDA_QUANT_SIGN : BINMX_CUDA_QUANT_NONE;
  if (s.input_affine) {
    float* xa = arena.At<float>(o_xq);
    BINMX_GPU_CALL(kConv, binmx_cuda_affine_sign(x, xn, p.channels, p.in_h * p.in_w,
                                                 Ptr<float>(in, s.in_scale_index),
                                                 Ptr<float>(in, s.in_shift_index), xa, stream));
    xin = xa;
    quant = BINMX_CUDA_QUANT_NONE;
  } else if (need_xq) {
    float* xq = arena.At<float>(o_xq);
    BINMX_GPU_CALL(kConv, binmx_cuda_quantize_act(x, xn, s.act_bit, xq, stream));
    xin = xq;
  }
  float* wq = arena.At<float>(o_wq);
  BINMX_GPU_CALL(kConv, binmx_cuda_quantize_weight(Ptr<float>(in, 1), f_all * fsize, s.weight_bit,
                                                   wq, arena.At<void>(o_qws),
                                                   binmx_cuda_quantize_weight_workspace(), stream));
  BINMX_GPU_CALL(kConv, binmx_cuda_float_conv2d_forward(&cp, xin, quant, wq, alpha, bias, out,
                                                        arena.At<void>(o_ws), ws_bytes, stream));
  return MX_SUCCESS;
}

// inputs: dy, data, weight, [bias], [alpha], out;  outputs: dx, dweight, [dbias], [dalpha].
MXReturnValue QConvBackwardGpu(const GpuConvSpec& s, std::vector<MXTensor>* inputs,
                               std::vector<MXTensor>* outputs, const OpResource& res) {
  if (s.input_affine) {
    MX_ERROR_MSG << kConv << ": input_affine=True is an inference feature (folded BatchNorm); "
                 << "it has no backward. Train with BatchNorm + QConvolution, then fold.";
    return MX_FAIL;
  }
  if (!GpuLayoutMatches(kConv, s) || !CheckGpuInputs(kConv, *inputs, 0, 1 + s.num_inputs)) {
    return MX_FAIL;
  }
  const Conv2dParams& p = s.p;
  ValidateConv2dParams(p);
  const binmx_cuda_conv2d_params cp = ToCuda(p);
  void* stream = res.get_cuda_stream();
  const std::vector<MXTensor> fwd(inputs->begin() + 1, inputs->begin() + 1 + s.num_inputs);
  const float* dy = Ptr<float>(*inputs, 0);
  const float* x = Ptr<float>(fwd, 0);
  const int64_t f_all = p.num_filter, fsize = p.FilterSize(), xn = fwd[0].size();
  const int64_t ohw = p.OutH() * p.OutW();
  std::vector<MXTensor>& out = *outputs;

  Arena arena;
  const bool need_xq = s.act_bit > 1 && s.act_bit < 32;
  const size_t o_xq = need_xq ? arena.Add(sizeof(float) * xn) : 0;
  const size_t o_wq = arena.Add(sizeof(float) * f_all * fsize);
  const size_t o_qws = arena.Add(binmx_cuda_quantize_weight_workspace());
  const bool own_alpha = s.scaling && !s.packed;
  const size_t o_alpha = own_alpha ? arena.Add(sizeof(float) * f_all) : 0;
  const size_t o_g = s.scaling ? arena.Add(sizeof(float) * f_all * fsize) : 0;
  const size_t o_wdx = s.scaling ? arena.Add(sizeof(float) * f_all * fsize) : 0;
  const size_t ws_bytes = binmx_cuda_float_conv2d_workspace(&cp);
  const size_t o_ws = arena.Add(ws_bytes);
  if (!arena.Alloc(res, kConv)) return MX_FAIL;

  const float* xin = x;
  const int quant = s.act_bit == 1 ? BINMX_CUDA_QUANT_SIGN : BINMX_CUDA_QUANT_NONE;
  if (need_xq) {
    float* xq = arena.At<float>(o_xq);
    BINMX_GPU_CALL(kConv, binmx_cuda_quantize_act(x, xn, s.act_bit, xq, stream));
    xin = xq;
  }
  float* wq = arena.At<float>(o_wq);
  const float* w_float = nullptr;
  if (s.packed) {
    BINMX_GPU_CALL(kConv,
                   binmx_cuda_unpack_conv_weight(Ptr<uint64_t>(fwd, 1), f_all, p.GroupChannels(),
                                                 p.kernel_h, p.kernel_w, wq, stream));
  } else {
    w_float = Ptr<float>(fwd, 1);
    BINMX_GPU_CALL(kConv, binmx_cuda_quantize_weight(
                              w_float, f_all * fsize, s.weight_bit, wq, arena.At<void>(o_qws),
                              binmx_cuda_quantize_weight_workspace(), stream));
  }
  const float* alpha = s.scaling ? Ptr<float>(fwd, s.alpha_index) : nullptr;
  if (own_alpha) {
    float* a = arena.At<float>(o_alpha);
    BINMX_GPU_CALL(kConv, binmx_cuda_mean_abs_rows(w_float, f_all, fsize, a, stream));
    alpha = a;
  }
  float* dx = static_cast<float*>(out[0].data_ptr);
  float* g_out = nullptr;  // G straight into dW when dW = G
  if (alpha == nullptr && !s.packed) {
    g_out = static_cast<float*>(out[1].data_ptr);
  } else if (alpha != nullptr) {
    g_out = arena.At<float>(o_g);
  }
  const float* w_for_dx = wq;
  if (alpha != nullptr) {
    float* wdx = arena.At<float>(o_wdx);
    BINMX_GPU_CALL(kConv, binmx_cuda_scale_rows(wq, alpha, f_all, fsize, wdx, stream));
    w_for_dx = wdx;
  }
  BINMX_GPU_CALL(kConv, binmx_cuda_float_conv2d_backward(
                            &cp, xin, quant, w_for_dx, dy, s.act_bit < 32 ? x : nullptr,
                            s.grad_cancel, dx, g_out, arena.At<void>(o_ws), ws_bytes, stream));
  if (s.packed) {
    BINMX_GPU_CALL(kConv,
                   binmx_cuda_fill_zero(out[1].data_ptr, sizeof(int64_t) * out[1].size(), stream));
    if (s.scaling) {
      BINMX_GPU_CALL(kConv, binmx_cuda_finish_weight_grad(
                                g_out, nullptr, wq, alpha, f_all, fsize, nullptr,
                                static_cast<float*>(out[s.alpha_index].data_ptr), stream));
    }
  } else if (alpha != nullptr) {
    BINMX_GPU_CALL(kConv, binmx_cuda_finish_weight_grad(g_out, w_float, wq, alpha, f_all, fsize,
                                                        static_cast<float*>(out[1].data_ptr),
                                                        nullptr, stream));
  }
  if (s.bias_index >= 0) {
    BINMX_GPU_CALL(kConv,
                   binmx_cuda_bias_grad(dy, p.batch, f_all, ohw,
                                        static_cast<float*>(out[s.bias_index].data_ptr), stream));
  }
  return MX_SUCCESS;
}

// ---- QFullyConnected -------------------------------------------------------------------------

MXReturnValue QFcForwardGpu(const GpuFcSpec& s, std::vector<MXTensor>* inputs,
                            std::vector<MXTensor>* outputs, const OpResource& res) {
  if (!GpuLayoutMatches(kFc, s) || !CheckGpuInputs(kFc, *inputs, 0, s.num_inputs)) {
    return MX_FAIL;
  }
  void* stream = res.get_cuda_stream();
  const std::vector<MXTensor>& in = *inputs;
  const int64_t rows = s.rows, depth = s.depth, hid = s.hidden;
  const float* x = Ptr<float>(in, 0);
  const float* bias = Ptr<float>(in, s.bias_index);
  float* out = static_cast<float*>((*outputs)[0].data_ptr);

  Arena arena;
  const bool own_alpha = s.scaling && !s.packed;
  const size_t o_alpha = own_alpha ? arena.Add(sizeof(float) * hid) : 0;
  size_t o_wp = 0, o_ws = 0, o_xq = 0, o_wq = 0, o_qws = 0, ws_bytes = 0;
  const bool need_xq = !s.binary() && (s.input_affine || (s.act_bit > 1 && s.act_bit < 32));
  if (s.binary()) {
    if (!s.packed) o_wp = arena.Add(sizeof(uint64_t) * hid * WordsFor(depth));
    ws_bytes = binmx_cuda_fully_connected_workspace(rows, depth);
    o_ws = arena.Add(ws_bytes);
  } else {
    if (need_xq) o_xq = arena.Add(sizeof(float) * rows * depth);
    o_wq = arena.Add(sizeof(float) * hid * depth);
    o_qws = arena.Add(binmx_cuda_quantize_weight_workspace());
  }
  if (!arena.Alloc(res, kFc)) return MX_FAIL;

  const float* alpha = s.scaling ? Ptr<float>(in, s.alpha_index) : nullptr;
  if (own_alpha) {
    float* a = arena.At<float>(o_alpha);
    BINMX_GPU_CALL(kFc, binmx_cuda_mean_abs_rows(Ptr<float>(in, 1), hid, depth, a, stream));
    alpha = a;
  }
  if (s.binary()) {
    const uint64_t* wp = Ptr<uint64_t>(in, 1);
    if (!s.packed) {
      uint64_t* packed = arena.At<uint64_t>(o_wp);
      BINMX_GPU_CALL(kFc,
                     binmx_cuda_pack_rows(Ptr<float>(in, 1), hid, depth, depth, packed, stream));
      wp = packed;
    }
    if (s.input_affine) {
      uint64_t* xp = arena.At<uint64_t>(o_ws);
      BINMX_GPU_CALL(
          kFc, binmx_cuda_pack_rows_affine(x, rows, depth, depth, Ptr<float>(in, s.in_scale_index),
                                           Ptr<float>(in, s.in_shift_index), xp, stream));
      BINMX_GPU_CALL(kFc, binmx_cuda_fully_connected_packed(xp, rows, depth, wp, hid, alpha, bias,
                                                            out, BINMX_CUDA_ALGO_AUTO, stream));
    } else {
      BINMX_GPU_CALL(kFc, binmx_cuda_fully_connected(x, rows, depth, wp, hid, alpha, bias, out,
                                                     arena.At<void>(o_ws), ws_bytes,
                                                     BINMX_CUDA_ALGO_AUTO, stream));
    }
    return MX_SUCCESS;
  }
  const float* xin = x;
  int quant = s.act_bit == 1 ? BINMX_CUDA_QUANT_SIGN : BINMX_CUDA_QUANT_NONE;
  if (s.input_affine) {
    float* xa = arena.At<float>(o_xq);
    BINMX_GPU_CALL(
        kFc, binmx_cuda_affine_sign(x, rows * depth, depth, 1, Ptr<float>(in, s.in_scale_index),
                                    Ptr<float>(in, s.in_shift_index), xa, stream));
    xin = xa;
    quant = BINMX_CUDA_QUANT_NONE;
  } else if (need_xq) {
    float* xq = arena.At<float>(o_xq);
    BINMX_GPU_CALL(kFc, binmx_cuda_quantize_act(x, rows * depth, s.act_bit, xq, stream));
    xin = xq;
  }
  float* wq = arena.At<float>(o_wq);
  BINMX_GPU_CALL(kFc, binmx_cuda_quantize_weight(Ptr<float>(in, 1), hid * depth, s.weight_bit, wq,
                                                 arena.At<void>(o_qws),
                                                 binmx_cuda_quantize_weight_workspace(), stream));
  BINMX_GPU_CALL(kFc, binmx_cuda_float_dense_forward(xin, quant, wq, alpha, bias, out, rows, depth,
                                                     hid, stream));
  return MX_SUCCESS;
}

MXReturnValue QFcBackwardGpu(const GpuFcSpec& s, std::vector<MXTensor>* inputs,
                             std::vector<MXTensor>* outputs, const OpResource& res) {
  if (s.input_affine) {
    MX_ERROR_MSG << kFc << ": input_affine=True is an inference feature (folded BatchNorm); "
                 << "it has no backward. Train with BatchNorm + QFullyConnected, then fold.";
    return MX_FAIL;
  }
  if (!GpuLayoutMatches(kFc, s) || !CheckGpuInputs(kFc, *inputs, 0, 1 + s.num_inputs)) {
    return MX_FAIL;
  }
  void* stream = res.get_cuda_stream();
  const std::vector<MXTensor> fwd(inputs->begin() + 1, inputs->begin() + 1 + s.num_inputs);
  const int64_t rows = s.rows, depth = s.depth, hid = s.hidden;
  const float* dy = Ptr<float>(*inputs, 0);
  const float* x = Ptr<float>(fwd, 0);
  std::vector<MXTensor>& out = *outputs;

  Arena arena;
  const bool need_xq = s.act_bit > 1 && s.act_bit < 32;
  const size_t o_xq = need_xq ? arena.Add(sizeof(float) * rows * depth) : 0;
  const size_t o_wq = arena.Add(sizeof(float) * hid * depth);
  const size_t o_qws = arena.Add(binmx_cuda_quantize_weight_workspace());
  const bool own_alpha = s.scaling && !s.packed;
  const size_t o_alpha = own_alpha ? arena.Add(sizeof(float) * hid) : 0;
  const size_t o_g = s.scaling ? arena.Add(sizeof(float) * hid * depth) : 0;
  const size_t o_wdx = s.scaling ? arena.Add(sizeof(float) * hid * depth) : 0;
  if (!arena.Alloc(res, kFc)) return MX_FAIL;

  const float* xin = x;
  const int quant = s.act_bit == 1 ? BINMX_CUDA_QUANT_SIGN : BINMX_CUDA_QUANT_NONE;
  if (need_xq) {
    float* xq = arena.At<float>(o_xq);
    BINMX_GPU_CALL(kFc, binmx_cuda_quantize_act(x, rows * depth, s.act_bit, xq, stream));
    xin = xq;
  }
  float* wq = arena.At<float>(o_wq);
  const float* w_float = nullptr;
  if (s.packed) {  // a dense layer is a 1x1 convolution over a 1x1 image
    BINMX_GPU_CALL(
        kFc, binmx_cuda_unpack_conv_weight(Ptr<uint64_t>(fwd, 1), hid, depth, 1, 1, wq, stream));
  } else {
    w_float = Ptr<float>(fwd, 1);
    BINMX_GPU_CALL(kFc, binmx_cuda_quantize_weight(w_float, hid * depth, s.weight_bit, wq,
                                                   arena.At<void>(o_qws),
                                                   binmx_cuda_quantize_weight_workspace(), stream));
  }
  const float* alpha = s.scaling ? Ptr<float>(fwd, s.alpha_index) : nullptr;
  if (own_alpha) {
    float* a = arena.At<float>(o_alpha);
    BINMX_GPU_CALL(kFc, binmx_cuda_mean_abs_rows(w_float, hid, depth, a, stream));
    alpha = a;
  }
  float* dx = static_cast<float*>(out[0].data_ptr);
  float* g_out = nullptr;
  if (alpha == nullptr && !s.packed) {
    g_out = static_cast<float*>(out[1].data_ptr);
  } else if (alpha != nullptr) {
    g_out = arena.At<float>(o_g);
  }
  const float* w_for_dx = wq;
  if (alpha != nullptr) {
    float* wdx = arena.At<float>(o_wdx);
    BINMX_GPU_CALL(kFc, binmx_cuda_scale_rows(wq, alpha, hid, depth, wdx, stream));
    w_for_dx = wdx;
  }
  BINMX_GPU_CALL(
      kFc, binmx_cuda_float_dense_backward(xin, quant, w_for_dx, dy, s.act_bit < 32 ? x : nullptr,
                                           s.grad_cancel, dx, g_out, rows, depth, hid, stream));
  if (s.packed) {
    BINMX_GPU_CALL(kFc,
                   binmx_cuda_fill_zero(out[1].data_ptr, sizeof(int64_t) * out[1].size(), stream));
    if (s.scaling) {
      BINMX_GPU_CALL(kFc, binmx_cuda_finish_weight_grad(
                              g_out, nullptr, wq, alpha, hid, depth, nullptr,
                              static_cast<float*>(out[s.alpha_index].data_ptr), stream));
    }
  } else if (alpha != nullptr) {
    BINMX_GPU_CALL(
        kFc, binmx_cuda_finish_weight_grad(g_out, w_float, wq, alpha, hid, depth,
                                           static_cast<float*>(out[1].data_ptr), nullptr, stream));
  }
  if (s.bias_index >= 0) {
    BINMX_GPU_CALL(
        kFc, binmx_cuda_bias_grad(dy, rows, hid, 1, static_cast<float*>(out[s.bias_index].data_ptr),
                                  stream));
  }
  return MX_SUCCESS;
}

// ---- QActivation -----------------------------------------------------------------------------

MXReturnValue QActForwardGpu(const GpuActSpec& s, std::vector<MXTensor>* inputs,
                             std::vector<MXTensor>* outputs, const OpResource& res) {
  if (!CheckGpuInputs(kAct, *inputs, 0, 1)) return MX_FAIL;
  const int64_t n = (*inputs)[0].size();
  // backward_only: the identity (quantize_act with 32 bits is a copy).
  const int bits = s.backward_only ? 32 : s.act_bit;
  BINMX_GPU_CALL(kAct, binmx_cuda_quantize_act(Ptr<float>(*inputs, 0), n, bits,
                                               static_cast<float*>((*outputs)[0].data_ptr),
                                               res.get_cuda_stream()));
  return MX_SUCCESS;
}

// inputs: dy, x, y;  outputs: dx.
MXReturnValue QActBackwardGpu(const GpuActSpec& s, std::vector<MXTensor>* inputs,
                              std::vector<MXTensor>* outputs, const OpResource& res) {
  if (!CheckGpuInputs(kAct, *inputs, 0, 2)) return MX_FAIL;
  const float* dy = Ptr<float>(*inputs, 0);
  const float* x = Ptr<float>(*inputs, 1);
  float* dx = static_cast<float*>((*outputs)[0].data_ptr);
  const int64_t n = (*inputs)[1].size();
  void* stream = res.get_cuda_stream();
  if (s.act_bit < 32 || s.backward_only) {
    BINMX_GPU_CALL(kAct, binmx_cuda_ste_mask(x, dy, n, s.grad_cancel, dx, stream));
  } else {
    BINMX_GPU_CALL(kAct, binmx_cuda_quantize_act(dy, n, 32, dx, stream));
  }
  return MX_SUCCESS;
}

bool GpuLayoutMatches(const char* op, const GpuLayerSpec& s) {
  const int want =
      2 + (s.no_bias ? 0 : 1) + (s.packed && s.scaling ? 1 : 0) + (s.input_affine ? 2 : 0);
  if (s.num_inputs != want) {
    MX_ERROR_MSG << op << " (gpu): these attributes give " << s.num_inputs
                 << " inputs; the gpu path implements data, weight, [bias], [alpha], "
                 << "[in_scale, in_shift] (" << want << " here). Run this layer on cpu.";
    return false;
  }
  return true;
}

}  // namespace ops
}  // namespace binmx

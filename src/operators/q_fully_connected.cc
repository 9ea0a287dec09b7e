/*
 * binmx operator QFullyConnected (CPU): a drop-in replacement for FullyConnected.
 *
 * Inputs, in order: data (flatten=True: (N, ...) seen as rows N x depth D = prod(rest);
 * flatten=False: (..., D) seen as rows prod(...) x D); weight: float32 (H, D), or with
 * binarized_weights_only=True int64 words: 1-bit signs (H, ceil(D/64)) when act_bit =
 * weight_bit = 1, else (weight_bit 1..8) the weight levels lw of kbit.h, [H][D] order, in one
 * stream of ceil(H * D * weight_bit / 64) words (kbit_pack.h); bias (H,) unless no_bias; alpha (H,)
 * float32 when binarized_weights_only and scaling_factor; with input_affine=True (act_bit = 1
 * only) in_scale (D,) and in_shift (D,) float32 last. Output (N, H) or (..., H).
 *
 * input_affine (inference; a folded BatchNorm): the activation is sgn(x[m][d] * in_scale_d +
 *   in_shift_d), d the feature index of the rows x D view (with flatten, the flattened index:
 *   a per-channel affine of an (N, C, H, W) input is repeated H*W times per channel); product
 *   and sum rounded separately in float32; computed in the packing pass; no backward.
 *
 * Forward: out[m][h] = alpha_h * sum_d Qa(x)[m][d] * Qw(W)[h][d] + bias_h (quantisers and
 *   alpha_h = mean |W_h| as in QConvolution); act_bit = weight_bit = 1 uses the xnor GEMM,
 *   act_bit 2..8 with weight_bit 1..8 the integer k-bit kernels of kbit.h.
 * Backward (STE): dx = (alpha * dy) Qw(W) * 1[|x| <= grad_cancel] (mask only if act_bit < 32);
 *   G = dy^T Qa(x); dW = G, or with scaling_factor alpha * G + sgn(W) / D * dalpha,
 *   dalpha_h = sum_d G_hd Qw(W)_hd; dbias = sum dy. Packed weights (1-bit or k-bit) get a zero
 *   gradient; packed k-bit levels lw stand for Qw = 2 lw / (2^weight_bit - 1) - 1.
 */
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "bconv.h"
#include "conv.h"
#include "float_conv.h"
#include "kbit.h"
#include "kbit_pack.h"
#include "mxnet/lib_api.h"
#include "op_common.h"
#include "weight_grad.h"
#include "xnor_gemm.h"

using mxnet::ext::MX_FAIL;
using mxnet::ext::MX_SUCCESS;
using mxnet::ext::MXReturnValue;
using mxnet::ext::MXTensor;
using mxnet::ext::OpResource;

namespace binmx {
namespace ops {
namespace {

constexpr const char* kOp = "QFullyConnected";

struct QFcAttrs {
  int64_t num_hidden = 0;
  bool no_bias = false, flatten = true, packed = false, scaling = false, input_affine = false;
  int act_bit = 1, weight_bit = 1;
  float grad_cancel = 1.0f;

  bool binary() const { return act_bit == 1 && weight_bit == 1; }
  // binarized_weights_only on any other layer: the weight is packed k-bit levels (kbit_pack.h).
  bool packed_levels() const { return packed && !binary(); }
  int num_params() const { return 2 + (no_bias ? 0 : 1) + (packed && scaling ? 1 : 0); }
  int num_inputs() const { return num_params() + (input_affine ? 2 : 0); }
  int bias_index() const { return no_bias ? -1 : 2; }
  int alpha_index() const { return packed && scaling ? (no_bias ? 2 : 3) : -1; }
  // input_affine: in_scale, in_shift (D,) (per feature of the rows x D view) last.
  int in_scale_index() const { return input_affine ? num_params() : -1; }
  int in_shift_index() const { return input_affine ? num_params() + 1 : -1; }
};

bool Parse(const Attrs& attrs, QFcAttrs* a) {
  AttrReader r(kOp, attrs);
  r.CheckKnown({"num_hidden", "no_bias", "flatten", "act_bit", "weight_bit",
                "binarized_weights_only", "scaling_factor", "grad_cancel", "input_affine"});
  a->num_hidden = r.Int("num_hidden", 0, 1, 1 << 30, /*required=*/true);
  a->no_bias = r.Bool("no_bias", false);
  a->flatten = r.Bool("flatten", true);
  a->act_bit = static_cast<int>(r.Int("act_bit", 1, 1, 32));
  a->weight_bit = static_cast<int>(r.Int("weight_bit", a->act_bit, 1, 32));
  a->packed = r.Bool("binarized_weights_only", false);
  a->scaling = r.Bool("scaling_factor", false);
  a->grad_cancel = static_cast<float>(r.Float("grad_cancel", 1.0, 0.0));
  a->input_affine = r.Bool("input_affine", false);
  if (r.ok() && a->input_affine && a->act_bit != 1) {
    r.Fail("input_affine=True needs act_bit=1 (an affine map before the sign), got act_bit=" +
           std::to_string(a->act_bit));
  }
  if (r.ok() && a->packed && a->weight_bit > 8) {
    r.Fail(
        "binarized_weights_only=True needs weight_bit <= 8 (1-bit sign words, or k-bit weight "
        "levels; wider weights stay float), got weight_bit=" +
        std::to_string(a->weight_bit));
  }
  if (!r.ok()) MX_ERROR_MSG << r.error();
  return r.ok();
}

const char* InputName(const QFcAttrs& a, int i) {
  if (i == 0) return "data";
  if (i == 1) return "weight";
  if (i == a.bias_index()) return "bias";
  if (i == a.in_scale_index()) return "in_scale";
  if (i == a.in_shift_index()) return "in_shift";
  return "alpha";
}

// Sizes of a rows x depth by hidden layer: each product that sizes a buffer (input, weight,
// output) at most kMaxConvElements (conv.h); throws std::invalid_argument naming it.
void CheckDenseSizes(int64_t rows, int64_t depth, int64_t hidden) {
  const auto check = [](const char* what, int64_t x, int64_t y) {
    int64_t r;
    if (__builtin_mul_overflow(x, y, &r) || r > kMaxConvElements) {
      throw std::invalid_argument(std::string("the ") + what + " (" + std::to_string(x) + " x " +
                                  std::to_string(y) + ") exceeds 2^40 elements");
    }
  };
  check("input rows*features", rows, depth);
  check("weight num_hidden*features", hidden, depth);
  check("output rows*num_hidden", rows, hidden);
}

// A dense layer as a 1x1 convolution over a 1x1 image (what QuantizedWeight takes).
Conv2dParams DenseAsConv(int64_t depth, int64_t hidden) {
  Conv2dParams p;
  p.channels = depth;
  p.num_filter = hidden;
  return p;
}

// rows x depth view of the data shape.
template <typename T>
void RowsDepth(const QFcAttrs& a, const std::vector<T>& shape, int64_t* rows, int64_t* depth) {
  int64_t r = 1, d = 1;
  if (a.flatten) {
    r = static_cast<int64_t>(shape[0]);
    for (size_t i = 1; i < shape.size(); ++i) d *= static_cast<int64_t>(shape[i]);
  } else {
    for (size_t i = 0; i + 1 < shape.size(); ++i) r *= static_cast<int64_t>(shape[i]);
    d = static_cast<int64_t>(shape.back());
  }
  *rows = r;
  *depth = d;
}

MXReturnValue ParseAttrsFn(const Attrs& attrs, int* num_in, int* num_out) {
  ResetErrorMessages();
  return Guarded(kOp, "", [&] {
    QFcAttrs a;
    if (!Parse(attrs, &a)) return MX_FAIL;
    *num_in = a.num_inputs();
    *num_out = 1;
    return MX_SUCCESS;
  });
}

MXReturnValue InferTypeFn(const Attrs& attrs, std::vector<int>* in_types,
                          std::vector<int>* out_types) {
  ResetErrorMessages();
  return Guarded(kOp, "", [&] {
    QFcAttrs a;
    if (!Parse(attrs, &a)) return MX_FAIL;
    for (int i = 0; i < static_cast<int>(in_types->size()); ++i) {
      const int want = (i == 1 && a.packed) ? mxnet::ext::kInt64 : mxnet::ext::kFloat32;
      int& t = (*in_types)[i];
      if (t == -1) {
        t = want;
      } else if (t != want) {
        MX_ERROR_MSG << kOp << ": expected input `" << InputName(a, i) << "` to have dtype "
                     << DtypeName(want)
                     << (i == 1 && a.packed ? " (packed words, binarized_weights_only=True)" : "")
                     << ", got " << DtypeName(t);
        return MX_FAIL;
      }
    }
    (*out_types)[0] = mxnet::ext::kFloat32;
    return MX_SUCCESS;
  });
}

MXReturnValue InferShapeFn(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in_shapes,
                           std::vector<std::vector<unsigned int>>* out_shapes) {
  ResetErrorMessages();
  return Guarded(kOp, "", [&] {
    QFcAttrs a;
    if (!Parse(attrs, &a)) return MX_FAIL;
    std::vector<unsigned int> ds = (*in_shapes)[0];
    if (ds.empty() && a.flatten) ds.assign(2, kUnknownDim);  // unknown rank: (N, D) unknown
    if (ds.empty()) {
      // flatten=False with an unknown rank: the weight and bias only; the output stays
      // unknown (its rank is the data's).
      ds.assign(1, kUnknownDim);
    }
    if (ds.size() < (a.flatten ? 2u : 1u)) {
      MX_ERROR_MSG << kOp << ": expected `data` of rank >= " << (a.flatten ? 2 : 1)
                   << ", got shape " << ShapeText(ds);
      return MX_FAIL;
    }
    // rows x depth of the data, in int64 with overflow checks; -1 = unknown.
    int64_t rows = 1, depth = 1;
    const size_t first_feature = a.flatten ? 1 : ds.size() - 1;
    for (size_t i = 0; i < ds.size(); ++i) {
      int64_t& acc = i < first_feature ? rows : depth;
      if (!DimKnown(ds[i]) || acc < 0) {
        acc = -1;
      } else if (__builtin_mul_overflow(acc, static_cast<int64_t>(ds[i]), &acc) ||
                 acc > kMaxConvElements) {
        acc = kMaxConvElements + 1;
      }
    }
    if (depth == 0) {
      MX_ERROR_MSG << kOp << ": `data` of shape " << ShapeText(ds) << " has no features";
      return MX_FAIL;
    }
    if (depth > kMaxConvDim) {
      MX_ERROR_MSG << kOp << ": `data` of shape " << ShapeText(ds) << " has " << depth
                   << " features per row (flatten=" << (a.flatten ? "True" : "False")
                   << "); at most 2^31-1 are supported";
      return MX_FAIL;
    }
    try {
      if (depth > 0) CheckDenseSizes(rows > 0 ? rows : 0, depth, a.num_hidden);
    } catch (const std::exception& e) {
      MX_ERROR_MSG << kOp << ": data shape " << ShapeText(ds) << ": " << e.what();
      return MX_FAIL;
    }
    const unsigned h = static_cast<unsigned>(a.num_hidden);
    std::vector<unsigned int> wshape;
    const char* hint;
    const bool d_known = depth > 0;
    if (a.packed_levels()) {
      // One stream of H * D levels at weight_bit bits (kbit_pack.h); H * D <= 2^40 (checked).
      unsigned level_words = kUnknownDim;
      if (d_known) {
        const int64_t lw = KbitPackedWords(a.num_hidden * depth, a.weight_bit);
        if (lw > 0x7FFFFFFF) {
          MX_ERROR_MSG << kOp << ": the packed weight of num_hidden * D levels at weight_bit="
                       << a.weight_bit << " takes more than the 2^31-1 words an MXNet "
                       << "dimension holds";
          return MX_FAIL;
        }
        level_words = static_cast<unsigned>(lw);
      }
      wshape = {level_words};
      hint = " (ceil(num_hidden * D * weight_bit / 64),) of packed k-bit weight levels";
    } else if (a.packed) {
      wshape = {h, d_known ? static_cast<unsigned>(WordsFor(depth)) : kUnknownDim};
      hint = " (num_hidden, ceil(D/64)) of packed words";
    } else {
      wshape = {h, d_known ? static_cast<unsigned>(depth) : kUnknownDim};
      hint = " (num_hidden, D)";
    }
    if (!MatchShape(kOp, "weight", wshape, &(*in_shapes)[1], hint)) return MX_FAIL;
    if (a.bias_index() >= 0 && !MatchShape(kOp, "bias", {h}, &(*in_shapes)[a.bias_index()], "")) {
      return MX_FAIL;
    }
    if (a.alpha_index() >= 0 &&
        !MatchShape(kOp, "alpha", {h}, &(*in_shapes)[a.alpha_index()], "")) {
      return MX_FAIL;
    }
    if (a.input_affine) {
      const std::vector<unsigned int> dshape = {d_known ? static_cast<unsigned>(depth)
                                                        : kUnknownDim};
      if (!MatchShape(kOp, "in_scale", dshape, &(*in_shapes)[a.in_scale_index()],
                      " (D,) (input_affine, one per feature of the flattened input)") ||
          !MatchShape(kOp, "in_shift", dshape, &(*in_shapes)[a.in_shift_index()],
                      " (D,) (input_affine, one per feature of the flattened input)")) {
        return MX_FAIL;
      }
    }
    std::vector<unsigned int> os;
    if (a.flatten) {
      os = {ds[0], h};
    } else if ((*in_shapes)[0].empty()) {
      return MX_SUCCESS;  // output rank unknown: left unknown
    } else {
      os.assign(ds.begin(), ds.end() - 1);
      os.push_back(h);
    }
    (*out_shapes)[0] = os;
    return MX_SUCCESS;
  });
}

bool CheckCpu(const QFcAttrs& a, const std::vector<MXTensor>& in) {
  return InputsOnCpu(kOp, in, a.num_inputs(), [&](int i) { return InputName(a, i); });
}

MXReturnValue ForwardFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                        std::vector<MXTensor>* outputs, const OpResource& /*res*/) {
  return Guarded(kOp, " forward", [&] {
    QFcAttrs a;
    if (!Parse(attrs, &a) || !CheckCpu(a, *inputs)) return MX_FAIL;
    int64_t rows, depth;
    RowsDepth(a, (*inputs)[0].shape, &rows, &depth);
    const int64_t hid = a.num_hidden;
    CheckDenseSizes(rows, depth, hid);
    const float* x = static_cast<const float*>((*inputs)[0].data_ptr);
    const MXTensor& wt = (*inputs)[1];
    const float* bias = a.bias_index() >= 0
                            ? static_cast<const float*>((*inputs)[a.bias_index()].data_ptr)
                            : nullptr;
    float* out = static_cast<float*>((*outputs)[0].data_ptr);
    std::vector<float> alpha_buf;
    const float* alpha = nullptr;
    if (a.scaling) {
      if (a.packed) {
        alpha = static_cast<const float*>((*inputs)[a.alpha_index()].data_ptr);
      } else {
        alpha_buf.resize(hid);
        MeanAbsRows(static_cast<const float*>(wt.data_ptr), hid, depth, alpha_buf.data());
        alpha = alpha_buf.data();
      }
    }
    const float* in_scale = nullptr;
    const float* in_shift = nullptr;
    if (a.input_affine) {
      in_scale = static_cast<const float*>((*inputs)[a.in_scale_index()].data_ptr);
      in_shift = static_cast<const float*>((*inputs)[a.in_shift_index()].data_ptr);
    }
    if (a.binary()) {
      // Float weights are re-packed on every call (a weight changed in place is always seen).
      thread_local std::vector<uint64_t> packed_buf;
      const GemmConfig config = DefaultGemmConfig();
      const uint64_t* wp;
      if (a.packed) {
        wp = static_cast<const uint64_t*>(wt.data_ptr);
      } else {
        packed_buf.resize(hid * WordsFor(depth));
        PackRows(static_cast<const float*>(wt.data_ptr), hid, depth, depth, packed_buf.data(),
                 config.isa);
        wp = packed_buf.data();
      }
      BinaryDenseArgs args;
      args.x = x;
      args.w_packed = wp;
      args.alpha = alpha;
      args.bias = bias;
      args.in_scale = in_scale;
      args.in_shift = in_shift;
      args.out = out;
      BinaryDense(args, rows, depth, hid, config);
    } else if (a.input_affine) {
      // act_bit = 1 with a k-bit / float weight: sgn(x * s + t) materialised, then float GEMM.
      std::vector<float> xa(rows * depth), wq(hid * depth);
      for (int64_t m = 0; m < rows; ++m) {
        for (int64_t d = 0; d < depth; ++d) {
          const float prod = x[m * depth + d] * in_scale[d];
          xa[m * depth + d] = prod + in_shift[d] < 0.0f ? -1.0f : 1.0f;
        }
      }
      QuantizedWeight(wt, a.packed, a.act_bit, a.weight_bit, DenseAsConv(depth, hid), wq.data());
      FloatDenseForward(xa.data(), InputQuant::kNone, wq.data(), alpha, bias, out, rows, depth, hid,
                        DefaultThreads());
    } else if (KbitPathFor(a.act_bit, a.weight_bit, depth) != KbitPath::kNone) {
      // k-bit with an integer kernel (kbit.h): exact integer levels, one final rounding.
      const GemmConfig config = DefaultGemmConfig();
      thread_local KbitWeights kbit_w;
      if (a.packed_levels()) {
        thread_local std::vector<uint8_t> levels;
        PackedWeightLevels(wt, hid * depth, a.weight_bit, &levels);
        PrepareKbitDenseLevels(levels.data(), depth, hid, a.act_bit, a.weight_bit, config.isa,
                               &kbit_w);
      } else {
        PrepareKbitDense(static_cast<const float*>(wt.data_ptr), depth, hid, a.act_bit,
                         a.weight_bit, config.isa, &kbit_w);
      }
      KbitArgs args;
      args.x = x;
      args.alpha = alpha;
      args.bias = bias;
      args.out = out;
      KbitDense(args, kbit_w, rows, config);
    } else {
      // k-bit / float: OpenBLAS GEMM; a 1-bit input is read through sgn.
      std::vector<float> xq, wq(hid * depth);
      const float* xin = x;
      if (a.act_bit != 1 && a.act_bit < 32) {
        xq.resize(rows * depth);
        QuantizeAct(x, rows * depth, a.act_bit, xq.data());
        xin = xq.data();
      }
      QuantizedWeight(wt, a.packed, a.act_bit, a.weight_bit, DenseAsConv(depth, hid), wq.data());
      FloatDenseForward(xin, a.act_bit == 1 ? InputQuant::kSign : InputQuant::kNone, wq.data(),
                        alpha, bias, out, rows, depth, hid, DefaultThreads());
    }
    return MX_SUCCESS;
  });
}

// inputs: dy, data, weight, [bias], [alpha], out;  outputs: dx, dweight, [dbias], [dalpha].
MXReturnValue BackwardFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                         std::vector<MXTensor>* outputs, const OpResource& /*res*/) {
  return Guarded(kOp, " backward", [&] {
    QFcAttrs a;
    if (!Parse(attrs, &a)) return MX_FAIL;
    if (a.input_affine) {
      MX_ERROR_MSG << kOp << ": input_affine=True is an inference feature (folded BatchNorm); "
                   << "it has no backward. Train with BatchNorm + QFullyConnected, then fold.";
      return MX_FAIL;
    }
    std::vector<MXTensor> fwd_in(inputs->begin() + 1, inputs->begin() + 1 + a.num_inputs());
    if (!CheckCpu(a, fwd_in)) return MX_FAIL;
    int64_t rows, depth;
    RowsDepth(a, fwd_in[0].shape, &rows, &depth);
    const int64_t hid = a.num_hidden;
    const float* dy = static_cast<const float*>((*inputs)[0].data_ptr);
    const float* x = static_cast<const float*>(fwd_in[0].data_ptr);

    const int threads = DefaultThreads();
    // Qa(x): sgn on the fly; only k-bit (2..31) inputs get a quantised copy.
    std::vector<float> xq;
    const float* xin = x;
    const InputQuant quant = a.act_bit == 1 ? InputQuant::kSign : InputQuant::kNone;
    if (a.act_bit != 1 && a.act_bit < 32) {
      xq.resize(rows * depth);
      QuantizeAct(x, rows * depth, a.act_bit, xq.data());
      xin = xq.data();
    }
    const float* w_float = a.packed ? nullptr : static_cast<const float*>(fwd_in[1].data_ptr);
    // 1-bit float weights without scaling: FloatDenseBackward applies sgn to W block by block
    // itself, so Qw(W) is never made whole here.
    const bool sign_in_gemm = !a.packed && !a.scaling && a.weight_bit == 1;
    // Otherwise Qw(W) goes to a per-thread buffer that is only grown (a fresh value-initialised
    // vector of hid * depth floats per call cost about 0.3 ms on the LeNet 1024 -> 1000 layer).
    thread_local std::vector<float> wq;
    if (!sign_in_gemm) {
      wq.resize(static_cast<size_t>(hid * depth));
      QuantizedWeight(fwd_in[1], a.packed, a.act_bit, a.weight_bit, DenseAsConv(depth, hid),
                      wq.data());
    }
    const int alpha_at = a.alpha_index();
    WeightGradChain chain(
        a.packed, a.scaling, w_float,
        alpha_at >= 0 ? static_cast<const float*>(fwd_in[alpha_at].data_ptr) : nullptr, hid, depth,
        &(*outputs)[1],
        alpha_at >= 0 ? static_cast<float*>((*outputs)[alpha_at].data_ptr) : nullptr);
    // dx = dy (alpha * Wq) * mask;  G = dy^T Qa(x)  (OpenBLAS).
    float* dx = static_cast<float*>((*outputs)[0].data_ptr);
    FloatDenseBackward(xin, quant, sign_in_gemm ? w_float : chain.ScaledWeights(wq.data()), dy,
                       a.act_bit < 32 ? x : nullptr, a.grad_cancel, dx, chain.GradTarget(), rows,
                       depth, hid, threads, sign_in_gemm ? InputQuant::kSign : InputQuant::kNone);
    chain.Finish(wq.data());
    if (a.bias_index() >= 0) {
      BiasGrad(dy, rows, hid, 1, static_cast<float*>((*outputs)[a.bias_index()].data_ptr), threads);
    }
    return MX_SUCCESS;
  });
}

}  // namespace
}  // namespace ops
}  // namespace binmx

#ifdef BINMX_OPS_GPU
// "gpu" forward / backward (BINMX_WITH_CUDA=ON; compile-checked only): the attributes are
// parsed and validated here exactly as for "cpu"; the work is in q_ops_gpu.cc.
#include "q_ops_gpu.h"

namespace binmx {
namespace ops {
namespace {

bool ToGpuSpec(const Attrs& attrs, const std::vector<MXTensor>& in, size_t data, GpuFcSpec* s) {
  QFcAttrs a;
  if (!Parse(attrs, &a)) return false;
  if (a.packed_levels()) {  // the CUDA kernels take float or 1-bit packed weights only
    MX_ERROR_MSG << kOp << " (gpu): packed k-bit weights (binarized_weights_only=True with "
                 << "act_bit=" << a.act_bit << ", weight_bit=" << a.weight_bit
                 << ") run on cpu only; run the layer on cpu, or keep its float weights";
    return false;
  }
  if (in.size() <= data || in[data].shape.size() < (a.flatten ? 2u : 1u)) {
    MX_ERROR_MSG << kOp << " (gpu): expected `data` of rank >= " << (a.flatten ? 2 : 1);
    return false;
  }
  RowsDepth(a, in[data].shape, &s->rows, &s->depth);
  s->hidden = a.num_hidden;
  FillLayerSpec(a, s);
  return true;
}

MXReturnValue ForwardGpuFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                           std::vector<MXTensor>* outputs, const OpResource& res) {
  return Guarded(kOp, " forward (gpu)", [&] {
    GpuFcSpec s;
    if (!ToGpuSpec(attrs, *inputs, 0, &s)) return MX_FAIL;
    return QFcForwardGpu(s, inputs, outputs, res);
  });
}

MXReturnValue BackwardGpuFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                            std::vector<MXTensor>* outputs, const OpResource& res) {
  return Guarded(kOp, " backward (gpu)", [&] {
    GpuFcSpec s;
    if (!ToGpuSpec(attrs, *inputs, 1, &s)) return MX_FAIL;
    return QFcBackwardGpu(s, inputs, outputs, res);
  });
}

}  // namespace
}  // namespace ops
}  // namespace binmx
#endif  // BINMX_OPS_GPU

REGISTER_OP(QFullyConnected)
    .setParseAttrs(binmx::ops::ParseAttrsFn)
    .setInferType(binmx::ops::InferTypeFn)
    .setInferShape(binmx::ops::InferShapeFn)
    .setForward(binmx::ops::ForwardFn, "cpu")
    .setBackward(binmx::ops::BackwardFn, "cpu")
#ifdef BINMX_OPS_GPU
    .setForward(binmx::ops::ForwardGpuFn, "gpu")
    .setBackward(binmx::ops::BackwardGpuFn, "gpu")
#endif
    ;

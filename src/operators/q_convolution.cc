/*
 * binmx operator QConvolution (CPU): a drop-in replacement for Convolution (2-D, NCHW).
 *
 * Inputs, in order: data (N, C, H, W) float32; weight: OIHW float32 (F, C/g, kh, kw), or with
 * binarized_weights_only=True int64 words: 1-bit signs (F, kh, kw, ceil(C/g/64)) when
 * act_bit = weight_bit = 1, else (weight_bit 1..8) the weight levels lw of kbit.h in one stream
 * of ceil(F * C/g * kh * kw * weight_bit / 64) words (kbit_pack.h); bias (F,) unless no_bias;
 * alpha (F,) float32 when binarized_weights_only and scaling_factor; with input_affine=True
 * (act_bit = 1 only) in_scale (C,) and in_shift (C,) float32; with residual=True
 * (act_bit = weight_bit = 1 only) residual (N, F, OH, OW) float32 last. Output (N, F, OH, OW).
 * Packed chaining (inference, binarized_weights_only, num_group = 1; what binmx.fold makes of
 * a binary conv whose only reader is the next binary conv's sign):
 *   out_packed=True: inputs out_scale, out_shift (F,) float32 after in_scale / in_shift; the
 *     output is int64 (N, OH, OW, ceil(F/64)) words, bit f % 64 of word f / 64 set iff
 *     out_f * out_scale_f + out_shift_f < 0 (the next layer's input affine, applied to the
 *     float output this layer would give; product and sum rounded separately). No residual.
 *   in_packed=True, in_channels=C: `data` is such words, int64 (N, H, W, ceil(C/64)), bit set
 *     = activation -1 (bits past C ignored); no input_affine.
 * Neither has a backward (MXNetError).
 *
 * input_affine (inference; a folded BatchNorm): the activation is sgn(x * in_scale_c +
 *   in_shift_c) instead of sgn(x) (product and sum rounded separately in float32), computed in
 *   the packing pass. It has no backward (MXNetError).
 * residual (inference; a folded `QConvolution + x` residual add): out = (alpha_f * dot + bias_f)
 *   + residual, the add done last in float32 in the kernel epilogue, so bit-identical to
 *   elemwise_add(QConvolution(...), residual). No backward (MXNetError).
 *
 * Forward: out = alpha_f * conv(Qa(x), Qw(W)) + bias_f, padding per pad_value (0 = zeros,
 *   +1 / -1 constants), Qa / Qw the act_bit / weight_bit quantisers (op_common.h), alpha_f =
 *   mean |W_f| with scaling_factor (else 1). act_bit = weight_bit = 1 runs the direct xnor
 *   convolution of bconv.h (exact integers); act_bit 2..8 with weight_bit 1..8 the integer
 *   k-bit kernels of kbit.h (exact integer levels, one final rounding); other bit widths run
 *   a float convolution on the fake-quantised values.
 * Backward (straight-through estimator):
 *   dx = conv_transpose(alpha * dy, Qw(W)) * 1[|x| <= grad_cancel]   (mask only if act_bit < 32)
 *   G  = d loss / d Qw without alpha = sum dy * Qa(x)pad;  dW = G, or with scaling_factor
 *        dW = alpha * G + sgn(W) / n * dalpha, dalpha_f = sum_i G_fi Qw(W)_fi  (op_common.h)
 *   dbias = sum dy. Packed weights (1-bit or k-bit) get a zero gradient; the alpha input gets
 *   dalpha. Qw(W) of packed k-bit levels is 2 lw / (2^weight_bit - 1) - 1, the value the float
 *   weights they were made from quantise to, so a converted layer computes what it did before.
 */
#include <cstring>
#include <exception>
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

constexpr const char* kOp = "QConvolution";

struct QConvAttrs {
  std::vector<int64_t> kernel, stride, dilate, pad;
  int64_t num_filter = 0, num_group = 1;
  bool no_bias = false, packed = false, scaling = false, input_affine = false, residual = false;
  bool in_packed = false, out_packed = false;
  int64_t in_channels = 0;  // with in_packed
  int act_bit = 1, weight_bit = 1, pad_value = 0;
  float grad_cancel = 1.0f;

  bool binary() const { return act_bit == 1 && weight_bit == 1; }
  // binarized_weights_only on any other layer: the weight is packed k-bit levels (kbit_pack.h).
  bool packed_levels() const { return packed && !binary(); }
  int num_params() const { return 2 + (no_bias ? 0 : 1) + (packed && scaling ? 1 : 0); }
  int num_inputs() const {
    return num_params() + (input_affine ? 2 : 0) + (out_packed ? 2 : 0) + (residual ? 1 : 0);
  }
  int bias_index() const { return no_bias ? -1 : 2; }
  int alpha_index() const { return packed && scaling ? (no_bias ? 2 : 3) : -1; }
  // input_affine: in_scale, in_shift (C,) after the other inputs.
  int in_scale_index() const { return input_affine ? num_params() : -1; }
  int in_shift_index() const { return input_affine ? num_params() + 1 : -1; }
  // out_packed: out_scale, out_shift (F,) next.
  int out_scale_index() const { return out_packed ? num_params() + (input_affine ? 2 : 0) : -1; }
  int out_shift_index() const { return out_packed ? out_scale_index() + 1 : -1; }
  // residual: (N, F, OH, OW), the last input.
  int residual_index() const { return residual ? num_inputs() - 1 : -1; }
};

// check_known: reject attribute names QConvolution does not know. parseAttrs (run when a node
// is made) does; forward and backward skip it, being the hot path (330 name comparisons).
bool ParseQConv(const Attrs& attrs, QConvAttrs* a, std::string* error, bool check_known) {
  AttrReader r(kOp, attrs);
  if (check_known) {
    r.CheckKnown({"kernel",
                  "stride",
                  "dilate",
                  "pad",
                  "num_filter",
                  "num_group",
                  "no_bias",
                  "layout",
                  "act_bit",
                  "weight_bit",
                  "binarized_weights_only",
                  "scaling_factor",
                  "pad_value",
                  "grad_cancel",
                  "input_affine",
                  "residual",
                  "in_packed",
                  "in_channels",
                  "out_packed",
                  "workspace",
                  "cudnn_tune",
                  "cudnn_off"});
  }
  a->kernel = r.Tuple("kernel", 2, 1, false, /*required=*/true);
  a->stride = r.Tuple("stride", 2, 1, false);
  a->dilate = r.Tuple("dilate", 2, 1, false);
  a->pad = r.Tuple("pad", 2, 0, true);
  a->num_filter = r.Int("num_filter", 0, 1, 1 << 24, /*required=*/true);
  a->num_group = r.Int("num_group", 1, 1, 1 << 24);
  a->no_bias = r.Bool("no_bias", false);
  a->act_bit = static_cast<int>(r.Int("act_bit", 1, 1, 32));
  a->weight_bit = static_cast<int>(r.Int("weight_bit", a->act_bit, 1, 32));
  a->packed = r.Bool("binarized_weights_only", false);
  a->scaling = r.Bool("scaling_factor", false);
  a->pad_value = static_cast<int>(r.Int("pad_value", 0, -1, 1));
  a->grad_cancel = static_cast<float>(r.Float("grad_cancel", 1.0, 0.0));
  a->input_affine = r.Bool("input_affine", false);
  a->residual = r.Bool("residual", false);
  a->in_packed = r.Bool("in_packed", false);
  a->out_packed = r.Bool("out_packed", false);
  a->in_channels = r.Int("in_channels", 0, 1, 1 << 24, /*required=*/a->in_packed);
  if (r.ok() && (a->in_packed || a->out_packed)) {
    const char* which = a->in_packed ? "in_packed=True" : "out_packed=True";
    if (!a->packed || !a->binary() || a->num_group != 1) {
      r.Fail(std::string(which) +
             " needs binarized_weights_only=True, act_bit=1, weight_bit=1 "
             "and num_group=1 (packed activations between converted binary layers)");
    } else if (a->in_packed && a->input_affine) {
      r.Fail("in_packed=True takes no input_affine (the bits already are the signs)");
    } else if (a->out_packed && a->residual) {
      r.Fail("out_packed=True cannot add a residual (the output is sign bits)");
    }
  }
  if (r.ok() && a->input_affine && a->act_bit != 1) {
    r.Fail("input_affine=True needs act_bit=1 (an affine map before the sign), got act_bit=" +
           std::to_string(a->act_bit));
  }
  if (r.ok() && a->residual && !a->binary()) {
    r.Fail(
        "residual=True needs act_bit=1 and weight_bit=1 (the fused xnor epilogue), got "
        "act_bit=" +
        std::to_string(a->act_bit) + ", weight_bit=" + std::to_string(a->weight_bit));
  }
  if (const std::string* layout = r.Find("layout")) {
    const std::string l = Trim(*layout);
    if (l != "NCHW" && l != "None" && !l.empty()) {
      r.Fail("expected `layout` to be NCHW (the only layout supported), got '" + *layout + "'");
    }
  }
  if (r.ok() && a->num_filter % a->num_group != 0) {
    r.Fail("expected `num_filter` (" + std::to_string(a->num_filter) +
           ") to be divisible by `num_group` (" + std::to_string(a->num_group) + ")");
  }
  if (r.ok() && a->packed && a->weight_bit > 8) {
    r.Fail(
        "binarized_weights_only=True needs weight_bit <= 8 (1-bit sign words, or k-bit weight "
        "levels; wider weights stay float), got weight_bit=" +
        std::to_string(a->weight_bit));
  }
  if (!r.ok()) *error = r.error();
  return r.ok();
}

// Reports a parse failure; true when the attributes are fine.
bool Parse(const Attrs& attrs, QConvAttrs* a, bool check_known = true) {
  std::string error;
  if (ParseQConv(attrs, a, &error, check_known)) return true;
  MX_ERROR_MSG << error;
  return false;
}

Conv2dParams MakeParams(const QConvAttrs& a, const std::vector<int64_t>& data_shape) {
  Conv2dParams p;
  p.batch = data_shape[0];
  p.channels = a.in_packed ? a.in_channels : data_shape[1];
  p.in_h = data_shape[a.in_packed ? 1 : 2];
  p.in_w = data_shape[a.in_packed ? 2 : 3];
  p.num_filter = a.num_filter;
  p.kernel_h = a.kernel[0];
  p.kernel_w = a.kernel[1];
  p.stride_h = a.stride[0];
  p.stride_w = a.stride[1];
  p.pad_h = a.pad[0];
  p.pad_w = a.pad[1];
  p.dilate_h = a.dilate[0];
  p.dilate_w = a.dilate[1];
  p.groups = a.num_group;
  p.pad_value = a.pad_value;
  return p;
}

MXReturnValue ParseAttrsFn(const Attrs& attrs, int* num_in, int* num_out) {
  ResetErrorMessages();
  return Guarded(kOp, "", [&] {
    QConvAttrs a;
    if (!Parse(attrs, &a)) return MX_FAIL;
    *num_in = a.num_inputs();
    *num_out = 1;
    return MX_SUCCESS;
  });
}

const char* InputName(const QConvAttrs& a, int i) {
  if (i == 0) return "data";
  if (i == 1) return "weight";
  if (i == a.bias_index()) return "bias";
  if (i == a.in_scale_index()) return "in_scale";
  if (i == a.in_shift_index()) return "in_shift";
  if (i == a.out_scale_index()) return "out_scale";
  if (i == a.out_shift_index()) return "out_shift";
  if (i == a.residual_index()) return "residual";
  return "alpha";
}

MXReturnValue InferTypeFn(const Attrs& attrs, std::vector<int>* in_types,
                          std::vector<int>* out_types) {
  ResetErrorMessages();
  return Guarded(kOp, "", [&] {
    QConvAttrs a;
    if (!Parse(attrs, &a)) return MX_FAIL;
    for (int i = 0; i < static_cast<int>(in_types->size()); ++i) {
      const bool words = (i == 1 && a.packed) || (i == 0 && a.in_packed);
      const int want = words ? mxnet::ext::kInt64 : mxnet::ext::kFloat32;
      int& t = (*in_types)[i];
      if (t == -1) {
        t = want;
      } else if (t != want) {
        MX_ERROR_MSG << kOp << ": expected input `" << InputName(a, i) << "` to have dtype "
                     << DtypeName(want)
                     << (i == 1 && a.packed      ? " (packed words, binarized_weights_only=True)"
                         : i == 0 && a.in_packed ? " (packed sign words, in_packed=True)"
                                                 : "")
                     << ", got " << DtypeName(t);
        return MX_FAIL;
      }
    }
    (*out_types)[0] = a.out_packed ? mxnet::ext::kInt64 : mxnet::ext::kFloat32;
    return MX_SUCCESS;
  });
}

// Shape inference. Unknown data dims (kUnknownDim, op_common.h) stay unknown in everything
// that depends on them: an unknown batch gives an unknown output batch, unknown channels an
// unknown weight / in_scale size, an unknown height or width an unknown output height or width.
// What is known is checked by the core's ValidateConv2dParams (all known) or
// ValidateConv2dAttrs (the attributes alone); every size is computed in int64 and written only
// if it fits the 32-bit shape (OutDim), never truncated.
MXReturnValue InferShapeFn(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in_shapes,
                           std::vector<std::vector<unsigned int>>* out_shapes) {
  ResetErrorMessages();
  return Guarded(kOp, "", [&] {
    QConvAttrs a;
    if (!Parse(attrs, &a)) return MX_FAIL;
    std::vector<unsigned int> ds = (*in_shapes)[0];
    if (ds.empty()) {
      ds.assign(4, kUnknownDim);  // unknown rank: rank 4 with every dim unknown
    } else if (ds.size() != 4) {
      MX_ERROR_MSG << kOp << ": expected `data` of rank 4 "
                   << (a.in_packed ? "(N, H, W, ceil(in_channels/64)) words" : "(N, C, H, W)")
                   << ", got shape " << ShapeText(ds);
      return MX_FAIL;
    }
    const unsigned n_dim = ds[0];
    const unsigned c_dim = a.in_packed ? kUnknownDim : ds[1];
    const unsigned h_dim = ds[a.in_packed ? 1 : 2], w_dim = ds[a.in_packed ? 2 : 3];
    if (a.in_packed && DimKnown(ds[3]) && static_cast<int64_t>(ds[3]) != WordsFor(a.in_channels)) {
      MX_ERROR_MSG << kOp << ": expected `data` of shape (N, H, W, " << WordsFor(a.in_channels)
                   << ") for in_packed=True, in_channels=" << a.in_channels << ", got "
                   << ShapeText(ds);
      return MX_FAIL;
    }
    const bool c_known = a.in_packed || DimKnown(c_dim);
    const bool h_known = DimKnown(h_dim), w_known = DimKnown(w_dim);
    Conv2dParams p = MakeParams(a, std::vector<int64_t>(ds.begin(), ds.end()));
    if (!DimKnown(n_dim)) p.batch = 0;  // no batch-sized product is checked
    if (c_known && p.channels % p.groups != 0) {
      MX_ERROR_MSG << kOp << ": expected the input channels (" << p.channels
                   << ") to be divisible by `num_group` (" << p.groups << ")";
      return MX_FAIL;
    }
    unsigned oh = kUnknownDim, ow = kUnknownDim;
    try {
      if (c_known && h_known && w_known) {
        ValidateConv2dParams(p);
        oh = OutDim("height", p.OutH());
        ow = OutDim("width", p.OutW());
      } else {
        // The attributes, then what is known: the unknown parts replaced by neutral ones.
        ValidateConv2dAttrs(p);
        Conv2dParams q = p;
        if (!c_known) q.channels = q.groups;
        if (!h_known) {
          q.in_h = 1;
          q.kernel_h = 1;
          q.pad_h = 0;
          q.dilate_h = 1;
          q.stride_h = 1;
        }
        if (!w_known) {
          q.in_w = 1;
          q.kernel_w = 1;
          q.pad_w = 0;
          q.dilate_w = 1;
          q.stride_w = 1;
        }
        ValidateConv2dParams(q);
        if (h_known) oh = OutDim("height", q.OutH());
        if (w_known) ow = OutDim("width", q.OutW());
      }
    } catch (const std::exception& e) {
      MX_ERROR_MSG << kOp << ": data shape " << ShapeText(ds) << " with kernel "
                   << TupleText(a.kernel) << ", stride " << TupleText(a.stride) << ", pad "
                   << TupleText(a.pad) << ", dilate " << TupleText(a.dilate) << ": " << e.what();
      return MX_FAIL;
    }
    const unsigned f = static_cast<unsigned>(a.num_filter);
    const unsigned kh = static_cast<unsigned>(a.kernel[0]), kw = static_cast<unsigned>(a.kernel[1]);
    const unsigned cg = c_known ? static_cast<unsigned>(p.GroupChannels()) : kUnknownDim;
    const unsigned words = c_known ? static_cast<unsigned>(p.TapWords()) : kUnknownDim;
    std::vector<unsigned int> wshape;
    const char* hint = "";
    if (a.packed_levels()) {
      // One stream of F * C/g * kh * kw levels at weight_bit bits (kbit_pack.h).
      unsigned level_words = kUnknownDim;
      if (c_known) {
        int64_t n = p.num_filter;
        const bool overflow = __builtin_mul_overflow(n, p.GroupChannels(), &n) ||
                              __builtin_mul_overflow(n, p.kernel_h, &n) ||
                              __builtin_mul_overflow(n, p.kernel_w, &n) || n > kMaxConvElements;
        const int64_t lw = overflow ? 0 : KbitPackedWords(n, a.weight_bit);
        if (overflow || lw > 0x7FFFFFFF) {
          MX_ERROR_MSG << kOp << ": the packed weight of num_filter * C/num_group * kh * kw "
                       << "levels at weight_bit=" << a.weight_bit
                       << " takes more than the 2^31-1 words an MXNet dimension holds";
          return MX_FAIL;
        }
        level_words = static_cast<unsigned>(lw);
      }
      wshape = {level_words};
      hint =
          " (ceil(num_filter * C/num_group * kh * kw * weight_bit / 64),) of packed k-bit "
          "weight levels";
    } else if (a.packed) {
      wshape = {f, kh, kw, words};
      hint = " (num_filter, kh, kw, ceil(C/num_group/64)) of packed words";
    } else {
      wshape = {f, cg, kh, kw};
      hint = " (num_filter, C/num_group, kh, kw)";
    }
    if (!MatchShape(kOp, "weight", wshape, &(*in_shapes)[1], hint)) return MX_FAIL;
    if (a.bias_index() >= 0 && !MatchShape(kOp, "bias", {f}, &(*in_shapes)[a.bias_index()], "")) {
      return MX_FAIL;
    }
    if (a.alpha_index() >= 0 &&
        !MatchShape(kOp, "alpha", {f}, &(*in_shapes)[a.alpha_index()], "")) {
      return MX_FAIL;
    }
    if (a.input_affine) {
      const std::vector<unsigned int> cshape = {c_known ? static_cast<unsigned>(p.channels)
                                                        : kUnknownDim};
      if (!MatchShape(kOp, "in_scale", cshape, &(*in_shapes)[a.in_scale_index()],
                      " (C,) (input_affine)") ||
          !MatchShape(kOp, "in_shift", cshape, &(*in_shapes)[a.in_shift_index()],
                      " (C,) (input_affine)")) {
        return MX_FAIL;
      }
    }
    if (a.out_packed) {
      if (!MatchShape(kOp, "out_scale", {f}, &(*in_shapes)[a.out_scale_index()],
                      " (num_filter,) (out_packed)") ||
          !MatchShape(kOp, "out_shift", {f}, &(*in_shapes)[a.out_shift_index()],
                      " (num_filter,) (out_packed)")) {
        return MX_FAIL;
      }
    }
    const std::vector<unsigned int> oshape = {n_dim, f, oh, ow};
    if (a.residual && !MatchShape(kOp, "residual", oshape, &(*in_shapes)[a.residual_index()],
                                  " (N, num_filter, OH, OW), the output shape (residual=True)")) {
      return MX_FAIL;
    }
    (*out_shapes)[0] = oshape;
    if (a.out_packed) {
      (*out_shapes)[0] = {n_dim, oh, ow, static_cast<unsigned>(WordsFor(a.num_filter))};
    }
    return MX_SUCCESS;
  });
}

bool CheckRuntime(const QConvAttrs& a, const std::vector<MXTensor>& in, Conv2dParams* p) {
  if (static_cast<int>(in.size()) < a.num_inputs() || in[0].shape.size() != 4) {
    MX_ERROR_MSG << kOp << ": expected " << a.num_inputs() << " inputs with 4-D data";
    return false;
  }
  if (!InputsOnCpu(kOp, in, a.num_inputs(), [&](int i) { return InputName(a, i); })) {
    return false;
  }
  *p = MakeParams(a, in[0].shape);
  ValidateConv2dParams(*p);
  return true;
}

MXReturnValue ForwardFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                        std::vector<MXTensor>* outputs, const OpResource& /*res*/) {
  return Guarded(kOp, " forward", [&] {
    QConvAttrs a;
    if (!Parse(attrs, &a, /*check_known=*/false)) return MX_FAIL;
    Conv2dParams p;
    if (!CheckRuntime(a, *inputs, &p)) return MX_FAIL;
    const MXTensor& xt = (*inputs)[0];
    const MXTensor& wt = (*inputs)[1];
    const float* x = a.in_packed ? nullptr : static_cast<const float*>(xt.data_ptr);
    const float* bias = a.bias_index() >= 0
                            ? static_cast<const float*>((*inputs)[a.bias_index()].data_ptr)
                            : nullptr;
    float* out = a.out_packed ? nullptr : static_cast<float*>((*outputs)[0].data_ptr);
    std::vector<float> alpha_buf;
    const float* alpha = nullptr;
    if (a.scaling) {
      if (a.packed) {
        alpha = static_cast<const float*>((*inputs)[a.alpha_index()].data_ptr);
      } else {
        alpha_buf.resize(p.num_filter);
        MeanAbsRows(static_cast<const float*>(wt.data_ptr), p.num_filter, p.FilterSize(),
                    alpha_buf.data());
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
      // Direct binary convolution (bconv.h): float weights are re-packed on every call, so a
      // weight changed in place between calls is always seen.
      thread_local std::vector<uint64_t> packed_buf;
      const uint64_t* wp;
      if (a.packed) {
        wp = static_cast<const uint64_t*>(wt.data_ptr);
      } else {
        packed_buf.resize(PackedConvWeightWords(p));
        PackConvWeightsFast(static_cast<const float*>(wt.data_ptr), p, packed_buf.data());
        wp = packed_buf.data();
      }
      BinaryConvArgs args;
      args.x = x;
      args.w_packed = wp;
      args.alpha = alpha;
      args.bias = bias;
      args.in_scale = in_scale;
      args.in_shift = in_shift;
      args.residual =
          a.residual ? static_cast<const float*>((*inputs)[a.residual_index()].data_ptr) : nullptr;
      args.out = out;
      if (a.in_packed) args.x_bits = static_cast<const uint64_t*>(xt.data_ptr);
      if (a.out_packed) {
        args.out_bits = static_cast<uint64_t*>((*outputs)[0].data_ptr);
        args.out_scale = static_cast<const float*>((*inputs)[a.out_scale_index()].data_ptr);
        args.out_shift = static_cast<const float*>((*inputs)[a.out_shift_index()].data_ptr);
      }
      BinaryConv2d(args, p, DefaultGemmConfig());
    } else if (a.input_affine) {
      // act_bit = 1 with a k-bit / float weight: sgn(x * s + t) materialised, then float conv.
      const int64_t xn = xt.size(), wn = p.num_filter * p.FilterSize(), hw = p.in_h * p.in_w;
      std::vector<float> xa(xn), wq(wn);
      for (int64_t i = 0; i < xn; ++i) {
        const int64_t c = (i / hw) % p.channels;
        const float prod = x[i] * in_scale[c];
        xa[i] = prod + in_shift[c] < 0.0f ? -1.0f : 1.0f;
      }
      QuantizedWeight(wt, a.packed, a.act_bit, a.weight_bit, p, wq.data());
      FloatConv2dForward(xa.data(), InputQuant::kNone, wq.data(), alpha, bias, out, p,
                         DefaultThreads());
    } else if (KbitPathFor(a.act_bit, a.weight_bit, p.FilterSize()) != KbitPath::kNone) {
      // k-bit with an integer kernel (kbit.h: bit-serial or int8): the fake-quant result from
      // exact integer levels. Float weights are re-quantised on every call, as on the float
      // path; packed ones (kbit_pack.h) are the levels themselves.
      const GemmConfig config = DefaultGemmConfig();
      thread_local KbitWeights kbit_w;
      if (a.packed_levels()) {
        thread_local std::vector<uint8_t> levels;
        PackedWeightLevels(wt, p.num_filter * p.FilterSize(), a.weight_bit, &levels);
        PrepareKbitConvLevels(levels.data(), p, a.act_bit, a.weight_bit, config.isa, &kbit_w);
      } else {
        PrepareKbitConv(static_cast<const float*>(wt.data_ptr), p, a.act_bit, a.weight_bit,
                        config.isa, &kbit_w);
      }
      KbitArgs args;
      args.x = x;
      args.alpha = alpha;
      args.bias = bias;
      args.out = out;
      KbitConv2d(args, kbit_w, p, config);
    } else {
      // k-bit / float: im2col + OpenBLAS GEMM; a 1-bit input is read through sgn directly.
      const int64_t xn = xt.size(), wn = p.num_filter * p.FilterSize();
      std::vector<float> xq, wq(wn);
      const float* xin = x;
      if (a.act_bit != 1 && a.act_bit < 32) {
        xq.resize(xn);
        QuantizeAct(x, xn, a.act_bit, xq.data());
        xin = xq.data();
      }
      QuantizedWeight(wt, a.packed, a.act_bit, a.weight_bit, p, wq.data());
      FloatConv2dForward(xin, a.act_bit == 1 ? InputQuant::kSign : InputQuant::kNone, wq.data(),
                         alpha, bias, out, p, DefaultThreads());
    }
    return MX_SUCCESS;
  });
}

// inputs: dy, data, weight, [bias], [alpha], out;  outputs: dx, dweight, [dbias], [dalpha].
MXReturnValue BackwardFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                         std::vector<MXTensor>* outputs, const OpResource& /*res*/) {
  return Guarded(kOp, " backward", [&] {
    QConvAttrs a;
    if (!Parse(attrs, &a, /*check_known=*/false)) return MX_FAIL;
    if (a.input_affine) {
      MX_ERROR_MSG << kOp << ": input_affine=True is an inference feature (folded BatchNorm); "
                   << "it has no backward. Train with BatchNorm + QConvolution, then fold.";
      return MX_FAIL;
    }
    if (a.residual) {
      MX_ERROR_MSG << kOp << ": residual=True is an inference feature (a folded residual add); "
                   << "it has no backward. Train with QConvolution + elemwise_add, then fold.";
      return MX_FAIL;
    }
    if (a.in_packed || a.out_packed) {
      MX_ERROR_MSG << kOp << ": in_packed / out_packed are inference features (packed "
                   << "activations between folded binary layers); they have no backward.";
      return MX_FAIL;
    }
    const int n_in = a.num_inputs();
    std::vector<MXTensor> fwd_in(inputs->begin() + 1, inputs->begin() + 1 + n_in);
    Conv2dParams p;
    if (!CheckRuntime(a, fwd_in, &p)) return MX_FAIL;
    const float* dy = static_cast<const float*>((*inputs)[0].data_ptr);
    const float* x = static_cast<const float*>(fwd_in[0].data_ptr);
    const int64_t xn = fwd_in[0].size(), fsize = p.FilterSize(), f_all = p.num_filter;
    const int64_t ohw = p.OutH() * p.OutW();

    const int threads = DefaultThreads();
    // Qa(x): sgn is applied on the fly (im2col); only k-bit (2..31) inputs get a copy.
    std::vector<float> xq;
    const float* xin = x;
    const InputQuant quant = a.act_bit == 1 ? InputQuant::kSign : InputQuant::kNone;
    if (a.act_bit != 1 && a.act_bit < 32) {
      xq.resize(xn);
      QuantizeAct(x, xn, a.act_bit, xq.data());
      xin = xq.data();
    }
    std::vector<float> wq(f_all * fsize);
    QuantizedWeight(fwd_in[1], a.packed, a.act_bit, a.weight_bit, p, wq.data());
    const int alpha_at = a.alpha_index();
    WeightGradChain chain(
        a.packed, a.scaling, a.packed ? nullptr : static_cast<const float*>(fwd_in[1].data_ptr),
        alpha_at >= 0 ? static_cast<const float*>(fwd_in[alpha_at].data_ptr) : nullptr, f_all,
        fsize, &(*outputs)[1],
        alpha_at >= 0 ? static_cast<float*>((*outputs)[alpha_at].data_ptr) : nullptr);

    // dx = conv_transpose(dy, alpha * Wq) * mask;  G = sum dy * Qa(x)pad (one pass, BLAS).
    float* dx = static_cast<float*>((*outputs)[0].data_ptr);
    FloatConv2dBackward(xin, quant, chain.ScaledWeights(wq.data()), dy,
                        a.act_bit < 32 ? x : nullptr, a.grad_cancel, dx, chain.GradTarget(), p,
                        threads);
    chain.Finish(wq.data());
    if (a.bias_index() >= 0) {
      BiasGrad(dy, p.batch, f_all, ohw, static_cast<float*>((*outputs)[a.bias_index()].data_ptr),
               threads);
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

bool ToGpuSpec(const Attrs& attrs, const std::vector<MXTensor>& in, size_t data, GpuConvSpec* s) {
  QConvAttrs a;
  if (!Parse(attrs, &a)) return false;
  if (a.packed_levels()) {  // the CUDA kernels take float or 1-bit packed weights only
    MX_ERROR_MSG << kOp << " (gpu): packed k-bit weights (binarized_weights_only=True with "
                 << "act_bit=" << a.act_bit << ", weight_bit=" << a.weight_bit
                 << ") run on cpu only; run the layer on cpu, or keep its float weights";
    return false;
  }
  if (a.residual || a.in_packed || a.out_packed) {  // CPU-only inference features
    MX_ERROR_MSG
        << kOp << " (gpu): residual / in_packed / out_packed are not supported on gpu; "
        << "fold with binmx.fold(..., fuse_residual=False, pack_activations=False), or run on cpu";
    return false;
  }
  if (in.size() <= data || in[data].shape.size() != 4) {
    MX_ERROR_MSG << kOp << " (gpu): expected 4-D data";
    return false;
  }
  s->p = MakeParams(a, in[data].shape);
  FillLayerSpec(a, s);
  return true;
}

MXReturnValue ForwardGpuFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                           std::vector<MXTensor>* outputs, const OpResource& res) {
  return Guarded(kOp, " forward (gpu)", [&] {
    GpuConvSpec s;
    if (!ToGpuSpec(attrs, *inputs, 0, &s)) return MX_FAIL;
    return QConvForwardGpu(s, inputs, outputs, res);
  });
}

MXReturnValue BackwardGpuFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                            std::vector<MXTensor>* outputs, const OpResource& res) {
  return Guarded(kOp, " backward (gpu)", [&] {
    GpuConvSpec s;
    if (!ToGpuSpec(attrs, *inputs, 1, &s)) return MX_FAIL;
    return QConvBackwardGpu(s, inputs, outputs, res);
  });
}

}  // namespace
}  // namespace ops
}  // namespace binmx
#endif  // BINMX_OPS_GPU

REGISTER_OP(QConvolution)
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

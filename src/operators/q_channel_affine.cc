/*
 * binmx operator QChannelAffine (CPU): a per-channel affine map, optionally followed by relu.
 *
 *   inputs  data (N, C, ...) float32, scale (C,), shift (C,)
 *   attrs   relu (bool, default False)
 *   output  out[n][c][...] = data[n][c][...] * scale[c] + shift[c]   (a multiply, then an add)
 *           then max(out, 0) with relu (NaN stays NaN)
 *   backward: d data = dy * m * scale, d scale = sum dy * m * data, d shift = sum dy * m, with
 *           m = 1, or the relu mask out > 0.
 *
 * What it is for: binmx.fold (pass 7) turns an inference BatchNorm (and the relu after it)
 * that reads a binmx operator's output into this operator. MXNet's BatchNorm is slow on the
 * plain NCHW arrays that extension operators return (0.05-0.1 ms for ResNet-18's final 512x7x7
 * BatchNorm, plus a separate relu), and so is its BatchNorm over the 3 channels of an input
 * image; this is one pass over the data.
 */
#include <string>
#include <vector>

#include "float_conv.h"
#include "mxnet/lib_api.h"
#include "op_common.h"

using mxnet::ext::MX_FAIL;
using mxnet::ext::MX_SUCCESS;
using mxnet::ext::MXReturnValue;
using mxnet::ext::MXTensor;
using mxnet::ext::OpResource;

namespace binmx {
namespace ops {
namespace {

constexpr const char* kOp = "QChannelAffine";
const char* const kInputs[] = {"data", "scale", "shift"};
const char* InputName(int i) { return kInputs[i]; }

bool Parse(const Attrs& attrs, bool* relu) {
  AttrReader r(kOp, attrs);
  r.CheckKnown({"relu"});
  *relu = r.Bool("relu", false);
  if (!r.ok()) MX_ERROR_MSG << r.error();
  return r.ok();
}

MXReturnValue ParseAttrsFn(const Attrs& attrs, int* num_in, int* num_out) {
  ResetErrorMessages();
  return Guarded(kOp, "", [&] {
    bool relu;
    if (!Parse(attrs, &relu)) return MX_FAIL;
    *num_in = 3;
    *num_out = 1;
    return MX_SUCCESS;
  });
}

MXReturnValue InferTypeFn(const Attrs& attrs, std::vector<int>* in_types,
                          std::vector<int>* out_types) {
  ResetErrorMessages();
  bool relu;
  if (!Parse(attrs, &relu) ||
      !AllFloat32(kOp, {kInputs[0], kInputs[1], kInputs[2]}, in_types, out_types)) {
    return MX_FAIL;
  }
  return MX_SUCCESS;
}

MXReturnValue InferShapeFn(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in_shapes,
                           std::vector<std::vector<unsigned int>>* out_shapes) {
  ResetErrorMessages();
  bool relu;
  if (!Parse(attrs, &relu)) return MX_FAIL;
  const std::vector<unsigned int>& s = (*in_shapes)[0];
  if (s.size() < 2) {
    MX_ERROR_MSG << kOp << ": expected `data` of rank >= 2 (N, C, ...), got rank " << s.size();
    return MX_FAIL;
  }
  for (int i = 1; i < 3; ++i) {
    if (!MatchShape(kOp, kInputs[i], {s[1]}, &(*in_shapes)[i], " (the channels of `data`)")) {
      return MX_FAIL;
    }
  }
  (*out_shapes)[0] = s;
  return MX_SUCCESS;
}

// (batch, channels, inner) of data's shape.
void Dims(const std::vector<int64_t>& s, int64_t* batch, int64_t* channels, int64_t* inner) {
  *batch = s[0];
  *channels = s[1];
  *inner = 1;
  for (size_t i = 2; i < s.size(); ++i) *inner *= s[i];
}

float* F(const MXTensor& t) { return static_cast<float*>(t.data_ptr); }

MXReturnValue ForwardFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                        std::vector<MXTensor>* outputs, const OpResource& /*res*/) {
  return Guarded(kOp, " forward", [&] {
    bool relu;
    if (!Parse(attrs, &relu) || !InputsOnCpu(kOp, *inputs, 3, InputName)) return MX_FAIL;
    int64_t batch, channels, inner;
    Dims((*inputs)[0].shape, &batch, &channels, &inner);
    ChannelAffine(F((*inputs)[0]), batch, channels, inner, F((*inputs)[1]), F((*inputs)[2]), relu,
                  F((*outputs)[0]), DefaultThreads());
    return MX_SUCCESS;
  });
}

// inputs: dy, data, scale, shift, out;  outputs: d data, d scale, d shift.
MXReturnValue BackwardFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                         std::vector<MXTensor>* outputs, const OpResource& /*res*/) {
  return Guarded(kOp, " backward", [&] {
    bool relu;
    if (!Parse(attrs, &relu) || !InputsOnCpu(kOp, *inputs, 3, InputName)) return MX_FAIL;
    int64_t batch, channels, inner;
    Dims((*inputs)[1].shape, &batch, &channels, &inner);
    ChannelAffineBackward(F((*inputs)[0]), F((*inputs)[1]), F((*inputs)[4]), batch, channels, inner,
                          F((*inputs)[2]), relu, F((*outputs)[0]), F((*outputs)[1]),
                          F((*outputs)[2]), DefaultThreads());
    return MX_SUCCESS;
  });
}

}  // namespace
}  // namespace ops
}  // namespace binmx

REGISTER_OP(QChannelAffine)
    .setParseAttrs(binmx::ops::ParseAttrsFn)
    .setInferType(binmx::ops::InferTypeFn)
    .setInferShape(binmx::ops::InferShapeFn)
    .setForward(binmx::ops::ForwardFn, "cpu")
    .setBackward(binmx::ops::BackwardFn, "cpu");

/*
 * binmx operator QNHWCToNCHW (CPU): out[n][c][y][x] = data[n][y][x][c], float32, exact copies.
 *
 * What it is for: MXNet hands an extension operator its inputs in the plain NCHW layout, and
 * its reorder of an array that a oneDNN operator left in a blocked layout to NCHW is slow
 * (0.34 ms for 64x56x56, 4.2 ms for 64x112x112, 1 thread;
 * benchmarks/investigations/bench_reorder.py), while its `transpose(axes=(0, 2, 3, 1))` of the
 * same array to plain NHWC is a fast oneDNN reorder (0.056 / 0.31 ms). binmx.fold (pass 9)
 * therefore hands binmx's convolutions a oneDNN output as transpose-to-NHWC followed by this
 * operator. Backward: dx = dy transposed back to NHWC.
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

constexpr const char* kOp = "QNHWCToNCHW";

bool Parse(const Attrs& attrs) {
  AttrReader r(kOp, attrs);
  r.CheckKnown({});
  if (!r.ok()) MX_ERROR_MSG << r.error();
  return r.ok();
}

MXReturnValue ParseAttrsFn(const Attrs& attrs, int* num_in, int* num_out) {
  ResetErrorMessages();
  return Guarded(kOp, "", [&] {
    if (!Parse(attrs)) return MX_FAIL;
    *num_in = 1;
    *num_out = 1;
    return MX_SUCCESS;
  });
}

MXReturnValue InferTypeFn(const Attrs& attrs, std::vector<int>* in_types,
                          std::vector<int>* out_types) {
  ResetErrorMessages();
  if (!Parse(attrs) || !AllFloat32(kOp, {"data"}, in_types, out_types)) return MX_FAIL;
  return MX_SUCCESS;
}

MXReturnValue InferShapeFn(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in_shapes,
                           std::vector<std::vector<unsigned int>>* out_shapes) {
  ResetErrorMessages();
  if (!Parse(attrs)) return MX_FAIL;
  const std::vector<unsigned int>& s = (*in_shapes)[0];
  if (s.size() != 4) {
    MX_ERROR_MSG << kOp << ": expected `data` of rank 4 (N, H, W, C), got rank " << s.size();
    return MX_FAIL;
  }
  (*out_shapes)[0] = {s[0], s[3], s[1], s[2]};
  return MX_SUCCESS;
}

MXReturnValue ForwardFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                        std::vector<MXTensor>* outputs, const OpResource& /*res*/) {
  return Guarded(kOp, " forward", [&] {
    if (!Parse(attrs) || !InputsOnCpu(kOp, *inputs, 1, [](int) { return "data"; })) return MX_FAIL;
    const std::vector<int64_t>& s = (*inputs)[0].shape;  // N, H, W, C
    NhwcToNchw(static_cast<const float*>((*inputs)[0].data_ptr), s[0], s[1] * s[2], s[3],
               static_cast<float*>((*outputs)[0].data_ptr), DefaultThreads());
    return MX_SUCCESS;
  });
}

// inputs: dy (N, C, H, W), data, out;  outputs: dx (N, H, W, C).
MXReturnValue BackwardFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                         std::vector<MXTensor>* outputs, const OpResource& /*res*/) {
  return Guarded(kOp, " backward", [&] {
    if (!Parse(attrs) || !InputsOnCpu(kOp, *inputs, 1, [](int) { return "data"; })) return MX_FAIL;
    const std::vector<int64_t>& s = (*inputs)[1].shape;  // N, H, W, C
    NchwToNhwc(static_cast<const float*>((*inputs)[0].data_ptr), s[0], s[1] * s[2], s[3],
               static_cast<float*>((*outputs)[0].data_ptr), DefaultThreads());
    return MX_SUCCESS;
  });
}

}  // namespace
}  // namespace ops
}  // namespace binmx

REGISTER_OP(QNHWCToNCHW)
    .setParseAttrs(binmx::ops::ParseAttrsFn)
    .setInferType(binmx::ops::InferTypeFn)
    .setInferShape(binmx::ops::InferShapeFn)
    .setForward(binmx::ops::ForwardFn, "cpu")
    .setBackward(binmx::ops::BackwardFn, "cpu");

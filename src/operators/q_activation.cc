/*
 * binmx operator QActivation (CPU).
 *
 * Forward:  act_bit = 1: sgn(x) (+1 for x >= 0, also -0.0; -1 otherwise);
 *           act_bit 2..31: q(clip(x, 0, 1), act_bit) (DoReFa); act_bit = 32: x.
 *           backward_only=True: the forward is the identity (BMXNet semantics: the following
 *           QConvolution / QFullyConnected quantises its input itself).
 * Backward: dx = dy * 1[|x| <= grad_cancel] (inclusive) whenever the op quantises
 *           (act_bit < 32) or backward_only=True; dx = dy for a plain act_bit = 32 layer.
 */
#include <algorithm>
#include <exception>
#include <string>
#include <vector>

#include "float_conv.h"
#include "mxnet/lib_api.h"
#include "op_common.h"
#include "xnor_gemm.h"

using mxnet::ext::MX_FAIL;
using mxnet::ext::MX_SUCCESS;
using mxnet::ext::MXReturnValue;
using mxnet::ext::MXTensor;
using mxnet::ext::OpResource;

namespace binmx {
namespace ops {
namespace {

constexpr const char* kOp = "QActivation";

struct QActAttrs {
  int act_bit = 1;
  bool backward_only = false;
  float grad_cancel = 1.0f;
  bool masks() const { return act_bit < 32 || backward_only; }
};

bool Parse(const Attrs& attrs, QActAttrs* a) {
  AttrReader r(kOp, attrs);
  r.CheckKnown({"act_bit", "backward_only", "grad_cancel"});
  a->act_bit = static_cast<int>(r.Int("act_bit", 1, 1, 32));
  a->backward_only = r.Bool("backward_only", false);
  a->grad_cancel = static_cast<float>(r.Float("grad_cancel", 1.0, 0.0));
  if (!r.ok()) MX_ERROR_MSG << r.error();
  return r.ok();
}

MXReturnValue ParseAttrsFn(const Attrs& attrs, int* num_in, int* num_out) {
  ResetErrorMessages();
  return Guarded(kOp, "", [&] {
    QActAttrs a;
    if (!Parse(attrs, &a)) return MX_FAIL;
    *num_in = 1;
    *num_out = 1;
    return MX_SUCCESS;
  });
}

MXReturnValue InferTypeFn(const Attrs& attrs, std::vector<int>* in_types,
                          std::vector<int>* out_types) {
  ResetErrorMessages();
  QActAttrs a;
  if (!Parse(attrs, &a) || !AllFloat32(kOp, {"data"}, in_types, out_types)) return MX_FAIL;
  return MX_SUCCESS;
}

MXReturnValue InferShapeFn(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in_shapes,
                           std::vector<std::vector<unsigned int>>* out_shapes) {
  ResetErrorMessages();
  QActAttrs a;
  if (!Parse(attrs, &a)) return MX_FAIL;
  if ((*in_shapes)[0].empty()) {
    MX_ERROR_MSG << kOp << ": the shape of `data` is unknown";
    return MX_FAIL;
  }
  (*out_shapes)[0] = (*in_shapes)[0];
  return MX_SUCCESS;
}

MXReturnValue ForwardFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                        std::vector<MXTensor>* outputs, const OpResource& /*res*/) {
  return Guarded(kOp, " forward", [&] {
    QActAttrs a;
    if (!Parse(attrs, &a)) return MX_FAIL;
    if (!InputsOnCpu(kOp, *inputs, 1, [](int) { return "data"; })) return MX_FAIL;
    const float* x = static_cast<const float*>((*inputs)[0].data_ptr);
    float* y = static_cast<float*>((*outputs)[0].data_ptr);
    const int64_t n = (*inputs)[0].size();
    if (a.backward_only) {
      std::copy(x, x + n, y);
    } else {
      QuantizeAct(x, n, a.act_bit, y);
    }
    return MX_SUCCESS;
  });
}

// inputs: dy, x, y;  outputs: dx.
MXReturnValue BackwardFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                         std::vector<MXTensor>* outputs, const OpResource& /*res*/) {
  return Guarded(kOp, " backward", [&] {
    QActAttrs a;
    if (!Parse(attrs, &a)) return MX_FAIL;
    const float* dy = static_cast<const float*>((*inputs)[0].data_ptr);
    const float* x = static_cast<const float*>((*inputs)[1].data_ptr);
    float* dx = static_cast<float*>((*outputs)[0].data_ptr);
    const int64_t n = (*inputs)[1].size();
    if (a.masks()) {
      SteMask(x, dy, n, a.grad_cancel, dx, DefaultThreads());
    } else {
      std::copy(dy, dy + n, dx);
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

bool ToGpuSpec(const Attrs& attrs, GpuActSpec* s) {
  QActAttrs a;
  if (!Parse(attrs, &a)) return false;
  s->act_bit = a.act_bit;
  s->backward_only = a.backward_only;
  s->grad_cancel = a.grad_cancel;
  return true;
}

MXReturnValue ForwardGpuFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                           std::vector<MXTensor>* outputs, const OpResource& res) {
  return Guarded(kOp, " forward (gpu)", [&] {
    GpuActSpec s;
    if (!ToGpuSpec(attrs, &s)) return MX_FAIL;
    return QActForwardGpu(s, inputs, outputs, res);
  });
}

MXReturnValue BackwardGpuFn(const Attrs& attrs, std::vector<MXTensor>* inputs,
                            std::vector<MXTensor>* outputs, const OpResource& res) {
  return Guarded(kOp, " backward (gpu)", [&] {
    GpuActSpec s;
    if (!ToGpuSpec(attrs, &s)) return MX_FAIL;
    return QActBackwardGpu(s, inputs, outputs, res);
  });
}

}  // namespace
}  // namespace ops
}  // namespace binmx
#endif  // BINMX_OPS_GPU

REGISTER_OP(QActivation)
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

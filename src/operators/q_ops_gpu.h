/*
 * binmx operators: the "gpu" forward / backward of QConvolution, QFullyConnected and
 * QActivation (q_ops_gpu.cc), built only with BINMX_WITH_CUDA=ON (which defines BINMX_OPS_GPU).
 *
 * Each op's own file parses and validates the attributes with the same code as its CPU path
 * and hands the result over in one of the specs below; these functions then launch the
 * libbinmx_cuda C API (binmx_cuda.h) on MXNet's stream (OpResource::get_cuda_stream) with
 * scratch from OpResource::alloc_gpu. Inputs, outputs and formulas are exactly those of the
 * CPU functions (see the comment at the top of each op's file). They never throw: failures
 * become MX_ERROR_MSG + MX_FAIL.
 *
 * COMPILE-CHECKED ONLY: no MXNet 1.9.1 build runs on the GPUs this was written for (the
 * mxnet-cu1xx wheels carry no sm_90 code) and it has not run on a GPU. The C API
 * underneath is tested on a GPU by tests/test_cuda.py (tools/gpu_check.sh).
 */
#ifndef BINMX_OPERATORS_Q_OPS_GPU_H_
#define BINMX_OPERATORS_Q_OPS_GPU_H_

#include <cstdint>
#include <vector>

#include "conv.h"
#include "mxnet/lib_api.h"

namespace binmx {
namespace ops {

// What QConvolution and QFullyConnected share (fields as in their Attrs structs).
struct GpuLayerSpec {
  int act_bit = 1, weight_bit = 1;
  bool no_bias = false, packed = false, scaling = false, input_affine = false;
  float grad_cancel = 1.0f;
  int num_inputs = 2, bias_index = -1, alpha_index = -1, in_scale_index = -1, in_shift_index = -1;
  bool binary() const { return act_bit == 1 && weight_bit == 1; }
};

// The shared fields from a QConvolution or QFullyConnected Attrs struct.
template <typename LayerAttrs>
void FillLayerSpec(const LayerAttrs& a, GpuLayerSpec* s) {
  s->act_bit = a.act_bit;
  s->weight_bit = a.weight_bit;
  s->no_bias = a.no_bias;
  s->packed = a.packed;
  s->scaling = a.scaling;
  s->input_affine = a.input_affine;
  s->grad_cancel = a.grad_cancel;
  s->num_inputs = a.num_inputs();
  s->bias_index = a.bias_index();
  s->alpha_index = a.alpha_index();
  s->in_scale_index = a.in_scale_index();
  s->in_shift_index = a.in_shift_index();
}

struct GpuConvSpec : GpuLayerSpec {
  Conv2dParams p;  // geometry from the data shape (MakeParams of q_convolution.cc)
};

struct GpuFcSpec : GpuLayerSpec {
  int64_t rows = 0, depth = 0, hidden = 0;  // the rows x depth view of the data (RowsDepth)
};

struct GpuActSpec {
  int act_bit = 1;
  bool backward_only = false;
  float grad_cancel = 1.0f;
};

// The input layout the GPU path implements: data, weight, [bias], [alpha], [in_scale,
// in_shift]. False (with MX_ERROR_MSG) when an op's attributes ask for inputs beyond these.
bool GpuLayoutMatches(const char* op, const GpuLayerSpec& s);

using mxnet::ext::MXReturnValue;
using mxnet::ext::MXTensor;
using mxnet::ext::OpResource;

// The op files' "gpu" entry points call these inside Guarded (op_common.h), which turns a
// C++ exception into MX_ERROR_MSG.
MXReturnValue QConvForwardGpu(const GpuConvSpec& s, std::vector<MXTensor>* inputs,
                              std::vector<MXTensor>* outputs, const OpResource& res);
MXReturnValue QConvBackwardGpu(const GpuConvSpec& s, std::vector<MXTensor>* inputs,
                               std::vector<MXTensor>* outputs, const OpResource& res);
MXReturnValue QFcForwardGpu(const GpuFcSpec& s, std::vector<MXTensor>* inputs,
                            std::vector<MXTensor>* outputs, const OpResource& res);
MXReturnValue QFcBackwardGpu(const GpuFcSpec& s, std::vector<MXTensor>* inputs,
                             std::vector<MXTensor>* outputs, const OpResource& res);
MXReturnValue QActForwardGpu(const GpuActSpec& s, std::vector<MXTensor>* inputs,
                             std::vector<MXTensor>* outputs, const OpResource& res);
MXReturnValue QActBackwardGpu(const GpuActSpec& s, std::vector<MXTensor>* inputs,
                              std::vector<MXTensor>* outputs, const OpResource& res);

}  // namespace ops
}  // namespace binmx

#endif  // BINMX_OPERATORS_Q_OPS_GPU_H_

/*
 * The weight side of a Q layer's backward, one chain for QConvolution and QFullyConnected
 * (docs/design.md §3, "Backward"). The weight W is `rows x size`: F x (C/g * kh * kw) for a
 * convolution, H x D for a dense layer (a 1x1 convolution over a 1x1 image).
 *
 *   Qw(W)      packed 1-bit words unpacked to +-1, packed k-bit levels mapped to their
 *              fake-quant values, or the float weights quantised to weight_bit (QuantizedWeight)
 *   alpha_r    with scaling_factor: the input alpha (packed weights) or mean |W_r| (float
 *              weights); none otherwise
 *   dx         uses alpha_r * Qw(W)_r,i (ScaledWeights), or Qw(W) without alpha
 *   G          = d loss / d Qw(W), unscaled: the layer's GEMM writes it to GradTarget() (dW
 *              itself when dW = G; a buffer when alpha follows; nullptr when not needed)
 *   dW         = G                                            float weights, no scaling
 *              = alpha_r G_r,i + sgn(W_r,i) / size * dalpha_r  float weights, scaling
 *              = 0                                            packed weights (int64 words,
 *                                                             1-bit or k-bit)
 *   dalpha_r   = sum_i G_r,i Qw(W)_r,i                        packed weights with scaling
 *              (the alpha input's gradient)
 *
 * The formulas are FinishWeightGrad's (op_common.h); this class holds the buffers and the
 * choices between them, so each operator's backward states only its geometry and its GEMM.
 */
#ifndef BINMX_OPERATORS_WEIGHT_GRAD_H_
#define BINMX_OPERATORS_WEIGHT_GRAD_H_

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "conv.h"
#include "kbit_pack.h"
#include "mxnet/lib_api.h"
#include "op_common.h"

namespace binmx {
namespace ops {

// The weight levels lw of a packed k-bit weight input (binarized_weights_only=True on a layer
// that is not act_bit = weight_bit = 1: kbit_pack.h's stream of n levels at weight_bit bits),
// unpacked into *buf; std::invalid_argument naming the input when the words do not hold
// exactly n levels (a size mismatch or a set bit past the last level).
inline const uint8_t* PackedWeightLevels(const mxnet::ext::MXTensor& weight, int64_t n,
                                         int weight_bit, std::vector<uint8_t>* buf) {
  buf->resize(static_cast<size_t>(n));
  try {
    UnpackKbitLevels(static_cast<const uint64_t*>(weight.data_ptr), weight.size(), n, weight_bit,
                     buf->data());
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("input `weight` (binarized_weights_only=True, ") +
                                "weight_bit=" + std::to_string(weight_bit) + "): " + e.what());
  }
  return buf->data();
}

// Qw(W) of a layer's weight input into wq (p.num_filter x p.FilterSize() floats; p: the layer
// as a convolution). Packed (binarized_weights_only): the 1-bit sign words unpacked to +-1
// when act_bit = weight_bit = 1, else the k-bit levels lw as 2 lw / (2^weight_bit - 1) - 1
// (LevelsToWeights: QuantizeWeight's value of the float weights they came from); float
// weights are quantised.
inline void QuantizedWeight(const mxnet::ext::MXTensor& weight, bool packed, int act_bit,
                            int weight_bit, const Conv2dParams& p, float* wq) {
  const int64_t n = p.num_filter * p.FilterSize();
  if (packed && act_bit == 1 && weight_bit == 1) {
    UnpackConvWeights(static_cast<const uint64_t*>(weight.data_ptr), p, wq);
  } else if (packed) {
    std::vector<uint8_t> levels;
    LevelsToWeights(PackedWeightLevels(weight, n, weight_bit, &levels), n, weight_bit, wq);
  } else {
    QuantizeWeight(static_cast<const float*>(weight.data_ptr), n, weight_bit, wq);
  }
}

class WeightGradChain {
 public:
  // w_float: the float weights (nullptr when packed); alpha_input: the alpha input (packed with
  // scaling, else nullptr); dweight: the weight's gradient output; dalpha: the alpha input's
  // gradient (packed with scaling, else nullptr).
  WeightGradChain(bool packed, bool scaling, const float* w_float, const float* alpha_input,
                  int64_t rows, int64_t size, mxnet::ext::MXTensor* dweight, float* dalpha)
      : packed_(packed),
        w_float_(w_float),
        rows_(rows),
        size_(size),
        dweight_(dweight),
        dalpha_(dalpha) {
    if (scaling) {
      if (packed) {
        alpha_ = alpha_input;
      } else {
        alpha_buf_.resize(rows);
        MeanAbsRows(w_float, rows, size, alpha_buf_.data());
        alpha_ = alpha_buf_.data();
      }
    }
    if (alpha_ == nullptr && !packed) {
      g_out_ = static_cast<float*>(dweight->data_ptr);  // dW = G
    } else if (alpha_ != nullptr) {
      g_.resize(rows * size);
      g_out_ = g_.data();
    }
  }

  // Per-row alpha, or nullptr without scaling_factor.
  const float* alpha() const { return alpha_; }

  // Where the GEMM writes G (rows x size), or nullptr when no weight gradient is needed.
  float* GradTarget() const { return g_out_; }

  // The weights dx is computed with: alpha_r * wq[r][i] (a copy held here), or wq itself.
  const float* ScaledWeights(const float* wq) {
    if (alpha_ == nullptr) return wq;
    w_dx_.resize(rows_ * size_);
    for (int64_t r = 0; r < rows_; ++r) {
      for (int64_t i = 0; i < size_; ++i) w_dx_[r * size_ + i] = wq[r * size_ + i] * alpha_[r];
    }
    return w_dx_.data();
  }

  // After the GEMM: dW from G (zero for packed weights) and dalpha. wq: Qw(W) as above.
  void Finish(const float* wq) {
    if (packed_) {
      std::memset(dweight_->data_ptr, 0, sizeof(int64_t) * dweight_->size());
      if (alpha_ != nullptr) {
        FinishWeightGrad(g_.data(), nullptr, wq, alpha_, rows_, size_, nullptr, dalpha_);
      }
    } else if (alpha_ != nullptr) {
      FinishWeightGrad(g_.data(), w_float_, wq, alpha_, rows_, size_,
                       static_cast<float*>(dweight_->data_ptr), nullptr);
    }
  }

 private:
  bool packed_;
  const float* w_float_;
  int64_t rows_, size_;
  mxnet::ext::MXTensor* dweight_;
  float* dalpha_;
  const float* alpha_ = nullptr;
  std::vector<float> alpha_buf_, g_, w_dx_;
  float* g_out_ = nullptr;
};

}  // namespace ops
}  // namespace binmx

#endif  // BINMX_OPERATORS_WEIGHT_GRAD_H_

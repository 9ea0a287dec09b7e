/*
 * binmx float math: the CPU quantisers of the Q layers, alpha and the latent weight gradient
 * (docs/design.md §3). Their CUDA twins are binmx_cuda_quantize_act / _weight /
 * _finish_weight_grad (src/xnor_gemm/cuda/train.cu), held to the same results by
 * tests/test_cuda.py; binmx.reference is the NumPy statement of both.
 *
 *     act_bit / weight_bit = 1:  sgn(v) = +1 if v >= 0 (also -0.0) else -1
 *     act_bit k in 2..31:        q(clip(x, 0, 1), k),  q(a, k) = rint((2^k - 1) a) / (2^k - 1)
 *     weight_bit k in 2..31:     2 q(tanh(W) / (2 max|tanh W|) + 1/2, k) - 1   (max over the
 *                                whole tensor; an all-zero tensor uses tanh(W)/(2 max) = 0)
 *     32:                        identity (full precision)
 *   rint rounds half to even (as numpy.rint); the k-bit maths runs in double.
 *   alpha_f = mean |W_f| (XNOR-Net's scaling factor), summed in double.
 */
#ifndef BINMX_FLOAT_QUANTIZE_H_
#define BINMX_FLOAT_QUANTIZE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace binmx {

inline float Sgn(float v) { return v < 0.0f ? -1.0f : 1.0f; }  // NaN -> +1, as the bits

inline double QuantizeUnit(double a, int bits) {
  const double levels = static_cast<double>((int64_t{1} << bits) - 1);
  return std::nearbyint(levels * a) / levels;
}

// Activation quantiser (see the file comment) of n values into out.
inline void QuantizeAct(const float* x, int64_t n, int bits, float* out) {
  if (bits == 1) {
    for (int64_t i = 0; i < n; ++i) out[i] = Sgn(x[i]);
  } else if (bits >= 32) {
    std::copy(x, x + n, out);
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const double a = std::min(1.0, std::max(0.0, static_cast<double>(x[i])));
      out[i] = static_cast<float>(QuantizeUnit(a, bits));
    }
  }
}

// Weight quantiser (see the file comment) of n values into out.
inline void QuantizeWeight(const float* w, int64_t n, int bits, float* out) {
  if (bits == 1) {
    for (int64_t i = 0; i < n; ++i) out[i] = Sgn(w[i]);
  } else if (bits >= 32) {
    std::copy(w, w + n, out);
  } else {
    double max_t = 0.0;
    for (int64_t i = 0; i < n; ++i) max_t = std::max(max_t, std::fabs(std::tanh(double{w[i]})));
    for (int64_t i = 0; i < n; ++i) {
      const double t = max_t > 0.0 ? std::tanh(double{w[i]}) / (2.0 * max_t) : 0.0;
      out[i] = static_cast<float>(2.0 * QuantizeUnit(t + 0.5, bits) - 1.0);
    }
  }
}

// Qw(W) from stored weight levels lw (kbit.h; the packed k-bit weights of kbit_pack.h), bits in
// 1..8: out = float(2 (lw / (2^bits - 1)) - 1) in double, the very operations QuantizeWeight
// applies to lw = rint((2^bits - 1)(tanh W / (2 max) + 1/2)) (bits 1: lw = W >= 0, out = sgn W),
// so the result is QuantizeWeight's, bit for bit.
inline void LevelsToWeights(const uint8_t* lw, int64_t n, int bits, float* out) {
  const double levels = static_cast<double>((int64_t{1} << bits) - 1);
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<float>(2.0 * (static_cast<double>(lw[i]) / levels) - 1.0);
  }
}

// alpha[f] = mean |w[f][:]| over `size` weights per filter.
inline void MeanAbsRows(const float* w, int64_t rows, int64_t size, float* alpha) {
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0.0;
    for (int64_t i = 0; i < size; ++i) s += std::fabs(double{w[r * size + i]});
    alpha[r] = static_cast<float>(s / static_cast<double>(size));
  }
}

// Latent weight gradient from G = d loss / d Wq (unscaled by alpha), rows x size:
//   no scaling:  dW = G                                  (identity STE through the quantiser)
//   scaling:     dalpha[f] = sum_i G[f][i] * wq[f][i]
//                dW[f][j]  = alpha[f] * G[f][j] + sgn(W[f][j]) / size * dalpha[f]
// (the exact chain rule of out = alpha * conv(x, Wq), alpha = mean|W| with d|w|/dw = sgn(w);
// written to dw, dalpha may be null).
inline void FinishWeightGrad(const float* g, const float* w, const float* wq, const float* alpha,
                             int64_t rows, int64_t size, float* dw, float* dalpha) {
  for (int64_t f = 0; f < rows; ++f) {
    const float* gf = g + f * size;
    if (alpha == nullptr) {
      if (dw) std::copy(gf, gf + size, dw + f * size);
      continue;
    }
    double da = 0.0;
    for (int64_t i = 0; i < size; ++i) da += double{gf[i]} * double{wq[f * size + i]};
    if (dalpha) dalpha[f] = static_cast<float>(da);
    if (dw) {
      const float a = alpha[f];
      const float c = static_cast<float>(da / static_cast<double>(size));
      for (int64_t i = 0; i < size; ++i) dw[f * size + i] = a * gf[i] + Sgn(w[f * size + i]) * c;
    }
  }
}

}  // namespace binmx

#endif  // BINMX_FLOAT_QUANTIZE_H_

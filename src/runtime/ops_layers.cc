/*
 * binmx runtime: builders of the layers with weights.
 *
 * Convolution / FullyConnected (float): out = conv(x, W) + b on the runtime's float kernels
 *   (float_ops.h). A Convolution takes the nodes that are, one after the other, the only
 *   reader of its output: a BatchNorm (inference; W_f * s_f, b_f * s_f + t_f), a relu
 *   Activation and a max Pooling, so the stem conv + BN + relu + max-pool is one pass.
 * QConvolution / QFullyConnected (binmx's operators, converted or not; docs/design.md):
 *   act_bit = weight_bit = 1: out = alpha_f * dot(sgn a, sgn W_f) + bias_f on the core's direct
 *   binary convolution / xnor GEMM (bconv.h), integer-exact. Packed weights are used as stored
 *   (bits past the channel count cleared); float weights are packed here once. alpha_f is the
 *   stored `alpha` (packed + scaling_factor) or mean |W_f| (float + scaling_factor). With
 *   input_affine the activation is sgn(x * in_scale_c + in_shift_c); out_packed / in_packed
 *   hand sign words from one binary layer to the next; residual adds the last input in the
 *   epilogue. All as the MXNet operators compute them.
 *   act_bit 2..8 with weight_bit 1..8 (depth <= 65536): the core's integer k-bit kernels
 *   (kbit.h: bit-serial or int8), weights quantised and laid out once here; exact integer
 *   levels, out = float(D * alpha_f / (A * B)) + bias_f (the operators run the same kernels); a
 *   BatchNorm (or QChannelAffine) behind goes into alpha and bias, a relu and a max Pooling
 *   behind into the core's KbitConv2dReluPool (the 8-bit stem is one step).
 *   Converted k-bit layers (binarized_weights_only=True, weight_bit 1..8, not act_bit =
 *   weight_bit = 1) store the levels packed (kbit_pack.h) and alpha_f: the levels go to the
 *   kernels as stored, or, on the float path below, become Qw = 2 lw / (2^weight_bit - 1) - 1.
 *   Other bit widths (the "correct if slower" path): a = Qa(x) (sgn, or DoReFa
 *   round((2^k-1) clip(x, 0, 1)) / (2^k-1), or x for 32), Wq = DoReFa weight quantiser over the
 *   whole weight tensor, then a float convolution / dense layer with alpha_f * Wq_f and the
 *   bias; pad_value +-1 pads the quantised input with that constant.
 */
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "bconv.h"
#include "conv.h"
#include "engine.h"
#include "float_ops.h"
#include "kbit.h"
#include "kbit_pack.h"
#include "parallel.h"
#include "quantize.h"
#include "rt_common.h"

namespace binmx {
namespace rt {

namespace {

constexpr int64_t kMaxDim = int64_t{1} << 24;

void Finish(Planner& pl, int node, std::unique_ptr<Step> step, std::vector<int> inputs, int output,
            const std::string& name) {
  const Node& n = pl.graph().nodes[node];
  step->name = name.empty() ? n.name : name;
  step->op = n.op;
  step->inputs = std::move(inputs);
  step->output = output;
  pl.SetOutput(node, output);
  pl.AddStep(std::move(step));
}

// The quantisers are the operators' own (src/float/quantize.h, header-only).
std::vector<float> QuantizeWeights(const std::vector<float>& w, int bits) {
  std::vector<float> out(w.size());
  QuantizeWeight(w.data(), static_cast<int64_t>(w.size()), bits, out.data());
  return out;
}

std::vector<float> MeanAbsRows(const std::vector<float>& w, int64_t rows, int64_t size) {
  std::vector<float> alpha(rows);
  binmx::MeanAbsRows(w.data(), rows, size, alpha.data());
  return alpha;
}

// The float path's weights: Qw(W) (over the whole tensor), each of `rows` rows of `size`
// multiplied by alpha_r = mean |W_r| with scaling_factor.
std::vector<float> AlphaQuantizedWeights(const std::vector<float>& w, int64_t rows, int64_t size,
                                         int bits, bool scaling) {
  std::vector<float> wq = QuantizeWeights(w, bits);
  if (scaling) {
    const std::vector<float> alpha = MeanAbsRows(w, rows, size);
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < size; ++j) wq[i * size + j] *= alpha[i];
    }
  }
  return wq;
}

// Activation quantiser of one value (QuantizeAct of one element), act_bit < 32.
inline float QuantAct(float x, int bits) {
  float out;
  QuantizeAct(&x, 1, bits, &out);
  return out;
}

// Packed weights as stored (int64 words), bits past `valid_bits` in each row's last word cleared.
std::vector<uint64_t> PackedWords(const Tensor& t, int64_t rows, int64_t words,
                                  int64_t valid_bits) {
  const int64_t* src = Int64Data(t);
  std::vector<uint64_t> out(static_cast<size_t>(rows * words));
  std::memcpy(out.data(), src, out.size() * sizeof(uint64_t));
  const int64_t tail = valid_bits % 64;
  if (tail != 0) {
    const uint64_t mask = (uint64_t{1} << tail) - 1;
    for (int64_t r = 0; r < rows; ++r) out[r * words + words - 1] &= mask;
  }
  return out;
}

// The weight levels lw of a packed k-bit weight (kbit_pack.h): `n` levels at weight_bit bits in
// one int64 stream of KbitPackedWords(n, weight_bit) words; a load error naming the node and
// the parameter for another dtype or shape, or a set bit past the last level.
std::vector<uint8_t> PackedLevels(Planner& pl, int node, AttrReader& r, int64_t n, int weight_bit) {
  const Tensor& wt = pl.Param(node, 1, "weight");
  const std::vector<int64_t> ws = {KbitPackedWords(n, weight_bit)};
  if (wt.shape != ws || wt.dtype != DType::kInt64) {
    r.FailNode("parameter `weight` ('" + wt.name + "') is " + DTypeName(wt.dtype) + " " +
               ShapeText(wt.shape) + ", expected packed int64 words " + ShapeText(ws) + " of " +
               std::to_string(n) + " weight levels at weight_bit=" + std::to_string(weight_bit) +
               " (binarized_weights_only=True)");
  }
  std::vector<uint8_t> levels(static_cast<size_t>(n));
  try {
    UnpackKbitLevels(reinterpret_cast<const uint64_t*>(Int64Data(wt)), ws[0], n, weight_bit,
                     levels.data());
  } catch (const std::invalid_argument& e) {
    r.FailNode("parameter `weight` ('" + wt.name + "'): " + e.what());
  }
  return levels;
}

// The float path's weights from packed levels: Qw = LevelsToWeights (QuantizeWeight's values
// of the float weights they came from), row r times the stored alpha_r when there is one.
std::vector<float> AlphaLevelWeights(const std::vector<uint8_t>& levels, int64_t rows, int64_t size,
                                     int bits, const std::vector<float>& alpha) {
  std::vector<float> wq(levels.size());
  LevelsToWeights(levels.data(), static_cast<int64_t>(levels.size()), bits, wq.data());
  if (!alpha.empty()) {
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < size; ++j) wq[i * size + j] *= alpha[i];
    }
  }
  return wq;
}

// ---- float Convolution (+ BatchNorm + relu + max-pool) ------------------------------------

class FloatConvStep : public Step {
 public:
  explicit FloatConvStep(std::unique_ptr<FloatConv> conv, int threads)
      : conv_(std::move(conv)), threads_(threads) {}
  void Run(const RunCtx& ctx) const override {
    conv_->Run(ctx.F(inputs[0]), ctx.MutF(output), ctx.scratch, ctx.threads);
  }
  size_t ScratchBytes() const override { return conv_->ScratchBytes(threads_); }

 private:
  std::unique_ptr<FloatConv> conv_;
  int threads_;
};

struct ConvAttrs {
  std::vector<int64_t> kernel, stride, dilate, pad;
  int64_t num_filter = 0, num_group = 1;
  bool no_bias = false;
};

ConvAttrs ReadConvAttrs(AttrReader& r) {
  ConvAttrs a;
  a.kernel = r.Tuple("kernel", 2, {}, 1, kMaxDim, true);
  a.stride = r.Tuple("stride", 2, {1, 1}, 1, kMaxDim);
  a.dilate = r.Tuple("dilate", 2, {1, 1}, 1, kMaxDim);
  a.pad = r.Tuple("pad", 2, {0, 0}, 0, kMaxDim);
  a.num_filter = r.Int("num_filter", 0, 1, kMaxDim, true);
  a.num_group = r.Int("num_group", 1, 1, kMaxDim);
  a.no_bias = r.Bool("no_bias", false);
  const std::string layout = r.Str("layout", "None");
  if (layout != "None" && layout != "NCHW") {
    r.Fail("layout", "'" + layout + "' is not supported (NCHW only)");
  }
  for (const char* k : {"workspace", "cudnn_tune", "cudnn_off"}) r.Ignore(k);
  if (a.num_filter % a.num_group != 0) {
    r.Fail("num_filter", std::to_string(a.num_filter) +
                             " is not divisible by num_group=" + std::to_string(a.num_group));
  }
  return a;
}

Conv2dParams MakeParams(const ConvAttrs& a, int64_t n, int64_t c, int64_t h, int64_t w,
                        AttrReader& r) {
  Conv2dParams p;
  p.batch = n;
  p.channels = c;
  p.in_h = h;
  p.in_w = w;
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
  if (c % a.num_group != 0) {
    r.FailNode("the input channels (" + std::to_string(c) +
               ") are not divisible by num_group=" + std::to_string(a.num_group));
  }
  try {
    ValidateConv2dParams(p);
  } catch (const std::exception& e) {
    r.FailNode("input (" + std::to_string(n) + ", " + std::to_string(c) + ", " + std::to_string(h) +
               ", " + std::to_string(w) + "): " + e.what());
  }
  return p;
}

FloatConvGeometry Geometry(const Conv2dParams& p) {
  FloatConvGeometry g;
  g.batch = p.batch;
  g.channels = p.channels;
  g.in_h = p.in_h;
  g.in_w = p.in_w;
  g.filters = p.num_filter;
  g.kernel_h = p.kernel_h;
  g.kernel_w = p.kernel_w;
  g.stride_h = p.stride_h;
  g.stride_w = p.stride_w;
  g.pad_h = p.pad_h;
  g.pad_w = p.pad_w;
  g.dilate_h = p.dilate_h;
  g.dilate_w = p.dilate_w;
  g.groups = p.groups;
  return g;
}

// Absorbs, after node `*last` whose sole reader is `*reader`, a relu Activation and then a max
// Pooling (each the only reader of the one before) into the layer with geometry p: sets relu,
// pool / has_pool, extends name, moves *last to the last absorbed node.
void AbsorbReluMaxPool(Planner& pl, const Conv2dParams& p, int* last, int* reader,
                       std::string* name, bool* relu, MaxPoolSpec* pool, bool* has_pool) {
  *relu = false;
  *has_pool = false;
  if (*reader >= 0 && IsReluNode(pl.graph().nodes[*reader])) {
    *relu = true;
    *name += "+" + pl.graph().nodes[*reader].name;
    pl.Absorb(*reader, -1);
    *last = *reader;
    *reader = pl.SoleReader(*last);
  }
  if (*reader >= 0 && pl.graph().nodes[*reader].op == "Pooling") {
    const PoolParams pp = ParsePooling(pl.graph().nodes[*reader]);
    if (pp.type == "max" && !pp.global) {
      pool->kernel_h = pp.kernel[0];
      pool->kernel_w = pp.kernel[1];
      pool->stride_h = pp.stride[0];
      pool->stride_w = pp.stride[1];
      pool->pad_h = pp.pad[0];
      pool->pad_w = pp.pad[1];
      pool->full_convention = pp.full;
      const int64_t oh = PoolOut(p.OutH(), pool->kernel_h, pool->stride_h, pool->pad_h, pp.full);
      const int64_t ow = PoolOut(p.OutW(), pool->kernel_w, pool->stride_w, pool->pad_w, pp.full);
      if (oh > 0 && ow > 0) {
        *has_pool = true;
        *name += "+" + pl.graph().nodes[*reader].name;
        pl.Absorb(*reader, -1);
        *last = *reader;
      }
    }
  }
}

void BuildConvolution(Planner& pl, int node) {
  const Node& n = pl.graph().nodes[node];
  AttrReader r(n);
  const ConvAttrs a = ReadConvAttrs(r);
  r.Finish();
  pl.ExpectInputs(node, a.no_bias ? 2 : 3, a.no_bias ? "data, weight" : "data, weight, bias");
  const int in = pl.FloatInput(node, 0, "data");
  const std::vector<int64_t> s = pl.value(in).shape;
  if (s.size() != 4) r.FailNode("expected a rank-4 NCHW input, got " + ShapeText(s));
  const Conv2dParams p = MakeParams(a, s[0], s[1], s[2], s[3], r);
  const int64_t f = p.num_filter, fsize = p.FilterSize();
  std::vector<float> w =
      pl.ParamFloat(node, 1, "weight", {f, p.GroupChannels(), p.kernel_h, p.kernel_w});
  std::vector<float> bias =
      a.no_bias ? std::vector<float>(f, 0.0f) : pl.ParamFloat(node, 2, "bias", {f});
  std::string name = n.name;
  // Absorb BatchNorm -> relu -> max-pool, each the only reader of the one before.
  int last = node;
  int reader = pl.SoleReader(last);
  if (reader >= 0 && pl.graph().nodes[reader].op == "BatchNorm") {
    const Node& bn = pl.graph().nodes[reader];
    auto ax = bn.attrs.find("axis");
    if (ax == bn.attrs.end() || ax->second == "1") {
      std::vector<float> scale, shift;
      BatchNormAffine(pl, reader, f, &scale, &shift, nullptr);
      for (int64_t k = 0; k < f; ++k) {
        for (int64_t i = 0; i < fsize; ++i) w[k * fsize + i] *= scale[k];
        bias[k] = bias[k] * scale[k] + shift[k];
      }
      name += "+" + bn.name;
      pl.Absorb(reader, -1);
      last = reader;
      reader = pl.SoleReader(last);
    }
  }
  bool relu = false, has_pool = false;
  MaxPoolSpec pool;
  AbsorbReluMaxPool(pl, p, &last, &reader, &name, &relu, &pool, &has_pool);
  auto conv = std::make_unique<FloatConv>(Geometry(p), w.data(), bias.data(), relu,
                                          has_pool ? &pool : nullptr, pl.isa());
  const int out = pl.NewValue(conv->OutputShape());
  auto step = std::make_unique<FloatConvStep>(std::move(conv), pl.threads());
  step->float_macs = p.batch * p.OutH() * p.OutW() * f * fsize;
  Finish(pl, node, std::move(step), {in}, out, name);
  // The absorbed nodes' outputs: only the last one is read by anybody.
  pl.SetOutput(last, out);
}

// ---- float FullyConnected -------------------------------------------------------------------

class FloatDenseStep : public Step {
 public:
  FloatDenseStep(std::unique_ptr<FloatDense> dense, int64_t rows, int threads)
      : dense_(std::move(dense)), rows_(rows), threads_(threads) {}
  void Run(const RunCtx& ctx) const override {
    dense_->Run(ctx.F(inputs[0]), rows_, ctx.MutF(output), ctx.scratch, ctx.threads);
  }
  size_t ScratchBytes() const override { return dense_->ScratchBytes(rows_, threads_); }

 private:
  std::unique_ptr<FloatDense> dense_;
  int64_t rows_;
  int threads_;
};

// (rows, depth) view of a dense layer's input, and the output shape.
void DenseShapes(AttrReader& r, const std::vector<int64_t>& s, bool flatten, int64_t hidden,
                 int64_t* rows, int64_t* depth, std::vector<int64_t>* out_shape) {
  if (s.empty()) r.FailNode("a dense layer needs an input of rank >= 1");
  if (flatten) {
    *rows = s[0];
    *depth = 1;
    for (size_t d = 1; d < s.size(); ++d) *depth *= s[d];
    *out_shape = {s[0], hidden};
  } else {
    *depth = s.back();
    *rows = 1;
    for (size_t d = 0; d + 1 < s.size(); ++d) *rows *= s[d];
    *out_shape = s;
    out_shape->back() = hidden;
  }
  if (*depth <= 0) r.FailNode("input " + ShapeText(s) + " has no features");
}

void BuildFullyConnected(Planner& pl, int node) {
  const Node& n = pl.graph().nodes[node];
  AttrReader r(n);
  const int64_t hidden = r.Int("num_hidden", 0, 1, int64_t{1} << 30, true);
  const bool no_bias = r.Bool("no_bias", false);
  const bool flatten = r.Bool("flatten", true);
  r.Finish();
  pl.ExpectInputs(node, no_bias ? 2 : 3, no_bias ? "data, weight" : "data, weight, bias");
  const int in = pl.FloatInput(node, 0, "data");
  int64_t rows = 0, depth = 0;
  std::vector<int64_t> oshape;
  DenseShapes(r, pl.value(in).shape, flatten, hidden, &rows, &depth, &oshape);
  const std::vector<float> w = pl.ParamFloat(node, 1, "weight", {hidden, depth});
  const std::vector<float> bias =
      no_bias ? std::vector<float>() : pl.ParamFloat(node, 2, "bias", {hidden});
  bool relu = false;
  std::string name = n.name;
  const int reader = pl.SoleReader(node);
  if (reader >= 0 && IsReluNode(pl.graph().nodes[reader])) {
    relu = true;
    name += "+" + pl.graph().nodes[reader].name;
  }
  auto dense = std::make_unique<FloatDense>(depth, hidden, w.data(),
                                            no_bias ? nullptr : bias.data(), relu, pl.isa());
  const int out = pl.NewValue(oshape);
  auto step = std::make_unique<FloatDenseStep>(std::move(dense), rows, pl.threads());
  step->float_macs = rows * depth * hidden;
  Finish(pl, node, std::move(step), {in}, out, name);
  if (relu) pl.Absorb(reader, out);
}

// ---- QConvolution -------------------------------------------------------------------------

struct QAttrs {
  int act_bit = 1, weight_bit = 1, pad_value = 0;
  bool packed = false, scaling = false, input_affine = false, residual = false;
  bool in_packed = false, out_packed = false;
  int64_t in_channels = 0;
  bool binary() const { return act_bit == 1 && weight_bit == 1; }
  // binarized_weights_only on any other layer: the weight is packed k-bit levels (kbit_pack.h).
  bool packed_levels() const { return packed && !binary(); }
};

QAttrs ReadQAttrs(AttrReader& r, bool conv) {
  QAttrs q;
  q.act_bit = static_cast<int>(r.Int("act_bit", 1, 1, 32));
  q.weight_bit = static_cast<int>(r.Int("weight_bit", q.act_bit, 1, 32));
  q.packed = r.Bool("binarized_weights_only", false);
  q.scaling = r.Bool("scaling_factor", false);
  q.input_affine = r.Bool("input_affine", false);
  r.Float("grad_cancel", 1.0);
  if (conv) {
    q.pad_value = static_cast<int>(r.Int("pad_value", 0, -1, 1));
    q.residual = r.Bool("residual", false);
    q.in_packed = r.Bool("in_packed", false);
    q.out_packed = r.Bool("out_packed", false);
    q.in_channels = r.Int("in_channels", 0, 1, kMaxDim, q.in_packed);
  }
  if (q.packed && q.weight_bit > 8) {
    r.Fail("binarized_weights_only",
           "True needs weight_bit <= 8 (1-bit sign words, or k-bit weight levels; wider weights "
           "stay float), got weight_bit=" +
               std::to_string(q.weight_bit));
  }
  if ((q.in_packed || q.out_packed) && (!q.packed || !q.binary())) {
    r.FailNode(
        "in_packed / out_packed need binarized_weights_only=True, act_bit=1 and weight_bit=1");
  }
  if (q.in_packed && q.input_affine) r.FailNode("in_packed=True takes no input_affine");
  if (q.out_packed && q.residual) r.FailNode("out_packed=True cannot add a residual");
  if (q.input_affine && q.act_bit != 1) r.Fail("input_affine", "True needs act_bit=1");
  if (q.residual && !q.binary()) r.Fail("residual", "True needs act_bit=1 and weight_bit=1");
  return q;
}

class BinaryConvStep : public Step {
 public:
  void Run(const RunCtx& ctx) const override {
    BinaryConvArgs args;
    if (in_packed) {
      args.x_bits = ctx.B(inputs[0]);
    } else {
      args.x = ctx.F(inputs[0]);
    }
    args.w_packed = weights.data();
    args.tables = &tables;
    args.alpha = alpha.empty() ? nullptr : alpha.data();
    args.bias = bias.empty() ? nullptr : bias.data();
    if (!in_scale.empty()) {
      args.in_scale = in_scale.data();
      args.in_shift = in_shift.data();
    }
    if (residual) args.residual = ctx.F(inputs[1]);
    if (out_packed) {
      args.out_bits = ctx.MutB(output);
      args.out_scale = out_scale.data();
      args.out_shift = out_shift.data();
    } else {
      args.out = ctx.MutF(output);
    }
    BinaryConv2d(args, params, GemmConfig{isa, ctx.threads});
  }

  Conv2dParams params;
  Isa isa = Isa::kScalar;
  bool in_packed = false, out_packed = false, residual = false;
  std::vector<uint64_t> weights;
  std::vector<float> alpha, bias, in_scale, in_shift, out_scale, out_shift;
  BinaryConvTables tables;  // PrepareBinaryConv(weights, params) at load
};

// k-bit convolution / dense: the activation quantised (and padded) into scratch, then float.
class KbitConvStep : public Step {
 public:
  void Run(const RunCtx& ctx) const override {
    const float* x = ctx.F(inputs[0]);
    float* a = reinterpret_cast<float*>(ctx.scratch);
    const int64_t c = src.channels, h = src.in_h, w = src.in_w;
    const int64_t ph = pad_outside ? src.pad_h : 0, pw = pad_outside ? src.pad_w : 0;
    const int64_t hp = h + 2 * ph, wp = w + 2 * pw;
    const float pad = static_cast<float>(pad_value);
    const int64_t planes = src.batch * c;
    ParallelFor(planes, ctx.threads, [&](int64_t b, int64_t e) {
      for (int64_t pidx = b; pidx < e; ++pidx) {
        const int64_t ch = pidx % c;
        const float* xp = x + pidx * h * w;
        float* ap = a + pidx * hp * wp;
        for (int64_t yy = 0; yy < hp; ++yy) {
          for (int64_t xx = 0; xx < wp; ++xx) {
            const int64_t iy = yy - ph, ix = xx - pw;
            float v;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) {
              v = pad;
            } else {
              v = xp[iy * w + ix];
              if (!in_scale.empty()) {
                const float prod = v * in_scale[ch];
                v = prod + in_shift[ch] < 0.0f ? -1.0f : 1.0f;
              } else if (act_bit < 32) {
                v = QuantAct(v, act_bit);
              }
            }
            ap[yy * wp + xx] = v;
          }
        }
      }
    });
    char* conv_scratch = ctx.scratch + quant_bytes;
    conv->Run(a, ctx.MutF(output), conv_scratch, ctx.threads);
  }
  size_t ScratchBytes() const override { return quant_bytes + conv->ScratchBytes(threads); }

  Conv2dParams src;
  bool pad_outside = false;
  int act_bit = 32, pad_value = 0, threads = 1;
  std::vector<float> in_scale, in_shift;
  size_t quant_bytes = 0;
  std::unique_ptr<FloatConv> conv;
};

size_t Align64(size_t n) { return (n + 63) / 64 * 64; }

// k-bit convolution / dense on the integer kernels of kbit.h (bit-serial or int8): the weights
// quantised and laid out once at load, the activation levels made inside the call; an absorbed
// relu and max-pool run inside the core's call (on the integers, for the direct int8 kernel).
class KbitIntConvStep : public Step {
 public:
  void Run(const RunCtx& ctx) const override {
    KbitArgs args;
    args.x = ctx.F(inputs[0]);
    args.alpha = alpha.empty() ? nullptr : alpha.data();
    args.bias = bias.empty() ? nullptr : bias.data();
    args.out = ctx.MutF(output);
    KbitConv2dReluPool(args, weights, params, relu, has_pool ? &pool : nullptr,
                       GemmConfig{weights.isa, ctx.threads});
  }
  Conv2dParams params;
  KbitWeights weights;
  std::vector<float> alpha, bias;
  bool relu = false, has_pool = false;  // absorbed relu Activation / max Pooling
  KbitMaxPool pool;
};

class KbitIntDenseStep : public Step {
 public:
  void Run(const RunCtx& ctx) const override {
    KbitArgs args;
    args.x = ctx.F(inputs[0]);
    args.alpha = alpha.empty() ? nullptr : alpha.data();
    args.bias = bias.empty() ? nullptr : bias.data();
    args.out = ctx.MutF(output);
    KbitDense(args, weights, rows, GemmConfig{weights.isa, ctx.threads});
  }
  int64_t rows = 0;
  KbitWeights weights;
  std::vector<float> alpha, bias;
};

void BuildQConvolution(Planner& pl, int node) {
  const Node& n = pl.graph().nodes[node];
  AttrReader r(n);
  const ConvAttrs a = ReadConvAttrs(r);
  const QAttrs q = ReadQAttrs(r, true);
  r.Finish();
  const int num_params = 2 + (a.no_bias ? 0 : 1) + (q.packed && q.scaling ? 1 : 0);
  const int num_inputs =
      num_params + (q.input_affine ? 2 : 0) + (q.out_packed ? 2 : 0) + (q.residual ? 1 : 0);
  pl.ExpectInputs(node, num_inputs,
                  "data, weight" + std::string(a.no_bias ? "" : ", bias") +
                      (q.packed && q.scaling ? ", alpha" : "") +
                      (q.input_affine ? ", in_scale, in_shift" : "") +
                      (q.out_packed ? ", out_scale, out_shift" : "") +
                      (q.residual ? ", residual" : ""));
  // The data input: floats (N, C, H, W) or packed words (N, H, W, ceil(C/64)); or the input of
  // a BatchNorm this layer takes as its input affine (ops_basic.cc, BuildBatchNorm).
  const Planner::PendingAffine* pending = pl.pending_affine(node);
  Operand d;
  if (pending != nullptr) {
    d.value = pending->value;
  } else {
    d = pl.Input(node, 0);
  }
  if (d.param != nullptr || d.value < 0) {
    r.FailNode("input `data` ('" + d.name + "') is not a computed array");
  }
  const Value& dv = pl.value(d.value);
  Conv2dParams p;
  if (q.in_packed) {
    if (dv.kind != ValueKind::kBits || dv.shape.size() != 4 || dv.bit_channels != q.in_channels ||
        dv.shape[3] != WordsFor(q.in_channels)) {
      r.FailNode("in_packed=True needs the packed output of a binary convolution with " +
                 std::to_string(q.in_channels) + " filters (out_packed=True), got " +
                 (dv.kind == ValueKind::kBits ? "packed words of shape " : "floats of shape ") +
                 ShapeText(dv.shape));
    }
    p = MakeParams(a, dv.shape[0], q.in_channels, dv.shape[1], dv.shape[2], r);
  } else {
    if (dv.kind != ValueKind::kFloat) {
      r.FailNode("input `data` holds packed sign bits but in_packed is not set");
    }
    if (dv.shape.size() != 4)
      r.FailNode("expected a rank-4 NCHW input, got " + ShapeText(dv.shape));
    p = MakeParams(a, dv.shape[0], dv.shape[1], dv.shape[2], dv.shape[3], r);
  }
  p.pad_value = q.pad_value;
  const int64_t f = p.num_filter, fsize = p.FilterSize();
  const int64_t oh = p.OutH(), ow = p.OutW();
  int k = 2;
  std::vector<float> bias;
  if (!a.no_bias) bias = pl.ParamFloat(node, k++, "bias", {f});
  std::vector<float> stored_alpha;
  if (q.packed && q.scaling) stored_alpha = pl.ParamFloat(node, k++, "alpha", {f});
  std::vector<float> in_scale, in_shift, out_scale, out_shift;
  if (q.input_affine) {
    in_scale = pl.ParamFloat(node, k++, "in_scale", {p.channels});
    in_shift = pl.ParamFloat(node, k++, "in_shift", {p.channels});
  } else if (pending != nullptr) {
    in_scale = pending->scale;
    in_shift = pending->shift;
  }
  if (q.out_packed) {
    out_scale = pl.ParamFloat(node, k++, "out_scale", {f});
    out_shift = pl.ParamFloat(node, k++, "out_shift", {f});
  }
  int residual = -1;
  if (q.residual) {
    residual = pl.FloatInput(node, k++, "residual");
    if (pl.value(residual).shape != std::vector<int64_t>{p.batch, f, oh, ow}) {
      r.FailNode("input `residual` has shape " + ShapeText(pl.value(residual).shape) +
                 ", expected the output shape " + ShapeText({p.batch, f, oh, ow}));
    }
  }
  if (q.binary()) {
    auto step = std::make_unique<BinaryConvStep>();
    step->params = p;
    step->isa = pl.isa();
    step->in_packed = q.in_packed;
    step->out_packed = q.out_packed;
    step->residual = q.residual;
    if (q.packed) {
      const Tensor& wt = pl.Param(node, 1, "weight");
      const std::vector<int64_t> ws = {f, p.kernel_h, p.kernel_w, p.TapWords()};
      if (wt.shape != ws || wt.dtype != DType::kInt64) {
        r.FailNode("parameter `weight` ('" + wt.name + "') is " + DTypeName(wt.dtype) + " " +
                   ShapeText(wt.shape) + ", expected packed int64 words " + ShapeText(ws) +
                   " (binarized_weights_only=True)");
      }
      step->weights = PackedWords(wt, f * p.kernel_h * p.kernel_w, p.TapWords(), p.GroupChannels());
      step->alpha = stored_alpha;
    } else {
      const std::vector<float> w =
          pl.ParamFloat(node, 1, "weight", {f, p.GroupChannels(), p.kernel_h, p.kernel_w});
      step->weights.resize(static_cast<size_t>(PackedConvWeightWords(p)));
      PackConvWeightsFast(w.data(), p, step->weights.data());
      if (q.scaling) step->alpha = MeanAbsRows(w, f, fsize);
    }
    step->bias = bias;
    step->in_scale = in_scale;
    step->in_shift = in_shift;
    step->out_scale = out_scale;
    step->out_shift = out_shift;
    step->binary_macs = p.batch * oh * ow * f * fsize;
    // Once: the weights' popcounts, the border correction and the tap offsets (the weights
    // vector is final here; the tables point into it).
    PrepareBinaryConv(step->weights.data(), p, step->isa, &step->tables);
    std::vector<int> ins = {d.value};
    if (residual >= 0) ins.push_back(residual);
    const int out = q.out_packed ? pl.NewValue({p.batch, oh, ow, WordsFor(f)}, ValueKind::kBits, f)
                                 : pl.NewValue({p.batch, f, oh, ow});
    Finish(pl, node, std::move(step), ins, out,
           pending != nullptr ? n.name + "+" + pending->names : "");
    return;
  }
  // k-bit path: packed levels (kbit_pack.h) go to the kernels as they are; float weights are
  // quantised here once.
  std::vector<uint8_t> levels;
  std::vector<float> w;
  if (q.packed_levels()) {
    levels = PackedLevels(pl, node, r, f * fsize, q.weight_bit);
  } else {
    w = pl.ParamFloat(node, 1, "weight", {f, p.GroupChannels(), p.kernel_h, p.kernel_w});
  }
  if (q.act_bit >= 2 && in_scale.empty() &&
      KbitPathFor(q.act_bit, q.weight_bit, fsize) != KbitPath::kNone) {
    auto step = std::make_unique<KbitIntConvStep>();
    step->params = p;
    if (q.packed_levels()) {
      PrepareKbitConvLevels(levels.data(), p, q.act_bit, q.weight_bit, pl.isa(), &step->weights);
      step->alpha = stored_alpha;
    } else {
      PrepareKbitConv(w.data(), p, q.act_bit, q.weight_bit, pl.isa(), &step->weights);
      if (q.scaling) step->alpha = MeanAbsRows(w, f, fsize);
    }
    step->bias = bias;
    step->float_macs = p.batch * oh * ow * f * fsize;
    // A BatchNorm, a relu and a max-pool right behind (an 8-bit stem) are fused as for a float
    // conv: the BatchNorm's scale s_f and shift t_f become alpha_f s_f and bias_f s_f + t_f (one
    // rounding less than the separate layers, as a folded float conv).
    std::string name = n.name;
    int last = node, reader = pl.SoleReader(node);
    if (reader >= 0 && pl.graph().nodes[reader].op == "BatchNorm") {
      const Node& bn = pl.graph().nodes[reader];
      auto ax = bn.attrs.find("axis");
      if (ax == bn.attrs.end() || ax->second == "1") {
        std::vector<float> scale, shift;
        BatchNormAffine(pl, reader, f, &scale, &shift, nullptr);
        if (step->alpha.empty()) step->alpha.assign(static_cast<size_t>(f), 1.0f);
        if (step->bias.empty()) step->bias.assign(static_cast<size_t>(f), 0.0f);
        for (int64_t k = 0; k < f; ++k) {
          step->alpha[k] *= scale[k];
          step->bias[k] = step->bias[k] * scale[k] + shift[k];
        }
        name += "+" + bn.name;
        pl.Absorb(reader, -1);
        last = reader;
        reader = pl.SoleReader(last);
      }
    }
    // binmx.fold's form of that BatchNorm (+ relu): a QChannelAffine with stored scale / shift.
    bool affine_relu = false;
    if (reader >= 0 && pl.graph().nodes[reader].op == "QChannelAffine" &&
        pl.num_inputs(reader) == 3 && pl.Input(reader, 1).param != nullptr &&
        pl.Input(reader, 2).param != nullptr) {
      AttrReader ar(pl.graph().nodes[reader]);
      affine_relu = ar.Bool("relu", false);
      ar.Finish();
      const std::vector<float> scale = pl.ParamFloat(reader, 1, "scale", {f});
      const std::vector<float> shift = pl.ParamFloat(reader, 2, "shift", {f});
      if (step->alpha.empty()) step->alpha.assign(static_cast<size_t>(f), 1.0f);
      if (step->bias.empty()) step->bias.assign(static_cast<size_t>(f), 0.0f);
      for (int64_t k = 0; k < f; ++k) {
        step->alpha[k] *= scale[k];
        step->bias[k] = step->bias[k] * scale[k] + shift[k];
      }
      name += "+" + pl.graph().nodes[reader].name;
      pl.Absorb(reader, -1);
      last = reader;
      reader = pl.SoleReader(last);
    }
    MaxPoolSpec ps{};
    AbsorbReluMaxPool(pl, p, &last, &reader, &name, &step->relu, &ps, &step->has_pool);
    step->relu = step->relu || affine_relu;
    std::vector<int64_t> oshape = {p.batch, f, oh, ow};
    if (step->has_pool) {
      KbitMaxPool& kp = step->pool;
      kp.kernel_h = ps.kernel_h;
      kp.kernel_w = ps.kernel_w;
      kp.stride_h = ps.stride_h;
      kp.stride_w = ps.stride_w;
      kp.pad_h = ps.pad_h;
      kp.pad_w = ps.pad_w;
      kp.full_convention = ps.full_convention;
      oshape = {p.batch, f, PoolOut(oh, ps.kernel_h, ps.stride_h, ps.pad_h, ps.full_convention),
                PoolOut(ow, ps.kernel_w, ps.stride_w, ps.pad_w, ps.full_convention)};
    }
    const int out = pl.NewValue(oshape);
    Finish(pl, node, std::move(step), {d.value}, out, name);
    pl.SetOutput(last, out);
    return;
  }
  const std::vector<float> wq =
      q.packed_levels() ? AlphaLevelWeights(levels, f, fsize, q.weight_bit, stored_alpha)
                        : AlphaQuantizedWeights(w, f, fsize, q.weight_bit, q.scaling);
  auto step = std::make_unique<KbitConvStep>();
  step->src = p;
  step->act_bit = q.act_bit;
  step->pad_value = q.pad_value;
  step->pad_outside = q.pad_value != 0 && (p.pad_h > 0 || p.pad_w > 0);
  step->in_scale = in_scale;
  step->in_shift = in_shift;
  step->threads = pl.threads();
  Conv2dParams cp = p;
  if (step->pad_outside) {
    cp.in_h += 2 * p.pad_h;
    cp.in_w += 2 * p.pad_w;
    cp.pad_h = cp.pad_w = 0;
  }
  step->quant_bytes =
      Align64(static_cast<size_t>(cp.batch * cp.channels * cp.in_h * cp.in_w) * sizeof(float));
  step->conv = std::make_unique<FloatConv>(
      Geometry(cp), wq.data(), bias.empty() ? nullptr : bias.data(), false, nullptr, pl.isa());
  step->float_macs = p.batch * oh * ow * f * fsize;
  const int out = pl.NewValue({p.batch, f, oh, ow});
  Finish(pl, node, std::move(step), {d.value}, out, "");
}

// ---- QFullyConnected ----------------------------------------------------------------------

class BinaryDenseStep : public Step {
 public:
  void Run(const RunCtx& ctx) const override {
    BinaryDenseArgs args;
    args.x = ctx.F(inputs[0]);
    args.w_packed = weights.data();
    args.alpha = alpha.empty() ? nullptr : alpha.data();
    args.bias = bias.empty() ? nullptr : bias.data();
    if (!in_scale.empty()) {
      args.in_scale = in_scale.data();
      args.in_shift = in_shift.data();
    }
    args.out = ctx.MutF(output);
    BinaryDense(args, rows, depth, hidden, GemmConfig{isa, ctx.threads});
  }
  int64_t rows = 0, depth = 0, hidden = 0;
  Isa isa = Isa::kScalar;
  std::vector<uint64_t> weights;
  std::vector<float> alpha, bias, in_scale, in_shift;
};

class KbitDenseStep : public Step {
 public:
  void Run(const RunCtx& ctx) const override {
    const float* x = ctx.F(inputs[0]);
    float* a = reinterpret_cast<float*>(ctx.scratch);
    const int64_t n = rows * depth;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t d = i % depth;
      if (!in_scale.empty()) {
        const float prod = x[i] * in_scale[d];
        a[i] = prod + in_shift[d] < 0.0f ? -1.0f : 1.0f;
      } else {
        a[i] = act_bit < 32 ? QuantAct(x[i], act_bit) : x[i];
      }
    }
    dense->Run(a, rows, ctx.MutF(output), ctx.scratch + quant_bytes, ctx.threads);
  }
  size_t ScratchBytes() const override { return quant_bytes + dense->ScratchBytes(rows, threads); }
  int64_t rows = 0, depth = 0;
  int act_bit = 32, threads = 1;
  size_t quant_bytes = 0;
  std::vector<float> in_scale, in_shift;
  std::unique_ptr<FloatDense> dense;
};

void BuildQFullyConnected(Planner& pl, int node) {
  const Node& n = pl.graph().nodes[node];
  AttrReader r(n);
  const int64_t hidden = r.Int("num_hidden", 0, 1, int64_t{1} << 30, true);
  const bool no_bias = r.Bool("no_bias", false);
  const bool flatten = r.Bool("flatten", true);
  const QAttrs q = ReadQAttrs(r, false);
  r.Finish();
  const int num_params = 2 + (no_bias ? 0 : 1) + (q.packed && q.scaling ? 1 : 0);
  pl.ExpectInputs(node, num_params + (q.input_affine ? 2 : 0),
                  "data, weight" + std::string(no_bias ? "" : ", bias") +
                      (q.packed && q.scaling ? ", alpha" : "") +
                      (q.input_affine ? ", in_scale, in_shift" : ""));
  // The input, or that of a BatchNorm this layer takes as its input affine (BuildBatchNorm).
  const Planner::PendingAffine* pending = pl.pending_affine(node);
  const int in = pending != nullptr ? pending->value : pl.FloatInput(node, 0, "data");
  int64_t rows = 0, depth = 0;
  std::vector<int64_t> oshape;
  DenseShapes(r, pl.value(in).shape, flatten, hidden, &rows, &depth, &oshape);
  int k = 2;
  std::vector<float> bias, stored_alpha, in_scale, in_shift;
  if (!no_bias) bias = pl.ParamFloat(node, k++, "bias", {hidden});
  if (q.packed && q.scaling) stored_alpha = pl.ParamFloat(node, k++, "alpha", {hidden});
  if (q.input_affine) {
    in_scale = pl.ParamFloat(node, k++, "in_scale", {depth});
    in_shift = pl.ParamFloat(node, k++, "in_shift", {depth});
  } else if (pending != nullptr) {
    if (static_cast<int64_t>(pending->scale.size()) != depth) {
      r.FailNode("internal: folded BatchNorm has " + std::to_string(pending->scale.size()) +
                 " features, the layer " + std::to_string(depth));
    }
    in_scale = pending->scale;
    in_shift = pending->shift;
  }
  const int out = pl.NewValue(oshape);
  if (q.binary()) {
    auto step = std::make_unique<BinaryDenseStep>();
    step->rows = rows;
    step->depth = depth;
    step->hidden = hidden;
    step->isa = pl.isa();
    const int64_t words = WordsFor(depth);
    if (q.packed) {
      const Tensor& wt = pl.Param(node, 1, "weight");
      if (wt.shape != std::vector<int64_t>{hidden, words} || wt.dtype != DType::kInt64) {
        r.FailNode("parameter `weight` ('" + wt.name + "') is " + DTypeName(wt.dtype) + " " +
                   ShapeText(wt.shape) + ", expected packed int64 words " +
                   ShapeText({hidden, words}) + " (binarized_weights_only=True)");
      }
      step->weights = PackedWords(wt, hidden, words, depth);
      step->alpha = stored_alpha;
    } else {
      const std::vector<float> w = pl.ParamFloat(node, 1, "weight", {hidden, depth});
      step->weights.resize(static_cast<size_t>(hidden * words));
      PackRows(w.data(), hidden, depth, depth, step->weights.data(), pl.isa());
      if (q.scaling) step->alpha = MeanAbsRows(w, hidden, depth);
    }
    step->bias = bias;
    step->in_scale = in_scale;
    step->in_shift = in_shift;
    step->binary_macs = rows * depth * hidden;
    Finish(pl, node, std::move(step), {in}, out,
           pending != nullptr ? n.name + "+" + pending->names : "");
    return;
  }
  std::vector<uint8_t> levels;
  std::vector<float> w;
  if (q.packed_levels()) {
    levels = PackedLevels(pl, node, r, hidden * depth, q.weight_bit);
  } else {
    w = pl.ParamFloat(node, 1, "weight", {hidden, depth});
  }
  if (q.act_bit >= 2 && in_scale.empty() &&
      KbitPathFor(q.act_bit, q.weight_bit, depth) != KbitPath::kNone) {
    auto step = std::make_unique<KbitIntDenseStep>();
    step->rows = rows;
    if (q.packed_levels()) {
      PrepareKbitDenseLevels(levels.data(), depth, hidden, q.act_bit, q.weight_bit, pl.isa(),
                             &step->weights);
      step->alpha = stored_alpha;
    } else {
      PrepareKbitDense(w.data(), depth, hidden, q.act_bit, q.weight_bit, pl.isa(), &step->weights);
      if (q.scaling) step->alpha = MeanAbsRows(w, hidden, depth);
    }
    step->bias = bias;
    step->float_macs = rows * depth * hidden;
    Finish(pl, node, std::move(step), {in}, out, "");
    return;
  }
  const std::vector<float> wq =
      q.packed_levels() ? AlphaLevelWeights(levels, hidden, depth, q.weight_bit, stored_alpha)
                        : AlphaQuantizedWeights(w, hidden, depth, q.weight_bit, q.scaling);
  auto step = std::make_unique<KbitDenseStep>();
  step->rows = rows;
  step->depth = depth;
  step->act_bit = q.act_bit;
  step->threads = pl.threads();
  step->in_scale = in_scale;
  step->in_shift = in_shift;
  step->quant_bytes = Align64(static_cast<size_t>(rows * depth) * sizeof(float));
  step->dense = std::make_unique<FloatDense>(depth, hidden, wq.data(),
                                             bias.empty() ? nullptr : bias.data(), false, pl.isa());
  step->float_macs = rows * depth * hidden;
  Finish(pl, node, std::move(step), {in}, out, "");
}

}  // namespace

void RegisterLayerOps(std::map<std::string, Builder>* t) {
  (*t)["Convolution"] = BuildConvolution;
  (*t)["FullyConnected"] = BuildFullyConnected;
  (*t)["QConvolution"] = BuildQConvolution;
  (*t)["QFullyConnected"] = BuildQFullyConnected;
}

}  // namespace rt
}  // namespace binmx

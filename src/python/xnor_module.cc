/*
 * binmx._xnor: pybind11 bindings to the core (src/xnor_gemm) for tests and benchmarks.
 *
 * Arrays are taken without conversion (noconvert): float32 / int64, C-contiguous (rank 2 for
 * the GEMM; rank 4 / 1 for the direct binary convolution, rank 2 / 1 for the binary dense layer).
 * Packed words are uint64 bit patterns carried in int64 arrays (MXNet has no uint64).
 * The public, validating Python API is binmx.xnor; these functions assume checked input but
 * still refuse bad arguments with exceptions (never a crash).
 */
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bconv.h"
#include "conv.h"
#include "kbit.h"
#include "kbit_pack.h"
#include "xnor_gemm.h"

namespace py = pybind11;

namespace {

using F32Array = py::array_t<float, py::array::c_style>;
using I64Array = py::array_t<int64_t, py::array::c_style>;

// DefaultIsa() throws std::runtime_error for a bad BINMX_ISA; Python sees a ValueError.
binmx::Isa DefaultIsaOrValueError() {
  try {
    return binmx::DefaultIsa();
  } catch (const std::runtime_error& e) {
    throw py::value_error(e.what());
  }
}

binmx::Isa ResolveIsa(const std::string& isa) {
  if (isa.empty()) return DefaultIsaOrValueError();
  binmx::Isa out;
  if (!binmx::ParseIsa(isa, &out)) {
    throw py::value_error("isa must be one of scalar, avx2, avx512, neon, got '" + isa + "'");
  }
  try {
    binmx::RequireIsa(out);
  } catch (const std::runtime_error& e) {
    throw py::value_error(std::string("isa: ") + e.what());
  }
  return out;
}

binmx::GemmConfig MakeConfig(const std::string& isa, int threads) {
  if (threads < 0) throw py::value_error("threads must be >= 0 (0 = default)");
  binmx::GemmConfig config{ResolveIsa(isa), threads};
  if (config.threads == 0) config.threads = binmx::DefaultThreads();
  return config;
}

I64Array PackBits(const F32Array& x, const std::string& isa) {
  if (x.ndim() != 2) throw py::value_error("x must have rank 2");
  const binmx::Isa which = ResolveIsa(isa);
  const int64_t rows = x.shape(0), k = x.shape(1);
  I64Array out({rows, binmx::WordsFor(k)});
  {
    py::gil_scoped_release release;
    binmx::PackRows(x.data(), rows, k, k, reinterpret_cast<uint64_t*>(out.mutable_data()), which);
  }
  return out;
}

// `out`, when given, must be C-contiguous, writeable and of shape (m, n).
template <typename T>
py::array_t<T, py::array::c_style> OutputArray(
    std::optional<py::array_t<T, py::array::c_style>>& out, int64_t m, int64_t n) {
  if (!out) return py::array_t<T, py::array::c_style>({m, n});
  if (out->ndim() != 2 || out->shape(0) != m || out->shape(1) != n || !out->writeable()) {
    throw py::value_error("out must be a writeable array of shape (M, N)");
  }
  return *out;
}

py::array_t<int32_t> XnorGemm(const I64Array& a, const I64Array& b, int64_t k,
                              const std::string& isa, int threads,
                              std::optional<py::array_t<int32_t, py::array::c_style>> out) {
  if (a.ndim() != 2) throw py::value_error("a_words must have rank 2");
  if (b.ndim() != 2) throw py::value_error("b_words must have rank 2");
  if (a.shape(1) != b.shape(1)) throw py::value_error("a_words and b_words word counts differ");
  const binmx::GemmConfig config = MakeConfig(isa, threads);
  const int64_t m = a.shape(0), n = b.shape(0), words = a.shape(1);
  py::array_t<int32_t, py::array::c_style> c = OutputArray(out, m, n);
  {
    py::gil_scoped_release release;
    binmx::XnorGemm(reinterpret_cast<const uint64_t*>(a.data()),
                    reinterpret_cast<const uint64_t*>(b.data()), m, n, words, k, c.mutable_data(),
                    n, config);
  }
  return c;
}

py::array_t<float> XnorGemmF32(const I64Array& a, const I64Array& b, int64_t k,
                               std::optional<py::array_t<float, py::array::c_style>> scale,
                               std::optional<py::array_t<float, py::array::c_style>> bias,
                               const std::string& isa, int threads,
                               std::optional<py::array_t<float, py::array::c_style>> out) {
  if (a.ndim() != 2) throw py::value_error("a_words must have rank 2");
  if (b.ndim() != 2) throw py::value_error("b_words must have rank 2");
  if (a.shape(1) != b.shape(1)) throw py::value_error("a_words and b_words word counts differ");
  const int64_t m = a.shape(0), n = b.shape(0), words = a.shape(1);
  if (scale && (scale->ndim() != 1 || scale->shape(0) != m)) {
    throw py::value_error("scale must have shape (M,)");
  }
  if (bias && (bias->ndim() != 1 || bias->shape(0) != m)) {
    throw py::value_error("bias must have shape (M,)");
  }
  const binmx::GemmConfig config = MakeConfig(isa, threads);
  py::array_t<float, py::array::c_style> c = OutputArray(out, m, n);
  {
    py::gil_scoped_release release;
    binmx::XnorGemmF32(reinterpret_cast<const uint64_t*>(a.data()),
                       reinterpret_cast<const uint64_t*>(b.data()), m, n, words, k,
                       scale ? scale->data() : nullptr, bias ? bias->data() : nullptr,
                       c.mutable_data(), n, config);
  }
  return c;
}

// ---- direct binary convolution and dense layer (bconv.h) ----------------------------------

using OptF32 = std::optional<F32Array>;

void RequireShape(const py::array& a, std::initializer_list<int64_t> shape, const char* what) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  int d = 0;
  for (int64_t v : shape) {
    if (!ok) break;
    ok = a.shape(d++) == v;
  }
  if (!ok) throw py::value_error(std::string(what) + " has the wrong shape");
}

const float* OptData(const OptF32& a, int64_t n, const char* what) {
  if (!a) return nullptr;
  RequireShape(*a, {n}, what);
  return a->data();
}

binmx::Conv2dParams ConvParams(int64_t batch, int64_t channels, int64_t h, int64_t w,
                               const I64Array& w_packed, const std::vector<int64_t>& stride,
                               const std::vector<int64_t>& pad, const std::vector<int64_t>& dilate,
                               int64_t groups, int pad_value) {
  if (w_packed.ndim() != 4) throw py::value_error("w_packed must have rank 4 (F, kh, kw, words)");
  if (stride.size() != 2 || pad.size() != 2 || dilate.size() != 2) {
    throw py::value_error("stride, pad and dilate must have two entries");
  }
  binmx::Conv2dParams p;
  p.batch = batch;
  p.channels = channels;
  p.in_h = h;
  p.in_w = w;
  p.num_filter = w_packed.shape(0);
  p.kernel_h = w_packed.shape(1);
  p.kernel_w = w_packed.shape(2);
  p.stride_h = stride[0];
  p.stride_w = stride[1];
  p.pad_h = pad[0];
  p.pad_w = pad[1];
  p.dilate_h = dilate[0];
  p.dilate_w = dilate[1];
  p.groups = groups;
  p.pad_value = pad_value;
  binmx::ValidateConv2dParams(p);  // std::invalid_argument -> ValueError
  if (w_packed.shape(3) != p.TapWords()) {
    throw py::value_error("w_packed must have ceil(channels / groups / 64) words per tap");
  }
  return p;
}

// x: float32 (N, C, H, W), or x_bits: int64 (N, H, W, ceil(C/64)) with `channels` = C.
// Returns float32 (N, F, OH, OW), or with out_scale / out_shift int64 (N, OH, OW, ceil(F/64)).
py::array BinaryConv2d(const I64Array& w_packed, const std::vector<int64_t>& stride,
                       const std::vector<int64_t>& pad, const std::vector<int64_t>& dilate,
                       const std::optional<F32Array>& x, const std::optional<I64Array>& x_bits,
                       int64_t channels, int64_t groups, int pad_value, const OptF32& alpha,
                       const OptF32& bias, const OptF32& in_scale, const OptF32& in_shift,
                       const OptF32& residual, const OptF32& out_scale, const OptF32& out_shift,
                       const std::string& isa, int threads) {
  if (x.has_value() == x_bits.has_value()) {
    throw py::value_error("exactly one of x and x_bits is required");
  }
  int64_t n, h, w;
  if (x) {
    if (x->ndim() != 4) throw py::value_error("x must have rank 4 (N, C, H, W)");
    n = x->shape(0);
    channels = x->shape(1);
    h = x->shape(2);
    w = x->shape(3);
  } else {
    if (x_bits->ndim() != 4) throw py::value_error("x_bits must have rank 4 (N, H, W, words)");
    n = x_bits->shape(0);
    h = x_bits->shape(1);
    w = x_bits->shape(2);
    if (channels <= 0 || x_bits->shape(3) != binmx::WordsFor(channels)) {
      throw py::value_error("x_bits must have ceil(channels / 64) words per pixel");
    }
  }
  const binmx::Conv2dParams p =
      ConvParams(n, channels, h, w, w_packed, stride, pad, dilate, groups, pad_value);
  const binmx::GemmConfig config = MakeConfig(isa, threads);
  const int64_t f = p.num_filter, oh = p.OutH(), ow = p.OutW();
  binmx::BinaryConvArgs args;
  args.x = x ? x->data() : nullptr;
  args.x_bits = x_bits ? reinterpret_cast<const uint64_t*>(x_bits->data()) : nullptr;
  args.w_packed = reinterpret_cast<const uint64_t*>(w_packed.data());
  args.alpha = OptData(alpha, f, "alpha");
  args.bias = OptData(bias, f, "bias");
  args.in_scale = OptData(in_scale, channels, "in_scale");
  args.in_shift = OptData(in_shift, channels, "in_shift");
  args.out_scale = OptData(out_scale, f, "out_scale");
  args.out_shift = OptData(out_shift, f, "out_shift");
  if (residual) {
    RequireShape(*residual, {n, f, oh, ow}, "residual");
    args.residual = residual->data();
  }
  py::array result;
  if (out_scale || out_shift) {
    I64Array bits({n, oh, ow, binmx::WordsFor(f)});
    args.out_bits = reinterpret_cast<uint64_t*>(bits.mutable_data());
    result = bits;
  } else {
    F32Array out({n, f, oh, ow});
    args.out = out.mutable_data();
    result = out;
  }
  {
    py::gil_scoped_release release;
    binmx::BinaryConv2d(args, p, config);  // checks the argument combination
  }
  return result;
}

// x: float32 (rows, depth); w_packed: int64 (hidden, ceil(depth/64)). Returns (rows, hidden).
F32Array BinaryDense(const F32Array& x, const I64Array& w_packed, const OptF32& alpha,
                     const OptF32& bias, const OptF32& in_scale, const OptF32& in_shift,
                     const std::string& isa, int threads) {
  if (x.ndim() != 2) throw py::value_error("x must have rank 2 (rows, depth)");
  if (w_packed.ndim() != 2) throw py::value_error("w_packed must have rank 2 (hidden, words)");
  const int64_t rows = x.shape(0), depth = x.shape(1), hidden = w_packed.shape(0);
  if (depth <= 0 || hidden <= 0) throw py::value_error("depth and hidden must be > 0");
  if (w_packed.shape(1) != binmx::WordsFor(depth)) {
    throw py::value_error("w_packed must have ceil(depth / 64) words per row");
  }
  const binmx::GemmConfig config = MakeConfig(isa, threads);
  binmx::BinaryDenseArgs args;
  args.x = x.data();
  args.w_packed = reinterpret_cast<const uint64_t*>(w_packed.data());
  args.alpha = OptData(alpha, hidden, "alpha");
  args.bias = OptData(bias, hidden, "bias");
  args.in_scale = OptData(in_scale, depth, "in_scale");
  args.in_shift = OptData(in_shift, depth, "in_shift");
  F32Array out({rows, hidden});
  args.out = out.mutable_data();
  {
    py::gil_scoped_release release;
    binmx::BinaryDense(args, rows, depth, hidden, config);
  }
  return out;
}

// OIHW float32 weights (F, C/groups, kh, kw) -> int64 (F, kh, kw, ceil(C/groups/64)); `fast`
// picks PackConvWeightsFast (the operators' packer), else the plain loop PackConvWeights.
I64Array PackConvWeights(const F32Array& w, int64_t groups, bool fast) {
  if (w.ndim() != 4) throw py::value_error("w must have rank 4 (F, C/groups, kh, kw)");
  binmx::Conv2dParams p;
  p.channels = w.shape(1) * groups;
  p.num_filter = w.shape(0);
  p.kernel_h = p.in_h = w.shape(2);
  p.kernel_w = p.in_w = w.shape(3);
  p.groups = groups;
  if (groups <= 0) throw py::value_error("groups must be > 0");
  binmx::ValidateConv2dParams(p);
  I64Array out({p.num_filter, p.kernel_h, p.kernel_w, p.TapWords()});
  uint64_t* dst = reinterpret_cast<uint64_t*>(out.mutable_data());
  {
    py::gil_scoped_release release;
    if (fast) {
      binmx::PackConvWeightsFast(w.data(), p, dst);
    } else {
      binmx::PackConvWeights(w.data(), p, dst);
    }
  }
  return out;
}

std::vector<std::string> AvailableIsas() {
  std::vector<std::string> out;
  for (binmx::Isa isa : binmx::AvailableIsas()) out.emplace_back(binmx::IsaName(isa));
  return out;
}

using U8Array = py::array_t<uint8_t, py::array::c_style>;

// The weight levels lw of kbit.h of a float32 weight (any shape, quantised as one tensor).
U8Array KbitWeightLevels(const F32Array& w, int weight_bit) {
  std::vector<py::ssize_t> shape(w.shape(), w.shape() + w.ndim());
  U8Array out(shape);
  {
    py::gil_scoped_release release;
    binmx::KbitWeightLevels(w.data(), w.size(), weight_bit, out.mutable_data());
  }
  return out;
}

// kbit_pack.h: rank-1 levels -> the int64 stream, and back.
I64Array PackKbitLevels(const U8Array& levels, int bits) {
  if (levels.ndim() != 1) throw py::value_error("levels must have rank 1");
  const int64_t n = levels.shape(0);
  I64Array out({binmx::KbitPackedWords(n, bits)});
  binmx::PackKbitLevels(levels.data(), n, bits, reinterpret_cast<uint64_t*>(out.mutable_data()));
  return out;
}

U8Array UnpackKbitLevels(const I64Array& words, int64_t n, int bits) {
  if (words.ndim() != 1) throw py::value_error("words must have rank 1");
  binmx::KbitPackedWords(n, bits);  // validates n and bits before the allocation
  U8Array out({n});
  binmx::UnpackKbitLevels(reinterpret_cast<const uint64_t*>(words.data()), words.shape(0), n, bits,
                          out.mutable_data());
  return out;
}

}  // namespace

PYBIND11_MODULE(_xnor, m) {
  m.doc() = "binmx core bindings (use binmx.xnor)";
  py::register_exception<std::invalid_argument>(m, "CoreValueError", PyExc_ValueError);
  m.def("pack_bits", &PackBits, py::arg("x").noconvert(), py::arg("isa") = "");
  m.def("xnor_gemm", &XnorGemm, py::arg("a_words").noconvert(), py::arg("b_words").noconvert(),
        py::arg("k"), py::arg("isa") = "", py::arg("threads") = 0,
        py::arg("out").noconvert() = py::none());
  m.def("xnor_gemm_f32", &XnorGemmF32, py::arg("a_words").noconvert(),
        py::arg("b_words").noconvert(), py::arg("k"), py::arg("scale").noconvert() = py::none(),
        py::arg("bias").noconvert() = py::none(), py::arg("isa") = "", py::arg("threads") = 0,
        py::arg("out").noconvert() = py::none());
  m.def("binary_conv2d", &BinaryConv2d, py::arg("w_packed").noconvert(), py::arg("stride"),
        py::arg("pad"), py::arg("dilate"), py::arg("x").noconvert() = py::none(),
        py::arg("x_bits").noconvert() = py::none(), py::arg("channels") = 0, py::arg("groups") = 1,
        py::arg("pad_value") = 0, py::arg("alpha").noconvert() = py::none(),
        py::arg("bias").noconvert() = py::none(), py::arg("in_scale").noconvert() = py::none(),
        py::arg("in_shift").noconvert() = py::none(), py::arg("residual").noconvert() = py::none(),
        py::arg("out_scale").noconvert() = py::none(),
        py::arg("out_shift").noconvert() = py::none(), py::arg("isa") = "", py::arg("threads") = 0);
  m.def("binary_dense", &BinaryDense, py::arg("x").noconvert(), py::arg("w_packed").noconvert(),
        py::arg("alpha").noconvert() = py::none(), py::arg("bias").noconvert() = py::none(),
        py::arg("in_scale").noconvert() = py::none(), py::arg("in_shift").noconvert() = py::none(),
        py::arg("isa") = "", py::arg("threads") = 0);
  m.def("pack_conv_weights", &PackConvWeights, py::arg("w").noconvert(), py::arg("groups") = 1,
        py::arg("fast") = true);
  m.def("available_isas", &AvailableIsas);
  m.def("current_isa", [] { return std::string(binmx::IsaName(DefaultIsaOrValueError())); });
  m.def("default_threads", &binmx::DefaultThreads);
  m.def("kbit_weight_levels", &KbitWeightLevels, py::arg("w").noconvert(), py::arg("weight_bit"));
  m.def("pack_kbit_levels", &PackKbitLevels, py::arg("levels").noconvert(), py::arg("bits"));
  m.def("unpack_kbit_levels", &UnpackKbitLevels, py::arg("words").noconvert(), py::arg("n"),
        py::arg("bits"));
  m.def("kbit_path", [](int act_bit, int weight_bit, int64_t depth) {
    return std::string(binmx::KbitPathName(binmx::KbitPathFor(act_bit, weight_bit, depth)));
  });
}

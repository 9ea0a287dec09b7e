/*
 * binmx._xnor: pybind11 bindings to the core (src/xnor_gemm) for tests and benchmarks.
 *
 * Arrays are taken without conversion (noconvert): float32 / int64, C-contiguous, rank 2.
 * Packed words are uint64 bit patterns carried in int64 arrays (MXNet has no uint64).
 * The public, validating Python API is binmx.xnor; these functions assume checked input but
 * still refuse bad arguments with exceptions (never a crash).
 */
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>

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
                    reinterpret_cast<const uint64_t*>(b.data()), m, n, words, k,
                    c.mutable_data(), n, config);
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

std::vector<std::string> AvailableIsas() {
  std::vector<std::string> out;
  for (binmx::Isa isa : binmx::AvailableIsas()) out.emplace_back(binmx::IsaName(isa));
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
  m.def("available_isas", &AvailableIsas);
  m.def("current_isa", [] { return std::string(binmx::IsaName(DefaultIsaOrValueError())); });
  m.def("default_threads", &binmx::DefaultThreads);
}

/*
 * binmx operators: helpers shared by QActivation, QConvolution and QFullyConnected.
 *
 * - Attribute parsing. MXNet hands attributes over as Python text ("(3, 3)", "True", "1",
 *   "0.5"); parsers are pure and cheap because parseAttrs runs many times per call. Every
 *   failure yields a message naming the attribute and the expected vs given value.
 * - The quantisers, alpha and the weight-gradient formula come from src/float/quantize.h
 *   (beside the rest of the float math; their CUDA twins are in src/xnor_gemm/cuda/train.cu).
 */
#ifndef BINMX_OPERATORS_OP_COMMON_H_
#define BINMX_OPERATORS_OP_COMMON_H_

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "mxnet/lib_api.h"
#include "quantize.h"

namespace binmx {
namespace ops {

using Attrs = std::unordered_map<std::string, std::string>;

// lib_api keeps every MX_ERROR_MSG ever written and MXNet prints them all with each new
// failure; entry points that run on the caller's thread (parseAttrs, inferType, inferShape)
// drop the old ones first, so an error shows only its own messages. Defined in
// library.cc.
void ResetErrorMessages();

// Runs `body` (returning MXReturnValue) at a lib_api entry point: no C++ exception crosses into
// MXNet; it becomes MX_ERROR_MSG "<op><what>: <message>" and MX_FAIL.
template <typename Body>
mxnet::ext::MXReturnValue Guarded(const char* op, const char* what, Body&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    MX_ERROR_MSG << op << what << ": out of memory (the shapes and attributes need more memory "
                 << "than this machine can give)";
  } catch (const std::exception& e) {
    MX_ERROR_MSG << op << what << ": " << e.what();
  } catch (...) {
    MX_ERROR_MSG << op << what << ": unknown C++ exception";
  }
  return mxnet::ext::MX_FAIL;
}

inline std::string Trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\'' || s[b] == '"')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\'' || s[e - 1] == '"')) {
    --e;
  }
  return s.substr(b, e - b);
}

inline bool ParseInt(const std::string& text, int64_t* out) {
  const std::string s = Trim(text);
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str() || *end != '\0') return false;
  *out = v;
  return true;
}

inline bool ParseFloat(const std::string& text, double* out) {
  const std::string s = Trim(text);
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || end == s.c_str() || *end != '\0' || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

inline bool ParseBool(const std::string& text, bool* out) {
  const std::string s = Trim(text);
  if (s == "True" || s == "true" || s == "1") {
    *out = true;
    return true;
  }
  if (s == "False" || s == "false" || s == "0") {
    *out = false;
    return true;
  }
  return false;
}

// "(3, 3)", "[3,3]", "3", "(3,)", "()" -> ints. "None" or "" -> empty (unset).
inline bool ParseTuple(const std::string& text, std::vector<int64_t>* out) {
  out->clear();
  std::string s = Trim(text);
  if (s.empty() || s == "None") return true;
  if ((s.front() == '(' && s.back() == ')') || (s.front() == '[' && s.back() == ']')) {
    s = s.substr(1, s.size() - 2);
  }
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    const std::string item = Trim(s.substr(pos, comma - pos));
    if (item.empty()) {
      if (comma != s.size()) return false;  // ", ," or leading comma
    } else {
      int64_t v;
      std::string num = item;
      if (!num.empty() && (num.back() == 'L')) num.pop_back();
      if (!ParseInt(num, &v)) return false;
      out->push_back(v);
    }
    pos = comma + 1;
  }
  return true;
}

inline std::string TupleText(const std::vector<int64_t>& v) {
  std::string s = "(";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + (v.size() == 1 ? ",)" : ")");
}

inline bool IsHidden(const std::string& key) {
  return key.size() >= 2 && key[0] == '_' && key[1] == '_';
}

// Reads attributes into typed fields; the first error is kept in `error`.
class AttrReader {
 public:
  AttrReader(const char* op, const Attrs& attrs) : op_(op), attrs_(attrs) {}

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  void Fail(const std::string& msg) {
    if (error_.empty()) error_ = std::string(op_) + ": " + msg;
  }

  // Rejects attribute names outside `known` (names starting with "__" are MXNet's own).
  void CheckKnown(const std::vector<const char*>& known) {
    for (const auto& kv : attrs_) {
      if (IsHidden(kv.first)) continue;
      bool found = false;
      for (const char* k : known) found = found || kv.first == k;
      if (!found) {
        std::string names;
        for (const char* k : known) names += std::string(names.empty() ? "" : ", ") + k;
        Fail("unknown attribute `" + kv.first + "`='" + kv.second + "' (known: " + names + ")");
      }
    }
  }

  const std::string* Find(const char* name) const {
    auto it = attrs_.find(name);
    return it == attrs_.end() ? nullptr : &it->second;
  }

  int64_t Int(const char* name, int64_t def, int64_t lo, int64_t hi, bool required = false) {
    const std::string* v = Find(name);
    if (v == nullptr || Trim(*v) == "None") {
      if (required) Fail("missing required attribute `" + std::string(name) + "`");
      return def;
    }
    int64_t out;
    if (!ParseInt(*v, &out) || out < lo || out > hi) {
      Fail("expected `" + std::string(name) + "` to be an integer in [" + std::to_string(lo) +
           ", " + std::to_string(hi) + "], got '" + *v + "'");
      return def;
    }
    return out;
  }

  double Float(const char* name, double def, double lo) {
    const std::string* v = Find(name);
    if (v == nullptr || Trim(*v) == "None") return def;
    double out;
    if (!ParseFloat(*v, &out) || out < lo) {
      Fail("expected `" + std::string(name) + "` to be a finite number >= " + std::to_string(lo) +
           ", got '" + *v + "'");
      return def;
    }
    return out;
  }

  bool Bool(const char* name, bool def) {
    const std::string* v = Find(name);
    if (v == nullptr || Trim(*v) == "None") return def;
    bool out;
    if (!ParseBool(*v, &out)) {
      Fail("expected `" + std::string(name) + "` to be True or False, got '" + *v + "'");
      return def;
    }
    return out;
  }

  // A tuple of `rank` positive (or, with allow_zero, non-negative) ints; unset -> `def`.
  std::vector<int64_t> Tuple(const char* name, size_t rank, int64_t def, bool allow_zero,
                             bool required = false) {
    const std::string* v = Find(name);
    std::vector<int64_t> out;
    if (v != nullptr && !ParseTuple(*v, &out)) {
      Fail("expected `" + std::string(name) + "` to be a tuple of ints, got '" + *v + "'");
      return std::vector<int64_t>(rank, def);
    }
    if (out.empty()) {
      if (required) {
        Fail("missing required attribute `" + std::string(name) + "` (expected " +
             std::to_string(rank) + " ints, e.g. (3, 3))");
      }
      return std::vector<int64_t>(rank, def);
    }
    if (out.size() != rank) {
      Fail("expected `" + std::string(name) + "` to have " + std::to_string(rank) +
           " elements (2-D convolution), got " + std::to_string(out.size()) + " in '" + *v + "'");
      return std::vector<int64_t>(rank, def);
    }
    for (int64_t x : out) {
      if (x < 0 || (x == 0 && !allow_zero)) {
        Fail("expected `" + std::string(name) + "` to hold " +
             (allow_zero ? "non-negative" : "positive") + " ints, got '" + *v + "'");
        return std::vector<int64_t>(rank, def);
      }
    }
    return out;
  }

 private:
  const char* op_;
  const Attrs& attrs_;
  std::string error_;
};

// ---- shapes -----------------------------------------------------------------------------
// lib_api hands shapes to inferShape as uint32. MXNet 1.9 marks an unknown dim -1 inside (in
// both shape modes: a legacy-mode 0 is turned into -1 before it reaches an operator), so it
// arrives as 0xFFFFFFFF; an unknown rank arrives as an empty shape. An output dim that depends
// on an unknown one is written back as kUnknownDim, which MXNet's Python API reports as
// unknown (-1; 0 in legacy mode). A 0 is a real size (a zero-size array in NumPy shape mode).
constexpr unsigned kUnknownDim = 0xFFFFFFFFu;

inline bool DimKnown(unsigned d) { return d != kUnknownDim; }

inline std::string ShapeText(const std::vector<unsigned int>& v) {
  std::string s = "(";
  for (size_t i = 0; i < v.size(); ++i) {
    s += (i ? ", " : "") + (v[i] == kUnknownDim ? std::string("?") : std::to_string(v[i]));
  }
  return s + (v.size() == 1 ? ",)" : ")");
}

// An inferred output dim `v` as uint32; throws std::invalid_argument naming `what` when it
// exceeds 2^31-1: lib_api carries shapes as uint32 (kUnknownDim taken) and MXNet 1.9's shape
// API as int32, so a larger dim would come back wrapped (4294967293 read as -3).
inline unsigned OutDim(const char* what, int64_t v) {
  if (v < 0 || v > 0x7FFFFFFF) {
    throw std::invalid_argument(std::string("the output ") + what + " " + std::to_string(v) +
                                " exceeds 2^31-1, the largest dimension MXNet's shapes hold");
  }
  return static_cast<unsigned>(v);
}

// Fills an unknown input shape (empty, or dims that are kUnknownDim or 0) from `want`, or
// checks a known one; a kUnknownDim in `want` accepts any value. On mismatch writes the
// message and returns false.
inline bool MatchShape(const char* op, const char* name, const std::vector<unsigned int>& want,
                       std::vector<unsigned int>* have, const char* hint) {
  if (have->empty()) {
    *have = want;
    return true;
  }
  bool ok = have->size() == want.size();
  for (size_t i = 0; ok && i < want.size(); ++i) {
    const unsigned h = (*have)[i];
    ok = h == want[i] || h == 0u || h == kUnknownDim || want[i] == kUnknownDim;
  }
  if (!ok) {
    MX_ERROR_MSG << op << ": expected `" << name << "` of shape " << ShapeText(want) << hint
                 << ", got " << ShapeText(*have);
    return false;
  }
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i] != kUnknownDim) (*have)[i] = want[i];
  }
  return true;
}

// MXNet's dtype codes, by name (for messages).
inline const char* DtypeName(int t) {
  static const char* names[] = {"float32", "float64", "float16", "uint8", "int32", "int8", "int64"};
  return (t >= 0 && t <= 6) ? names[t] : "unknown";
}

// inferType of an operator whose inputs (named `names`, in order) and output 0 are all float32:
// an unknown input dtype becomes float32, another one is an error naming the input.
inline bool AllFloat32(const char* op, const std::vector<const char*>& names,
                       std::vector<int>* in_types, std::vector<int>* out_types) {
  for (size_t i = 0; i < in_types->size(); ++i) {
    int& t = (*in_types)[i];
    if (t == -1) t = mxnet::ext::kFloat32;
    if (t != mxnet::ext::kFloat32) {
      MX_ERROR_MSG << op << ": expected input `" << (i < names.size() ? names[i] : "?")
                   << "` to have dtype float32, got " << DtypeName(t);
      return false;
    }
  }
  (*out_types)[0] = mxnet::ext::kFloat32;
  return true;
}

// The first `count` inputs are on the cpu; else the message names the first that is not
// (name_of(i): input i's name).
template <typename NameOf>
bool InputsOnCpu(const char* op, const std::vector<mxnet::ext::MXTensor>& in, int count,
                 NameOf&& name_of) {
  for (int i = 0; i < count && i < static_cast<int>(in.size()); ++i) {
    if (in[i].ctx.dev_type != "cpu") {
      MX_ERROR_MSG << op << ": input `" << name_of(i) << "` is on " << in[i].ctx.dev_type
                   << ", this build runs on cpu only";
      return false;
    }
  }
  return true;
}

}  // namespace ops
}  // namespace binmx

#endif  // BINMX_OPERATORS_OP_COMMON_H_

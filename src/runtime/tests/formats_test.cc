/*
 * binmx runtime: tests of the file readers (json.h, params.h, npy.h) on valid and invalid input.
 * Valid files are built in memory by tests/test_writers.h (or the .npy writer) and read back
 * byte-exactly; invalid ones are exact corruptions whose error message must name the problem.
 * Files written by MXNet and NumPy themselves are checked by tests/test_runtime_formats.py.
 * Prints each failure and "N checks, M failures"; exits non-zero when M > 0.
 */
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "file_io.h"
#include "json.h"
#include "npy.h"
#include "params.h"
#include "rt_common.h"
#include "test_writers.h"

using binmx::rt::DType;
using binmx::rt::Error;
using binmx::rt::Json;
using binmx::rt::NpyArray;
using binmx::rt::Tensor;
using binmx::rt::testing::ByteWriter;
using binmx::rt::testing::FieldMark;
using binmx::rt::testing::NdForm;
using binmx::rt::testing::PatternTensor;
using binmx::rt::testing::WriteParams;

namespace {

int g_checks = 0;
int g_failures = 0;

void Check(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

// Runs fn, which must throw binmx::rt::Error whose message contains every one of `needles`.
void ExpectError(const std::string& label, const std::function<void()>& fn,
                 const std::vector<std::string>& needles) {
  ++g_checks;
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& n : needles) {
      if (msg.find(n) == std::string::npos) {
        ++g_failures;
        std::printf("FAIL: %s: message lacks \"%s\": %s\n", label.c_str(), n.c_str(), msg.c_str());
        return;
      }
    }
    if (msg.find('\n') != std::string::npos) {
      ++g_failures;
      std::printf("FAIL: %s: message is not one line: %s\n", label.c_str(), msg.c_str());
    }
    return;
  } catch (const std::exception& e) {
    ++g_failures;
    std::printf("FAIL: %s: threw a non-Error exception: %s\n", label.c_str(), e.what());
    return;
  }
  ++g_failures;
  std::printf("FAIL: %s: no error\n", label.c_str());
}

// Runs fn and reports any exception as a failure.
void ExpectOk(const std::string& label, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    ++g_checks;
    ++g_failures;
    std::printf("FAIL: %s: unexpected error: %s\n", label.c_str(), e.what());
  }
}

const uint8_t* U8(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

Json J(const std::string& text) { return binmx::rt::ParseJson(text, "t.json"); }

std::vector<Tensor> P(const std::string& bytes) {
  return binmx::rt::ParseParams(U8(bytes), bytes.size(), "m.params");
}

NpyArray N(const std::string& bytes) {
  return binmx::rt::ParseNpyFloat32(U8(bytes), bytes.size(), "x.npy");
}

template <typename T>
void Poke(std::string* s, size_t offset, T value) {
  std::memcpy(&(*s)[offset], &value, sizeof(T));
}

const std::vector<DType> kAllDTypes = {DType::kFloat32, DType::kFloat64, DType::kFloat16,
                                       DType::kUint8,   DType::kInt32,   DType::kInt8,
                                       DType::kInt64};

std::string TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") + "/rt_formats_XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    std::perror("mkdtemp");
    std::exit(2);
  }
  return buf.data();
}

void WriteRaw(const std::string& path, const std::string& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) {
    std::perror(path.c_str());
    std::exit(2);
  }
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    closedir(d);
  }
  return names;
}

// ---- JSON ------------------------------------------------------------------------------------

void TestJsonValid() {
  ExpectOk("json literals", [] {
    Json v = J(" [null, true, false, 0, -0, 12, -3.5, 1e3, 1E-2, 2.5e+2, \"s\"] ");
    Check(v.IsArray() && v.size() == 11, "json literal array size");
    Check(v.at(0).IsNull() && v.at(1).AsBool("b") && !v.at(2).AsBool("b"), "json bools/null");
    Check(v.at(3).AsNumber("n") == 0.0 && std::signbit(v.at(4).AsNumber("n")), "json zeros");
    Check(v.at(5).AsInt("n") == 12 && v.at(6).AsNumber("n") == -3.5, "json ints");
    Check(v.at(7).AsNumber("n") == 1000.0 && v.at(8).AsNumber("n") == 0.01 &&
              v.at(9).AsNumber("n") == 250.0,
          "json exponents");
    Check(v.at(10).AsString("s") == "s", "json string");
  });
  ExpectOk("json numbers at the limits", [] {
    Json v =
        J("[1.7976931348623157e308, 5e-324, 1e-400, -1e-400, 9007199254740992,"
          " 0.1, 123456789012345678901234567890]");
    Check(v.at(0).AsNumber("n") == std::numeric_limits<double>::max(), "json max double");
    Check(v.at(1).AsNumber("n") >= 0.0 && v.at(1).AsNumber("n") < 1e-300, "json denormal");
    Check(v.at(2).AsNumber("n") == 0.0 && !std::signbit(v.at(2).AsNumber("n")), "json underflow");
    Check(v.at(3).AsNumber("n") == 0.0 && std::signbit(v.at(3).AsNumber("n")), "json -underflow");
    Check(v.at(4).AsInt("n") == (int64_t{1} << 53), "json 2^53");
    Check(v.at(5).AsNumber("n") == 0.1, "json 0.1 correctly rounded");
    Check(v.at(6).AsNumber("n") == 1.2345678901234568e29, "json long integer");
  });
  ExpectOk("json strings", [] {
    Json v = J(R"(["a\"b\\c\/d\b\f\n\r\t", "\u00e9\u4e2d", "\ud83d\ude00", "\u0000x", "é中😀"])");
    Check(v.at(0).AsString("s") == "a\"b\\c/d\b\f\n\r\t", "json simple escapes");
    Check(v.at(1).AsString("s") == "\xC3\xA9\xE4\xB8\xAD", "json \\u to UTF-8");
    Check(v.at(2).AsString("s") == "\xF0\x9F\x98\x80", "json surrogate pair");
    Check(v.at(3).AsString("s") == std::string("\0x", 2), "json \\u0000");
    Check(v.at(4).AsString("s") == "\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80", "json raw UTF-8");
  });
  ExpectOk("json objects", [] {
    Json v = J("\xEF\xBB\xBF{\"b\": 1, \"a\": {\"x\": []}, \"b\": 2, \"\": {}}\r\n\t ");
    Check(v.IsObject() && v.size() == 4, "json object size");
    Check(v.members()[0].first == "b" && v.members()[1].first == "a" &&
              v.members()[2].first == "b" && v.members()[3].first.empty(),
          "json member order");
    Check(v.Find("b") && v.Find("b")->AsNumber("b") == 2.0, "json duplicate: last wins");
    Check(v.Find("missing") == nullptr, "json Find absent");
    Check(v.Find("a")->Find("x")->IsArray() && v.Find("a")->Find("x")->size() == 0,
          "json nested empty array");
    Check(J("5").Find("a") == nullptr, "json Find on a number");
    Check(J("[]").items().empty() && J("{}").members().empty(), "json empty containers");
  });
  ExpectOk("json depth 512", [] {
    std::string s(512, '[');
    s += std::string(512, ']');
    Json v = J(s);
    int depth = 0;
    const Json* p = &v;
    while (p->IsArray() && p->size() == 1) {
      p = &p->at(0);
      ++depth;
    }
    Check(depth == 511 && p->IsArray() && p->size() == 0, "json depth 512 parsed");
    std::string o;
    for (int i = 0; i < 512; ++i) o += "{\"k\":";
    o += "1" + std::string(512, '}');
    J(o);
  });
}

void TestJsonInvalid() {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "empty document"},
      {"   \n ", "empty document"},
      {"[1,]", "expected a JSON value"},
      {"{\"a\":1,}", "expected a string key"},
      {"[1 2]", "expected ',' or ']'"},
      {"{\"a\" 1}", "expected ':'"},
      {"{1: 2}", "expected a string key"},
      {"01", "leading zero"},
      {"1.", "expected a digit after '.'"},
      {".5", "expected a JSON value"},
      {"+1", "expected a JSON value"},
      {"-", "expected a digit"},
      {"1e", "expected an exponent"},
      {"1e+", "expected an exponent"},
      {"NaN", "expected a JSON value"},
      {"Infinity", "expected a JSON value"},
      {"-Infinity", "expected a digit"},
      {"1e400", "out of the range of a double"},
      {"-1e400", "out of the range of a double"},
      {"'a'", "expected a JSON value"},
      {"\"abc", "unterminated string"},
      {"\"a\nb\"", "raw control character"},
      {"\"a\\x\"", "invalid escape"},
      {"\"\\u12zz\"", "invalid hex digit"},
      {"\"\\u12", "truncated \\u escape"},
      {"\"\\ud800\"", "not followed by a low surrogate"},
      {"\"\\ud800\\u0041\"", "not followed by a low surrogate"},
      {"\"\\udc00\"", "lone low surrogate"},
      {"\"\xC0\x80\"", "invalid UTF-8"},
      {"\"\xED\xA0\x80\"", "invalid UTF-8"},
      {"\"\xF5\x80\x80\x80\"", "invalid UTF-8"},
      {"\"\xE4\xB8\"", "invalid UTF-8"},
      {"\"\x80\"", "invalid UTF-8"},
      {"1 2", "after the JSON value"},
      {"{} x", "after the JSON value"},
      {"tru", "invalid literal"},
      {"nul", "invalid literal"},
      {"[", "expected a JSON value"},
      {"[1", "end of input inside an array"},
      {"{\"a\":1", "end of input inside an object"},
      {std::string("[1,\0]", 5), "byte 0x00"},
  };
  for (const auto& c : cases) {
    ExpectError("json invalid " + c.first, [&] { J(c.first); }, {"t.json:", c.second});
  }
  ExpectError("json depth 513", [] { J(std::string(513, '[') + std::string(513, ']')); },
              {"t.json:1:513:", "nesting deeper than 512"});
  ExpectError("json depth 100000", [] { J(std::string(100000, '[')); },
              {"nesting deeper than 512"});
  ExpectError("json deep objects",
              [] {
                std::string o;
                for (int i = 0; i < 100000; ++i) o += "{\"a\":";
                J(o);
              },
              {"nesting deeper than 512"});
  ExpectError("json line:column", [] { J("{\n  \"a\": x}"); }, {"t.json:2:8:", "'x'"});
  ExpectError("json column counts code points", [] { J("[\"\xC3\xA9\xC3\xA9\", @]"); },
              {"t.json:1:8:"});
  // Accessors.
  ExpectError("json AsString on a number", [] { J("1").AsString("attribute 'kernel'"); },
              {"attribute 'kernel': expected a string, got a number"});
  ExpectError("json AsNumber on an object", [] { J("{}").AsNumber("node 3 'inputs'"); },
              {"node 3 'inputs': expected a number, got an object"});
  ExpectError("json AsBool on null", [] { J("null").AsBool("flag"); },
              {"flag: expected a bool, got a null"});
  ExpectError("json AsInt on 1.5", [] { J("1.5").AsInt("index"); },
              {"index: expected an integer, got 1.5"});
  ExpectError("json AsInt on 2^60", [] { J("1152921504606846976").AsInt("index"); },
              {"expected an integer"});
  ExpectError("json at out of range", [] { J("[1,2,3]").at(3); }, {"index 3", "3 items"});
  ExpectError("json at on an object", [] { J("{}").at(0); }, {"expected an array"});
  Check(J("\"x\"").size() == 0 && J("[1,[2]]").size() == 2, "json size");
}

// ---- params ----------------------------------------------------------------------------------

std::vector<Tensor> AllDTypeTensors() {
  std::vector<Tensor> ts;
  uint32_t salt = 1;
  for (DType dt : kAllDTypes) {
    const std::string n = binmx::rt::DTypeName(dt);
    ts.push_back(PatternTensor("arg:" + n + "_4d", dt, {2, 3, 4, 5}, salt++));
    ts.push_back(PatternTensor("arg:" + n + "_1d", dt, {7}, salt++));
    ts.push_back(PatternTensor("aux:" + n + "_empty", dt, {0, 3}, salt++));
  }
  return ts;
}

bool SameTensor(const Tensor& a, const Tensor& b) {
  return a.name == b.name && a.dtype == b.dtype && a.shape == b.shape && a.nbytes() == b.nbytes() &&
         std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

void CheckRoundTrip(const std::string& label, const std::vector<Tensor>& ts,
                    const std::vector<NdForm>& forms) {
  ExpectOk(label, [&] {
    const std::vector<Tensor> got = P(WriteParams(ts, forms));
    Check(got.size() == ts.size(), label + ": count");
    for (size_t i = 0; i < got.size() && i < ts.size(); ++i) {
      Check(SameTensor(got[i], ts[i]),
            label + ": array " + std::to_string(i) + " '" + ts[i].name + "' differs");
      Check(reinterpret_cast<uintptr_t>(got[i].data()) % 64 == 0,
            label + ": array " + std::to_string(i) + " not 64-byte aligned");
      Check(got[i].NumElements() * static_cast<int64_t>(binmx::rt::DTypeSize(got[i].dtype)) ==
                static_cast<int64_t>(got[i].nbytes()),
            label + ": nbytes");
    }
  });
}

void TestParamsValid() {
  const std::vector<Tensor> ts = AllDTypeTensors();
  CheckRoundTrip("params v2 all dtypes", ts, {});
  CheckRoundTrip("params v1 all dtypes", ts, std::vector<NdForm>(ts.size(), NdForm::kV1));
  CheckRoundTrip("params legacy all dtypes", ts, std::vector<NdForm>(ts.size(), NdForm::kLegacy));
  CheckRoundTrip("params v3 all dtypes", ts, std::vector<NdForm>(ts.size(), NdForm::kV3));
  // 0-d scalars: V3 and V2 (as MXNet 1.9.1 writes them); in V1 and legacy ndim 0 is a none array.
  std::vector<Tensor> scalars;
  for (DType dt : kAllDTypes) {
    scalars.push_back(PatternTensor(std::string("s_") + binmx::rt::DTypeName(dt), dt, {}, 99));
  }
  CheckRoundTrip("params v3 scalars", scalars, std::vector<NdForm>(scalars.size(), NdForm::kV3));
  CheckRoundTrip("params v2 scalars", scalars, std::vector<NdForm>(scalars.size(), NdForm::kV2));
  // Word and vector boundaries of the element count, every dtype.
  std::vector<Tensor> bounds;
  uint32_t salt = 500;
  for (DType dt : kAllDTypes) {
    for (int64_t n : {1, 2, 3, 7, 8, 9, 63, 64, 65, 127, 128, 129, 511, 512, 513}) {
      bounds.push_back(PatternTensor(
          std::string(binmx::rt::DTypeName(dt)) + "_" + std::to_string(n), dt, {n}, salt++));
    }
  }
  CheckRoundTrip("params boundary sizes", bounds, {});
  CheckRoundTrip("params mixed forms", {ts[0], ts[4], ts[8], scalars[0]},
                 {NdForm::kV2, NdForm::kV1, NdForm::kLegacy, NdForm::kV3});
  CheckRoundTrip("params empty list", {}, {});
  // Names are arbitrary bytes, including empty and non-ASCII.
  CheckRoundTrip("params odd names",
                 {PatternTensor("", DType::kFloat32, {1}, 1),
                  PatternTensor("\xC3\xA9 x\n", DType::kFloat32, {1}, 2)},
                 {});

  // ToFloat32 / Int64Data.
  ExpectOk("params float conversion", [] {
    Tensor h = Tensor::Allocate("h", DType::kFloat16, {12});
    const uint16_t halves[12] = {0x3C00, 0xC000, 0x7C00, 0xFC00, 0x0001, 0x03FF,
                                 0x0400, 0x7BFF, 0x8000, 0x3555, 0x0000, 0x7E00};
    std::memcpy(h.mutable_data(), halves, sizeof(halves));
    const std::vector<float> f = binmx::rt::ToFloat32(h);
    Check(f[0] == 1.0f && f[1] == -2.0f, "half 1, -2");
    Check(std::isinf(f[2]) && f[2] > 0 && std::isinf(f[3]) && f[3] < 0, "half +-inf");
    Check(f[4] == std::ldexp(1.0f, -24), "half smallest subnormal");
    Check(f[5] == std::ldexp(1023.0f, -24), "half largest subnormal");
    Check(f[6] == std::ldexp(1.0f, -14), "half smallest normal");
    Check(f[7] == 65504.0f, "half max");
    Check(f[8] == 0.0f && std::signbit(f[8]), "half -0");
    Check(f[9] == 0x1.554p-2f, "half 0x3555");
    Check(f[10] == 0.0f && !std::signbit(f[10]), "half +0");
    Check(std::isnan(f[11]), "half NaN");
    // Every finite half against ldexp (exact in float32).
    Tensor all = Tensor::Allocate("all", DType::kFloat16, {65536});
    uint16_t* p = static_cast<uint16_t*>(all.mutable_data());
    for (uint32_t i = 0; i < 65536; ++i) p[i] = static_cast<uint16_t>(i);
    const std::vector<float> g = binmx::rt::ToFloat32(all);
    int bad = 0;
    for (uint32_t i = 0; i < 65536; ++i) {
      const uint32_t e = (i >> 10) & 0x1F, m = i & 0x3FF;
      if (e == 0x1F) {
        bad += m ? !std::isnan(g[i]) : !std::isinf(g[i]);
        continue;
      }
      float ref = e ? std::ldexp(static_cast<float>(1024 + m), static_cast<int>(e) - 25)
                    : std::ldexp(static_cast<float>(m), -24);
      if (i & 0x8000) ref = -ref;
      bad += !(g[i] == ref && std::signbit(g[i]) == std::signbit(ref));
    }
    Check(bad == 0, "every half converts exactly (" + std::to_string(bad) + " wrong)");

    Tensor d = Tensor::Allocate("d", DType::kFloat64, {3});
    const double dv[3] = {0.1, -1e300, 3.0};
    std::memcpy(d.mutable_data(), dv, sizeof(dv));
    const std::vector<float> fd = binmx::rt::ToFloat32(d);
    Check(fd[0] == 0.1f && std::isinf(fd[1]) && fd[1] < 0 && fd[2] == 3.0f, "float64 rounding");
    Tensor s = PatternTensor("s", DType::kFloat32, {5}, 3);
    const std::vector<float> fs = binmx::rt::ToFloat32(s);
    Check(std::memcmp(fs.data(), s.data(), 20) == 0, "float32 copy");
    Check(binmx::rt::ToFloat32(Tensor::Allocate("e", DType::kFloat32, {0, 4})).empty(),
          "empty ToFloat32");
    Tensor i64 = PatternTensor("i", DType::kInt64, {4}, 4);
    Check(binmx::rt::Int64Data(i64) == i64.data(), "Int64Data");
  });
  for (DType dt : {DType::kUint8, DType::kInt32, DType::kInt8, DType::kInt64}) {
    ExpectError(std::string("ToFloat32 on ") + binmx::rt::DTypeName(dt),
                [dt] { binmx::rt::ToFloat32(Tensor::Allocate("arg:w", dt, {2})); },
                {"'arg:w'", binmx::rt::DTypeName(dt), "floating-point"});
  }
  ExpectError("Int64Data on float32",
              [] { binmx::rt::Int64Data(Tensor::Allocate("idx", DType::kFloat32, {2})); },
              {"'idx' is float32; expected int64"});
  Check(Tensor::Allocate("z", DType::kFloat32, {}).NumElements() == 1, "0-d has one element");
  Check(Tensor::Allocate("z", DType::kFloat32, {3, 0}).NumElements() == 0 &&
            Tensor::Allocate("z", DType::kFloat32, {3, 0}).data() != nullptr,
        "empty tensor has a non-null buffer");
  ExpectError("Allocate 33 dims",
              [] { Tensor::Allocate("x", DType::kInt8, std::vector<int64_t>(33, 1)); },
              {"33 dimensions"});
  ExpectError("Allocate negative dim", [] { Tensor::Allocate("x", DType::kInt8, {-1}); },
              {"outside [0, 2^40]"});
  ExpectError("NumElements overflow",
              [] {
                Tensor t;
                t.name = "big";
                t.shape = {int64_t{1} << 40, int64_t{1} << 40};
                t.NumElements();
              },
              {"'big'", "invalid shape"});
  Check(std::string(binmx::rt::DTypeName(DType::kFloat16)) == "float16" &&
            binmx::rt::DTypeSize(DType::kFloat16) == 2 &&
            binmx::rt::DTypeSize(DType::kInt64) == 8 && binmx::rt::DTypeSize(DType::kUint8) == 1,
        "DTypeName / DTypeSize");
}

void TestParamsInvalid() {
  const std::vector<Tensor> ts = {PatternTensor("arg:w", DType::kFloat32, {4, 3}, 1),
                                  PatternTensor("aux:m", DType::kInt64, {2}, 2)};
  std::vector<FieldMark> marks;
  const std::string good = WriteParams(ts, {}, true, &marks);
  // Offsets in `good`: header 0..23; array 0 at 24: magic 24, stype 28, ndim 32, dims 36/44,
  // dev 52/56, flag 60, data 64..111; array 1 at 112: magic, stype 116, ndim 120, dim 124,
  // dev 132/136, flag 140, data 144..159; name count 160; names 168.
  ExpectError("params empty", [] { P(""); }, {"m.params: empty file"});
  ExpectError("params short", [&] { P(good.substr(0, 20)); }, {"20 bytes is too short"});
  ExpectError("params bad list magic",
              [&] {
                std::string s = good;
                s[0] = 0x13;
                P(s);
              },
              {"not an MXNet NDArray list", "0x113"});
  ExpectError("params huge count",
              [&] {
                std::string s = good;
                Poke<uint64_t>(&s, 16, ~uint64_t{0});
                P(s);
              },
              {"array count 18446744073709551615 cannot fit"});
  ExpectError("params count too large by one",
              [&] {
                std::string s = good;
                Poke<uint64_t>(&s, 16, 3);
                P(s);
              },
              {"m.params"});
  ExpectError("params names missing", [&] { P(WriteParams(ts, {}, false)); },
              {"names missing", "2 arrays without names"});
  ExpectError("params names absent entirely", [&] { P(good.substr(0, 160)); }, {"names missing"});
  ExpectError("params name count mismatch",
              [&] {
                std::string s = good;
                Poke<uint64_t>(&s, 160, 1);
                P(s);
              },
              {"1 names for 2 arrays"});
  ExpectError("params duplicate names",
              [] {
                P(WriteParams({PatternTensor("a", DType::kInt8, {1}, 1),
                               PatternTensor("b", DType::kInt8, {1}, 1),
                               PatternTensor("a", DType::kInt8, {1}, 1)}));
              },
              {"duplicate name 'a' (arrays 0 and 2)"});
  ExpectError("params trailing garbage", [&] { P(good + "xyz"); }, {"3 bytes of trailing garbage"});
  ExpectError("params name length huge",
              [&] {
                std::string s = good;
                Poke<uint64_t>(&s, 168, uint64_t{1} << 62);
                P(s);
              },
              {"name 0 has length 4611686018427387904"});
  for (int32_t stype : {1, 2, -1, 7}) {
    ExpectError("params storage type " + std::to_string(stype),
                [&] {
                  std::string s = good;
                  Poke<int32_t>(&s, 28, stype);
                  P(s);
                },
                {"array 0 of 2 (at byte 24)", "storage type " + std::to_string(stype),
                 "only dense arrays"});
  }
  ExpectError("params csr names",
              [&] {
                std::string s = good;
                Poke<int32_t>(&s, 116, 2);
                P(s);
              },
              {"array 1 of 2 (at byte 112)", "storage type 2 (csr)"});
  ExpectError("params v2 none array",
              [&] {
                std::string s = good;
                Poke<int32_t>(&s, 32, -1);
                P(s);
              },
              {"none array (ndim -1"});
  ExpectError("params v2 ndim 0 reads a 0-d array",
              [&] {
                std::string s = good;
                Poke<int32_t>(&s, 32, 0);  // the dims now read as context (device type 4) and type
                P(s);
              },
              {"unknown device type 4"});
  ExpectError("params v3 none array",
              [] {
                std::string s =
                    WriteParams({PatternTensor("a", DType::kInt8, {1}, 1)}, {NdForm::kV3});
                Poke<int32_t>(&s, 32, -1);
                P(s);
              },
              {"none array (ndim -1"});
  ExpectError("params v1 none array",
              [] {
                std::string s =
                    WriteParams({PatternTensor("a", DType::kInt8, {1}, 1)}, {NdForm::kV1});
                Poke<int32_t>(&s, 28, 0);
                P(s);
              },
              {"none array"});
  ExpectError("params legacy none array",
              [] {
                std::string s =
                    WriteParams({PatternTensor("a", DType::kInt8, {1}, 1)}, {NdForm::kLegacy});
                Poke<uint32_t>(&s, 24, 0);
                P(s);
              },
              {"none array (legacy"});
  ExpectError("params ndim 33",
              [&] {
                std::string s = good;
                Poke<int32_t>(&s, 32, 33);
                P(s);
              },
              {"ndim 33 is outside [0, 32]"});
  ExpectError("params ndim negative",
              [&] {
                std::string s = good;
                Poke<int32_t>(&s, 32, -5);
                P(s);
              },
              {"ndim -5"});
  ExpectError("params legacy ndim 33 is an unknown magic",
              [] {
                std::string s =
                    WriteParams({PatternTensor("a", DType::kInt8, {1}, 1)}, {NdForm::kLegacy});
                Poke<uint32_t>(&s, 24, 33);
                P(s);
              },
              {"unknown NDArray magic 0x21"});
  ExpectError("params dim -1",
              [&] {
                std::string s = good;
                Poke<int64_t>(&s, 36, -1);
                P(s);
              },
              {"dimension 0 is -1"});
  ExpectError("params dim 2^40+1",
              [&] {
                std::string s = good;
                Poke<int64_t>(&s, 44, (int64_t{1} << 40) + 1);
                P(s);
              },
              {"dimension 1 is 1099511627777"});
  ExpectError(
      "params dim 2^40 (allowed) exceeds the file",
      [&] {
        std::string s = good;
        Poke<int64_t>(&s, 36, int64_t{1} << 40);
        P(s);
      },
      {"shape (1099511627776, 3) float32 needs 13194139533312 bytes but the file has 130 left"});
  ExpectError("params element count overflow",
              [] {
                ByteWriter w;
                w.U64(0x112);
                w.U64(0);
                w.U64(1);
                w.U32(0xF993FAC9u);
                w.I32(0);
                w.I32(4);
                for (int i = 0; i < 4; ++i) w.I64(int64_t{1} << 40);
                w.I32(1);
                w.I32(0);
                w.I32(0);
                P(w.bytes());
              },
              {"overflows a 64-bit size"});
  ExpectError("params byte count overflow",
              [] {
                ByteWriter w;
                w.U64(0x112);
                w.U64(0);
                w.U64(1);
                w.U32(0xF993FAC9u);
                w.I32(0);
                w.I32(2);
                w.I64(int64_t{1} << 40);
                w.I64(int64_t{1} << 22);  // 2^62 int64 elements fit an int64; 2^65 bytes do not
                w.I32(1);
                w.I32(0);
                w.I32(6);
                P(w.bytes());
              },
              {"overflows a 64-bit size"});
  for (int32_t flag : {7, 8, 12, -1, 1000}) {
    ExpectError("params type flag " + std::to_string(flag),
                [&] {
                  std::string s = good;
                  Poke<int32_t>(&s, 60, flag);
                  P(s);
                },
                {"data type flag " + std::to_string(flag), "is not supported"});
  }
  ExpectError("params type flag 7 named",
              [&] {
                std::string s = good;
                Poke<int32_t>(&s, 60, 7);
                P(s);
              },
              {"(bool)"});
  ExpectError("params bad magic",
              [&] {
                std::string s = good;
                Poke<uint32_t>(&s, 24, 0xDEADBEEF);
                P(s);
              },
              {"unknown NDArray magic 0xDEADBEEF"});
  ExpectError("params unknown device",
              [&] {
                std::string s = good;
                Poke<int32_t>(&s, 52, 9);
                P(s);
              },
              {"unknown device type 9"});
  ExpectError("params data one byte short",
              [&] {
                P(good.substr(0, 111));  // array 0's data is bytes 64..111
              },
              {"needs 48 bytes but the file has 47 left"});
  // Every truncation of a valid file is an error (never a read past the end); only the whole
  // file parses.
  {
    const std::vector<Tensor> many = AllDTypeTensors();
    const std::string full = WriteParams(many, {NdForm::kV2, NdForm::kV1, NdForm::kLegacy});
    int wrong = 0;
    for (size_t n = 0; n < full.size(); ++n) {
      try {
        P(full.substr(0, n));
        ++wrong;
      } catch (const Error&) {
      }
    }
    Check(wrong == 0,
          "every truncation of the params file fails (" + std::to_string(wrong) + " parsed)");
    Check(P(full).size() == many.size(), "the whole params file parses");
  }
}

// ---- .npy ------------------------------------------------------------------------------------

std::string NpyBytes(const std::string& dict, int major = 1) {
  std::string header = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header.push_back('\n');
  std::string s = "\x93NUMPY";
  s.push_back(static_cast<char>(major));
  s.push_back('\0');
  const uint32_t n = static_cast<uint32_t>(header.size());
  s.append(reinterpret_cast<const char*>(&n), major == 1 ? 2 : 4);
  return s + header;
}

std::string Floats(std::initializer_list<float> v) {
  return std::string(reinterpret_cast<const char*>(v.begin()), v.size() * sizeof(float));
}

void TestNpyValid() {
  ExpectOk("npy exact header", [] {
    const float v[6] = {1, 2, 3, 4, 5, 6};
    const std::string s = binmx::rt::SerializeNpyFloat32(v, {2, 3});
    const std::string expect_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    Check(s.size() == 128 + 24, "npy (2,3) size " + std::to_string(s.size()));
    Check(s.compare(0, 8, std::string("\x93NUMPY\x01\x00", 8)) == 0, "npy magic/version");
    Check(static_cast<uint8_t>(s[8]) == 118 && s[9] == 0, "npy header length 118");
    Check(s.compare(10, expect_dict.size(), expect_dict) == 0, "npy dict text");
    Check(s[127] == '\n' && s[126] == ' ', "npy padding");
  });
  const std::vector<std::vector<int64_t>> shapes = {
      {},   {0},  {1},  {5},   {2, 3}, {0, 3}, {3, 0, 2},    {1, 1, 1, 1},
      {63}, {64}, {65}, {127}, {128},  {129},  {2, 3, 4, 5}, {257, 513}};
  for (const auto& shape : shapes) {
    const std::string label = "npy round trip " + binmx::rt::ShapeString(shape);
    ExpectOk(label, [&] {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      std::vector<float> v(static_cast<size_t>(n));
      for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.37f - 11.0f;
      const std::string s = binmx::rt::SerializeNpyFloat32(v.data(), shape);
      uint16_t hl;
      std::memcpy(&hl, &s[8], 2);
      Check((10 + hl) % 64 == 0, label + ": header not 64-aligned");
      const NpyArray a = N(s);
      Check(a.shape == shape, label + ": shape");
      Check(a.data == v, label + ": data");
    });
  }
  ExpectOk("npy header variants", [] {
    const std::string data = Floats({1.5f, -2.0f, 3.25f, 0.0f, 5.0f, 6.0f});
    const std::vector<std::string> dicts = {
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
        "{\"shape\": (2,3), \"fortran_order\": False, \"descr\": \"<f4\"}",
        "{'descr':'|f4','fortran_order':False,'shape':(2L, 3L)}",
        "  {  'descr' : '<f4' ,\n 'fortran_order' : False , 'shape' : ( 2 , 3 , ) , }  ",
    };
    for (const std::string& d : dicts) {
      for (int major : {1, 2, 3}) {
        const NpyArray a = N(NpyBytes(d, major) + data);
        Check(a.shape == std::vector<int64_t>({2, 3}) && a.data.size() == 6 && a.data[0] == 1.5f &&
                  a.data[2] == 3.25f,
              "npy header variant v" + std::to_string(major) + ": " + d);
      }
    }
    Check(N(NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': ()}") + Floats({7.0f}))
                  .data == std::vector<float>({7.0f}),
          "npy 0-d");
    // fortran_order True is accepted by numpy only as written; we refuse it even for 1-d.
  });
}

void TestNpyInvalid() {
  const std::string d23 = Floats({1, 2, 3, 4, 5, 6});
  auto with = [](const std::string& descr, const std::string& order, const std::string& shape) {
    return NpyBytes("{'descr': " + descr + ", 'fortran_order': " + order + ", 'shape': " + shape +
                    ", }");
  };
  const std::vector<std::pair<std::string, std::string>> dtypes = {
      {"'<f8'", "'<f8' (float64)"},        {"'>f4'", "'>f4' (big-endian float32)"},
      {"'<i4'", "'<i4' (int32)"},          {"'|u1'", "'|u1' (uint8)"},
      {"'|O'", "'|O' (object array)"},     {"'<f2'", "'<f2' (float16)"},
      {"'<c8'", "'<c8' (complex64)"},      {"'|b1'", "'|b1' (bool)"},
      {"'<U3'", "'<U3' (unicode string)"}, {"'=f4'", "'=f4' (float32)"},
      {"'f4'", "'f4' (float32)"},
  };
  for (const auto& c : dtypes) {
    ExpectError("npy dtype " + c.first, [&] { N(with(c.first, "False", "(2, 3)") + d23); },
                {"x.npy: dtype " + c.second, "expected little-endian float32"});
  }
  ExpectError("npy structured dtype",
              [&] { N(with("[('a', '<f4'), ('b', '<i4')]", "False", "(2,)") + d23); },
              {"structured dtype"});
  ExpectError("npy fortran order", [&] { N(with("'<f4'", "True", "(2, 3)") + d23); },
              {"fortran_order is True"});
  ExpectError("npy missing key", [&] { N(NpyBytes("{'descr': '<f4', 'shape': (2, 3)}") + d23); },
              {"no 'fortran_order'"});
  ExpectError(
      "npy extra key",
      [&] {
        N(NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}") + d23);
      },
      {"unexpected key 'x'"});
  ExpectError(
      "npy duplicate key",
      [&] {
        N(NpyBytes("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6,)}") +
          d23);
      },
      {"duplicate key 'descr'"});
  ExpectError("npy shape not a tuple", [&] { N(with("'<f4'", "False", "(6)") + d23); },
              {"not a tuple"});
  ExpectError("npy negative dim", [&] { N(with("'<f4'", "False", "(-1, 6)") + d23); },
              {"non-negative integer"});
  ExpectError("npy dim > 2^40", [&] { N(with("'<f4'", "False", "(1099511627777,)") + d23); },
              {"exceeds 2^40"});
  ExpectError("npy 65 dims",
              [&] {
                std::string shape = "(";
                for (int i = 0; i < 65; ++i) shape += "1, ";
                N(with("'<f4'", "False", shape + ")") + d23);
              },
              {"more than 64 dimensions"});
  ExpectError("npy size overflow",
              [&] { N(with("'<f4'", "False", "(1099511627776, 1099511627776)") + d23); },
              {"overflows a 64-bit size"});
  ExpectError("npy data short", [&] { N(with("'<f4'", "False", "(2, 4)") + d23); },
              {"shape (2, 4) float32 needs 32 bytes of data but the file has 24 left"});
  ExpectError("npy trailing data", [&] { N(with("'<f4'", "False", "(5,)") + d23); },
              {"4 bytes of trailing data"});
  ExpectError("npy bad magic",
              [&] {
                std::string s = with("'<f4'", "False", "(2, 3)") + d23;
                s[1] = 'M';
                N(s);
              },
              {"not a .npy file"});
  ExpectError("npy version 4.0",
              [&] {
                std::string s = with("'<f4'", "False", "(2, 3)") + d23;
                s[6] = 4;
                N(s);
              },
              {"unsupported .npy version 4.0"});
  ExpectError("npy version 1.1",
              [&] {
                std::string s = with("'<f4'", "False", "(2, 3)") + d23;
                s[7] = 1;
                N(s);
              },
              {"unsupported .npy version 1.1"});
  ExpectError("npy header length past the end",
              [&] {
                std::string s = with("'<f4'", "False", "(2, 3)") + d23;
                s[8] = '\xFF';
                s[9] = '\xFF';
                N(s);
              },
              {"header length 65535 exceeds"});
  ExpectError("npy v2 header length 4 GiB",
              [] {
                std::string s =
                    NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': ()}", 2);
                const uint32_t n = 0xFFFFFFFFu;
                std::memcpy(&s[8], &n, 4);
                N(s + Floats({1}));
              },
              {"header length 4294967295 exceeds"});
  ExpectError("npy empty", [] { N(""); }, {"x.npy: empty file"});
  ExpectError("npy tiny", [] { N("\x93NUM"); }, {"too short"});
  ExpectError(
      "npy garbage after dict",
      [&] { N(NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (6,)} x") + d23); },
      {"after the header dict"});
  ExpectError("npy unterminated", [&] { N(NpyBytes("{'descr': '<f4") + d23); },
              {"unterminated string"});
  ExpectError("npy bool literal", [&] { N(with("'<f4'", "0", "(6,)") + d23); },
              {"expected True or False"});
  {
    const std::string full = with("'<f4'", "False", "(2, 3)") + d23;
    int wrong = 0;
    for (size_t n = 0; n < full.size(); ++n) {
      try {
        N(full.substr(0, n));
        ++wrong;
      } catch (const Error&) {
      }
    }
    Check(wrong == 0, "every truncation of the .npy file fails");
  }
}

// ---- files -----------------------------------------------------------------------------------

void TestFiles() {
  const std::string dir = TempDir();
  const std::vector<Tensor> ts = AllDTypeTensors();
  const std::string params = dir + "/m-0000.params";
  WriteRaw(params, WriteParams(ts));
  ExpectOk("ReadParams", [&] {
    const std::vector<Tensor> got = binmx::rt::ReadParams(params);
    Check(got.size() == ts.size(), "ReadParams count");
    for (size_t i = 0; i < got.size(); ++i) {
      Check(SameTensor(got[i], ts[i]), "ReadParams array " + std::to_string(i));
    }
  });
  ExpectError("ReadParams missing", [&] { binmx::rt::ReadParams(dir + "/nope.params"); },
              {"nope.params", "No such file or directory"});
  ExpectError("ReadParams directory", [&] { binmx::rt::ReadParams(dir); }, {"Is a directory"});
  WriteRaw(dir + "/empty.params", "");
  ExpectError("ReadParams empty", [&] { binmx::rt::ReadParams(dir + "/empty.params"); },
              {"empty.params: empty file"});
  WriteRaw(dir + "/trunc.params", WriteParams(ts).substr(0, 300));
  ExpectError("ReadParams truncated", [&] { binmx::rt::ReadParams(dir + "/trunc.params"); },
              {"trunc.params:", "left"});
  const std::string fifo = dir + "/fifo.params";
  if (mkfifo(fifo.c_str(), 0600) == 0) {  // opening must not block waiting for a writer
    ExpectError("ReadParams FIFO", [&] { binmx::rt::ReadParams(fifo); }, {"not a regular file"});
    ExpectError("ReadNpy FIFO", [&] { binmx::rt::ReadNpyFloat32(fifo); }, {"not a regular file"});
  }
  ExpectError("ReadParams /dev/null", [] { binmx::rt::ReadParams("/dev/null"); },
              {"not a regular file"});
  ExpectOk("ReadWholeFile", [&] {
    const std::string text = "{\"nodes\": []}\n";
    WriteRaw(dir + "/s.json", text);
    Check(binmx::rt::ReadWholeFile(dir + "/s.json", 1 << 20) == text, "ReadWholeFile content");
    Check(binmx::rt::ReadWholeFile(dir + "/s.json", text.size()) == text, "ReadWholeFile at limit");
    Check(binmx::rt::ReadWholeFile(dir + "/empty.params", 10).empty(), "ReadWholeFile empty");
  });
  ExpectError("ReadWholeFile over the limit", [&] { binmx::rt::ReadWholeFile(dir + "/s.json", 5); },
              {"s.json': the file is 14 bytes, more than the limit of 5"});
  ExpectError("ReadWholeFile missing", [&] { binmx::rt::ReadWholeFile(dir + "/x.json", 5); },
              {"x.json", "No such file or directory"});
  ExpectError("ReadWholeFile directory", [&] { binmx::rt::ReadWholeFile(dir, 5); },
              {"Is a directory"});
  ExpectError("ReadParams empty path", [] { binmx::rt::ReadParams(""); }, {"empty path"});

  const float v[6] = {1, -2, 3.5f, 4, 5, 6};
  const std::string npy = dir + "/x.npy";
  ExpectOk("WriteNpyFloat32 / ReadNpyFloat32", [&] {
    binmx::rt::WriteNpyFloat32(npy, v, {3, 2});
    const NpyArray a = binmx::rt::ReadNpyFloat32(npy);
    Check(a.shape == std::vector<int64_t>({3, 2}) && std::memcmp(a.data.data(), v, sizeof(v)) == 0,
          "npy file round trip");
    binmx::rt::WriteNpyFloat32(npy, v, {6});  // overwrite in place
    Check(binmx::rt::ReadNpyFloat32(npy).shape == std::vector<int64_t>({6}), "npy overwrite");
    binmx::rt::WriteNpyFloat32(dir + "/empty.npy", nullptr, {0, 5});
    Check(binmx::rt::ReadNpyFloat32(dir + "/empty.npy").data.empty(), "npy empty file");
  });
  ExpectError("ReadNpy missing", [&] { binmx::rt::ReadNpyFloat32(dir + "/none.npy"); },
              {"none.npy", "No such file or directory"});
  ExpectError("ReadNpy directory", [&] { binmx::rt::ReadNpyFloat32(dir); }, {"Is a directory"});
  WriteRaw(dir + "/zero.npy", "");
  ExpectError("ReadNpy empty", [&] { binmx::rt::ReadNpyFloat32(dir + "/zero.npy"); },
              {"zero.npy: empty file"});
  ExpectError("WriteNpy to a directory", [&] { binmx::rt::WriteNpyFloat32(dir, v, {6}); },
              {"cannot write '" + dir + "'", "Is a directory"});
  ExpectError("WriteNpy to a trailing slash",
              [&] { binmx::rt::WriteNpyFloat32(dir + "/", v, {6}); }, {"Is a directory"});
  ExpectError("WriteNpy into a missing directory",
              [&] { binmx::rt::WriteNpyFloat32(dir + "/no/such/x.npy", v, {6}); },
              {"cannot write", "No such file or directory"});
  ExpectError("WriteNpy negative dim", [&] { binmx::rt::WriteNpyFloat32(npy, v, {-1}); },
              {"invalid dimension"});
  ExpectError("WriteNpy null data", [&] { binmx::rt::WriteNpyFloat32(npy, nullptr, {2}); },
              {"null data pointer"});
  // A full disk, simulated with the file-size limit (EFBIG instead of ENOSPC, the same path).
  {
    struct rlimit old_limit;
    getrlimit(RLIMIT_FSIZE, &old_limit);
    struct rlimit small = old_limit;
    small.rlim_cur = 4096;
    signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &small) == 0) {
      std::vector<float> big(100000, 1.0f);
      ExpectError("WriteNpy past the file-size limit",
                  [&] { binmx::rt::WriteNpyFloat32(dir + "/big.npy", big.data(), {100000}); },
                  {"cannot write '" + dir + "/big.npy'", "File too large"});
      setrlimit(RLIMIT_FSIZE, &old_limit);
    }
    signal(SIGXFSZ, SIG_DFL);
  }
  // No temporary files are left behind by the failed writes.
  for (const std::string& name : ListDir(dir)) {
    Check(name.find(".tmp-") == std::string::npos, "temporary file left behind: " + name);
  }
  ExpectOk("WriteNpy honours the umask", [&] {
    struct stat st;
    Check(stat(npy.c_str(), &st) == 0, "stat x.npy");
    const mode_t mask = umask(0);
    umask(mask);
    Check((st.st_mode & 0777) == (0666 & ~mask), "x.npy mode");
  });
  for (const std::string& name : ListDir(dir)) unlink((dir + "/" + name).c_str());
  rmdir(dir.c_str());
}

}  // namespace

int main() {
  TestJsonValid();
  TestJsonInvalid();
  TestParamsValid();
  TestParamsInvalid();
  TestNpyValid();
  TestNpyInvalid();
  TestFiles();
  std::printf("formats_test: %d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}

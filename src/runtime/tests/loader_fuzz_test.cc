/*
 * binmx runtime: a deterministic mutation fuzzer for the file readers (run under ASan + UBSan by
 * tests/test_runtime_fuzz.py).
 *
 * Each target starts from valid seed files built here in memory (an MXNet NDArray list in all its
 * forms and dtypes, a realistic MXNet symbol JSON, .npy files of versions 1.0-3.0), applies
 * 1-4 stacked mutations per input drawn from a seeded xorshift PRNG (bit flips; byte overwrites
 * with 0, 0xFF, 0x7F, 0x80...; random bytes; truncation; insertion; deletion; huge values written
 * over the recorded size fields and over random 2/4/8-byte words; duplicated chunks; JSON and
 * header tokens; deep nesting; splices of two seeds) and feeds the result to the reader. Every
 * input must either load (and then its data is read in full) or throw binmx::rt::Error; any
 * other exception is a failure, and a crash or out-of-bounds access stops the run under the
 * sanitizers. The target table in Targets() is the one place to add new loaders.
 *
 * Usage: rt_loader_fuzz_test [--iterations N] [--seed S] [--target NAME]
 * Prints "<target>: N mutations (R rejected with binmx::rt::Error, A accepted)" per target and
 * "loader_fuzz_test: F failures"; exits non-zero when F > 0.
 */
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "file_io.h"
#include "json.h"
#include "model.h"
#include "npy.h"
#include "params.h"
#include "rt_common.h"
#include "test_writers.h"

namespace rt = binmx::rt;
using rt::testing::FieldMark;
using rt::testing::NdForm;
using rt::testing::PatternTensor;
using rt::testing::WriteParams;

namespace {

struct Seed {
  std::string bytes;
  std::vector<FieldMark> fields;  // size-like fields to aim huge values at
};

struct FuzzTarget {
  std::string name;
  std::vector<Seed> seeds;
  std::function<void(const std::string& bytes)> load;
  int iterations;  // default; --iterations overrides for memory targets
  bool text;       // add JSON / header token mutations
};

// ---- PRNG --------------------------------------------------------------------------------------

class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed ? seed : 0x9E3779B97F4A7C15ull) {}
  uint64_t Next() {  // xorshift64*
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return s_ * 0x2545F4914F6CDD1Dull;
  }
  size_t Below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(Next() % n); }

 private:
  uint64_t s_;
};

// ---- mutations ---------------------------------------------------------------------------------

const uint8_t kInterestingBytes[] = {0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE, 0x20, 0x22,
                                     0x5C, 0x5B, 0x7B, 0x0A, 0xC3, 0xED, 0xF4, 0x30};

uint64_t InterestingWord(Rng* rng, size_t file_size) {
  static const uint64_t kValues[] = {0,
                                     1,
                                     2,
                                     0x7F,
                                     0x80,
                                     0xFF,
                                     0x7FFF,
                                     0xFFFF,
                                     0x7FFFFFFF,
                                     0x80000000,
                                     0xFFFFFFFF,
                                     uint64_t{1} << 32,
                                     uint64_t{1} << 40,
                                     (uint64_t{1} << 40) + 1,
                                     uint64_t{1} << 62,
                                     uint64_t{1} << 63,
                                     ~uint64_t{0},
                                     ~uint64_t{0} - 1,
                                     33,
                                     65,
                                     0xF993FAC8,
                                     0xF993FAC9,
                                     0xF993FACA,
                                     0x112};
  const size_t n = sizeof(kValues) / sizeof(kValues[0]);
  const size_t pick = rng->Below(n + 3);
  if (pick < n) return kValues[pick];
  if (pick == n) return file_size;
  if (pick == n + 1) return file_size + 1;
  return rng->Next();
}

void WriteWord(std::string* s, size_t offset, int width, uint64_t value) {
  for (int i = 0; i < width && offset + i < s->size(); ++i) {
    (*s)[offset + i] = static_cast<char>((value >> (8 * i)) & 0xFF);
  }
}

const char* const kTokens[] = {"[",
                               "]",
                               "{",
                               "}",
                               "\"",
                               "\\",
                               "\\u",
                               "\\ud800",
                               "\\udc00",
                               ",",
                               ":",
                               "1e999",
                               "-",
                               "0",
                               "null",
                               "true",
                               "1.5e-400",
                               "\x00",
                               "\xFF",
                               "\xC3",
                               "(",
                               ")",
                               "'",
                               "True",
                               "L",
                               "'<f8'",
                               "'>f4'",
                               "(-1,)",
                               "(1099511627776, 1099511627776)",
                               "\"op\"",
                               "[[0, 0, 0]]",
                               "\"nodes\":",
                               "99999999999999999999",
                               "\t\n\r "};

std::string Mutate(const std::string& seed, const std::vector<FieldMark>& fields,
                   const std::vector<Seed>& all_seeds, bool text, Rng* rng) {
  std::string s = seed;
  const int rounds = 1 + static_cast<int>(rng->Below(4));
  for (int r = 0; r < rounds; ++r) {
    const size_t op = rng->Below(text ? 12 : 10);
    switch (op) {
      case 0:  // bit flip
        if (!s.empty()) s[rng->Below(s.size())] ^= static_cast<char>(1u << rng->Below(8));
        break;
      case 1:  // interesting byte
        if (!s.empty()) {
          s[rng->Below(s.size())] =
              static_cast<char>(kInterestingBytes[rng->Below(sizeof(kInterestingBytes))]);
        }
        break;
      case 2:  // random byte
        if (!s.empty()) s[rng->Below(s.size())] = static_cast<char>(rng->Next());
        break;
      case 3:  // truncate
        s.resize(rng->Below(s.size() + 1));
        break;
      case 4: {  // insert random bytes
        std::string ins(1 + rng->Below(16), '\0');
        for (char& c : ins) c = static_cast<char>(rng->Next());
        s.insert(rng->Below(s.size() + 1), ins);
        break;
      }
      case 5:  // delete a range
        if (!s.empty()) {
          const size_t at = rng->Below(s.size());
          s.erase(at, 1 + rng->Below(32));
        }
        break;
      case 6:  // a huge (or otherwise interesting) value over a recorded size field
        if (!fields.empty()) {
          const FieldMark& f = fields[rng->Below(fields.size())];
          WriteWord(&s, f.offset, f.width, InterestingWord(rng, s.size()));
          break;
        }
        [[fallthrough]];
      case 7: {  // an interesting 2/4/8-byte word anywhere (aligned or not)
        if (s.empty()) break;
        static const int kWidths[] = {2, 4, 8};
        WriteWord(&s, rng->Below(s.size()), kWidths[rng->Below(3)], InterestingWord(rng, s.size()));
        break;
      }
      case 8: {  // duplicate a chunk somewhere else
        if (s.empty()) break;
        const size_t from = rng->Below(s.size());
        const size_t len = 1 + rng->Below(std::min<size_t>(s.size() - from, 64));
        const std::string chunk = s.substr(from, len);
        s.insert(rng->Below(s.size() + 1), chunk);
        break;
      }
      case 9: {  // splice: a prefix of this input and a suffix of another seed
        const std::string& other = all_seeds[rng->Below(all_seeds.size())].bytes;
        const size_t cut = rng->Below(s.size() + 1);
        const size_t from = rng->Below(other.size() + 1);
        s = s.substr(0, cut) + other.substr(from);
        break;
      }
      case 10: {  // a token
        const char* tok = kTokens[rng->Below(sizeof(kTokens) / sizeof(kTokens[0]))];
        const std::string t = tok[0] == '\0' ? std::string(1, '\0') : std::string(tok);
        const size_t at = rng->Below(s.size() + 1);
        if (rng->Below(2)) {
          s.insert(at, t);
        } else {
          s.replace(at, std::min(t.size(), s.size() - at), t);
        }
        break;
      }
      case 11: {  // deep nesting around the limit
        const size_t depth = 500 + rng->Below(30);
        const char* open = rng->Below(2) ? "[" : "{\"k\":";
        std::string nest;
        for (size_t i = 0; i < depth; ++i) nest += open;
        s.insert(rng->Below(s.size() + 1), nest);
        break;
      }
    }
  }
  return s;
}

// ---- loads (read everything a caller would) -----------------------------------------------------

volatile uint64_t g_sink = 0;

void Touch(const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum += p[i];
  g_sink = g_sink + sum;
}

void UseTensors(const std::vector<rt::Tensor>& tensors) {
  for (const rt::Tensor& t : tensors) {
    if (static_cast<size_t>(t.NumElements()) * rt::DTypeSize(t.dtype) != t.nbytes()) {
      rt::Fail("internal: tensor size mismatch");  // would be a reader bug; reported as Error
    }
    Touch(t.data(), t.nbytes());
    if (t.dtype == rt::DType::kFloat32 || t.dtype == rt::DType::kFloat64 ||
        t.dtype == rt::DType::kFloat16) {
      const std::vector<float> f = rt::ToFloat32(t);
      Touch(f.data(), f.size() * sizeof(float));
    }
    if (t.dtype == rt::DType::kInt64) Touch(rt::Int64Data(t), t.nbytes());
  }
}

// Walks a parsed symbol the way the engine will (nodes / inputs / attrs / arg_nodes / heads),
// then every value iteratively.
void UseSymbol(const rt::Json& root) {
  uint64_t sum = 0;
  std::vector<const rt::Json*> stack = {&root};
  while (!stack.empty()) {
    const rt::Json* v = stack.back();
    stack.pop_back();
    sum += static_cast<uint64_t>(v->type()) + v->size();
    if (v->IsString()) sum += v->AsString("s").size();
    for (const rt::Json& item : v->items()) stack.push_back(&item);
    for (const auto& member : v->members()) {
      sum += member.first.size();
      stack.push_back(&member.second);
    }
  }
  g_sink = g_sink + sum;
  const rt::Json* nodes = root.Find("nodes");
  if (nodes == nullptr) rt::Fail("symbol: no 'nodes'");
  for (size_t i = 0; i < nodes->size(); ++i) {
    const rt::Json& node = nodes->at(i);
    const rt::Json* op = node.Find("op");
    const rt::Json* name = node.Find("name");
    if (op == nullptr || name == nullptr) rt::Fail("symbol: node without op/name");
    sum += op->AsString("op").size() + name->AsString("name").size();
    if (const rt::Json* inputs = node.Find("inputs")) {
      for (size_t k = 0; k < inputs->size(); ++k) {
        const rt::Json& entry = inputs->at(k);
        const int64_t src = entry.at(0).AsInt("input node");
        if (src < 0 || static_cast<size_t>(src) >= nodes->size()) rt::Fail("symbol: bad input");
        sum += static_cast<uint64_t>(src + entry.at(1).AsInt("input output index"));
      }
    }
    if (const rt::Json* attrs = node.Find("attrs")) {
      for (const auto& kv : attrs->members()) sum += kv.second.AsString("attr").size();
    }
  }
  if (const rt::Json* args = root.Find("arg_nodes")) {
    for (size_t i = 0; i < args->size(); ++i) sum += args->at(i).AsInt("arg node");
  }
  if (const rt::Json* heads = root.Find("heads")) {
    for (size_t i = 0; i < heads->size(); ++i) sum += heads->at(i).at(0).AsInt("head");
  }
  g_sink = g_sink + sum;
}

// ---- seeds -------------------------------------------------------------------------------------

std::vector<Seed> ParamsSeeds() {
  std::vector<Seed> seeds;
  const std::vector<rt::DType> dtypes = {
      rt::DType::kFloat32, rt::DType::kFloat64, rt::DType::kFloat16, rt::DType::kUint8,
      rt::DType::kInt32,   rt::DType::kInt8,    rt::DType::kInt64};
  std::vector<rt::Tensor> ts;
  uint32_t salt = 1;
  for (rt::DType dt : dtypes) {
    const std::string n = rt::DTypeName(dt);
    ts.push_back(PatternTensor("arg:" + n + "_w", dt, {3, 2, 2}, salt++));
    ts.push_back(PatternTensor("aux:" + n + "_v", dt, {5}, salt++));
  }
  ts.push_back(PatternTensor("arg:scalar", rt::DType::kFloat32, {}, salt++));
  ts.push_back(PatternTensor("arg:empty", rt::DType::kFloat16, {0, 4}, salt++));
  Seed v2;
  v2.bytes = WriteParams(ts, {}, true, &v2.fields);
  seeds.push_back(v2);
  const std::vector<rt::Tensor> small = {ts[0], ts[3], ts[5], ts[12], ts[14]};
  Seed mixed;
  mixed.bytes =
      WriteParams(small, {NdForm::kV1, NdForm::kLegacy, NdForm::kV3, NdForm::kV2, NdForm::kV3},
                  true, &mixed.fields);
  seeds.push_back(mixed);
  Seed unnamed;
  unnamed.bytes = WriteParams({ts[1], ts[2]}, {}, false, &unnamed.fields);
  seeds.push_back(unnamed);  // fails (names missing) unmutated; mutations may reach elsewhere
  return seeds;
}

// A realistic MXNet 1.9 symbol file: a binary LeNet as binmx's converter writes it.
const char kSymbolSeed[] = R"JSON({
 "nodes": [
  {
   "op": "null",
   "name": "data",
   "inputs": []
  },
  {
   "op": "null",
   "name": "conv1_weight",
   "attrs": {
    "kernel": "(5, 5)",
    "num_filter": "20"
   },
   "inputs": []
  },
  {
   "op": "null",
   "name": "conv1_bias",
   "attrs": {
    "kernel": "(5, 5)",
    "num_filter": "20"
   },
   "inputs": []
  },
  {
   "op": "Convolution",
   "name": "conv1",
   "attrs": {
    "kernel": "(5, 5)",
    "num_filter": "20",
    "pad": "(0, 0)",
    "stride": "(1, 1)"
   },
   "inputs": [
    [0, 0, 0],
    [1, 0, 0],
    [2, 0, 0]
   ]
  },
  {
   "op": "null",
   "name": "bn1_gamma",
   "attrs": {
    "eps": "0.001",
    "fix_gamma": "False"
   },
   "inputs": []
  },
  {
   "op": "null",
   "name": "bn1_beta",
   "attrs": {
    "eps": "0.001",
    "fix_gamma": "False"
   },
   "inputs": []
  },
  {
   "op": "null",
   "name": "bn1_moving_mean",
   "attrs": {
    "__init__": "[\"zero\", {}]",
    "eps": "0.001"
   },
   "inputs": []
  },
  {
   "op": "null",
   "name": "bn1_moving_var",
   "attrs": {
    "__init__": "[\"one\", {}]",
    "eps": "0.001"
   },
   "inputs": []
  },
  {
   "op": "BatchNorm",
   "name": "bn1",
   "attrs": {
    "eps": "0.001",
    "fix_gamma": "False",
    "use_global_stats": "True"
   },
   "inputs": [
    [3, 0, 0],
    [4, 0, 0],
    [5, 0, 0],
    [6, 0, 1],
    [7, 0, 1]
   ]
  },
  {
   "op": "Pooling",
   "name": "pool1",
   "attrs": {
    "kernel": "(2, 2)",
    "pool_type": "max",
    "stride": "(2, 2)"
   },
   "inputs": [
    [8, 0, 0]
   ]
  },
  {
   "op": "QActivation",
   "name": "qact1",
   "attrs": {
    "act_bit": "1",
    "backward_only": "False"
   },
   "inputs": [
    [9, 0, 0]
   ]
  },
  {
   "op": "null",
   "name": "qconv2_weight",
   "attrs": {
    "act_bit": "1",
    "kernel": "(5, 5)",
    "num_filter": "50",
    "no_bias": "True",
    "scaling_factor": "False",
    "pad_value": "-1"
   },
   "inputs": []
  },
  {
   "op": "QConvolution",
   "name": "qconv2",
   "attrs": {
    "act_bit": "1",
    "kernel": "(5, 5)",
    "num_filter": "50",
    "no_bias": "True",
    "scaling_factor": "False",
    "pad_value": "-1",
    "weight_bit": "1"
   },
   "inputs": [
    [10, 0, 0],
    [11, 0, 0]
   ]
  },
  {
   "op": "Flatten",
   "name": "flatten",
   "inputs": [
    [12, 0, 0]
   ]
  },
  {
   "op": "null",
   "name": "fc_weight",
   "attrs": {
    "num_hidden": "10"
   },
   "inputs": []
  },
  {
   "op": "null",
   "name": "fc_bias",
   "attrs": {
    "num_hidden": "10"
   },
   "inputs": []
  },
  {
   "op": "FullyConnected",
   "name": "fc",
   "attrs": {
    "num_hidden": "10",
    "flatten": "True"
   },
   "inputs": [
    [13, 0, 0],
    [14, 0, 0],
    [15, 0, 0]
   ]
  },
  {
   "op": "null",
   "name": "softmax_label",
   "inputs": []
  },
  {
   "op": "SoftmaxOutput",
   "name": "softmax\u00e9\ud83d\ude00",
   "inputs": [
    [16, 0, 0],
    [17, 0, 0]
   ]
  }
 ],
 "arg_nodes": [0, 1, 2, 4, 5, 6, 7, 11, 14, 15, 17],
 "node_row_ptr": [0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21],
 "heads": [
  [18, 0, 0]
 ],
 "attrs": {
  "mxnet_version": [
   "int",
   10901
  ],
  "scale": 0.0015,
  "flag": true,
  "none": null
 }
})JSON";

std::vector<Seed> JsonSeeds() {
  return {Seed{kSymbolSeed, {}}, Seed{R"({"nodes": [], "arg_nodes": [], "heads": []})", {}}};
}

std::vector<Seed> NpySeeds() {
  std::vector<Seed> seeds;
  const float v[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -7.0f};
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{2, 3}, {}, {0}, {6}, {1, 1, 2, 3}}) {
    Seed s;
    s.bytes = rt::SerializeNpyFloat32(v, shape);
    s.fields = {{8, 2}};  // the header length
    seeds.push_back(s);
  }
  for (int major : {2, 3}) {  // versions 2.0 / 3.0: a 4-byte header length
    std::string dict = "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (3, 2), }";
    dict.append((64 - (12 + dict.size() + 1) % 64) % 64, ' ');
    dict.push_back('\n');
    Seed s;
    s.bytes = std::string("\x93NUMPY", 6) + static_cast<char>(major) + '\0';
    const uint32_t n = static_cast<uint32_t>(dict.size());
    s.bytes.append(reinterpret_cast<const char*>(&n), 4);
    s.bytes += dict;
    s.bytes.append(reinterpret_cast<const char*>(v), sizeof(v));
    s.fields = {{8, 4}};
    seeds.push_back(s);
  }
  return seeds;
}

std::string g_tmp_dir;

void WriteTemp(const std::string& path, const std::string& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    std::perror(path.c_str());
    std::exit(2);
  }
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

const uint8_t* U8(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

// The fuzz targets. Add a loader here (e.g. whole-model loading: symbol + params + planning)
// as {name, seeds, load, iterations, text}; load must read everything it returns.
// Whole-model loading (symbol + params -> plan) and one run, on a stored fixture whose one
// file is mutated while the other stays valid. Runs on zeros of the fixture's input shape.
std::string ReadFixture(const std::string& rel) {
  return rt::ReadWholeFile(std::string(BINMX_RT_FIXTURES_DIR) + "/" + rel, size_t{64} << 20);
}

void LoadAndRun(const std::string& json, const std::string& params,
                const std::vector<int64_t>& shape) {
  std::unique_ptr<rt::Model> m = rt::Model::LoadFromMemory(json, params, shape, 1, "fuzz");
  std::vector<float> x(static_cast<size_t>(m->input_count()), 0.25f);
  std::vector<float> y(static_cast<size_t>(m->output_count()));
  m->Run(x.data(), y.data());
  Touch(y.data(), y.size() * sizeof(float));
}

void AddModelTargets(std::vector<FuzzTarget>* t, const std::string& name,
                     const std::vector<int64_t>& shape) {
  const std::string json = ReadFixture(name + "/model-symbol.json");
  const std::string params = ReadFixture(name + "/model-0001.params");
  t->push_back({"model_symbol_" + name,
                {Seed{json, {}}},
                [params, shape](const std::string& b) { LoadAndRun(b, params, shape); },
                1000,
                true});
  t->push_back({"model_params_" + name,
                {Seed{params, {}}},
                [json, shape](const std::string& b) { LoadAndRun(json, b, shape); },
                1000,
                false});
}

std::vector<FuzzTarget> Targets() {
  std::vector<FuzzTarget> t;
  t.push_back(
      {"params", ParamsSeeds(),
       [](const std::string& b) { UseTensors(rt::ParseParams(U8(b), b.size(), "fuzz.params")); },
       4000, false});
  t.push_back({"params_file", ParamsSeeds(),
               [](const std::string& b) {
                 const std::string path = g_tmp_dir + "/fuzz.params";
                 WriteTemp(path, b);
                 UseTensors(rt::ReadParams(path));
               },
               1000, false});
  t.push_back({"symbol_json", JsonSeeds(),
               [](const std::string& b) { UseSymbol(rt::ParseJson(b, "fuzz-symbol.json")); }, 4000,
               true});
  t.push_back({"npy", NpySeeds(),
               [](const std::string& b) {
                 const rt::NpyArray a = rt::ParseNpyFloat32(U8(b), b.size(), "fuzz.npy");
                 Touch(a.data.data(), a.data.size() * sizeof(float));
               },
               4000, true});
  t.push_back({"npy_file", NpySeeds(),
               [](const std::string& b) {
                 const std::string path = g_tmp_dir + "/fuzz.npy";
                 WriteTemp(path, b);
                 const rt::NpyArray a = rt::ReadNpyFloat32(path);
                 Touch(a.data.data(), a.data.size() * sizeof(float));
               },
               1000, true});
  AddModelTargets(&t, "lenet_fold", {2, 1, 28, 28});
  AddModelTargets(&t, "qops_fold", {2, 6, 11, 11});
  return t;
}

std::string Hex(const std::string& s, size_t limit) {
  std::string out;
  char buf[4];
  for (size_t i = 0; i < s.size() && i < limit; ++i) {
    std::snprintf(buf, sizeof(buf), "%02x", static_cast<uint8_t>(s[i]));
    out += buf;
  }
  if (s.size() > limit) out += "...";
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  long iterations = -1;
  uint64_t seed = 0x5EED0B1A;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--iterations" && i + 1 < argc) {
      iterations = std::strtol(argv[++i], nullptr, 10);
    } else if (a == "--seed" && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 0);
    } else if (a == "--target" && i + 1 < argc) {
      only = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--iterations N] [--seed S] [--target NAME]\n", argv[0]);
      return 2;
    }
  }
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/rt_fuzz_XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    std::perror("mkdtemp");
    return 2;
  }
  g_tmp_dir = buf.data();
  std::printf("loader_fuzz_test: seed 0x%llX\n", static_cast<unsigned long long>(seed));

  int failures = 0;
  for (const FuzzTarget& target : Targets()) {
    if (!only.empty() && target.name != only) continue;
    // Every seed but the deliberately unnamed params list must load unmutated.
    for (size_t k = 0; k < target.seeds.size(); ++k) {
      try {
        target.load(target.seeds[k].bytes);
      } catch (const rt::Error& e) {
        if (std::string(e.what()).find("names missing") == std::string::npos) {
          std::printf("FAIL: %s: seed %zu does not load: %s\n", target.name.c_str(), k, e.what());
          ++failures;
        }
      }
    }
    uint64_t name_hash = 0xCBF29CE484222325ull;  // FNV-1a: the same stream on every platform
    for (char c : target.name) name_hash = (name_hash ^ static_cast<uint8_t>(c)) * 0x100000001B3ull;
    Rng rng(seed ^ name_hash);
    const bool file_target = target.name.find("_file") != std::string::npos;
    const long n = iterations > 0 && !file_target ? iterations : target.iterations;
    long rejected = 0, accepted = 0;
    for (long it = 0; it < n; ++it) {
      const Seed& s = target.seeds[rng.Below(target.seeds.size())];
      const std::string input = Mutate(s.bytes, s.fields, target.seeds, target.text, &rng);
      try {
        target.load(input);
        ++accepted;
      } catch (const rt::Error&) {
        ++rejected;
      } catch (const std::exception& e) {
        ++failures;
        std::printf("FAIL: %s: mutation %ld threw %s (not binmx::rt::Error); input %s\n",
                    target.name.c_str(), it, e.what(), Hex(input, 256).c_str());
      } catch (...) {
        ++failures;
        std::printf("FAIL: %s: mutation %ld threw a non-std exception; input %s\n",
                    target.name.c_str(), it, Hex(input, 256).c_str());
      }
    }
    std::printf("%s: %ld mutations (%ld rejected with binmx::rt::Error, %ld accepted)\n",
                target.name.c_str(), n, rejected, accepted);
    std::fflush(stdout);
  }
  unlink((g_tmp_dir + "/fuzz.params").c_str());
  unlink((g_tmp_dir + "/fuzz.npy").c_str());
  rmdir(g_tmp_dir.c_str());
  std::printf("loader_fuzz_test: %d failures\n", failures);
  return failures == 0 ? 0 : 1;
}

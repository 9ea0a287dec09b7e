/*
 * binmx runtime: a test tool that exposes the file readers to tests/test_runtime_formats.py,
 * which compares them with files written by MXNet and NumPy.
 *
 *   rt_formats_dump_test params FILE OUTDIR   ReadParams(FILE); writes OUTDIR/index.json
 *       ([{"name", "dtype", "shape", "nbytes", "aligned"}], in file order), OUTDIR/<i>.bin (the
 *       raw data bytes) and, for float dtypes, OUTDIR/<i>.f32.npy (ToFloat32 via WriteNpyFloat32)
 *   rt_formats_dump_test npy IN OUT           ReadNpyFloat32(IN), then WriteNpyFloat32(OUT)
 *   rt_formats_dump_test json IN              ParseJson(IN) printed back as compact JSON
 * On a binmx::rt::Error it prints "error: <message>" to stderr and exits 1.
 */
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "json.h"
#include "npy.h"
#include "params.h"
#include "rt_common.h"

namespace rt = binmx::rt;

namespace {

void EmitString(const std::string& s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(static_cast<char>(c));
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      *out += buf;
    } else {
      out->push_back(static_cast<char>(c));  // UTF-8 passes through
    }
  }
  out->push_back('"');
}

void Emit(const rt::Json& v, std::string* out) {
  switch (v.type()) {
    case rt::Json::Type::kNull:
      *out += "null";
      break;
    case rt::Json::Type::kBool:
      *out += v.AsBool("") ? "true" : "false";
      break;
    case rt::Json::Type::kNumber: {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%.17g", v.AsNumber(""));
      *out += buf;
      break;
    }
    case rt::Json::Type::kString:
      EmitString(v.AsString(""), out);
      break;
    case rt::Json::Type::kArray:
      out->push_back('[');
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) out->push_back(',');
        Emit(v.at(i), out);
      }
      out->push_back(']');
      break;
    case rt::Json::Type::kObject:
      out->push_back('{');
      for (size_t i = 0; i < v.members().size(); ++i) {
        if (i) out->push_back(',');
        EmitString(v.members()[i].first, out);
        out->push_back(':');
        Emit(v.members()[i].second, out);
      }
      out->push_back('}');
      break;
  }
}

void WriteBytes(const std::string& path, const void* data, size_t n) {
  std::ofstream f(path, std::ios::binary);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  if (!f) rt::Fail("cannot write " + path);
}

int DumpParams(const std::string& file, const std::string& outdir) {
  const std::vector<rt::Tensor> tensors = rt::ReadParams(file);
  std::string index = "[";
  for (size_t i = 0; i < tensors.size(); ++i) {
    const rt::Tensor& t = tensors[i];
    if (i) index += ",\n ";
    index += "{\"name\": ";
    EmitString(t.name, &index);
    index += ", \"dtype\": \"" + std::string(rt::DTypeName(t.dtype)) + "\", \"shape\": [";
    for (size_t d = 0; d < t.shape.size(); ++d)
      index += (d ? ", " : "") + std::to_string(t.shape[d]);
    index += "], \"nbytes\": " + std::to_string(t.nbytes()) + ", \"aligned\": " +
             (reinterpret_cast<uintptr_t>(t.data()) % 64 == 0 ? "true" : "false") + "}";
    WriteBytes(outdir + "/" + std::to_string(i) + ".bin", t.data(), t.nbytes());
    if (t.dtype == rt::DType::kFloat32 || t.dtype == rt::DType::kFloat64 ||
        t.dtype == rt::DType::kFloat16) {
      const std::vector<float> f = rt::ToFloat32(t);
      rt::WriteNpyFloat32(outdir + "/" + std::to_string(i) + ".f32.npy", f.data(), t.shape);
    }
  }
  index += "]\n";
  WriteBytes(outdir + "/index.json", index.data(), index.size());
  std::printf("%zu arrays\n", tensors.size());
  return 0;
}

int DumpNpy(const std::string& in, const std::string& out) {
  const rt::NpyArray a = rt::ReadNpyFloat32(in);
  rt::WriteNpyFloat32(out, a.data.data(), a.shape);
  std::printf("shape %s\n", rt::ShapeString(a.shape).c_str());
  return 0;
}

int DumpJson(const std::string& in) {
  std::ifstream f(in, std::ios::binary);
  if (!f) rt::Fail("cannot open " + in);
  std::stringstream ss;
  ss << f.rdbuf();
  const rt::Json v = rt::ParseJson(ss.str(), in);
  std::string out;
  Emit(v, &out);
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() == 3 && args[0] == "params") return DumpParams(args[1], args[2]);
    if (args.size() == 3 && args[0] == "npy") return DumpNpy(args[1], args[2]);
    if (args.size() == 2 && args[0] == "json") return DumpJson(args[1]);
  } catch (const rt::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: rt_formats_dump_test params FILE OUTDIR | npy IN OUT | json IN\n");
  return 2;
}

/*
 * Test helper: runs one runtime float layer (float_ops.h) on raw float32 files, so that
 * tests/test_runtime_float.py can compare it with MXNet's own operators.
 *   rt_float_io conv N,C,H,W,F,kh,kw,sh,sw,ph,pw,dh,dw,groups BIAS RELU POOL ISA THREADS X W B OUT
 *     POOL: "none" or kh,kw,sh,sw,ph,pw,full (full: 0 valid, 1 full); BIAS: 0/1 (B is read
 *     only with 1); RELU: 0/1.
 *   rt_float_io dense ROWS,DEPTH,HIDDEN BIAS RELU ISA THREADS X W B OUT
 * Files are raw little-endian float32 in NCHW / OIHW / (rows, depth) / (hidden, depth) order.
 * Prints "path=<kernel path> shape=d0,d1,..." and writes OUT; exits 1 with a message on error.
 */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "float_ops.h"

namespace {

std::vector<int64_t> Ints(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(std::stoll(item));
  return v;
}

std::vector<float> Read(const char* path, size_t count) {
  std::FILE* f = std::fopen(path, "rb");
  if (f == nullptr) throw std::runtime_error(std::string("cannot open ") + path);
  std::vector<float> v(count);
  const size_t got = std::fread(v.data(), sizeof(float), count, f);
  std::fclose(f);
  if (got != count) {
    throw std::runtime_error(std::string(path) + ": expected " + std::to_string(count) +
                             " floats, read " + std::to_string(got));
  }
  return v;
}

void Write(const char* path, const std::vector<float>& v) {
  std::FILE* f = std::fopen(path, "wb");
  if (f == nullptr) throw std::runtime_error(std::string("cannot write ") + path);
  std::fwrite(v.data(), sizeof(float), v.size(), f);
  std::fclose(f);
}

binmx::Isa ParseIsaOrThrow(const char* name) {
  binmx::Isa isa;
  if (!binmx::ParseIsa(name, &isa)) throw std::runtime_error(std::string("bad isa ") + name);
  return isa;
}

int Conv(char** a) {
  const std::vector<int64_t> v = Ints(a[0]);
  if (v.size() != 14) throw std::runtime_error("conv geometry needs 14 integers");
  binmx::rt::FloatConvGeometry g{};
  g.batch = v[0], g.channels = v[1], g.in_h = v[2], g.in_w = v[3], g.filters = v[4];
  g.kernel_h = v[5], g.kernel_w = v[6], g.stride_h = v[7], g.stride_w = v[8];
  g.pad_h = v[9], g.pad_w = v[10], g.dilate_h = v[11], g.dilate_w = v[12], g.groups = v[13];
  const bool bias = std::atoi(a[1]) != 0, relu = std::atoi(a[2]) != 0;
  binmx::rt::MaxPoolSpec pool{};
  const bool has_pool = std::strcmp(a[3], "none") != 0;
  if (has_pool) {
    const std::vector<int64_t> p = Ints(a[3]);
    if (p.size() != 7) throw std::runtime_error("pool needs 7 integers");
    pool = {p[0], p[1], p[2], p[3], p[4], p[5], p[6] != 0};
  }
  const binmx::Isa isa = ParseIsaOrThrow(a[4]);
  const int threads = std::atoi(a[5]);
  const std::vector<float> x = Read(a[6], g.batch * g.channels * g.in_h * g.in_w);
  const int64_t cg = g.channels / (g.groups > 0 ? g.groups : 1);
  const std::vector<float> w = Read(a[7], g.filters * cg * g.kernel_h * g.kernel_w);
  const std::vector<float> b = bias ? Read(a[8], g.filters) : std::vector<float>();
  binmx::rt::FloatConv conv(g, w.data(), bias ? b.data() : nullptr, relu,
                            has_pool ? &pool : nullptr, isa);
  const std::vector<int64_t> s = conv.OutputShape();
  std::vector<float> y(s[0] * s[1] * s[2] * s[3]);
  std::vector<float> scratch(conv.ScratchBytes(threads) / sizeof(float) + 16);
  conv.Run(x.data(), y.data(), scratch.data(), threads);
  Write(a[9], y);
  std::printf("path=%s shape=%lld,%lld,%lld,%lld\n", conv.PathName(), (long long)s[0],
              (long long)s[1], (long long)s[2], (long long)s[3]);
  return 0;
}

int Dense(char** a) {
  const std::vector<int64_t> v = Ints(a[0]);
  if (v.size() != 3) throw std::runtime_error("dense needs rows,depth,hidden");
  const bool bias = std::atoi(a[1]) != 0, relu = std::atoi(a[2]) != 0;
  const binmx::Isa isa = ParseIsaOrThrow(a[3]);
  const int threads = std::atoi(a[4]);
  const std::vector<float> x = Read(a[5], v[0] * v[1]);
  const std::vector<float> w = Read(a[6], v[2] * v[1]);
  const std::vector<float> b = bias ? Read(a[7], v[2]) : std::vector<float>();
  binmx::rt::FloatDense dense(v[1], v[2], w.data(), bias ? b.data() : nullptr, relu, isa);
  std::vector<float> y(v[0] * v[2]);
  std::vector<float> scratch(dense.ScratchBytes(v[0], threads) / sizeof(float) + 16);
  dense.Run(x.data(), v[0], y.data(), scratch.data(), threads);
  Write(a[8], y);
  std::printf("path=%s shape=%lld,%lld\n", dense.PathName(), (long long)v[0], (long long)v[2]);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 12 && std::strcmp(argv[1], "conv") == 0) return Conv(argv + 2);
    if (argc == 11 && std::strcmp(argv[1], "dense") == 0) return Dense(argv + 2);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rt_float_io: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr,
               "usage: %s conv N,C,H,W,F,kh,kw,sh,sw,ph,pw,dh,dw,groups BIAS RELU POOL ISA "
               "THREADS X W B OUT\n       %s dense ROWS,DEPTH,HIDDEN BIAS RELU ISA THREADS X W B "
               "OUT\n",
               argv[0], argv[0]);
  return 2;
}

/*
 * binmx runtime: the .npy reader and writer declared in npy.h. The header dict is read by a
 * small tokenizer over its bytes (never evaluated); the data is read straight into the result.
 */
#include "npy.h"

#include <cstdio>
#include <cstring>

#include "file_io.h"
#include "params.h"  // ShapeString, kMaxTensorDim
#include "rt_common.h"

namespace binmx {
namespace rt {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
constexpr size_t kMaxHeader = size_t{1} << 20;  // numpy writes < 1 KiB; this bounds hostile ones

// "float64" for "<f8"-style descriptors, for error messages.
std::string DescribeDescr(const std::string& descr) {
  if (descr.size() < 2) return "unknown dtype";
  const char order = descr[0];
  std::string body =
      descr.substr(order == '<' || order == '>' || order == '|' || order == '=' ? 1 : 0);
  std::string kind;
  if (body.empty()) return "unknown dtype";
  const char k = body[0];
  const std::string bytes = body.substr(1);
  auto bits = [&]() {
    int n = 0;
    for (char c : bytes) {
      if (c < '0' || c > '9' || n > 1000) return std::string("?");
      n = n * 10 + (c - '0');
    }
    return std::to_string(n * 8);
  };
  switch (k) {
    case 'f':
      kind = "float" + bits();
      break;
    case 'i':
      kind = "int" + bits();
      break;
    case 'u':
      kind = "uint" + bits();
      break;
    case 'c':
      kind = "complex" + bits();
      break;
    case 'b':
      kind = "bool";
      break;
    case 'O':
      return "object array";
    case 'U':
      return "unicode string";
    case 'S':
    case 'a':
      return "byte string";
    case 'V':
      return "void / raw bytes";
    case 'M':
      return "datetime64";
    case 'm':
      return "timedelta64";
    default:
      return "unknown dtype";
  }
  if (order == '>') return "big-endian " + kind;
  return kind;
}

class HeaderParser {
 public:
  HeaderParser(const std::string& header, const std::string& what) : h_(header), what_(what) {}

  void Parse(std::string* descr, bool* fortran_order, std::vector<int64_t>* shape) {
    bool have_descr = false, have_order = false, have_shape = false;
    SkipSpace();
    ExpectChar('{', "the header dict's '{'");
    while (true) {
      SkipSpace();
      if (Peek() == '}') {
        ++pos_;
        break;
      }
      const std::string key = ParseString("a header key");
      SkipSpace();
      ExpectChar(':', "':' after a header key");
      SkipSpace();
      if (key == "descr") {
        if (have_descr) Error("duplicate key 'descr'");
        if (Peek() == '[') {
          Error(
              "'descr' is a structured dtype (a list of fields); expected little-endian "
              "float32 ('<f4')");
        }
        *descr = ParseString("the 'descr' value");
        have_descr = true;
      } else if (key == "fortran_order") {
        if (have_order) Error("duplicate key 'fortran_order'");
        *fortran_order = ParseBool("the 'fortran_order' value");
        have_order = true;
      } else if (key == "shape") {
        if (have_shape) Error("duplicate key 'shape'");
        *shape = ParseShape();
        have_shape = true;
      } else {
        Error("unexpected key '" + key + "' (expected 'descr', 'fortran_order', 'shape')");
      }
      SkipSpace();
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      if (Peek() == '}') {
        ++pos_;
        break;
      }
      Error("expected ',' or '}' in the header dict, got " + Describe());
    }
    SkipSpace();
    if (pos_ != h_.size()) Error("unexpected " + Describe() + " after the header dict");
    if (!have_descr) Error("the header has no 'descr'");
    if (!have_order) Error("the header has no 'fortran_order'");
    if (!have_shape) Error("the header has no 'shape'");
  }

 private:
  [[noreturn]] void Error(const std::string& message) const {
    Fail(what_ + ": bad .npy header (at header byte " + std::to_string(pos_) + "): " + message);
  }

  char Peek() const { return pos_ < h_.size() ? h_[pos_] : '\0'; }

  std::string Describe() const {
    if (pos_ >= h_.size()) return "the end of the header";
    const unsigned char c = static_cast<unsigned char>(h_[pos_]);
    if (c >= 0x20 && c < 0x7F) return std::string("'") + static_cast<char>(c) + "'";
    char buf[16];
    std::snprintf(buf, sizeof(buf), "byte 0x%02X", c);
    return buf;
  }

  void SkipSpace() {
    while (pos_ < h_.size() &&
           (h_[pos_] == ' ' || h_[pos_] == '\t' || h_[pos_] == '\n' || h_[pos_] == '\r')) {
      ++pos_;
    }
  }

  void ExpectChar(char c, const char* what) {
    if (Peek() != c || pos_ >= h_.size())
      Error(std::string("expected ") + what + ", got " + Describe());
    ++pos_;
  }

  std::string ParseString(const char* what) {
    const char quote = Peek();
    if (pos_ >= h_.size() || (quote != '\'' && quote != '"')) {
      Error(std::string("expected ") + what + " (a quoted string), got " + Describe());
    }
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= h_.size()) Error(std::string("unterminated string in ") + what);
      const char c = h_[pos_++];
      if (c == quote) return out;
      if (c == '\\') Error(std::string("escape sequences are not supported in ") + what);
      if (out.size() >= 256) Error(std::string(what) + " is longer than 256 characters");
      out.push_back(c);
    }
  }

  bool ParseBool(const char* what) {
    if (h_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (h_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    Error(std::string("expected True or False for ") + what + ", got " + Describe());
  }

  std::vector<int64_t> ParseShape() {
    ExpectChar('(', "'(' starting the 'shape' tuple");
    std::vector<int64_t> shape;
    bool trailing_comma = false;
    while (true) {
      SkipSpace();
      if (Peek() == ')') {
        ++pos_;
        break;
      }
      if (Peek() < '0' || Peek() > '9') {
        Error("expected a non-negative integer in 'shape', got " + Describe());
      }
      int64_t dim = 0;
      while (Peek() >= '0' && Peek() <= '9') {
        dim = dim * 10 + (h_[pos_] - '0');
        ++pos_;
        if (dim > kMaxTensorDim) Error("a 'shape' dimension exceeds 2^40");
      }
      if (Peek() == 'L') ++pos_;  // Python 2 long literal
      if (shape.size() >= static_cast<size_t>(kMaxNpyDims)) {
        Error("'shape' has more than " + std::to_string(kMaxNpyDims) + " dimensions");
      }
      shape.push_back(dim);
      SkipSpace();
      trailing_comma = false;
      if (Peek() == ',') {
        ++pos_;
        trailing_comma = true;
        continue;
      }
      if (Peek() == ')') {
        ++pos_;
        break;
      }
      Error("expected ',' or ')' in 'shape', got " + Describe());
    }
    if (shape.size() == 1 && !trailing_comma) {
      Error("'shape' (n) is not a tuple (a 1-tuple is written (n,))");
    }
    return shape;
  }

  const std::string& h_;
  const std::string& what_;
  size_t pos_ = 0;
};

NpyArray ParseNpy(ByteSource* src) {
  const std::string& what = src->what();
  if (src->size() == 0) Fail(what + ": empty file (expected a .npy array)");
  if (src->size() < kMagicSize + 2 + 2) {
    Fail(what + ": " + std::to_string(src->size()) + " bytes is too short for a .npy file");
  }
  char magic[kMagicSize];
  src->Read(magic, kMagicSize, "the magic");
  if (std::memcmp(magic, kMagic, kMagicSize) != 0) {
    Fail(what + ": not a .npy file (it does not start with \"\\x93NUMPY\")");
  }
  uint8_t version[2];
  src->Read(version, 2, "the version");
  size_t header_size = 0;
  if (version[0] == 1 && version[1] == 0) {
    uint16_t n;
    src->Read(&n, sizeof(n), "the header length");
    header_size = n;
  } else if ((version[0] == 2 || version[0] == 3) && version[1] == 0) {
    uint32_t n;
    src->Read(&n, sizeof(n), "the header length");
    header_size = n;
  } else {
    Fail(what + ": unsupported .npy version " + std::to_string(version[0]) + "." +
         std::to_string(version[1]) + " (1.0, 2.0 and 3.0 are supported)");
  }
  if (header_size > kMaxHeader || header_size > src->remaining()) {
    Fail(what + ": .npy header length " + std::to_string(header_size) + " exceeds the " +
         std::to_string(src->remaining()) + " bytes left" +
         (header_size > kMaxHeader ? " (or the 1 MiB limit)" : ""));
  }
  std::string header(header_size, '\0');
  src->Read(header.data(), header_size, "the header");

  std::string descr;
  bool fortran_order = false;
  NpyArray out;
  HeaderParser(header, what).Parse(&descr, &fortran_order, &out.shape);
  if (descr != "<f4" && descr != "|f4") {
    Fail(what + ": dtype '" + descr + "' (" + DescribeDescr(descr) +
         ") is not supported; expected little-endian float32 ('<f4')");
  }
  if (fortran_order) {
    Fail(what +
         ": fortran_order is True (a column-major array); save a C-ordered array "
         "(numpy.ascontiguousarray) instead");
  }
  int64_t count = 1;
  size_t nbytes = 0;
  for (int64_t d : out.shape) {
    if (__builtin_mul_overflow(count, d, &count)) {
      Fail(what + ": shape " + ShapeString(out.shape) + " overflows a 64-bit size");
    }
  }
  if (__builtin_mul_overflow(static_cast<size_t>(count), sizeof(float), &nbytes)) {
    Fail(what + ": shape " + ShapeString(out.shape) + " overflows a 64-bit size");
  }
  if (nbytes > src->remaining()) {
    Fail(what + ": shape " + ShapeString(out.shape) + " float32 needs " + std::to_string(nbytes) +
         " bytes of data but the file has " + std::to_string(src->remaining()) + " left");
  }
  if (nbytes < src->remaining()) {
    Fail(what + ": " + std::to_string(src->remaining() - nbytes) +
         " bytes of trailing data after the " + std::to_string(nbytes) + " bytes that shape " +
         ShapeString(out.shape) + " needs");
  }
  out.data.resize(static_cast<size_t>(count));
  src->Read(out.data.data(), nbytes, "the array data");
  return out;
}

}  // namespace

NpyArray ReadNpyFloat32(const std::string& path) {
  ByteSource src(path);
  return ParseNpy(&src);
}

NpyArray ParseNpyFloat32(const uint8_t* bytes, size_t size, const std::string& what) {
  ByteSource src(bytes, size, what);
  return ParseNpy(&src);
}

std::string SerializeNpyFloat32(const float* data, const std::vector<int64_t>& shape) {
  if (shape.size() > static_cast<size_t>(kMaxNpyDims)) {
    Fail("cannot write a .npy array of " + std::to_string(shape.size()) + " dimensions (at most " +
         std::to_string(kMaxNpyDims) + ")");
  }
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0 || d > kMaxTensorDim || __builtin_mul_overflow(count, d, &count)) {
      Fail("cannot write a .npy array of shape " + ShapeString(shape) + " (invalid dimension)");
    }
  }
  size_t nbytes = 0;
  if (__builtin_mul_overflow(static_cast<size_t>(count), sizeof(float), &nbytes)) {
    Fail("cannot write a .npy array of shape " + ShapeString(shape) + " (too large)");
  }
  if (data == nullptr && count > 0) Fail("cannot write a .npy array from a null data pointer");
  std::string dict =
      "{'descr': '<f4', 'fortran_order': False, 'shape': " + ShapeString(shape) + ", }";
  // magic (6) + version (2) + length (2) + dict + padding + '\n' is a multiple of 64.
  const size_t unpadded = kMagicSize + 4 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  if (dict.size() > 0xFFFF)
    Fail("cannot write a .npy header of " + std::to_string(dict.size()) + " bytes");
  std::string out(kMagic, kMagicSize);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(dict.size() & 0xFF));
  out.push_back(static_cast<char>(dict.size() >> 8));
  out += dict;
  const size_t header_end = out.size();
  out.resize(header_end + nbytes);
  if (nbytes) std::memcpy(&out[header_end], data, nbytes);
  return out;
}

void WriteNpyFloat32(const std::string& path, const float* data,
                     const std::vector<int64_t>& shape) {
  const std::string bytes = SerializeNpyFloat32(data, shape);
  WriteFileAtomically(path, bytes.data(), bytes.size());
}

}  // namespace rt
}  // namespace binmx

/*
 * binmx runtime: the NDArray list reader declared in params.h. The parser runs over a
 * ByteSource (memory or file); see params.h for the layout and the checks.
 */
#include "params.h"

#include <cstdlib>
#include <cstring>
#include <unordered_set>

#include "file_io.h"
#include "rt_common.h"

namespace binmx {
namespace rt {

namespace {

constexpr uint64_t kListMagic = 0x112;
constexpr uint32_t kMagicV1 = 0xF993FAC8u;
constexpr uint32_t kMagicV2 = 0xF993FAC9u;
constexpr uint32_t kMagicV3 = 0xF993FACAu;
constexpr size_t kAlignment = 64;

bool ValidDType(int32_t flag) { return flag >= 0 && flag <= 6; }

// mshadow flags past int64, named for the error message.
const char* OtherTypeName(int32_t flag) {
  switch (flag) {
    case 7:
      return "bool";
    case 8:
      return "int16";
    case 9:
      return "uint16";
    case 10:
      return "uint32";
    case 11:
      return "uint64";
    case 12:
      return "bfloat16";
    default:
      return "unknown";
  }
}

const char* StorageName(int32_t stype) {
  switch (stype) {
    case -1:
      return "undefined";
    case 1:
      return "row_sparse";
    case 2:
      return "csr";
    default:
      return "unknown";
  }
}

// Element count and byte count of a shape, overflow-checked; false when they overflow.
bool ShapeSizes(const std::vector<int64_t>& shape, size_t elem_size, int64_t* count,
                size_t* bytes) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(n, d, &n)) return false;
  }
  size_t b = 0;
  if (__builtin_mul_overflow(static_cast<size_t>(n), elem_size, &b)) return false;
  *count = n;
  *bytes = b;
  return true;
}

std::shared_ptr<uint8_t> AlignedBuffer(size_t nbytes, const std::string& what) {
  // Round up to the alignment (aligned_alloc needs a multiple); at least one block, so data()
  // is never null even for an empty tensor.
  size_t rounded = 0;
  if (__builtin_add_overflow(nbytes, kAlignment - 1, &rounded)) {
    Fail(what + ": " + std::to_string(nbytes) + " bytes is too large to allocate");
  }
  rounded = rounded / kAlignment * kAlignment;
  if (rounded == 0) rounded = kAlignment;
  void* p = std::aligned_alloc(kAlignment, rounded);
  if (p == nullptr) Fail(what + ": out of memory allocating " + std::to_string(nbytes) + " bytes");
  return std::shared_ptr<uint8_t>(static_cast<uint8_t*>(p), [](uint8_t* q) { std::free(q); });
}

}  // namespace

struct TensorInternal {
  // A tensor whose buffer the caller fills at once (the reader); shape already checked.
  static Tensor Uninitialized(DType dtype, std::vector<int64_t> shape, size_t nbytes) {
    Tensor t;
    t.buffer_ = AlignedBuffer(nbytes, "an array");
    t.nbytes_ = nbytes;
    t.dtype = dtype;
    t.shape = std::move(shape);
    return t;
  }
};

namespace {

class ParamsParser {
 public:
  explicit ParamsParser(ByteSource* src) : src_(*src) {}

  std::vector<Tensor> Parse() {
    if (src_.size() == 0) Fail(src_.what() + ": empty file (expected an MXNet NDArray list)");
    if (src_.size() < 24) {
      Fail(src_.what() + ": " + std::to_string(src_.size()) +
           " bytes is too short for an MXNet NDArray list (the header alone is 24 bytes)");
    }
    const uint64_t magic = U64("the list magic");
    if (magic != kListMagic) {
      Fail(src_.what() + ": not an MXNet NDArray list (magic " + Hex(magic) + ", expected 0x112)");
    }
    U64("the reserved field");
    const uint64_t count = U64("the array count");
    // Every array takes at least 4 bytes, so a larger count cannot be honest; checked before
    // any per-array work so a huge count fails at once.
    if (count > src_.remaining() / 4) {
      Fail(src_.what() + ": array count " + std::to_string(count) + " cannot fit in the " +
           std::to_string(src_.remaining()) + " bytes left");
    }
    std::vector<Tensor> tensors;
    for (uint64_t i = 0; i < count; ++i) tensors.push_back(ParseArray(i, count));

    if (src_.remaining() < 8) {
      Fail(src_.what() + ": names missing (the file ends after the " + std::to_string(count) +
           " arrays; expected a name count)");
    }
    const uint64_t name_count = U64("the name count");
    if (name_count == 0 && count > 0) {
      Fail(src_.what() + ": names missing (the file stores " + std::to_string(count) +
           " arrays without names; save a dict: mx.nd.save(path, {'name': array}))");
    }
    if (name_count != count) {
      Fail(src_.what() + ": " + std::to_string(name_count) + " names for " + std::to_string(count) +
           " arrays");
    }
    std::unordered_set<std::string> seen;
    for (uint64_t i = 0; i < count; ++i) {
      const std::string field = "name " + std::to_string(i);
      const uint64_t length = U64((field + " length").c_str());
      if (length > src_.remaining()) {
        Fail(src_.what() + ": " + field + " has length " + std::to_string(length) +
             " but the file has " + std::to_string(src_.remaining()) + " bytes left");
      }
      std::string name(static_cast<size_t>(length), '\0');
      src_.Read(name.data(), name.size(), field.c_str());
      if (!seen.insert(name).second) {
        Fail(src_.what() + ": duplicate name '" + name + "' (arrays " +
             std::to_string(IndexOf(tensors, name, i)) + " and " + std::to_string(i) + ")");
      }
      tensors[i].name = std::move(name);
    }
    if (src_.remaining() != 0) {
      Fail(src_.what() + ": " + std::to_string(src_.remaining()) +
           " bytes of trailing garbage after the names (at byte " + std::to_string(src_.offset()) +
           ")");
    }
    return tensors;
  }

 private:
  static std::string Hex(uint64_t v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "0x%llX", static_cast<unsigned long long>(v));
    return buf;
  }

  static uint64_t IndexOf(const std::vector<Tensor>& tensors, const std::string& name,
                          uint64_t end) {
    for (uint64_t j = 0; j < end; ++j) {
      if (tensors[j].name == name) return j;
    }
    return end;
  }

  uint64_t U64(const char* field) {
    uint64_t v;
    src_.Read(&v, sizeof(v), field);
    return v;
  }
  uint32_t U32(const char* field) {
    uint32_t v;
    src_.Read(&v, sizeof(v), field);
    return v;
  }
  int32_t I32(const char* field) {
    int32_t v;
    src_.Read(&v, sizeof(v), field);
    return v;
  }

  [[noreturn]] void ArrayError(const std::string& where, const std::string& message) const {
    Fail(src_.what() + ": " + where + ": " + message);
  }

  // Reads ndim dims (int64, or uint32 in the legacy form) and checks each one.
  std::vector<int64_t> ReadDims(const std::string& where, int64_t ndim, bool legacy_u32) {
    if (ndim < 0 || ndim > kMaxTensorDims) {
      ArrayError(where, "ndim " + std::to_string(ndim) + " is outside [0, " +
                            std::to_string(kMaxTensorDims) + "]");
    }
    std::vector<int64_t> shape(static_cast<size_t>(ndim));
    for (int64_t d = 0; d < ndim; ++d) {
      int64_t dim;
      if (legacy_u32) {
        dim = U32("a dimension");
      } else {
        src_.Read(&dim, sizeof(dim), "a dimension");
      }
      if (dim < 0 || dim > kMaxTensorDim) {
        ArrayError(where, "dimension " + std::to_string(d) + " is " + std::to_string(dim) +
                              " (outside [0, 2^40])");
      }
      shape[static_cast<size_t>(d)] = dim;
    }
    return shape;
  }

  Tensor ParseArray(uint64_t index, uint64_t count) {
    const std::string where = "array " + std::to_string(index) + " of " + std::to_string(count) +
                              " (at byte " + std::to_string(src_.offset()) + ")";
    const uint32_t magic = U32("an array's magic");
    std::vector<int64_t> shape;
    if (magic == kMagicV2 || magic == kMagicV3) {
      const int32_t stype = I32("the storage type");
      if (stype != 0) {
        ArrayError(where, "storage type " + std::to_string(stype) + " (" + StorageName(stype) +
                              ") is not supported; only dense arrays (0) are");
      }
      const int32_t ndim = I32("the ndim");
      // ndim 0 is a 0-d array here: MXNet >= 1.5 writes context, type and data after it
      // (1.9.1's own V2 loader then misreads it as a none array); -1 is the none array.
      if (ndim == -1) ArrayError(where, "a none array (ndim -1: unknown shape, no data)");
      shape = ReadDims(where, ndim, false);
    } else if (magic == kMagicV1) {
      const int32_t ndim = I32("the ndim");
      if (ndim == 0) ArrayError(where, "a none array (ndim 0: no shape and no data)");
      shape = ReadDims(where, ndim, false);
    } else if (magic <= static_cast<uint32_t>(kMaxTensorDims)) {
      // The legacy form has no magic: the first word is ndim, the dims are uint32.
      if (magic == 0) ArrayError(where, "a none array (legacy ndim 0: no shape and no data)");
      shape = ReadDims(where, magic, true);
    } else {
      ArrayError(where, "unknown NDArray magic " + Hex(magic) +
                            " (expected 0xF993FAC9, 0xF993FACA, 0xF993FAC8 or a legacy ndim <= " +
                            std::to_string(kMaxTensorDims) + ")");
    }
    const int32_t dev_type = I32("the context's device type");
    I32("the context's device id");
    if (dev_type != 1 && dev_type != 2 && dev_type != 3 && dev_type != 5) {
      ArrayError(where, "unknown device type " + std::to_string(dev_type) +
                            " in its context (expected 1 cpu, 2 gpu, 3 cpu_pinned, 5 cpu_shared)");
    }
    const int32_t flag = I32("the type flag");
    if (!ValidDType(flag)) {
      ArrayError(where, "data type flag " + std::to_string(flag) + " (" + OtherTypeName(flag) +
                            ") is not supported (float32, float64, float16, uint8, int32, int8, "
                            "int64 are)");
    }
    const DType dtype = static_cast<DType>(flag);
    int64_t elements = 0;
    size_t nbytes = 0;
    if (!ShapeSizes(shape, DTypeSize(dtype), &elements, &nbytes)) {
      ArrayError(where, "shape " + ShapeString(shape) + " " + DTypeName(dtype) +
                            " overflows a 64-bit size");
    }
    if (nbytes > src_.remaining()) {
      ArrayError(where, "shape " + ShapeString(shape) + " " + DTypeName(dtype) + " needs " +
                            std::to_string(nbytes) + " bytes but the file has " +
                            std::to_string(src_.remaining()) + " left");
    }
    Tensor t = TensorInternal::Uninitialized(dtype, std::move(shape), nbytes);
    src_.Read(t.mutable_data(), nbytes, "the array data");
    return t;
  }

  ByteSource& src_;
};

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  uint32_t bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // inf / NaN (payload kept)
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);  // rebias 15 -> 127
  } else if (mantissa == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal half: normalise (value = mantissa * 2^-24).
    int e = 113;  // exponent field of 2^-14 in float32 (-14 + 127)
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    bits = sign | (static_cast<uint32_t>(e) << 23) | ((mantissa & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

}  // namespace

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kFloat16:
      return "float16";
    case DType::kUint8:
      return "uint8";
    case DType::kInt32:
      return "int32";
    case DType::kInt8:
      return "int8";
    case DType::kInt64:
      return "int64";
  }
  return "unknown";
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kFloat64:
    case DType::kInt64:
      return 8;
    case DType::kFloat16:
      return 2;
    case DType::kUint8:
    case DType::kInt8:
      return 1;
  }
  return 0;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

int64_t Tensor::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) {
      Fail("tensor '" + name + "': invalid shape " + ShapeString(shape));
    }
  }
  return n;
}

Tensor Tensor::Allocate(std::string name, DType dtype, std::vector<int64_t> shape) {
  if (DTypeSize(dtype) == 0) {
    Fail("tensor '" + name + "': invalid dtype " + std::to_string(static_cast<int32_t>(dtype)));
  }
  if (shape.size() > static_cast<size_t>(kMaxTensorDims)) {
    Fail("tensor '" + name + "': " + std::to_string(shape.size()) + " dimensions (at most " +
         std::to_string(kMaxTensorDims) + ")");
  }
  for (int64_t d : shape) {
    if (d < 0 || d > kMaxTensorDim) {
      Fail("tensor '" + name + "': dimension " + std::to_string(d) + " outside [0, 2^40]");
    }
  }
  int64_t elements = 0;
  size_t nbytes = 0;
  if (!ShapeSizes(shape, DTypeSize(dtype), &elements, &nbytes)) {
    Fail("tensor '" + name + "': shape " + ShapeString(shape) + " overflows a 64-bit size");
  }
  Tensor t;
  t.buffer_ = AlignedBuffer(nbytes, "tensor '" + name + "'");
  std::memset(t.buffer_.get(), 0, nbytes);
  t.nbytes_ = nbytes;
  t.name = std::move(name);
  t.dtype = dtype;
  t.shape = std::move(shape);
  return t;
}

std::vector<float> ToFloat32(const Tensor& tensor) {
  const size_t n = static_cast<size_t>(tensor.NumElements());
  if (n * DTypeSize(tensor.dtype) != tensor.nbytes() || (n > 0 && tensor.data() == nullptr)) {
    Fail("tensor '" + tensor.name + "': shape " + ShapeString(tensor.shape) +
         " does not match its " + std::to_string(tensor.nbytes()) + " bytes of data");
  }
  std::vector<float> out(n);
  switch (tensor.dtype) {
    case DType::kFloat32:
      if (n) std::memcpy(out.data(), tensor.data(), n * sizeof(float));
      break;
    case DType::kFloat64: {
      const double* src = static_cast<const double*>(tensor.data());
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(src[i]);
      break;
    }
    case DType::kFloat16: {
      const uint16_t* src = static_cast<const uint16_t*>(tensor.data());
      for (size_t i = 0; i < n; ++i) out[i] = HalfToFloat(src[i]);
      break;
    }
    default:
      Fail("tensor '" + tensor.name + "' is " + DTypeName(tensor.dtype) +
           "; expected a floating-point type (float32, float64 or float16)");
  }
  return out;
}

const int64_t* Int64Data(const Tensor& tensor) {
  if (tensor.dtype != DType::kInt64) {
    Fail("tensor '" + tensor.name + "' is " + DTypeName(tensor.dtype) + "; expected int64");
  }
  return static_cast<const int64_t*>(tensor.data());
}

std::vector<Tensor> ParseParams(const uint8_t* bytes, size_t size, const std::string& what) {
  ByteSource src(bytes, size, what);
  return ParamsParser(&src).Parse();
}

std::vector<Tensor> ReadParams(const std::string& path) {
  ByteSource src(path);
  return ParamsParser(&src).Parse();
}

}  // namespace rt
}  // namespace binmx

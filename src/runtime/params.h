/*
 * binmx runtime: reader for MXNet's NDArray list files (`mx.nd.save`, `PREFIX-NNNN.params` from
 * Module.save_checkpoint / model_converter), checked byte by byte against MXNet 1.9.1.
 *
 * Layout (all integers little-endian):
 *   uint64 0x112 (list magic) | uint64 reserved | uint64 count | count x NDArray
 *   | uint64 name count (0 or count) | name count x (uint64 length, bytes)
 * One NDArray, in one of four forms:
 *   V3 (np shape semantics)  uint32 0xF993FACA, int32 storage type, shape, context, type, data
 *   V2 (MXNet >= 0.11)       uint32 0xF993FAC9, int32 storage type, shape, context, type, data
 *   V1                       uint32 0xF993FAC8, shape, context, type, data
 *   legacy (no magic)        uint32 ndim, ndim x uint32 dims, context, type, data
 *   shape   = int32 ndim, ndim x int64 dims (row-major, outermost first)
 *   context = int32 dev_type (1 cpu, 2 gpu, 3 cpu_pinned, 5 cpu_shared), int32 dev_id
 *   type    = int32 mshadow type flag (see DType); data = prod(dims) x DTypeSize raw bytes.
 * In V2 and V3 ndim 0 is a 0-d array (one element; MXNet 1.9.1 writes it so in both, although
 * its V2 loader misreads it) and ndim -1 a "none" array (nothing follows); in V1 and the legacy
 * form, which predate 0-d arrays, ndim 0 is the none array. Only dense storage (type 0) is
 * supported; sparse arrays (row_sparse 1, csr 2) and none arrays are Errors.
 *
 * Every size is checked before use: ndim <= 32, each dim in [0, 2^40], the element count and
 * byte count with overflow-checked products, the byte count against the bytes left in the file
 * BEFORE allocating; names must be present, as many as arrays, and unique; trailing bytes after
 * the names are an Error. Array data is copied into owned, 64-byte aligned buffers.
 */
#ifndef BINMX_RT_PARAMS_H_
#define BINMX_RT_PARAMS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace binmx {
namespace rt {

// mshadow's type flags (the values stored in the file).
enum class DType : int32_t {
  kFloat32 = 0,
  kFloat64 = 1,
  kFloat16 = 2,
  kUint8 = 3,
  kInt32 = 4,
  kInt8 = 5,
  kInt64 = 6,
};

// "float32", "float64", "float16", "uint8", "int32", "int8", "int64" ("unknown" otherwise).
const char* DTypeName(DType dtype);
// Bytes per element (4, 8, 2, 1, 4, 1, 8); 0 for a value outside the enum.
size_t DTypeSize(DType dtype);

constexpr int kMaxTensorDims = 32;
constexpr int64_t kMaxTensorDim = int64_t{1} << 40;

struct Tensor {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;  // {} for a 0-d scalar (one element)

  // Product of the shape (1 for a 0-d tensor); Error when the shape is invalid or overflows.
  int64_t NumElements() const;
  // The data: NumElements() elements of dtype, row-major, 64-byte aligned, never null.
  const void* data() const { return buffer_.get(); }
  void* mutable_data() { return buffer_.get(); }
  size_t nbytes() const { return nbytes_; }

  // A zero-filled tensor with its own buffer; Error on an invalid shape (ndim > 32, a dim
  // outside [0, 2^40], an overflowing size) or dtype. Copies of a Tensor share the buffer.
  static Tensor Allocate(std::string name, DType dtype, std::vector<int64_t> shape);

 private:
  friend struct TensorInternal;  // params.cc: allocation without the zero fill, for the reader
  std::shared_ptr<uint8_t> buffer_;
  size_t nbytes_ = 0;
};

// "(1000, 512)", "()" for 0-d.
std::string ShapeString(const std::vector<int64_t>& shape);

// The tensor's values as float32 (float32 copied, float64 rounded, float16 widened exactly);
// Error naming the tensor for integer dtypes.
std::vector<float> ToFloat32(const Tensor& tensor);
// The tensor's int64 data; Error naming the tensor and its dtype unless it is int64.
const int64_t* Int64Data(const Tensor& tensor);

// Parses an NDArray list held in memory; `what` names it in errors ("model-0000.params").
std::vector<Tensor> ParseParams(const uint8_t* bytes, size_t size, const std::string& what);
// Reads an NDArray list file (each array read straight into its buffer); Error for a missing
// file, a directory, an empty file, a read error and every format error above.
std::vector<Tensor> ReadParams(const std::string& path);

}  // namespace rt
}  // namespace binmx

#endif  // BINMX_RT_PARAMS_H_

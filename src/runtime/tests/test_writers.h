/*
 * binmx runtime tests: writers for the file formats the readers take, used to build valid files
 * (and exact corruptions of them) in memory without MXNet or NumPy.
 *
 * WriteParams writes an MXNet NDArray list (layout in params.h): each array in the form asked
 * for (V2 as MXNet 1.9.1 writes it by default, V3 as it writes under np shape semantics, V1 or the
 * legacy magic-less form), then the names (or a name count of 0). It records the offset and width
 * of every size-like field (counts, ndim, dims, type flags, name lengths) so the fuzzer can aim
 * huge values at them.
 */
#ifndef BINMX_RT_TESTS_TEST_WRITERS_H_
#define BINMX_RT_TESTS_TEST_WRITERS_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "params.h"

namespace binmx {
namespace rt {
namespace testing {

enum class NdForm { kV2, kV3, kV1, kLegacy };

struct FieldMark {
  size_t offset;
  int width;  // 4 or 8 bytes
};

class ByteWriter {
 public:
  void U32(uint32_t v, bool mark = false) { Put(&v, 4, mark); }
  void I32(int32_t v, bool mark = false) { Put(&v, 4, mark); }
  void U64(uint64_t v, bool mark = false) { Put(&v, 8, mark); }
  void I64(int64_t v, bool mark = false) { Put(&v, 8, mark); }
  void Bytes(const void* p, size_t n) { bytes_.append(static_cast<const char*>(p), n); }
  std::string& bytes() { return bytes_; }
  std::vector<FieldMark>& marks() { return marks_; }

 private:
  void Put(const void* p, int n, bool mark) {
    if (mark) marks_.push_back({bytes_.size(), n});
    bytes_.append(static_cast<const char*>(p), static_cast<size_t>(n));
  }
  std::string bytes_;
  std::vector<FieldMark> marks_;
};

// One NDArray record of `t` in the given form.
inline void WriteArray(ByteWriter* w, const Tensor& t, NdForm form) {
  const int32_t ndim = static_cast<int32_t>(t.shape.size());
  switch (form) {
    case NdForm::kV2:
    case NdForm::kV3:
      w->U32(form == NdForm::kV2 ? 0xF993FAC9u : 0xF993FACAu);
      w->I32(0, true);  // dense storage
      w->I32(ndim, true);
      for (int64_t d : t.shape) w->I64(d, true);
      break;
    case NdForm::kV1:
      w->U32(0xF993FAC8u);
      w->I32(ndim, true);
      for (int64_t d : t.shape) w->I64(d, true);
      break;
    case NdForm::kLegacy:
      w->U32(static_cast<uint32_t>(ndim), true);
      for (int64_t d : t.shape) w->U32(static_cast<uint32_t>(d), true);
      break;
  }
  w->I32(1);  // cpu
  w->I32(0);  // dev_id
  w->I32(static_cast<int32_t>(t.dtype), true);
  w->Bytes(t.data(), t.nbytes());
}

// A whole list; forms[i] (or kV2 when forms is shorter) is array i's form.
inline std::string WriteParams(const std::vector<Tensor>& tensors,
                               const std::vector<NdForm>& forms = {}, bool with_names = true,
                               std::vector<FieldMark>* marks = nullptr) {
  ByteWriter w;
  w.U64(0x112);
  w.U64(0);
  w.U64(tensors.size(), true);
  for (size_t i = 0; i < tensors.size(); ++i) {
    WriteArray(&w, tensors[i], i < forms.size() ? forms[i] : NdForm::kV2);
  }
  if (with_names) {
    w.U64(tensors.size(), true);
    for (const Tensor& t : tensors) {
      w.U64(t.name.size(), true);
      w.Bytes(t.name.data(), t.name.size());
    }
  } else {
    w.U64(0, true);
  }
  if (marks) *marks = w.marks();
  return w.bytes();
}

// A tensor filled with a deterministic byte pattern that depends on `salt` (every byte varies,
// so a misplaced copy shows); float types get finite values.
inline Tensor PatternTensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            uint32_t salt) {
  Tensor t = Tensor::Allocate(name, dtype, std::move(shape));
  const size_t n = static_cast<size_t>(t.NumElements());
  uint32_t x = salt * 2654435761u + 12345u;
  auto next = [&x]() {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
  };
  void* p = t.mutable_data();
  for (size_t i = 0; i < n; ++i) {
    const uint32_t r = next();
    switch (dtype) {
      case DType::kFloat32:
        static_cast<float*>(p)[i] =
            static_cast<float>(static_cast<int32_t>(r % 20001) - 10000) / 977.0f;
        break;
      case DType::kFloat64:
        static_cast<double*>(p)[i] =
            static_cast<double>(static_cast<int32_t>(r % 20001) - 10000) / 977.0;
        break;
      case DType::kFloat16: {
        // Finite halves only: exponent field 0..30.
        const uint16_t h = static_cast<uint16_t>((r & 0x83FFu) | (((r >> 10) % 31) << 10));
        static_cast<uint16_t*>(p)[i] = h;
        break;
      }
      case DType::kUint8:
      case DType::kInt8:
        static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(r);
        break;
      case DType::kInt32:
        static_cast<int32_t*>(p)[i] = static_cast<int32_t>(r);
        break;
      case DType::kInt64:
        static_cast<int64_t*>(p)[i] = static_cast<int64_t>((uint64_t{r} << 32) | next());
        break;
    }
  }
  return t;
}

}  // namespace testing
}  // namespace rt
}  // namespace binmx

#endif  // BINMX_RT_TESTS_TEST_WRITERS_H_

/*
 * binmx runtime: float32 .npy files (NumPy's array format) for binmx-run's input and output.
 *
 * Layout: "\x93NUMPY", uint8 major, uint8 minor, header length (uint16 LE for version 1.0, uint32
 * LE for 2.0 and 3.0), the header (a Python dict literal, ASCII / UTF-8 for 3.0, padded with
 * spaces and ending in '\n'), then the data: prod(shape) elements in C (row-major) order.
 * Header: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 *
 * The reader accepts little-endian float32 only ('<f4', or '|f4'); every other dtype (float64,
 * ints, big-endian '>f4', object and structured arrays) and fortran_order True are Errors naming
 * the dtype or the order. The header is parsed as a small dict literal (keys in any order, single
 * or double quotes, exactly the three keys), ndim <= 64, each dim in [0, 2^40], the data size is
 * checked (overflow-safe) against the file before allocating, and trailing bytes are an Error.
 * The writer writes version 1.0 through a temporary file and a rename.
 */
#ifndef BINMX_RT_NPY_H_
#define BINMX_RT_NPY_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace binmx {
namespace rt {

struct NpyArray {
  std::vector<int64_t> shape;  // {} for a 0-d array (one element)
  std::vector<float> data;     // row-major
};

constexpr int kMaxNpyDims = 64;

// Reads a float32 .npy file; Error naming the path and the problem.
NpyArray ReadNpyFloat32(const std::string& path);
// The same from memory (`what` names the bytes in errors).
NpyArray ParseNpyFloat32(const uint8_t* bytes, size_t size, const std::string& what);

// Writes data (prod(shape) floats, row-major) as a version 1.0 .npy file that numpy.load reads;
// Error "cannot write 'out.npy': No space left on device" (the OS's reason) on failure.
void WriteNpyFloat32(const std::string& path, const float* data, const std::vector<int64_t>& shape);
// The bytes WriteNpyFloat32 writes.
std::string SerializeNpyFloat32(const float* data, const std::vector<int64_t>& shape);

}  // namespace rt
}  // namespace binmx

#endif  // BINMX_RT_NPY_H_

/*
 * binmx core (internal): the border classes of a convolution axis, shared by the binary
 * (bconv.cc, which defines it) and the bit-serial (bsconv.cc) direct convolutions.
 */
#ifndef BINMX_INTERNAL_AXIS_CLASSES_H_
#define BINMX_INTERNAL_AXIS_CLASSES_H_

#include <cstdint>
#include <utility>
#include <vector>

namespace binmx {
namespace internal {

// Valid-tap range [lo, hi) of every output position along one axis (out positions, in input
// cells, stride, pad, dilation, kernel k), as class ids (0 = all taps valid); ranges[id] =
// (lo, hi).
void AxisClasses(int64_t out, int64_t in, int64_t stride, int64_t pad, int64_t dil, int64_t k,
                 std::vector<int64_t>* cls, std::vector<std::pair<int64_t, int64_t>>* ranges);

}  // namespace internal
}  // namespace binmx

#endif  // BINMX_INTERNAL_AXIS_CLASSES_H_

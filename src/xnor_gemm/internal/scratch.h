/*
 * binmx core (internal): the grow-only scratch buffer the drivers keep per thread between
 * calls (bconv.cc, bsconv.cc, kbit.cc, kbit_direct.cc). Base flags only: not for kernel files.
 */
#ifndef BINMX_INTERNAL_SCRATCH_H_
#define BINMX_INTERNAL_SCRATCH_H_

#include <cstddef>
#include <cstdint>
#include <memory>

namespace binmx {
namespace internal {

// Get(n) returns room for n elements, 64-byte aligned, not zero-filled; it reallocates only
// when n exceeds every earlier request (the old contents are then lost).
template <typename T>
class Scratch {
 public:
  T* Get(size_t n) {
    if (n > cap_) {
      buf_.reset(new T[n + 64 / sizeof(T)]);
      cap_ = n;
    }
    const uintptr_t p = reinterpret_cast<uintptr_t>(buf_.get());
    return reinterpret_cast<T*>((p + 63) & ~static_cast<uintptr_t>(63));
  }

 private:
  std::unique_ptr<T[]> buf_;
  size_t cap_ = 0;
};

}  // namespace internal
}  // namespace binmx

#endif  // BINMX_INTERNAL_SCRATCH_H_

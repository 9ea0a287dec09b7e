/*
 * binmx runtime (internal): the error type every runtime component throws. The C API
 * (binmx_runtime.h) catches it at the boundary and turns it into an error string; nothing
 * throws across that boundary. Messages are one line and name what was wrong (the file, the
 * node, the operator, the attribute, the expected and actual values).
 */
#ifndef BINMX_RT_COMMON_H_
#define BINMX_RT_COMMON_H_

#include <stdexcept>
#include <string>

namespace binmx {
namespace rt {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

[[noreturn]] inline void Fail(const std::string& message) { throw Error(message); }

}  // namespace rt
}  // namespace binmx

#endif  // BINMX_RT_COMMON_H_

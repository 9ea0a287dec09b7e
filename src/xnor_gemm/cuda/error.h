/*
 * binmx CUDA: the library's error state (internal). Fail stores the message that
 * binmx_cuda_last_error() returns (thread-local) and returns `code`; FailCuda maps a CUDA
 * runtime error to BINMX_CUDA_ERR_NO_DEVICE or BINMX_CUDA_ERR_CUDA. Defined in api.cu.
 */
#ifndef BINMX_CUDA_ERROR_H_
#define BINMX_CUDA_ERROR_H_

#include <cuda_runtime.h>

#include <string>

namespace binmx {
namespace cuda {

int Fail(int code, const std::string& message);
int FailCuda(cudaError_t err, const char* what);

}  // namespace cuda
}  // namespace binmx

#endif  // BINMX_CUDA_ERROR_H_

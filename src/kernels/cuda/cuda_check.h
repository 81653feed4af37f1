// CUDA plumbing shared by the CUDA kernels (host code only; .cu files report cudaError_t and
// their .cpp callers check it here).
//
//   NIBBLE_CUDA_CHECK(cudaMalloc(&p, bytes), "weights of layer {}", name);
//     -> nibble::Error "CUDA error 2 cudaErrorMemoryAllocation (out of memory) in
//        cudaMalloc(&p, bytes): weights of layer ..." with our file:line.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "base/error.h"
#include "kernels/linear_kernel.h"

namespace nibble {

// "CUDA error 2 cudaErrorMemoryAllocation (out of memory)".
std::string cuda_error_text(cudaError_t status);

// The DeviceInfo of CUDA device `index` (name, compute capability, SM count). Throws an Error
// saying "no CUDA device" (with the runtime's reason) when there is none.
DeviceInfo cuda_query_device(int index);

// ok when CUDA device `device.index` can be used now; otherwise "no CUDA device (...)", or
// the reason it cannot be opened. Never throws. Clears the runtime's sticky error state.
Check cuda_device_present(const DeviceInfo& device);

}  // namespace nibble

// Checks a cudaError_t expression; the optional trailing arguments are a fmt format string
// and its arguments that say what was being done.
#define NIBBLE_CUDA_CHECK(expr, ...)                                                       \
  do {                                                                                     \
    const cudaError_t nibble_cuda_status_ = (expr);                                        \
    if (nibble_cuda_status_ != cudaSuccess) [[unlikely]]                                   \
      NIBBLE_THROW("{} in {}{}", ::nibble::cuda_error_text(nibble_cuda_status_), #expr,    \
                   ::nibble::detail::cuda_check_context(__VA_ARGS__));                     \
  } while (0)

namespace nibble::detail {
inline std::string cuda_check_context() { return {}; }
template <typename... Args>
std::string cuda_check_context(fmt::format_string<Args...> what, Args&&... args) {
  return ": " + fmt::format(what, std::forward<Args>(args)...);
}
}  // namespace nibble::detail

// Kernel launches that may overlap the kernel before them (programmatic dependent launch,
// PDL, sm_90+). A forward is a chain of kernels on one stream, each reading what the one
// before wrote; launched "chained", a kernel may be scheduled while its predecessor still
// runs, do the work that reads no earlier output (a GEMV's weight loads and its decode table),
// then wait. That hides the launch gap and the ramp of each kernel of a decode step.
//
// The contract of a chained kernel: pdl_wait() before it reads anything an earlier kernel
// writes and before it writes anything (an earlier kernel may still read it). pdl_wait
// returns once every earlier kernel of the stream has completed and its writes are visible, so
// calling pdl_launch_dependents() early is safe: it only lets the next kernel be scheduled.
// Both are no-ops below sm_90 and in a kernel launched without the attribute. Used in .cu files.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <utility>

namespace nibble::cuda_detail {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether the current device runs PDL (compute capability 9.0 or above), asked once per device.
inline bool pdl_supported() {
  static std::atomic<int> known[64] = {};  // 0 not asked, 1 yes, 2 no
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) {
    cudaGetLastError();
    return false;
  }
  int v = known[device].load(std::memory_order_relaxed);
  if (v == 0) {
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess)
      cudaGetLastError(), major = 0;
    known[device].store(v = major >= 9 ? 1 : 2, std::memory_order_relaxed);
  }
  return v == 1;
}

// kernel<<<grid, block, smem, stream>>>(args...), chained (PDL) where asked and supported. The
// legacy default stream (null) is never chained: it synchronizes with every other stream.
template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, bool chained, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  if (chained && stream != nullptr && pdl_supported()) config.attrs = &attribute, config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace nibble::cuda_detail

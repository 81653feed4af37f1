// The copy kernel of cuda_bandwidth.h: 16 bytes per thread, grid-stride.
#include "kernels/cuda/cuda_bandwidth.h"

namespace nibble {
namespace {

__global__ void copy_kernel(const uint4* __restrict__ a, uint4* __restrict__ b, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    b[i] = a[i];
}

}  // namespace

cudaError_t cuda_copy_kernel(const void* a, void* b, size_t bytes, unsigned blocks,
                             cudaStream_t stream) {
  if (bytes % 16 != 0 || blocks == 0) return cudaErrorInvalidValue;
  copy_kernel<<<blocks, 512, 0, stream>>>(static_cast<const uint4*>(a), static_cast<uint4*>(b),
                                          bytes / 16);
  return cudaGetLastError();
}

}  // namespace nibble

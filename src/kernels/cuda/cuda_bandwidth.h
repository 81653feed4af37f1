// The device's copy bandwidth, for bandwidth floors (the decode benchmark of `nibble eval
// --greedy` on CUDA): the better of cudaMemcpyAsync and a 16-byte-per-thread copy kernel over
// `bytes` (two buffers allocated and freed here), median of `reps` timed copies, as
// bench/cuda_gemv_bench measures it. Returns bytes per second counting read + written, so that
// floor = bytes a kernel reads / this.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace nibble {

double cuda_copy_bandwidth(size_t bytes, int reps, cudaStream_t stream);

// The copy kernel it times: b = a, `bytes` a multiple of 16, 512 threads per block.
cudaError_t cuda_copy_kernel(const void* a, void* b, size_t bytes, unsigned blocks,
                             cudaStream_t stream);

}  // namespace nibble

// Device helpers shared by the op kernels of src/kernels/cuda/ (norm, rope, attention,
// elementwise): warp and block reductions, and stores in the output format a launch asks for.
// Device code only: included by .cu files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace nibble::cuda_detail {

inline constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
// `shared` holds 32 floats. Two __syncthreads, so a block may call it more than once.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = lane < warps ? shared[lane] : 0.0f;
  total = warp_sum(total);
  __syncthreads();  // shared may be reused by the caller's next reduction
  return total;
}

// out[i] = v in F32 or BF16 (round to nearest even), as `bf16` says.
__device__ __forceinline__ void store(void* out, size_t i, float v, bool bf16) {
  if (bf16)
    static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(v);
  else
    static_cast<float*>(out)[i] = v;
}

// Threads for a one-block-per-row kernel over rows of n values: a multiple of 32, at most 1024,
// about one value per thread for short rows (q/k heads of 8..256) and 4+ for long ones.
inline unsigned row_threads(size_t n) {
  const size_t want = n >= 4096 ? 1024 : n >= 1024 ? 256 : (n + 31) / 32 * 32;
  return unsigned(want < 32 ? 32 : want);
}

}  // namespace nibble::cuda_detail

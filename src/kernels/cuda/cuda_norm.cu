// The device side of cuda_norm.h.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/cuda/cuda_norm.h"

namespace nibble {
namespace {

using namespace cuda_detail;

__global__ void rms_norm_kernel(RmsNormLaunch p) {
  __shared__ float shared[32];
  pdl_launch_dependents();
  pdl_wait();  // chained launches (cuda_launch.cuh): nothing is read or written before
  const size_t row = blockIdx.x;
  float* x = p.x + row * p.n;
  const float* delta = p.delta ? p.delta + row * p.n : nullptr;
  float ss = 0.0f;
  for (size_t i = threadIdx.x; i < p.n; i += blockDim.x) {
    float v = x[i];
    if (delta) {
      v += delta[i];
      x[i] = v;
    }
    ss += v * v;
  }
  ss = block_sum(ss, shared);
  const float scale = 1.0f / sqrtf(ss / float(p.n) + p.eps);
  const bool bf16 = p.out_format == OutputFormat::bf16;
  // NOTES: each thread reads back only the elements it wrote above, so out == x is safe.
  for (size_t i = threadIdx.x; i < p.n; i += blockDim.x)
    store(p.out, row * p.n + i, p.weight[i] * (scale * x[i]), bf16);
}

}  // namespace

cudaError_t cuda_rms_norm(const RmsNormLaunch& p, cudaStream_t stream) {
  if (p.rows == 0 || p.n == 0) return cudaSuccess;
  if (!p.x || !p.weight || !p.out || p.rows >= (size_t(1) << 31)) return cudaErrorInvalidValue;
  return launch(rms_norm_kernel, dim3(unsigned(p.rows)), dim3(row_threads(p.n)), 0, stream, true, p);
}

}  // namespace nibble

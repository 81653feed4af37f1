// The device side of cuda_norm.h.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/cuda/cuda_norm.h"

namespace nibble {
namespace {

using namespace cuda_detail;

// Values a thread holds in registers: rows up to kPerThread x 1024 (hidden 8192 with 1024
// threads) are read once, and every load of a row is issued before the first is used. A
// decode step's norm is one block whose time is the latency of its loads; read element by
// element in a loop that also stores x (so the compiler may not batch the loads), and x read
// again for the output, a 4096-value row waited for 8 loads in turn.
constexpr int kPerThread = 8;

__global__ void rms_norm_kernel(RmsNormLaunch p) {
  __shared__ float shared[32];
  const size_t n = p.n, row = blockIdx.x, per_pass = size_t(kPerThread) * blockDim.x;
  const bool one_pass = n <= per_pass;
  // The weights are the model's (no kernel writes them): loaded before the wait.
  float w[kPerThread];
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const size_t i = threadIdx.x + size_t(j) * blockDim.x;
    w[j] = one_pass && i < n ? p.weight[i] : 0.0f;
  }
  pdl_launch_dependents();
  pdl_wait();  // chained launches (cuda_launch.cuh): x and delta are read after it
  float* x = p.x + row * n;
  const float* delta = p.delta ? p.delta + row * n : nullptr;
  float v[kPerThread];
  float ss = 0.0f;
  for (size_t base = 0; base < n; base += per_pass) {
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const size_t i = base + threadIdx.x + size_t(j) * blockDim.x;
      v[j] = i < n ? x[i] : 0.0f;
    }
    if (delta) {
#pragma unroll
      for (int j = 0; j < kPerThread; ++j) {
        const size_t i = base + threadIdx.x + size_t(j) * blockDim.x;
        if (i < n) v[j] += delta[i];
      }
#pragma unroll
      for (int j = 0; j < kPerThread; ++j) {
        const size_t i = base + threadIdx.x + size_t(j) * blockDim.x;
        if (i < n) x[i] = v[j];
      }
    }
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) ss += v[j] * v[j];
  }
  ss = block_sum(ss, shared);
  const float scale = 1.0f / sqrtf(ss / float(n) + p.eps);
  const bool bf16 = p.out_format == OutputFormat::bf16;
  if (one_pass) {
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const size_t i = threadIdx.x + size_t(j) * blockDim.x;
      if (i < n) store(p.out, row * n + i, w[j] * (scale * v[j]), bf16);
    }
    return;
  }
  // NOTES: each thread reads back only the elements it wrote above, so out == x is safe.
  for (size_t i = threadIdx.x; i < n; i += blockDim.x)
    store(p.out, row * n + i, p.weight[i] * (scale * x[i]), bf16);
}

}  // namespace

cudaError_t cuda_rms_norm(const RmsNormLaunch& p, cudaStream_t stream) {
  if (p.rows == 0 || p.n == 0) return cudaSuccess;
  if (!p.x || !p.weight || !p.out || p.rows >= (size_t(1) << 31)) return cudaErrorInvalidValue;
  return launch(rms_norm_kernel, dim3(unsigned(p.rows)), dim3(row_threads(p.n)), 0, stream, true, p);
}

}  // namespace nibble

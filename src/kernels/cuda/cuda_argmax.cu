// The device side of cuda_argmax.h: blocks of 256 threads, each block a slice of a row, one
// atomicMax per block.
#include <cstring>

#include "kernels/cuda/cuda_argmax.h"
#include "kernels/cuda/cuda_launch.cuh"

namespace nibble {
namespace {

using namespace cuda_detail;

constexpr unsigned kThreads = 256;
constexpr size_t kPerBlock = kThreads * 16;  // values a block reduces
constexpr unsigned long long kNanFirst = ~0ull;

__host__ __device__ inline uint32_t order(uint32_t bits) {
  return bits & 0x80000000u ? ~bits : bits | 0x80000000u;
}

__device__ inline unsigned long long key_of(float v, size_t i) {
  if (v != v) return i == 0 ? kNanFirst : 0;
  return (unsigned long long)(order(__float_as_uint(v))) << 32 | (0xffffffffu - uint32_t(i));
}

__device__ inline unsigned long long max_key(unsigned long long a, unsigned long long b) {
  return a > b ? a : b;
}

__global__ void __launch_bounds__(kThreads) argmax_kernel(ArgmaxLaunch p) {
  __shared__ unsigned long long shared[kThreads / 32];
  pdl_launch_dependents();
  pdl_wait();  // chained launches (cuda_launch.cuh): the logits are read after it
  const size_t row = blockIdx.y, begin = size_t(blockIdx.x) * kPerBlock;
  const size_t end = p.cols < begin + kPerBlock ? p.cols : begin + kPerBlock;
  const float* logits = p.logits + row * p.cols;
  unsigned long long best = 0;
#pragma unroll 4
  for (size_t i = begin + threadIdx.x; i < end; i += kThreads) best = max_key(best, key_of(logits[i], i));
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    best = max_key(best, __shfl_xor_sync(0xffffffffu, best, offset));
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (unsigned w = 1; w < kThreads / 32; ++w) best = max_key(best, shared[w]);
  atomicMax(p.keys + row, best);
}

__global__ void greedy_feed_kernel(GreedyFeedLaunch p) {
  pdl_launch_dependents();
  pdl_wait();  // chained launches: the argmax's key, and the step the forward read, after it
  const unsigned long long key = *p.key;
  const uint32_t index = 0xffffffffu - uint32_t(key);
  p.step[1] = key != 0 && key != kNanFirst && index < p.vocab ? int32_t(index) : 0;
  p.step[0] += p.advance;
}

}  // namespace

cudaError_t cuda_greedy_feed(const GreedyFeedLaunch& p, cudaStream_t stream) {
  if (!p.key || !p.step || p.vocab == 0) return cudaErrorInvalidValue;
  return launch(greedy_feed_kernel, dim3(1), dim3(1), 0, stream, true, p);
}

cudaError_t cuda_argmax_rows(const ArgmaxLaunch& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  if (!p.logits || !p.keys || p.cols == 0 || p.cols >= (size_t(1) << 32) || p.rows > 65535)
    return cudaErrorInvalidValue;
  const dim3 grid(unsigned((p.cols + kPerBlock - 1) / kPerBlock), unsigned(p.rows));
  return launch(argmax_kernel, grid, dim3(kThreads), 0, stream, true, p);
}

void decode_argmax_key(unsigned long long key, float* value, uint32_t* index) {
  const uint32_t ordered = uint32_t(key >> 32);
  const uint32_t bits = key == 0 || key == kNanFirst ? 0x7fc00000u
                        : ordered & 0x80000000u     ? ordered & 0x7fffffffu
                                                    : ~ordered;
  std::memcpy(value, &bits, sizeof bits);
  *index = 0xffffffffu - uint32_t(key);
}

}  // namespace nibble

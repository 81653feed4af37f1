// The device side of cuda_elementwise.h: grid-stride loops, 256 threads a block, each kernel
// launched chained (cuda_launch.cuh): it waits for the kernels before it first.
#include <algorithm>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/cuda/cuda_elementwise.h"

namespace nibble {
namespace {

using namespace cuda_detail;

constexpr unsigned kThreads = 256;
// Enough blocks to fill any current GPU; the loops stride over the rest.
constexpr size_t kMaxBlocks = 4096;

unsigned blocks_for(size_t count) {
  return unsigned(std::min(kMaxBlocks, (count + kThreads - 1) / kThreads));
}

#define NIBBLE_GRID_STRIDE(i, count)                                            \
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (count);  \
       i += size_t(gridDim.x) * blockDim.x)

__global__ void embedding_gather_kernel(EmbeddingGatherLaunch p) {
  pdl_launch_dependents();
  pdl_wait();
  NIBBLE_GRID_STRIDE(i, p.count * p.cols) {
    const size_t t = i / p.cols, c = i % p.cols;
    const size_t at = size_t(p.ids[t]) * p.cols + c;
    p.out[i] = p.table_bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p.table)[at])
                            : static_cast<const float*>(p.table)[at];
  }
}

__global__ void silu_mul_kernel(SiluMulLaunch p) {
  pdl_launch_dependents();
  pdl_wait();
  const bool bf16 = p.out_format == OutputFormat::bf16;
  NIBBLE_GRID_STRIDE(i, p.rows * p.cols) {
    const size_t r = i / p.cols, c = i % p.cols;
    const float g = p.gate[r * p.gate_stride + c];
    store(p.out, i, g / (1.0f + expf(-g)) * p.up[r * p.up_stride + c], bf16);  // the CPU model's formula
  }
}

__global__ void split_bf16_kernel(const float* x, size_t count, __nv_bfloat16* out) {
  pdl_launch_dependents();
  pdl_wait();
  NIBBLE_GRID_STRIDE(i, count) {
    const float v = x[i];
    const __nv_bfloat16 hi = __float2bfloat16_rn(v);
    out[i] = hi;
    out[count + i] = __float2bfloat16_rn(v - __bfloat162float(hi));
  }
}

__global__ void combine_rows_kernel(const float* c, size_t parts, size_t count, size_t cols,
                                    const float* bias, float* out) {
  pdl_launch_dependents();
  pdl_wait();
  NIBBLE_GRID_STRIDE(i, count) {
    float v = c[i];
    if (parts == 2) v += c[count + i];
    if (bias) v += bias[i % cols];
    out[i] = v;
  }
}

__global__ void bf16_to_f32_kernel(const __nv_bfloat16* in, float* out, size_t count) {
  pdl_launch_dependents();
  pdl_wait();
  NIBBLE_GRID_STRIDE(i, count) out[i] = __bfloat162float(in[i]);
}

#undef NIBBLE_GRID_STRIDE

}  // namespace

cudaError_t cuda_embedding_gather(const EmbeddingGatherLaunch& p, cudaStream_t stream) {
  if (p.count == 0 || p.cols == 0) return cudaSuccess;
  if (!p.table || !p.ids || !p.out) return cudaErrorInvalidValue;
  return launch(embedding_gather_kernel, dim3(blocks_for(p.count * p.cols)), dim3(kThreads), 0,
                stream, true, p);
}

cudaError_t cuda_silu_mul(const SiluMulLaunch& p, cudaStream_t stream) {
  const size_t count = p.rows * p.cols;
  if (count == 0) return cudaSuccess;
  if (!p.gate || !p.up || !p.out || p.gate_stride < p.cols || p.up_stride < p.cols)
    return cudaErrorInvalidValue;
  return launch(silu_mul_kernel, dim3(blocks_for(count)), dim3(kThreads), 0, stream, true, p);
}

cudaError_t cuda_split_bf16(const float* x, size_t rows, size_t cols, void* out,
                            cudaStream_t stream) {
  const size_t count = rows * cols;
  if (count == 0) return cudaSuccess;
  if (!x || !out) return cudaErrorInvalidValue;
  return launch(split_bf16_kernel, dim3(blocks_for(count)), dim3(kThreads), 0, stream, true, x,
                count, static_cast<__nv_bfloat16*>(out));
}

cudaError_t cuda_combine_rows(const float* c, size_t parts, size_t rows, size_t cols,
                              const float* bias, float* out, cudaStream_t stream) {
  const size_t count = rows * cols;
  if (count == 0) return cudaSuccess;
  if (!c || !out || (parts != 1 && parts != 2))
    return cudaErrorInvalidValue;
  return launch(combine_rows_kernel, dim3(blocks_for(count)), dim3(kThreads), 0, stream, true, c,
                parts, count, cols, bias, out);
}

cudaError_t cuda_bf16_to_f32(const void* in, float* out, size_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (!in || !out) return cudaErrorInvalidValue;
  return launch(bf16_to_f32_kernel, dim3(blocks_for(count)), dim3(kThreads), 0, stream, true,
                static_cast<const __nv_bfloat16*>(in), out, count);
}

}  // namespace nibble

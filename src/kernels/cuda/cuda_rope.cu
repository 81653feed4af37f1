// The device side of cuda_rope.h: one block per (head, token), q heads first, then the KV
// heads (which also carry their value row); one thread per rotated pair.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/cuda/cuda_rope.h"

namespace nibble {
namespace {

using namespace cuda_detail;

__global__ void qkv_rope_kernel(QkvRopeLaunch p) {
  __shared__ float shared[32];
  pdl_launch_dependents();
  pdl_wait();  // chained launches (cuda_launch.cuh): nothing is read or written before
  const size_t half = p.head_dim / 2, d = p.head_dim, t = blockIdx.y;
  const size_t i = threadIdx.x;
  const bool query = blockIdx.x < p.q_heads;
  const size_t h = query ? blockIdx.x : blockIdx.x - p.q_heads;
  const float* in = query ? p.q + t * p.q_stride + h * d : p.k + t * p.k_stride + h * d;
  const int32_t pos = *p.position + int32_t(t);
  float* out = query ? p.q_out + (t * p.q_heads + h) * d
                     : p.k_cache + (size_t(pos) * p.kv_heads + h) * d;
  const float* norm = query ? p.q_norm : p.k_norm;
  const size_t ia = p.interleaved ? 2 * i : i, ib = p.interleaved ? 2 * i + 1 : i + half;
  float a = 0.0f, b = 0.0f;
  if (i < half) a = in[ia], b = in[ib];
  float scale = 1.0f;
  if (norm) scale = 1.0f / sqrtf(block_sum(a * a + b * b, shared) / float(d) + p.eps);  // whole block
  if (i >= half) return;
  if (norm) a = norm[ia] * (scale * a), b = norm[ib] * (scale * b);
  const float angle = float(pos) * p.inv_freq[i];
  const float c = cosf(angle), s = sinf(angle);
  out[ia] = a * c - b * s;
  out[ib] = a * s + b * c;
  if (!query) {
    const float* value = p.v + t * p.v_stride + h * d;
    float* dst = p.v_cache + (size_t(pos) * p.kv_heads + h) * d;
    dst[ia] = value[ia];
    dst[ib] = value[ib];
  }
}

}  // namespace

cudaError_t cuda_qkv_rope(const QkvRopeLaunch& p, cudaStream_t stream) {
  if (p.tokens == 0 || p.q_heads + p.kv_heads == 0) return cudaSuccess;
  if (p.head_dim == 0 || p.head_dim % 2 != 0 || p.head_dim > kRopeMaxHeadDim || !p.inv_freq ||
      !p.position || (p.q_heads && (!p.q || !p.q_out)) ||
      (p.kv_heads && (!p.k || !p.v || !p.k_cache || !p.v_cache)) || p.tokens > 65535 ||
      p.q_heads + p.kv_heads >= (size_t(1) << 31))
    return cudaErrorInvalidValue;
  const unsigned threads = unsigned((p.head_dim / 2 + 31) / 32 * 32);
  const dim3 grid(unsigned(p.q_heads + p.kv_heads), unsigned(p.tokens));
  return launch(qkv_rope_kernel, grid, dim3(threads), 0, stream, true, p);
}

}  // namespace nibble

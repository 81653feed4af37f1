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
  const size_t half = p.head_dim / 2, d = p.head_dim, t = blockIdx.y;
  const size_t i = threadIdx.x;
  const bool query = blockIdx.x < p.q_heads;
  const size_t h = query ? blockIdx.x : blockIdx.x - p.q_heads;
  const float* norm = query ? p.q_norm : p.k_norm;
  const size_t ia = p.interleaved ? 2 * i : i, ib = p.interleaved ? 2 * i + 1 : i + half;
  // The frequencies and norm weights are the model's (no kernel writes them): loaded before
  // the wait, so that only the q/k/v rows' latency is left after it.
  const float inv_freq = i < half ? p.inv_freq[i] : 0.0f;
  const float norm_a = norm && i < half ? norm[ia] : 1.0f, norm_b = norm && i < half ? norm[ib] : 1.0f;
  pdl_launch_dependents();
  pdl_wait();  // chained launches (cuda_launch.cuh): q, k, v and the position are read after it
  const float* in = query ? p.q + t * p.q_stride + h * d : p.k + t * p.k_stride + h * d;
  const int32_t pos = *p.position + int32_t(t);
  float* out = query ? p.q_out + (t * p.q_heads + h) * d
                     : p.k_cache + (size_t(pos) * p.kv_heads + h) * d;
  float a = 0.0f, b = 0.0f, va = 0.0f, vb = 0.0f;
  if (i < half) {
    a = in[ia], b = in[ib];
    if (!query) {
      const float* value = p.v + t * p.v_stride + h * d;
      va = value[ia], vb = value[ib];
    }
  }
  float scale = 1.0f;
  if (norm) scale = 1.0f / sqrtf(block_sum(a * a + b * b, shared) / float(d) + p.eps);  // whole block
  if (i >= half) return;
  if (norm) a = norm_a * (scale * a), b = norm_b * (scale * b);
  float s, c;
  sincosf(float(pos) * inv_freq, &s, &c);
  out[ia] = a * c - b * s;
  out[ib] = a * s + b * c;
  if (!query) {
    float* dst = p.v_cache + (size_t(pos) * p.kv_heads + h) * d;
    dst[ia] = va;
    dst[ib] = vb;
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

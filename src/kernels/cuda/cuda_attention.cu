// The device side of cuda_attention.h (the work split is described there).
#include <cfloat>

#include "kernels/cuda/cuda_attention.h"
#include "kernels/cuda/cuda_common.cuh"

namespace nibble {
namespace {

using namespace cuda_detail;

// 4 warps per (head, token): enough to hide a key row's load latency at short contexts,
// and 4 x (256 + 2) floats of shared memory for the merge.
constexpr int kWarps = 4;
constexpr int kPerLane = int(kAttentionMaxHeadDim / 32);

__global__ void __launch_bounds__(kWarps * 32) attention_kernel(AttentionLaunch p) {
  __shared__ float s_acc[kWarps][kAttentionMaxHeadDim];
  __shared__ float s_max[kWarps], s_sum[kWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const size_t h = blockIdx.x, t = blockIdx.y, d = p.head_dim;
  const size_t kvh = h / (p.heads / p.kv_heads), kv_width = p.kv_heads * d;
  const size_t pos = p.start + t;
  const size_t first = p.window && pos + 1 > p.window ? pos + 1 - p.window : 0;

  const float* q = p.q + (t * p.heads + h) * d;
  float qr[kPerLane], acc[kPerLane];
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const size_t i = size_t(lane + 32 * r);
    qr[r] = i < d ? q[i] : 0.0f;
    acc[r] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (size_t j = first + warp; j <= pos; j += kWarps) {
    const float* kj = p.k + j * kv_width + kvh * d;
    float dot = 0.0f;
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const size_t i = size_t(lane + 32 * r);
      if (i < d) dot += qr[r] * kj[i];
    }
    const float s = warp_sum(dot) * p.scale;
    const float m_new = fmaxf(m, s);
    const float correction = expf(m - m_new);  // 0 on the first position (m = -inf)
    const float w = expf(s - m_new);
    l = l * correction + w;
    const float* vj = p.v + j * kv_width + kvh * d;
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const size_t i = size_t(lane + 32 * r);
      if (i < d) acc[r] = acc[r] * correction + w * vj[i];
    }
    m = m_new;
  }

  // Merge the warps: M = max of their maxima, each warp's part scaled by exp(m_w - M).
  if (lane == 0) s_max[warp] = m, s_sum[warp] = l;
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const size_t i = size_t(lane + 32 * r);
    if (i < d) s_acc[warp][i] = acc[r];
  }
  __syncthreads();
  float total_max = -INFINITY;
  for (int w = 0; w < kWarps; ++w) total_max = fmaxf(total_max, s_max[w]);
  float total = 0.0f;
  float factor[kWarps];
  for (int w = 0; w < kWarps; ++w) {
    // A warp that saw no position (a window shorter than kWarps) has m = -inf, l = 0.
    factor[w] = s_sum[w] > 0.0f ? expf(s_max[w] - total_max) : 0.0f;
    total += s_sum[w] * factor[w];
  }
  const float inv = 1.0f / total;
  const bool bf16 = p.out_format == OutputFormat::bf16;
  for (size_t i = threadIdx.x; i < d; i += blockDim.x) {
    float o = 0.0f;
    for (int w = 0; w < kWarps; ++w) o += s_acc[w][i] * factor[w];
    store(p.out, (t * p.heads + h) * d + i, o * inv, bf16);
  }
}

}  // namespace

cudaError_t cuda_attention(const AttentionLaunch& p, cudaStream_t stream) {
  if (p.tokens == 0 || p.heads == 0) return cudaSuccess;
  if (!p.q || !p.k || !p.v || !p.out || p.kv_heads == 0 || p.heads % p.kv_heads != 0 ||
      p.head_dim == 0 || p.head_dim > kAttentionMaxHeadDim || p.tokens > 65535 ||
      p.heads >= (size_t(1) << 31))
    return cudaErrorInvalidValue;
  const dim3 grid(unsigned(p.heads), unsigned(p.tokens));
  attention_kernel<<<grid, kWarps * 32, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace nibble

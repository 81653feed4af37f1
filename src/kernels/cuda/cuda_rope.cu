// The device side of cuda_rope.h: one thread per (token, head, pair), q heads first.
#include "kernels/cuda/cuda_rope.h"

namespace nibble {
namespace {

__global__ void rope_kernel(RopeLaunch p, size_t pairs_total) {
  const size_t idx = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= pairs_total) return;
  const size_t half = p.head_dim / 2, heads = p.q_heads + p.k_heads;
  const size_t i = idx % half, row = idx / half;  // row = token * heads + head
  const size_t t = row / heads, h = row % heads;
  float* v = h < p.q_heads ? p.q + (t * p.q_heads + h) * p.head_dim
                           : p.k + (t * p.k_heads + (h - p.q_heads)) * p.head_dim;
  const float angle = float(p.start + t) * p.inv_freq[i];
  const float c = cosf(angle), s = sinf(angle);
  float* a = p.interleaved ? v + 2 * i : v + i;
  float* b = p.interleaved ? v + 2 * i + 1 : v + i + half;
  const float x0 = *a, x1 = *b;
  *a = x0 * c - x1 * s;
  *b = x0 * s + x1 * c;
}

}  // namespace

cudaError_t cuda_rope(const RopeLaunch& p, cudaStream_t stream) {
  RopeLaunch l = p;
  if (!l.q) l.q_heads = 0;
  if (!l.k) l.k_heads = 0;
  const size_t total = l.tokens * (l.q_heads + l.k_heads) * (l.head_dim / 2);
  if (total == 0) return cudaSuccess;
  if (l.head_dim % 2 != 0 || !l.inv_freq) return cudaErrorInvalidValue;
  constexpr unsigned kThreads = 256;
  const size_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks >= (size_t(1) << 31)) return cudaErrorInvalidValue;
  rope_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(l, total);
  return cudaGetLastError();
}

}  // namespace nibble

// Causal grouped-query attention on the GPU over one layer's KV cache, F32:
//
//   query t (t = 0 .. tokens-1) is at position p = *position + t and sees the cache positions
//   j = first .. p, first = window && p + 1 > window ? p + 1 - window : 0 (window 0: all);
//   head h reads KV head h / (heads / kv_heads);
//   out[t, h] = sum_j softmax_j(q[t, h] . k[j, kvh] * scale) v[j, kvh]
//
// as the CPU model's attention (transformers' eager attention with sliding_window). The
// cache rows 0 .. p must be filled (the keys already rotated). The position lives in device
// memory, so that a captured CUDA graph replays at any position.
//
// Work split: one block per (head, token, split), 8 warps. The visible positions of a query are
// cut into equal runs (flash-decoding: a long context is read by many blocks, not by one per
// head): one run per block trip (64 positions up to head_dim 128, 32 up to 256), at most
// `splits`, so a short context takes fewer blocks and a small merge, or none; the grid's other
// blocks return at once. In a block, warp w takes the positions first + B w .. first + B w +
// B - 1 of its run (B = 8, or 4 above head_dim 128: B key rows in flight per warp), then a trip
// further on, and so on, with a running (online) softmax: max m, sum l, and the weighted sum
// of values, rescaled by exp(m_old - m_new) whenever the max grows. Each lane holds head_dim /
// 32 (rounded up) elements of q and of the sum, so a dot product is one warp reduction. The
// warps' partial results are merged through shared memory; with more than one run each block
// leaves its (m, l, sum) in `scratch`, and the last block of a (head, token) to finish (a
// counter per row) merges the runs, one trip to L2 per 8 runs, and writes out. head_dim <= 256.
//
// Chained (cuda_launch.cuh), the first trip's key and value rows before *position (the step's
// first position) are loaded before the wait: earlier forwards wrote them, and the position is
// written before a forward's first kernel. Those reads then overlap the kernels before this
// one. Rows from *position on (written by this forward's RoPE kernel) and q are read after it.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/linear_kernel.h"

namespace nibble {

inline constexpr size_t kAttentionMaxHeadDim = 256;  // 8 values per lane
inline constexpr size_t kAttentionMaxSplits = 64;

struct AttentionLaunch {
  const float* q = nullptr;  // [tokens, heads, head_dim]
  const float* k = nullptr;  // [>= p + tokens, kv_heads, head_dim]: the layer's key rows
  const float* v = nullptr;  // same shape, value rows
  void* out = nullptr;       // [tokens, heads, head_dim] in out_format
  OutputFormat out_format = OutputFormat::f32;
  const int32_t* position = nullptr;  // device: the position of query 0
  size_t tokens = 0, heads = 0, kv_heads = 0, head_dim = 0;
  size_t window = 0;         // 0: the whole prefix
  float scale = 1.0f;        // 1 / sqrt(head_dim)
  // Blocks per (head, token) at most, 1 .. kAttentionMaxSplits. Above 1: `scratch` holds
  // attention_scratch_floats() floats and `counters` tokens * heads zeros, which every launch
  // leaves zero again (one launch at a time may use them).
  size_t splits = 1;
  float* scratch = nullptr;
  unsigned* counters = nullptr;
};

inline size_t attention_scratch_floats(size_t tokens, size_t heads, size_t splits,
                                       size_t head_dim) {
  return tokens * heads * splits * (head_dim + 2);
}

// Returns the launch status: cudaErrorInvalidValue for head_dim > kAttentionMaxHeadDim, heads
// not a multiple of kv_heads, splits out of range, or null pointers.
cudaError_t cuda_attention(const AttentionLaunch& launch, cudaStream_t stream);

}  // namespace nibble

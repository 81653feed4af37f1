// A layer's attention step on the GPU, one launch for a chunk of tokens: the q, k, v rows of
// the q|k|v products (F32, read through row strides, so one fused product and three separate
// ones are read alike) through the per-head norms and RoPE, this chunk's keys and values into
// the layer's KV cache, and causal grouped-query attention over the cache, F32. For token t at
// position p = *position + t:
//
//   q = rope(qnorm(q[t, h]));  K[p, kvh] = rope(knorm(k[t, kvh]));  V[p, kvh] = v[t, kvh]
//   out[t, h] = sum_j softmax_j(q . K[j, kvh] * scale) V[j, kvh],   j = first .. p
//
// with first = window && p + 1 > window ? p + 1 - window : 0 (window 0: all) and head h
// reading KV head kvh = h / (heads / kv_heads): the CPU model's order (transformers' eager
// attention with sliding_window). The norm per head (Qwen3's q/k norms; null weights: none) is
// rms_norm over head_dim values. RoPE, for pair i = 0 .. head_dim/2 - 1 at angle = F32(p) *
// inv_freq[i]:
//     a' = a cos(angle) - b sin(angle),   b' = a sin(angle) + b cos(angle)
//   rotate-half (Hugging Face):   a = v[i],   b = v[i + head_dim/2]
//   interleaved (llama2.c):       a = v[2i],  b = v[2i + 1]
// inv_freq is LlamaConfig::rope_inv_freq() (llama3 scaling already applied), on the device.
// The cache rows 0 .. *position - 1 must be filled; the position lives in device memory, so
// that a captured CUDA graph replays at any position.
//
// One launch where RoPE was a kernel of its own (with a buffer of rotated queries) between
// the q|k|v product and attention: a launch a layer fewer. The decode step measured the same
// on the H200 (docs/perf.md): the rotation now lies on attention's own path.
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
// This chunk's rows: every block rotates its own query, and the warp that takes one of this
// chunk's positions rotates that key row from the k product instead of reading the cache;
// the blocks of each group's first head write the key and value rows of their own query's
// position into the cache (each row once), for the steps after this one.
//
// Chained (cuda_launch.cuh): the first trip's key and value rows before *position (the step's
// first position) are loaded before the wait: earlier forwards wrote them, and the position is
// written before a forward's first kernel; so are the RoPE angles at the position of the
// block's query (the frequencies are written at load time). The q, k, v products and the norm
// weights are read, and the cache rows written, after it.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/linear_kernel.h"

namespace nibble {

inline constexpr size_t kAttentionMaxHeadDim = 256;  // 8 values per lane
inline constexpr size_t kAttentionMaxSplits = 64;

struct AttentionLaunch {
  // This chunk's products: row t of q at q + t * q_stride ([heads, head_dim]), of k and v at
  // k + t * k_stride and v + t * v_stride ([kv_heads, head_dim]).
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  size_t q_stride = 0, k_stride = 0, v_stride = 0;
  const float* q_norm = nullptr;  // [head_dim] or null
  const float* k_norm = nullptr;  // [head_dim] or null
  float eps = 1e-6f;
  const float* inv_freq = nullptr;  // [head_dim / 2], device
  bool interleaved = false;
  // The layer's cache rows [>= p + tokens, kv_heads, head_dim]: the rows before *position
  // read, this chunk's rows written.
  float* k_cache = nullptr;
  float* v_cache = nullptr;
  void* out = nullptr;  // [tokens, heads, head_dim] in out_format
  OutputFormat out_format = OutputFormat::f32;
  const int32_t* position = nullptr;  // device: the position of token 0
  size_t tokens = 0, heads = 0, kv_heads = 0, head_dim = 0;
  size_t window = 0;   // 0: the whole prefix
  float scale = 1.0f;  // 1 / sqrt(head_dim)
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

// Returns the launch status: cudaErrorInvalidValue for an odd head_dim or one above
// kAttentionMaxHeadDim, heads not a multiple of kv_heads, splits out of range, or null
// pointers.
cudaError_t cuda_attention(const AttentionLaunch& launch, cudaStream_t stream);

}  // namespace nibble

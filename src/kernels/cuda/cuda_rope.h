// The step between a layer's q/k/v projections and attention on the GPU, one launch for a
// chunk of tokens (the q, k, v rows F32, read through row strides, so one fused qkv product
// and three separate ones are read alike), for token t at position p = *position + t:
//
//   each query head:  [RMSNorm with q_norm] -> RoPE -> q_out[t, h]
//   each KV head:     key [RMSNorm with k_norm] -> RoPE -> k_cache[p, h];  value -> v_cache[p, h]
//
// RMSNorm per head (Qwen3's q/k norms; null weights: none) is the CPU model's rms_norm over
// head_dim values. RoPE, for pair i = 0 .. head_dim/2 - 1 at angle = F32(p) * inv_freq[i]:
//     a' = a cos(angle) - b sin(angle),   b' = a sin(angle) + b cos(angle)
//   rotate-half (Hugging Face):   a = v[i],   b = v[i + head_dim/2]
//   interleaved (llama2.c):       a = v[2i],  b = v[2i + 1]
// inv_freq is LlamaConfig::rope_inv_freq() (llama3 scaling already applied), on the device.
// The position lives in device memory so that a captured CUDA graph replays at any position.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace nibble {

inline constexpr size_t kRopeMaxHeadDim = 256;

struct QkvRopeLaunch {
  const float* q = nullptr;  // row t: q + t * q_stride, [q_heads, head_dim]
  const float* k = nullptr;  // row t: k + t * k_stride, [kv_heads, head_dim]
  const float* v = nullptr;  // row t: v + t * v_stride, [kv_heads, head_dim]
  size_t q_stride = 0, k_stride = 0, v_stride = 0;
  const float* q_norm = nullptr;  // [head_dim] or null
  const float* k_norm = nullptr;  // [head_dim] or null
  float eps = 1e-6f;
  float* q_out = nullptr;    // [tokens, q_heads, head_dim]; must not alias q
  float* k_cache = nullptr;  // the layer's rows [>= p + tokens, kv_heads, head_dim]
  float* v_cache = nullptr;
  const int32_t* position = nullptr;  // device: the position of token 0
  const float* inv_freq = nullptr;    // [head_dim / 2], device
  size_t tokens = 0, q_heads = 0, kv_heads = 0, head_dim = 0;
  bool interleaved = false;
};

// Returns the launch status: cudaErrorInvalidValue for an odd head_dim or one above
// kRopeMaxHeadDim, or a missing pointer.
cudaError_t cuda_qkv_rope(const QkvRopeLaunch& launch, cudaStream_t stream);

}  // namespace nibble

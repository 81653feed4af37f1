// Rotary position embedding on the GPU, in place on F32 query and key rows of consecutive
// positions start .. start + tokens - 1 (the keys usually rows of the KV cache):
//
//   pair (a, b) of head h at position p, i = 0 .. head_dim/2 - 1, angle = p * inv_freq[i]:
//     a' = a cos(angle) - b sin(angle),   b' = a sin(angle) + b cos(angle)
//   rotate-half (Hugging Face):   a = v[i],   b = v[i + head_dim/2]
//   interleaved (llama2.c):       a = v[2i],  b = v[2i + 1]
//
// inv_freq is LlamaConfig::rope_inv_freq() (llama3 scaling already applied), on the device.
// The angle is rounded to F32 before cosf/sinf, as the CPU model computes it.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace nibble {

struct RopeLaunch {
  float* q = nullptr;              // [tokens, q_heads, head_dim] or null
  float* k = nullptr;              // [tokens, k_heads, head_dim] or null
  const float* inv_freq = nullptr; // [head_dim / 2], device
  size_t tokens = 0, q_heads = 0, k_heads = 0, head_dim = 0;
  size_t start = 0;                // position of the first token
  bool interleaved = false;
};

// One launch rotates q and k. Returns the launch status (cudaErrorInvalidValue for an odd
// head_dim or a missing inv_freq).
cudaError_t cuda_rope(const RopeLaunch& launch, cudaStream_t stream);

}  // namespace nibble

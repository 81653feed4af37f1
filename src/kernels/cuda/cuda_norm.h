// RMSNorm on the GPU, over F32 rows: the residual stream (rows = tokens, n = hidden) or the
// q/k heads of Qwen3 (rows = tokens x heads, n = head_dim):
//
//   x[r] += delta[r]                                    (when delta is given: the residual add)
//   out[r, i] = w[i] * (x[r, i] / sqrt(mean_i x[r, i]^2 + eps))
//
// as the CPU model's rms_norm (transformers' LlamaRMSNorm: F32 throughout, the weight applied
// after the normalisation). One block per row; the sum of squares is a tree reduction, so it
// differs from the CPU's sequential sum by rounding only.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "kernels/linear_kernel.h"

namespace nibble {

struct RmsNormLaunch {
  float* x = nullptr;             // [rows, n] F32, device; updated in place when delta is given
  const float* delta = nullptr;   // [rows, n] F32 or null
  const float* weight = nullptr;  // [n] F32
  void* out = nullptr;            // [rows, n] in out_format; may be x itself (F32 output)
  OutputFormat out_format = OutputFormat::f32;
  size_t rows = 0, n = 0;
  float eps = 1e-5f;
};

// Launches on `stream`; returns the launch status (cudaErrorInvalidValue for a null pointer
// or rows/n beyond 2^31). rows == 0 returns cudaSuccess at once.
cudaError_t cuda_rms_norm(const RmsNormLaunch& launch, cudaStream_t stream);

}  // namespace nibble

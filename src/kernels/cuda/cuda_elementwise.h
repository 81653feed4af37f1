// Elementwise and row-copy kernels of the GPU model executor, each one launch on a stream,
// returning the launch status (cudaErrorInvalidValue for null pointers or bad sizes; an empty
// problem returns cudaSuccess at once):
//
//   cuda_embedding_gather  out[t, :] = F32(table[ids[t], :])      table F32 or BF16
//   cuda_silu_mul          out[r, i] = g / (1 + exp(-g)) * up[r, i], g = gate[r, i]  (SwiGLU)
//   cuda_split_bf16        x = hi + lo, both BF16: hi = bf16(x), lo = bf16(x - hi)
//   cuda_combine_rows      out[r, :] = sum of `parts` row blocks of c (+ bias)
//   cuda_bf16_to_f32       out[i] = F32(in[i])
//
// The split and combine pair let a BF16-input GEMM (cuBLAS) see F32 activations to ~16
// significant bits: the product is run once on the 2m rows [hi; lo] (the weights are read
// once) and the two halves are added, as sm80_mxfp4_gemv does for F32 activations.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/linear_kernel.h"

namespace nibble {

struct EmbeddingGatherLaunch {
  const void* table = nullptr;  // [vocab, cols], F32 or BF16
  bool table_bf16 = false;
  const int32_t* ids = nullptr; // [count], device; each in 0 .. vocab - 1 (checked by the caller)
  float* out = nullptr;         // [count, cols] F32
  size_t count = 0, cols = 0;
};
cudaError_t cuda_embedding_gather(const EmbeddingGatherLaunch& launch, cudaStream_t stream);

// gate, up: `rows` rows of `cols` F32, row r at gate + r * gate_stride (up likewise: the two
// halves of a fused gate_up product, or two matrices); out: [rows, cols] in out_format.
struct SiluMulLaunch {
  const float* gate = nullptr;
  const float* up = nullptr;
  size_t gate_stride = 0, up_stride = 0;
  void* out = nullptr;
  OutputFormat out_format = OutputFormat::f32;
  size_t rows = 0, cols = 0;
};
cudaError_t cuda_silu_mul(const SiluMulLaunch& launch, cudaStream_t stream);

// x: [rows, cols] F32 -> out: [2 rows, cols] BF16, the hi rows first, then the lo rows.
cudaError_t cuda_split_bf16(const float* x, size_t rows, size_t cols, void* out,
                            cudaStream_t stream);

// c: [parts * rows, cols] F32 (parts 1 or 2: row block b is rows b*rows .. (b+1)*rows - 1);
// bias: [cols] or null; out: [rows, cols] F32, may equal c (each element reads only its own).
cudaError_t cuda_combine_rows(const float* c, size_t parts, size_t rows, size_t cols,
                              const float* bias, float* out, cudaStream_t stream);

cudaError_t cuda_bf16_to_f32(const void* in, float* out, size_t count, cudaStream_t stream);

}  // namespace nibble

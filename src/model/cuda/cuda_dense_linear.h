// A full-precision linear layer on a CUDA device, through cuBLAS (CUDA builds only): the layers
// kept out of MXFP4 (not selected by --mxfp4-layers, a tied classifier). The weights stay in the
// format the CPU model holds them in (model/dense_linear.h: BF16 kept BF16, F32 kept F32),
// uploaded once; the output is F32 with the optional F32 bias added.
//
//   weights  activations  what runs (cublasGemmEx, F32 accumulation, no TF32)
//   BF16     BF16         one GEMM, BF16 x BF16
//   BF16     F32          x split into hi + lo, both BF16 (cuda_split_bf16), ONE GEMM over the
//                         2m rows [hi; lo] so the weights are read once, then C_hi + C_lo
//                         (+ bias): ~16 significant bits of each activation, as the MXFP4
//                         GEMV's F32 path
//   F32      F32          one GEMM, F32 x F32 (CUBLAS_COMPUTE_32F: IEEE F32 FMAs)
//   F32      BF16         activations widened to F32 first, then as above
//
// Row-major out[m, n] = x[m, k] W[n, k]^T is column-major out^T = W^T' x^T': cuBLAS sees
// A = W (k x n, transposed), B = x (k x m), C = out (n x m), all with leading dimension k or n.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "format/dtype.h"
#include "model/cuda/cuda_context.h"
#include "model/dense_linear.h"
#include "model/linear.h"

namespace nibble {

// Device weights [rows, cols], F32 or BF16; shared by the owners of one table (the embedding
// gather and a tied lm_head).
struct CudaDenseWeights {
  DType dtype = DType::F32;
  size_t rows = 0, cols = 0;
  DeviceBuffer data;
  static std::shared_ptr<const CudaDenseWeights> upload(const DenseWeights& host,
                                                        const std::string& what);
};

class CudaDenseLinear final : public Linear {
 public:
  // `max_m`: the largest M of a forward (sizes the context's shared scratch, reserved here).
  CudaDenseLinear(std::string name, std::shared_ptr<const CudaDenseWeights> weights,
                  std::vector<float> bias, CudaContext& context, size_t max_m,
                  ActivationFormat activation);
  void forward(const float* x, size_t m, float* out) const override;
  void forward_on_device(const ActivationView& x, const OutputView& out,
                         void* stream) const override;
  DeviceKind device() const override { return DeviceKind::cuda; }
  size_t n() const override { return weights_->rows; }
  size_t k() const override { return weights_->cols; }
  const std::string& name() const override { return name_; }
  std::string weight_format() const override;
  // "cublas_bf16", "cublas_f32".
  std::string kernel_name() const override;
  size_t weight_bytes() const override { return weights_->data.bytes() + bias_.bytes(); }

 private:
  // C[rows, n] (F32, device) = B[rows, k] (B_type) x W^T on the context's stream.
  void gemm(const void* b, cudaDataType_t b_type, size_t rows, float* c) const;

  std::string name_;
  std::shared_ptr<const CudaDenseWeights> weights_;
  DeviceBuffer bias_;
  CudaContext& context_;
  size_t max_m_;
  ActivationFormat activation_;
};

}  // namespace nibble

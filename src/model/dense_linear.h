// The full-precision linear layer: F32 or BF16 weights [n, k], F32 activations, multi-threaded
// over output features on ThreadPool::global(). Used for the layers kept out of MXFP4 (a tied
// classifier, layers not selected by --mxfp4-layers). Weights may be shared with another owner
// (the tied embedding table) through a shared_ptr, so a tied lm_head costs no copy.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "format/dtype.h"
#include "model/linear.h"

namespace nibble {

// Weights owned by one or more layers: F32 or BF16, row-major [rows, cols].
struct DenseWeights {
  DType dtype = DType::F32;
  size_t rows = 0, cols = 0;
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  const void* data() const {
    return dtype == DType::F32 ? static_cast<const void*>(f32.data()) : bf16.data();
  }
  size_t bytes() const { return f32.size() * 4 + bf16.size() * 2; }
  // Row `r` as F32 into out[cols].
  void row_to_f32(size_t r, float* out) const;
};

class DenseLinear final : public Linear {
 public:
  DenseLinear(std::string name, std::shared_ptr<const DenseWeights> weights,
              std::vector<float> bias = {});
  void forward(const float* x, size_t m, float* out) const override;
  size_t n() const override { return weights_->rows; }
  size_t k() const override { return weights_->cols; }
  const std::string& name() const override { return name_; }
  std::string weight_format() const override;
  std::string kernel_name() const override;
  size_t weight_bytes() const override { return weights_->bytes(); }

 private:
  std::string name_;
  std::shared_ptr<const DenseWeights> weights_;
  std::vector<float> bias_;
};

}  // namespace nibble

// A linear layer of a model as the model sees it: out[m, n] = x[m, k] * W[n, k]^T (+ bias[n]),
// F32 activations and outputs, row-major. Two implementations: DenseLinear (F32 or BF16
// weights, src/model/dense_linear.h) and QuantLinear (MXFP4 weights on a registry kernel,
// src/model/quant_linear.h). The model holds them through this interface, so which layers run
// in MXFP4 is load-time data, not code.
#pragma once

#include <cstddef>
#include <string>

namespace nibble {

class Linear {
 public:
  virtual ~Linear() = default;
  // x: [m, k] F32, out: [m, n] F32 (must not alias x).
  virtual void forward(const float* x, size_t m, float* out) const = 0;
  virtual size_t n() const = 0;
  virtual size_t k() const = 0;
  virtual const std::string& name() const = 0;
  // "mxfp4", "f32", "bf16": how the weights are stored.
  virtual std::string weight_format() const = 0;
  // Which kernel runs it ("cpu_simd", "dense_f32"...), for the load summary.
  virtual std::string kernel_name() const = 0;
  // Bytes of weights this layer reads per forward (for bandwidth floors and memory reports).
  virtual size_t weight_bytes() const = 0;
};

}  // namespace nibble

// A linear layer of a model as the model sees it: out[m, n] = x[m, k] * W[n, k]^T (+ bias[n]),
// row-major. Implementations: DenseLinear (F32 or BF16 weights on the CPU,
// src/model/dense_linear.h), QuantLinear (MXFP4 weights on a registry kernel, CPU or CUDA,
// src/model/quant_linear.h) and, in CUDA builds, CudaDenseLinear (cuBLAS,
// src/model/cuda/cuda_dense_linear.h). The model holds them through this interface, so which
// layers run in MXFP4, and where, is load-time data, not code.
//
// Two entry points, by where the layer's weights live (device()):
//   forward(x, m, out)                 CPU layers: host pointers, F32 in and out.
//   forward_on_device(x, out, stream)  CUDA layers: device pointers in the formats the layer
//                                      was built for (ModelLoadOptions::activation in, F32
//                                      out), on a cudaStream_t.
#pragma once

#include <cstddef>
#include <string>

#include "base/error.h"
#include "kernels/linear_kernel.h"

namespace nibble {

class Linear {
 public:
  virtual ~Linear() = default;
  // x: [m, k] F32, out: [m, n] F32 (must not alias x). CPU layers only.
  virtual void forward(const float* x, size_t m, float* out) const = 0;
  // Device layers: x.data [x.m, k] and out.data [x.m, n] in device memory (must not alias).
  virtual void forward_on_device(const ActivationView& x, const OutputView& out,
                                 void* stream) const {
    (void)x, (void)out, (void)stream;
    NIBBLE_THROW("layer {}: {} runs on the CPU, it has no device forward", name(), kernel_name());
  }
  // What the layer does to its product before storing it (LinearDesc::epilogue).
  virtual LinearEpilogue epilogue() const { return LinearEpilogue::none; }
  // Whether forward_on_device takes a FoldedNorm in its views (kernels/linear_kernel.h).
  virtual bool folds_norm() const { return false; }
  // Where the weights live and forward's pointers must point.
  virtual DeviceKind device() const { return DeviceKind::cpu; }
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

// An MXFP4 linear layer of a model: the registry's Mxfp4Linear (kernels/registry.h) behind the
// model's Linear interface. Weights are prepared (repacked, and uploaded for a CUDA kernel) once
// here, at load; forward() / forward_on_device() only run the chosen kernel.
#pragma once

#include <memory>
#include <string>

#include "kernels/registry.h"
#include "model/linear.h"

namespace nibble {

class QuantLinear final : public Linear {
 public:
  QuantLinear(LinearDesc desc, const Mxfp4HostWeights& weights, const float* bias,
              const DeviceInfo& device, const KernelOverrides& overrides);
  void forward(const float* x, size_t m, float* out) const override;
  void forward_on_device(const ActivationView& x, const OutputView& out,
                         void* stream) const override;
  LinearEpilogue epilogue() const override { return linear_.desc().epilogue; }
  bool folds_norm() const override { return device_ != DeviceKind::cpu && linear_.folds_norm(); }
  DeviceKind device() const override { return device_; }
  size_t n() const override { return linear_.desc().n; }
  size_t k() const override { return linear_.desc().k; }
  const std::string& name() const override { return linear_.desc().name; }
  std::string weight_format() const override { return "mxfp4"; }
  // The kernel of each M bucket, "cpu_simd" or "cpu_simd (M 1..8), cpu_ref (M 9..256)".
  std::string kernel_name() const override;
  size_t weight_bytes() const override { return linear_.prepared_bytes(); }
  const Mxfp4Linear& mxfp4() const { return linear_; }

 private:
  Mxfp4Linear linear_;
  DeviceKind device_;  // of the chosen kernels (the registry picks them for one device)
};

}  // namespace nibble

#include "model/quant_linear.h"

#include <fmt/format.h>

#include "base/error.h"

namespace nibble {

QuantLinear::QuantLinear(LinearDesc desc, const Mxfp4HostWeights& weights, const float* bias,
                         const DeviceInfo& device, const KernelOverrides& overrides)
    : linear_(std::move(desc), weights, bias, device, overrides),
      device_(linear_.choices().front().kernel->device_kind()) {}

void QuantLinear::forward(const float* x, size_t m, float* out) const {
  NIBBLE_CHECK(device_ == DeviceKind::cpu, "layer {}: runs on {} ({}), not on host memory",
               name(), device_kind_name(device_), kernel_name());
  linear_.forward(ActivationView{x, m, ActivationFormat::f32}, OutputView{out, OutputFormat::f32});
}

void QuantLinear::forward_on_device(const ActivationView& x, const OutputView& out,
                                    void* stream) const {
  NIBBLE_CHECK(device_ != DeviceKind::cpu, "layer {}: runs on the CPU ({}), not on a device",
               name(), kernel_name());
  linear_.forward(x, out, stream);
}

std::string QuantLinear::kernel_name() const {
  const auto& choices = linear_.choices();
  if (choices.size() == 1) return std::string(choices[0].kernel->name());
  std::string out;
  for (const KernelChoice& c : choices) {
    if (!out.empty()) out += ", ";
    out += fmt::format("{} (M {}..{})", c.kernel->name(), c.min_m, c.max_m);
  }
  return out;
}

}  // namespace nibble

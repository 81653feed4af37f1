#include "model/quant_linear.h"

#include <fmt/format.h>

namespace nibble {

QuantLinear::QuantLinear(LinearDesc desc, const Mxfp4HostWeights& weights, const float* bias,
                         const DeviceInfo& device, const KernelOverrides& overrides)
    : linear_(std::move(desc), weights, bias, device, overrides) {}

void QuantLinear::forward(const float* x, size_t m, float* out) const {
  linear_.forward(ActivationView{x, m, ActivationFormat::f32}, OutputView{out, OutputFormat::f32});
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

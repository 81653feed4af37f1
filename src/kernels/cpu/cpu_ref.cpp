#include "kernels/cpu/cpu_ref.h"

#include <cstring>
#include <vector>

#include "base/error.h"
#include "format/e2m1.h"
#include "format/e8m0.h"
#include "format/float16.h"
#include "format/mxfp4.h"

namespace nibble {
namespace {

struct CpuRefWeights final : PreparedWeights {
  size_t n = 0, k = 0;
  std::vector<uint8_t> blocks, scales;  // format/mxfp4.h layout
  std::vector<float> bias;              // empty: no bias
  size_t bytes() const override {
    return blocks.size() + scales.size() + bias.size() * sizeof(float);
  }
};

double load_activation(const ActivationView& act, size_t index) {
  if (act.format == ActivationFormat::f32) return static_cast<const float*>(act.data)[index];
  return bf16_to_f32(static_cast<const uint16_t*>(act.data)[index]);
}

void store_output(const OutputView& out, size_t index, double value) {
  if (out.format == OutputFormat::f32)
    static_cast<float*>(out.data)[index] = float(value);
  else
    static_cast<uint16_t*>(out.data)[index] = f32_to_bf16(float(value));
}

class CpuRefKernel final : public LinearKernel {
 public:
  std::string_view name() const override { return "cpu_ref"; }
  DeviceKind device_kind() const override { return DeviceKind::cpu; }
  std::string_view layout_id() const override { return "mxfp4_rows"; }

  Check is_supported(const DeviceInfo& device) const override {
    if (device.kind != DeviceKind::cpu)
      return Check::no(fmt::format("runs on the CPU, not on {}", device_kind_name(device.kind)));
    return Check::yes();
  }

  // Every shape, format and M: this is the oracle.
  Check can_implement(const LinearDesc&) const override { return Check::yes(); }

  std::unique_ptr<PreparedWeights> prepare(const LinearDesc& layer, const Mxfp4HostWeights& w,
                                           const float* bias) const override {
    auto prepared = std::make_unique<CpuRefWeights>();
    prepared->n = layer.n;
    prepared->k = layer.k;
    const size_t blocks_per_row = mxfp4_blocks_per_row(layer.k);
    prepared->blocks.assign(w.blocks, w.blocks + layer.n * blocks_per_row * kMxfp4BlockBytes);
    prepared->scales.assign(w.scales, w.scales + layer.n * blocks_per_row);
    if (layer.has_bias) prepared->bias.assign(bias, bias + layer.n);
    return prepared;
  }

  void apply(const LinearDesc& layer, const PreparedWeights& prepared, const ActivationView& act,
             const OutputView& out, void*) const override {
    const auto& w = static_cast<const CpuRefWeights&>(prepared);
    const size_t blocks_per_row = mxfp4_blocks_per_row(layer.k);
    std::vector<double> row(layer.k);
    for (size_t n = 0; n < layer.n; ++n) {
      // Decode weight row n once, then take its dot product with every activation row.
      for (size_t k = 0; k < layer.k; ++k) {
        const size_t block = n * blocks_per_row + k / kMxfp4BlockSize;
        const size_t within = k % kMxfp4BlockSize;
        const uint8_t byte = w.blocks[block * kMxfp4BlockBytes + within / 2];
        const uint8_t code = within % 2 == 0 ? byte & 0xf : byte >> 4;
        row[k] = double(e2m1_decode(code)) * double(e8m0_decode(w.scales[block]));
      }
      for (size_t m = 0; m < act.m; ++m) {
        double sum = 0;
        for (size_t k = 0; k < layer.k; ++k) sum += load_activation(act, m * layer.k + k) * row[k];
        if (!w.bias.empty()) sum += w.bias[n];
        store_output(out, m * layer.n + n, sum);
      }
    }
  }
};

}  // namespace

std::unique_ptr<LinearKernel> make_cpu_ref_kernel() { return std::make_unique<CpuRefKernel>(); }

}  // namespace nibble

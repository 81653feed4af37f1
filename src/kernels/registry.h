// The kernel registry: a priority list of LinearKernels per device kind, and the per-layer
// choice among them (one kernel per M bucket), with the reason for every choice and refusal.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kernels/linear_kernel.h"

namespace nibble {

// --mxfp4-kernel / NIBBLE_MXFP4_KERNEL: "NAME" forces NAME on every layer;
// "dense=NAME,moe=NAME" forces per layer class. Empty: the registry chooses.
struct KernelOverrides {
  std::string all, dense, moe;
  // Throws an Error naming the bad token and the registered kernel names.
  static KernelOverrides parse(const std::string& spec);
  // The flag wins over the environment variable; either may be empty.
  static KernelOverrides from_flag_or_env(const std::string& flag);
  const std::string& forced_for(LayerClass c) const;
};

// One kernel serving the calls of a layer whose M lies in [min_m, max_m].
struct KernelChoice {
  const LinearKernel* kernel = nullptr;
  size_t min_m = 1, max_m = 1;
  std::string why;  // "first supported in priority order", "forced by NIBBLE_MXFP4_KERNEL", ...
};

class KernelRegistry {
 public:
  // Every kernel built into this binary, in priority order per device kind.
  static const KernelRegistry& builtin();
  std::vector<const LinearKernel*> kernels(DeviceKind kind) const;
  std::vector<const LinearKernel*> all() const;
  const LinearKernel* find(const std::string& name) const;

  // Kernels for `layer` on `device` covering layer.min_m..max_m. A forced kernel that cannot
  // serve the layer throws an Error naming the layer and every reason; so does a layer that
  // no kernel can serve.
  std::vector<KernelChoice> select(const LinearDesc& layer, const DeviceInfo& device,
                                   const KernelOverrides& overrides) const;

  void add(DeviceKind kind, std::unique_ptr<LinearKernel> kernel);

 private:
  std::vector<std::pair<DeviceKind, std::unique_ptr<LinearKernel>>> entries_;
};

DeviceInfo cpu_device_info();
// CUDA device `index`; throws if CUDA is not compiled in or the device does not exist.
DeviceInfo cuda_device_info(int index);

// A linear layer bound to its chosen kernels and their prepared weights. forward() picks the
// kernel whose M bucket holds act.m.
class Mxfp4Linear {
 public:
  Mxfp4Linear(LinearDesc layer, const Mxfp4HostWeights& weights, const float* bias,
              const DeviceInfo& device, const KernelOverrides& overrides);
  void forward(const ActivationView& act, const OutputView& out, void* stream = nullptr) const;
  const LinearDesc& desc() const { return layer_; }
  const std::vector<KernelChoice>& choices() const { return choices_; }
  // "layer -> kernel (M a..b): why" lines, for --log-kernels.
  std::string describe() const;
  size_t prepared_bytes() const;

 private:
  LinearDesc layer_;
  std::vector<KernelChoice> choices_;
  std::vector<std::shared_ptr<PreparedWeights>> prepared_;  // one per choice; shared by layout
};

}  // namespace nibble

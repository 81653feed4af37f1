// The kernel registry: a priority list of LinearKernels per device kind, and the per-layer
// choice among them (one kernel per M bucket), with the reason for every choice and refusal.
//
// Selection (KernelRegistry::select):
//   - Forced (--mxfp4-kernel / NIBBLE_MXFP4_KERNEL, per class or for all): that one kernel
//     serves the layer's whole M range, or the load fails with an Error naming the layer, the
//     kernel and every reason it gave. Never a silent fallback.
//   - Otherwise the layer's M range is cut at the bucket edges kMBucketEdges (M = 1: GEMV,
//     2..8: small batch, 9..64, 65..): for each bucket the first kernel in priority order that
//     is supported on the device and can implement the layer for that M range serves it;
//     neighbouring buckets that chose the same kernel are merged. A bucket no kernel serves is
//     an Error listing every kernel's reason.
//
// Prepared layouts: each chosen kernel prepares its own copy of the weights, except that
// kernels with the same layout_id() share one copy. On the CPU today cpu_simd serves every M
// bucket from ONE prepared layout (its GEMV and its GEMM read the same repacked blocks), so a
// layer holds one copy; a device whose low-M and high-M kernels want different layouts pays
// one copy per layout (Mxfp4Linear::prepared_bytes reports it; `--log-kernels` shows it).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/linear_kernel.h"

namespace nibble {

class KernelRegistry;

// --mxfp4-kernel / NIBBLE_MXFP4_KERNEL: "NAME" forces NAME on every layer;
// "dense=NAME,moe=NAME" forces per layer class (either may be left out; a class entry wins
// over a bare NAME given with it). Empty: the registry chooses.
struct KernelOverrides {
  std::string all, dense, moe;
  std::string source;  // where the spec came from ("--mxfp4-kernel", "NIBBLE_MXFP4_KERNEL")

  // Throws an Error naming the bad token and the registered kernel names. `registry`
  // defaults to KernelRegistry::builtin().
  static KernelOverrides parse(const std::string& spec, const KernelRegistry* registry = nullptr,
                               const std::string& source = "--mxfp4-kernel");
  // The flag wins over the environment variable; either may be empty.
  static KernelOverrides from_flag_or_env(const std::string& flag,
                                          const KernelRegistry* registry = nullptr);
  const std::string& forced_for(LayerClass c) const;
  bool empty() const { return all.empty() && dense.empty() && moe.empty(); }
};

// M bucket edges: a bucket starts at each edge. Why these: M = 1 is decode (weight streaming),
// 2..8 are small batches a GEMV-style kernel still serves by decoding each weight once for all
// rows, 9..64 and 65.. are where register-blocked GEMMs take over (tile sizes differ).
inline constexpr size_t kMBucketEdges[] = {1, 2, 9, 65};

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
  // "cpu_simd, cpu_ref" (for error messages).
  std::string names() const;

  // Kernels for `layer` on `device` covering layer.min_m..max_m. A forced kernel that cannot
  // serve the layer throws an Error naming the layer and every reason; so does a layer that
  // no kernel can serve.
  std::vector<KernelChoice> select(const LinearDesc& layer, const DeviceInfo& device,
                                   const KernelOverrides& overrides) const;

  // Appends at the lowest priority of its device kind.
  void add(DeviceKind kind, std::unique_ptr<LinearKernel> kernel);

 private:
  std::vector<std::pair<DeviceKind, std::unique_ptr<LinearKernel>>> entries_;
};

DeviceInfo cpu_device_info();
// CUDA device `index`; throws if CUDA is not compiled in or the device does not exist.
DeviceInfo cuda_device_info(int index);

// --log-kernels: while a sink is set, every Mxfp4Linear prints its describe() lines through it
// once, when it is built. nullptr turns logging off (the default).
using KernelLogSink = std::function<void(std::string_view line)>;
void set_kernel_log(KernelLogSink sink);

// A linear layer bound to its chosen kernels and their prepared weights. forward() picks the
// kernel whose M bucket holds act.m. The constructor copies what the kernels need (prepare),
// so the caller's weights and bias may be freed once it returns.
class Mxfp4Linear {
 public:
  // `registry` defaults to KernelRegistry::builtin().
  Mxfp4Linear(LinearDesc layer, const Mxfp4HostWeights& weights, const float* bias,
              const DeviceInfo& device, const KernelOverrides& overrides,
              const KernelRegistry* registry = nullptr);
  // act.m must lie in desc().min_m..max_m (M = 0 returns at once); act and out formats must be
  // the layer's. Throws an Error naming the layer otherwise.
  void forward(const ActivationView& act, const OutputView& out, void* stream = nullptr) const;
  const LinearDesc& desc() const { return layer_; }
  const std::vector<KernelChoice>& choices() const { return choices_; }
  // Whether every chosen kernel takes a FoldedNorm (linear_kernel.h).
  bool folds_norm() const;
  // "layer -> kernel (M a..b): why" lines, for --log-kernels.
  std::string describe() const;
  // Bytes held by the prepared copies (each shared layout counted once).
  size_t prepared_bytes() const;

 private:
  LinearDesc layer_;
  std::vector<KernelChoice> choices_;
  std::vector<std::shared_ptr<PreparedWeights>> prepared_;  // one per choice; shared by layout
};

}  // namespace nibble

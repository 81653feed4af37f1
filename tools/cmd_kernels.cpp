// nibble kernels: every MXFP4 linear kernel built into this binary, in priority order per
// device, whether it runs on this machine and why not; with --n/--k, which kernel would serve
// such a layer for each M range (honouring --mxfp4-kernel / NIBBLE_MXFP4_KERNEL).
#include <fmt/format.h>

#include <optional>

#include "base/error.h"
#include "command.h"
#include "kernel_options.h"
#include "kernels/registry.h"

namespace nibble {
namespace {

struct Options {
  KernelOptions kernels;
  size_t n = 0, k = 0, min_m = 1, max_m = 512;
  std::string activation = "f32", output = "f32", layer_class = "dense";
  bool bias = false;
};

void print_device(const KernelRegistry& registry, DeviceKind kind, const DeviceInfo* device,
                  const std::string& device_error) {
  const auto kernels = registry.kernels(kind);
  if (device)
    fmt::print("{}: {}{}\n", device_kind_name(kind), device->name,
               kind == DeviceKind::cpu
                   ? fmt::format(" (SIMD target {}, {} threads)", device->cpu_simd_target,
                                 device->threads)
                   : fmt::format(" (sm_{}, {} SMs)", device->compute_capability,
                                 device->multiprocessors));
  else
    fmt::print("{}: unavailable: {}\n", device_kind_name(kind), device_error);
  if (kernels.empty()) {
    fmt::print("  (no {} kernels in this build)\n", device_kind_name(kind));
    return;
  }
  for (size_t i = 0; i < kernels.size(); ++i) {
    std::string status;
    if (!device) {
      status = "not available: " + device_error;
    } else {
      const Check c = kernels[i]->is_supported(*device);
      status = c.ok ? "supported" : "not supported: " + c.reason;
    }
    fmt::print("  {}. {:<16} layout {:<20} {:<32} {}\n", i + 1, kernels[i]->name(),
               kernels[i]->layout_id(), activation_rounding_name(kernels[i]->activation_rounding()),
               status);
  }
}

void run(const Options& o) {
  const KernelRegistry& registry = KernelRegistry::builtin();
  const KernelOverrides overrides = o.kernels.overrides();  // a bad spec fails before output
  const DeviceInfo cpu = cpu_device_info();
  print_device(registry, DeviceKind::cpu, &cpu, "");
  std::optional<DeviceInfo> cuda;
  std::string cuda_error;
  try {
    cuda = cuda_device_info(0);
  } catch (const Error& e) {
    cuda_error = e.message();
  }
  print_device(registry, DeviceKind::cuda, cuda ? &*cuda : nullptr, cuda_error);

  if (o.n == 0 && o.k == 0) return;
  NIBBLE_CHECK(o.n > 0 && o.k > 0, "--n and --k go together (both > 0)");
  LinearDesc layer;
  layer.name = fmt::format("{}x{}", o.n, o.k);
  layer.n = o.n;
  layer.k = o.k;
  layer.min_m = o.min_m;
  layer.max_m = o.max_m;
  layer.has_bias = o.bias;
  layer.activation = o.activation == "bf16" ? ActivationFormat::bf16 : ActivationFormat::f32;
  layer.output = o.output == "bf16" ? OutputFormat::bf16 : OutputFormat::f32;
  layer.layer_class = o.layer_class == "moe" ? LayerClass::moe : LayerClass::dense;
  fmt::print("\nselection for a {} layer N={} K={} ({} activations, {} output{}):\n",
             layer_class_name(layer.layer_class), o.n, o.k, o.activation, o.output,
             o.bias ? ", bias" : "");
  for (const auto& [kind, device] :
       {std::pair{DeviceKind::cpu, std::optional<DeviceInfo>(cpu)}, std::pair{DeviceKind::cuda, cuda}}) {
    if (!device) continue;
    for (const KernelChoice& c : registry.select(layer, *device, overrides))
      fmt::print("  {} M {}..{} -> {}: {}\n", device_kind_name(kind), c.min_m, c.max_m,
                 c.kernel->name(), c.why);
  }
}

void setup(CLI::App& command) {
  auto o = std::make_shared<Options>();
  o->kernels.add_to(command);
  command.add_option("--n", o->n, "Show the selection for a layer with N outputs");
  command.add_option("--k", o->k, "... and K inputs");
  command.add_option("--min-m", o->min_m, "... called with M from")->capture_default_str();
  command.add_option("--max-m", o->max_m, "... up to")->capture_default_str();
  command.add_option("--activation", o->activation, "f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  command.add_option("--output", o->output, "f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  command.add_option("--class", o->layer_class, "dense or moe")
      ->check(CLI::IsMember({"dense", "moe"}))
      ->capture_default_str();
  command.add_flag("--bias", o->bias, "The layer has a bias");
  command.callback([o] { run(*o); });
}

const bool registered = register_command(
    {"kernels", "List the MXFP4 kernels built in, whether they run here, and which would serve a layer",
     60, &setup});

}  // namespace
}  // namespace nibble

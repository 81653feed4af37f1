#include "kernels/registry.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>

#include "base/cpu_features.h"
#include "base/error.h"
#include "base/thread_pool.h"
#include "kernels/cpu/cpu_ref.h"
#if NIBBLE_WITH_CUDA
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/sm80_mxfp4_gemv.h"
#endif
#include "kernels/cpu/cpu_avx2_w4a8.h"
#include "kernels/cpu/cpu_simd.h"

namespace nibble {

// ---- overrides ------------------------------------------------------------------------------

namespace {

std::string trim(std::string s) {
  const auto first = s.find_first_not_of(" \t");
  if (first == std::string::npos) return {};
  const auto last = s.find_last_not_of(" \t");
  return s.substr(first, last - first + 1);
}

}  // namespace

KernelOverrides KernelOverrides::parse(const std::string& spec, const KernelRegistry* registry,
                                       const std::string& source) {
  if (!registry) registry = &KernelRegistry::builtin();
  KernelOverrides result;
  result.source = source;
  const auto check_name = [&](const std::string& name, const std::string& token) {
    NIBBLE_CHECK(!name.empty(), "{} \"{}\": empty kernel name in \"{}\" (registered kernels: {})",
                 source, spec, token, registry->names());
    NIBBLE_CHECK(registry->find(name) != nullptr,
                 "{} \"{}\": unknown kernel \"{}\" (registered kernels: {})", source, spec, name,
                 registry->names());
  };
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t comma = std::min(spec.find(',', start), spec.size());
    const std::string token = trim(spec.substr(start, comma - start));
    start = comma + 1;
    if (token.empty()) {
      NIBBLE_CHECK(spec.find_first_not_of(" \t") == std::string::npos,
                   "{} \"{}\": empty entry between commas", source, spec);
      continue;
    }
    const auto eq = token.find('=');
    if (eq == std::string::npos) {
      NIBBLE_CHECK(result.all.empty(), "{} \"{}\": two kernel names for all layers (\"{}\", \"{}\")",
                   source, spec, result.all, token);
      check_name(token, token);
      result.all = token;
      continue;
    }
    const std::string key = trim(token.substr(0, eq)), name = trim(token.substr(eq + 1));
    std::string* slot = key == "dense" ? &result.dense : key == "moe" ? &result.moe : nullptr;
    NIBBLE_CHECK(slot != nullptr,
                 "{} \"{}\": unknown layer class \"{}\" in \"{}\" (classes: dense, moe)", source,
                 spec, key, token);
    NIBBLE_CHECK(slot->empty(), "{} \"{}\": layer class \"{}\" given twice", source, spec, key);
    check_name(name, token);
    *slot = name;
  }
  return result;
}

KernelOverrides KernelOverrides::from_flag_or_env(const std::string& flag,
                                                  const KernelRegistry* registry) {
  if (!flag.empty()) return parse(flag, registry, "--mxfp4-kernel");
  const char* env = std::getenv("NIBBLE_MXFP4_KERNEL");
  if (env && *env) return parse(env, registry, "NIBBLE_MXFP4_KERNEL");
  KernelOverrides none;
  return none;
}

const std::string& KernelOverrides::forced_for(LayerClass c) const {
  const std::string& specific = c == LayerClass::dense ? dense : moe;
  return specific.empty() ? all : specific;
}

// ---- registry -------------------------------------------------------------------------------

const KernelRegistry& KernelRegistry::builtin() {
  static const KernelRegistry registry = [] {
    KernelRegistry r;
    // CPU, best first. cpu_vnni512_w4a8, cpu_vnni_w4a8 and cpu_avx2_w4a8: integer dot products
    // (vpdpbusd on 512-bit registers where the CPU has AVX-512 VNNI, on 256-bit where it has
    // a VNNI, else AVX2's pair; the same results), 1.5-4x cpu_simd (docs/perf.md), at the price
    // of int8 activations; cpu_simd: F32 arithmetic on every SIMD target.
    // cpu_ref stays last: it serves everything, slowly, and is the oracle.
    r.add(DeviceKind::cpu, make_cpu_vnni_w4a8_kernel(VnniEncoding::evex512));
    r.add(DeviceKind::cpu, make_cpu_vnni_w4a8_kernel());
    r.add(DeviceKind::cpu, make_cpu_avx2_w4a8_kernel());
    r.add(DeviceKind::cpu, make_cpu_simd_kernel());
    r.add(DeviceKind::cpu, make_cpu_ref_kernel());
#if NIBBLE_WITH_CUDA
    // CUDA, best first. sm80_mxfp4_gemv: M = 1..8 (decode) on any sm_80+ GPU.
    r.add(DeviceKind::cuda, make_sm80_mxfp4_gemv_kernel());
#endif
    return r;
  }();
  return registry;
}

void KernelRegistry::add(DeviceKind kind, std::unique_ptr<LinearKernel> kernel) {
  NIBBLE_CHECK(kernel != nullptr, "KernelRegistry::add: null kernel");
  NIBBLE_CHECK(kernel->device_kind() == kind, "kernel {} runs on {}, registered for {}",
               kernel->name(), device_kind_name(kernel->device_kind()), device_kind_name(kind));
  NIBBLE_CHECK(find(std::string(kernel->name())) == nullptr, "kernel {} registered twice",
               kernel->name());
  entries_.emplace_back(kind, std::move(kernel));
}

std::vector<const LinearKernel*> KernelRegistry::kernels(DeviceKind kind) const {
  std::vector<const LinearKernel*> result;
  for (const auto& [k, kernel] : entries_)
    if (k == kind) result.push_back(kernel.get());
  return result;
}

std::vector<const LinearKernel*> KernelRegistry::all() const {
  std::vector<const LinearKernel*> result;
  for (const auto& entry : entries_) result.push_back(entry.second.get());
  return result;
}

const LinearKernel* KernelRegistry::find(const std::string& name) const {
  for (const auto& entry : entries_)
    if (entry.second->name() == name) return entry.second.get();
  return nullptr;
}

std::string KernelRegistry::names() const {
  std::string result;
  for (const auto& entry : entries_) {
    if (!result.empty()) result += ", ";
    result += entry.second->name();
  }
  return result.empty() ? "none" : result;
}

namespace {

std::string m_range(size_t lo, size_t hi) {
  return lo == hi ? fmt::format("M {}", lo) : fmt::format("M {}..{}", lo, hi);
}

// Every reason `kernel` gives for not serving `layer` on `device`; empty when it can.
std::vector<std::string> refusals(const LinearKernel& kernel, const LinearDesc& layer,
                                  const DeviceInfo& device) {
  std::vector<std::string> reasons;
  if (kernel.device_kind() != device.kind) {
    reasons.push_back(fmt::format("it is a {} kernel and the layer runs on {}",
                                  device_kind_name(kernel.device_kind()),
                                  device_kind_name(device.kind)));
    return reasons;
  }
  if (const Check c = kernel.is_supported(device); !c.ok)
    reasons.push_back("not supported on this device: " + c.reason);
  if (!kernel.supports_epilogue(layer.epilogue))
    reasons.push_back(fmt::format("it has no {} epilogue", linear_epilogue_name(layer.epilogue)));
  else if (const Check c = kernel.can_implement(layer); !c.ok)
    reasons.push_back("cannot implement the layer: " + c.reason);
  return reasons;
}

std::string describe_layer(const LinearDesc& layer) {
  return fmt::format("layer {} ({}, N={}, K={}, {}, {} activations, {} output{}{})", layer.name,
                     layer_class_name(layer.layer_class), layer.n, layer.k,
                     m_range(layer.min_m, layer.max_m), activation_format_name(layer.activation),
                     output_format_name(layer.output), layer.has_bias ? ", bias" : "",
                     layer.epilogue == LinearEpilogue::none
                         ? ""
                         : fmt::format(", {} epilogue", linear_epilogue_name(layer.epilogue)));
}

}  // namespace

std::vector<KernelChoice> KernelRegistry::select(const LinearDesc& layer, const DeviceInfo& device,
                                                 const KernelOverrides& overrides) const {
  NIBBLE_CHECK(layer.min_m >= 1 && layer.min_m <= layer.max_m,
               "layer {}: bad M range {}..{} (need 1 <= min_m <= max_m)", layer.name, layer.min_m,
               layer.max_m);

  if (const std::string& forced = overrides.forced_for(layer.layer_class); !forced.empty()) {
    const std::string source = overrides.source.empty() ? "override" : overrides.source;
    const LinearKernel* kernel = find(forced);
    NIBBLE_CHECK(kernel != nullptr, "{}: kernel \"{}\" forced by {} is not registered ({})",
                 describe_layer(layer), forced, source, names());
    const auto reasons = refusals(*kernel, layer, device);
    if (!reasons.empty()) {
      std::string all;
      for (const auto& r : reasons) all += "\n  - " + r;
      NIBBLE_THROW("{}: kernel {} forced by {} cannot serve it:{}", describe_layer(layer), forced,
                   source, all);
    }
    return {KernelChoice{kernel, layer.min_m, layer.max_m, fmt::format("forced by {}", source)}};
  }

  std::vector<KernelChoice> choices;
  const auto candidates = kernels(device.kind);
  size_t lo = layer.min_m;
  while (lo <= layer.max_m) {
    // This bucket: [lo, hi], hi just below the next edge above lo.
    size_t hi = layer.max_m;
    for (size_t edge : kMBucketEdges)
      if (edge > lo) {
        hi = std::min(hi, edge - 1);
        break;
      }
    LinearDesc bucket = layer;
    bucket.min_m = lo;
    bucket.max_m = hi;
    const LinearKernel* chosen = nullptr;
    std::vector<std::string> skipped;
    for (const LinearKernel* kernel : candidates) {
      const auto reasons = refusals(*kernel, bucket, device);
      if (reasons.empty()) {
        chosen = kernel;
        break;
      }
      std::string joined;
      for (const auto& r : reasons) joined += (joined.empty() ? "" : "; ") + r;
      skipped.push_back(fmt::format("{}: {}", kernel->name(), joined));
    }
    if (!chosen) {
      std::string all;
      for (const auto& s : skipped) all += "\n  - " + s;
      if (skipped.empty()) all = fmt::format(" no {} kernels are built in", device_kind_name(device.kind));
      NIBBLE_THROW("{}: no kernel can serve {}:{}", describe_layer(layer), m_range(lo, hi), all);
    }
    std::string why = "first in priority order that serves it";
    if (!skipped.empty()) {
      why += " (skipped ";
      for (size_t i = 0; i < skipped.size(); ++i) why += (i ? "; " : "") + skipped[i];
      why += ")";
    }
    if (!choices.empty() && choices.back().kernel == chosen && choices.back().why == why)
      choices.back().max_m = hi;
    else
      choices.push_back(KernelChoice{chosen, lo, hi, why});
    if (hi == std::numeric_limits<size_t>::max()) break;
    lo = hi + 1;
  }
  return choices;
}

// ---- devices --------------------------------------------------------------------------------

DeviceInfo cpu_device_info() {
  DeviceInfo info;
  info.kind = DeviceKind::cpu;
  info.name = cpu_model_name();
  info.cpu_simd_target = cpu_simd_target();
  info.threads = ThreadPool::global().size();
  return info;
}

DeviceInfo cuda_device_info(int index) {
#if NIBBLE_WITH_CUDA
  return cuda_query_device(index);
#else
  NIBBLE_THROW("CUDA device {} requested, but this build has no CUDA kernels", index);
#endif
}

// ---- logging --------------------------------------------------------------------------------

namespace {
std::mutex g_log_mutex;
KernelLogSink g_log_sink;
}  // namespace

void set_kernel_log(KernelLogSink sink) {
  std::lock_guard lock(g_log_mutex);
  g_log_sink = std::move(sink);
}

// ---- Mxfp4Linear ----------------------------------------------------------------------------

Mxfp4Linear::Mxfp4Linear(LinearDesc layer, const Mxfp4HostWeights& weights, const float* bias,
                         const DeviceInfo& device, const KernelOverrides& overrides,
                         const KernelRegistry* registry)
    : layer_(std::move(layer)) {
  if (!registry) registry = &KernelRegistry::builtin();
  NIBBLE_CHECK(weights.n == layer_.n && weights.k == layer_.k,
               "layer {}: weights are {}x{} but the layer is declared {}x{} (N x K)", layer_.name,
               weights.n, weights.k, layer_.n, layer_.k);
  const bool empty = layer_.n == 0 || layer_.k == 0;
  NIBBLE_CHECK(empty || (weights.blocks && weights.scales), "layer {}: missing weight blocks or scales",
               layer_.name);
  NIBBLE_CHECK(!layer_.has_bias || bias || layer_.n == 0,
               "layer {}: declared with a bias but none was given", layer_.name);
  NIBBLE_CHECK(layer_.has_bias || !bias, "layer {}: a bias was given but the layer is declared without one",
               layer_.name);

  choices_ = registry->select(layer_, device, overrides);
  std::map<std::string, std::shared_ptr<PreparedWeights>, std::less<>> by_layout;
  for (const KernelChoice& choice : choices_) {
    const std::string_view layout = choice.kernel->layout_id();
    if (!layout.empty())
      if (auto it = by_layout.find(layout); it != by_layout.end()) {
        prepared_.push_back(it->second);
        continue;
      }
    std::shared_ptr<PreparedWeights> prepared = choice.kernel->prepare(layer_, weights, bias);
    NIBBLE_CHECK(prepared != nullptr, "layer {}: kernel {} prepared nothing", layer_.name,
                 choice.kernel->name());
    if (!layout.empty()) by_layout.emplace(std::string(layout), prepared);
    prepared_.push_back(std::move(prepared));
  }

  std::lock_guard lock(g_log_mutex);
  if (g_log_sink) {
    const std::string text = describe();
    size_t start = 0;
    while (start < text.size()) {
      const size_t end = std::min(text.find('\n', start), text.size());
      g_log_sink(std::string_view(text).substr(start, end - start));
      start = end + 1;
    }
  }
}

void Mxfp4Linear::forward(const ActivationView& act, const OutputView& out, void* stream) const {
  if (act.m == 0) return;
  NIBBLE_CHECK(act.m >= layer_.min_m && act.m <= layer_.max_m,
               "layer {}: called with M={}, outside its declared range {}..{}", layer_.name, act.m,
               layer_.min_m, layer_.max_m);
  NIBBLE_CHECK(act.format == layer_.activation, "layer {}: {} activations given, {} declared",
               layer_.name, activation_format_name(act.format),
               activation_format_name(layer_.activation));
  // With a folded norm, out is the norm's output, in any format (linear_kernel.h).
  NIBBLE_CHECK(out.norm.partials || out.format == layer_.output,
               "layer {}: {} output given, {} declared", layer_.name,
               output_format_name(out.format), output_format_name(layer_.output));
  if (layer_.n == 0) return;
  NIBBLE_CHECK(out.data != nullptr, "layer {}: null output", layer_.name);
  NIBBLE_CHECK(act.data != nullptr || layer_.k == 0, "layer {}: null activations", layer_.name);
  for (size_t i = 0; i < choices_.size(); ++i)
    if (act.m >= choices_[i].min_m && act.m <= choices_[i].max_m) {
      NIBBLE_CHECK((!act.norm.partials && !out.norm.partials) ||
                       choices_[i].kernel->supports_folded_norm(),
                   "layer {}: {} was given a folded norm, which it does not apply", layer_.name,
                   choices_[i].kernel->name());
      choices_[i].kernel->apply(layer_, *prepared_[i], act, out, stream);
      return;
    }
  NIBBLE_THROW("layer {}: no kernel chosen for M={}", layer_.name, act.m);
}

bool Mxfp4Linear::folds_norm() const {
  return std::all_of(choices_.begin(), choices_.end(),
                     [](const KernelChoice& c) { return c.kernel->supports_folded_norm(); });
}

std::string Mxfp4Linear::describe() const {
  std::string text;
  for (const KernelChoice& c : choices_) {
    if (!text.empty()) text += '\n';
    const size_t i = size_t(&c - choices_.data());
    bool shared = false;
    for (size_t j = 0; j < i; ++j) shared |= prepared_[j] == prepared_[i];
    const std::string memory =
        shared ? fmt::format("layout {}, shared with the line above", c.kernel->layout_id())
               : fmt::format("layout {}, {} prepared bytes", c.kernel->layout_id(),
                             prepared_[i]->bytes());
    text += fmt::format("{} -> {} ({}): {} [{}]", layer_.name, c.kernel->name(),
                        m_range(c.min_m, c.max_m), c.why, memory);
  }
  return text;
}

size_t Mxfp4Linear::prepared_bytes() const {
  size_t total = 0;
  for (size_t i = 0; i < prepared_.size(); ++i) {
    bool seen = false;
    for (size_t j = 0; j < i; ++j) seen |= prepared_[j] == prepared_[i];
    if (!seen) total += prepared_[i]->bytes();
  }
  return total;
}

}  // namespace nibble

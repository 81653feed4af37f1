#include "model/linear_plan.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "model/quant_linear.h"

namespace nibble {

const char* linear_role_name(LinearRole role) {
  switch (role) {
    case LinearRole::q: return "q";
    case LinearRole::k: return "k";
    case LinearRole::v: return "v";
    case LinearRole::o: return "o";
    case LinearRole::gate: return "gate";
    case LinearRole::up: return "up";
    case LinearRole::down: return "down";
    case LinearRole::lm_head: return "lm_head";
  }
  return "?";
}

LayerSelection::LayerSelection(const TensorSource& tensors, bool tied_embeddings,
                               const ModelLoadOptions& options) {
  std::vector<TensorInfo> infos;
  for (const TensorView* t : tensors.tensors()) infos.push_back({t->name, t->dtype, t->shape});
  const nlohmann::json config = {{"tie_word_embeddings", tied_embeddings}};
  info_ = std::make_unique<ModelInfo>(model_info_from_tensors(infos, config));
  SelectionOptions sel;
  // "none": full precision (a spelling quant's tokens do not have; the load path needs it).
  sel.tokens = tokens_ =
      options.mxfp4_layers == "none" ? LayerTokens{} : parse_layer_tokens(options.mxfp4_layers);
  NIBBLE_CHECK(!tokens_.embed,
               "--mxfp4-layers embed: the embedding table is a lookup, not a linear layer, and "
               "stays in full precision at load");
  sel.include = options.include;
  sel.exclude = options.exclude;
  plan_ = plan_layers(*info_, sel);
  // The K % 32 gate's warnings do not apply at load (those layers are padded, see decide()),
  // and a tied classifier without a tensor of its own gets the load path's words below.
  for (const std::string& w : plan_.warnings) {
    bool skip = false;
    for (const GateRecord& g : plan_.gates)
      skip |= g.gate == "k_not_multiple_of_32" && w.rfind(g.module + ": kept BF16", 0) == 0;
    skip |= !info_->find("lm_head") && w.rfind("lm_head: kept BF16", 0) == 0;
    if (!skip) warnings_.push_back(w);
  }
  // A tied classifier has no tensor of its own, so the plan above never saw it.
  if (tokens_.lm_head && tied_embeddings && !info_->find("lm_head"))
    warnings_.push_back(
        "lm_head: kept in full precision: it is tied to the embedding table (quantizing it would "
        "quantize the embedding too)");
}

LayerSelection::~LayerSelection() = default;

LayerSelection::Decision LayerSelection::decide(const std::string& module_name) const {
  Decision d;
  const ModuleDecision* m = plan_.find(module_name);
  if (!m) return d;
  d.module = m->module;
  d.mxfp4 = m->mxfp4;
  d.prequantized = m->passthrough;
  d.reason = m->reason;
  const bool k_gate = !m->mxfp4 && d.module->k % int64_t(kMxfp4BlockSize) != 0 &&
                      m->reason.find("not a multiple of 32") != std::string::npos;
  if (k_gate) {
    d.mxfp4 = true;
    const int64_t padded = (d.module->k + 31) / 32 * 32;
    const size_t sel = m->reason.find("(selected by ");
    const std::string by =
        sel == std::string::npos ? "" : m->reason.substr(sel + 1, m->reason.size() - sel - 2) + "; ";
    d.reason = fmt::format("{}K = {} zero-padded to {} in the last block (exact at load)", by,
                           d.module->k, padded);
  }
  return d;
}

std::shared_ptr<DenseWeights> dense_weights_from(const TensorView& t, const std::string& where) {
  NIBBLE_CHECK(t.shape.size() == 2, "{}: tensor \"{}\" must be 2-D, has {} dimensions", where,
               t.name, t.shape.size());
  auto w = std::make_shared<DenseWeights>();
  w->rows = size_t(t.shape[0]);
  w->cols = size_t(t.shape[1]);
  if (t.dtype == DType::BF16) {
    w->dtype = DType::BF16;
    w->bf16.resize(w->rows * w->cols);
    std::memcpy(w->bf16.data(), t.data, w->bf16.size() * 2);
  } else {
    w->dtype = DType::F32;
    w->f32 = tensor_to_f32(t, where);
  }
  return w;
}

namespace {

std::vector<float> optional_bias(const TensorSource& tensors, const std::string& name, size_t n,
                                 bool has_bias) {
  if (!has_bias) return {};
  return tensor_to_f32(tensors.at(name + ".bias", {int64_t(n)}), tensors.where());
}

}  // namespace

namespace {

// A layer's weights as the selection resolved them, before any Linear is built: MXFP4 bytes in
// the checkpoint layout (format/mxfp4.h: views of the checkpoint, or owned when quantized at
// load), or full-precision weights.
struct ResolvedLinear {
  LinearPlanEntry entry;
  LinearDesc desc;
  std::vector<float> bias;
  std::shared_ptr<const DenseWeights> dense;  // null: MXFP4
  const uint8_t* blocks = nullptr;  // [n, k/32, 16]: checkpoint bytes, or owned_blocks
  const uint8_t* scales = nullptr;  // [n, k/32]
  std::vector<uint8_t> owned_blocks, owned_scales;
  Mxfp4HostWeights mxfp4() const {
    return {owned_blocks.empty() ? blocks : owned_blocks.data(),
            owned_scales.empty() ? scales : owned_scales.data(), desc.n, desc.k};
  }
};

ResolvedLinear resolve_linear(const TensorSource& tensors, const std::string& name, LinearRole role,
                              size_t n, size_t k, bool has_bias, const LayerSelection& selection,
                              const ModelLoadOptions& options,
                              std::shared_ptr<const DenseWeights> tied_weights) {
  ResolvedLinear r;
  LinearPlanEntry& entry = r.entry;
  entry.name = name;
  entry.role = role;
  entry.n = n;
  entry.k = k;
  r.bias = optional_bias(tensors, name, n, has_bias);

  LinearDesc& desc = r.desc;
  desc.name = name;
  desc.n = n;
  desc.k = k;
  desc.min_m = 1;
  desc.max_m = std::max<size_t>(1, options.max_batch_tokens);
  desc.has_bias = has_bias;
  desc.activation = options.activation;
  desc.chained = options.device.kind == DeviceKind::cuda;  // the executor's one stream

  const LayerSelection::Decision decision = selection.decide(name);
  if (tied_weights) {
    // Tied classifier: quantizing it would quantize the embedding table it shares (or need a
    // second copy of it), so it stays in full precision and reads the embedding table.
    NIBBLE_CHECK(tied_weights->rows == n && tied_weights->cols == k,
                 "{}: tied embedding is [{}, {}], the classifier needs [{}, {}]", tensors.where(),
                 tied_weights->rows, tied_weights->cols, n, k);
    entry.reason = selection.lm_head_asked()
                       ? "tied to the embedding table: MXFP4 refused (it would quantize the "
                         "embedding too); kept in full precision"
                       : "tied to the embedding table (lm_head not selected)";
    r.dense = std::move(tied_weights);
    return r;
  }
  NIBBLE_CHECK(decision.module != nullptr, "{}: linear layer \"{}\" is missing (no {}.weight)",
               tensors.where(), name, name);
  if (decision.prequantized) {
    // Written by `nibble quantize`: MXFP4 already. Both of its layouts hold the same bytes
    // (docs/formats.md): gpt-oss P_blocks [n, k/32, 16] + P_scales [n, k/32], or
    // compressed-tensors P.weight_packed [n, k/2] + P.weight_scale [n, k/32].
    const LinearModule& mod = *decision.module;
    NIBBLE_CHECK(mod.tensors.size() == 2, "{}: \"{}\": MXFP4 module without blocks and scales",
                 tensors.where(), name);
    const size_t bpr = mxfp4_blocks_per_row(k);
    const bool gpt_oss = mod.layout == SourceLayout::mxfp4_gpt_oss;
    NIBBLE_CHECK(k % kMxfp4BlockSize == 0 || gpt_oss,
                 "{}: \"{}\": K = {} is not a multiple of 32 in a compressed-tensors layout",
                 tensors.where(), name, k);
    const TensorView& blocks =
        gpt_oss ? tensors.at(mod.tensors[0], {int64_t(n), int64_t(bpr), int64_t(kMxfp4BlockBytes)})
                : tensors.at(mod.tensors[0], {int64_t(n), int64_t(k / 2)});
    const TensorView& scales = tensors.at(mod.tensors[1], {int64_t(n), int64_t(bpr)});
    NIBBLE_CHECK(blocks.dtype == DType::U8 &&
                     (scales.dtype == DType::U8 || scales.dtype == DType::F8_E8M0),
                 "{}: \"{}\": MXFP4 blocks must be U8 and scales U8 or F8_E8M0 (got {} and {})",
                 tensors.where(), name, dtype_name(blocks.dtype), dtype_name(scales.dtype));
    entry.mxfp4 = entry.prequantized = true;
    entry.reason = fmt::format("MXFP4 in the checkpoint ({} layout)", source_layout_name(mod.layout));
    r.blocks = blocks.data;
    r.scales = scales.data;
    return r;
  }
  const TensorView& weight = tensors.at(name + ".weight", {int64_t(n), int64_t(k)});
  if (!decision.mxfp4) {
    entry.reason = decision.reason;
    r.dense = dense_weights_from(weight, tensors.where());
    return r;
  }
  // Quantize at load, then let the kernels repack; these bytes are freed once it is built.
  const size_t bpr = mxfp4_blocks_per_row(k);
  r.owned_blocks.resize(n * bpr * kMxfp4BlockBytes);
  r.owned_scales.resize(n * bpr);
  Mxfp4QuantizeOptions qo;
  qo.rule = options.scale_rule;
  qo.tensor_name = name + ".weight";
  mxfp4_quantize(weight.data, weight.dtype, n, k, r.owned_blocks.data(), r.owned_scales.data(), qo);
  entry.mxfp4 = true;
  entry.reason = fmt::format("quantized at load, {} scales ({})", scale_rule_name(options.scale_rule),
                             decision.reason);
  return r;
}

std::unique_ptr<Linear> build_linear(ResolvedLinear& r, const ModelLoadOptions& options,
                                     const DenseLinearMaker& dense) {
  if (!r.dense)
    return std::make_unique<QuantLinear>(r.desc, r.mxfp4(), r.bias.empty() ? nullptr : r.bias.data(),
                                         options.device, options.kernels);
  if (dense) return dense(r.desc.name, std::move(r.dense), std::move(r.bias));
  return std::make_unique<DenseLinear>(r.desc.name, std::move(r.dense), std::move(r.bias));
}

void record(LinearPlanEntry entry, const Linear& linear, size_t weight_bytes,
            std::vector<LinearPlanEntry>& plan) {
  entry.kernel = linear.kernel_name();
  entry.weight_bytes = weight_bytes;
  plan.push_back(std::move(entry));
}

}  // namespace

std::unique_ptr<Linear> make_linear(const TensorSource& tensors, const std::string& name,
                                    LinearRole role, size_t n, size_t k, bool has_bias,
                                    const LayerSelection& selection,
                                    const ModelLoadOptions& options,
                                    std::shared_ptr<const DenseWeights> tied_weights,
                                    std::vector<LinearPlanEntry>& plan,
                                    const DenseLinearMaker& dense) {
  ResolvedLinear r =
      resolve_linear(tensors, name, role, n, k, has_bias, selection, options, std::move(tied_weights));
  std::unique_ptr<Linear> linear = build_linear(r, options, dense);
  record(std::move(r.entry), *linear, linear->weight_bytes(), plan);
  return linear;
}

namespace {

// Whether `desc` (its epilogue set) gets the epilogue wherever it runs: the forced kernel, or
// every kernel of the device that the device supports, applies it.
bool epilogue_served(const LinearDesc& desc, const ModelLoadOptions& options) {
  const KernelRegistry& registry = KernelRegistry::builtin();
  if (const std::string& forced = options.kernels.forced_for(desc.layer_class); !forced.empty()) {
    const LinearKernel* kernel = registry.find(forced);
    return kernel && kernel->supports_epilogue(desc.epilogue);
  }
  bool any = false;
  for (const LinearKernel* kernel : registry.kernels(options.device.kind)) {
    if (!kernel->is_supported(options.device).ok) continue;
    if (!kernel->supports_epilogue(desc.epilogue)) return false;
    any = true;
  }
  return any;
}

}  // namespace

LinearGroup make_linear_group(const TensorSource& tensors, const std::string& fused_name,
                              const std::vector<LinearGroupMember>& members, size_t k,
                              bool has_bias, const LayerSelection& selection,
                              const ModelLoadOptions& options, std::vector<LinearPlanEntry>& plan,
                              const DenseLinearMaker& dense, LinearEpilogue epilogue) {
  NIBBLE_CHECK(!members.empty(), "linear group {} has no members", fused_name);
  std::vector<ResolvedLinear> parts;
  bool all_mxfp4 = true;
  for (const LinearGroupMember& m : members) {
    parts.push_back(
        resolve_linear(tensors, m.name, m.role, m.n, k, has_bias, selection, options, nullptr));
    all_mxfp4 &= parts.back().dense == nullptr;
  }
  if (!options.fuse_linears || !all_mxfp4 || members.size() == 1) {
    std::vector<std::unique_ptr<Linear>> linears;
    for (ResolvedLinear& r : parts) {
      linears.push_back(build_linear(r, options, dense));
      record(std::move(r.entry), *linears.back(), linears.back()->weight_bytes(), plan);
    }
    return LinearGroup(std::move(linears));
  }
  // Stack the members' rows (the checkpoint layout is row-major in blocks and scales), then
  // quantized-at-load bytes are freed member by member as they are copied.
  const size_t bpr = mxfp4_blocks_per_row(k);
  std::vector<size_t> widths;
  size_t total = 0;
  for (const LinearGroupMember& m : members) widths.push_back(m.n), total += m.n;
  std::vector<uint8_t> blocks(total * bpr * kMxfp4BlockBytes), scales(total * bpr);
  std::vector<float> bias;
  size_t row = 0;
  for (ResolvedLinear& r : parts) {
    const Mxfp4HostWeights w = r.mxfp4();
    std::memcpy(blocks.data() + row * bpr * kMxfp4BlockBytes, w.blocks, w.n * bpr * kMxfp4BlockBytes);
    std::memcpy(scales.data() + row * bpr, w.scales, w.n * bpr);
    bias.insert(bias.end(), r.bias.begin(), r.bias.end());
    row += w.n;
    r.owned_blocks = {}, r.owned_scales = {};
  }
  LinearDesc desc = parts.front().desc;
  desc.name = fused_name;
  desc.n = total;
  if (epilogue == LinearEpilogue::swiglu) {
    NIBBLE_CHECK(members.size() == 2 && members[0].n == members[1].n,
                 "{}: a SwiGLU epilogue needs two members of equal width (gate, up)", fused_name);
    LinearDesc gated = desc;  // writes the next layer's input
    gated.epilogue = epilogue;
    gated.output = as_output_format(options.activation);
    if (epilogue_served(gated, options)) desc = gated;
  }
  auto fused = std::make_unique<QuantLinear>(desc, Mxfp4HostWeights{blocks.data(), scales.data(), total, k},
                                             has_bias ? bias.data() : nullptr, options.device,
                                             options.kernels);
  // Each member's plan entry keeps its own reason and gets its share of the fused bytes (the
  // shares add up to the whole, so floors summed over the plan stay exact).
  const size_t bytes = fused->weight_bytes();
  size_t given = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const size_t share = i + 1 == parts.size() ? bytes - given : bytes * widths[i] / total;
    given += share;
    parts[i].entry.reason += fmt::format(
        "; run as one product with the rest of {} ({} rows{})", fused_name, total,
        desc.epilogue == LinearEpilogue::none
            ? ""
            : fmt::format(", {} in its epilogue", linear_epilogue_name(desc.epilogue)));
    record(std::move(parts[i].entry), *fused, share, plan);
  }
  return LinearGroup(std::move(fused), std::move(widths));
}

// ---- LinearGroup ----------------------------------------------------------------------------

LinearGroup::LinearGroup(std::unique_ptr<Linear> fused, std::vector<size_t> widths)
    : fused_(std::move(fused)), widths_(std::move(widths)) {
  size_t c = 0;
  for (size_t n : widths_) columns_.push_back(c), c += n;
  NIBBLE_CHECK(fused_ && fused_->n() == c, "fused layer of {} rows for members of {} in all",
               fused_ ? fused_->n() : 0, c);
}

LinearGroup::LinearGroup(std::vector<std::unique_ptr<Linear>> members)
    : members_(std::move(members)) {
  size_t c = 0;
  for (const auto& m : members_) widths_.push_back(m->n()), columns_.push_back(c), c += m->n();
}

size_t LinearGroup::width() const { return columns_.empty() ? 0 : columns_.back() + widths_.back(); }

size_t LinearGroup::offset(size_t i, size_t m) const {
  return fused_ ? columns_.at(i) : m * columns_.at(i);
}

size_t LinearGroup::stride(size_t i) const { return fused_ ? width() : widths_.at(i); }

std::vector<const Linear*> LinearGroup::linears() const {
  if (fused_) return {fused_.get()};
  std::vector<const Linear*> out;
  for (const auto& m : members_) out.push_back(m.get());
  return out;
}

size_t LinearGroup::weight_bytes() const {
  size_t bytes = 0;
  for (const Linear* l : linears()) bytes += l->weight_bytes();
  return bytes;
}

void LinearGroup::forward(const float* x, size_t m, float* out) const {
  NIBBLE_CHECK(epilogue() == LinearEpilogue::none, "{}: a {} epilogue runs on the device only",
               fused_->name(), linear_epilogue_name(epilogue()));
  if (fused_) return fused_->forward(x, m, out);
  for (size_t i = 0; i < members_.size(); ++i) members_[i]->forward(x, m, out + offset(i, m));
}

void LinearGroup::forward_on_device(const ActivationView& x, const OutputView& out,
                                    void* stream) const {
  NIBBLE_CHECK(!out.norm.partials, "{}: a group's output takes no folded norm",
               linears().front()->name());
  if (fused_) return fused_->forward_on_device(x, out, stream);
  NIBBLE_CHECK(out.format == OutputFormat::f32, "{}: a group's members write F32",
               members_.front()->name());
  float* rows = static_cast<float*>(out.data);
  for (size_t i = 0; i < members_.size(); ++i)
    members_[i]->forward_on_device(x, OutputView{rows + offset(i, x.m), OutputFormat::f32}, stream);
}

bool LinearGroup::folds_norm() const {
  const auto all = linears();
  return !all.empty() && std::all_of(all.begin(), all.end(), [](const Linear* l) { return l->folds_norm(); });
}

std::string summarize_plan(const std::vector<LinearPlanEntry>& plan) {
  // Group MXFP4 layers by kernel and role; list full-precision ones by role with the reason.
  std::map<std::string, std::vector<std::string>> mx_by_kernel;  // kernel -> roles
  std::map<std::string, size_t> mx_count;
  std::map<std::string, std::pair<std::vector<std::string>, size_t>> fp_by_reason;
  std::vector<std::string> padded;
  // Roles grouped as the --mxfp4-layers tokens name them.
  auto token_of = [](LinearRole r) -> std::string {
    switch (r) {
      case LinearRole::q: case LinearRole::k: case LinearRole::v: return "qkv";
      case LinearRole::gate: case LinearRole::up: case LinearRole::down: return "mlp";
      default: return linear_role_name(r);
    }
  };
  for (const LinearPlanEntry& e : plan) {
    const std::string role = token_of(e.role);
    if (e.mxfp4) {
      auto& roles = mx_by_kernel[e.kernel];
      if (std::find(roles.begin(), roles.end(), role) == roles.end()) roles.push_back(role);
      ++mx_count[e.kernel];
      if (e.k % kMxfp4BlockSize != 0) {
        const std::string note = fmt::format("{} (K = {} padded to {})", linear_role_name(e.role), e.k,
                                             mxfp4_blocks_per_row(e.k) * kMxfp4BlockSize);
        if (std::find(padded.begin(), padded.end(), note) == padded.end()) padded.push_back(note);
      }
    } else {
      // "not selected (kind 'mlp', tokens: qkv)" -> "not selected (tokens: qkv)": one group.
      std::string reason = e.reason;
      if (reason.rfind("not selected (kind '", 0) == 0) {
        const size_t tokens = reason.find("tokens: ");
        if (tokens != std::string::npos)
          reason = "not selected (--mxfp4-layers " + reason.substr(tokens + 8);
      }
      auto& [roles, count] = fp_by_reason[reason];
      if (std::find(roles.begin(), roles.end(), role) == roles.end()) roles.push_back(role);
      ++count;
    }
  }
  std::string out = "MXFP4: ";
  if (mx_by_kernel.empty()) out += "none";
  bool first = true;
  for (const auto& [kernel, roles] : mx_by_kernel) {
    if (!first) out += "; ";
    first = false;
    out += fmt::format("{} layer{} ({}) on {}", mx_count[kernel], mx_count[kernel] == 1 ? "" : "s",
                       fmt::join(roles, ","), kernel);
  }
  if (!padded.empty()) out += fmt::format(", zero-padded last block: {}", fmt::join(padded, ", "));
  out += " | full precision: ";
  if (fp_by_reason.empty()) out += "none";
  first = true;
  for (const auto& [reason, entry] : fp_by_reason) {
    if (!first) out += "; ";
    first = false;
    out += fmt::format("{} layer{} ({}): {}", entry.second, entry.second == 1 ? "" : "s",
                       fmt::join(entry.first, ","), reason);
  }
  return out;
}

}  // namespace nibble

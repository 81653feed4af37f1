#include "model/linear_plan.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <map>
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

LayerSelection LayerSelection::parse(const std::string& spec) {
  LayerSelection s;
  s.spec_ = spec;
  auto set = [&](std::initializer_list<LinearRole> roles) {
    for (LinearRole r : roles) s.roles_[size_t(r)] = true;
  };
  std::stringstream in(spec);
  std::string token;
  bool any = false;
  while (std::getline(in, token, ',')) {
    if (token.empty()) continue;
    any = true;
    if (token == "none") continue;
    if (token == "all") {
      s.all_ = true;
      set({LinearRole::q, LinearRole::k, LinearRole::v, LinearRole::o, LinearRole::gate,
           LinearRole::up, LinearRole::down, LinearRole::lm_head});
    } else if (token == "qkv") {
      set({LinearRole::q, LinearRole::k, LinearRole::v});
    } else if (token == "mlp") {
      set({LinearRole::gate, LinearRole::up, LinearRole::down});
    } else {
      bool found = false;
      for (size_t r = 0; r < 8; ++r)
        if (token == linear_role_name(LinearRole(r))) s.roles_[r] = found = true;
      NIBBLE_CHECK(found,
                   "--mxfp4-layers: unknown token \"{}\"; valid: none, all, qkv, o, mlp, lm_head, "
                   "q, k, v, gate, up, down",
                   token);
    }
  }
  NIBBLE_CHECK(any, "--mxfp4-layers is empty; valid tokens: none, all, qkv, o, mlp, lm_head");
  return s;
}

bool LayerSelection::wants(LinearRole role, std::string* why) const {
  const bool yes = roles_[size_t(role)];
  if (why) *why = fmt::format("--mxfp4-layers {}", spec_);
  return yes;
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

std::unique_ptr<Linear> make_linear(const TensorSource& tensors, const std::string& name,
                                    LinearRole role, size_t n, size_t k, bool has_bias,
                                    const LayerSelection& selection,
                                    const ModelLoadOptions& options,
                                    std::shared_ptr<const DenseWeights> tied_weights,
                                    std::vector<LinearPlanEntry>& plan) {
  LinearPlanEntry entry;
  entry.name = name;
  entry.role = role;
  entry.n = n;
  entry.k = k;
  const std::vector<float> bias = optional_bias(tensors, name, n, has_bias);
  const size_t padded_k = mxfp4_blocks_per_row(k) * kMxfp4BlockSize;
  const std::string pad_note =
      k % kMxfp4BlockSize == 0
          ? std::string()
          : fmt::format("; K = {} zero-padded to {} in the last block (exact)", k, padded_k);

  LinearDesc desc;
  desc.name = name;
  desc.n = n;
  desc.k = k;
  desc.min_m = 1;
  desc.max_m = std::max<size_t>(1, options.max_batch_tokens);
  desc.has_bias = has_bias;

  auto finish = [&](std::unique_ptr<Linear> linear) {
    entry.kernel = linear->kernel_name();
    entry.weight_bytes = linear->weight_bytes();
    plan.push_back(std::move(entry));
    return linear;
  };

  // A checkpoint written by `nibble quantize`: the layer is MXFP4 already.
  const std::string blocks_name = name + ".weight_blocks", scales_name = name + ".weight_scales";
  if (tensors.find(blocks_name)) {
    const size_t bpr = mxfp4_blocks_per_row(k);
    const TensorView& blocks = tensors.at(
        blocks_name, {int64_t(n), int64_t(bpr), int64_t(kMxfp4BlockBytes)});
    const TensorView& scales = tensors.at(scales_name, {int64_t(n), int64_t(bpr)});
    NIBBLE_CHECK(blocks.dtype == DType::U8 && (scales.dtype == DType::U8 ||
                                               scales.dtype == DType::F8_E8M0),
                 "{}: MXFP4 tensors of \"{}\" must be U8 blocks and U8/F8_E8M0 scales",
                 tensors.where(), name);
    entry.mxfp4 = entry.prequantized = true;
    entry.reason = "MXFP4 in the checkpoint" + pad_note;
    return finish(std::make_unique<QuantLinear>(
        desc, Mxfp4HostWeights{blocks.data, scales.data, n, k},
        bias.empty() ? nullptr : bias.data(), options.device, options.kernels));
  }

  std::string why;
  const bool wanted = selection.wants(role, &why);
  if (tied_weights) {
    // Tied classifier: quantizing it would quantize the embedding table too (one tensor), or
    // need a second copy of it; it stays in full precision and shares the embedding.
    NIBBLE_CHECK(tied_weights->rows == n && tied_weights->cols == k,
                 "{}: tied embedding is [{}, {}], the classifier needs [{}, {}]", tensors.where(),
                 tied_weights->rows, tied_weights->cols, n, k);
    entry.reason = wanted ? "tied to the embedding table: kept in full precision (refused; "
                            "untie it to quantize the classifier)"
                          : "tied to the embedding table; not selected (" + why + ")";
    return finish(std::make_unique<DenseLinear>(name, std::move(tied_weights)));
  }
  const TensorView& weight = tensors.at(name + ".weight", {int64_t(n), int64_t(k)});
  if (!wanted) {
    entry.reason = "not selected (" + why + ")";
    return finish(std::make_unique<DenseLinear>(name, dense_weights_from(weight, tensors.where()),
                                                bias));
  }
  // Quantize at load, then let the kernels repack; the packed copy here is freed after.
  const size_t bpr = mxfp4_blocks_per_row(k);
  std::vector<uint8_t> blocks(n * bpr * kMxfp4BlockBytes), scales(n * bpr);
  Mxfp4QuantizeOptions qo;
  qo.rule = options.scale_rule;
  qo.tensor_name = name + ".weight";
  NIBBLE_CHECK(weight.dtype == DType::F32 || weight.dtype == DType::BF16 ||
                   weight.dtype == DType::F16,
               "{}: tensor \"{}\" has dtype {}; expected F32, BF16 or F16", tensors.where(),
               weight.name, dtype_name(weight.dtype));
  mxfp4_quantize(weight.data, weight.dtype, n, k, blocks.data(), scales.data(), qo);
  entry.mxfp4 = true;
  entry.reason = fmt::format("quantized at load ({} scales; {}){}", scale_rule_name(options.scale_rule),
                             why, pad_note);
  return finish(std::make_unique<QuantLinear>(
      desc, Mxfp4HostWeights{blocks.data(), scales.data(), n, k},
      bias.empty() ? nullptr : bias.data(), options.device, options.kernels));
}

std::string summarize_plan(const std::vector<LinearPlanEntry>& plan) {
  // Group MXFP4 layers by kernel and role; list full-precision ones by role with the reason.
  std::map<std::string, std::vector<std::string>> mx_by_kernel;  // kernel -> roles
  std::map<std::string, size_t> mx_count;
  std::map<std::string, std::pair<std::vector<std::string>, size_t>> fp_by_reason;
  std::vector<std::string> padded;
  for (const LinearPlanEntry& e : plan) {
    const std::string role = linear_role_name(e.role);
    if (e.mxfp4) {
      auto& roles = mx_by_kernel[e.kernel];
      if (std::find(roles.begin(), roles.end(), role) == roles.end()) roles.push_back(role);
      ++mx_count[e.kernel];
      if (e.k % kMxfp4BlockSize != 0) {
        const std::string note = fmt::format("{} (K = {} padded to {})", role, e.k,
                                             mxfp4_blocks_per_row(e.k) * kMxfp4BlockSize);
        if (std::find(padded.begin(), padded.end(), note) == padded.end()) padded.push_back(note);
      }
    } else {
      auto& [roles, count] = fp_by_reason[e.reason];
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
    out += fmt::format("{} layers ({}) on {}", mx_count[kernel], fmt::join(roles, ","), kernel);
  }
  if (!padded.empty()) out += fmt::format(", zero-padded last block: {}", fmt::join(padded, ", "));
  out += " | full precision: ";
  if (fp_by_reason.empty()) out += "none";
  first = true;
  for (const auto& [reason, entry] : fp_by_reason) {
    if (!first) out += "; ";
    first = false;
    out += fmt::format("{} layers ({}): {}", entry.second, fmt::join(entry.first, ","), reason);
  }
  return out;
}

}  // namespace nibble

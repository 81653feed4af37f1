#include "quant/model_info.h"

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <filesystem>

#include "base/error.h"
#include "format/mxfp4.h"

namespace nibble {

const char* module_kind_name(ModuleKind kind) {
  switch (kind) {
    case ModuleKind::moe: return "moe";
    case ModuleKind::qkv: return "qkv";
    case ModuleKind::o: return "o";
    case ModuleKind::mlp: return "mlp";
    case ModuleKind::lm_head: return "lm_head";
    case ModuleKind::embed: return "embed";
    case ModuleKind::router: return "router";
    case ModuleKind::other: return "other";
  }
  return "?";
}

const char* source_layout_name(SourceLayout layout) {
  switch (layout) {
    case SourceLayout::dense: return "dense";
    case SourceLayout::dense_kn: return "dense [E, K, N]";
    case SourceLayout::mxfp4_gpt_oss: return "MXFP4 (gpt-oss blocks/scales)";
    case SourceLayout::mxfp4_compressed_tensors: return "MXFP4 (compressed-tensors)";
  }
  return "?";
}

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The dot-separated components of a module name.
std::vector<std::string_view> split_name(std::string_view name) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t dot = name.find('.', start);
    parts.push_back(name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts;
}

bool one_of(std::string_view s, std::initializer_list<std::string_view> list) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

// Norm weights are 1-D in every architecture we know, but some (e.g. per-head q/k norms with
// a head dimension) are 2-D: never linear modules.
bool is_norm_name(std::string_view name) {
  const auto parts = split_name(name);
  const std::string_view leaf = parts.back();
  return leaf.find("norm") != std::string_view::npos || leaf.starts_with("ln_") || leaf == "ln";
}

}  // namespace

ModuleKind classify_module(std::string_view name) {
  const auto parts = split_name(name);
  const std::string_view leaf = parts.back();
  const std::string_view parent = parts.size() >= 2 ? parts[parts.size() - 2] : std::string_view();
  const auto has_part = [&](std::initializer_list<std::string_view> list) {
    return std::any_of(parts.begin(), parts.end() - 1, [&](std::string_view p) { return one_of(p, list); });
  };
  if (name == "lm_head" || ends_with(name, ".lm_head")) return ModuleKind::lm_head;
  if (one_of(leaf, {"embed_tokens", "wte", "word_embeddings", "embed_in", "tok_embeddings"}))
    return ModuleKind::embed;
  // Routers: gpt-oss mlp.router, Mixtral block_sparse_moe.gate, Qwen-MoE mlp.gate (the
  // dense MLP's projection is gate_proj, never plain "gate").
  if (leaf == "router" || (leaf == "gate" && one_of(parent, {"mlp", "block_sparse_moe", "moe"})))
    return ModuleKind::router;
  // Experts: fused (mlp.experts.gate_up_proj) or per expert (experts.7.down_proj, w1..w3).
  // Shared experts run for every token: they are dense MLPs.
  if (has_part({"experts"})) return ModuleKind::moe;
  if (one_of(leaf, {"q_proj", "k_proj", "v_proj", "qkv_proj", "query_key_value", "W_pack", "Wqkv",
                    "wqkv", "wq", "wk", "wv", "c_attn"}))
    return ModuleKind::qkv;
  if (one_of(leaf, {"o_proj", "out_proj", "wo", "c_proj"}) &&
      !(leaf == "c_proj" && one_of(parent, {"mlp"})))
    return ModuleKind::o;
  if (leaf == "dense" && one_of(parent, {"self_attn", "attention", "attn"})) return ModuleKind::o;
  if (one_of(leaf, {"gate_proj", "up_proj", "down_proj", "gate_up_proj", "fc1", "fc2", "w1", "w2",
                    "w3", "dense_h_to_4h", "dense_4h_to_h", "c_fc", "c_proj"}))
    return ModuleKind::mlp;
  return ModuleKind::other;
}

std::vector<LinearModule> find_linear_modules(const std::vector<TensorInfo>& tensors) {
  std::map<std::string_view, const TensorInfo*> by_name;
  for (const auto& t : tensors) by_name[t.name] = &t;
  std::vector<LinearModule> modules;
  for (const auto& t : tensors) {
    const std::string& name = t.name;
    LinearModule m;
    if (ends_with(name, "_blocks")) {
      // gpt-oss layout: P_blocks [.., N, G, 16] U8 with P_scales [.., N, G] U8.
      const std::string base = name.substr(0, name.size() - 7);
      const std::string scales_name = base + "_scales";
      const auto it = by_name.find(scales_name);
      NIBBLE_CHECK(it != by_name.end(), "tensor {} has no matching {} (MXFP4 gpt-oss layout)", name,
                   scales_name);
      const TensorInfo& s = *it->second;
      NIBBLE_CHECK(t.dtype == DType::U8 && s.dtype == DType::U8,
                   "MXFP4 tensors {} and {} must be U8, found {} and {}", name, scales_name,
                   dtype_name(t.dtype), dtype_name(s.dtype));
      NIBBLE_CHECK(t.shape.size() >= 3 && t.shape.back() == int64_t(kMxfp4BlockBytes) &&
                       s.shape.size() + 1 == t.shape.size() &&
                       std::equal(s.shape.begin(), s.shape.end(), t.shape.begin()),
                   "MXFP4 tensors {} and {}: shapes [{}] and [{}] do not match [.., N, K/32, 16] and "
                   "[.., N, K/32]",
                   name, scales_name, fmt::join(t.shape, ", "), fmt::join(s.shape, ", "));
      m.name = ends_with(base, ".weight") ? base.substr(0, base.size() - 7) : base;
      m.parameter = base;
      m.layout = SourceLayout::mxfp4_gpt_oss;
      m.tensors = {name, scales_name};
      m.shape.assign(t.shape.begin(), t.shape.end() - 1);
      m.shape.back() *= int64_t(kMxfp4BlockSize);
      m.dtype = DType::U8;
    } else if (ends_with(name, ".weight_packed")) {
      const std::string base = name.substr(0, name.size() - 14);
      const std::string scale_name = base + ".weight_scale";
      const auto it = by_name.find(scale_name);
      NIBBLE_CHECK(it != by_name.end(), "tensor {} has no matching {} (compressed-tensors layout)",
                   name, scale_name);
      const TensorInfo& s = *it->second;
      NIBBLE_CHECK(t.dtype == DType::U8 && t.shape.size() == 2 && s.shape.size() == 2 &&
                       s.shape[0] == t.shape[0] && s.shape[1] * 16 == t.shape[1],
                   "compressed-tensors tensors {} [{}] and {} [{}] do not match MXFP4's [N, K/2] and "
                   "[N, K/32]",
                   name, fmt::join(t.shape, ", "), scale_name, fmt::join(s.shape, ", "));
      m.name = base;
      m.parameter = base + ".weight";
      m.layout = SourceLayout::mxfp4_compressed_tensors;
      m.tensors = {name, scale_name};
      m.shape = {t.shape[0], t.shape[1] * 2};
      m.dtype = DType::U8;
    } else if (ends_with(name, ".weight")) {
      if (t.shape.size() != 2 || is_norm_name(name.substr(0, name.size() - 7))) continue;
      m.name = name.substr(0, name.size() - 7);
      m.parameter = name;
      m.layout = SourceLayout::dense;
      m.tensors = {name};
      m.shape = t.shape;
      m.dtype = t.dtype;
    } else if (t.shape.size() == 3 &&
               (ends_with(name, ".experts.gate_up_proj") || ends_with(name, ".experts.down_proj"))) {
      // gpt-oss BF16 fused experts: [E, K, N] (the forward computes x @ W).
      m.name = name;
      m.parameter = name;
      m.layout = SourceLayout::dense_kn;
      m.tensors = {name};
      m.shape = {t.shape[0], t.shape[2], t.shape[1]};
      m.dtype = t.dtype;
    } else {
      continue;
    }
    m.kind = classify_module(m.name);
    m.k = m.shape.back();
    m.rows = m.shape[m.shape.size() - 2];
    m.experts = 1;
    for (size_t i = 0; i + 2 < m.shape.size(); ++i) m.experts *= m.shape[i];
    modules.push_back(std::move(m));
  }
  std::sort(modules.begin(), modules.end(),
            [](const LinearModule& a, const LinearModule& b) { return a.name < b.name; });
  for (size_t i = 1; i < modules.size(); ++i)
    NIBBLE_CHECK(modules[i].name != modules[i - 1].name,
                 "module {} is stored twice (tensors {} and {})", modules[i].name,
                 modules[i - 1].tensors[0], modules[i].tensors[0]);
  return modules;
}

std::optional<bool> tie_word_embeddings_default(std::string_view model_type) {
  // Read from transformers' configuration_<type>.py (commit 008e574, 2026): each of these
  // classes declares tie_word_embeddings: bool = False.
  if (one_of(model_type, {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gpt_oss"}))
    return false;
  return std::nullopt;
}

std::string ModelInfo::tied_reason() const {
  const std::optional<bool> type_default = tie_word_embeddings_default(model_type);
  if (tie_config.value_or(type_default.value_or(true))) {
    if (!has_embed) return {};  // nothing to tie to
    if (tie_config) return "config.json sets tie_word_embeddings: true";
    return fmt::format("config.json has no tie_word_embeddings and {}: treated as tied, "
                       "as transformers' PretrainedConfig default (true) would",
                       model_type.empty() ? std::string("no model_type")
                                          : fmt::format("model_type '{}' is not one whose default is known", model_type));
  }
  if (has_embed && !has_lm_head) return "the checkpoint has no separate lm_head weight";
  if (lm_head_aliases_embed) return "lm_head and embed_tokens are the same data (" + alias_detail + ")";
  return {};
}

const LinearModule* ModelInfo::find(std::string_view name) const {
  const auto it = std::lower_bound(modules.begin(), modules.end(), name,
                                   [](const LinearModule& m, std::string_view n) { return m.name < n; });
  return it != modules.end() && it->name == name ? &*it : nullptr;
}

ModelInfo model_info_from_tensors(const std::vector<TensorInfo>& tensors, const nlohmann::json& config) {
  ModelInfo info;
  info.modules = find_linear_modules(tensors);
  for (const auto& m : info.modules) {
    if (m.kind == ModuleKind::lm_head) info.has_lm_head = true;
    if (m.kind == ModuleKind::embed) info.has_embed = true;
  }
  NIBBLE_CHECK(config.is_object(), "config.json: expected a JSON object at the top level");
  if (const auto it = config.find("tie_word_embeddings"); it != config.end() && !it->is_null()) {
    NIBBLE_CHECK(it->is_boolean(), "config.json: tie_word_embeddings must be true or false, found {}",
                 it->dump());
    info.tie_config = it->get<bool>();
  }
  // Multimodal configs keep the language model's settings in text_config.
  if (!info.tie_config) {
    if (const auto tc = config.find("text_config"); tc != config.end() && tc->is_object()) {
      if (const auto it = tc->find("tie_word_embeddings"); it != tc->end() && it->is_boolean())
        info.tie_config = it->get<bool>();
    }
  }
  if (const auto it = config.find("model_type"); it != config.end() && !it->is_null()) {
    NIBBLE_CHECK(it->is_string(), "config.json: model_type must be a string, found {}", it->dump());
    info.model_type = it->get<std::string>();
  }
  if (const auto it = config.find("architectures"); it != config.end()) {
    NIBBLE_CHECK(it->is_array(), "config.json: architectures must be a list, found {}", it->dump());
    for (const auto& a : *it) {
      NIBBLE_CHECK(a.is_string(), "config.json: architectures must hold strings, found {}", a.dump());
      info.architectures.push_back(a.get<std::string>());
    }
  }
  return info;
}

nlohmann::json read_config_json(const std::string& directory) {
  const std::filesystem::path path = std::filesystem::path(directory) / "config.json";
  std::ifstream in(path);
  NIBBLE_CHECK(in.good(), "{}: cannot open (a Hugging Face checkpoint directory needs config.json)",
               path.string());
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    NIBBLE_THROW("{}: malformed JSON: {}", path.string(), e.what());
  }
  NIBBLE_CHECK(config.is_object(), "{}: expected a JSON object at the top level", path.string());
  return config;
}

}  // namespace nibble

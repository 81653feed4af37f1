#include "quant/lora.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <regex>

#include "base/error.h"
#include "quant/model_info.h"

namespace nibble {

namespace {

enum class ListMatch { none, exact, suffix };

// PEFT's list rule: the name equals an entry, or ends with "." + entry.
ListMatch list_match(const std::vector<std::string>& list, std::string_view name) {
  ListMatch found = ListMatch::none;
  for (const auto& entry : list) {
    if (name == entry) return ListMatch::exact;
    if (name.size() > entry.size() && name.ends_with(entry) && name[name.size() - entry.size() - 1] == '.')
      found = ListMatch::suffix;
  }
  return found;
}

bool regex_full_match(const std::string& pattern, std::string_view name) {
  // Compiled per call: plans have a few thousand modules at most.
  const std::regex re(pattern, std::regex::ECMAScript);
  return std::regex_match(name.begin(), name.end(), re);
}

void check_regex(const std::string& pattern, const char* field, const std::string& where) {
  try {
    std::regex check(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    NIBBLE_THROW("{}: {} is not a valid regex ({}): {}", where, field, e.what(), pattern);
  }
}

bool present(const nlohmann::json& config, const char* field) {
  const auto it = config.find(field);
  return it != config.end() && !it->is_null();
}

// A list of strings (PEFT stores sets as lists).
std::vector<std::string> read_string_list(const nlohmann::json& value, const char* field, const std::string& where) {
  NIBBLE_CHECK(value.is_array(), "{}: {} must be a list of names, found {}", where, field, value.dump());
  std::vector<std::string> list;
  for (const auto& v : value) {
    NIBBLE_CHECK(v.is_string(), "{}: {} must hold strings, found {}", where, field, v.dump());
    list.push_back(v.get<std::string>());
  }
  return list;
}

// Reads a PEFT string-or-list field into (is_regex, regex, list).
void read_targets(const nlohmann::json& config, const char* field, const std::string& where,
                  bool& is_regex, std::string& regex, std::vector<std::string>& list) {
  if (!present(config, field)) return;
  const nlohmann::json& value = config.at(field);
  if (value.is_string()) {
    is_regex = true;
    regex = value.get<std::string>();
    check_regex(regex, field, where);
    return;
  }
  NIBBLE_CHECK(value.is_array(), "{}: {} must be a string (regex) or a list of names, found {}", where,
               field, value.dump());
  list = read_string_list(value, field, where);
}

bool is_all_linear(const nlohmann::json& value) {
  if (!value.is_string()) return false;
  std::string s = value.get<std::string>();
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s == "all-linear";
}

// What PEFT's "all-linear" wraps: nn.Linear-style modules, not the output layer (see lora.h).
bool is_all_linear_module(const LinearModule& m) {
  if (m.shape.size() != 2) return false;  // fused [E, N, K] experts are bare nn.Parameters
  switch (m.kind) {
    case ModuleKind::qkv:
    case ModuleKind::o:
    case ModuleKind::mlp:
    case ModuleKind::moe:  // 2-D: one expert's nn.Linear
    case ModuleKind::other: return true;
    case ModuleKind::lm_head:
    case ModuleKind::embed:
    case ModuleKind::router: return false;
  }
  return false;
}

// The layer index of `name` the way PEFT finds it: the first ".<name>.<digits>." (lazy), or
// the first ".<pattern>.<digits>." for one of `patterns`. -1 when there is none.
int64_t layer_index(std::string_view name, const std::vector<std::string>& patterns) {
  const auto first = [&](const std::string& middle) -> int64_t {
    const std::regex re(".*?\\." + middle + "\\.(\\d+)\\.", std::regex::ECMAScript);
    std::match_results<std::string_view::const_iterator> m;
    if (!std::regex_search(name.begin(), name.end(), m, re, std::regex_constants::match_continuous))
      return -1;
    return std::stoll(m[m.size() - 1].str());
  };
  if (patterns.empty()) return first("[^.]*");
  for (const auto& p : patterns)
    if (const int64_t i = first(p); i >= 0) return i;
  return -1;
}

std::string parent_of(std::string_view name) {
  const size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? std::string() : std::string(name.substr(0, dot));
}

}  // namespace

std::string LoraAdapter::targets(const LinearModule& m) const {
  // The weight file names the modules PEFT wrapped: no config rule can undo that.
  if (weight_modules.count(m.name)) return "its LoRA weights are in adapter_model.safetensors";
  if (m.parameter == m.name && weight_modules.count(parent_of(m.name)))
    return fmt::format("{} holds LoRA weights in adapter_model.safetensors", parent_of(m.name));
  if (!m.parameter.empty() && list_match(target_parameters, m.parameter) != ListMatch::none)
    return fmt::format("target_parameters names {}", m.parameter);

  // target_modules, with exclude_modules and layers_to_transform.
  if (exclude_is_regex ? regex_full_match(exclude_regex, m.name)
                       : list_match(exclude_list, m.name) != ListMatch::none)
    return {};
  if (all_linear) return is_all_linear_module(m) ? "target_modules all-linear" : "";
  if (target_is_regex) return regex_full_match(target_regex, m.name) ? "target_modules (regex)" : "";
  const ListMatch match = list_match(target_list, m.name);
  if (match == ListMatch::none) return {};
  if (match == ListMatch::exact || layers_to_transform.empty()) return "target_modules";
  const int64_t layer = layer_index(m.name, layers_pattern);
  if (layer < 0) return {};
  if (std::find(layers_to_transform.begin(), layers_to_transform.end(), layer) == layers_to_transform.end())
    return {};
  return fmt::format("target_modules, layer {} in layers_to_transform", layer);
}

LoraAdapter lora_adapter_from_config(const nlohmann::json& config,
                                     const std::vector<std::string>& weight_names,
                                     const std::string& directory) {
  const std::string where = directory.empty() ? "adapter_config.json" : directory + "/adapter_config.json";
  NIBBLE_CHECK(config.is_object(), "{}: expected a JSON object", where);
  LoraAdapter a;
  a.directory = directory;
  if (present(config, "target_modules") && is_all_linear(config.at("target_modules")))
    a.all_linear = true;
  else
    read_targets(config, "target_modules", where, a.target_is_regex, a.target_regex, a.target_list);
  read_targets(config, "exclude_modules", where, a.exclude_is_regex, a.exclude_regex, a.exclude_list);

  if (present(config, "target_parameters")) {
    NIBBLE_CHECK(!config.at("target_parameters").is_string(),
                 "{}: target_parameters must be a list of parameter names (PEFT refuses a string too), "
                 "found {}", where, config.at("target_parameters").dump());
    a.target_parameters = read_string_list(config.at("target_parameters"), "target_parameters", where);
  }

  // layers_to_transform / layers_pattern, with PEFT's own refusals (LoraConfig.__post_init__).
  const bool string_targets = a.all_linear || a.target_is_regex;
  for (const char* field : {"layers_to_transform", "layers_pattern"})
    NIBBLE_CHECK(!(string_targets && present(config, field)),
                 "{}: {} cannot be used when target_modules is a string ({}): PEFT refuses this "
                 "adapter config too",
                 where, field, a.all_linear ? "all-linear" : "a regex");
  if (present(config, "layers_to_transform")) {
    const nlohmann::json& v = config.at("layers_to_transform");
    if (v.is_number_integer()) {
      a.layers_to_transform.push_back(v.get<int64_t>());
    } else {
      NIBBLE_CHECK(v.is_array(), "{}: layers_to_transform must be an integer or a list of integers, found {}",
                   where, v.dump());
      for (const auto& i : v) {
        NIBBLE_CHECK(i.is_number_integer(), "{}: layers_to_transform must hold integers, found {}", where,
                     i.dump());
        a.layers_to_transform.push_back(i.get<int64_t>());
      }
    }
  }
  if (present(config, "layers_pattern")) {
    const nlohmann::json& v = config.at("layers_pattern");
    if (v.is_string()) {
      if (!v.get<std::string>().empty()) a.layers_pattern.push_back(v.get<std::string>());
    } else {
      a.layers_pattern = read_string_list(v, "layers_pattern", where);
    }
    for (const auto& p : a.layers_pattern) check_regex(p, "layers_pattern", where);
  }
  NIBBLE_CHECK(a.layers_pattern.empty() || present(config, "layers_to_transform"),
               "{}: layers_pattern is given without layers_to_transform: PEFT refuses this adapter "
               "config too", where);

  // "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" -> the module name.
  for (const auto& name : weight_names) {
    std::string n = name;
    if (n.starts_with("base_model.model.")) n.erase(0, 17);
    for (std::string_view marker : {".lora_A", ".lora_B", ".lora_embedding_A", ".lora_embedding_B",
                                    ".lora_magnitude_vector"}) {
      const size_t pos = n.find(marker);
      if (pos == std::string::npos) continue;
      std::string module = n.substr(0, pos);
      // PEFT nests a wrapper per adapted parameter: "experts.base_layer.lora_A" is "experts".
      for (size_t b = 0; (b = module.find(".base_layer", b)) != std::string::npos;) {
        if (b + 11 == module.size() || module[b + 11] == '.')
          module.erase(b, 11);
        else
          b += 11;
      }
      a.weight_modules.insert(std::move(module));
      break;
    }
  }
  NIBBLE_CHECK(a.all_linear || a.target_is_regex || !a.target_list.empty() || !a.target_parameters.empty() ||
                   !a.weight_modules.empty(),
               "{}: target_modules and target_parameters are missing or empty and the adapter has no "
               "LoRA weights: cannot tell which modules it targets",
               where);
  return a;
}

}  // namespace nibble

#include "quant/lora.h"

#include <nlohmann/json.hpp>


#include "base/error.h"

namespace nibble {

namespace {

bool list_matches(const std::vector<std::string>& list, std::string_view module) {
  for (const auto& entry : list) {
    if (module == entry) return true;
    if (module.size() > entry.size() && module.ends_with(entry) &&
        module[module.size() - entry.size() - 1] == '.')
      return true;
  }
  return false;
}

bool regex_full_match(const std::string& pattern, std::string_view module) {
  // Compiled per call: plans have a few thousand modules at most.
  const std::regex re(pattern, std::regex::ECMAScript);
  return std::regex_match(module.begin(), module.end(), re);
}

// Reads a PEFT string-or-list field into (is_regex, regex, list).
void read_targets(const nlohmann::json& config, const char* field, const std::string& where,
                  bool& is_regex, std::string& regex, std::vector<std::string>& list) {
  const auto it = config.find(field);
  if (it == config.end() || it->is_null()) return;
  if (it->is_string()) {
    is_regex = true;
    regex = it->get<std::string>();
    try {
      std::regex check(regex, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      NIBBLE_THROW("{}: {} is not a valid regex ({}): {}", where, field, e.what(), regex);
    }
    return;
  }
  NIBBLE_CHECK(it->is_array(), "{}: {} must be a string (regex) or a list of names, found {}", where,
               field, it->dump());
  for (const auto& v : *it) {
    NIBBLE_CHECK(v.is_string(), "{}: {} must hold strings, found {}", where, field, v.dump());
    list.push_back(v.get<std::string>());
  }
}

}  // namespace

bool LoraAdapter::targets(std::string_view module, bool is_output_layer) const {
  bool hit = weight_modules.count(std::string(module)) > 0;
  if (!hit) {
    if (all_linear)
      hit = !is_output_layer;
    else if (target_is_regex)
      hit = regex_full_match(target_regex, module);
    else
      hit = list_matches(target_list, module);
  }
  if (!hit) return false;
  if (exclude_is_regex) return !regex_full_match(exclude_regex, module);
  return !list_matches(exclude_list, module);
}

LoraAdapter lora_adapter_from_config(const nlohmann::json& config,
                                     const std::vector<std::string>& weight_names,
                                     const std::string& directory) {
  const std::string where = directory.empty() ? "adapter_config.json" : directory + "/adapter_config.json";
  NIBBLE_CHECK(config.is_object(), "{}: expected a JSON object", where);
  LoraAdapter a;
  a.directory = directory;
  const auto it = config.find("target_modules");
  if (it != config.end() && it->is_string() && it->get<std::string>() == "all-linear") {
    a.all_linear = true;
  } else {
    read_targets(config, "target_modules", where, a.target_is_regex, a.target_regex, a.target_list);
  }
  read_targets(config, "exclude_modules", where, a.exclude_is_regex, a.exclude_regex, a.exclude_list);
  // "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" -> the module name.
  for (const auto& name : weight_names) {
    std::string_view n = name;
    if (n.starts_with("base_model.model.")) n.remove_prefix(17);
    for (std::string_view marker : {".lora_A", ".lora_B", ".lora_embedding_A", ".lora_embedding_B",
                                    ".lora_magnitude_vector"}) {
      const size_t pos = n.find(marker);
      if (pos != std::string_view::npos) {
        a.weight_modules.insert(std::string(n.substr(0, pos)));
        break;
      }
    }
  }
  NIBBLE_CHECK(a.all_linear || a.target_is_regex || !a.target_list.empty() || !a.weight_modules.empty(),
               "{}: target_modules is missing or empty and the adapter has no LoRA weights: "
               "cannot tell which modules it targets",
               where);
  return a;
}

}  // namespace nibble

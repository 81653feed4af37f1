// PEFT LoRA adapters, as far as the LoRA gate needs them: which base-model modules an adapter
// targets. A module an adapter targets must stay BF16: the adapter was trained against the
// BF16 weight, and merging or applying it on an MXFP4 weight changes what it adds.
//
// Target resolution follows PEFT (peft/tuners/tuners_utils.py, check_target_module_exists):
//   target_modules a string  -> a regex that must match the WHOLE module name
//   target_modules a list    -> a module matches when its name equals an entry or ends with
//                               "." + entry
//   "all-linear"             -> every linear module except the output layer (lm_head)
//   exclude_modules (same string/list rules) removes modules again.
// Names found in adapter_model.safetensors ("base_model.model.<module>.lora_A.weight") are
// added as well, so an adapter whose config and weights disagree is still covered.
#pragma once

#include <regex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace nibble {

struct LoraAdapter {
  std::string directory;
  bool all_linear = false;
  bool target_is_regex = false;
  std::string target_regex;             // when target_is_regex
  std::vector<std::string> target_list;  // otherwise
  bool exclude_is_regex = false;
  std::string exclude_regex;
  std::vector<std::string> exclude_list;
  std::set<std::string> weight_modules;  // modules named by the adapter's weight file

  // Whether the adapter targets `module` (a base-model module name). `is_output_layer`:
  // lm_head, which "all-linear" leaves out as PEFT does.
  bool targets(std::string_view module, bool is_output_layer) const;
};

// From adapter_config.json's content (and the adapter's weight names, if known).
LoraAdapter lora_adapter_from_config(const nlohmann::json& adapter_config,
                                     const std::vector<std::string>& weight_names = {},
                                     const std::string& directory = "");

// Reads <dir>/adapter_config.json and, when present, the tensor names of
// <dir>/adapter_model.safetensors. Each failure names the file and field.
LoraAdapter load_lora_adapter(const std::string& directory);

}  // namespace nibble

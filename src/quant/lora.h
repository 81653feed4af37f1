// PEFT LoRA adapters, as far as the LoRA gate needs them: which base-model modules an adapter
// targets. A module an adapter targets must stay BF16: the adapter was trained against the
// BF16 weight, and merging or applying it on an MXFP4 weight changes what it adds.
//
// Target resolution follows PEFT (peft/tuners/tuners_utils.py: check_target_module_exists,
// _inject_parameters, _maybe_include_all_linear_layers; peft/tuners/lora/config.py), read at
// peft commit 5d602fd (2026-08):
//   target_modules a string  -> a regex that must match the WHOLE module name
//   target_modules a list    -> a module matches when its name equals an entry, or ends with
//                               "." + entry; a suffix match (not an exact one) is then
//                               restricted by layers_to_transform (below)
//   "all-linear" (any case)  -> every nn.Linear-style module except the output layer: the
//                               dense q/k/v/o/MLP projections, 2-D weights we cannot name
//                               ("other") and per-expert projections (experts.7.down_proj:
//                               nn.Linear in transformers 4, fused in 5; counted, to be safe).
//                               Not embed_tokens (nn.Embedding), not lm_head, not routers
//                               (transformers builds them as TopKRouter modules holding a bare
//                               nn.Parameter), not fused expert parameters (bare nn.Parameters).
//                               An adapter that still has LoRA weights on one of those (a
//                               transformers 4 nn.Linear router) is caught by its weight names
//   exclude_modules          -> (same string/list rules) removes target_modules matches again
//   target_parameters        -> a list of parameter names, matched like a target_modules list
//                               (equal, or ends with "." + entry) against each module's
//                               parameter: "<module>.weight", or for gpt-oss fused experts the
//                               parameter itself ("model.layers.0.mlp.experts.gate_up_proj").
//                               exclude_modules and layers_to_transform do not apply to it,
//                               as in PEFT
//   layers_to_transform      -> an int or a list of ints: the layer index of a suffix match
//                               must be one of them. The index is the first ".<name>.<digits>."
//                               of the module name or, with layers_pattern (a string or list
//                               of regex fragments), the first ".<pattern>.<digits>."; a module
//                               without one is not targeted. PEFT refuses layers_to_transform or
//                               layers_pattern with a string target_modules (regex or
//                               all-linear), and layers_pattern without layers_to_transform: so
//                               do we, naming the fields.
// Names found in adapter_model.safetensors ("base_model.model.<module>.lora_A.weight", PEFT's
// ".base_layer" segments removed) are added as well, so an adapter whose config and weights
// disagree is still covered; a weight module that owns fused expert parameters
// ("...mlp.experts", where PEFT's ParamWrapper keeps target_parameters' LoRA weights) targets
// every bare parameter under it.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace nibble {

struct LinearModule;

struct LoraAdapter {
  std::string directory;
  bool all_linear = false;
  bool target_is_regex = false;
  std::string target_regex;              // when target_is_regex
  std::vector<std::string> target_list;  // otherwise
  bool exclude_is_regex = false;
  std::string exclude_regex;
  std::vector<std::string> exclude_list;
  std::vector<std::string> target_parameters;
  std::vector<int64_t> layers_to_transform;  // empty: every layer
  std::vector<std::string> layers_pattern;   // regex fragments; empty: any ".<name>.<digits>."
  std::set<std::string> weight_modules;      // modules named by the adapter's weight file

  // Whether the adapter targets `module` (a linear module of the base checkpoint), and why
  // ("target_modules", "target_parameters", "adapter weights"); empty when it does not.
  std::string targets(const LinearModule& module) const;
};

// From adapter_config.json's content (and the adapter's weight names, if known).
LoraAdapter lora_adapter_from_config(const nlohmann::json& adapter_config,
                                     const std::vector<std::string>& weight_names = {},
                                     const std::string& directory = "");

// Reads <dir>/adapter_config.json and, when present, the tensor names of
// <dir>/adapter_model.safetensors. Each failure names the file and field.
LoraAdapter load_lora_adapter(const std::string& directory);

}  // namespace nibble

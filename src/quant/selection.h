// Layer selection: which linear modules become MXFP4, and why. Used by `nibble quantize`
// (default tokens "moe") and by the model loader at load time (--mxfp4-layers, default
// "qkv,o,mlp" for dense models). One function, plan_layers(), decides every module and says
// why; the callers only print or apply its answer.
//
// Order of the decision for each linear module (the first rule that applies wins):
//   1. already MXFP4 in the source          -> pass-through (never re-quantized or expanded)
//   2. --exclude glob matches               -> kept ("exclude wins")
//   3. a token or an --include glob selects -> candidate, else kept ("not selected")
//   4. gates, for candidates:
//        tied embeddings: lm_head kept BF16 (warning); embed refused (Error) unless lm_head is
//                         asked for too and accept_tied_mxfp4 is set: then both share MXFP4.
//                         With no lm_head tensor at all, asking for lm_head still gives a
//                         warning and a "tied_embeddings" gate for "lm_head" (the output layer
//                         reads the embedding table, BF16 or the shared MXFP4 one)
//        LoRA narrow:     modules the adapter targets kept BF16 (warning; see lora.h for how
//                         PEFT's target_modules / target_parameters / layers_to_transform
//                         resolve); a target already MXFP4 in the input: warning only
//        LoRA broad:      every dense (non-MoE) module kept BF16 (warning)
//        K % 32 != 0:     kept BF16 (other tools cannot read a padded last block)
//        dtype:           a candidate that is not F32/BF16/F16 is an Error naming it
//   5. otherwise MXFP4.
// Globs are fnmatch patterns on module names (no FNM_PATHNAME: `*` crosses dots), e.g.
// "model.layers.*.mlp.*", "*.layers.0.*". A glob that matches no linear module is a warning
// naming it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "quant/model_info.h"

namespace nibble {

struct LoraAdapter;

// The --mxfp4-layers tokens as a set of module kinds.
struct LayerTokens {
  bool moe = false, qkv = false, o = false, mlp = false, lm_head = false, embed = false;
  bool selects(ModuleKind kind) const;
  std::string to_string() const;  // canonical comma list, e.g. "qkv,o,mlp"
};
// Parses "moe,qkv,o,mlp,lm_head,embed,all" (comma-separated, spaces ignored). `all` means
// every token except `embed`. Unknown or empty tokens: Error listing the valid ones.
LayerTokens parse_layer_tokens(std::string_view list);
inline constexpr const char* kLayerTokenNames = "moe, qkv, o, mlp, lm_head, embed, all";

enum class LoraGate : uint8_t { narrow, broad };
LoraGate lora_gate_from_name(std::string_view name);  // "narrow" | "broad", else Error
const char* lora_gate_name(LoraGate gate);

struct SelectionOptions {
  LayerTokens tokens;                 // parse_layer_tokens("moe") for `nibble quantize`
  std::vector<std::string> include;   // fnmatch globs on module names: add modules
  std::vector<std::string> exclude;   // fnmatch globs: remove modules (wins over everything)
  const LoraAdapter* lora = nullptr;  // --lora DIR, if given
  LoraGate lora_gate = LoraGate::narrow;
  bool accept_tied_mxfp4 = false;     // --accept-tied-mxfp4: embed + lm_head share one table
};

// The gates that fired, for the plan, the report, inspect and config.json.
struct GateRecord {
  std::string gate;     // "tied_embeddings", "lora_narrow", "lora_broad", "k_not_multiple_of_32"
  std::string module;   // the module it applied to
  std::string detail;   // why, in words
};

struct ModuleDecision {
  const LinearModule* module = nullptr;  // into the ModelInfo given to plan_layers
  bool mxfp4 = false;        // quantized (or kept MXFP4) in the output
  bool passthrough = false;  // already MXFP4 in the source: copied as is
  std::string reason;        // one line: the token, glob, gate or shape that decided
};

struct LayerPlan {
  std::vector<ModuleDecision> modules;  // every linear module, sorted by name
  std::vector<std::string> warnings;    // gates that fired, globs that matched nothing
  std::vector<GateRecord> gates;
  const ModuleDecision* find(std::string_view module_name) const;
  size_t count_mxfp4() const;
  // Linear modules left unquantized, as config.json's modules_to_not_convert lists them.
  std::vector<std::string> modules_to_not_convert() const;
};

// Decides every linear module of `model` (see the order at the top). Throws Error for the
// refusals (tied embed without consent, unsupported dtype of a selected module). `model` must
// outlive the plan.
LayerPlan plan_layers(const ModelInfo& model, const SelectionOptions& options);

// fnmatch(pattern, name, 0) == 0, exposed for tests and inspect.
bool glob_matches(const std::string& pattern, std::string_view name);

}  // namespace nibble

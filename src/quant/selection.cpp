#include "quant/selection.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fnmatch.h>

#include <algorithm>
#include <string>

#include "base/error.h"
#include "format/mxfp4.h"
#include "quant/lora.h"

namespace nibble {

bool LayerTokens::selects(ModuleKind kind) const {
  switch (kind) {
    case ModuleKind::moe: return moe;
    case ModuleKind::qkv: return qkv;
    case ModuleKind::o: return o;
    case ModuleKind::mlp: return mlp;
    case ModuleKind::lm_head: return lm_head;
    case ModuleKind::embed: return embed;
    case ModuleKind::router:
    case ModuleKind::other: return false;
  }
  return false;
}

std::string LayerTokens::to_string() const {
  std::vector<std::string> names;
  if (moe) names.push_back("moe");
  if (qkv) names.push_back("qkv");
  if (o) names.push_back("o");
  if (mlp) names.push_back("mlp");
  if (lm_head) names.push_back("lm_head");
  if (embed) names.push_back("embed");
  return fmt::format("{}", fmt::join(names, ","));
}

LayerTokens parse_layer_tokens(std::string_view list) {
  LayerTokens tokens;
  size_t start = 0;
  bool any = false;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    std::string_view token = list.substr(start, comma - start);
    while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
    while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
    NIBBLE_CHECK(!token.empty(), "--mxfp4-layers '{}': empty token; valid tokens: {}", list,
                 kLayerTokenNames);
    if (token == "moe") tokens.moe = true;
    else if (token == "qkv") tokens.qkv = true;
    else if (token == "o") tokens.o = true;
    else if (token == "mlp") tokens.mlp = true;
    else if (token == "lm_head") tokens.lm_head = true;
    else if (token == "embed") tokens.embed = true;
    else if (token == "all") tokens.moe = tokens.qkv = tokens.o = tokens.mlp = tokens.lm_head = true;
    else
      NIBBLE_THROW("--mxfp4-layers: unknown token '{}'; valid tokens: {}", token, kLayerTokenNames);
    any = true;
    start = comma + 1;
  }
  NIBBLE_CHECK(any, "--mxfp4-layers: no token given; valid tokens: {}", kLayerTokenNames);
  return tokens;
}

LoraGate lora_gate_from_name(std::string_view name) {
  if (name == "narrow") return LoraGate::narrow;
  if (name == "broad") return LoraGate::broad;
  NIBBLE_THROW("--lora-gate: unknown value '{}'; valid values: narrow, broad", name);
}

const char* lora_gate_name(LoraGate gate) { return gate == LoraGate::narrow ? "narrow" : "broad"; }

bool glob_matches(const std::string& pattern, std::string_view name) {
  return fnmatch(pattern.c_str(), std::string(name).c_str(), 0) == 0;
}

const ModuleDecision* LayerPlan::find(std::string_view module_name) const {
  for (const auto& d : modules)
    if (d.module->name == module_name) return &d;
  return nullptr;
}

size_t LayerPlan::count_mxfp4() const {
  return size_t(std::count_if(modules.begin(), modules.end(), [](const ModuleDecision& d) { return d.mxfp4; }));
}

std::vector<std::string> LayerPlan::modules_to_not_convert() const {
  std::vector<std::string> names;
  for (const auto& d : modules)
    if (!d.mxfp4) names.push_back(d.module->name);
  return names;
}

namespace {

bool is_float_source(DType dtype) {
  return dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16;
}

// The first glob of `globs` matching `name`, or nullptr.
const std::string* first_match(const std::vector<std::string>& globs, std::string_view name) {
  for (const auto& g : globs)
    if (glob_matches(g, name)) return &g;
  return nullptr;
}

}  // namespace

LayerPlan plan_layers(const ModelInfo& model, const SelectionOptions& options) {
  LayerPlan plan;
  const std::string tied = model.tied_reason();
  const std::string tokens = options.tokens.to_string();

  // Is lm_head asked for explicitly (token or include glob), and not excluded?
  const auto asked = [&](const std::string& name, ModuleKind kind) {
    if (first_match(options.exclude, name)) return false;
    return options.tokens.selects(kind) || first_match(options.include, name) != nullptr;
  };
  const LinearModule* head = nullptr;
  for (const auto& m : model.modules)
    if (m.kind == ModuleKind::lm_head) head = &m;
  const bool head_asked = asked(head ? head->name : std::string("lm_head"), ModuleKind::lm_head);

  for (const auto& m : model.modules) {
    ModuleDecision d;
    d.module = &m;
    const std::string* excluded = first_match(options.exclude, m.name);
    const std::string* included = first_match(options.include, m.name);
    if (m.already_mxfp4()) {
      d.mxfp4 = d.passthrough = true;
      d.reason = fmt::format("already MXFP4 in the input ({}): passed through", source_layout_name(m.layout));
      if (excluded)
        plan.warnings.push_back(fmt::format(
            "{} matches --exclude '{}' but is already MXFP4 in the input: passed through as is",
            m.name, *excluded));
      if (options.lora)
        if (const std::string why = options.lora->targets(m); !why.empty())
          plan.warnings.push_back(fmt::format(
              "{}: the LoRA adapter targets it ({}) but it is already MXFP4 in the input: passed "
              "through as is (there is no BF16 weight to keep)",
              m.name, why));
      plan.modules.push_back(std::move(d));
      continue;
    }
    if (excluded) {
      d.reason = fmt::format("--exclude '{}'", *excluded);
      plan.modules.push_back(std::move(d));
      continue;
    }
    if (options.tokens.selects(m.kind)) {
      d.reason = fmt::format("token '{}'", module_kind_name(m.kind));
    } else if (included) {
      d.reason = fmt::format("--include '{}'", *included);
    } else {
      d.reason = m.kind == ModuleKind::router || m.kind == ModuleKind::other
                     ? fmt::format("not selected ({} modules are chosen only by --include)",
                                   module_kind_name(m.kind))
                     : fmt::format("not selected (kind '{}', tokens: {})", module_kind_name(m.kind),
                                   tokens.empty() ? "none" : tokens);
      plan.modules.push_back(std::move(d));
      continue;
    }
    // A candidate: the gates.
    const auto keep = [&](const std::string& gate, const std::string& detail) {
      d.reason = fmt::format("{} (selected by {})", detail, d.reason);
      plan.gates.push_back({gate, m.name, detail});
      plan.warnings.push_back(fmt::format("{}: kept BF16: {}", m.name, detail));
    };
    bool candidate = true;
    if (!tied.empty() && m.kind == ModuleKind::embed) {
      NIBBLE_CHECK(head_asked && options.accept_tied_mxfp4,
                   "refusing to quantize {}: it is tied to lm_head ({}), so lm_head would read the "
                   "same MXFP4 table. To accept one shared MXFP4 table ask for both "
                   "(--mxfp4-layers ...,embed,lm_head) and pass --accept-tied-mxfp4; otherwise drop "
                   "'embed'",
                   m.name, tied);
      plan.gates.push_back({"tied_embeddings", m.name, "embed_tokens and lm_head share one MXFP4 table (" + tied + ")"});
      plan.warnings.push_back(fmt::format(
          "{} and lm_head are tied ({}): they share one MXFP4 table (--accept-tied-mxfp4)", m.name, tied));
    } else if (!tied.empty() && m.kind == ModuleKind::lm_head) {
      const LinearModule* embed = nullptr;
      for (const auto& e : model.modules)
        if (e.kind == ModuleKind::embed) embed = &e;
      const bool embed_asked = embed && asked(embed->name, ModuleKind::embed);
      if (!(embed_asked && options.accept_tied_mxfp4)) {
        keep("tied_embeddings", "tied to embed_tokens: " + tied);
        candidate = false;
      }
    }
    if (candidate && options.lora) {
      if (options.lora_gate == LoraGate::broad && m.kind != ModuleKind::moe) {
        keep("lora_broad", "LoRA broad gate keeps every dense layer BF16 (--lora " + options.lora->directory + ")");
        candidate = false;
      } else if (const std::string why = options.lora->targets(m); !why.empty()) {
        keep("lora_narrow", "the LoRA adapter targets it (" + why + "; --lora " + options.lora->directory + ")");
        candidate = false;
      }
    }
    if (candidate && m.k % int64_t(kMxfp4BlockSize) != 0) {
      keep("k_not_multiple_of_32",
           fmt::format("input dimension K={} is not a multiple of 32", m.k));
      candidate = false;
    }
    if (candidate) {
      NIBBLE_CHECK(is_float_source(m.dtype),
                   "tensor {} has dtype {}: MXFP4 quantization reads F32, BF16 or F16 (exclude it "
                   "with --exclude '{}')",
                   m.tensors[0], dtype_name(m.dtype), m.name);
      d.mxfp4 = true;
    }
    plan.modules.push_back(std::move(d));
  }
  // A tied checkpoint without an lm_head tensor: the output layer reads the embedding table,
  // so there is no module above to decide; say what lm_head gets when it was asked for.
  if (!head && head_asked && !tied.empty()) {
    const LinearModule* embed = nullptr;
    for (const auto& e : model.modules)
      if (e.kind == ModuleKind::embed) embed = &e;
    const ModuleDecision* e = embed ? plan.find(embed->name) : nullptr;
    if (e) {
      const bool shared = e->mxfp4;
      const std::string detail = fmt::format(
          "the output layer has no tensor of its own and reads {} ({}), {}", embed->name, tied,
          shared ? "in MXFP4 (one shared table, --accept-tied-mxfp4)" : "which stays BF16");
      plan.gates.push_back({"tied_embeddings", "lm_head", detail});
      plan.warnings.push_back(fmt::format("lm_head: {}: {}", shared ? "shares the embedding's MXFP4 table" : "kept BF16",
                                          detail));
    }
  }
  for (const auto* globs : {&options.include, &options.exclude}) {
    for (const auto& g : *globs) {
      const bool any = std::any_of(model.modules.begin(), model.modules.end(),
                                   [&](const LinearModule& m) { return glob_matches(g, m.name); });
      if (!any)
        plan.warnings.push_back(fmt::format("--{} '{}' matches no linear module",
                                            globs == &options.include ? "include" : "exclude", g));
    }
  }
  return plan;
}

}  // namespace nibble

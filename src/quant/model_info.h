// What src/quant needs to know about a checkpoint to decide, per linear module, MXFP4 or kept:
// the linear modules (name, kind, shape, dtype, whether already MXFP4) and the facts behind the
// tied-embedding gate. Built from tensor names and shapes alone (pure logic, unit-tested on
// name lists), or from a mapped Checkpoint (adds the storage-aliasing check).
//
// Module names are what --include/--exclude globs and PEFT target_modules match: the tensor
// name without its ".weight" suffix ("model.layers.0.self_attn.q_proj"). gpt-oss's fused
// expert parameters have no ".weight": their module name is the parameter name itself
// ("model.layers.0.mlp.experts.gate_up_proj").
//
// Source layouts understood (K = the input dimension, the one MXFP4 blocks run along):
//   P.weight            [N, K]      nn.Linear / nn.Embedding (rows N, K per row)
//   P.gate_up_proj      [E, K, N]   gpt-oss BF16 fused experts (transposed: K before N)
//   P_blocks/P_scales   [.., N, K/32, 16] / [.., N, K/32]   already MXFP4 (gpt-oss layout)
//   P.weight_packed/P.weight_scale [N, K/2] / [N, K/32]     already MXFP4 (compressed-tensors)
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "format/dtype.h"

namespace nibble {

class Checkpoint;

// The families that --mxfp4-layers tokens name, plus the ones no token selects.
enum class ModuleKind : uint8_t {
  moe,      // MoE experts: gpt-oss fused gate_up_proj/down_proj, per-expert projections
  qkv,      // q/k/v projections, separate or fused
  o,        // attention output projection
  mlp,      // dense MLP gate/up/down (incl. shared experts)
  lm_head,  // output projection
  embed,    // token embedding table
  router,   // MoE router / gate: tiny and precision-critical, never selected by a token
  other,    // a 2-D weight we do not recognise: selectable only by --include
};
const char* module_kind_name(ModuleKind kind);

// How the source stores a module's weight.
enum class SourceLayout : uint8_t {
  dense,           // [N, K] (or [E, N, K]) F32/BF16/F16/...: K is the last dimension
  dense_kn,        // gpt-oss fused experts [E, K, N]: K is the middle dimension
  mxfp4_gpt_oss,   // P_blocks [.., N, K/32, 16] + P_scales [.., N, K/32]
  mxfp4_compressed_tensors,  // P.weight_packed [N, K/2] + P.weight_scale [N, K/32]
};
const char* source_layout_name(SourceLayout layout);

struct TensorInfo {
  std::string name;
  DType dtype = DType::BF16;
  std::vector<int64_t> shape;
};

struct LinearModule {
  std::string name;                  // module name (see top)
  ModuleKind kind = ModuleKind::other;
  SourceLayout layout = SourceLayout::dense;
  std::vector<std::string> tensors;  // source tensor(s): the weight, or blocks+scales
  // The PyTorch parameter the weight is, as PEFT's target_parameters names it:
  // "<module>.weight", or for gpt-oss fused experts (a bare nn.Parameter) the module name.
  std::string parameter;
  std::vector<int64_t> shape;        // the weight's logical shape [.., N, K] (K last, always)
  DType dtype = DType::BF16;         // source element type (U8 for MXFP4 sources)
  int64_t experts = 1;               // leading dimension of fused experts, else 1
  int64_t rows = 0;                  // N (per expert)
  int64_t k = 0;                     // K
  bool already_mxfp4() const {
    return layout == SourceLayout::mxfp4_gpt_oss || layout == SourceLayout::mxfp4_compressed_tensors;
  }
};

struct ModelInfo {
  std::vector<LinearModule> modules;  // sorted by name
  // The tied-embedding facts. tie_config: config.json's tie_word_embeddings (nullopt when
  // absent: then transformers uses the default of the model_type's config class, see
  // tie_word_embeddings_default()).
  std::optional<bool> tie_config;
  std::string model_type;              // config.json's model_type, or ""

  bool has_lm_head = false;
  bool has_embed = false;
  bool lm_head_aliases_embed = false;  // same storage or same bytes (Checkpoint only)
  std::string alias_detail;            // how the aliasing was found
  std::vector<std::string> architectures;
  // Why lm_head and embed_tokens are tied, or empty when they are not.
  std::string tied_reason() const;
  bool tied() const { return !tied_reason().empty(); }
  const LinearModule* find(std::string_view name) const;
};

// transformers' default for tie_word_embeddings of a model_type's config class, for the
// model types whose classes we checked (all false: llama, mistral, mixtral, qwen2, qwen2_moe,
// qwen3, qwen3_moe, gpt_oss); nullopt for any other. PretrainedConfig's own default is true,
// so an unknown model_type without the field is treated as tied (the conservative side).
std::optional<bool> tie_word_embeddings_default(std::string_view model_type);

// The kind of a module from its name ("model.layers.3.mlp.experts.7.down_proj" -> moe).
ModuleKind classify_module(std::string_view module_name);

// Finds the linear modules among a checkpoint's tensors (any order). Norms, biases, 1-D
// tensors and convolutions are not linear modules. Throws on an MXFP4 pair that does not
// match (blocks without scales, shapes that disagree), naming the tensors.
std::vector<LinearModule> find_linear_modules(const std::vector<TensorInfo>& tensors);

// ModelInfo from names/shapes and config.json (tie_word_embeddings, architectures). No
// aliasing check: that needs the bytes (model_info_from_checkpoint).
ModelInfo model_info_from_tensors(const std::vector<TensorInfo>& tensors, const nlohmann::json& config);

// ModelInfo of a mapped checkpoint, with the storage-aliasing check: lm_head and
// embed_tokens alias when their data pointers are equal or, same dtype and shape, their
// bytes are equal.
ModelInfo model_info_from_checkpoint(const Checkpoint& checkpoint, const nlohmann::json& config);

// Reads and parses <dir>/config.json; every failure names the file.
nlohmann::json read_config_json(const std::string& directory);

}  // namespace nibble

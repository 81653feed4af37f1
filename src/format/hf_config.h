// config.json of a Hugging Face causal LM (Llama, Mistral, Qwen2, Qwen3 so far): the fields the
// model builders need, parsed with an Error naming the file and the field for every missing or
// ill-typed value. Optional fields get the transformers defaults of the architecture.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace nibble {

// RoPE parameters: transformers-5 `rope_parameters` {rope_type, rope_theta, factor, ...} or the
// legacy top-level `rope_theta` + `rope_scaling` {rope_type (or type), factor, ...}; when a file
// holds both they must agree. Types: "default" (plain RoPE) and "llama3" (Llama 3.1 / 3.2); any
// other type (linear, dynamic, yarn, longrope, ...) and any key these two do not use are refused.
struct RopeScalingLlama3 {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct HfConfig {
  std::filesystem::path file;          // where it was read from (for messages)
  std::string architecture;            // architectures[0], e.g. "LlamaForCausalLM"
  std::string model_type;              // "llama", "mistral", "qwen2", "qwen3"
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;     // defaults to num_attention_heads
  int64_t head_dim = 0;                // defaults to hidden_size / num_attention_heads
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<RopeScalingLlama3> rope_scaling;  // rope_type "llama3"; none for "default"
  bool tie_word_embeddings = false;
  std::string hidden_act = "silu";     // the MLP activation as written
  bool mlp_bias = false;               // Llama: biases on gate/up/down
  bool attention_bias = false;         // q/k/v (and for Llama o) biases; Qwen2 always has qkv
  // Sliding-window attention fields, as written (transformers' defaults when absent):
  //   sliding_window      window in tokens; none when null. Mistral applies it to every layer
  //                       (4096 when absent); Qwen2/3 only with use_sliding_window (4096 when absent).
  //   use_sliding_window  Qwen2/3: the switch.
  //   max_window_layers   Qwen2/3: with the switch on, layers >= this index are windowed (28).
  //   layer_types         per layer "full_attention" or "sliding_attention"; when given it
  //                       decides instead of max_window_layers. Empty when absent.
  std::optional<int64_t> sliding_window;
  bool use_sliding_window = false;
  int64_t max_window_layers = 28;
  std::vector<std::string> layer_types;
  std::vector<int64_t> bos_token_ids, eos_token_ids;
  std::string torch_dtype;             // "bfloat16", "float32", ... ("" when absent)

  static HfConfig parse(const std::string& json_text, const std::filesystem::path& file);
  static HfConfig load(const std::filesystem::path& file);  // reads then parses
  // The config.json text for this config (what `nibble convert` / `nibble synth` write).
  std::string to_json() const;
};

}  // namespace nibble

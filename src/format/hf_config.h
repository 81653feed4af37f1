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

// rope_scaling {"rope_type": "llama3", ...} (Llama 3.1 / 3.2). Other types are refused.
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
  std::optional<RopeScalingLlama3> rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;         // q/k/v (and for Llama o) biases; Qwen2 always has qkv
  std::optional<int64_t> sliding_window;  // Mistral; Qwen2/3 only with use_sliding_window
  std::vector<int64_t> bos_token_ids, eos_token_ids;
  std::string torch_dtype;             // "bfloat16", "float32", ... ("" when absent)

  static HfConfig parse(const std::string& json_text, const std::filesystem::path& file);
  static HfConfig load(const std::filesystem::path& file);  // reads then parses
  // The config.json text for this config (what `nibble convert` / `nibble synth` write).
  std::string to_json() const;
};

}  // namespace nibble

// One Llama-family architecture, with the per-family differences as data:
//
//   family    qkv bias   q/k norm   RoPE scaling       sliding window   names
//   llama     optional   -          llama3 (3.1/3.2)   -                LlamaForCausalLM
//   mistral   -          -          -                  optional         MistralForCausalLM
//   qwen2     always     -          -                  -                Qwen2ForCausalLM
//   qwen3     optional   per head   -                  -                Qwen3ForCausalLM
//   llama2.c  -          -          -                  -                (checkpoint .bin)
//
// Every family: RMSNorm, RoPE, GQA attention, SwiGLU MLP, tied or untied classifier. RoPE
// pairs are rotate-half (x[i], x[i + d/2]) in Hugging Face checkpoints and interleaved
// (x[2i], x[2i+1]) in llama2.c ones; `rope_interleaved` says which (nibble convert permutes
// llama2.c's q/k rows so that the rotate-half model computes the same thing).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "format/hf_config.h"

namespace nibble {

enum class LlamaFamily : uint8_t { llama, mistral, qwen2, qwen3 };
const char* llama_family_name(LlamaFamily family);
// "llama", "mistral", "qwen2", "qwen3"; throws naming the valid ones.
LlamaFamily llama_family_from_name(const std::string& name);

struct LlamaConfig {
  LlamaFamily family = LlamaFamily::llama;
  size_t hidden = 0, ffn = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  size_t max_seq = 2048;
  float norm_eps = 1e-5f;
  double rope_theta = 10000.0;
  bool rope_interleaved = false;
  std::optional<RopeScalingLlama3> rope_scaling;
  bool qkv_bias = false;
  bool o_bias = false;
  bool qk_norm = false;
  bool tied_embeddings = false;
  std::optional<size_t> sliding_window;
  std::vector<int64_t> bos_ids, eos_ids;

  size_t q_width() const { return heads * head_dim; }
  size_t kv_width() const { return kv_heads * head_dim; }

  // From config.json: architecture -> family, fields -> switches. Unknown architectures are
  // refused naming the file and the supported ones.
  static LlamaConfig from_hf(const HfConfig& hf);
  // The config.json that describes this model in Hugging Face terms.
  HfConfig to_hf() const;
  // RoPE inverse frequencies, head_dim / 2 values (llama3 scaling applied).
  std::vector<float> rope_inv_freq() const;
};

}  // namespace nibble

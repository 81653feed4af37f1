// One Llama-family architecture, with the per-family differences as data:
//
//   family    attn biases   q/k norm   RoPE scaling       sliding window        names
//   llama     q,k,v,o opt.  -          llama3 (3.1/3.2)   -                     LlamaForCausalLM
//   mistral   -             -          -                  every layer, opt.     MistralForCausalLM
//   qwen2     q,k,v always  -          -                  per layer, opt. (*)   Qwen2ForCausalLM
//   qwen3     q,k,v,o opt.  per head   -                  per layer, opt. (*)   Qwen3ForCausalLM
//   llama2.c  -             -          -                  -                     (checkpoint .bin)
//
// (*) with use_sliding_window: the layers >= max_window_layers, or those layer_types marks
//     "sliding_attention" (transformers' Qwen2Config / Qwen3Config rule).
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
  // Attention window of each layer, in tokens: a query at position p attends to positions
  // p - window + 1 .. p (transformers' sliding_window); 0 = full causal attention. Empty: every
  // layer attends to the whole prefix.
  std::vector<size_t> layer_window;
  std::vector<int64_t> bos_ids, eos_ids;

  size_t q_width() const { return heads * head_dim; }
  size_t kv_width() const { return kv_heads * head_dim; }
  size_t qkv_width() const { return q_width() + 2 * kv_width(); }
  size_t window(size_t layer) const {
    return layer < layer_window.size() ? layer_window[layer] : 0;
  }
  // Window `window` tokens on layers first_layer .. layers - 1 (the others full). Needs `layers`.
  void set_sliding_window(size_t window, size_t first_layer = 0);

  // From config.json: architecture -> family, fields -> switches. Unknown architectures, and
  // fields this model cannot honour (an activation other than SiLU, mlp_bias, attention biases
  // the family does not have, RoPE scaling outside Llama, windows on Llama), are refused naming
  // the file and the field.
  static LlamaConfig from_hf(const HfConfig& hf);
  // The config.json that describes this model in Hugging Face terms (Qwen2/3 windows as
  // max_window_layers when the windowed layers are the last ones, else as layer_types). Throws
  // when the family cannot express the switches (e.g. a window on only some Mistral layers).
  HfConfig to_hf() const;
  // RoPE inverse frequencies, head_dim / 2 values (llama3 scaling applied).
  std::vector<float> rope_inv_freq() const;
};

}  // namespace nibble

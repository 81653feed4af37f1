#include "model/llama/llama_config.h"

#include <cmath>
#include <numbers>

#include "base/error.h"

namespace nibble {

const char* llama_family_name(LlamaFamily family) {
  switch (family) {
    case LlamaFamily::llama: return "llama";
    case LlamaFamily::mistral: return "mistral";
    case LlamaFamily::qwen2: return "qwen2";
    case LlamaFamily::qwen3: return "qwen3";
  }
  return "?";
}

LlamaFamily llama_family_from_name(const std::string& name) {
  for (LlamaFamily f : {LlamaFamily::llama, LlamaFamily::mistral, LlamaFamily::qwen2,
                        LlamaFamily::qwen3})
    if (name == llama_family_name(f)) return f;
  NIBBLE_THROW("unknown architecture \"{}\"; supported: llama, mistral, qwen2, qwen3", name);
}

namespace {
const char* architecture_of(LlamaFamily f) {
  switch (f) {
    case LlamaFamily::llama: return "LlamaForCausalLM";
    case LlamaFamily::mistral: return "MistralForCausalLM";
    case LlamaFamily::qwen2: return "Qwen2ForCausalLM";
    case LlamaFamily::qwen3: return "Qwen3ForCausalLM";
  }
  return "?";
}
}  // namespace

LlamaConfig LlamaConfig::from_hf(const HfConfig& hf) {
  LlamaConfig c;
  const std::string& a = hf.architecture;
  if (a == "LlamaForCausalLM" || (a.empty() && hf.model_type == "llama"))
    c.family = LlamaFamily::llama;
  else if (a == "MistralForCausalLM" || (a.empty() && hf.model_type == "mistral"))
    c.family = LlamaFamily::mistral;
  else if (a == "Qwen2ForCausalLM" || (a.empty() && hf.model_type == "qwen2"))
    c.family = LlamaFamily::qwen2;
  else if (a == "Qwen3ForCausalLM" || (a.empty() && hf.model_type == "qwen3"))
    c.family = LlamaFamily::qwen3;
  else
    NIBBLE_THROW("{}: architecture \"{}\" (model_type \"{}\") is not supported; supported: "
                 "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM",
                 hf.file.string(), a, hf.model_type);
  c.hidden = size_t(hf.hidden_size);
  c.ffn = size_t(hf.intermediate_size);
  c.layers = size_t(hf.num_hidden_layers);
  c.heads = size_t(hf.num_attention_heads);
  c.kv_heads = size_t(hf.num_key_value_heads);
  c.head_dim = size_t(hf.head_dim);
  c.vocab = size_t(hf.vocab_size);
  c.max_seq = size_t(hf.max_position_embeddings);
  c.norm_eps = float(hf.rms_norm_eps);
  c.rope_theta = hf.rope_theta;
  c.rope_interleaved = false;
  c.tied_embeddings = hf.tie_word_embeddings;
  c.bos_ids = hf.bos_token_ids;
  c.eos_ids = hf.eos_token_ids;
  switch (c.family) {
    case LlamaFamily::llama:
      c.rope_scaling = hf.rope_scaling;
      c.qkv_bias = c.o_bias = hf.attention_bias;
      break;
    case LlamaFamily::mistral:
      if (hf.sliding_window) c.sliding_window = size_t(*hf.sliding_window);
      break;
    case LlamaFamily::qwen2:
      c.qkv_bias = true;
      if (hf.sliding_window) c.sliding_window = size_t(*hf.sliding_window);
      break;
    case LlamaFamily::qwen3:
      c.qkv_bias = c.o_bias = hf.attention_bias;
      c.qk_norm = true;
      if (hf.sliding_window) c.sliding_window = size_t(*hf.sliding_window);
      break;
  }
  NIBBLE_CHECK(!hf.rope_scaling || c.family == LlamaFamily::llama,
               "{}: rope_scaling is only supported for LlamaForCausalLM", hf.file.string());
  return c;
}

HfConfig LlamaConfig::to_hf() const {
  NIBBLE_CHECK(!rope_interleaved,
               "a model with interleaved RoPE (llama2.c layout) has no Hugging Face config; "
               "convert its q/k rows first (nibble convert)");
  HfConfig hf;
  hf.architecture = architecture_of(family);
  hf.model_type = llama_family_name(family);
  hf.hidden_size = int64_t(hidden);
  hf.intermediate_size = int64_t(ffn);
  hf.num_hidden_layers = int64_t(layers);
  hf.num_attention_heads = int64_t(heads);
  hf.num_key_value_heads = int64_t(kv_heads);
  hf.head_dim = int64_t(head_dim);
  hf.vocab_size = int64_t(vocab);
  hf.max_position_embeddings = int64_t(max_seq);
  hf.rms_norm_eps = std::stod(fmt::format("{}", norm_eps));  // 1e-05, not 9.99999974e-06
  hf.rope_theta = rope_theta;
  hf.rope_scaling = rope_scaling;
  hf.tie_word_embeddings = tied_embeddings;
  hf.attention_bias = family == LlamaFamily::qwen2 ? false : qkv_bias;
  if (sliding_window) hf.sliding_window = int64_t(*sliding_window);
  hf.bos_token_ids = bos_ids;
  hf.eos_token_ids = eos_ids;
  hf.torch_dtype = "float32";
  return hf;
}

std::vector<float> LlamaConfig::rope_inv_freq() const {
  const size_t half = head_dim / 2;
  std::vector<float> inv(half);
  for (size_t i = 0; i < half; ++i) {
    // As llama2.c and transformers compute it: in F32, 1 / theta^(2i / d).
    inv[i] = 1.0f / std::pow(float(rope_theta), float(2 * i) / float(head_dim));
  }
  if (rope_scaling) {
    // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, and the band
    // between is interpolated (transformers' _compute_llama3_parameters).
    const RopeScalingLlama3& s = *rope_scaling;
    const double old_ctx = double(s.original_max_position_embeddings);
    const double low_wavelen = old_ctx / s.low_freq_factor;
    const double high_wavelen = old_ctx / s.high_freq_factor;
    for (float& f : inv) {
      const double wavelen = 2 * std::numbers::pi / f;
      double scaled = f;
      if (wavelen > low_wavelen) {
        scaled = f / s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        scaled = (1 - smooth) * f / s.factor + smooth * f;
      }
      f = float(scaled);
    }
  }
  return inv;
}

}  // namespace nibble

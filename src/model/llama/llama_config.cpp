#include "model/llama/llama_config.h"

#include <algorithm>
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

bool has_sliding_type(const HfConfig& hf) {
  return std::find(hf.layer_types.begin(), hf.layer_types.end(), "sliding_attention") !=
         hf.layer_types.end();
}

// Qwen2/3 (transformers' Qwen2Config / Qwen3Config): sliding_window applies only with
// use_sliding_window, to the layers layer_types marks "sliding_attention", or when layer_types
// is absent to the layers >= max_window_layers.
void qwen_windows(const HfConfig& hf, LlamaConfig& c) {
  const std::string file = hf.file.string();
  if (!hf.use_sliding_window) {
    NIBBLE_CHECK(!has_sliding_type(hf),
                 "{}: field \"layer_types\" marks sliding_attention layers but "
                 "\"use_sliding_window\" is false, so there is no window to apply",
                 file);
    return;
  }
  NIBBLE_CHECK(hf.sliding_window.has_value(),
               "{}: field \"use_sliding_window\" is true but \"sliding_window\" is null", file);
  c.layer_window.assign(c.layers, 0);
  for (size_t l = 0; l < c.layers; ++l) {
    const bool windowed = hf.layer_types.empty() ? l >= size_t(hf.max_window_layers)
                                                 : hf.layer_types[l] == "sliding_attention";
    if (windowed) c.layer_window[l] = size_t(*hf.sliding_window);
  }
  if (std::all_of(c.layer_window.begin(), c.layer_window.end(), [](size_t w) { return w == 0; }))
    c.layer_window.clear();
}

}  // namespace

void LlamaConfig::set_sliding_window(size_t window, size_t first_layer) {
  layer_window.assign(layers, 0);
  for (size_t l = first_layer; l < layers; ++l) layer_window[l] = window;
}

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
  const std::string file = hf.file.string();
  const char* arch = architecture_of(c.family);
  // transformers maps both names to nn.SiLU; the MLP computes SiLU(gate) * up.
  NIBBLE_CHECK(hf.hidden_act == "silu" || hf.hidden_act == "swish",
               "{}: field \"hidden_act\" is \"{}\"; supported: \"silu\" (or \"swish\", the same "
               "function): the MLP is SwiGLU",
               file, hf.hidden_act);
  NIBBLE_CHECK(!hf.mlp_bias,
               "{}: field \"mlp_bias\" is true; biases on gate_proj/up_proj/down_proj are not "
               "supported",
               file);
  NIBBLE_CHECK(!hf.rope_scaling || c.family == LlamaFamily::llama,
               "{}: field \"rope_scaling\" / \"rope_parameters\" asks for rope_type \"llama3\", "
               "which is only supported for LlamaForCausalLM, not {}",
               file, arch);
  switch (c.family) {
    case LlamaFamily::llama:
      c.rope_scaling = hf.rope_scaling;
      // LlamaAttention: attention_bias puts a bias on q_proj, k_proj, v_proj and o_proj.
      c.qkv_bias = c.o_bias = hf.attention_bias;
      NIBBLE_CHECK(!hf.use_sliding_window && !has_sliding_type(hf),
                   "{}: fields \"use_sliding_window\" / \"layer_types\" ask for sliding-window "
                   "attention, which LlamaForCausalLM does not have",
                   file);
      break;
    case LlamaFamily::mistral:
      NIBBLE_CHECK(!hf.attention_bias,
                   "{}: field \"attention_bias\" is true, but MistralForCausalLM has no attention "
                   "biases",
                   file);
      // MistralConfig does not read layer_types (transformers warns and windows every layer):
      // refused rather than guessed.
      NIBBLE_CHECK(hf.layer_types.empty(),
                   "{}: field \"layer_types\" is not supported for MistralForCausalLM (its window "
                   "applies to every layer)",
                   file);
      if (hf.sliding_window) c.set_sliding_window(size_t(*hf.sliding_window));
      break;
    case LlamaFamily::qwen2:
      // Qwen2Attention: q/k/v always carry a bias, o_proj never; attention_bias is no Qwen2
      // field, and true would ask for an o_proj bias it does not have.
      NIBBLE_CHECK(!hf.attention_bias,
                   "{}: field \"attention_bias\" is true, but Qwen2ForCausalLM has fixed biases "
                   "(q_proj, k_proj, v_proj; none on o_proj)",
                   file);
      c.qkv_bias = true;
      qwen_windows(hf, c);
      break;
    case LlamaFamily::qwen3:
      // Qwen3Attention: attention_bias puts a bias on q_proj, k_proj, v_proj and o_proj.
      c.qkv_bias = c.o_bias = hf.attention_bias;
      c.qk_norm = true;
      qwen_windows(hf, c);
      break;
  }
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
  switch (family) {
    case LlamaFamily::llama:
    case LlamaFamily::qwen3:
      NIBBLE_CHECK(qkv_bias == o_bias, "{}: attention_bias covers q, k, v and o together",
                   hf.architecture);
      hf.attention_bias = qkv_bias;
      break;
    case LlamaFamily::mistral:
      NIBBLE_CHECK(!qkv_bias && !o_bias, "MistralForCausalLM has no attention biases");
      break;
    case LlamaFamily::qwen2:
      NIBBLE_CHECK(qkv_bias && !o_bias,
                   "Qwen2ForCausalLM has biases on q, k, v (always) and none on o");
      break;
  }
  // Windows: one size, on the layers the family can name.
  size_t w = 0, first = layers;
  for (size_t l = 0; l < layers; ++l) {
    if (window(l) == 0) continue;
    NIBBLE_CHECK(w == 0 || window(l) == w,
                 "layers with different window sizes ({} and {}) have no Hugging Face config", w,
                 window(l));
    w = window(l);
    first = std::min(first, l);
  }
  bool suffix = true;
  for (size_t l = first; l < layers; ++l) suffix &= window(l) != 0;
  hf.use_sliding_window = false;
  hf.max_window_layers = int64_t(layers);
  switch (family) {
    case LlamaFamily::llama:
      NIBBLE_CHECK(w == 0, "LlamaForCausalLM has no sliding-window attention");
      break;
    case LlamaFamily::mistral:
      NIBBLE_CHECK(w == 0 || (first == 0 && suffix),
                   "MistralForCausalLM windows every layer or none");
      if (w) hf.sliding_window = int64_t(w);
      break;
    case LlamaFamily::qwen2:
    case LlamaFamily::qwen3:
      if (w == 0) break;
      hf.use_sliding_window = true;
      hf.sliding_window = int64_t(w);
      hf.max_window_layers = int64_t(first);
      if (!suffix)
        for (size_t l = 0; l < layers; ++l)
          hf.layer_types.push_back(window(l) ? "sliding_attention" : "full_attention");
      break;
  }
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

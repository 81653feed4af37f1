#include "format/hf_config.h"

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"

namespace nibble {
namespace {

using nlohmann::json;

struct Reader {
  const json& root;
  const std::filesystem::path& file;

  const json* get(const char* field) const {
    auto it = root.find(field);
    if (it == root.end() || it->is_null()) return nullptr;
    return &*it;
  }
  int64_t integer(const char* field, std::optional<int64_t> fallback = std::nullopt) const {
    const json* v = get(field);
    if (!v) {
      NIBBLE_CHECK(fallback.has_value(), "{}: required field \"{}\" is missing", file.string(),
                   field);
      return *fallback;
    }
    NIBBLE_CHECK(v->is_number_integer(), "{}: field \"{}\" must be an integer, got {}",
                 file.string(), field, v->dump());
    return v->get<int64_t>();
  }
  int64_t positive(const char* field, std::optional<int64_t> fallback = std::nullopt) const {
    const int64_t value = integer(field, fallback);
    NIBBLE_CHECK(value > 0, "{}: field \"{}\" must be positive, got {}", file.string(), field,
                 value);
    return value;
  }
  double number(const char* field, double fallback) const {
    const json* v = get(field);
    if (!v) return fallback;
    NIBBLE_CHECK(v->is_number(), "{}: field \"{}\" must be a number, got {}", file.string(), field,
                 v->dump());
    return v->get<double>();
  }
  bool boolean(const char* field, bool fallback) const {
    const json* v = get(field);
    if (!v) return fallback;
    NIBBLE_CHECK(v->is_boolean(), "{}: field \"{}\" must be true or false, got {}", file.string(),
                 field, v->dump());
    return v->get<bool>();
  }
  std::string string(const char* field) const {
    const json* v = get(field);
    if (!v) return {};
    NIBBLE_CHECK(v->is_string(), "{}: field \"{}\" must be a string, got {}", file.string(), field,
                 v->dump());
    return v->get<std::string>();
  }
  std::vector<int64_t> ids(const char* field) const {
    const json* v = get(field);
    if (!v) return {};
    if (v->is_number_integer()) return {v->get<int64_t>()};
    NIBBLE_CHECK(v->is_array(), "{}: field \"{}\" must be an integer or a list of integers, got {}",
                 file.string(), field, v->dump());
    std::vector<int64_t> out;
    for (const json& e : *v) {
      NIBBLE_CHECK(e.is_number_integer(), "{}: field \"{}\" must hold integers, got {}",
                   file.string(), field, e.dump());
      out.push_back(e.get<int64_t>());
    }
    return out;
  }
};

}  // namespace

HfConfig HfConfig::parse(const std::string& json_text, const std::filesystem::path& file) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    NIBBLE_THROW("{}: not valid JSON: {}", file.string(), e.what());
  }
  NIBBLE_CHECK(root.is_object(), "{}: expected a JSON object at the top level", file.string());
  const Reader r{root, file};
  HfConfig c;
  c.file = file;
  if (const json* a = r.get("architectures")) {
    NIBBLE_CHECK(a->is_array() && !a->empty() && (*a)[0].is_string(),
                 "{}: field \"architectures\" must be a non-empty list of strings, got {}",
                 file.string(), a->dump());
    c.architecture = (*a)[0].get<std::string>();
  }
  c.model_type = r.string("model_type");
  NIBBLE_CHECK(!c.architecture.empty() || !c.model_type.empty(),
               "{}: neither \"architectures\" nor \"model_type\" is given", file.string());
  c.hidden_size = r.positive("hidden_size");
  c.intermediate_size = r.positive("intermediate_size");
  c.num_hidden_layers = r.positive("num_hidden_layers");
  c.num_attention_heads = r.positive("num_attention_heads");
  c.num_key_value_heads = r.positive("num_key_value_heads", c.num_attention_heads);
  NIBBLE_CHECK(c.num_attention_heads % c.num_key_value_heads == 0,
               "{}: field \"num_key_value_heads\" ({}) must divide \"num_attention_heads\" ({})",
               file.string(), c.num_key_value_heads, c.num_attention_heads);
  NIBBLE_CHECK(r.get("head_dim") || c.hidden_size % c.num_attention_heads == 0,
               "{}: \"hidden_size\" ({}) is not a multiple of \"num_attention_heads\" ({}) and "
               "no \"head_dim\" is given",
               file.string(), c.hidden_size, c.num_attention_heads);
  c.head_dim = r.positive("head_dim", c.hidden_size / c.num_attention_heads);
  NIBBLE_CHECK(c.head_dim % 2 == 0, "{}: field \"head_dim\" must be even for RoPE, got {}",
               file.string(), c.head_dim);
  c.vocab_size = r.positive("vocab_size");
  c.max_position_embeddings = r.positive("max_position_embeddings", 2048);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  NIBBLE_CHECK(c.rms_norm_eps > 0, "{}: field \"rms_norm_eps\" must be positive", file.string());
  c.rope_theta = r.number("rope_theta", 10000.0);
  NIBBLE_CHECK(c.rope_theta > 0, "{}: field \"rope_theta\" must be positive", file.string());
  if (const json* s = r.get("rope_scaling")) {
    NIBBLE_CHECK(s->is_object(), "{}: field \"rope_scaling\" must be an object, got {}",
                 file.string(), s->dump());
    const Reader sr{*s, file};
    std::string type = sr.string("rope_type");
    if (type.empty()) type = sr.string("type");
    if (type != "default") {
      NIBBLE_CHECK(type == "llama3",
                   "{}: field \"rope_scaling.rope_type\" is \"{}\"; supported: \"llama3\", "
                   "\"default\"",
                   file.string(), type);
      RopeScalingLlama3 l3;
      l3.factor = sr.number("factor", l3.factor);
      l3.low_freq_factor = sr.number("low_freq_factor", l3.low_freq_factor);
      l3.high_freq_factor = sr.number("high_freq_factor", l3.high_freq_factor);
      l3.original_max_position_embeddings =
          sr.positive("original_max_position_embeddings", l3.original_max_position_embeddings);
      NIBBLE_CHECK(l3.factor > 0 && l3.high_freq_factor > l3.low_freq_factor,
                   "{}: field \"rope_scaling\" needs factor > 0 and high_freq_factor > "
                   "low_freq_factor",
                   file.string());
      c.rope_scaling = l3;
    }
  }
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.attention_bias = r.boolean("attention_bias", false);
  const bool uses_window =
      c.model_type == "mistral" || r.boolean("use_sliding_window", false);
  if (uses_window && r.get("sliding_window")) c.sliding_window = r.positive("sliding_window");
  c.bos_token_ids = r.ids("bos_token_id");
  c.eos_token_ids = r.ids("eos_token_id");
  c.torch_dtype = r.string("torch_dtype");
  if (c.torch_dtype.empty()) c.torch_dtype = r.string("dtype");
  return c;
}

HfConfig HfConfig::load(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  NIBBLE_CHECK(in.good(), "{}: cannot open config.json", file.string());
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), file);
}

std::string HfConfig::to_json() const {
  json j;
  j["architectures"] = json::array({architecture});
  j["model_type"] = model_type;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["vocab_size"] = vocab_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (rope_scaling) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", rope_scaling->factor},
                         {"low_freq_factor", rope_scaling->low_freq_factor},
                         {"high_freq_factor", rope_scaling->high_freq_factor},
                         {"original_max_position_embeddings",
                          rope_scaling->original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["tie_word_embeddings"] = tie_word_embeddings;
  if (model_type == "llama") j["attention_bias"] = attention_bias;
  if (model_type == "llama") j["mlp_bias"] = false;
  if (model_type == "mistral") {
    if (sliding_window) j["sliding_window"] = *sliding_window;
    else j["sliding_window"] = nullptr;
  }
  if (model_type == "qwen2" || model_type == "qwen3") {
    j["use_sliding_window"] = false;
    if (model_type == "qwen3") j["attention_bias"] = attention_bias;
  }
  j["hidden_act"] = "silu";
  auto ids = [](const std::vector<int64_t>& v) -> json {
    if (v.empty()) return nullptr;
    if (v.size() == 1) return v[0];
    return v;
  };
  j["bos_token_id"] = ids(bos_token_ids);
  j["eos_token_id"] = ids(eos_token_ids);
  if (!torch_dtype.empty()) j["torch_dtype"] = torch_dtype;
  return j.dump(2) + "\n";
}

}  // namespace nibble

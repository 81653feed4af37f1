#include "format/hf_config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
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

bool is_family(const HfConfig& c, const char* model_type, const char* architecture) {
  return c.model_type == model_type || c.architecture == architecture;
}

// One RoPE object (rope_parameters or rope_scaling) as read.
struct RopeSpec {
  std::string type;             // "default" or "llama3"
  std::optional<double> theta;  // rope_parameters.rope_theta
  std::optional<RopeScalingLlama3> llama3;
};

// Parses `obj`, the value of `field` ("rope_parameters" or "rope_scaling"). Every key must be one
// the type uses: a key Nibble would not apply is an error, never ignored.
RopeSpec parse_rope(const json& obj, const std::string& field, const std::filesystem::path& file) {
  NIBBLE_CHECK(obj.is_object(), "{}: field \"{}\" must be an object, got {}", file.string(), field,
               obj.dump());
  for (const auto& [key, value] : obj.items())
    NIBBLE_CHECK(!value.is_object(),
                 "{}: field \"{}.{}\" is an object: RoPE parameters per layer type are not "
                 "supported",
                 file.string(), field, key);
  const Reader r{obj, file};
  RopeSpec spec;
  const std::string rope_type = r.string("rope_type"), type = r.string("type");
  NIBBLE_CHECK(rope_type.empty() || type.empty() || rope_type == type,
               "{}: fields \"{}.rope_type\" (\"{}\") and \"{}.type\" (\"{}\") disagree",
               file.string(), field, rope_type, field, type);
  spec.type = !rope_type.empty() ? rope_type : !type.empty() ? type : "default";
  NIBBLE_CHECK(spec.type == "default" || spec.type == "llama3",
               "{}: field \"{}.rope_type\" is \"{}\"; supported: \"default\", \"llama3\"",
               file.string(), field, spec.type);
  std::vector<std::string> allowed = {"rope_type", "type", "partial_rotary_factor"};
  if (field == "rope_parameters") allowed.push_back("rope_theta");
  if (spec.type == "llama3")
    for (const char* k : {"factor", "low_freq_factor", "high_freq_factor",
                          "original_max_position_embeddings"})
      allowed.push_back(k);
  for (const auto& [key, value] : obj.items()) {
    if (value.is_null()) continue;
    NIBBLE_CHECK(std::find(allowed.begin(), allowed.end(), key) != allowed.end(),
                 "{}: field \"{}.{}\" is not supported for rope_type \"{}\" (Nibble reads: {})",
                 file.string(), field, key, spec.type, fmt::join(allowed, ", "));
  }
  NIBBLE_CHECK(r.number("partial_rotary_factor", 1.0) == 1.0,
               "{}: field \"{}.partial_rotary_factor\" must be 1 (RoPE over the whole head), got {}",
               file.string(), field, obj["partial_rotary_factor"].dump());
  if (r.get("rope_theta")) {
    spec.theta = r.number("rope_theta", 0);
    NIBBLE_CHECK(*spec.theta > 0, "{}: field \"{}.rope_theta\" must be positive", file.string(),
                 field);
  }
  if (spec.type == "llama3") {
    RopeScalingLlama3 l3;
    l3.factor = r.number("factor", l3.factor);
    l3.low_freq_factor = r.number("low_freq_factor", l3.low_freq_factor);
    l3.high_freq_factor = r.number("high_freq_factor", l3.high_freq_factor);
    l3.original_max_position_embeddings =
        r.positive("original_max_position_embeddings", l3.original_max_position_embeddings);
    NIBBLE_CHECK(l3.factor > 0 && l3.high_freq_factor > l3.low_freq_factor,
                 "{}: field \"{}\" needs factor > 0 and high_freq_factor > low_freq_factor",
                 file.string(), field);
    spec.llama3 = l3;
  }
  return spec;
}

bool same(const std::optional<RopeScalingLlama3>& a, const std::optional<RopeScalingLlama3>& b) {
  if (!a || !b) return !a && !b;
  return a->factor == b->factor && a->low_freq_factor == b->low_freq_factor &&
         a->high_freq_factor == b->high_freq_factor &&
         a->original_max_position_embeddings == b->original_max_position_embeddings;
}

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
  // RoPE: transformers-5 rope_parameters, the legacy rope_theta + rope_scaling, or both (then
  // they must say the same).
  std::optional<RopeSpec> params, legacy;
  if (const json* p = r.get("rope_parameters")) params = parse_rope(*p, "rope_parameters", file);
  if (const json* s = r.get("rope_scaling")) legacy = parse_rope(*s, "rope_scaling", file);
  const std::optional<double> top_theta =
      r.get("rope_theta") ? std::optional<double>(r.number("rope_theta", 0)) : std::nullopt;
  NIBBLE_CHECK(!top_theta || *top_theta > 0, "{}: field \"rope_theta\" must be positive",
               file.string());
  if (params && params->theta && top_theta)
    NIBBLE_CHECK(*params->theta == *top_theta,
                 "{}: fields \"rope_parameters.rope_theta\" ({}) and \"rope_theta\" ({}) disagree",
                 file.string(), *params->theta, *top_theta);
  if (params && legacy)
    NIBBLE_CHECK(params->type == legacy->type && same(params->llama3, legacy->llama3),
                 "{}: fields \"rope_parameters\" and \"rope_scaling\" disagree (rope_type \"{}\" "
                 "vs \"{}\"); give one of them",
                 file.string(), params->type, legacy->type);
  c.rope_theta = params && params->theta ? *params->theta : top_theta.value_or(10000.0);
  if (params) c.rope_scaling = params->llama3;
  else if (legacy) c.rope_scaling = legacy->llama3;
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.hidden_act = r.string("hidden_act");
  if (c.hidden_act.empty()) c.hidden_act = "silu";
  c.mlp_bias = r.boolean("mlp_bias", false);
  c.attention_bias = r.boolean("attention_bias", false);
  // Sliding window: absent means transformers' default (4096 for the families that have one),
  // null means none.
  const bool has_window = is_family(c, "mistral", "MistralForCausalLM") ||
                          is_family(c, "qwen2", "Qwen2ForCausalLM") ||
                          is_family(c, "qwen3", "Qwen3ForCausalLM");
  if (r.get("sliding_window"))
    c.sliding_window = r.positive("sliding_window");
  else if (!root.contains("sliding_window") && has_window)
    c.sliding_window = 4096;
  c.use_sliding_window = r.boolean("use_sliding_window", false);
  c.max_window_layers = r.integer("max_window_layers", 28);
  NIBBLE_CHECK(c.max_window_layers >= 0, "{}: field \"max_window_layers\" must be >= 0, got {}",
               file.string(), c.max_window_layers);
  if (const json* t = r.get("layer_types")) {
    NIBBLE_CHECK(t->is_array() && t->size() == size_t(c.num_hidden_layers),
                 "{}: field \"layer_types\" must be a list of {} strings (one per layer), got {}",
                 file.string(), c.num_hidden_layers, t->dump());
    for (const json& e : *t) {
      NIBBLE_CHECK(e.is_string() && (e == "full_attention" || e == "sliding_attention"),
                   "{}: field \"layer_types\" holds {}; supported: \"full_attention\", "
                   "\"sliding_attention\"",
                   file.string(), e.dump());
      c.layer_types.push_back(e.get<std::string>());
    }
  }
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
  if (model_type == "llama") j["mlp_bias"] = mlp_bias;
  const auto window = [this]() -> json {
    if (sliding_window) return *sliding_window;
    return nullptr;
  };
  if (model_type == "mistral") j["sliding_window"] = window();
  if (model_type == "qwen2" || model_type == "qwen3") {
    j["use_sliding_window"] = use_sliding_window;
    j["sliding_window"] = window();
    j["max_window_layers"] = max_window_layers;
    if (model_type == "qwen3") j["attention_bias"] = attention_bias;
  }
  if (!layer_types.empty()) j["layer_types"] = layer_types;
  j["hidden_act"] = hidden_act;
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

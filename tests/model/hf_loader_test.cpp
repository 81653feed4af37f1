// The Hugging Face load path on a real model: stories260K converted by convert_llama2c, read
// back through safetensors + config.json, gives llama2.c's greedy text and logits; the
// tokenizer.json written for it is a complete Llama-2-style BPE; config.json errors name the
// field.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "base/error.h"
#include "format/hf_config.h"
#include "model/llama/llama2c.h"
#include "model/llama/llama_config.h"
#include "model/llama2c_encoder.h"
#include "model/model_loader.h"
#include "test_files.h"

namespace nibble {
namespace {

namespace fs = std::filesystem;
const std::string kDir = std::string(NIBBLE_SOURCE_DIR) + "/models/stories260K";

fs::path fresh_dir(const std::string& name) {
  const fs::path p = fs::path(NIBBLE_BINARY_DIR) / "test_tmp" /
                     (name + "-" + std::to_string(std::random_device{}()));
  fs::remove_all(p);
  return p;
}

using nibble::test::read_text;

TEST(HfLoader, ConvertedStoriesMatchesLlama2cLogits) {
  const fs::path out = fresh_dir("stories-hf");
  convert_llama2c(kDir + "/stories260K.bin", kDir + "/tok512.bin", out);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  const HfConfig hf = HfConfig::load(out / "config.json");
  EXPECT_EQ(hf.architecture, "LlamaForCausalLM");
  EXPECT_EQ(hf.intermediate_size, 172);
  EXPECT_TRUE(hf.tie_word_embeddings);

  ModelLoadOptions fp;
  fp.mxfp4_layers = "none";
  const LoadedModel loaded = load_model(out, fp);
  const Llama2cModel raw = read_llama2c(kDir + "/stories260K.bin", false);
  auto direct = LlamaModel::build(raw.config, *raw.tensors, fp);
  std::mt19937 rng(std::random_device{}());
  std::vector<int32_t> tokens(24);
  for (auto& t : tokens) t = int32_t(rng() % 512);
  std::vector<float> a(tokens.size() * 512, NAN), b(tokens.size() * 512, NAN);
  KvCache ca = loaded.model->make_cache(32), cb = direct->make_cache(32);
  loaded.model->forward(tokens, ca, a.data(), true);
  direct->forward(tokens, cb, b.data(), true);
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(std::isfinite(a[i])) << i;
    ASSERT_NEAR(a[i], b[i], 1e-4) << i;
  }
  fs::remove_all(out);
}

TEST(HfLoader, TokenizerJsonIsLlama2StyleBpe) {
  const fs::path out = fresh_dir("stories-tok");
  convert_llama2c(kDir + "/stories260K.bin", kDir + "/tok512.bin", out);
  const auto j = nlohmann::json::parse(read_text(out / "tokenizer.json"));
  EXPECT_EQ(j["model"]["type"], "BPE");
  EXPECT_EQ(j["model"]["byte_fallback"], true);
  EXPECT_EQ(j["model"]["vocab"].size(), 512u);
  EXPECT_EQ(j["model"]["vocab"]["<s>"], 1);
  EXPECT_EQ(j["model"]["vocab"]["<0x0A>"], 13);
  EXPECT_EQ(j["model"]["vocab"]["\xe2\x96\x81t"], 259);  // llama2.c " t"
  EXPECT_GT(j["model"]["merges"].size(), 100u);
  // The best merge is the piece with the highest score.
  EXPECT_EQ(j["model"]["merges"][0], "\xe2\x96\x81 t");
  const auto c = nlohmann::json::parse(read_text(out / "tokenizer_config.json"));
  EXPECT_EQ(c["add_bos_token"], true);
  fs::remove_all(out);
}

TEST(HfLoader, CachedConversionOfALlama2cDirectory) {
  const fs::path cache = fresh_dir("cache");
  setenv("NIBBLE_CACHE_DIR", cache.c_str(), 1);
  std::string origin;
  const fs::path dir = resolve_model_directory(kDir, &origin);
  // First time: a conversion into the (fresh) cache, and the origin says so.
  EXPECT_EQ(origin.rfind("converted ", 0), 0u) << origin;
  EXPECT_NE(origin.find("into cache " + dir.string()), std::string::npos) << origin;
  EXPECT_EQ(origin.find("using cached"), std::string::npos) << origin;
  EXPECT_TRUE(fs::exists(dir / "model.safetensors"));
  const auto stamp = fs::last_write_time(dir / "model.safetensors");
  // Second time: the cache, not converted again, and the origin says that instead.
  EXPECT_EQ(resolve_model_directory(kDir, &origin), dir);
  EXPECT_EQ(origin.rfind("using cached conversion " + dir.string(), 0), 0u) << origin;
  EXPECT_EQ(origin.find("converted"), std::string::npos) << origin;
  EXPECT_EQ(fs::last_write_time(dir / "model.safetensors"), stamp);
  unsetenv("NIBBLE_CACHE_DIR");
  fs::remove_all(cache);
}

// The cache key covers the converter's format version as well as both files: a directory
// written by another version of `nibble convert` is not the one loaded.
TEST(HfLoader, ConversionCacheKeyHasTheFormatVersion) {
  const Llama2cFiles files = find_llama2c_files(kDir);
  const uint64_t key = conversion_cache_key(files, kConvertFormatVersion);
  EXPECT_EQ(conversion_cache_key(files, kConvertFormatVersion), key);  // deterministic
  EXPECT_NE(conversion_cache_key(files, kConvertFormatVersion + 1), key);
  EXPECT_NE(conversion_cache_key(files, kConvertFormatVersion - 1), key);
  Llama2cFiles model_only = files;
  model_only.tokenizer.clear();
  EXPECT_NE(conversion_cache_key(model_only, kConvertFormatVersion), key);  // tokenizer counts
  const fs::path cache = fresh_dir("cache-key");
  setenv("NIBBLE_CACHE_DIR", cache.c_str(), 1);
  const fs::path dir = conversion_cache_directory(files);
  EXPECT_EQ(dir, cache / fmt::format("stories260K-hf-{:016x}", key));
  std::string origin;
  EXPECT_EQ(resolve_model_directory(kDir, &origin), dir);
  unsetenv("NIBBLE_CACHE_DIR");
  fs::remove_all(cache);
}

TEST(HfConfigParse, ErrorsNameTheField) {
  auto message = [](const std::string& text) {
    try {
      HfConfig::parse(text, "x/config.json");
    } catch (const Error& e) {
      return e.message();
    }
    return std::string("no error");
  };
  const std::string base =
      R"("architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "vocab_size": 32)";
  EXPECT_NE(message("{" + base + "}").find("\"intermediate_size\" is missing"), std::string::npos);
  EXPECT_NE(message("{" + base + R"(, "intermediate_size": "big"})").find("\"intermediate_size\" must be an integer"),
            std::string::npos);
  EXPECT_NE(message("{" + base + R"(, "intermediate_size": 8, "num_key_value_heads": 3})").find("num_key_value_heads"),
            std::string::npos);
  EXPECT_NE(message("{" + base + R"(, "intermediate_size": 8, "rope_scaling": {"rope_type": "yarn"}})")
                .find("rope_scaling.rope_type"),
            std::string::npos);
  EXPECT_NE(message("[1]").find("x/config.json"), std::string::npos);
  const HfConfig ok = HfConfig::parse("{" + base + R"(, "intermediate_size": 8,
      "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})",
                                      "x/config.json");
  ASSERT_TRUE(ok.rope_scaling.has_value());
  EXPECT_EQ(ok.rope_scaling->factor, 32.0);
  EXPECT_EQ(ok.num_key_value_heads, 4);
  EXPECT_EQ(ok.head_dim, 16);
}

// The published config.json files of real checkpoints (tests/data/hf_configs/README.md): what
// the parser and the family mapping make of them.
const fs::path kConfigs = fs::path(NIBBLE_SOURCE_DIR) / "tests/data/hf_configs";

TEST(HfConfigParse, Llama32_1B) {
  for (const char* name : {"llama-3.2-1b.json", "llama-3.2-1b-transformers5.json"}) {
    SCOPED_TRACE(name);
    const HfConfig hf = HfConfig::load(kConfigs / name);
    EXPECT_EQ(hf.architecture, "LlamaForCausalLM");
    EXPECT_EQ(hf.hidden_size, 2048);
    EXPECT_EQ(hf.intermediate_size, 8192);
    EXPECT_EQ(hf.num_hidden_layers, 16);
    EXPECT_EQ(hf.num_attention_heads, 32);
    EXPECT_EQ(hf.num_key_value_heads, 8);
    EXPECT_EQ(hf.head_dim, 64);
    EXPECT_EQ(hf.vocab_size, 128256);
    EXPECT_EQ(hf.max_position_embeddings, 131072);
    EXPECT_EQ(hf.rms_norm_eps, 1e-5);
    EXPECT_EQ(hf.rope_theta, 500000.0);  // transformers 5: inside rope_parameters
    ASSERT_TRUE(hf.rope_scaling.has_value());
    EXPECT_EQ(hf.rope_scaling->factor, 32.0);
    EXPECT_EQ(hf.rope_scaling->low_freq_factor, 1.0);
    EXPECT_EQ(hf.rope_scaling->high_freq_factor, 4.0);
    EXPECT_EQ(hf.rope_scaling->original_max_position_embeddings, 8192);
    EXPECT_TRUE(hf.tie_word_embeddings);
    EXPECT_EQ(hf.bos_token_ids, std::vector<int64_t>{128000});
    EXPECT_EQ(hf.eos_token_ids, std::vector<int64_t>{128001});
    EXPECT_EQ(hf.torch_dtype, "bfloat16");
    const LlamaConfig c = LlamaConfig::from_hf(hf);
    EXPECT_EQ(c.family, LlamaFamily::llama);
    EXPECT_FALSE(c.qkv_bias);
    EXPECT_FALSE(c.o_bias);
    EXPECT_TRUE(c.layer_window.empty());
    // llama3 scaling read, not ignored: the longest wavelengths are slowed by 32.
    const std::vector<float> inv = c.rope_inv_freq();
    ASSERT_EQ(inv.size(), 32u);
    EXPECT_FLOAT_EQ(inv[0], 1.0f);
    EXPECT_NEAR(inv[31], 1.0f / std::pow(500000.0f, 62.0f / 64.0f) / 32.0f, 1e-12);
  }
}

TEST(HfConfigParse, Llama2_7B) {
  const HfConfig hf = HfConfig::load(kConfigs / "llama-2-7b.json");
  EXPECT_EQ(hf.hidden_size, 4096);
  EXPECT_EQ(hf.intermediate_size, 11008);
  EXPECT_EQ(hf.num_hidden_layers, 32);
  EXPECT_EQ(hf.num_key_value_heads, 32);
  EXPECT_EQ(hf.head_dim, 128);  // hidden / heads
  EXPECT_EQ(hf.vocab_size, 32000);
  EXPECT_EQ(hf.max_position_embeddings, 4096);
  EXPECT_EQ(hf.rope_theta, 10000.0);  // the default: the file gives none
  EXPECT_FALSE(hf.rope_scaling.has_value());
  EXPECT_FALSE(hf.tie_word_embeddings);
  EXPECT_EQ(hf.torch_dtype, "float16");
  const LlamaConfig c = LlamaConfig::from_hf(hf);
  EXPECT_EQ(c.family, LlamaFamily::llama);
  EXPECT_EQ(c.norm_eps, 1e-5f);
  EXPECT_TRUE(c.layer_window.empty());
}

TEST(HfConfigParse, Mistral7B) {
  const HfConfig hf = HfConfig::load(kConfigs / "mistral-7b-v0.1.json");
  EXPECT_EQ(hf.architecture, "MistralForCausalLM");
  EXPECT_EQ(hf.intermediate_size, 14336);
  EXPECT_EQ(hf.num_key_value_heads, 8);
  EXPECT_EQ(hf.head_dim, 128);
  EXPECT_EQ(hf.max_position_embeddings, 32768);
  EXPECT_EQ(hf.sliding_window, 4096);
  const LlamaConfig c = LlamaConfig::from_hf(hf);
  EXPECT_EQ(c.family, LlamaFamily::mistral);
  EXPECT_EQ(c.layer_window, std::vector<size_t>(32, 4096));  // every layer
  EXPECT_FALSE(c.qkv_bias);
}

TEST(HfConfigParse, Qwen25_05B) {
  const HfConfig hf = HfConfig::load(kConfigs / "qwen2.5-0.5b.json");
  EXPECT_EQ(hf.architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(hf.hidden_size, 896);
  EXPECT_EQ(hf.intermediate_size, 4864);
  EXPECT_EQ(hf.num_hidden_layers, 24);
  EXPECT_EQ(hf.num_attention_heads, 14);
  EXPECT_EQ(hf.num_key_value_heads, 2);
  EXPECT_EQ(hf.head_dim, 64);
  EXPECT_EQ(hf.vocab_size, 151936);
  EXPECT_EQ(hf.rms_norm_eps, 1e-6);
  EXPECT_EQ(hf.rope_theta, 1000000.0);
  EXPECT_TRUE(hf.tie_word_embeddings);
  EXPECT_FALSE(hf.use_sliding_window);
  EXPECT_EQ(hf.sliding_window, 32768);
  EXPECT_EQ(hf.max_window_layers, 24);
  EXPECT_EQ(hf.eos_token_ids, std::vector<int64_t>{151643});
  const LlamaConfig c = LlamaConfig::from_hf(hf);
  EXPECT_EQ(c.family, LlamaFamily::qwen2);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_TRUE(c.layer_window.empty());  // use_sliding_window false: sliding_window not applied
}

TEST(HfConfigParse, Qwen3_06B) {
  const HfConfig hf = HfConfig::load(kConfigs / "qwen3-0.6b.json");
  EXPECT_EQ(hf.architecture, "Qwen3ForCausalLM");
  EXPECT_EQ(hf.hidden_size, 1024);
  EXPECT_EQ(hf.num_attention_heads, 16);
  EXPECT_EQ(hf.num_key_value_heads, 8);
  EXPECT_EQ(hf.head_dim, 128);  // given, not hidden / heads (64)
  EXPECT_EQ(hf.intermediate_size, 3072);
  EXPECT_EQ(hf.num_hidden_layers, 28);
  EXPECT_EQ(hf.max_position_embeddings, 40960);
  EXPECT_EQ(hf.rope_theta, 1000000.0);  // an integer in the file
  EXPECT_FALSE(hf.sliding_window.has_value());  // null
  EXPECT_EQ(hf.eos_token_ids, std::vector<int64_t>{151645});
  const LlamaConfig c = LlamaConfig::from_hf(hf);
  EXPECT_EQ(c.family, LlamaFamily::qwen3);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.q_width(), 2048u);
  EXPECT_TRUE(c.layer_window.empty());
}

// A field Nibble cannot honour is refused naming the file and the field, never ignored.
std::string from_hf_error(const std::string& text) {
  try {
    LlamaConfig::from_hf(HfConfig::parse(text, "m/config.json"));
  } catch (const Error& e) {
    return e.message();
  }
  return "no error";
}

std::string config_text(const std::string& arch, const std::string& extra) {
  return R"({"architectures": [")" + arch + R"("], "hidden_size": 64, "intermediate_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 32)" +
         (extra.empty() ? "" : ", " + extra) + "}";
}

TEST(HfConfigParse, UnsupportedFieldsAreRefused) {
  struct Refusal {
    const char* arch;
    const char* extra;
    const char* field;  // must appear in the message
  };
  const Refusal cases[] = {
      {"LlamaForCausalLM", R"("hidden_act": "gelu")", "\"hidden_act\" is \"gelu\""},
      {"Qwen2ForCausalLM", R"("hidden_act": "gelu_pytorch_tanh")", "\"hidden_act\""},
      {"LlamaForCausalLM", R"("mlp_bias": true)", "\"mlp_bias\""},
      {"MistralForCausalLM", R"("attention_bias": true)", "\"attention_bias\""},
      {"Qwen2ForCausalLM", R"("attention_bias": true)", "\"attention_bias\""},
      {"LlamaForCausalLM", R"("rope_scaling": {"rope_type": "yarn", "factor": 4.0})",
       "\"rope_scaling.rope_type\" is \"yarn\""},
      {"LlamaForCausalLM", R"("rope_scaling": {"type": "linear", "factor": 2.0})",
       "\"rope_scaling.rope_type\" is \"linear\""},
      {"LlamaForCausalLM", R"("rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4})",
       "\"rope_parameters.rope_type\" is \"dynamic\""},
      {"LlamaForCausalLM", R"("rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "factor": 2.0})",
       "\"rope_parameters.factor\""},
      {"LlamaForCausalLM", R"("rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5})",
       "\"rope_parameters.partial_rotary_factor\""},
      {"LlamaForCausalLM",
       R"("rope_parameters": {"full_attention": {"rope_type": "default"}, "sliding_attention": {"rope_type": "default"}})",
       "\"rope_parameters.full_attention\""},
      {"LlamaForCausalLM", R"("rope_theta": 10000.0, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0})",
       "\"rope_parameters.rope_theta\""},
      {"LlamaForCausalLM",
       R"("rope_parameters": {"rope_type": "llama3", "factor": 8.0}, "rope_scaling": {"rope_type": "default"})",
       "\"rope_parameters\" and \"rope_scaling\" disagree"},
      {"Qwen2ForCausalLM", R"("rope_scaling": {"rope_type": "llama3", "factor": 8.0})", "\"rope_scaling\""},
      {"LlamaForCausalLM", R"("use_sliding_window": true, "sliding_window": 16)", "\"use_sliding_window\""},
      {"MistralForCausalLM", R"("layer_types": ["full_attention", "sliding_attention"])", "\"layer_types\""},
      {"Qwen3ForCausalLM", R"("layer_types": ["full_attention", "sliding_attention"])",
       "\"use_sliding_window\" is false"},
      {"Qwen3ForCausalLM", R"("use_sliding_window": true, "layer_types": ["full_attention"])", "\"layer_types\""},
      {"Qwen3ForCausalLM", R"("use_sliding_window": true, "layer_types": ["full_attention", "chunked_attention"])",
       "\"layer_types\" holds \"chunked_attention\""},
      {"Qwen2ForCausalLM", R"("use_sliding_window": true, "sliding_window": null)", "\"sliding_window\" is null"},
  };
  for (const Refusal& r : cases) {
    SCOPED_TRACE(std::string(r.arch) + " " + r.extra);
    const std::string message = from_hf_error(config_text(r.arch, r.extra));
    EXPECT_NE(message.find("m/config.json"), std::string::npos) << message;
    EXPECT_NE(message.find(r.field), std::string::npos) << message;
  }
  // What transformers treats as the same thing is accepted.
  EXPECT_EQ(from_hf_error(config_text("LlamaForCausalLM", R"("hidden_act": "swish")")), "no error");
  EXPECT_EQ(from_hf_error(config_text("LlamaForCausalLM", R"("rope_scaling": {"type": "default"})")), "no error");
  EXPECT_EQ(from_hf_error(config_text("LlamaForCausalLM",
                                      R"("rope_theta": 5e5, "rope_parameters": {"rope_type": "default", "rope_theta": 5e5})")),
            "no error");
  EXPECT_EQ(from_hf_error(config_text("Qwen3ForCausalLM", R"("layer_types": ["full_attention", "full_attention"])")),
            "no error");
}

// Llama's attention_bias is q, k, v and o biases, all read.
TEST(HfConfigParse, LlamaAttentionBiasIsQkvAndO) {
  const LlamaConfig c = LlamaConfig::from_hf(
      HfConfig::parse(config_text("LlamaForCausalLM", R"("attention_bias": true)"), "m/config.json"));
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.o_bias);
  const LlamaConfig q3 = LlamaConfig::from_hf(
      HfConfig::parse(config_text("Qwen3ForCausalLM", R"("attention_bias": true)"), "m/config.json"));
  EXPECT_TRUE(q3.qkv_bias);
  EXPECT_TRUE(q3.o_bias);
  // The config written for it says the same, and reads back the same.
  const LlamaConfig back =
      LlamaConfig::from_hf(HfConfig::parse(c.to_hf().to_json(), "m/config.json"));
  EXPECT_TRUE(back.qkv_bias && back.o_bias);
}

// Qwen2/3 windows per layer as transformers' Qwen2Config decides them.
TEST(HfConfigParse, QwenSlidingWindowPerLayer) {
  auto windows = [](const std::string& arch, const std::string& extra) {
    return LlamaConfig::from_hf(HfConfig::parse(config_text(arch, extra), "m/config.json"))
        .layer_window;
  };
  using W = std::vector<size_t>;
  // Layers >= max_window_layers.
  EXPECT_EQ(windows("Qwen2ForCausalLM", R"("use_sliding_window": true, "sliding_window": 16, "max_window_layers": 1)"),
            (W{0, 16}));
  EXPECT_EQ(windows("Qwen3ForCausalLM", R"("use_sliding_window": true, "sliding_window": 16, "max_window_layers": 0)"),
            (W{16, 16}));
  // max_window_layers defaults to 28: no layer of a 2-layer model.
  EXPECT_EQ(windows("Qwen2ForCausalLM", R"("use_sliding_window": true, "sliding_window": 16)"), W{});
  // sliding_window defaults to 4096.
  EXPECT_EQ(windows("Qwen2ForCausalLM", R"("use_sliding_window": true, "max_window_layers": 0)"),
            (W{4096, 4096}));
  // layer_types decides when given, whatever max_window_layers says.
  EXPECT_EQ(windows("Qwen3ForCausalLM", R"("use_sliding_window": true, "sliding_window": 16, "max_window_layers": 1,
                                         "layer_types": ["sliding_attention", "full_attention"])"),
            (W{16, 0}));
  // Off: no window, whatever the other fields say.
  EXPECT_EQ(windows("Qwen2ForCausalLM", R"("use_sliding_window": false, "sliding_window": 16, "max_window_layers": 0)"),
            W{});
  // Mistral: every layer; 4096 when the field is absent (transformers' default), none when null.
  EXPECT_EQ(windows("MistralForCausalLM", R"("sliding_window": 16)"), (W{16, 16}));
  EXPECT_EQ(windows("MistralForCausalLM", ""), (W{4096, 4096}));
  EXPECT_EQ(windows("MistralForCausalLM", R"("sliding_window": null)"), W{});

  // to_hf writes what reads back the same: a suffix as max_window_layers, else layer_types.
  for (const W& w : {W{0, 16}, W{16, 0}, W{16, 16}, W{}}) {
    LlamaConfig c = LlamaConfig::from_hf(HfConfig::parse(config_text("Qwen2ForCausalLM", ""), "m/config.json"));
    c.layer_window = w;
    const HfConfig hf = c.to_hf();
    EXPECT_EQ(hf.layer_types.empty(), w != (W{16, 0}));
    EXPECT_EQ(LlamaConfig::from_hf(HfConfig::parse(hf.to_json(), "m/config.json")).layer_window, w);
  }
}

TEST(HfLoader, MissingTensorIsNamed) {
  const fs::path out = fresh_dir("stories-broken");
  convert_llama2c(kDir + "/stories260K.bin", kDir + "/tok512.bin", out);
  // Rewrite config.json with one layer more than the checkpoint holds.
  HfConfig hf = HfConfig::load(out / "config.json");
  hf.num_hidden_layers = 6;
  std::ofstream(out / "config.json") << hf.to_json();
  try {
    load_model(out, ModelLoadOptions{});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("model.layers.5."), std::string::npos) << e.message();
  }
  fs::remove_all(out);
}

}  // namespace
}  // namespace nibble

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
#include "model/llama2c_encoder.h"
#include "model/model_loader.h"

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

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

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

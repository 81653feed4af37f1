// stories260K (a real trained llama2.c model, models/stories260K): the full-precision greedy
// text equals the reference C implementation's, the Hugging Face layout (rotate-half RoPE on
// permuted q/k rows) gives the same logits as llama2.c's interleaved layout, and MXFP4 at load
// keeps the tied classifier in full precision and pads K = 172.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include "base/error.h"
#include "model/llama/llama2c.h"
#include "model/llama/llama_model.h"
#include "model/sampler.h"
#include "model/llama2c_encoder.h"
#include "test_files.h"

namespace nibble {
namespace {

const std::string kDir = std::string(NIBBLE_SOURCE_DIR) + "/models/stories260K";

using nibble::test::read_text;

// run.c's generate loop: BOS + prompt, `steps` positions counting the prompt, stop at BOS.
std::string greedy(const LlamaModel& model, const Llama2cVocab& vocab, const std::string& prompt,
                   size_t steps) {
  const std::vector<int32_t> ids = test::llama2c_encode(vocab, prompt);
  KvCache cache = model.make_cache(steps);
  std::vector<float> logits(model.config().vocab);
  std::string text;
  int32_t token = ids[0];
  for (size_t pos = 0; pos < steps; ++pos) {
    model.forward(std::span<const int32_t>(&token, 1), cache, logits.data());
    const int32_t next = pos + 1 < ids.size() ? ids[pos + 1] : argmax(logits.data(), logits.size());
    if (next == 1) break;
    text += test::llama2c_decode(vocab, token, next);
    token = next;
  }
  return text;
}

ModelLoadOptions full_precision() {
  ModelLoadOptions o;
  o.mxfp4_layers = "none";
  return o;
}

TEST(Llama2c, GreedyMatchesReferenceImplementation) {
  const Llama2cModel ckpt = read_llama2c(kDir + "/stories260K.bin", /*hf_layout=*/false);
  EXPECT_EQ(ckpt.config.hidden, 64u);
  EXPECT_EQ(ckpt.config.ffn, 172u);
  EXPECT_TRUE(ckpt.config.tied_embeddings);
  const Llama2cVocab vocab = read_llama2c_tokenizer(kDir + "/tok512.bin", ckpt.config.vocab);
  auto model = LlamaModel::build(ckpt.config, *ckpt.tensors, full_precision());
  const std::string text = greedy(*model, vocab, "Once upon a time", 256);
  EXPECT_EQ(text + "\n", read_text(kDir + "/greedy_once_upon_a_time.txt"));
}

TEST(Llama2c, HuggingFaceLayoutGivesTheSameLogits) {
  const Llama2cModel raw = read_llama2c(kDir + "/stories260K.bin", false);
  const Llama2cModel hf = read_llama2c(kDir + "/stories260K.bin", true);
  EXPECT_TRUE(raw.config.rope_interleaved);
  EXPECT_FALSE(hf.config.rope_interleaved);
  // The permutation really moved rows (otherwise this test could not fail).
  const TensorView& a = raw.tensors->at("model.layers.0.self_attn.q_proj.weight");
  const TensorView& b = hf.tensors->at("model.layers.0.self_attn.q_proj.weight");
  EXPECT_NE(0, std::memcmp(a.data, b.data, a.nbytes));
  auto m_raw = LlamaModel::build(raw.config, *raw.tensors, full_precision());
  auto m_hf = LlamaModel::build(hf.config, *hf.tensors, full_precision());
  std::mt19937 rng(std::random_device{}());
  std::vector<int32_t> tokens(40);
  for (auto& t : tokens) t = int32_t(rng() % 512);
  const size_t V = 512;
  std::vector<float> la(tokens.size() * V, NAN), lb(tokens.size() * V, NAN);
  KvCache ca = m_raw->make_cache(64), cb = m_hf->make_cache(64);
  m_raw->forward(tokens, ca, la.data(), true);
  m_hf->forward(tokens, cb, lb.data(), true);
  double max_diff = 0;
  for (size_t i = 0; i < la.size(); ++i) {
    ASSERT_TRUE(std::isfinite(la[i]) && std::isfinite(lb[i])) << i;
    max_diff = std::max(max_diff, double(std::abs(la[i] - lb[i])));
  }
  EXPECT_LT(max_diff, 1e-4);
}

TEST(Llama2c, PrefillEqualsTokenByTokenDecode) {
  const Llama2cModel hf = read_llama2c(kDir + "/stories260K.bin", true);
  auto model = LlamaModel::build(hf.config, *hf.tensors, full_precision());
  std::mt19937 rng(std::random_device{}());
  std::vector<int32_t> tokens(33);
  for (auto& t : tokens) t = int32_t(rng() % 512);
  std::vector<float> all(tokens.size() * 512, NAN), one(512, NAN);
  KvCache a = model->make_cache(64), b = model->make_cache(64);
  model->forward(tokens, a, all.data(), true);
  for (size_t i = 0; i < tokens.size(); ++i) {
    model->forward(std::span<const int32_t>(&tokens[i], 1), b, one.data());
    for (size_t v = 0; v < 512; ++v)
      ASSERT_NEAR(all[i * 512 + v], one[v], 1e-4) << "token " << i << " logit " << v;
  }
  EXPECT_EQ(a.length(), tokens.size());
}

TEST(Llama2c, Mxfp4AllKeepsTiedClassifierAndPadsK) {
  const Llama2cModel hf = read_llama2c(kDir + "/stories260K.bin", true);
  ModelLoadOptions o;
  o.mxfp4_layers = "all";
  auto model = LlamaModel::build(hf.config, *hf.tensors, o);
  size_t mx = 0;
  for (const LinearPlanEntry& e : model->plan()) {
    if (e.role == LinearRole::lm_head) {
      EXPECT_FALSE(e.mxfp4);
      EXPECT_NE(e.reason.find("tied"), std::string::npos) << e.reason;
    } else {
      EXPECT_TRUE(e.mxfp4) << e.name << ": " << e.reason;
      ++mx;
    }
    if (e.role == LinearRole::down) {
      EXPECT_NE(e.reason.find("K = 172 zero-padded to 192"), std::string::npos) << e.reason;
    }
  }
  EXPECT_EQ(mx, 5u * 7u);
  const std::string summary = summarize_plan(model->plan());
  EXPECT_NE(summary.find("35 layers"), std::string::npos) << summary;
  EXPECT_NE(summary.find("tied"), std::string::npos) << summary;
  // It still tells a story (MXFP4 changes the text, not its language).
  const Llama2cVocab vocab = read_llama2c_tokenizer(kDir + "/tok512.bin", 512);
  const std::string text = greedy(*model, vocab, "Once upon a time", 64);
  EXPECT_EQ(text.rfind("Once upon a time", 0), 0u) << text;
  EXPECT_GT(text.size(), 100u) << text;
}

TEST(Llama2c, TruncatedFileIsRefusedWithTheSizes) {
  const std::string path = std::string(NIBBLE_BINARY_DIR) + "/truncated_stories.bin";
  const std::string bytes = read_text(kDir + "/stories260K.bin");
  std::ofstream(path, std::ios::binary) << bytes.substr(0, bytes.size() - 100);
  try {
    read_llama2c(path, true);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("needs"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("truncated_stories.bin"), std::string::npos) << e.message();
  }
}

}  // namespace
}  // namespace nibble

// `nibble inspect` on our output (both layouts), on the published gpt-oss layout and on plain
// BF16 checkpoints; bad input is a clear error.
#include <gtest/gtest.h>

#include "quantize_fixtures.h"

namespace nibble::testing_quant {
namespace {

json inspect(const fs::path& dir) {
  const RunResult r = run_nibble("inspect --json " + q(dir));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return json::parse(r.out);
}

const json* module(const json& j, const std::string& name) {
  for (const auto& m : j["modules"])
    if (m["module"] == name) return &m;
  return nullptr;
}

TEST(InspectCli, PlainBf16Checkpoint) {
  ScratchDir s;
  LlamaShape shape{2, 64, 128, 96};
  write_llama(s.path / "in", shape, LmHead::none, true);
  const json j = inspect(s.path / "in");
  EXPECT_EQ(j["modules"].size(), 1u + 2 * 7);
  const json* qp = module(j, "model.layers.1.self_attn.q_proj");
  ASSERT_NE(qp, nullptr);
  EXPECT_EQ((*qp)["format"], "BF16");
  EXPECT_EQ((*qp)["bytes"], 64 * 64 * 2);
  EXPECT_EQ(j["saved_bytes"], 0);
  EXPECT_EQ(j["quant_method"], "");
  EXPECT_NE(j["tied_embeddings"].get<std::string>().find("tie_word_embeddings: true"), std::string::npos);
  const RunResult text = run_nibble("inspect " + q(s.path / "in"));
  ASSERT_EQ(text.exit_code, 0);
  EXPECT_NE(text.out.find("LlamaForCausalLM"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("quantization: none recorded"), std::string::npos) << text.out;
}

TEST(InspectCli, OurOutputShowsFormatsSavingsSelectionAndGates) {
  ScratchDir s;
  write_llama(s.path / "in", {2, 64, 128, 96}, LmHead::separate, true);
  ASSERT_EQ(run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out") +
                       " --mxfp4-layers all --exclude '*.layers.0.*' -q")
                .exit_code,
            0);
  const json j = inspect(s.path / "out");
  const json* q1 = module(j, "model.layers.1.mlp.down_proj");
  ASSERT_NE(q1, nullptr);
  EXPECT_EQ((*q1)["format"], "MXFP4 (gpt-oss)");
  EXPECT_EQ((*q1)["shape"], json({64, 128}));
  EXPECT_EQ((*q1)["bytes"], 64 * 128 / 2 + 64 * 128 / 32);
  EXPECT_EQ((*module(j, "model.layers.0.mlp.down_proj"))["format"], "BF16");
  EXPECT_EQ((*module(j, "lm_head"))["format"], "BF16");  // tied: gate
  // 7 modules of layer 1 in MXFP4: saved = their BF16 bytes - MXFP4 bytes.
  const int64_t bf16 = 2 * (4 * 64 * 64 + 3 * 64 * 128);
  const int64_t mx = (4 * 64 * 64 + 3 * 64 * 128) * 17 / 32;
  EXPECT_EQ(j["saved_bytes"], bf16 - mx);
  EXPECT_EQ(j["quant_method"], "mxfp4");
  EXPECT_EQ(j["selection"]["mxfp4_layers"], "moe,qkv,o,mlp,lm_head");
  ASSERT_EQ(j["gates"].size(), 1u);
  EXPECT_NE(j["gates"][0].get<std::string>().find("tied_embeddings: lm_head"), std::string::npos);
  const RunResult text = run_nibble("inspect " + q(s.path / "out"));
  EXPECT_NE(text.out.find("--exclude '*.layers.0.*'"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("saved"), std::string::npos) << text.out;

  ASSERT_EQ(run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "ct") +
                       " --mxfp4-layers qkv --format compressed-tensors -q")
                .exit_code,
            0);
  const json c = inspect(s.path / "ct");
  EXPECT_EQ((*module(c, "model.layers.0.self_attn.v_proj"))["format"], "MXFP4 (compressed-tensors)");
  EXPECT_EQ((*module(c, "model.layers.0.self_attn.v_proj"))["shape"], json({64, 64}));
  EXPECT_EQ(c["quant_method"], "compressed-tensors");
}

TEST(InspectCli, PublishedGptOssLayout) {
  ScratchDir s;
  write_gpt_oss(s.path / "in", true, 2, 64, 96, 4);
  const json j = inspect(s.path / "in");
  const json* gu = module(j, "model.layers.1.mlp.experts.gate_up_proj");
  ASSERT_NE(gu, nullptr);
  EXPECT_EQ((*gu)["format"], "MXFP4 (gpt-oss)");
  EXPECT_EQ((*gu)["kind"], "moe");
  EXPECT_EQ((*gu)["shape"], json({4, 192, 64}));
  EXPECT_EQ((*module(j, "model.layers.1.mlp.router"))["kind"], "router");
  EXPECT_EQ(j["quant_method"], "mxfp4");
  EXPECT_TRUE(j["selection"].is_null());
  EXPECT_EQ(j["tied_embeddings"], "");
  EXPECT_GT(j["saved_bytes"].get<int64_t>(), 0);
}

TEST(InspectCli, BadInputIsAClearError) {
  ScratchDir s;
  const RunResult r = run_nibble("inspect " + q(s.path / "missing"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("config.json: cannot open"), std::string::npos) << r.err;
  write_llama(s.path / "in");
  fs::remove(s.path / "in" / "model.safetensors");
  const RunResult n = run_nibble("inspect " + q(s.path / "in"));
  EXPECT_EQ(n.exit_code, 1);
  EXPECT_NE(n.err.find("nibble: error:"), std::string::npos) << n.err;
}

}  // namespace
}  // namespace nibble::testing_quant

namespace nibble::testing_quant {
namespace {

TEST(InspectCli, DequantizeWritesTheCodecsF32PerModule) {
  ScratchDir s;
  write_gpt_oss(s.path / "in", false, 1, 64, 96, 2);
  ASSERT_EQ(run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out") + " --mxfp4-layers moe,qkv -q").exit_code, 0);
  const RunResult r = run_nibble("inspect " + q(s.path / "out") + " --dequantize " + q(s.path / "deq.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  SafetensorsFile deq(s.path / "deq.safetensors");
  Checkpoint out(s.path / "out");
  ASSERT_EQ(deq.tensors().size(), 5u);  // 2 expert tensors + q, k, v
  const TensorView& d = deq.at("model.layers.0.mlp.experts.down_proj");
  EXPECT_EQ(d.dtype, DType::F32);
  EXPECT_EQ(d.shape, (std::vector<int64_t>{2, 64, 96}));
  std::vector<float> expected(2 * 64 * 96, std::numeric_limits<float>::quiet_NaN());
  mxfp4_dequantize(out.at("model.layers.0.mlp.experts.down_proj_blocks").data,
                   out.at("model.layers.0.mlp.experts.down_proj_scales").data, 2 * 64, 96, expected.data(), DType::F32);
  EXPECT_EQ(0, std::memcmp(d.data, expected.data(), d.nbytes));
  const RunResult none = run_nibble("inspect " + q(s.path / "in") + " --dequantize " + q(s.path / "x.safetensors"));
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("no MXFP4 module"), std::string::npos) << none.err;
}

}  // namespace
}  // namespace nibble::testing_quant

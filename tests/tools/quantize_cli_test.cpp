// `nibble quantize` end to end on synthetic checkpoints: layouts, byte-exact copies, config,
// sharding, pass-through, gates, the quality report, and every bad input (clear error,
// non-zero exit, nothing partial left).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>

#include <chrono>
#include <thread>

#include "quantize_fixtures.h"

extern char** environ;

namespace nibble::testing_quant {
namespace {

// The expected packed bytes of a [rows, k] BF16 matrix, from the format codec.
std::pair<std::vector<uint8_t>, std::vector<uint8_t>> expected_mxfp4(const uint8_t* bf16, size_t rows, size_t k,
                                                                     ScaleRule rule = ScaleRule::ocp) {
  std::vector<uint8_t> blocks(rows * k / 2), scales(rows * k / 32);
  Mxfp4QuantizeOptions o;
  o.rule = rule;
  mxfp4_quantize(bf16, DType::BF16, rows, k, blocks.data(), scales.data(), o);
  return {blocks, scales};
}

std::vector<uint8_t> bytes_of(const TensorView& v) { return {v.data, v.data + v.nbytes}; }

json read_json(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

TEST(QuantizeCli, LlamaQkvOMlpGptOssLayout) {
  ScratchDir s;
  const TensorSet src = write_llama(s.path / "in");
  const RunResult r = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out") +
                                 " --mxfp4-layers qkv,o,mlp --report " + q(s.path / "report.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Checkpoint out(s.path / "out");
  // Quantized: blocks/scales with the layout's shapes, the codec's bytes exactly.
  for (const auto& [name, rows, k] : std::vector<std::tuple<std::string, size_t, size_t>>{
           {"model.layers.0.self_attn.q_proj.weight", 64, 64},
           {"model.layers.1.mlp.gate_proj.weight", 128, 64},
           {"model.layers.1.mlp.down_proj.weight", 64, 128}}) {
    EXPECT_EQ(out.find(name), nullptr) << name;
    const TensorView& b = out.at(name + "_blocks");
    const TensorView& sc = out.at(name + "_scales");
    EXPECT_EQ(b.dtype, DType::U8);
    EXPECT_EQ(b.shape, (std::vector<int64_t>{int64_t(rows), int64_t(k / 32), 16}));
    EXPECT_EQ(sc.shape, (std::vector<int64_t>{int64_t(rows), int64_t(k / 32)}));
    const auto [eb, es] = expected_mxfp4(src.bytes(name).data(), rows, k);
    EXPECT_EQ(bytes_of(b), eb) << name;
    EXPECT_EQ(bytes_of(sc), es) << name;
  }
  // Everything else byte-exact.
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                           "model.layers.1.input_layernorm.weight"})
    EXPECT_EQ(bytes_of(out.at(name)), src.bytes(name)) << name;
  EXPECT_EQ(out.tensors().size(), src.tensors.size() + 14);  // 14 modules became 2 tensors each
  // config.json: quantization_config with modules_to_not_convert and our selection.
  const json config = read_json(s.path / "out" / "config.json");
  EXPECT_EQ(config["architectures"][0], "LlamaForCausalLM");
  const json& qc = config["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "mxfp4");
  EXPECT_EQ(qc["modules_to_not_convert"], json({"lm_head", "model.embed_tokens"}));
  EXPECT_EQ(qc["nibble"]["mxfp4_layers"], "qkv,o,mlp");
  EXPECT_EQ(qc["nibble"]["scale_rule"], "ocp");
  EXPECT_EQ(qc["nibble"]["quantized_modules"].size(), 14u);
  // Companion files copied.
  EXPECT_TRUE(fs::exists(s.path / "out" / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(s.path / "out" / "generation_config.json"));
  // Quality report: every quantized module, finite and plausible for MXFP4 on Gaussian data
  // (SQNR about 18-20 dB), a summary per kind.
  const json report = read_json(s.path / "report.json");
  ASSERT_EQ(report["modules"].size(), 14u);
  for (const auto& m : report["modules"]) {
    ASSERT_TRUE(m["nmse"].is_number()) << m.dump();
    EXPECT_GT(m["nmse"].get<double>(), 1e-4) << m.dump();
    EXPECT_LT(m["nmse"].get<double>(), 3e-2) << m.dump();
    EXPECT_NEAR(m["sqnr_db"].get<double>(), -10 * std::log10(m["nmse"].get<double>()), 1e-9);
  }
  EXPECT_EQ(report["summary_by_kind"]["qkv"]["modules"], 6);
  EXPECT_EQ(report["summary_by_kind"]["mlp"]["modules"], 6);
  EXPECT_EQ(report["summary_by_kind"]["o"]["modules"], 2);
  EXPECT_NE(r.out.find("SQNR"), std::string::npos) << r.out;
  EXPECT_TRUE(leftovers(s.path).empty());
}

TEST(QuantizeCli, ReportedErrorMatchesAnIndependentDequantization) {
  ScratchDir s;
  const TensorSet src = write_llama(s.path / "in", {1, 64, 96, 64});
  ASSERT_EQ(run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out") +
                       " --mxfp4-layers mlp --scale-rule ceil -q --report " + q(s.path / "r.json"))
                .exit_code,
            0);
  Checkpoint out(s.path / "out");
  const std::string name = "model.layers.0.mlp.down_proj.weight";
  const TensorView& b = out.at(name + "_blocks");
  const TensorView& sc = out.at(name + "_scales");
  std::vector<float> deq(64 * 96);
  mxfp4_dequantize(b.data, sc.data, 64, 96, deq.data(), DType::F32);
  double err = 0, sig = 0;
  const uint16_t* ref = reinterpret_cast<const uint16_t*>(src.bytes(name).data());
  for (size_t i = 0; i < deq.size(); ++i) {
    const double r = bf16_to_f32(ref[i]);
    err += (deq[i] - r) * (deq[i] - r);
    sig += r * r;
  }
  const json report = read_json(s.path / "r.json");
  EXPECT_EQ(report["scale_rule"], "ceil");
  bool found = false;
  for (const auto& m : report["modules"])
    if (m["module"] == "model.layers.0.mlp.down_proj") {
      EXPECT_NEAR(m["nmse"].get<double>(), err / sig, 1e-6 * (err / sig));
      found = true;
    }
  EXPECT_TRUE(found);
  // ceil never clips: the codec with ceil gives these bytes.
  EXPECT_EQ(bytes_of(b), expected_mxfp4(src.bytes(name).data(), 64, 96, ScaleRule::ceil).first);
}

TEST(QuantizeCli, ShardedOutputWithIndex) {
  ScratchDir s;
  const TensorSet src = write_llama(s.path / "in", {3, 64, 128, 96}, LmHead::separate, false, 20000);
  ASSERT_TRUE(fs::exists(s.path / "in" / "model.safetensors.index.json"));
  const RunResult r = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out") +
                                 " --mxfp4-layers all --shard-size 16KB");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json index = read_json(s.path / "out" / "model.safetensors.index.json");
  std::set<std::string> shards;
  for (const auto& [name, file] : index["weight_map"].items()) shards.insert(file.get<std::string>());
  EXPECT_GT(shards.size(), 2u);
  Checkpoint out(s.path / "out");
  EXPECT_NE(out.find("lm_head.weight_blocks"), nullptr);
  EXPECT_EQ(bytes_of(out.at("model.embed_tokens.weight")), src.bytes("model.embed_tokens.weight"));
  const auto [eb, es] = expected_mxfp4(src.bytes("model.layers.2.self_attn.v_proj.weight").data(), 64, 64);
  EXPECT_EQ(bytes_of(out.at("model.layers.2.self_attn.v_proj.weight_scales")), es);
}

TEST(QuantizeCli, CompressedTensorsLayout) {
  ScratchDir s;
  const TensorSet src = write_llama(s.path / "in");
  const RunResult r = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out") +
                                 " --mxfp4-layers qkv --format compressed-tensors");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Checkpoint out(s.path / "out");
  const std::string base = "model.layers.1.self_attn.k_proj";
  const TensorView& packed = out.at(base + ".weight_packed");
  const TensorView& scale = out.at(base + ".weight_scale");
  EXPECT_EQ(packed.shape, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(scale.shape, (std::vector<int64_t>{64, 2}));
  const auto [eb, es] = expected_mxfp4(src.bytes(base + ".weight").data(), 64, 64);
  EXPECT_EQ(bytes_of(packed), eb);
  EXPECT_EQ(bytes_of(scale), es);
  EXPECT_EQ(out.find(base + ".weight"), nullptr);
  const json qc = read_json(s.path / "out" / "config.json")["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "compressed-tensors");
  EXPECT_EQ(qc["format"], "mxfp4-pack-quantized");
  EXPECT_EQ(qc["config_groups"]["group_0"]["weights"]["group_size"], 32);
  EXPECT_EQ(qc["config_groups"]["group_0"]["targets"].size(), 6u);
  EXPECT_EQ(qc["ignore"].size(), 2u + 2 * 4);  // embed, lm_head, o and mlp of two layers
}

TEST(QuantizeCli, GptOssMxfp4InputPassesThroughAndDenseIsQuantized) {
  ScratchDir s;
  const TensorSet src = write_gpt_oss(s.path / "in", true);
  const RunResult r = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out") +
                                 " --mxfp4-layers moe,qkv");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Checkpoint out(s.path / "out");
  for (const char* name : {"model.layers.0.mlp.experts.gate_up_proj_blocks", "model.layers.0.mlp.experts.gate_up_proj_scales",
                           "model.layers.0.mlp.experts.down_proj_blocks", "model.layers.0.mlp.experts.down_proj_scales",
                           "model.layers.0.mlp.router.weight", "model.layers.0.self_attn.sinks",
                           "model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.o_proj.weight"})
    EXPECT_EQ(bytes_of(out.at(name)), src.bytes(name)) << name;
  const auto [eb, es] = expected_mxfp4(src.bytes("model.layers.0.self_attn.k_proj.weight").data(), 32, 64);
  EXPECT_EQ(bytes_of(out.at("model.layers.0.self_attn.k_proj.weight_blocks")), eb);
  const json qc = read_json(s.path / "out" / "config.json")["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "mxfp4");
  const auto& keep = qc["modules_to_not_convert"];
  EXPECT_NE(std::find(keep.begin(), keep.end(), "model.layers.0.mlp.router"), keep.end());
  EXPECT_EQ(std::find(keep.begin(), keep.end(), "model.layers.0.self_attn.q_proj"), keep.end());
}

TEST(QuantizeCli, GptOssBf16FusedExpertsAreTransposedIntoTheLayout) {
  ScratchDir s;
  const int64_t E = 3, H = 64, I = 96;
  const TensorSet src = write_gpt_oss(s.path / "in", false, 1, H, I, E);
  const RunResult r = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out"));  // default: moe
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Checkpoint out(s.path / "out");
  // down_proj source [E, K=I, N=H] -> blocks [E, N=H, I/32, 16].
  const TensorView& b = out.at("model.layers.0.mlp.experts.down_proj_blocks");
  EXPECT_EQ(b.shape, (std::vector<int64_t>{E, H, I / 32, 16}));
  const uint16_t* w = reinterpret_cast<const uint16_t*>(src.bytes("model.layers.0.mlp.experts.down_proj").data());
  for (int64_t e = 0; e < E; ++e) {
    std::vector<uint16_t> t(size_t(H * I));  // [N, K]
    for (int64_t kk = 0; kk < I; ++kk)
      for (int64_t n = 0; n < H; ++n) t[size_t(n * I + kk)] = w[size_t((e * I + kk) * H + n)];
    const auto [eb, es] = expected_mxfp4(reinterpret_cast<const uint8_t*>(t.data()), size_t(H), size_t(I));
    EXPECT_EQ(std::vector<uint8_t>(b.data + e * H * I / 2, b.data + (e + 1) * H * I / 2), eb) << "expert " << e;
  }
  EXPECT_EQ(out.find("model.layers.0.mlp.experts.down_proj"), nullptr);
  EXPECT_EQ(bytes_of(out.at("model.layers.0.self_attn.q_proj.weight")), src.bytes("model.layers.0.self_attn.q_proj.weight"));
  // compressed-tensors has no layout for fused 3-D experts: refused, by name.
  const RunResult ct = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "ct") +
                                  " --format compressed-tensors");
  EXPECT_EQ(ct.exit_code, 1);
  EXPECT_NE(ct.err.find("model.layers.0.mlp.experts.down_proj"), std::string::npos) << ct.err;
  EXPECT_FALSE(fs::exists(s.path / "ct"));
}

TEST(QuantizeCli, TiedEmbeddingsByteIdenticalCopyKeepsLmHead) {
  ScratchDir s;
  const TensorSet src = write_llama(s.path / "in", {}, LmHead::copy_of_embed, false);
  const RunResult r = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out") +
                                 " --mxfp4-layers lm_head,o");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("lm_head: kept BF16"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("byte-identical"), std::string::npos) << r.err;
  Checkpoint out(s.path / "out");
  EXPECT_EQ(bytes_of(out.at("lm_head.weight")), src.bytes("lm_head.weight"));
  const json qc = read_json(s.path / "out" / "config.json")["quantization_config"];
  EXPECT_EQ(qc["nibble"]["gates"][0]["gate"], "tied_embeddings");
  // embed with tied weights: refused, nothing written.
  const RunResult e = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "e") + " --mxfp4-layers embed");
  EXPECT_EQ(e.exit_code, 1);
  EXPECT_NE(e.err.find("refusing to quantize model.embed_tokens"), std::string::npos) << e.err;
  EXPECT_FALSE(fs::exists(s.path / "e"));
  // Both asked and accepted: one shared table. lm_head's copy is the codec's MXFP4 of the
  // embedding's own bytes (so the output layer reads exactly the embedding's table), and the
  // consent is recorded as a gate.
  const RunResult ok = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "both") +
                                  " --mxfp4-layers embed,lm_head --accept-tied-mxfp4");
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.err.find("share one MXFP4 table"), std::string::npos) << ok.err;
  Checkpoint both(s.path / "both");
  const auto [eb, es] = expected_mxfp4(src.bytes("model.embed_tokens.weight").data(), 96, 64);
  for (const char* m : {"model.embed_tokens", "lm_head"}) {
    EXPECT_EQ(bytes_of(both.at(std::string(m) + ".weight_blocks")), eb) << m;
    EXPECT_EQ(bytes_of(both.at(std::string(m) + ".weight_scales")), es) << m;
  }
  const json g = read_json(s.path / "both" / "config.json")["quantization_config"]["nibble"]["gates"];
  ASSERT_EQ(g.size(), 1u) << g.dump();
  EXPECT_EQ(g[0]["module"], "model.embed_tokens");
  EXPECT_NE(g[0]["detail"].get<std::string>().find("share one MXFP4 table"), std::string::npos);

  // A tied checkpoint without an lm_head tensor: the sharing is literal. One table is
  // written, no lm_head tensor appears, tie_word_embeddings stays true, and both gates say so.
  const TensorSet headless = write_llama(s.path / "headless", {}, LmHead::none, true);
  const RunResult h = run_nibble("quantize " + q(s.path / "headless") + " -o " + q(s.path / "h") +
                                 " --mxfp4-layers embed,lm_head --accept-tied-mxfp4");
  ASSERT_EQ(h.exit_code, 0) << h.err;
  Checkpoint ho(s.path / "h");
  const auto [hb, hs] = expected_mxfp4(headless.bytes("model.embed_tokens.weight").data(), 96, 64);
  EXPECT_EQ(bytes_of(ho.at("model.embed_tokens.weight_blocks")), hb);
  for (const TensorView* t : ho.tensors()) EXPECT_FALSE(t->name.starts_with("lm_head")) << t->name;
  const json hc = read_json(s.path / "h" / "config.json");
  EXPECT_EQ(hc["tie_word_embeddings"], true);
  const json& hg = hc["quantization_config"]["nibble"]["gates"];
  ASSERT_EQ(hg.size(), 2u) << hg.dump();
  EXPECT_EQ(hg[1]["gate"], "tied_embeddings");
  EXPECT_EQ(hg[1]["module"], "lm_head");
  EXPECT_NE(hg[1]["detail"].get<std::string>().find("in MXFP4 (one shared table"), std::string::npos) << hg.dump();
  // lm_head asked for alone there: kept with the embedding, said on stderr and in config.json.
  const RunResult k = run_nibble("quantize " + q(s.path / "headless") + " -o " + q(s.path / "k") + " --mxfp4-layers all");
  ASSERT_EQ(k.exit_code, 0) << k.err;
  EXPECT_NE(k.err.find("warning: lm_head: kept BF16: the output layer has no tensor of its own and reads "
                       "model.embed_tokens (config.json sets tie_word_embeddings: true), which stays BF16"),
            std::string::npos)
      << k.err;
  const json kg = read_json(s.path / "k" / "config.json")["quantization_config"]["nibble"]["gates"];
  ASSERT_EQ(kg.size(), 1u) << kg.dump();
  EXPECT_EQ(kg[0]["module"], "lm_head");
}

TEST(QuantizeCli, LoraNarrowGateFromAdapterDirectory) {
  ScratchDir s;
  write_llama(s.path / "in");
  fs::create_directories(s.path / "adapter");
  write_json(s.path / "adapter" / "adapter_config.json", {{"target_modules", {"q_proj", "down_proj"}}, {"r", 8}});
  const RunResult r = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out") +
                                 " --mxfp4-layers all --lora " + q(s.path / "adapter"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Checkpoint out(s.path / "out");
  EXPECT_NE(out.find("model.layers.0.self_attn.q_proj.weight"), nullptr);
  EXPECT_NE(out.find("model.layers.1.mlp.down_proj.weight"), nullptr);
  EXPECT_NE(out.find("model.layers.1.mlp.up_proj.weight_blocks"), nullptr);
  EXPECT_NE(r.err.find("the LoRA adapter targets it"), std::string::npos) << r.err;
  const json qc = read_json(s.path / "out" / "config.json")["quantization_config"];
  EXPECT_EQ(qc["nibble"]["lora_gate"], "narrow");
  // Broad: every dense layer stays.
  const RunResult b = run_nibble("quantize " + q(s.path / "in") + " --dry-run --mxfp4-layers all --lora " +
                                 q(s.path / "adapter") + " --lora-gate broad");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_NE(b.out.find("\n16 linear modules: 0 MXFP4, 16 kept\n"), std::string::npos) << b.out;
}

// gpt-oss experts are nn.Parameters: a PEFT adapter reaches them with target_parameters only.
TEST(QuantizeCli, LoraTargetParametersKeepGptOssExperts) {
  ScratchDir s;
  const TensorSet src = write_gpt_oss(s.path / "in", false, 2, 64, 96, 2);
  fs::create_directories(s.path / "adapter");
  write_json(s.path / "adapter" / "adapter_config.json",
             {{"peft_type", "LORA"}, {"r", 8}, {"target_modules", json::array()},
              {"target_parameters", {"mlp.experts.gate_up_proj", "mlp.experts.down_proj"}}});
  const RunResult r = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out") +
                                 " --mxfp4-layers moe,qkv -q --lora " + q(s.path / "adapter"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Checkpoint out(s.path / "out");
  for (const char* name : {"model.layers.0.mlp.experts.gate_up_proj", "model.layers.1.mlp.experts.down_proj"}) {
    EXPECT_EQ(bytes_of(out.at(name)), src.bytes(name)) << name;
    EXPECT_EQ(out.find(std::string(name) + "_blocks"), nullptr) << name;
  }
  EXPECT_NE(out.find("model.layers.1.self_attn.q_proj.weight_blocks"), nullptr);
  EXPECT_NE(r.err.find("model.layers.1.mlp.experts.down_proj: kept BF16: the LoRA adapter targets it "
                       "(target_parameters names model.layers.1.mlp.experts.down_proj"),
            std::string::npos)
      << r.err;
  const json qc = read_json(s.path / "out" / "config.json")["quantization_config"];
  EXPECT_EQ(qc["nibble"]["gates"].size(), 4u);
  const auto& keep = qc["modules_to_not_convert"];
  EXPECT_NE(std::find(keep.begin(), keep.end(), "model.layers.0.mlp.experts.gate_up_proj"), keep.end());
}

TEST(QuantizeCli, LoraAllLinearAndLayersToTransform) {
  ScratchDir s;
  write_llama(s.path / "in");
  const auto dry = [&](const json& adapter) {
    const fs::path dir = s.path / ("adapter" + std::to_string(std::random_device{}()));
    fs::create_directories(dir);
    write_json(dir / "adapter_config.json", adapter);
    return run_nibble("quantize " + q(s.path / "in") + " --dry-run --mxfp4-layers all --lora " + q(dir));
  };
  const auto row = [](const std::string& out, const std::string& module) {
    const size_t at = out.find("\n" + module + " ");
    return at == std::string::npos ? std::string("(no row)") : out.substr(at + 1, out.find('\n', at + 1) - at - 1);
  };
  // all-linear: every projection, not lm_head (the output layer) and not the embedding.
  const RunResult a = dry({{"target_modules", "all-linear"}});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_NE(a.out.find("\n16 linear modules: 1 MXFP4, 15 kept\n"), std::string::npos) << a.out;
  EXPECT_NE(row(a.out, "lm_head").find("MXFP4   token 'lm_head'"), std::string::npos) << a.out;
  EXPECT_NE(row(a.out, "model.layers.1.mlp.up_proj").find("target_modules all-linear"), std::string::npos) << a.out;
  // layers_to_transform: only layer 1's q_proj is the adapter's.
  const RunResult l = dry({{"target_modules", json::array({"q_proj"})}, {"layers_to_transform", json::array({1})}, {"layers_pattern", "layers"}});
  ASSERT_EQ(l.exit_code, 0) << l.err;
  EXPECT_NE(row(l.out, "model.layers.1.self_attn.q_proj").find("kept    the LoRA adapter targets it (target_modules, layer 1"),
            std::string::npos)
      << l.out;
  EXPECT_NE(row(l.out, "model.layers.0.self_attn.q_proj").find("MXFP4"), std::string::npos) << l.out;
  // What PEFT refuses is refused, naming the field; nothing is written.
  const RunResult x = dry({{"target_modules", ".*q_proj"}, {"layers_to_transform", json::array({1})}});
  EXPECT_EQ(x.exit_code, 1);
  EXPECT_NE(x.err.find("layers_to_transform cannot be used when target_modules is a string"), std::string::npos) << x.err;
  EXPECT_TRUE(leftovers(s.path).empty());
}

TEST(QuantizeCli, DryRunPrintsEveryModuleAndWritesNothing) {
  ScratchDir s;
  write_llama(s.path / "in", {2, 72, 128, 96});  // hidden 72: K % 32 != 0 for most modules
  const RunResult r = run_nibble("quantize " + q(s.path / "in") + " --dry-run --mxfp4-layers qkv,mlp --exclude "
                                 "'*.layers.1.*' --include 'nothing.*'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // One line per module: name, shape, dtype, result, reason.
  const size_t line = r.out.find("model.layers.0.mlp.down_proj ");
  ASSERT_NE(line, std::string::npos) << r.out;
  const std::string row = r.out.substr(line, r.out.find('\n', line) - line);
  EXPECT_NE(row.find("[72, 128]"), std::string::npos) << row;
  EXPECT_NE(row.find("MXFP4   token 'mlp'"), std::string::npos) << row;
  EXPECT_NE(r.out.find("K=72 is not a multiple of 32"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--exclude '*.layers.1.*'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("not selected (kind 'o'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--include 'nothing.*' matches no linear module"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("16 linear modules: 1 MXFP4, 15 kept"), std::string::npos) << r.out;
  EXPECT_TRUE(leftovers(s.path).empty());
  EXPECT_EQ(std::distance(fs::directory_iterator(s.path), fs::directory_iterator()), 1);
}

TEST(QuantizeCli, ExistingOutputRefusedUnlessForce) {
  ScratchDir s;
  write_llama(s.path / "in");
  fs::create_directories(s.path / "out");
  std::ofstream(s.path / "out" / "keep.txt") << "mine";
  const RunResult r = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out") + " --mxfp4-layers qkv");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already exists; pass --force"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(s.path / "out" / "keep.txt"));
  const RunResult f = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out") +
                                 " --mxfp4-layers qkv --force -q");
  ASSERT_EQ(f.exit_code, 0) << f.err;
  EXPECT_FALSE(fs::exists(s.path / "out" / "keep.txt"));
  EXPECT_TRUE(fs::exists(s.path / "out" / "model.safetensors"));
  EXPECT_TRUE(leftovers(s.path).empty());
}

// Each bad input: a clear error naming what is wrong, exit 1 (2 for CLI11 usage errors), and
// no output or temp directory left.
TEST(QuantizeCli, BadInputsFailCleanly) {
  ScratchDir s;
  write_llama(s.path / "good");
  // missing config.json
  write_llama(s.path / "noconfig");
  fs::remove(s.path / "noconfig" / "config.json");
  // malformed config.json
  write_llama(s.path / "badjson");
  std::ofstream(s.path / "badjson" / "config.json") << "{\"architectures\": [";
  // unsupported dtype: a selected module stored as I8
  {
    fs::create_directories(s.path / "i8");
    TensorSet t;
    t.add("model.layers.0.self_attn.q_proj.weight", DType::I8, {64, 64}, random_bytes(64 * 64));
    t.add_bf16("model.embed_tokens.weight", {96, 64});
    t.write(s.path / "i8");
    write_json(s.path / "i8" / "config.json", {{"tie_word_embeddings", false}});
  }
  // unknown dtype in a safetensors header
  {
    fs::create_directories(s.path / "f4");
    const std::string header = R"({"w.weight":{"dtype":"F4","shape":[2,32],"data_offsets":[0,32]}})";
    std::ofstream f(s.path / "f4" / "model.safetensors", std::ios::binary);
    const uint64_t n = header.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << header << std::string(32, '\0');
    write_json(s.path / "f4" / "config.json", json::object());
  }
  // truncated shard
  write_llama(s.path / "trunc", {2, 64, 128, 96}, LmHead::separate, false, 20000);
  const std::string last_shard =
      read_json(s.path / "trunc" / "model.safetensors.index.json")["weight_map"]["model.norm.weight"];
  {
    const fs::path shard = s.path / "trunc" / last_shard;
    ASSERT_TRUE(fs::exists(shard));
    fs::resize_file(shard, fs::file_size(shard) - 100);
  }
  // index naming a missing file
  write_llama(s.path / "noshard", {2, 64, 128, 96}, LmHead::separate, false, 20000);
  fs::remove(s.path / "noshard" / last_shard);
  // output parent is a regular file
  std::ofstream(s.path / "afile") << "x";

  const std::string good = q(s.path / "good");
  const std::string out = q(s.path / "out");
  const std::vector<std::tuple<std::string, std::string, int>> cases = {
      {"quantize " + q(s.path / "noconfig") + " -o " + out, "config.json: cannot open", 1},
      {"quantize " + q(s.path / "badjson") + " -o " + out, "config.json: malformed JSON", 1},
      {"quantize " + q(s.path / "i8") + " -o " + out + " --mxfp4-layers qkv", "has dtype I8", 1},
      {"quantize " + q(s.path / "f4") + " -o " + out, "F4", 1},
      {"quantize " + q(s.path / "trunc") + " -o " + out, last_shard, 1},
      {"quantize " + q(s.path / "noshard") + " -o " + out, last_shard, 1},
      {"quantize " + good + " -o " + out + " --mxfp4-layers qkv,attn", "unknown token 'attn'", 1},
      {"quantize " + good + " -o " + out + " --dry-run --report " + q(s.path / "r.json"), "--report and --dry-run conflict", 1},
      {"quantize " + good + " -o " + out + " --lora-gate broad", "--lora-gate broad needs --lora", 1},
      {"quantize " + good + " -o " + out + " --format onnx", "valid layouts: gpt-oss, compressed-tensors", 1},
      {"quantize " + good + " -o " + out + " --scale-rule round", "unknown scale rule 'round'", 1},
      {"quantize " + good + " -o " + out + " --lora " + q(s.path / "nolora"), "adapter_config.json", 1},
      {"quantize " + good + " -o " + q(s.path / "afile" / "out"), "is not an existing directory", 1},
      {"quantize " + good + " -o /proc/nibble-quant-test-out --mxfp4-layers qkv", "cannot create", 1},
      {"quantize " + good + " -o " + q(s.path / "good" / "sub"), "inside the input", 1},
      {"quantize " + good, "missing -o/--output", 1},
      {"quantize " + good + " -o " + out + " --report " + q(s.path / "nodir" / "r.json"), "--report", 1},
      // the report cannot be created: fails before any work, leaves nothing
      {"quantize " + good + " -o " + out + " --report /proc/nibble-quant-test-report.json",
       "cannot create a temporary file beside '/proc/nibble-quant-test-report.json'", 1},
      {"quantize " + good + " -o " + out + " --report " + q(s.path / "good"), "is a directory; give a file name", 1},
      {"quantize " + good + " -o " + good, "is the input directory", 1},
      {"quantize " + good + " -o " + q(s.path / "good" / "."), "is the input directory", 1},
      // --force asks to replace an output a dry run never writes: a conflict, not ignored
      {"quantize " + good + " --dry-run --force", "--force and --dry-run conflict", 1},
      {"quantize " + good + " -o " + out + " --shard-size abc", "--shard-size 'abc': expected a size such as 5GB", 1},
      {"quantize " + good + " -o " + out + " --shard-size 0", "--shard-size '0': expected a positive size", 1},
      {"quantize " + good + " -o " + out + " --shard-size=-1GB", "expected a positive size", 1},
      {"quantize " + good + " -o " + out + " --shard-size 5XB", "units: B, KB, MB, GB, KiB, MiB, GiB", 1},
  };
  for (const auto& [args, needle, code] : cases) {
    const RunResult r = run_nibble(args);
    EXPECT_EQ(r.exit_code, code) << args << "\n" << r.err;
    EXPECT_NE(r.err.find("nibble: error:"), std::string::npos) << args << "\n" << r.err;
    if (std::getenv("NIBBLE_TEST_VERBOSE")) std::fprintf(stderr, "%s", r.err.c_str());
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\n" << r.err;
    EXPECT_FALSE(fs::exists(s.path / "out")) << args;
    EXPECT_TRUE(leftovers(s.path).empty()) << args;
  }
  EXPECT_FALSE(fs::exists("/proc/nibble-quant-test-out"));
}

TEST(QuantizeCli, NonFiniteWeightIsAnErrorNamingTensorRowAndBlock) {
  ScratchDir s;
  fs::create_directories(s.path / "in");
  TensorSet t;
  std::vector<uint8_t> bad = random_bf16(64 * 96);
  const size_t row = 37, column = 70;  // block 2 of row 37
  bad[2 * (row * 96 + column)] = 0xC0;
  bad[2 * (row * 96 + column) + 1] = 0x7F;  // BF16 NaN
  t.add_bf16("model.layers.0.self_attn.q_proj.weight", {64, 64});
  t.add("model.layers.0.self_attn.v_proj.weight", DType::BF16, {64, 96}, bad);
  t.add_bf16("model.layers.0.self_attn.k_proj.weight", {64, 64});
  t.add_bf16("model.layers.1.self_attn.k_proj.weight", {64, 64});
  t.write(s.path / "in");
  write_json(s.path / "in" / "config.json", {{"tie_word_embeddings", false}});
  const RunResult r = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out") + " --mxfp4-layers qkv");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("model.layers.0.self_attn.v_proj.weight: row 37, block 2 (columns 64..95) holds Inf or NaN"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(s.path / "out"));
  EXPECT_TRUE(leftovers(s.path).empty());
}

// A `nibble quantize` child that stops after its first tensor (NIBBLE_TEST_PAUSE_FILE: it
// creates `pause` and waits while the file exists), stdout and stderr into files.
struct PausedRun {
  fs::path pause, out_log, err_log;
  pid_t pid = 0;
  int status = 0;
  bool exited = false;

  PausedRun(const fs::path& dir, std::vector<std::string> args)
      : pause(dir / "pause"), out_log(dir / "stdout.log"), err_log(dir / "stderr.log") {
    args.insert(args.begin(), {NIBBLE_BIN, "quantize"});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
    env_strings.push_back("NIBBLE_TEST_PAUSE_FILE=" + pause.string());
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init(&files);
    posix_spawn_file_actions_addopen(&files, 1, out_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&files, 2, err_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int rc = posix_spawn(&pid, NIBBLE_BIN, &files, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&files);
    EXPECT_EQ(rc, 0);
  }
  ~PausedRun() {
    if (!exited && pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
  }
  // Until the child has written its first tensor and is waiting.
  bool wait_paused() const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!fs::exists(pause) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return fs::exists(pause);
  }
  // Waits up to `timeout` for the child to exit.
  bool wait_exit(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid, &status, WNOHANG) == pid) return exited = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }
  void resume() const { fs::remove(pause); }
  std::string err() const {
    std::ifstream in(err_log);
    return {std::istreambuf_iterator<char>(in), {}};
  }
};

// SIGINT and SIGTERM in the middle of a run (deterministically: the child waits after its
// first tensor until the signal comes): non-zero exit, a message, nothing left behind. If the
// signal were ignored the child would finish once released, and the test fails.
TEST(QuantizeCli, SignalLeavesNothingBehind) {
  for (const int signal : {SIGINT, SIGTERM}) {
    ScratchDir s;
    write_llama(s.path / "in");
    PausedRun run(s.path, {(s.path / "in").string(), "-o", (s.path / "out").string(), "--mxfp4-layers", "all", "-q"});
    ASSERT_TRUE(run.wait_paused()) << "the run never reached its first tensor\n" << run.err();
    ASSERT_FALSE(leftovers(s.path).empty()) << "no temp directory mid-run";
    kill(run.pid, signal);
    if (!run.wait_exit(std::chrono::seconds(20))) {
      run.resume();  // let it go: it will finish and write the output, which fails below
      ASSERT_TRUE(run.wait_exit(std::chrono::seconds(60)));
      ADD_FAILURE() << "signal " << signal << " did not stop the run";
    }
    EXPECT_TRUE(WIFEXITED(run.status) && WEXITSTATUS(run.status) == 1) << "signal " << signal << " status " << run.status;
    const std::string name = signal == SIGINT ? "SIGINT" : "SIGTERM";
    EXPECT_NE(run.err().find("interrupted by signal " + std::to_string(signal) + " (" + name + ")"), std::string::npos)
        << run.err();
    EXPECT_FALSE(fs::exists(s.path / "out")) << name;
    EXPECT_TRUE(leftovers(s.path).empty()) << name;
  }
}

// The report's last rename fails only if its directory changed during the run (here: a
// directory appears at the report path while the run is paused). The checkpoint is complete
// by then: a warning, exit 0, and no temp file left.
TEST(QuantizeCli, ReportThatCannotBeRenamedInIsAWarning) {
  ScratchDir s;
  write_llama(s.path / "in");
  const fs::path report = s.path / "r.json";
  PausedRun run(s.path, {(s.path / "in").string(), "-o", (s.path / "out").string(), "--mxfp4-layers", "qkv",
                         "--report", report.string()});
  ASSERT_TRUE(run.wait_paused()) << run.err();
  EXPECT_EQ(leftovers(s.path).size(), 2u);  // the checkpoint's temp directory, the report's temp file
  fs::create_directories(report / "x");    // rename(2) cannot replace a non-empty directory
  run.resume();
  ASSERT_TRUE(run.wait_exit(std::chrono::seconds(60)));
  EXPECT_TRUE(WIFEXITED(run.status) && WEXITSTATUS(run.status) == 0) << run.err();
  EXPECT_NE(run.err().find("warning: --report " + report.string() + ": not written"), std::string::npos) << run.err();
  Checkpoint out(s.path / "out");
  EXPECT_NE(out.find("model.layers.0.self_attn.q_proj.weight_blocks"), nullptr);
  EXPECT_TRUE(leftovers(s.path).empty()) << leftovers(s.path)[0];
  // Without the interference the report lands and the temp file is gone.
  ASSERT_EQ(run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out2") + " -q --mxfp4-layers qkv --report " +
                       q(s.path / "r2.json"))
                .exit_code,
            0);
  EXPECT_EQ(read_json(s.path / "r2.json")["modules"].size(), 6u);
  EXPECT_TRUE(leftovers(s.path).empty());
}

// A full disk, without root: RLIMIT_FSIZE (ulimit -f) makes write(2) fail with EFBIG once the
// output passes the limit (SIGXFSZ ignored, as a full disk's ENOSPC sends no signal).
TEST(QuantizeCli, FullDiskLeavesNothingBehind) {
  ScratchDir s;
  write_llama(s.path / "in", {2, 256, 512, 96});  // ~2.5 MB in, ~1 MB out
  const RunResult r = run_command("sh -c \"ulimit -f 256 && trap '' XFSZ && exec " + std::string(NIBBLE_BIN) +
                                  " quantize " + q(s.path / "in") + " -o " + q(s.path / "out") +
                                  " --mxfp4-layers all -q\"");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("File too large"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(s.path / "out"));
  EXPECT_TRUE(leftovers(s.path).empty());
}

// Progress: plain lines when stderr is not a terminal, a bar redrawn with \r on one.
TEST(QuantizeCli, ProgressLinesOffATerminalAndABarOnOne) {
  ScratchDir s;
  write_llama(s.path / "in");  // 21 tensors
  const RunResult plain = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "a") + " --mxfp4-layers qkv");
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_NE(plain.err.find("quantize: 1/21 tensors, "), std::string::npos) << plain.err;
  EXPECT_NE(plain.err.find("quantize: 21/21 tensors, "), std::string::npos) << plain.err;
  EXPECT_NE(plain.err.find("(100%)"), std::string::npos) << plain.err;
  EXPECT_EQ(plain.err.find('\r'), std::string::npos) << plain.err;
  const RunResult quiet = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "b") + " --mxfp4-layers qkv -q");
  ASSERT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_EQ(quiet.err.find("quantize:"), std::string::npos) << quiet.err;
  EXPECT_EQ(quiet.out, "");
  // On a terminal (script(1) gives the child a pseudo-terminal).
  if (std::system("command -v script >/dev/null 2>&1") != 0) GTEST_SKIP() << "script(1) is not installed";
  const RunResult tty = run_command("script -qec \"" + std::string(NIBBLE_BIN) + " quantize " + q(s.path / "in") +
                                    " -o " + q(s.path / "c") + " --mxfp4-layers qkv\" /dev/null");
  ASSERT_EQ(tty.exit_code, 0) << tty.out << tty.err;
  EXPECT_NE(tty.out.find("\r[=============================="), std::string::npos) << tty.out;
  EXPECT_NE(tty.out.find("] 21/21 tensors"), std::string::npos) << tty.out;
  EXPECT_NE(tty.out.find("ETA"), std::string::npos) << tty.out;
  EXPECT_EQ(tty.out.find("quantize: 1/21 tensors"), std::string::npos) << tty.out;
}

// Inputs quantized some other way are refused (re-wrapping them would lose or lie).
TEST(QuantizeCli, InputsQuantizedAnotherWayAreRefused) {
  ScratchDir s;
  write_llama(s.path / "fp8");
  json config = read_json(s.path / "fp8" / "config.json");
  config["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", {128, 128}}};
  write_json(s.path / "fp8" / "config.json", config);
  const RunResult f = run_nibble("quantize " + q(s.path / "fp8") + " -o " + q(s.path / "out"));
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_NE(f.err.find("the input is already quantized (quant_method 'fp8')"), std::string::npos) << f.err;
  // compressed-tensors MXFP4 (our own --format compressed-tensors output)
  write_llama(s.path / "in");
  ASSERT_EQ(run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "ct") +
                       " --mxfp4-layers qkv --format compressed-tensors -q")
                .exit_code,
            0);
  const RunResult c = run_nibble("quantize " + q(s.path / "ct") + " -o " + q(s.path / "out"));
  EXPECT_EQ(c.exit_code, 1);
  EXPECT_NE(c.err.find("quant_method 'compressed-tensors'"), std::string::npos) << c.err;
  // ... and its tensors alone, with the config block gone.
  config = read_json(s.path / "ct" / "config.json");
  config.erase("quantization_config");
  write_json(s.path / "ct" / "config.json", config);
  const RunResult t = run_nibble("quantize " + q(s.path / "ct") + " -o " + q(s.path / "out"));
  EXPECT_EQ(t.exit_code, 1);
  EXPECT_NE(t.err.find(".weight_packed is compressed-tensors MXFP4"), std::string::npos) << t.err;
  EXPECT_FALSE(fs::exists(s.path / "out"));
  EXPECT_TRUE(leftovers(s.path).empty());
}

// Per-expert MoE names (Mixtral block_sparse_moe.experts.N.w1..w3, Qwen-MoE
// mlp.experts.N.*_proj with a shared expert) and fused qkv_proj / gate_up_proj (Phi-3).
TEST(QuantizeCli, PerExpertMoeAndFusedProjections) {
  ScratchDir s;
  fs::create_directories(s.path / "in");
  TensorSet t;
  const int64_t h = 64, f = 96;
  t.add_bf16("model.embed_tokens.weight", {96, h});
  t.add_bf16("lm_head.weight", {96, h});
  for (int e = 0; e < 2; ++e) {
    const std::string m = "model.layers.0.block_sparse_moe.experts." + std::to_string(e) + ".";
    t.add_bf16(m + "w1.weight", {f, h});
    t.add_bf16(m + "w2.weight", {h, f});
    t.add_bf16(m + "w3.weight", {f, h});
    const std::string q2 = "model.layers.1.mlp.experts." + std::to_string(e) + ".";
    for (const char* p : {"gate_proj", "up_proj"}) t.add_bf16(q2 + p + ".weight", {f, h});
    t.add_bf16(q2 + "down_proj.weight", {h, f});
  }
  t.add_bf16("model.layers.0.block_sparse_moe.gate.weight", {2, h});
  t.add_bf16("model.layers.1.mlp.gate.weight", {2, h});
  t.add_bf16("model.layers.1.mlp.shared_expert.down_proj.weight", {h, f});
  t.add_bf16("model.layers.1.mlp.shared_expert_gate.weight", {1, h});
  t.add_bf16("model.layers.2.self_attn.qkv_proj.weight", {3 * h, h});
  t.add_bf16("model.layers.2.self_attn.o_proj.weight", {h, h});
  t.add_bf16("model.layers.2.mlp.gate_up_proj.weight", {2 * f, h});
  t.write(s.path / "in");
  write_json(s.path / "in" / "config.json", {{"model_type", "mixtral"}});
  const RunResult d = run_nibble("quantize " + q(s.path / "in") + " --dry-run");  // default: moe
  ASSERT_EQ(d.exit_code, 0) << d.err;
  const auto result = [&](const std::string& module) {
    const size_t at = d.out.find("\n" + module + " ");
    return at == std::string::npos ? std::string("(no row)") : d.out.substr(at + 1, d.out.find('\n', at + 1) - at - 1);
  };
  EXPECT_NE(result("model.layers.0.block_sparse_moe.experts.1.w2").find("MXFP4   token 'moe'"), std::string::npos) << d.out;
  EXPECT_NE(result("model.layers.1.mlp.experts.0.up_proj").find("MXFP4   token 'moe'"), std::string::npos) << d.out;
  EXPECT_NE(result("model.layers.0.block_sparse_moe.gate").find("kept    not selected (router modules"), std::string::npos) << d.out;
  EXPECT_NE(result("model.layers.1.mlp.gate").find("kept    not selected (router modules"), std::string::npos) << d.out;
  EXPECT_NE(result("model.layers.1.mlp.shared_expert.down_proj").find("kept    not selected (kind 'mlp'"), std::string::npos) << d.out;
  EXPECT_NE(d.out.find("\n21 linear modules: 12 MXFP4, 9 kept\n"), std::string::npos) << d.out;
  // Quantized for real, with qkv and mlp: per-expert and fused tensors in the gpt-oss layout.
  const RunResult r = run_nibble("quantize " + q(s.path / "in") + " -o " + q(s.path / "out") + " --mxfp4-layers moe,qkv,mlp -q");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Checkpoint out(s.path / "out");
  for (const auto& [name, rows, k] : std::vector<std::tuple<std::string, size_t, size_t>>{
           {"model.layers.0.block_sparse_moe.experts.1.w2.weight", 64, 96},
           {"model.layers.1.mlp.experts.0.gate_proj.weight", 96, 64},
           {"model.layers.1.mlp.shared_expert.down_proj.weight", 64, 96},
           {"model.layers.2.self_attn.qkv_proj.weight", 192, 64},
           {"model.layers.2.mlp.gate_up_proj.weight", 192, 64}}) {
    const auto [eb, es] = expected_mxfp4(t.bytes(name).data(), rows, k);
    EXPECT_EQ(out.at(name + "_blocks").shape, (std::vector<int64_t>{int64_t(rows), int64_t(k / 32), 16})) << name;
    EXPECT_EQ(bytes_of(out.at(name + "_blocks")), eb) << name;
    EXPECT_EQ(bytes_of(out.at(name + "_scales")), es) << name;
  }
  for (const char* name : {"model.layers.0.block_sparse_moe.gate.weight", "model.layers.1.mlp.shared_expert_gate.weight",
                           "model.layers.2.self_attn.o_proj.weight"})
    EXPECT_EQ(bytes_of(out.at(name)), t.bytes(name)) << name;
}

}  // namespace
}  // namespace nibble::testing_quant

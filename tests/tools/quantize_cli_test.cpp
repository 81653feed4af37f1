// `nibble quantize` end to end on synthetic checkpoints: layouts, byte-exact copies, config,
// sharding, pass-through, gates, the quality report, and every bad input (clear error,
// non-zero exit, nothing partial left).
#include <gtest/gtest.h>
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

TEST(QuantizeCli, SignalLeavesNothingBehind) {
  for (int signal : {SIGINT, SIGTERM}) {
    ScratchDir s;
    // Large enough (~48 MB of BF16) that the run is still going when the temp dir appears.
    write_llama(s.path / "in", {6, 1024, 2048, 256});
    const std::string bin = NIBBLE_BIN;
    const std::string in = (s.path / "in").string(), out = (s.path / "out").string();
    std::vector<std::string> args = {bin, "quantize", in, "-o", out, "--mxfp4-layers", "all", "-q"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    ASSERT_EQ(posix_spawn(&pid, bin.c_str(), nullptr, nullptr, argv.data(), environ), 0);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (leftovers(s.path).empty() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    ASSERT_FALSE(leftovers(s.path).empty()) << "the temp directory never appeared";
    kill(pid, signal);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    if (fs::exists(out)) {
      GTEST_SKIP() << "the run finished before the signal arrived; cannot test interruption here";
    }
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << "signal " << signal;
    EXPECT_TRUE(leftovers(s.path).empty()) << "signal " << signal;
  }
}

}  // namespace
}  // namespace nibble::testing_quant

// Layer selection and gates on module-name lists (no files): every token, glob interplay,
// each gate and each refusal message.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "base/error.h"
#include "format/safetensors.h"
#include "quant/lora.h"
#include "quant/model_info.h"
#include "quant/selection.h"

namespace nibble {
namespace {

using json = nlohmann::json;

// A Llama-style checkpoint's tensors with `layers` layers; K = hidden (a multiple of 32 unless
// told otherwise).
std::vector<TensorInfo> llama_tensors(int layers, int64_t hidden = 64, int64_t ffn = 128,
                                      bool lm_head = true, int64_t vocab = 100) {
  std::vector<TensorInfo> t;
  t.push_back({"model.embed_tokens.weight", DType::BF16, {vocab, hidden}});
  t.push_back({"model.norm.weight", DType::BF16, {hidden}});
  if (lm_head) t.push_back({"lm_head.weight", DType::BF16, {vocab, hidden}});
  for (int i = 0; i < layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"})
      t.push_back({p + "self_attn." + n + ".weight", DType::BF16, {hidden, hidden}});
    t.push_back({p + "mlp.gate_proj.weight", DType::BF16, {ffn, hidden}});
    t.push_back({p + "mlp.up_proj.weight", DType::BF16, {ffn, hidden}});
    t.push_back({p + "mlp.down_proj.weight", DType::BF16, {hidden, ffn}});
    t.push_back({p + "input_layernorm.weight", DType::BF16, {hidden}});
    t.push_back({p + "post_attention_layernorm.weight", DType::BF16, {hidden}});
  }
  // Shuffled: discovery must not depend on order.
  std::shuffle(t.begin(), t.end(), std::mt19937(std::random_device{}()));
  return t;
}

// gpt-oss style: MXFP4 fused experts (or BF16 [E, K, N] when `bf16_experts`), BF16 attention,
// router, sinks, biases.
std::vector<TensorInfo> gpt_oss_tensors(int layers, bool bf16_experts, int64_t hidden = 64,
                                        int64_t inter = 64, int64_t experts = 4) {
  std::vector<TensorInfo> t;
  t.push_back({"model.embed_tokens.weight", DType::BF16, {100, hidden}});
  t.push_back({"lm_head.weight", DType::BF16, {100, hidden}});
  for (int i = 0; i < layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t.push_back({p + "self_attn.q_proj.weight", DType::BF16, {hidden, hidden}});
    t.push_back({p + "self_attn.q_proj.bias", DType::BF16, {hidden}});
    t.push_back({p + "self_attn.k_proj.weight", DType::BF16, {32, hidden}});
    t.push_back({p + "self_attn.v_proj.weight", DType::BF16, {32, hidden}});
    t.push_back({p + "self_attn.o_proj.weight", DType::BF16, {hidden, hidden}});
    t.push_back({p + "self_attn.sinks", DType::BF16, {4}});
    t.push_back({p + "mlp.router.weight", DType::BF16, {experts, hidden}});
    t.push_back({p + "mlp.router.bias", DType::BF16, {experts}});
    if (bf16_experts) {
      t.push_back({p + "mlp.experts.gate_up_proj", DType::BF16, {experts, hidden, 2 * inter}});
      t.push_back({p + "mlp.experts.down_proj", DType::BF16, {experts, inter, hidden}});
    } else {
      t.push_back({p + "mlp.experts.gate_up_proj_blocks", DType::U8, {experts, 2 * inter, hidden / 32, 16}});
      t.push_back({p + "mlp.experts.gate_up_proj_scales", DType::U8, {experts, 2 * inter, hidden / 32}});
      t.push_back({p + "mlp.experts.down_proj_blocks", DType::U8, {experts, hidden, inter / 32, 16}});
      t.push_back({p + "mlp.experts.down_proj_scales", DType::U8, {experts, hidden, inter / 32}});
    }
    t.push_back({p + "mlp.experts.gate_up_proj_bias", DType::BF16, {experts, 2 * inter}});
  }
  return t;
}

const json kUntied = {{"tie_word_embeddings", false}, {"architectures", {"LlamaForCausalLM"}}};

SelectionOptions with_tokens(const char* tokens) {
  SelectionOptions o;
  o.tokens = parse_layer_tokens(tokens);
  return o;
}

std::set<std::string> quantized(const LayerPlan& plan) {
  std::set<std::string> names;
  for (const auto& d : plan.modules)
    if (d.mxfp4) names.insert(d.module->name);
  return names;
}

bool has_warning(const LayerPlan& plan, const std::string& needle) {
  for (const auto& w : plan.warnings)
    if (w.find(needle) != std::string::npos) return true;
  return false;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.message();
  }
  return "(no error)";
}

// The linear module a single tensor makes ("...q_proj.weight" [64, 64], or a gpt-oss fused
// expert parameter [E, K, N]).
LinearModule module_of(const std::string& tensor, std::vector<int64_t> shape = {64, 64}) {
  const auto modules = find_linear_modules({{tensor, DType::BF16, std::move(shape)}});
  EXPECT_EQ(modules.size(), 1u) << tensor;
  return modules.at(0);
}

// Whether `adapter` targets the module of `tensor`.
bool targets(const LoraAdapter& adapter, const std::string& tensor, std::vector<int64_t> shape = {64, 64}) {
  return !adapter.targets(module_of(tensor, std::move(shape))).empty();
}

TEST(ModuleDiscovery, LlamaNamesAreClassified) {
  const ModelInfo info = model_info_from_tensors(llama_tensors(2), kUntied);
  ASSERT_EQ(info.modules.size(), 2u + 2 * 7);  // embed, lm_head, 7 per layer; norms excluded
  EXPECT_EQ(info.find("model.embed_tokens")->kind, ModuleKind::embed);
  EXPECT_EQ(info.find("lm_head")->kind, ModuleKind::lm_head);
  EXPECT_EQ(info.find("model.layers.1.self_attn.k_proj")->kind, ModuleKind::qkv);
  EXPECT_EQ(info.find("model.layers.1.self_attn.o_proj")->kind, ModuleKind::o);
  EXPECT_EQ(info.find("model.layers.0.mlp.down_proj")->kind, ModuleKind::mlp);
  EXPECT_EQ(info.find("model.layers.0.mlp.down_proj")->k, 128);
  EXPECT_EQ(info.find("model.layers.0.mlp.down_proj")->rows, 64);
  EXPECT_EQ(info.find("model.norm"), nullptr);
  EXPECT_TRUE(std::is_sorted(info.modules.begin(), info.modules.end(),
                             [](const auto& a, const auto& b) { return a.name < b.name; }));
}

TEST(ModuleDiscovery, MoeNamesOfEachFamily) {
  EXPECT_EQ(classify_module("model.layers.0.mlp.experts.gate_up_proj"), ModuleKind::moe);
  EXPECT_EQ(classify_module("model.layers.0.block_sparse_moe.experts.3.w2"), ModuleKind::moe);
  EXPECT_EQ(classify_module("model.layers.0.mlp.experts.7.down_proj"), ModuleKind::moe);
  EXPECT_EQ(classify_module("model.layers.0.mlp.shared_expert.down_proj"), ModuleKind::mlp);
  EXPECT_EQ(classify_module("model.layers.0.block_sparse_moe.gate"), ModuleKind::router);
  EXPECT_EQ(classify_module("model.layers.0.mlp.gate"), ModuleKind::router);
  EXPECT_EQ(classify_module("model.layers.0.mlp.router"), ModuleKind::router);
  EXPECT_EQ(classify_module("model.layers.0.self_attn.qkv_proj"), ModuleKind::qkv);
  EXPECT_EQ(classify_module("model.layers.0.mlp.gate_up_proj"), ModuleKind::mlp);
  EXPECT_EQ(classify_module("model.vision.patch_proj"), ModuleKind::other);
}

TEST(ModuleDiscovery, GptOssMxfp4AndBf16Experts) {
  const ModelInfo mx = model_info_from_tensors(gpt_oss_tensors(1, false), kUntied);
  const LinearModule* gu = mx.find("model.layers.0.mlp.experts.gate_up_proj");
  ASSERT_NE(gu, nullptr);
  EXPECT_EQ(gu->layout, SourceLayout::mxfp4_gpt_oss);
  EXPECT_EQ(gu->shape, (std::vector<int64_t>{4, 128, 64}));
  EXPECT_EQ(gu->experts, 4);
  EXPECT_EQ(gu->k, 64);
  EXPECT_EQ(gu->kind, ModuleKind::moe);
  const ModelInfo bf = model_info_from_tensors(gpt_oss_tensors(1, true), kUntied);
  const LinearModule* down = bf.find("model.layers.0.mlp.experts.down_proj");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->layout, SourceLayout::dense_kn);
  // Source [E, K=inter, N=hidden] -> logical [E, N, K].
  EXPECT_EQ(down->shape, (std::vector<int64_t>{4, 64, 64}));
  EXPECT_EQ(bf.find("model.layers.0.mlp.experts.gate_up_proj")->rows, 128);
  EXPECT_EQ(bf.find("model.layers.0.mlp.experts.gate_up_proj")->k, 64);
}

TEST(ModuleDiscovery, BrokenMxfp4PairsAreRefusedByName) {
  auto t = gpt_oss_tensors(1, false);
  std::erase_if(t, [](const TensorInfo& x) { return x.name == "model.layers.0.mlp.experts.down_proj_scales"; });
  EXPECT_NE(error_of([&] { find_linear_modules(t); }).find("model.layers.0.mlp.experts.down_proj_scales"),
            std::string::npos);
  auto u = gpt_oss_tensors(1, false);
  for (auto& x : u)
    if (x.name == "model.layers.0.mlp.experts.down_proj_scales") x.shape[2] += 1;
  EXPECT_NE(error_of([&] { find_linear_modules(u); }).find("do not match"), std::string::npos);
}

TEST(Tokens, EachTokenSelectsItsKind) {
  const ModelInfo info = model_info_from_tensors(llama_tensors(1), kUntied);
  const std::pair<const char*, std::set<std::string>> cases[] = {
      {"qkv", {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj"}},
      {"o", {"model.layers.0.self_attn.o_proj"}},
      {"mlp", {"model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"}},
      {"lm_head", {"lm_head"}},
      {"embed", {"model.embed_tokens"}},
      {"moe", {}},
  };
  for (const auto& [token, expected] : cases) {
    const LayerPlan plan = plan_layers(info, with_tokens(token));
    EXPECT_EQ(quantized(plan), expected) << token;
    for (const auto& d : plan.modules) {
      if (!d.mxfp4) continue;
      EXPECT_EQ(d.reason, std::string("token '") + token + "'");
    }
  }
  const LayerPlan all = plan_layers(info, with_tokens("all"));
  EXPECT_EQ(quantized(all).size(), info.modules.size() - 1);  // all but embed
  EXPECT_FALSE(all.find("model.embed_tokens")->mxfp4);
  EXPECT_EQ(parse_layer_tokens(" qkv , o ").to_string(), "qkv,o");
}

TEST(Tokens, MoeSelectsExpertsOnly) {
  const ModelInfo info = model_info_from_tensors(gpt_oss_tensors(2, true), kUntied);
  const LayerPlan plan = plan_layers(info, with_tokens("moe"));
  EXPECT_EQ(quantized(plan), (std::set<std::string>{
                                 "model.layers.0.mlp.experts.down_proj", "model.layers.0.mlp.experts.gate_up_proj",
                                 "model.layers.1.mlp.experts.down_proj", "model.layers.1.mlp.experts.gate_up_proj"}));
  EXPECT_FALSE(plan.find("model.layers.0.mlp.router")->mxfp4);
  EXPECT_NE(plan.find("model.layers.0.mlp.router")->reason.find("--include"), std::string::npos);
}

TEST(Tokens, UnknownTokenListsTheValidOnes) {
  const std::string m = error_of([] { parse_layer_tokens("qkv,attn"); });
  EXPECT_NE(m.find("unknown token 'attn'"), std::string::npos) << m;
  EXPECT_NE(m.find("moe, qkv, o, mlp, lm_head, embed, all"), std::string::npos) << m;
  EXPECT_NE(error_of([] { parse_layer_tokens("qkv,,o"); }).find("empty token"), std::string::npos);
  EXPECT_NE(error_of([] { parse_layer_tokens(""); }).find("valid tokens"), std::string::npos);
}

TEST(Globs, IncludeAddsExcludeWins) {
  const ModelInfo info = model_info_from_tensors(llama_tensors(3), kUntied);
  SelectionOptions o = with_tokens("moe");
  o.include = {"model.layers.*.mlp.*"};
  o.exclude = {"*.layers.0.*"};
  const LayerPlan plan = plan_layers(info, o);
  EXPECT_EQ(quantized(plan).size(), 6u);  // 3 mlp modules in layers 1 and 2
  EXPECT_TRUE(plan.find("model.layers.2.mlp.up_proj")->mxfp4);
  EXPECT_EQ(plan.find("model.layers.2.mlp.up_proj")->reason, "--include 'model.layers.*.mlp.*'");
  EXPECT_FALSE(plan.find("model.layers.0.mlp.up_proj")->mxfp4);
  EXPECT_EQ(plan.find("model.layers.0.mlp.up_proj")->reason, "--exclude '*.layers.0.*'");
  // Exclude also wins over a token.
  SelectionOptions t = with_tokens("qkv");
  t.exclude = {"*.k_proj"};
  const LayerPlan p2 = plan_layers(info, t);
  EXPECT_FALSE(p2.find("model.layers.1.self_attn.k_proj")->mxfp4);
  EXPECT_TRUE(p2.find("model.layers.1.self_attn.q_proj")->mxfp4);
  EXPECT_TRUE(p2.warnings.empty());
}

TEST(Globs, PatternMatchingNothingIsAWarningNamingIt) {
  const ModelInfo info = model_info_from_tensors(llama_tensors(1), kUntied);
  SelectionOptions o = with_tokens("mlp");
  o.include = {"*.experts.*"};
  o.exclude = {"model.layers.9.*"};
  const LayerPlan plan = plan_layers(info, o);
  EXPECT_TRUE(has_warning(plan, "--include '*.experts.*' matches no linear module"));
  EXPECT_TRUE(has_warning(plan, "--exclude 'model.layers.9.*' matches no linear module"));
  EXPECT_EQ(quantized(plan).size(), 3u);
}

TEST(Globs, StarCrossesDots) {
  EXPECT_TRUE(glob_matches("*.layers.0.*", "model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(glob_matches("*.layers.0.*", "model.layers.10.self_attn.q_proj"));
  EXPECT_TRUE(glob_matches("model.layers.[12].mlp.?p_proj", "model.layers.2.mlp.up_proj"));
}

TEST(TiedGate, ConfigFlagKeepsLmHeadWithAWarning) {
  const ModelInfo info = model_info_from_tensors(llama_tensors(1), {{"tie_word_embeddings", true}});
  const LayerPlan plan = plan_layers(info, with_tokens("lm_head,qkv"));
  EXPECT_FALSE(plan.find("lm_head")->mxfp4);
  EXPECT_NE(plan.find("lm_head")->reason.find("tie_word_embeddings: true"), std::string::npos);
  EXPECT_TRUE(has_warning(plan, "lm_head: kept BF16"));
  ASSERT_EQ(plan.gates.size(), 1u);
  EXPECT_EQ(plan.gates[0].gate, "tied_embeddings");
  EXPECT_TRUE(plan.find("model.layers.0.self_attn.q_proj")->mxfp4);
}

// No tie_word_embeddings in config.json: transformers uses the model_type's config class
// default (false for these), or PretrainedConfig's true for a type we do not know.
TEST(TiedGate, AbsentFlagFollowsTheModelTypesDefault) {
  for (const char* type : {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gpt_oss"}) {
    const ModelInfo info = model_info_from_tensors(llama_tensors(1), {{"model_type", type}});
    EXPECT_EQ(info.tied_reason(), "") << type;
    EXPECT_TRUE(plan_layers(info, with_tokens("lm_head")).find("lm_head")->mxfp4) << type;
  }
  const ModelInfo unknown = model_info_from_tensors(llama_tensors(1), {{"model_type", "gemma"}});
  EXPECT_NE(unknown.tied_reason().find("model_type 'gemma' is not one whose default is known"), std::string::npos)
      << unknown.tied_reason();
  EXPECT_NE(unknown.tied_reason().find("PretrainedConfig default (true)"), std::string::npos);
  EXPECT_FALSE(plan_layers(unknown, with_tokens("lm_head")).find("lm_head")->mxfp4);
  const ModelInfo none = model_info_from_tensors(llama_tensors(1), json::object());
  EXPECT_NE(none.tied_reason().find("no model_type"), std::string::npos) << none.tied_reason();
  // An explicit value wins over the type's default, either way.
  EXPECT_NE(model_info_from_tensors(llama_tensors(1), {{"model_type", "llama"}, {"tie_word_embeddings", true}})
                .tied_reason()
                .find("tie_word_embeddings: true"),
            std::string::npos);
  EXPECT_EQ(model_info_from_tensors(llama_tensors(1), {{"model_type", "gemma"}, {"tie_word_embeddings", false}})
                .tied_reason(),
            "");
  // The other gates still apply when the type's default says untied.
  const ModelInfo headless = model_info_from_tensors(llama_tensors(1, 64, 128, false), {{"model_type", "qwen2"}});
  EXPECT_NE(headless.tied_reason().find("no separate lm_head"), std::string::npos);
  EXPECT_NE(error_of([] { model_info_from_tensors({}, {{"model_type", 3}}); }).find("model_type must be a string"),
            std::string::npos);
}

TEST(TiedGate, NoSeparateLmHead) {
  const ModelInfo info = model_info_from_tensors(llama_tensors(1, 64, 128, /*lm_head=*/false), kUntied);
  EXPECT_NE(info.tied_reason().find("no separate lm_head"), std::string::npos);
  const std::string m = error_of([&] { plan_layers(info, with_tokens("embed")); });
  EXPECT_NE(m.find("refusing to quantize model.embed_tokens"), std::string::npos) << m;
  EXPECT_NE(m.find("--accept-tied-mxfp4"), std::string::npos) << m;
  // lm_head asked for (by token, by `all`, by a glob) though there is no tensor: a warning
  // and a gate record say the output layer reads the BF16 embedding table.
  for (const char* tokens : {"lm_head,qkv", "all"}) {
    const LayerPlan plan = plan_layers(info, with_tokens(tokens));
    EXPECT_EQ(plan.find("lm_head"), nullptr);
    EXPECT_TRUE(has_warning(plan, "lm_head: kept BF16: the output layer has no tensor of its own and reads "
                                  "model.embed_tokens (the checkpoint has no separate lm_head weight), which "
                                  "stays BF16"))
        << tokens;
    ASSERT_EQ(plan.gates.size(), 1u) << tokens;
    EXPECT_EQ(plan.gates[0].gate, "tied_embeddings");
    EXPECT_EQ(plan.gates[0].module, "lm_head");
    EXPECT_NE(plan.gates[0].detail.find("which stays BF16"), std::string::npos);
  }
  SelectionOptions g = with_tokens("qkv");
  g.include = {"lm_head"};
  EXPECT_EQ(plan_layers(info, g).gates.size(), 1u);
  // Not asked for: nothing to say.
  const LayerPlan quiet = plan_layers(info, with_tokens("qkv,o,mlp"));
  EXPECT_TRUE(quiet.gates.empty());
  EXPECT_TRUE(quiet.warnings.empty());
  // Both asked and accepted: the output layer reads the one MXFP4 table.
  SelectionOptions both = with_tokens("embed,lm_head");
  both.accept_tied_mxfp4 = true;
  const LayerPlan shared = plan_layers(info, both);
  EXPECT_TRUE(shared.find("model.embed_tokens")->mxfp4);
  ASSERT_EQ(shared.gates.size(), 2u);
  EXPECT_EQ(shared.gates[1].module, "lm_head");
  EXPECT_NE(shared.gates[1].detail.find("in MXFP4 (one shared table"), std::string::npos) << shared.gates[1].detail;
}

// A checkpoint on disk with an embedding table and an lm_head of the given bytes, for the
// storage comparison of model_info_from_checkpoint().
struct HeadAndEmbed {
  std::filesystem::path dir;
  HeadAndEmbed(const std::vector<uint8_t>& embed, const std::vector<uint8_t>& head, int64_t rows, int64_t k,
               DType head_dtype = DType::BF16) {
    dir = std::filesystem::path(::testing::TempDir()) / ("nibble-alias-" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(dir);
    std::vector<TensorSpec> specs = {
        {"model.embed_tokens.weight", DType::BF16, {rows, k}, [&](uint8_t* o, size_t n) { std::memcpy(o, embed.data(), n); }},
        {"lm_head.weight", head_dtype, {rows, k}, [&](uint8_t* o, size_t n) { std::memcpy(o, head.data(), n); }},
        {"model.layers.0.self_attn.q_proj.weight", DType::BF16, {k, k}, [](uint8_t* o, size_t n) { std::memset(o, 0, n); }}};
    write_checkpoint(dir, specs);
  }
  ~HeadAndEmbed() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

std::vector<uint8_t> random_bytes(size_t n) {
  std::mt19937 gen(std::random_device{}());
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(gen() >> 13) & 0x3f;  // small BF16 bytes, no Inf/NaN
  return v;
}

// The resident kB of the mapping that holds `address` (/proc/self/smaps).
long resident_kb_of_mapping(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  const uintptr_t a = reinterpret_cast<uintptr_t>(address);
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &begin, &end) == 2 && line.find(':') > line.find(' ')) {
      inside = a >= begin && a < end;
    } else if (inside && line.rfind("Rss:", 0) == 0) {
      return std::stol(line.substr(4));
    }
  }
  return -1;
}

TEST(TiedGate, AliasingFlagFromStorage) {
  const int64_t rows = 96, k = 64;
  const std::vector<uint8_t> embed = random_bytes(size_t(rows * k * 2));
  {  // byte-identical copies: tied, lm_head kept
    HeadAndEmbed c(embed, embed, rows, k);
    Checkpoint ckpt(c.dir);
    const ModelInfo info = model_info_from_checkpoint(ckpt, kUntied);
    EXPECT_TRUE(info.lm_head_aliases_embed);
    EXPECT_EQ(info.alias_detail, "byte-identical copies");
    const LayerPlan plan = plan_layers(info, with_tokens("lm_head"));
    EXPECT_FALSE(plan.find("lm_head")->mxfp4);
    EXPECT_NE(plan.find("lm_head")->reason.find("same data (byte-identical copies)"), std::string::npos)
        << plan.find("lm_head")->reason;
  }
  {  // one byte differs, in the last element: not tied
    std::vector<uint8_t> head = embed;
    head.back() ^= 1;
    HeadAndEmbed c(embed, head, rows, k);
    Checkpoint ckpt(c.dir);
    const ModelInfo info = model_info_from_checkpoint(ckpt, kUntied);
    EXPECT_FALSE(info.lm_head_aliases_embed);
    EXPECT_TRUE(plan_layers(info, with_tokens("lm_head")).find("lm_head")->mxfp4);
  }
  {  // the same bytes read as another dtype are not the same tensor
    HeadAndEmbed c(embed, embed, rows, k, DType::F16);
    Checkpoint ckpt(c.dir);
    EXPECT_FALSE(model_info_from_checkpoint(ckpt, kUntied).lm_head_aliases_embed);
  }
}

// The comparison reads both tables through the mmap; their pages must not stay resident
// (an embedding table can be GBs, and quantize otherwise streams with bounded memory).
TEST(TiedGate, AliasingCheckGivesItsPagesBack) {
  const int64_t rows = 32768, k = 128;  // 8 MB per table
  const std::vector<uint8_t> embed = random_bytes(size_t(rows * k * 2));
  HeadAndEmbed c(embed, embed, rows, k);
  Checkpoint ckpt(c.dir);
  const ModelInfo info = model_info_from_checkpoint(ckpt, kUntied);
  ASSERT_TRUE(info.lm_head_aliases_embed);
  const long kb = resident_kb_of_mapping(ckpt.at("lm_head.weight").data);
  ASSERT_GE(kb, 0) << "mapping not found in /proc/self/smaps";
  EXPECT_LT(kb, 1024) << "the 16 MB compared stay resident";
}

TEST(TiedGate, EmbedRefusedUnlessBothAskedAndAccepted) {
  const ModelInfo info = model_info_from_tensors(llama_tensors(1), {{"tie_word_embeddings", true}});
  EXPECT_NE(error_of([&] { plan_layers(info, with_tokens("embed")); }).find("refusing"), std::string::npos);
  EXPECT_NE(error_of([&] { plan_layers(info, with_tokens("embed,lm_head")); }).find("--accept-tied-mxfp4"),
            std::string::npos);
  SelectionOptions o = with_tokens("embed");
  o.accept_tied_mxfp4 = true;  // consent without asking for lm_head is not enough
  EXPECT_NE(error_of([&] { plan_layers(info, o); }).find("refusing"), std::string::npos);
  o.tokens = parse_layer_tokens("embed,lm_head");
  const LayerPlan plan = plan_layers(info, o);
  EXPECT_TRUE(plan.find("model.embed_tokens")->mxfp4);
  EXPECT_TRUE(plan.find("lm_head")->mxfp4);
  EXPECT_TRUE(has_warning(plan, "share one MXFP4 table"));
  // Untied: embed alone is fine, no consent needed.
  const ModelInfo untied = model_info_from_tensors(llama_tensors(1), kUntied);
  EXPECT_EQ(quantized(plan_layers(untied, with_tokens("embed"))), (std::set<std::string>{"model.embed_tokens"}));
}

TEST(LoraGate, ListTargetsMatchBySuffix) {
  const LoraAdapter a = lora_adapter_from_config({{"target_modules", {"q_proj", "v_proj"}}}, {}, "ad");
  EXPECT_TRUE(targets(a, "model.layers.0.self_attn.q_proj.weight"));
  EXPECT_FALSE(targets(a, "model.layers.0.self_attn.k_proj.weight"));
  EXPECT_FALSE(targets(a, "model.layers.0.self_attn.xq_proj.weight"));  // suffix needs a dot
  const ModelInfo info = model_info_from_tensors(llama_tensors(2), kUntied);
  SelectionOptions o = with_tokens("qkv,o");
  o.lora = &a;
  const LayerPlan plan = plan_layers(info, o);
  EXPECT_EQ(quantized(plan), (std::set<std::string>{"model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.o_proj",
                                                    "model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.o_proj"}));
  EXPECT_TRUE(has_warning(plan, "model.layers.1.self_attn.v_proj: kept BF16: the LoRA adapter targets it (target_modules"));
  EXPECT_EQ(plan.gates.size(), 4u);
}

TEST(LoraGate, RegexTargetsMustMatchTheWholeName) {
  const LoraAdapter a =
      lora_adapter_from_config({{"target_modules", R"(.*layers\.1\..*(q|k)_proj)"}}, {}, "ad");
  EXPECT_TRUE(targets(a, "model.layers.1.self_attn.q_proj.weight"));
  EXPECT_FALSE(targets(a, "model.layers.0.self_attn.q_proj.weight"));
  EXPECT_FALSE(targets(a, "model.layers.1.self_attn.q_proj.extra.weight"));
  const LoraAdapter b = lora_adapter_from_config({{"target_modules", "q_proj"}}, {}, "ad");
  EXPECT_FALSE(targets(b, "model.layers.1.self_attn.q_proj.weight"));  // regex: full match only
  EXPECT_NE(error_of([] { lora_adapter_from_config({{"target_modules", "(unclosed"}}, {}, "ad"); })
                .find("not a valid regex"),
            std::string::npos);
}

TEST(LoraGate, ExcludesAndWeightNames) {
  const LoraAdapter a = lora_adapter_from_config(
      {{"target_modules", {"up_proj", "down_proj"}}, {"exclude_modules", json::array({"down_proj"})}}, {}, "ad");
  EXPECT_TRUE(targets(a, "model.layers.0.mlp.up_proj.weight"));
  EXPECT_FALSE(targets(a, "model.layers.0.mlp.down_proj.weight"));
  const LoraAdapter w = lora_adapter_from_config(
      json::object(), {"base_model.model.model.layers.3.mlp.up_proj.lora_A.weight"}, "ad");
  EXPECT_TRUE(targets(w, "model.layers.3.mlp.up_proj.weight"));
  EXPECT_FALSE(targets(w, "model.layers.2.mlp.up_proj.weight"));
  // LoRA weights in the file win over exclude_modules: PEFT wrapped that module.
  const LoraAdapter x = lora_adapter_from_config(
      {{"target_modules", json::array({"q_proj"})}, {"exclude_modules", json::array({"up_proj"})}},
      {"base_model.model.model.layers.3.mlp.up_proj.lora_B.weight"}, "ad");
  EXPECT_TRUE(targets(x, "model.layers.3.mlp.up_proj.weight"));
  EXPECT_NE(error_of([] { lora_adapter_from_config(json::object(), {}, "ad"); }).find("target_modules and target_parameters"),
            std::string::npos);
  EXPECT_NE(error_of([] { lora_adapter_from_config({{"target_modules", 3}}, {}, "ad"); })
                .find("must be a string (regex) or a list"),
            std::string::npos);
}

// PEFT's "all-linear": nn.Linear-style modules only, never the output layer.
TEST(LoraGate, AllLinearMatchesDenseLinearModulesOnly) {
  for (const char* spelling : {"all-linear", "ALL-Linear"}) {
    const LoraAdapter a = lora_adapter_from_config({{"target_modules", spelling}}, {}, "ad");
    EXPECT_TRUE(a.all_linear) << spelling;
    EXPECT_TRUE(targets(a, "model.layers.0.self_attn.q_proj.weight"));
    EXPECT_TRUE(targets(a, "model.layers.0.self_attn.o_proj.weight"));
    EXPECT_TRUE(targets(a, "model.layers.0.mlp.down_proj.weight"));
    EXPECT_TRUE(targets(a, "model.layers.0.block_sparse_moe.experts.3.w2.weight"));  // one expert's nn.Linear
    EXPECT_TRUE(targets(a, "model.vision.patch_proj.weight"));                       // "other": counted
    EXPECT_FALSE(targets(a, "lm_head.weight", {100, 64}));
    EXPECT_FALSE(targets(a, "model.embed_tokens.weight", {100, 64}));
    EXPECT_FALSE(targets(a, "model.layers.0.mlp.router.weight", {4, 64}));
    EXPECT_FALSE(targets(a, "model.layers.0.block_sparse_moe.gate.weight", {8, 64}));
    EXPECT_FALSE(targets(a, "model.layers.0.mlp.experts.gate_up_proj", {4, 64, 128}));  // fused parameter
  }
  // In a plan over gpt-oss: attention kept, experts still MXFP4, lm_head not a LoRA target.
  const LoraAdapter a = lora_adapter_from_config({{"target_modules", "all-linear"}}, {}, "ad");
  const ModelInfo info = model_info_from_tensors(gpt_oss_tensors(1, true), kUntied);
  SelectionOptions o = with_tokens("all");
  o.lora = &a;
  const LayerPlan plan = plan_layers(info, o);
  EXPECT_EQ(quantized(plan), (std::set<std::string>{"lm_head", "model.layers.0.mlp.experts.down_proj",
                                                    "model.layers.0.mlp.experts.gate_up_proj"}));
  EXPECT_NE(plan.find("model.layers.0.self_attn.k_proj")->reason.find("target_modules all-linear"), std::string::npos);
}

// gpt-oss fused experts are nn.Parameters: PEFT reaches them through target_parameters.
TEST(LoraGate, TargetParametersKeepFusedExperts) {
  const json config = {{"target_modules", nullptr},
                       {"target_parameters", {"mlp.experts.gate_up_proj", "mlp.experts.down_proj"}}};
  const LoraAdapter a = lora_adapter_from_config(config, {}, "ad");  // accepted without target_modules
  EXPECT_TRUE(targets(a, "model.layers.0.mlp.experts.gate_up_proj", {4, 64, 128}));
  EXPECT_FALSE(targets(a, "model.layers.0.self_attn.q_proj.weight"));
  const ModelInfo info = model_info_from_tensors(gpt_oss_tensors(2, true), kUntied);
  SelectionOptions o = with_tokens("moe,qkv");
  o.lora = &a;
  const LayerPlan plan = plan_layers(info, o);
  EXPECT_FALSE(plan.find("model.layers.1.mlp.experts.down_proj")->mxfp4);
  EXPECT_NE(plan.find("model.layers.1.mlp.experts.down_proj")->reason.find(
                "target_parameters names model.layers.1.mlp.experts.down_proj"),
            std::string::npos);
  EXPECT_TRUE(plan.find("model.layers.1.self_attn.q_proj")->mxfp4);
  EXPECT_EQ(plan.gates.size(), 4u);
  // A parameter name of a dense layer (its ".weight") matches that layer.
  const LoraAdapter w = lora_adapter_from_config({{"target_parameters", json::array({"self_attn.q_proj.weight"})}}, {}, "ad");
  EXPECT_TRUE(targets(w, "model.layers.0.self_attn.q_proj.weight"));
  EXPECT_FALSE(targets(w, "model.layers.0.self_attn.k_proj.weight"));
  // Already MXFP4 in the input: nothing to keep, said so.
  const ModelInfo mx = model_info_from_tensors(gpt_oss_tensors(1, false), kUntied);
  o.lora = &a;
  const LayerPlan p2 = plan_layers(mx, o);
  EXPECT_TRUE(p2.find("model.layers.0.mlp.experts.down_proj")->passthrough);
  EXPECT_TRUE(has_warning(p2, "model.layers.0.mlp.experts.down_proj: the LoRA adapter targets it"));
  EXPECT_NE(error_of([] { lora_adapter_from_config({{"target_parameters", "mlp.experts.down_proj"}}, {}, "ad"); })
                .find("target_parameters must be a list"),
            std::string::npos);
  // PEFT keeps those LoRA weights in a wrapper of the experts module (nested per parameter).
  const LoraAdapter f = lora_adapter_from_config(
      json::object(), {"base_model.model.model.layers.1.mlp.experts.base_layer.lora_A.weight"}, "ad");
  EXPECT_TRUE(targets(f, "model.layers.1.mlp.experts.down_proj", {4, 64, 64}));
  EXPECT_FALSE(targets(f, "model.layers.0.mlp.experts.down_proj", {4, 64, 64}));
}

// layers_to_transform / layers_pattern restrict suffix matches to those layer indices.
TEST(LoraGate, LayersToTransform) {
  const LoraAdapter a =
      lora_adapter_from_config({{"target_modules", {"q_proj", "down_proj"}}, {"layers_to_transform", {1, 3}}}, {}, "ad");
  EXPECT_FALSE(targets(a, "model.layers.0.self_attn.q_proj.weight"));
  EXPECT_TRUE(targets(a, "model.layers.1.self_attn.q_proj.weight"));
  EXPECT_FALSE(targets(a, "model.layers.10.self_attn.q_proj.weight"));
  // The layer is the FIRST numbered segment, not an expert index.
  EXPECT_TRUE(targets(a, "model.layers.3.mlp.experts.0.down_proj.weight"));
  EXPECT_FALSE(targets(a, "model.layers.0.mlp.experts.1.down_proj.weight"));
  EXPECT_FALSE(targets(a, "lm_head.down_proj.weight"));  // no layer index: not targeted
  // An exact name is not restricted (PEFT's rule).
  const LoraAdapter e = lora_adapter_from_config(
      {{"target_modules", json::array({"model.layers.0.self_attn.q_proj"})}, {"layers_to_transform", 1}}, {}, "ad");
  EXPECT_TRUE(targets(e, "model.layers.0.self_attn.q_proj.weight"));
  // An int, and layers_pattern naming where the index is.
  const LoraAdapter p = lora_adapter_from_config(
      {{"target_modules", json::array({"down_proj"})}, {"layers_to_transform", 1}, {"layers_pattern", "experts"}}, {}, "ad");
  EXPECT_TRUE(targets(p, "model.layers.0.mlp.experts.1.down_proj.weight"));
  EXPECT_FALSE(targets(p, "model.layers.1.mlp.experts.0.down_proj.weight"));
  EXPECT_FALSE(targets(p, "model.layers.1.mlp.down_proj.weight"));  // pattern absent
  const LoraAdapter l = lora_adapter_from_config(
      {{"target_modules", json::array({"q_proj"})}, {"layers_to_transform", json::array({0})}, {"layers_pattern", {"h", "layers"}}}, {}, "ad");
  EXPECT_TRUE(targets(l, "model.layers.0.self_attn.q_proj.weight"));
  EXPECT_FALSE(targets(l, "model.layers.2.self_attn.q_proj.weight"));
  // In a plan: only layer 1's q_proj stays BF16.
  const ModelInfo info = model_info_from_tensors(llama_tensors(3), kUntied);
  SelectionOptions o = with_tokens("qkv");
  o.lora = &a;
  const LayerPlan plan = plan_layers(info, o);
  EXPECT_EQ(plan.gates.size(), 1u);
  EXPECT_FALSE(plan.find("model.layers.1.self_attn.q_proj")->mxfp4);
  EXPECT_NE(plan.find("model.layers.1.self_attn.q_proj")->reason.find("layer 1 in layers_to_transform"), std::string::npos);
  EXPECT_TRUE(plan.find("model.layers.2.self_attn.q_proj")->mxfp4);
}

// The combinations PEFT's LoraConfig refuses are refused here too, naming the field.
TEST(LoraGate, LayerFieldsPeftRefusesAreRefused) {
  const std::pair<json, const char*> cases[] = {
      {{{"target_modules", ".*q_proj"}, {"layers_to_transform", json::array({0})}}, "layers_to_transform cannot be used when target_modules is a string (a regex)"},
      {{{"target_modules", "all-linear"}, {"layers_pattern", "layers"}}, "layers_pattern cannot be used when target_modules is a string (all-linear)"},
      {{{"target_modules", json::array({"q_proj"})}, {"layers_pattern", "layers"}}, "layers_pattern is given without layers_to_transform"},
      {{{"target_modules", json::array({"q_proj"})}, {"layers_to_transform", "1"}}, "layers_to_transform must be an integer or a list"},
      {{{"target_modules", json::array({"q_proj"})}, {"layers_to_transform", json::array({1.5})}}, "layers_to_transform must hold integers"},
      {{{"target_modules", json::array({"q_proj"})}, {"layers_to_transform", json::array({1})}, {"layers_pattern", "(x"}}, "layers_pattern is not a valid regex"},
  };
  for (const auto& [config, needle] : cases) {
    const std::string m = error_of([&] { lora_adapter_from_config(config, {}, "ad"); });
    EXPECT_NE(m.find(needle), std::string::npos) << config.dump() << "\n" << m;
    EXPECT_NE(m.find("ad/adapter_config.json"), std::string::npos) << m;
  }
  // An empty list is "every layer", as in PEFT.
  const LoraAdapter a =
      lora_adapter_from_config({{"target_modules", json::array({"q_proj"})}, {"layers_to_transform", json::array()}}, {}, "ad");
  EXPECT_TRUE(targets(a, "model.layers.7.self_attn.q_proj.weight"));
}

TEST(LoraGate, BroadKeepsEveryDenseLayerButNotExperts) {
  const LoraAdapter a = lora_adapter_from_config({{"target_modules", {"q_proj"}}}, {}, "ad");
  const ModelInfo info = model_info_from_tensors(gpt_oss_tensors(1, true), kUntied);
  SelectionOptions o = with_tokens("all");
  o.lora = &a;
  o.lora_gate = LoraGate::broad;
  const LayerPlan plan = plan_layers(info, o);
  EXPECT_EQ(quantized(plan), (std::set<std::string>{"model.layers.0.mlp.experts.down_proj",
                                                    "model.layers.0.mlp.experts.gate_up_proj"}));
  EXPECT_TRUE(has_warning(plan, "LoRA broad gate"));
  EXPECT_EQ(lora_gate_from_name("broad"), LoraGate::broad);
  EXPECT_NE(error_of([] { lora_gate_from_name("wide"); }).find("narrow, broad"), std::string::npos);
}

TEST(ShapeGate, KNotMultipleOf32StaysBf16WithTheReason) {
  // hidden 72 = 2.25 blocks: every module reading hidden is kept; down_proj reads ffn=128.
  const ModelInfo info = model_info_from_tensors(llama_tensors(1, 72, 128), kUntied);
  const LayerPlan plan = plan_layers(info, with_tokens("all"));
  EXPECT_FALSE(plan.find("model.layers.0.self_attn.q_proj")->mxfp4);
  EXPECT_NE(plan.find("model.layers.0.self_attn.q_proj")->reason.find("K=72 is not a multiple of 32"),
            std::string::npos);
  EXPECT_TRUE(plan.find("model.layers.0.mlp.down_proj")->mxfp4);
  EXPECT_TRUE(has_warning(plan, "K=72"));
}

TEST(Passthrough, AlreadyMxfp4IsNeverRequantizedAndNotExpanded) {
  const ModelInfo info = model_info_from_tensors(gpt_oss_tensors(1, false), kUntied);
  SelectionOptions o = with_tokens("qkv");
  o.exclude = {"*.experts.down_proj"};
  const LayerPlan plan = plan_layers(info, o);
  const ModuleDecision* d = plan.find("model.layers.0.mlp.experts.down_proj");
  EXPECT_TRUE(d->mxfp4 && d->passthrough);
  EXPECT_TRUE(has_warning(plan, "already MXFP4 in the input"));
  EXPECT_TRUE(plan.find("model.layers.0.self_attn.q_proj")->mxfp4);
  EXPECT_FALSE(plan.find("model.layers.0.self_attn.q_proj")->passthrough);
  const auto keep = plan.modules_to_not_convert();
  EXPECT_NE(std::find(keep.begin(), keep.end(), "model.layers.0.self_attn.o_proj"), keep.end());
  EXPECT_EQ(std::find(keep.begin(), keep.end(), "model.layers.0.mlp.experts.down_proj"), keep.end());
}

TEST(DtypeGate, SelectedNonFloatIsAnErrorNamingTheTensor) {
  auto t = llama_tensors(1);
  for (auto& x : t)
    if (x.name == "model.layers.0.self_attn.q_proj.weight") x.dtype = DType::I8;
  const ModelInfo info = model_info_from_tensors(t, kUntied);
  const std::string m = error_of([&] { plan_layers(info, with_tokens("qkv")); });
  EXPECT_NE(m.find("model.layers.0.self_attn.q_proj.weight has dtype I8"), std::string::npos) << m;
  // Not selected: copied as is, no error.
  EXPECT_EQ(plan_layers(info, with_tokens("mlp")).count_mxfp4(), 3u);
}

TEST(Config, MalformedFieldsNameTheField) {
  EXPECT_NE(error_of([] { model_info_from_tensors({}, {{"tie_word_embeddings", "yes"}}); }).find("tie_word_embeddings"),
            std::string::npos);
  EXPECT_NE(error_of([] { model_info_from_tensors({}, json::array()); }).find("JSON object"), std::string::npos);
}

}  // namespace
}  // namespace nibble

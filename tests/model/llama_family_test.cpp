// The Llama families on synthetic checkpoints written to disk and read back (the device check
// scripts/device/llama_check.py compares the same checkpoints with transformers): batched
// prefill equals token-by-token decode for every family switch, the tied-embedding gate on a
// synthetic tied model, the family switches change the result (they are read, not ignored),
// and a checkpoint holding MXFP4 blocks (as `nibble quantize` writes them) runs exactly like
// quantizing at load.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "format/hf_config.h"
#include "format/mxfp4.h"
#include "format/safetensors.h"
#include "model/llama/synth.h"
#include "model/model_loader.h"
#include "model/sampler.h"

namespace nibble {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path p = fs::path(NIBBLE_BINARY_DIR) / "test_tmp" /
                     (name + "-" + std::to_string(std::random_device{}()));
  fs::remove_all(p);
  return p;
}

LlamaConfig small(LlamaFamily family, size_t head_dim, bool tied) {
  LlamaConfig c;
  c.family = family;
  c.hidden = 128;
  c.ffn = 96;  // K = 96 for down: a multiple of 32
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = 2;
  c.head_dim = head_dim;
  c.vocab = 300;
  c.max_seq = 128;
  c.norm_eps = 1e-6f;
  c.tied_embeddings = tied;
  c.qkv_bias = family == LlamaFamily::qwen2;
  c.qk_norm = family == LlamaFamily::qwen3;
  if (family == LlamaFamily::mistral) c.set_sliding_window(5);
  if (family == LlamaFamily::llama && !tied) c.rope_scaling = RopeScalingLlama3{8.0, 1.0, 4.0, 16};
  return c;
}

std::vector<int32_t> random_tokens(size_t n, size_t vocab) {
  std::mt19937 rng(std::random_device{}());
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(rng() % vocab);
  return t;
}

std::vector<float> logits_of(const LlamaModel& m, const std::vector<int32_t>& tokens) {
  std::vector<float> out(tokens.size() * m.config().vocab, NAN);
  KvCache cache = m.make_cache(tokens.size());
  m.forward(tokens, cache, out.data(), true);
  return out;
}

// The last-token logits of each step of a token-by-token decode of `tokens`.
std::vector<float> stepped_logits(const LlamaModel& m, const std::vector<int32_t>& tokens) {
  KvCache cache = m.make_cache(tokens.size());
  std::vector<float> one(m.config().vocab, NAN), out;
  for (int32_t t : tokens) {
    m.forward(std::span<const int32_t>(&t, 1), cache, one.data());
    out.insert(out.end(), one.begin(), one.end());
  }
  return out;
}

// forward_greedy at each step of the same decode: the token argmax() takes of stepped_logits'
// rows, here computed where the model runs (on CUDA, on the device).
void expect_greedy_steps_match(const LlamaModel& m, const std::vector<int32_t>& tokens,
                               const std::vector<float>& stepped) {
  KvCache cache = m.make_cache(tokens.size());
  const size_t V = m.config().vocab;
  for (size_t i = 0; i < tokens.size(); ++i)
    EXPECT_EQ(m.forward_greedy(std::span<const int32_t>(&tokens[i], 1), cache),
              argmax(stepped.data() + i * V, V))
        << "step " << i;
}

// A greedy continuation of `prompt` two ways on one model: forward_greedy fed its own tokens
// (on CUDA each decode step runs ahead of the call asking for it), and each step's logits with
// argmax() on the host. Now and then the caller feeds a token of its own, asks for logits
// between greedy steps or drains the model (a step run ahead is then dropped); the cache fills
// to its last row.
void expect_greedy_continuation_matches(const LlamaModel& m, const std::vector<int32_t>& prompt,
                                        size_t steps) {
  const size_t V = m.config().vocab;
  KvCache fed = m.make_cache(prompt.size() + steps), ref = m.make_cache(prompt.size() + steps);
  std::vector<float> logits(V, NAN);
  int32_t got = m.forward_greedy(prompt, fed);
  m.forward(prompt, ref, logits.data());
  for (size_t i = 0;; ++i) {
    const int32_t want = int32_t(argmax(logits.data(), V));
    ASSERT_EQ(got, want) << "step " << i;
    if (i == steps) break;
    if (i % 11 == 10) m.drain();  // the step ahead waited for and dropped, as before a benchmark
    const int32_t input = i % 5 == 4 ? int32_t((size_t(got) + 1) % V) : got;
    const std::span<const int32_t> one(&input, 1);
    if (i % 7 == 6) {
      std::vector<float> between(V, NAN);
      m.forward(one, fed, between.data());
      got = int32_t(argmax(between.data(), V));
    } else {
      got = m.forward_greedy(one, fed);
    }
    m.forward(one, ref, logits.data());
  }
  EXPECT_EQ(fed.length(), fed.capacity());
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    d = std::max(d, double(std::abs(a[i] - b[i])));
  }
  return d;
}

struct Case {
  LlamaFamily family;
  size_t head_dim;
  bool tied;
};

class Families : public ::testing::TestWithParam<Case> {};

TEST_P(Families, WrittenReadBackPrefillEqualsDecode) {
  const Case p = GetParam();
  const LlamaConfig c = small(p.family, p.head_dim, p.tied);
  const auto tensors = synth_llama_tensors(c, std::random_device{}(), DType::BF16);
  const fs::path dir = fresh_dir(std::string("synth-") + llama_family_name(p.family));
  write_hf_model(dir, c, *tensors, DType::BF16);
  for (const char* layers : {"none", "all"}) {
    SCOPED_TRACE(layers);
    ModelLoadOptions o;
    o.mxfp4_layers = layers;
    o.max_batch_tokens = 7;  // the prompt runs in chunks: exercises the chunking too
    const LoadedModel m = load_model(dir, o);
    EXPECT_EQ(m.model->config().family, p.family);
    const std::vector<int32_t> tokens = random_tokens(19, c.vocab);
    const std::vector<float> all = logits_of(*m.model, tokens);
    const std::vector<float> stepped = stepped_logits(*m.model, tokens);
    EXPECT_LT(max_abs_diff(all, stepped), 1e-4);
    expect_greedy_steps_match(*m.model, tokens, stepped);
    for (const LinearPlanEntry& e : m.model->plan()) {
      const bool expect_mx = std::string(layers) == "all" && !(p.tied && e.role == LinearRole::lm_head);
      EXPECT_EQ(e.mxfp4, expect_mx) << e.name << ": " << e.reason;
    }
  }
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(
    Synthetic, Families,
    ::testing::Values(Case{LlamaFamily::llama, 64, false}, Case{LlamaFamily::llama, 128, true},
                      Case{LlamaFamily::mistral, 64, false}, Case{LlamaFamily::qwen2, 64, false},
                      Case{LlamaFamily::qwen2, 128, true}, Case{LlamaFamily::qwen3, 128, false},
                      Case{LlamaFamily::qwen3, 64, true}),
    [](const auto& info) {
      return std::string(llama_family_name(info.param.family)) + "_hd" +
             std::to_string(info.param.head_dim) + (info.param.tied ? "_tied" : "_untied");
    });

// Each switch is read: turning it off (or zeroing what it reads) changes the logits.
TEST(FamilySwitches, EachSwitchChangesTheResult) {
  const std::vector<int32_t> tokens = random_tokens(12, 300);
  ModelLoadOptions fp;
  fp.mxfp4_layers = "none";
  for (LlamaFamily f : {LlamaFamily::llama, LlamaFamily::mistral, LlamaFamily::qwen2, LlamaFamily::qwen3}) {
    SCOPED_TRACE(llama_family_name(f));
    const LlamaConfig c = small(f, 64, false);
    const auto t = synth_llama_tensors(c, std::random_device{}(), DType::F32);
    LlamaConfig off = c;
    if (f == LlamaFamily::llama) off.rope_scaling.reset();
    if (f == LlamaFamily::mistral) off.layer_window.clear();
    if (f == LlamaFamily::qwen3) off.qk_norm = false;
    if (f == LlamaFamily::qwen2) {
      for (size_t l = 0; l < c.layers; ++l) {
        TensorView* b = t->find_mutable(fmt::format("model.layers.{}.self_attn.q_proj.bias", l));
        ASSERT_NE(b, nullptr);
      }
    }
    const auto a = logits_of(*LlamaModel::build(c, *t, fp), tokens);
    std::vector<float> b;
    if (f == LlamaFamily::qwen2) {
      for (size_t l = 0; l < c.layers; ++l) {
        TensorView* bias = t->find_mutable(fmt::format("model.layers.{}.self_attn.k_proj.bias", l));
        std::memset(const_cast<uint8_t*>(bias->data), 0, bias->nbytes);
      }
      b = logits_of(*LlamaModel::build(c, *t, fp), tokens);
    } else {
      b = logits_of(*LlamaModel::build(off, *t, fp), tokens);
    }
    EXPECT_GT(max_abs_diff(a, b), 1e-3);
  }
}

// Per-layer sliding window (Qwen2/3 with use_sliding_window): a synthetic 2-layer qwen2 model
// with a window of 4 on layer 1 only, read from config.json (max_window_layers 1), against the
// same weights with every layer windowed and with none. By hand:
//   - a query at position p < 4 sees every earlier position anyway: all three agree exactly;
//   - past that, layer 1's window changes its attention, so "layer 1 only" differs from "none",
//     and layer 0's full attention differs from "all windowed";
//   - with layer 0's attention output zeroed (o_proj = 0), its window cannot matter: "layer 1
//     only" equals "all windowed" exactly; with layer 1's zeroed, it equals "none" exactly. So
//     the window sits on layer 1 and only there.
TEST(SlidingWindow, OnlyTheLayersTheConfigNames) {
  LlamaConfig c = small(LlamaFamily::qwen2, 64, false);
  constexpr size_t kWindow = 4;
  c.set_sliding_window(kWindow, /*first_layer=*/1);
  const auto t = synth_llama_tensors(c, std::random_device{}(), DType::F32);
  const fs::path dir = fresh_dir("qwen2-window");
  write_hf_model(dir, c, *t, DType::F32);
  const HfConfig hf = HfConfig::load(dir / "config.json");
  EXPECT_TRUE(hf.use_sliding_window);
  EXPECT_EQ(hf.sliding_window, int64_t(kWindow));
  EXPECT_EQ(hf.max_window_layers, 1);
  ModelLoadOptions fp;
  fp.mxfp4_layers = "none";
  const LoadedModel loaded = load_model(dir, fp);
  ASSERT_EQ(loaded.model->config().layer_window, (std::vector<size_t>{0, kWindow}));

  LlamaConfig all = c, none = c;
  all.set_sliding_window(kWindow);
  none.layer_window.clear();
  const std::vector<int32_t> tokens = random_tokens(16, c.vocab);
  auto logits = [&](const LlamaConfig& cfg, const TensorSource& src) {
    return logits_of(*LlamaModel::build(cfg, src, fp), tokens);
  };
  const std::vector<float> mine = logits_of(*loaded.model, tokens);
  const std::vector<float> a = logits(all, *t), n = logits(none, *t);
  EXPECT_EQ(max_abs_diff(mine, logits(c, *t)), 0.0);  // the config read = the one written
  const size_t head = kWindow * c.vocab;  // positions 0 .. window - 1
  auto part = [](const std::vector<float>& v, size_t begin, size_t end) {
    return std::vector<float>(v.begin() + begin, v.begin() + end);
  };
  EXPECT_EQ(max_abs_diff(part(mine, 0, head), part(n, 0, head)), 0.0);
  EXPECT_EQ(max_abs_diff(part(mine, 0, head), part(a, 0, head)), 0.0);
  EXPECT_GT(max_abs_diff(mine, n), 1e-3);
  EXPECT_GT(max_abs_diff(mine, a), 1e-3);

  for (size_t zeroed : {0, 1}) {
    SCOPED_TRACE(fmt::format("o_proj of layer {} zeroed", zeroed));
    const auto z = synth_llama_tensors(c, 0, DType::F32);  // same shapes, new weights
    TensorView* o = z->find_mutable(fmt::format("model.layers.{}.self_attn.o_proj.weight", zeroed));
    ASSERT_NE(o, nullptr);
    std::memset(const_cast<uint8_t*>(o->data), 0, o->nbytes);
    const std::vector<float> zm = logits(c, *z), za = logits(all, *z), zn = logits(none, *z);
    if (zeroed == 0) {
      EXPECT_EQ(max_abs_diff(zm, za), 0.0);
      EXPECT_GT(max_abs_diff(zm, zn), 1e-3);
    } else {
      EXPECT_EQ(max_abs_diff(zm, zn), 0.0);
      EXPECT_GT(max_abs_diff(zm, za), 1e-3);
    }
  }
  fs::remove_all(dir);
}

// layer_types, when not a run of last layers: written as such and honoured on read.
TEST(SlidingWindow, LayerTypesAreHonoured) {
  LlamaConfig c = small(LlamaFamily::qwen3, 64, true);
  c.layers = 3;
  c.layer_window = {4, 0, 4};
  const auto t = synth_llama_tensors(c, std::random_device{}(), DType::BF16);
  const fs::path dir = fresh_dir("qwen3-layer-types");
  write_hf_model(dir, c, *t, DType::BF16);
  const HfConfig hf = HfConfig::load(dir / "config.json");
  EXPECT_EQ(hf.layer_types,
            (std::vector<std::string>{"sliding_attention", "full_attention", "sliding_attention"}));
  ModelLoadOptions fp;
  fp.mxfp4_layers = "none";
  const LoadedModel loaded = load_model(dir, fp);
  EXPECT_EQ(loaded.model->config().layer_window, c.layer_window);
  const std::vector<int32_t> tokens = random_tokens(12, c.vocab);
  LlamaConfig suffix = c;  // what max_window_layers alone would have said
  suffix.set_sliding_window(4, 2);
  EXPECT_EQ(max_abs_diff(logits_of(*loaded.model, tokens), logits_of(*LlamaModel::build(c, *t, fp), tokens)), 0.0);
  EXPECT_GT(max_abs_diff(logits_of(*loaded.model, tokens), logits_of(*LlamaModel::build(suffix, *t, fp), tokens)), 1e-3);
  fs::remove_all(dir);
}

// Llama's attention_bias: q, k, v and o biases, written, read back and applied.
TEST(AttentionBias, LlamaBiasesOnQkvAndO) {
  LlamaConfig c = small(LlamaFamily::llama, 64, false);
  c.qkv_bias = c.o_bias = true;
  const auto t = synth_llama_tensors(c, std::random_device{}(), DType::F32);
  const fs::path dir = fresh_dir("llama-bias");
  write_hf_model(dir, c, *t, DType::F32);
  ModelLoadOptions fp;
  fp.mxfp4_layers = "none";
  const LoadedModel loaded = load_model(dir, fp);
  EXPECT_TRUE(loaded.hf.attention_bias);
  EXPECT_TRUE(loaded.model->config().qkv_bias);
  EXPECT_TRUE(loaded.model->config().o_bias);
  const std::vector<int32_t> tokens = random_tokens(8, c.vocab);
  const std::vector<float> with = logits_of(*loaded.model, tokens);
  for (size_t l = 0; l < c.layers; ++l) {
    TensorView* b = t->find_mutable(fmt::format("model.layers.{}.self_attn.o_proj.bias", l));
    ASSERT_NE(b, nullptr);
    std::memset(const_cast<uint8_t*>(b->data), 0, b->nbytes);
  }
  EXPECT_GT(max_abs_diff(with, logits_of(*LlamaModel::build(c, *t, fp), tokens)), 1e-3);
  fs::remove_all(dir);
}

TEST(Sharded, ShardedCheckpointLoadsLikeOneFile) {
  const LlamaConfig c = small(LlamaFamily::qwen3, 64, false);
  const auto t = synth_llama_tensors(c, std::random_device{}(), DType::BF16);
  const fs::path one = fresh_dir("one"), sharded = fresh_dir("sharded");
  write_hf_model(one, c, *t, DType::BF16);
  fs::create_directories(sharded);
  fs::copy_file(one / "config.json", sharded / "config.json");
  std::vector<TensorSpec> specs;
  for (const TensorView* v : t->tensors())
    specs.push_back({v->name, v->dtype, v->shape,
                     [v](uint8_t* dst, size_t n) { std::memcpy(dst, v->data, n); }});
  write_checkpoint(sharded, specs, {}, /*max_shard_bytes=*/64 * 1024);
  ASSERT_TRUE(fs::exists(sharded / "model.safetensors.index.json"));
  ASSERT_FALSE(fs::exists(sharded / "model.safetensors"));
  ModelLoadOptions o;
  const auto a = load_model(one, o), b = load_model(sharded, o);
  const std::vector<int32_t> tokens = random_tokens(9, c.vocab);
  EXPECT_EQ(max_abs_diff(logits_of(*a.model, tokens), logits_of(*b.model, tokens)), 0.0);
  fs::remove_all(one);
  fs::remove_all(sharded);
}

TEST(TiedGate, SyntheticTiedModelKeepsClassifierWithReason) {
  const LlamaConfig c = small(LlamaFamily::qwen2, 64, true);
  const auto t = synth_llama_tensors(c, std::random_device{}(), DType::BF16);
  ModelLoadOptions o;
  o.mxfp4_layers = "qkv,o,mlp,lm_head";
  const auto m = LlamaModel::build(c, *t, o);
  const LinearPlanEntry& head = m->plan().back();
  ASSERT_EQ(head.role, LinearRole::lm_head);
  EXPECT_FALSE(head.mxfp4);
  EXPECT_NE(head.reason.find("MXFP4 refused"), std::string::npos) << head.reason;
  EXPECT_NE(summarize_plan(m->plan()).find("tied to the embedding"), std::string::npos);
  // Untied: lm_head is quantized when asked.
  const LlamaConfig u = small(LlamaFamily::qwen2, 64, false);
  const auto tu = synth_llama_tensors(u, 7, DType::BF16);
  EXPECT_TRUE(LlamaModel::build(u, *tu, o)->plan().back().mxfp4);
}

// q|k|v and gate|up fused into one MXFP4 product each give the members' products exactly (rows
// are independent), on every family switch that touches them (Qwen2's qkv biases, Qwen3's q/k
// norms); a group with a full-precision member is not fused.
TEST(FusedProjections, SameLogitsAsSeparateLayers) {
  for (const LlamaFamily family : {LlamaFamily::llama, LlamaFamily::qwen2, LlamaFamily::qwen3}) {
    const LlamaConfig c = small(family, 64, false);
    SCOPED_TRACE(llama_family_name(family));
    const auto t = synth_llama_tensors(c, std::random_device{}(), DType::BF16);
    const std::vector<int32_t> tokens = random_tokens(12, c.vocab);
    for (const bool mixed : {false, true}) {
      SCOPED_TRACE(mixed ? "k_proj excluded" : "all MXFP4");
      ModelLoadOptions fused;
      fused.mxfp4_layers = "all";
      fused.max_batch_tokens = 5;
      if (mixed) fused.exclude = {"*.k_proj"};
      ModelLoadOptions apart = fused;
      apart.fuse_linears = false;
      const auto a = LlamaModel::build(c, *t, fused), b = LlamaModel::build(c, *t, apart);
      EXPECT_EQ(max_abs_diff(logits_of(*a, tokens), logits_of(*b, tokens)), 0.0);
      ASSERT_EQ(a->plan().size(), b->plan().size());
      size_t fused_entries = 0, bytes_a = 0, bytes_b = 0;
      for (size_t i = 0; i < a->plan().size(); ++i) {
        const LinearPlanEntry &ea = a->plan()[i], &eb = b->plan()[i];
        EXPECT_EQ(ea.name, eb.name);
        EXPECT_EQ(ea.mxfp4, eb.mxfp4) << ea.name;
        EXPECT_EQ(eb.reason.find("one product"), std::string::npos) << eb.reason;
        fused_entries += ea.reason.find("run as one product with the rest of") != std::string::npos;
        bytes_a += ea.weight_bytes, bytes_b += eb.weight_bytes;
      }
      // Per layer: q, k, v and gate, up; with k dense only gate and up fuse.
      EXPECT_EQ(fused_entries, c.layers * (mixed ? 2 : 5));
      // Padding to the kernels' tiles may differ, so the totals agree to a few percent.
      EXPECT_NEAR(double(bytes_a), double(bytes_b), 0.05 * double(bytes_b));
    }
  }
}

class Prequantized : public ::testing::TestWithParam<bool> {};

// GetParam(): true = gpt-oss layout (P_blocks [n, k/32, 16]), false = compressed-tensors
// (P.weight_packed [n, k/2] + P.weight_scale), the two layouts `nibble quantize` writes.
TEST_P(Prequantized, CheckpointBlocksRunLikeQuantizingAtLoad) {
  const bool gpt_oss = GetParam();
  const LlamaConfig c = small(LlamaFamily::llama, 64, false);
  const auto t = synth_llama_tensors(c, std::random_device{}(), DType::BF16);
  MemoryTensors q("prequantized");
  size_t converted = 0;
  for (const TensorView* v : t->tensors()) {
    const bool linear = v->shape.size() == 2 && v->name.find("layers.") != std::string::npos;
    if (!linear) {
      q.add(v->name, v->dtype, v->shape, v->data);
      continue;
    }
    const size_t n = size_t(v->shape[0]), k = size_t(v->shape[1]), bpr = mxfp4_blocks_per_row(k);
    const std::string base = v->name.substr(0, v->name.size() - 7);  // without ".weight"
    TensorView& blocks =
        gpt_oss ? q.add(v->name + "_blocks", DType::U8, {int64_t(n), int64_t(bpr), 16})
                : q.add(base + ".weight_packed", DType::U8, {int64_t(n), int64_t(k / 2)});
    TensorView& scales = gpt_oss
                             ? q.add(v->name + "_scales", DType::U8, {int64_t(n), int64_t(bpr)})
                             : q.add(base + ".weight_scale", DType::U8, {int64_t(n), int64_t(bpr)});
    mxfp4_quantize(v->data, v->dtype, n, k, const_cast<uint8_t*>(blocks.data),
                   const_cast<uint8_t*>(scales.data));
    ++converted;
  }
  EXPECT_EQ(converted, c.layers * 7);
  ModelLoadOptions o;
  o.mxfp4_layers = "qkv,o,mlp";
  const auto at_load = LlamaModel::build(c, *t, o);
  ModelLoadOptions none;
  none.mxfp4_layers = "none";  // prequantized layers stay MXFP4 whatever is asked
  const auto pre = LlamaModel::build(c, q, none);
  size_t pre_mx = 0;
  for (const LinearPlanEntry& e : pre->plan()) pre_mx += e.prequantized;
  EXPECT_EQ(pre_mx, c.layers * 7);
  const std::vector<int32_t> tokens = random_tokens(10, c.vocab);
  EXPECT_EQ(max_abs_diff(logits_of(*at_load, tokens), logits_of(*pre, tokens)), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Layouts, Prequantized, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "gpt_oss" : "compressed_tensors"; });


// ---- devices -------------------------------------------------------------------------------

// A cache with device rows cannot run on the CPU model (and the CPU model takes F32 only).
TEST(Devices, CacheAndActivationsMustMatchTheDevice) {
  const LlamaConfig c = small(LlamaFamily::llama, 32, false);
  const auto t = synth_llama_tensors(c, 3, DType::BF16);
  const auto m = LlamaModel::build(c, *t, ModelLoadOptions{});
  EXPECT_EQ(m->device(), DeviceKind::cpu);
  struct Elsewhere final : KvCacheStorage {
    size_t bytes() const override { return 0; }
  };
  KvCache foreign(c.layers, 8, c.kv_width(), std::make_unique<Elsewhere>());
  const int32_t token = 5;
  std::vector<float> logits(c.vocab);
  try {
    m->forward(std::span<const int32_t>(&token, 1), foreign, logits.data());
    ADD_FAILURE() << "a device cache ran on the CPU model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds device rows but the model runs on cpu"),
              std::string::npos)
        << e.what();
  }
  ModelLoadOptions bf16;
  bf16.activation = ActivationFormat::bf16;
  EXPECT_THROW(LlamaModel::build(c, *t, bf16), Error);
}

// The CUDA model against the CPU model on every family, where there is a GPU; elsewhere the
// request fails naming why (no device, or no CUDA in this build).
TEST(Devices, CudaMatchesCpuOrSaysWhyNot) {
  DeviceInfo gpu;
  try {
    gpu = cuda_device_info(0);
  } catch (const Error& e) {
    DeviceInfo absent;
    absent.kind = DeviceKind::cuda;
    ModelLoadOptions o;
    o.device = absent;
    const LlamaConfig c = small(LlamaFamily::llama, 32, false);
    const auto t = synth_llama_tensors(c, 3, DType::BF16);
    try {
      LlamaModel::build(c, *t, o);
      ADD_FAILURE() << "a CUDA model was built without a device";
    } catch (const Error& b) {
      const std::string why = b.what();
      EXPECT_TRUE(why.find("CUDA error") != std::string::npos ||
                  why.find("no CUDA support") != std::string::npos)
          << why;
    }
    GTEST_SKIP() << "no CUDA device (" << e.message() << "): checked the refusal only";
  }
  for (const Case p : {Case{LlamaFamily::llama, 64, false}, Case{LlamaFamily::mistral, 32, false},
                       Case{LlamaFamily::qwen2, 64, true}, Case{LlamaFamily::qwen3, 128, false}}) {
    const LlamaConfig c = small(p.family, p.head_dim, p.tied);
    SCOPED_TRACE(llama_family_name(c.family));
    const auto t = synth_llama_tensors(c, std::random_device{}(), DType::BF16);
    for (const char* layers : {"none", "all"}) {
      SCOPED_TRACE(layers);
      ModelLoadOptions cpu;
      cpu.mxfp4_layers = layers;
      cpu.kernels = KernelOverrides::parse("cpu_simd");  // exact activations, as the GPU's F32 path
      ModelLoadOptions cuda;
      cuda.mxfp4_layers = layers;
      cuda.device = gpu;
      const auto a = LlamaModel::build(c, *t, cpu);
      const auto b = LlamaModel::build(c, *t, cuda);
      ASSERT_EQ(b->device(), DeviceKind::cuda);
      // 3 chunks of <= 8 (two of the same shape: the second replays a captured graph)...
      const std::vector<int32_t> tokens = random_tokens(19, c.vocab);
      const std::vector<float> want = logits_of(*a, tokens), got = logits_of(*b, tokens);
      double max_logit = 0;
      for (float v : want) max_logit = std::max(max_logit, double(std::abs(v)));
      EXPECT_LT(max_abs_diff(want, got) / max_logit, 1e-4);
      // ...then decode one token at a time: the graph of a step replays at every position.
      const std::vector<float> decoded_cpu = stepped_logits(*a, tokens);
      const std::vector<float> decoded_gpu = stepped_logits(*b, tokens);
      EXPECT_LT(max_abs_diff(decoded_cpu, decoded_gpu) / max_logit, 1e-4);
      expect_greedy_steps_match(*b, tokens, decoded_gpu);
      expect_greedy_continuation_matches(*b, tokens, 30);
    }
  }
}

}  // namespace
}  // namespace nibble

#include "model/llama/synth.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <random>

#include "base/error.h"
#include "base/thread_pool.h"
#include "format/float16.h"
#include "format/mxfp4.h"
#include "format/safetensors.h"
#include "model/linear_plan.h"

namespace nibble {
namespace {

// Values [begin, end) of t from `rng`.
void fill_range(TensorView& t, std::mt19937_64& rng, float mean, float stddev, size_t begin,
                size_t end) {
  std::normal_distribution<float> dist(mean, stddev);
  uint8_t* data = const_cast<uint8_t*>(t.data);
  for (size_t i = begin; i < end; ++i) {
    const float v = dist(rng);
    if (t.dtype == DType::F32) {
      std::memcpy(data + 4 * i, &v, 4);
    } else {
      const uint16_t b = f32_to_bf16(v);
      std::memcpy(data + 2 * i, &b, 2);
    }
  }
}

constexpr size_t kParallelBlock = size_t(1) << 20;

// splitmix64: decorrelates the seeds of neighbouring blocks.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

struct Filler {
  std::mt19937_64& rng;  // the one stream (sequential fill)
  uint64_t seed;
  bool parallel;
  uint64_t tensor = 0;   // index of the next tensor (parallel fill)

  void operator()(TensorView& t, float mean, float stddev) {
    const size_t n = t.numel();
    if (!parallel) {
      fill_range(t, rng, mean, stddev, 0, n);
      return;
    }
    const uint64_t id = tensor++;
    const size_t blocks = (n + kParallelBlock - 1) / kParallelBlock;
    ThreadPool::global().parallel_for(blocks, 1, [&](size_t begin, size_t end, size_t) {
      for (size_t b = begin; b < end; ++b) {
        std::mt19937_64 block_rng(mix(mix(seed) ^ mix(id << 32 | uint64_t(b))));
        fill_range(t, block_rng, mean, stddev, b * kParallelBlock,
                   std::min(n, (b + 1) * kParallelBlock));
      }
    });
  }
};

}  // namespace

std::unique_ptr<MemoryTensors> synth_llama_tensors(const LlamaConfig& c, uint64_t seed, DType dtype,
                                                   bool parallel_fill) {
  NIBBLE_CHECK(dtype == DType::F32 || dtype == DType::BF16, "synth: dtype must be F32 or BF16");
  auto t = std::make_unique<MemoryTensors>(fmt::format("synthetic {} model", llama_family_name(c.family)));
  std::mt19937_64 rng(seed);
  Filler fill{rng, seed, parallel_fill};
  auto i64 = [](size_t v) { return int64_t(v); };
  auto linear = [&](const std::string& name, size_t n, size_t k, bool bias) {
    fill(t->add(name + ".weight", dtype, {i64(n), i64(k)}), 0, 1.0f / std::sqrt(float(k)));
    if (bias) fill(t->add(name + ".bias", dtype, {i64(n)}), 0, 0.1f);
  };
  auto norm = [&](const std::string& name, size_t n) {
    fill(t->add(name, dtype, {i64(n)}), 1.0f, 0.1f);
  };
  fill(t->add("model.embed_tokens.weight", dtype, {i64(c.vocab), i64(c.hidden)}), 0, 1.0f);
  for (size_t l = 0; l < c.layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    norm(p + "input_layernorm.weight", c.hidden);
    norm(p + "post_attention_layernorm.weight", c.hidden);
    linear(p + "self_attn.q_proj", c.q_width(), c.hidden, c.qkv_bias);
    linear(p + "self_attn.k_proj", c.kv_width(), c.hidden, c.qkv_bias);
    linear(p + "self_attn.v_proj", c.kv_width(), c.hidden, c.qkv_bias);
    linear(p + "self_attn.o_proj", c.hidden, c.q_width(), c.o_bias);
    if (c.qk_norm) {
      norm(p + "self_attn.q_norm.weight", c.head_dim);
      norm(p + "self_attn.k_norm.weight", c.head_dim);
    }
    linear(p + "mlp.gate_proj", c.ffn, c.hidden, false);
    linear(p + "mlp.up_proj", c.ffn, c.hidden, false);
    linear(p + "mlp.down_proj", c.hidden, c.ffn, false);
  }
  norm("model.norm.weight", c.hidden);
  if (!c.tied_embeddings) linear("lm_head", c.vocab, c.hidden, false);
  return t;
}

void write_hf_model(const std::filesystem::path& dir, const LlamaConfig& config,
                    const TensorSource& tensors, DType dtype) {
  std::filesystem::create_directories(dir);
  HfConfig hf = config.to_hf();
  hf.torch_dtype = dtype == DType::BF16 ? "bfloat16" : "float32";
  {
    std::ofstream out(dir / "config.json");
    out << hf.to_json();
    NIBBLE_CHECK(out.good(), "{}: cannot write config.json", dir.string());
  }
  std::vector<TensorSpec> specs;
  for (const TensorView* t : tensors.tensors())
    specs.push_back({t->name, t->dtype, t->shape, [t](uint8_t* dst, size_t n) {
                       std::memcpy(dst, t->data, n);
                     }});
  write_checkpoint(dir, specs, {{"format", "pt"}});
}

std::unique_ptr<MemoryTensors> mxfp4_round_trip(const LlamaConfig& c, const TensorSource& tensors,
                                                const std::string& mxfp4_layers, ScaleRule rule) {
  ModelLoadOptions o;
  o.mxfp4_layers = mxfp4_layers;
  o.scale_rule = rule;
  const LayerSelection selection(tensors, c.tied_embeddings, o);
  auto out = std::make_unique<MemoryTensors>(tensors.where() + " (MXFP4 round trip)");
  for (const TensorView* t : tensors.tensors()) {
    const std::string module =
        t->name.size() > 7 && t->name.ends_with(".weight") ? t->name.substr(0, t->name.size() - 7) : "";
    const LayerSelection::Decision d = module.empty() ? LayerSelection::Decision{} : selection.decide(module);
    if (!d.mxfp4 || t->shape.size() != 2) {
      out->add(t->name, t->dtype, t->shape, t->data);
      continue;
    }
    const size_t n = size_t(t->shape[0]), k = size_t(t->shape[1]), bpr = mxfp4_blocks_per_row(k);
    std::vector<uint8_t> blocks(n * bpr * kMxfp4BlockBytes), scales(n * bpr);
    Mxfp4QuantizeOptions qo;
    qo.rule = rule;
    qo.tensor_name = t->name;
    mxfp4_quantize(t->data, t->dtype, n, k, blocks.data(), scales.data(), qo);
    // BF16 holds every MXFP4 value exactly (E2M1 has 1 mantissa bit, the scale is 2^e).
    TensorView& w = out->add(t->name, DType::BF16, t->shape);
    mxfp4_dequantize(blocks.data(), scales.data(), n, k, const_cast<uint8_t*>(w.data), DType::BF16);
  }
  return out;
}

}  // namespace nibble

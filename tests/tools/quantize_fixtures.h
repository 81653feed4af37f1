// Small synthetic Hugging Face checkpoints for the quantize/inspect CLI tests, written with our
// safetensors writer: Llama-style (BF16) and gpt-oss-style (MXFP4 or BF16 fused experts).
// Values are fresh random numbers on every run.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "format/float16.h"
#include "format/mxfp4.h"
#include "format/safetensors.h"

namespace nibble::testing_quant {

namespace fs = std::filesystem;
using json = nlohmann::json;

// A fresh directory under the test temp dir, removed at the end.
struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::random_device rd;
    path = fs::path(::testing::TempDir()) / ("nibble-quant-" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
};

inline std::mt19937& rng() {
  static std::mt19937 gen(std::random_device{}());
  return gen;
}

// Random BF16 bytes of `n` elements, normal(0, scale).
inline std::vector<uint8_t> random_bf16(size_t n, float scale = 0.05f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<uint8_t> bytes(n * 2);
  for (size_t i = 0; i < n; ++i) {
    const uint16_t v = f32_to_bf16(dist(rng()));
    bytes[2 * i] = uint8_t(v);
    bytes[2 * i + 1] = uint8_t(v >> 8);
  }
  return bytes;
}

inline std::vector<uint8_t> random_bytes(size_t n) {
  std::uniform_int_distribution<int> dist(0, 255);
  std::vector<uint8_t> bytes(n);
  for (auto& b : bytes) b = uint8_t(dist(rng()));
  return bytes;
}

// Tensors kept alive for the writer's fill callbacks.
struct TensorSet {
  std::map<std::string, std::pair<TensorSpec, std::vector<uint8_t>>> tensors;
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
    auto& entry = tensors[name];
    entry.second = std::move(bytes);
    const std::vector<uint8_t>* data = &entry.second;
    entry.first = TensorSpec{name, dtype, std::move(shape),
                             [data](uint8_t* out, size_t n) { std::memcpy(out, data->data(), n); }};
  }
  void add_bf16(const std::string& name, std::vector<int64_t> shape) {
    size_t n = 1;
    for (auto d : shape) n *= size_t(d);
    add(name, DType::BF16, std::move(shape), random_bf16(n));
  }
  const std::vector<uint8_t>& bytes(const std::string& name) const { return tensors.at(name).second; }
  void write(const fs::path& dir, size_t max_shard_bytes = 0) const {
    std::vector<TensorSpec> specs;
    for (const auto& [name, entry] : tensors) specs.push_back(entry.first);
    write_checkpoint(dir, specs, {{"format", "pt"}}, max_shard_bytes);
  }
};

inline void write_json(const fs::path& path, const json& j) { std::ofstream(path) << j.dump(2); }

enum class LmHead { separate, none, copy_of_embed };

struct LlamaShape {
  int layers = 2;
  int64_t hidden = 64, ffn = 128, vocab = 96;
};

// A Llama-style BF16 checkpoint in `dir` (created), with config.json, tokenizer.json and
// generation_config.json.
inline TensorSet write_llama(const fs::path& dir, LlamaShape s = {}, LmHead head = LmHead::separate,
                             json tie = false, size_t max_shard_bytes = 0) {
  fs::create_directories(dir);
  TensorSet t;
  t.add_bf16("model.embed_tokens.weight", {s.vocab, s.hidden});
  t.add_bf16("model.norm.weight", {s.hidden});
  if (head == LmHead::separate) t.add_bf16("lm_head.weight", {s.vocab, s.hidden});
  if (head == LmHead::copy_of_embed)
    t.add("lm_head.weight", DType::BF16, {s.vocab, s.hidden}, t.bytes("model.embed_tokens.weight"));
  for (int i = 0; i < s.layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"})
      t.add_bf16(p + "self_attn." + n + ".weight", {s.hidden, s.hidden});
    t.add_bf16(p + "mlp.gate_proj.weight", {s.ffn, s.hidden});
    t.add_bf16(p + "mlp.up_proj.weight", {s.ffn, s.hidden});
    t.add_bf16(p + "mlp.down_proj.weight", {s.hidden, s.ffn});
    t.add_bf16(p + "input_layernorm.weight", {s.hidden});
    t.add_bf16(p + "post_attention_layernorm.weight", {s.hidden});
  }
  t.write(dir, max_shard_bytes);
  json config = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                 {"hidden_size", s.hidden}, {"num_hidden_layers", s.layers}, {"vocab_size", s.vocab}};
  if (!tie.is_null()) config["tie_word_embeddings"] = tie;
  write_json(dir / "config.json", config);
  write_json(dir / "tokenizer.json", {{"model", {{"type", "BPE"}}}, {"added_tokens", json::array()}});
  write_json(dir / "generation_config.json", {{"eos_token_id", 2}});
  return t;
}

// A gpt-oss-style checkpoint: attention and router BF16, experts MXFP4 (blocks/scales, random
// codes and scales near 127) or BF16 fused [E, K, N].
inline TensorSet write_gpt_oss(const fs::path& dir, bool mxfp4_experts, int layers = 1, int64_t hidden = 64,
                               int64_t inter = 64, int64_t experts = 4) {
  fs::create_directories(dir);
  TensorSet t;
  t.add_bf16("model.embed_tokens.weight", {96, hidden});
  t.add_bf16("lm_head.weight", {96, hidden});
  t.add_bf16("model.norm.weight", {hidden});
  for (int i = 0; i < layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t.add_bf16(p + "self_attn.q_proj.weight", {hidden, hidden});
    t.add_bf16(p + "self_attn.q_proj.bias", {hidden});
    t.add_bf16(p + "self_attn.k_proj.weight", {32, hidden});
    t.add_bf16(p + "self_attn.v_proj.weight", {32, hidden});
    t.add_bf16(p + "self_attn.o_proj.weight", {hidden, hidden});
    t.add_bf16(p + "self_attn.sinks", {4});
    t.add_bf16(p + "mlp.router.weight", {experts, hidden});
    t.add_bf16(p + "mlp.router.bias", {experts});
    t.add_bf16(p + "mlp.experts.gate_up_proj_bias", {experts, 2 * inter});
    t.add_bf16(p + "mlp.experts.down_proj_bias", {experts, hidden});
    if (mxfp4_experts) {
      auto scales = [&](size_t n) {
        std::uniform_int_distribution<int> d(118, 124);
        std::vector<uint8_t> s(n);
        for (auto& b : s) b = uint8_t(d(rng()));
        return s;
      };
      t.add(p + "mlp.experts.gate_up_proj_blocks", DType::U8, {experts, 2 * inter, hidden / 32, 16},
            random_bytes(size_t(experts * 2 * inter * hidden / 2)));
      t.add(p + "mlp.experts.gate_up_proj_scales", DType::U8, {experts, 2 * inter, hidden / 32},
            scales(size_t(experts * 2 * inter * hidden / 32)));
      t.add(p + "mlp.experts.down_proj_blocks", DType::U8, {experts, hidden, inter / 32, 16},
            random_bytes(size_t(experts * hidden * inter / 2)));
      t.add(p + "mlp.experts.down_proj_scales", DType::U8, {experts, hidden, inter / 32},
            scales(size_t(experts * hidden * inter / 32)));
    } else {
      t.add_bf16(p + "mlp.experts.gate_up_proj", {experts, hidden, 2 * inter});
      t.add_bf16(p + "mlp.experts.down_proj", {experts, inter, hidden});
    }
  }
  t.write(dir);
  json config = {{"architectures", {"GptOssForCausalLM"}}, {"model_type", "gpt_oss"},
                 {"tie_word_embeddings", false}, {"num_local_experts", experts}};
  if (mxfp4_experts)
    config["quantization_config"] = {
        {"quant_method", "mxfp4"},
        {"modules_to_not_convert",
         {"model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"}}};
  write_json(dir / "config.json", config);
  write_json(dir / "tokenizer.json", {{"model", {{"type", "BPE"}}}});
  return t;
}

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs a shell command line, capturing stdout and stderr.
inline RunResult run_command(const std::string& command_line) {
  ScratchDir logs;
  const std::string out_path = (logs.path / "out").string(), err_path = (logs.path / "err").string();
  const std::string cmd = "{ " + command_line + "; } >" + out_path + " 2>" + err_path;
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream o(out_path), e(err_path);
  r.out.assign(std::istreambuf_iterator<char>(o), {});
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  return r;
}

// Runs `nibble <args>` (a shell command line), capturing stdout and stderr.
inline RunResult run_nibble(const std::string& args) { return run_command(std::string(NIBBLE_BIN) + " " + args); }

// Single-quoted for the shell. (Built with append: GCC 12 warns falsely on "'" + s + "'".)
inline std::string q(const fs::path& p) {
  std::string quoted(1, '\'');
  quoted.append(p.string());
  quoted.push_back('\'');
  return quoted;
}

// Nothing of ours left in `dir`: no temp or old directories, no temp files ("X.tmp-XXXXXX",
// src/format/temp_file.h).
inline std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.find(".nibble-") != std::string::npos || n.find(".tmp-") != std::string::npos) names.push_back(n);
  }
  return names;
}

}  // namespace nibble::testing_quant

// nibble synth: a random Llama-family checkpoint (config.json + model.safetensors) of a chosen
// family and shape, for comparisons with transformers (scripts/device/llama_check.py). With
// --check, also Nibble's own results on it: logits of a random prompt and a greedy
// continuation, in full precision and with --check-layers in MXFP4, plus the MXFP4 round-trip
// weights transformers needs to reproduce the latter.
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "base/error.h"
#include "command.h"
#include "model/llama/synth.h"
#include "model/model_loader.h"
#include "model/sampler.h"

namespace nibble {
namespace {

namespace fs = std::filesystem;

struct Args {
  std::string arch = "llama", output, dtype = "bf16", check_layers = "all";
  size_t layers = 2, hidden = 256, heads = 4, kv_heads = 2, head_dim = 64, ffn = 512,
         vocab = 1024, max_seq = 512;
  bool tied = false, llama3_rope = false, parallel_fill = false;
  size_t sliding_window = 0;
  int64_t max_window_layers = -1;           // qwen2/qwen3: window layers >= this one (-1: all)
  std::vector<size_t> window_layers;        // qwen2/qwen3: window exactly these (layer_types)
  uint64_t seed = 1;
  size_t check = 0;
};

std::vector<int32_t> greedy(const LlamaModel& m, const std::vector<int32_t>& prompt, size_t n) {
  KvCache cache = m.make_cache(prompt.size() + n);
  std::vector<float> logits(m.config().vocab);
  m.forward(prompt, cache, logits.data());
  std::vector<int32_t> out;
  for (size_t i = 0; i < n; ++i) {
    const int32_t next = argmax(logits.data(), logits.size());
    out.push_back(next);
    if (i + 1 < n) m.forward(std::span<const int32_t>(&next, 1), cache, logits.data());
  }
  return out;
}

void write_f32(const fs::path& path, const std::vector<float>& v) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * 4));
  NIBBLE_CHECK(out.good(), "{}: write failed", path.string());
}

void run(const Args& a) {
  LlamaConfig c;
  c.family = llama_family_from_name(a.arch);
  c.hidden = a.hidden;
  c.ffn = a.ffn;
  c.layers = a.layers;
  c.heads = a.heads;
  c.kv_heads = a.kv_heads;
  c.head_dim = a.head_dim;
  c.vocab = a.vocab;
  c.max_seq = a.max_seq;
  c.norm_eps = 1e-6f;
  c.rope_theta = c.family == LlamaFamily::qwen2 || c.family == LlamaFamily::qwen3 ? 1000000.0 : 10000.0;
  c.tied_embeddings = a.tied;
  c.qkv_bias = c.family == LlamaFamily::qwen2;
  c.qk_norm = c.family == LlamaFamily::qwen3;
  c.bos_ids = {1};
  c.eos_ids = {2};
  NIBBLE_CHECK(c.heads % c.kv_heads == 0, "--heads {} is not a multiple of --kv-heads {}", c.heads,
               c.kv_heads);
  if (a.llama3_rope) {
    NIBBLE_CHECK(c.family == LlamaFamily::llama, "--llama3-rope needs --arch llama");
    c.rope_scaling = RopeScalingLlama3{8.0, 1.0, 4.0, 64};  // short original context: the
                                                             // scaled band is exercised
  }
  const bool qwen = c.family == LlamaFamily::qwen2 || c.family == LlamaFamily::qwen3;
  NIBBLE_CHECK(a.sliding_window || (a.max_window_layers < 0 && a.window_layers.empty()),
               "--max-window-layers / --window-layers need --sliding-window");
  if (a.sliding_window) {
    NIBBLE_CHECK(c.family == LlamaFamily::mistral || qwen,
                 "--sliding-window needs --arch mistral, qwen2 or qwen3");
    NIBBLE_CHECK(qwen || (a.max_window_layers < 0 && a.window_layers.empty()),
                 "--max-window-layers / --window-layers need --arch qwen2 or qwen3 (Mistral "
                 "windows every layer)");
    NIBBLE_CHECK(a.max_window_layers < 0 || a.window_layers.empty(),
                 "give --max-window-layers or --window-layers, not both");
    if (!a.window_layers.empty()) {
      c.layer_window.assign(c.layers, 0);
      for (size_t l : a.window_layers) {
        NIBBLE_CHECK(l < c.layers, "--window-layers: layer {} of {}", l, c.layers);
        c.layer_window[l] = a.sliding_window;
      }
    } else {
      c.set_sliding_window(a.sliding_window, size_t(std::max<int64_t>(a.max_window_layers, 0)));
    }
  }
  NIBBLE_CHECK(a.dtype == "bf16" || a.dtype == "f32", "--dtype must be bf16 or f32");
  const DType dtype = a.dtype == "bf16" ? DType::BF16 : DType::F32;
  const auto tensors = synth_llama_tensors(c, a.seed, dtype, a.parallel_fill);
  write_hf_model(a.output, c, *tensors, dtype);
  std::string windows;
  for (size_t l = 0; l < c.layer_window.size(); ++l)
    if (c.layer_window[l]) windows += fmt::format("{}{}", windows.empty() ? "" : ",", l);
  fmt::print("wrote {}: {} {} layers, hidden {}, heads {}/{} x {}, ffn {}, vocab {}, {}{}{}\n",
             a.output, a.arch, c.layers, c.hidden, c.heads, c.kv_heads, c.head_dim, c.ffn, c.vocab,
             a.tied ? "tied" : "untied", c.rope_scaling ? ", llama3 RoPE scaling" : "",
             windows.empty() ? ""
                             : fmt::format(", window {} on layers {}", a.sliding_window, windows));
  if (a.check == 0) return;

  // Nibble's results on this checkpoint, read back from disk (the path users take).
  std::mt19937 rng(uint32_t(a.seed) * 7919u + 17u);
  std::vector<int32_t> tokens(a.check);
  for (auto& t : tokens) t = int32_t(3 + rng() % (c.vocab - 3));
  nlohmann::json check;
  check["tokens"] = tokens;
  check["vocab"] = c.vocab;
  check["mxfp4_layers"] = a.check_layers;
  for (const bool mx : {false, true}) {
    ModelLoadOptions o;
    o.mxfp4_layers = mx ? a.check_layers : "none";
    // Exact activations: transformers gets the dequantized weights and F32 activations, so
    // only a kernel that rounds nothing but the weights can agree within the check's bound
    // (the int8-activation kernel is held to its rounding contract in tests/kernels).
    o.kernels = KernelOverrides::parse("cpu_simd");
    const LoadedModel m = load_model(a.output, o);
    std::vector<float> logits(tokens.size() * c.vocab);
    KvCache cache = m.model->make_cache(tokens.size());
    m.model->forward(tokens, cache, logits.data(), true);
    const std::string tag = mx ? "mxfp4" : "fp";
    write_f32(fs::path(a.output) / ("nibble_logits_" + tag + ".f32"), logits);
    check["greedy_" + tag] = greedy(*m.model, tokens, 32);
    if (mx) check["plan"] = summarize_plan(m.model->plan());
  }
  const auto round_trip = mxfp4_round_trip(c, *tensors, a.check_layers, ScaleRule::ocp);
  write_hf_model(fs::path(a.output) / "mxfp4_dequant", c, *round_trip, DType::BF16);
  std::ofstream(fs::path(a.output) / "nibble_check.json") << check.dump(1) << "\n";
  fmt::print("wrote Nibble's logits and greedy continuations ({} tokens) and mxfp4_dequant/\n",
             tokens.size());
}

void setup(CLI::App& command) {
  auto args = std::make_shared<Args>();
  command.add_option("--arch", args->arch, "llama, mistral, qwen2 or qwen3")->capture_default_str();
  command.add_option("-o,--output", args->output, "output directory")->required();
  command.add_option("--layers", args->layers)->capture_default_str();
  command.add_option("--hidden", args->hidden)->capture_default_str();
  command.add_option("--heads", args->heads)->capture_default_str();
  command.add_option("--kv-heads", args->kv_heads)->capture_default_str();
  command.add_option("--head-dim", args->head_dim)->capture_default_str();
  command.add_option("--ffn", args->ffn)->capture_default_str();
  command.add_option("--vocab", args->vocab)->capture_default_str();
  command.add_option("--max-seq", args->max_seq)->capture_default_str();
  command.add_flag("--tied", args->tied, "tie the classifier to the embedding table");
  command.add_flag("--llama3-rope", args->llama3_rope, "llama3 rope_scaling (arch llama)");
  command.add_option("--sliding-window", args->sliding_window,
                     "attention window in tokens (mistral: every layer; qwen2/qwen3: the layers "
                     "below, default all)");
  command.add_option("--max-window-layers", args->max_window_layers,
                     "qwen2/qwen3: window only the layers >= N (config max_window_layers)");
  command.add_option("--window-layers", args->window_layers,
                     "qwen2/qwen3: window only these layers (config layer_types)")
      ->delimiter(',');
  command.add_option("--seed", args->seed)->capture_default_str();
  command.add_option("--dtype", args->dtype, "bf16 or f32")->capture_default_str();
  command.add_flag("--parallel-fill", args->parallel_fill,
                   "draw the weights on every core, from one stream per 2^20 values (other "
                   "values than the default single stream; for benchmark-sized models)");
  command.add_option("--check", args->check,
                     "also write Nibble's logits for this many random tokens (see above)");
  command.add_option("--check-layers", args->check_layers, "--mxfp4-layers of the MXFP4 check")
      ->capture_default_str();
  command.callback([args] { run(*args); });
}

const bool registered = register_command(
    {"synth", "Write a random Llama-family checkpoint (for comparisons with transformers)", 80, &setup});

}  // namespace
}  // namespace nibble

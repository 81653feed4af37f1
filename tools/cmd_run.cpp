// nibble run: load a model (quantizing the chosen linear layers to MXFP4 as it loads), stream
// the continuation of a prompt, then one speed line and one line saying which layers run in
// MXFP4 on which kernels and which stayed in full precision, and why.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>

#include "command.h"
#include "model/model_loader.h"
#include "model/sampler.h"
#include "model_flags.h"
#include "tokenizer/tokenizer.h"

namespace nibble {
namespace {

struct Args {
  ModelFlags model;
  std::string prompt;
  size_t tokens = 128;
  float temperature = 0.0f;
  size_t top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
  size_t context = 0;
};

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

void run(const Args& a) {
  const ModelLoadOptions options = a.model.load_options();
  LoadedModel loaded = load_model(a.model.model, options);
  const LlamaModel& model = *loaded.model;
  if (!loaded.origin.empty()) std::fprintf(stderr, "nibble: %s\n", loaded.origin.c_str());
  for (const std::string& w : model.warnings()) std::fprintf(stderr, "nibble: warning: %s\n", w.c_str());
  const auto tokenizer = Tokenizer::load(loaded.directory);

  std::vector<int32_t> prompt = tokenizer->encode(a.prompt, /*add_special_tokens=*/true);
  NIBBLE_CHECK(!prompt.empty(), "the prompt encodes to no tokens (give -p TEXT)");
  const size_t capacity =
      a.context > 0 ? a.context : std::min(model.config().max_seq, prompt.size() + a.tokens);
  NIBBLE_CHECK(prompt.size() + a.tokens <= capacity,
               "prompt ({} tokens) + -n {} exceeds the context of {} tokens", prompt.size(),
               a.tokens, capacity);
  KvCache cache = model.make_cache(capacity);
  Sampler sampler({a.temperature, a.top_k, a.top_p, a.seed});
  StreamingDecoder decoder(*tokenizer, /*skip_special_tokens=*/true);
  std::vector<float> logits(model.config().vocab);

  // The prompt's text as the tokenizer gives it back, then the continuation, as it comes.
  for (int32_t id : prompt) std::fputs(decoder.push(id).c_str(), stdout);
  std::fflush(stdout);
  const auto t0 = Clock::now();
  model.forward(prompt, cache, logits.data());
  const double prompt_ms = ms_since(t0);

  // Each generated token is sampled from the logits at hand; all but the last also run one
  // decode forward (the speed line counts those forwards).
  const auto t1 = Clock::now();
  size_t generated = 0, steps = 0;
  while (generated < a.tokens) {
    const int32_t next = sampler.sample(logits.data(), logits.size());
    if (tokenizer->is_stop(next)) break;
    std::fputs(decoder.push(next).c_str(), stdout);
    std::fflush(stdout);
    if (++generated == a.tokens) break;
    model.forward(std::span<const int32_t>(&next, 1), cache, logits.data());
    ++steps;
  }
  const double gen_ms = ms_since(t1);
  std::fputs(decoder.finish().c_str(), stdout);
  std::fputs("\n", stdout);
  std::fflush(stdout);

  // Where it ran: the CPU's threads, or the CUDA device.
  const std::string where = model.device() == DeviceKind::cpu
                                ? fmt::format("{} threads", ThreadPool::global().size())
                                : options.device.name;
  std::fprintf(stderr,
               "speed: prompt %zu tokens, %.1f tokens/s | generated %zu tokens, %.1f tokens/s, "
               "%.2f ms/token | peak memory %.1f MiB | load %.2f s, %s\n",
               prompt.size(), prompt.size() / (prompt_ms / 1e3), generated,
               steps > 0 ? steps / (gen_ms / 1e3) : 0.0, steps > 0 ? gen_ms / steps : 0.0,
               peak_memory_mib(), loaded.load_seconds, where.c_str());
  std::fprintf(stderr, "layers: %s\n", summarize_plan(model.plan()).c_str());
}

void setup(CLI::App& command) {
  auto args = std::make_shared<Args>();
  args->model.add_to(command);
  command.add_option("-p,--prompt", args->prompt, "prompt text")->required();
  command.add_option("-n,--tokens", args->tokens, "tokens to generate")->capture_default_str();
  command.add_option("--temp", args->temperature, "temperature (0: greedy)")->capture_default_str();
  command.add_option("--top-k", args->top_k, "sample from the k most likely tokens (0: all)");
  command.add_option("--top-p", args->top_p, "nucleus sampling threshold (1: off)");
  command.add_option("--seed", args->seed, "random seed for sampling")->capture_default_str();
  command.add_option("-c,--context", args->context,
                     "KV cache positions (default: prompt + -n, at most the model's context)");
  command.callback([args] { run(*args); });
}

const bool registered = register_command(
    {"run", "Generate text from a prompt, with the chosen linear layers in MXFP4", 20, &setup});

}  // namespace
}  // namespace nibble

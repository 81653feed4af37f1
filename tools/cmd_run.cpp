// nibble run: load a model (quantizing the chosen linear layers to MXFP4 as it loads), stream
// the continuation of a prompt, then one speed line and one line saying which layers run in
// MXFP4 on which kernels and which stayed in full precision, and why.
//
// The prompt goes through the model's chat format when it has one (tokenizer_config.json's
// chat_template, chat_template.jinja, or the harmony tokens of gpt-oss): -p is one user message
// (after --system's, if given) rendered with the generation prompt, and only the reply is
// printed; for harmony the reply is parsed into channels and the final channel is shown
// (--show-reasoning adds analysis and commentary). A model without a chat format (llama2.c's
// stories260K) gets -p as plain text with BOS, and the output starts with the prompt; --raw
// does that for any model.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <utility>
#include <optional>

#include "base/error.h"
#include "command.h"
#include "model/model_loader.h"
#include "model/sampler.h"
#include "model_flags.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/harmony.h"
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
  bool raw = false, show_reasoning = false, print_prompt = false;
  std::string system, chat_template_file, reasoning_effort;
};

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// How -p becomes prompt ids, decided once from the flags and the tokenizer.
struct Prompt {
  std::vector<int32_t> ids;
  std::string text;      // what was encoded
  bool chat = false;     // rendered through the chat format: print only the reply
  bool harmony = false;  // the reply is harmony: show its final channel
};

Prompt make_prompt(const Args& a, const Tokenizer& tokenizer) {
  Prompt p;
  std::string override_text;
  if (!a.chat_template_file.empty()) {
    std::ifstream in(a.chat_template_file, std::ios::binary);
    NIBBLE_CHECK(in, "--chat-template {}: cannot open", a.chat_template_file);
    override_text.assign(std::istreambuf_iterator<char>(in), {});
  }
  const bool is_harmony = harmony::is_harmony_tokenizer(tokenizer);
  const bool has_format = !override_text.empty() || !tokenizer.chat_template().empty() || is_harmony;
  // Chat-only flags are refused where they would be ignored.
  const auto refuse_chat_flags = [&](const std::string& why) {
    for (const auto& [flag, set] : {std::pair{"--system", !a.system.empty()},
                                    std::pair{"--chat-template", !a.chat_template_file.empty()},
                                    std::pair{"--reasoning-effort", !a.reasoning_effort.empty()},
                                    std::pair{"--show-reasoning", a.show_reasoning}})
      NIBBLE_CHECK(!set, "{} needs the chat format, but {}", flag, why);
  };
  if (a.raw) refuse_chat_flags("--raw sends the prompt as plain text");
  if (!a.raw && !has_format)
    refuse_chat_flags("the model has no chat template (give one with --chat-template FILE)");
  p.chat = !a.raw && has_format;
  if (!p.chat) {
    p.text = a.prompt;
    p.ids = tokenizer.encode(a.prompt, /*add_special_tokens=*/true);
    return p;
  }
  p.harmony = is_harmony;
  NIBBLE_CHECK(!a.show_reasoning || is_harmony,
               "--show-reasoning is for harmony (gpt-oss) models; this tokenizer has no harmony tokens");
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (!a.system.empty()) messages.push_back({{"role", "system"}, {"content", a.system}});
  messages.push_back({{"role", "user"}, {"content", a.prompt}});
  ChatOptions options;
  options.add_generation_prompt = true;
  options.template_override = override_text;
  if (!a.reasoning_effort.empty()) {
    NIBBLE_CHECK(chat_format_reads(tokenizer, options, "reasoning_effort"),
                 "--reasoning-effort would be ignored: the chat template does not read reasoning_effort "
                 "(gpt-oss's harmony format does)");
    options.extra["reasoning_effort"] = a.reasoning_effort;
  }
  p.text = apply_chat_template(tokenizer, messages, options);
  p.ids = tokenizer.encode(p.text, /*add_special_tokens=*/false);  // the template writes BOS itself
  return p;
}

void run(const Args& a) {
  const ModelLoadOptions options = a.model.load_options();
  LoadedModel loaded = load_model(a.model.model, options);
  const LlamaModel& model = *loaded.model;
  if (!loaded.origin.empty()) std::fprintf(stderr, "nibble: %s\n", loaded.origin.c_str());
  for (const std::string& w : model.warnings()) std::fprintf(stderr, "nibble: warning: %s\n", w.c_str());
  const auto tokenizer = Tokenizer::load(loaded.directory);

  const Prompt rendered = make_prompt(a, *tokenizer);
  const std::vector<int32_t>& prompt = rendered.ids;
  NIBBLE_CHECK(!prompt.empty(), "the prompt encodes to no tokens (give -p TEXT)");
  if (a.print_prompt)
    std::fprintf(stderr, "prompt (%s, %zu tokens):\n%s\nprompt ids: %s\n",
                 rendered.chat ? "chat format" : "plain text", prompt.size(), rendered.text.c_str(),
                 fmt::format("{}", fmt::join(prompt, " ")).c_str());
  const size_t capacity =
      a.context > 0 ? a.context : std::min(model.config().max_seq, prompt.size() + a.tokens);
  NIBBLE_CHECK(prompt.size() + a.tokens <= capacity,
               "prompt ({} tokens) + -n {} exceeds the context of {} tokens", prompt.size(),
               a.tokens, capacity);
  KvCache cache = model.make_cache(capacity);
  Sampler sampler({a.temperature, a.top_k, a.top_p, a.seed});
  // Harmony replies are decoded with their special tokens (the channel headers) and filtered.
  StreamingDecoder decoder(*tokenizer, /*skip_special_tokens=*/!rendered.harmony);
  harmony::VisibleText visible(a.show_reasoning);
  std::string completion;      // harmony: the reply so far, special tokens spelled out
  std::string harmony_error;   // set when the reply stops being valid harmony
  const auto emit = [&](const std::string& piece) {
    if (!rendered.harmony) {
      std::fputs(piece.c_str(), stdout);
      return;
    }
    completion += piece;
    if (!harmony_error.empty()) return;
    try {
      std::fputs(visible.update(completion).c_str(), stdout);
    } catch (const Error& e) {
      harmony_error = e.message();
    }
  };
  // Runs tokens and picks the next one: greedy decoding takes the argmax on the model's device
  // (a CUDA step then copies back one token, not the logits); sampling needs the logits here.
  const bool greedy = a.temperature == 0.0f;
  std::vector<float> logits(greedy ? 0 : model.config().vocab);
  const auto step = [&](std::span<const int32_t> tokens) {
    if (greedy) return model.forward_greedy(tokens, cache);
    model.forward(tokens, cache, logits.data());
    return sampler.sample(logits.data(), logits.size());
  };

  // Plain text: the prompt's text as the tokenizer gives it back, then the continuation, as it
  // comes. Chat: only the reply.
  if (!rendered.chat)
    for (int32_t id : prompt) std::fputs(decoder.push(id).c_str(), stdout);
  std::fflush(stdout);
  const auto t0 = Clock::now();
  int32_t next = step(prompt);
  const double prompt_ms = ms_since(t0);

  // Each generated token but the last also runs one decode step (the speed line counts those).
  const auto t1 = Clock::now();
  size_t generated = 0, steps = 0;
  std::optional<int32_t> stopped_by;
  while (generated < a.tokens) {
    if (tokenizer->is_stop(next)) {
      stopped_by = next;
      break;
    }
    emit(decoder.push(next));
    std::fflush(stdout);
    if (++generated == a.tokens) break;
    next = step(std::span<const int32_t>(&next, 1));
    ++steps;
  }
  const double gen_ms = ms_since(t1);
  model.drain();  // a decode step run ahead for a call that will not come
  emit(decoder.finish());
  std::fputs("\n", stdout);
  std::fflush(stdout);
  if (rendered.harmony) {
    if (stopped_by) completion += tokenizer->id_to_piece(*stopped_by);
    if (!harmony_error.empty())
      std::fprintf(stderr, "nibble: the reply is not valid harmony (%s); the whole reply:\n%s\n",
                   harmony_error.c_str(), completion.c_str());
    else if (visible.shown().empty() && !completion.empty())
      std::fprintf(stderr, "nibble: the reply has no final-channel text%s; the whole reply:\n%s\n",
                   a.show_reasoning ? "" : " (--show-reasoning shows the other channels)", completion.c_str());
    if (stopped_by && tokenizer->id_to_piece(*stopped_by) == "<|call|>" && harmony_error.empty()) {
      const auto messages = harmony::parse_completion(completion);
      std::fprintf(stderr, "nibble: the reply ends in a tool call to %s (nibble run does not run tools)\n",
                   messages.empty() || messages.back().recipient.empty() ? "(no recipient)"
                                                                           : messages.back().recipient.c_str());
    }
  }

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
  command.add_flag("--raw", args->raw,
                   "send the prompt as plain text (with BOS), not as a user message of the model's chat "
                   "format; the default for models without one");
  command.add_option("--system", args->system, "a system message before the prompt (chat format)");
  command.add_option("--chat-template", args->chat_template_file,
                     "a Jinja chat template file replacing the model's own");
  command.add_option("--reasoning-effort", args->reasoning_effort, "harmony (gpt-oss): low, medium or high")
      ->check(CLI::IsMember({"low", "medium", "high"}));
  command.add_flag("--show-reasoning", args->show_reasoning,
                   "harmony (gpt-oss): also print the analysis and commentary channels");
  command.add_flag("--print-prompt", args->print_prompt,
                   "print the prompt text and the ids given to the model on stderr");
  command.callback([args] { run(*args); });
}

const bool registered = register_command(
    {"run", "Generate text from a prompt, with the chosen linear layers in MXFP4", 20, &setup});

}  // namespace
}  // namespace nibble

// Chat templates: tokenizer_config.json's `chat_template` (Jinja) rendered by a small Jinja
// interpreter, so a conversation becomes the exact prompt text transformers'
// apply_chat_template produces.
//
// Covered: the Jinja subset that published chat templates use (Llama 3 / 3.1, Qwen 2.5 / 3,
// Mistral / Llama 2 [INST] templates, gpt-oss's own template): text, {{ }}, {% if/elif/else %},
// {% for %} (with loop.*, else, tuple targets), {% set %} (names, namespace attributes, block
// set), {% macro %} with defaults, comments, whitespace control (-), trim_blocks and
// lstrip_blocks (as transformers configures them); expressions with literals, lists, dicts,
// attribute/item access, slices, calls, filters, tests, `in`, `is`, `~`, conditional
// expressions; the common string/dict methods and filters (trim, length, tojson, join, default,
// upper/lower, items, first/last, ...); namespace(), range(), raise_exception(),
// strftime_now(). Anything else is an error naming the template line, never a silent
// approximation; `--chat-template FILE` supplies another template.
//
// A tokenizer without a chat template that has the harmony special tokens (gpt-oss) is rendered
// by the built-in harmony renderer (tokenizer/harmony.h).
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace nibble {

class Tokenizer;

class ChatTemplate {
 public:
  // Parses a template; throws nibble::Error naming the line for syntax it does not cover.
  explicit ChatTemplate(std::string_view source);
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;

  // Renders with `context` as the global variables (messages, add_generation_prompt, tools,
  // bos_token, ... and any extra keyword arguments).
  std::string render(const nlohmann::ordered_json& context) const;
  // True when the template mentions the variable `name` anywhere (so setting it can matter).
  bool reads(std::string_view name) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct ChatOptions {
  bool add_generation_prompt = true;
  nlohmann::ordered_json tools;   // null or a list of tool (function) schemas
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();  // extra template variables, e.g.
                          // {"enable_thinking": false} (Qwen 3), {"reasoning_effort": "high"}
  std::string template_override;  // a template text that replaces the tokenizer's own
};

// The prompt text for `messages` ([{"role": ..., "content": ...}, ...]) with the tokenizer's
// chat format: its chat template, or harmony for gpt-oss tokenizers without one. Errors name what
// is missing (no template: supply one with --chat-template FILE).
std::string apply_chat_template(const Tokenizer& tokenizer, const nlohmann::ordered_json& messages,
                                const ChatOptions& options = {});

// Whether the chat format apply_chat_template would use reads the variable `name`: a Jinja
// template when it mentions it, the built-in harmony renderer for reasoning_effort,
// model_identity, current_date and builtin_tools. The CLI refuses options that would be ignored
// (--reasoning-effort with a template that has no reasoning_effort).
bool chat_format_reads(const Tokenizer& tokenizer, const ChatOptions& options, std::string_view name);

}  // namespace nibble

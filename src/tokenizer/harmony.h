// gpt-oss's harmony chat format, built in: rendering a conversation the way the published
// gpt-oss chat template does, and parsing the model's output back into messages and channels.
//
// Rendered prompt (one line per message here; there are no newlines between messages):
//   <|start|>system<|message|>{identity}\nKnowledge cutoff: 2024-06\nCurrent date: {date}\n\n
//       Reasoning: {effort}\n\n# Valid channels: analysis, commentary, final. ...<|end|>
//   <|start|>developer<|message|># Instructions\n\n{system or developer text}\n\n# Tools ...<|end|>
//   <|start|>user<|message|>{text}<|end|>
//   <|start|>assistant<|channel|>final<|message|>{text}<|end|>        (earlier turns; CoT dropped)
//   <|start|>assistant to=functions.{name}<|channel|>commentary json<|message|>{args}<|call|>
//   <|start|>functions.{name} to=assistant<|channel|>commentary<|message|>{json}<|end|>
//   <|start|>assistant                                                 (generation prompt)
// Generation stops at <|return|> (final answer done) or <|call|> (a tool call to run); <|end|>
// only ends one message (the analysis channel), after which the model starts the next one.
//
// Where a model directory ships its own template (chat_template.jinja or tokenizer_config.json),
// that template is used through the Jinja interpreter instead; this renderer is the fallback for
// tokenizers that carry the harmony tokens but no template (the npm gpt-oss package).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace nibble {
class Tokenizer;
}

namespace nibble::harmony {

// True when the vocabulary has <|start|>, <|channel|>, <|message|>, <|end|> and <|return|>.
bool is_harmony_tokenizer(const Tokenizer& tokenizer);

struct RenderOptions {
  bool add_generation_prompt = true;
  std::string reasoning_effort = "medium";  // low, medium or high
  std::string model_identity = "You are ChatGPT, a large language model trained by OpenAI.";
  std::string current_date;                 // YYYY-MM-DD; empty: today (UTC)
  nlohmann::ordered_json tools;             // function tools (OpenAI schema) or null
  std::vector<std::string> builtin_tools;   // not supported: must be empty
};

// messages: [{"role": "system"|"developer"|"user"|"assistant"|"tool", "content": ...,
// "thinking": ... (assistant analysis), "tool_calls": [{"function": {"name", "arguments"}}]}].
// Errors name the message (the same misuse the published template refuses).
std::string render_conversation(const nlohmann::ordered_json& messages, const RenderOptions& options);

struct Message {
  std::string role;          // "assistant", or the author of a tool reply
  std::string channel;       // analysis, commentary, final (empty when the header had none)
  std::string recipient;     // e.g. "functions.get_weather" for a tool call
  std::string content_type;  // e.g. "json" (after the channel in a tool call header)
  std::string content;
  std::string end;           // the token that closed it: <|end|>, <|return|>, <|call|>, or "" if cut off
  bool header_done = false;  // <|message|> was reached (false: the text ends inside the header)
};

// Parses generated text that follows the "<|start|>assistant" generation prompt (special tokens
// spelled out, as decode() gives them). Messages are split at <|end|>/<|return|>/<|call|>; the
// last one may be incomplete (end empty). Malformed headers are an error naming the position.
std::vector<Message> parse_completion(std::string_view text);
// The same from ids (decoded with special tokens kept).
std::vector<Message> parse_completion(const Tokenizer& tokenizer, std::span<const int32_t> ids);

// What a user sees of a completion while it streams (`nibble run`): the content of final-channel
// messages; with show_reasoning also the analysis and commentary messages, each message then
// introduced by a line "[channel]" ("[commentary to=functions.NAME]" for a tool call), messages
// separated by a blank line. update() takes the whole completion decoded so far (special tokens
// spelled out, as StreamingDecoder gives it without skipping them) and returns the text that
// became visible since the previous call; the concatenation of the returns is shown(). Throws
// nibble::Error where parse_completion does (a malformed header).
class VisibleText {
 public:
  explicit VisibleText(bool show_reasoning) : show_reasoning_(show_reasoning) {}
  std::string update(std::string_view completion);
  const std::string& shown() const { return shown_; }

 private:
  bool show_reasoning_;
  std::string shown_;
};

// <|return|> and <|call|>: the ids that end a harmony generation.
std::vector<int32_t> stop_ids(const Tokenizer& tokenizer);

}  // namespace nibble::harmony

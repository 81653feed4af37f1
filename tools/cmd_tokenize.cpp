// nibble tokenize: text -> ids and pieces with a model directory's tokenizer (or ids -> text).
//
//   nibble tokenize -m DIR "Hello world"          # one line per token: id, piece, text
//   nibble tokenize -m DIR --ids-only "Hello"     # ids on one line
//   nibble tokenize -m DIR --decode 1 15043 3186  # ids -> text
//   nibble tokenize -m DIR --chat "Hi"            # the chat prompt for one user message, and its ids
//   nibble tokenize -m DIR --messages chat.json [--chat-template FILE] [--reasoning-effort high]
//   nibble tokenize -m DIR --batch texts.jsonl    # one JSON string per line -> one JSON id list per line
//   nibble tokenize -m DIR --decode-batch ids.jsonl [--skip-special]  # id lists -> JSON strings
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>
#include <sstream>

#include "base/error.h"
#include "command.h"
#include "model/model_loader.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace nibble {
namespace {

struct Args {
  std::string model, text, file, batch_file, decode_batch_file, messages_file, chat_template_file, reasoning_effort;
  bool chat = false, no_generation_prompt = false;
  std::vector<int32_t> decode_ids;
  bool decode = false, no_special = false, ids_only = false, skip_special = false;
};

// Control characters and the like shown escaped, so a piece is visible on one line.
std::string visible(std::string_view s) {
  std::string out;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (u < 0x20 || u == 0x7F) out += fmt::format("\\x{:02x}", u);
    else out.push_back(c);
  }
  return out;
}

std::unique_ptr<Tokenizer> open_tokenizer(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  if (fs::is_regular_file(path) && (path.extension() == ".json" || path.extension() == ".model"))
    return Tokenizer::load(path);
  if (fs::is_directory(path) && (fs::exists(path / "tokenizer.json") || fs::exists(path / "tokenizer.model")))
    return Tokenizer::load(path);
  std::string origin;  // a llama2.c checkpoint: its converted directory
  return Tokenizer::load(resolve_model_directory(path, &origin));
}

void setup(CLI::App& command) {
  auto args = std::make_shared<Args>();
  command.add_option("-m,--model", args->model,
                     "model directory (tokenizer.json or tokenizer.model), a tokenizer file, or a "
                     "llama2.c checkpoint")
      ->required();
  command.add_option("text", args->text, "text to encode");
  command.add_option("-f,--file", args->file, "encode the contents of this file instead");
  command.add_option("--batch", args->batch_file,
                     "encode every line of a JSON-lines file (each a JSON string); print one JSON list of ids per line");
  command.add_option("--decode-batch", args->decode_batch_file,
                     "decode every line of a JSON-lines file (each a JSON list of ids); print one JSON string per line");
  command.add_flag("--no-special", args->no_special, "do not add BOS/EOS (add_special_tokens=false)");
  command.add_flag("--ids-only", args->ids_only, "print only the ids, space separated");
  command.add_flag("--decode", args->decode, "treat the arguments as ids and print their text");
  command.add_flag("--skip-special", args->skip_special, "with --decode / --decode-batch: drop special tokens");
  command.add_option("ids", args->decode_ids, "ids for --decode");
  command.add_flag("--chat", args->chat, "render TEXT as one user message with the model's chat format");
  command.add_option("--messages", args->messages_file,
                     "render a JSON list of {role, content} messages (or {messages, tools, add_generation_prompt, kwargs})");
  command.add_option("--chat-template", args->chat_template_file,
                     "a Jinja chat template file replacing the model's own");
  command.add_option("--reasoning-effort", args->reasoning_effort,
                     "with --chat/--messages, for templates that read reasoning_effort (gpt-oss harmony)")
      ->check(CLI::IsMember({"low", "medium", "high"}));
  command.add_flag("--no-generation-prompt", args->no_generation_prompt,
                   "do not end the chat prompt with the assistant header");
  command.callback([args] {
    // Chat options without a chat prompt to apply them to are refused, not ignored.
    const bool chat_prompt = args->chat || !args->messages_file.empty();
    for (const auto& [flag, set] : {std::pair{"--reasoning-effort", !args->reasoning_effort.empty()},
                                    std::pair{"--chat-template", !args->chat_template_file.empty()},
                                    std::pair{"--no-generation-prompt", args->no_generation_prompt}})
      NIBBLE_CHECK(!set || chat_prompt, "{} applies to chat prompts: add --chat or --messages FILE", flag);
    const auto tok = open_tokenizer(args->model);
    if (args->decode) {
      std::vector<int32_t> ids = args->decode_ids;
      if (!args->text.empty()) {  // the first id lands in `text`
        std::istringstream in(args->text);
        int32_t id;
        std::vector<int32_t> first;
        while (in >> id) first.push_back(id);
        ids.insert(ids.begin(), first.begin(), first.end());
      }
      fmt::print("{}\n", tok->decode(ids, args->skip_special));
      return;
    }
    if (!args->decode_batch_file.empty()) {
      std::ifstream in(args->decode_batch_file, std::ios::binary);
      NIBBLE_CHECK(in, "{}: cannot open", args->decode_batch_file);
      std::string line;
      for (size_t n = 1; std::getline(in, line); ++n) {
        std::vector<int32_t> ids;
        try {
          ids = nlohmann::json::parse(line).get<std::vector<int32_t>>();
        } catch (const nlohmann::json::exception& e) {
          NIBBLE_THROW("{}:{}: not a JSON list of ids: {}", args->decode_batch_file, n, e.what());
        }
        fmt::print("{}\n", nlohmann::json(tok->decode(ids, args->skip_special)).dump());
      }
      return;
    }
    if (!args->batch_file.empty()) {
      std::ifstream in(args->batch_file, std::ios::binary);
      NIBBLE_CHECK(in, "{}: cannot open", args->batch_file);
      std::string line;
      for (size_t n = 1; std::getline(in, line); ++n) {
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {
          NIBBLE_THROW("{}:{}: not a JSON string: {}", args->batch_file, n, e.what());
        }
        NIBBLE_CHECK(j.is_string(), "{}:{}: expected a JSON string", args->batch_file, n);
        fmt::print("[{}]\n", fmt::join(tok->encode(j.get<std::string>(), !args->no_special), ","));
      }
      return;
    }
    std::string text = args->text;
    if (!args->file.empty()) {
      std::ifstream in(args->file, std::ios::binary);
      NIBBLE_CHECK(in, "{}: cannot open", args->file);
      text.assign(std::istreambuf_iterator<char>(in), {});
    }
    bool add_special = !args->no_special;
    if (args->chat || !args->messages_file.empty()) {
      nlohmann::ordered_json messages;
      if (!args->messages_file.empty()) {
        std::ifstream in(args->messages_file, std::ios::binary);
        NIBBLE_CHECK(in, "{}: cannot open", args->messages_file);
        try {
          messages = nlohmann::ordered_json::parse(in);
        } catch (const nlohmann::json::exception& e) {
          NIBBLE_THROW("{}: invalid JSON: {}", args->messages_file, e.what());
        }
      } else {
        messages = nlohmann::ordered_json::array({{{"role", "user"}, {"content", text}}});
      }
      ChatOptions options;
      options.add_generation_prompt = !args->no_generation_prompt;
      if (messages.is_object()) {  // {"messages": [...], "tools": [...], "add_generation_prompt": b, "kwargs": {...}}
        const nlohmann::ordered_json chat = messages;
        NIBBLE_CHECK(chat.contains("messages"), "{}: an object needs a \"messages\" list", args->messages_file);
        messages = chat["messages"];
        if (chat.contains("tools")) options.tools = chat["tools"];
        if (chat.contains("add_generation_prompt")) options.add_generation_prompt = chat["add_generation_prompt"].get<bool>();
        if (chat.contains("kwargs")) options.extra = chat["kwargs"];
      }
      if (!args->chat_template_file.empty()) {
        std::ifstream in(args->chat_template_file, std::ios::binary);
        NIBBLE_CHECK(in, "{}: cannot open", args->chat_template_file);
        options.template_override.assign(std::istreambuf_iterator<char>(in), {});
      }
      if (!args->reasoning_effort.empty()) {
        NIBBLE_CHECK(chat_format_reads(*tok, options, "reasoning_effort"),
                     "--reasoning-effort would be ignored: the chat template does not read reasoning_effort "
                     "(gpt-oss's harmony format does)");
        options.extra["reasoning_effort"] = args->reasoning_effort;
      }
      text = apply_chat_template(*tok, messages, options);
      add_special = false;  // the template writes BOS itself
      if (!args->ids_only) fmt::print("# prompt:\n{}\n", text);
    }
    const std::vector<int32_t> ids = tok->encode(text, add_special);
    if (args->ids_only) {
      fmt::print("{}\n", fmt::join(ids, " "));
      return;
    }
    fmt::print("# {}\n# {} tokens for {} bytes\n", tok->describe(), ids.size(), text.size());
    for (const int32_t id : ids) {
      const int32_t one[1] = {id};
      fmt::print("{:>8}  {:<24}  {}{}\n", id, visible(tok->id_to_piece(id)), visible(tok->decode(one)),
                 tok->is_special(id) ? "  (special)" : "");
    }
  });
}

const bool registered =
    register_command({"tokenize", "Encode text with a model's tokenizer and print ids and pieces", 60, &setup});

}  // namespace
}  // namespace nibble

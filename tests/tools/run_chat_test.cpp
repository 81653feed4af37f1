// `nibble run` with a model's chat format, on a random checkpoint made by `nibble synth` and a
// byte-level tokenizer written here (id = byte value; a few added tokens above 255), so the
// expected prompt ids follow from the template by hand. --print-prompt shows the ids given to the
// model; they must equal the hand-made ids and `nibble tokenize --chat`'s. A tokenizer with the
// harmony tokens and no template goes through the built-in harmony renderer.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <sstream>

#include "quantize_fixtures.h"

namespace nibble {
namespace {

using testing_quant::q;
using testing_quant::run_nibble;
using testing_quant::RunResult;
using testing_quant::ScratchDir;
using json = nlohmann::json;
namespace fs = std::filesystem;

void append_utf8(std::string& s, char32_t cp) {
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// GPT-2's byte alphabet (what the ByteLevel pre-tokenizer maps byte b to): printable Latin-1
// bytes stand for themselves, the others for U+0100 upwards in byte order.
std::string byte_char(int b) {
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  char32_t cp = static_cast<char32_t>(b);
  if (!printable) {
    int n = 0;
    for (int k = 0; k < b; ++k)
      if (!((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174 && k <= 255))) ++n;
    cp = 256 + n;
  }
  std::string s;
  append_utf8(s, cp);
  return s;
}

// Byte-level BPE without merges: every byte is its own token, id = byte value. `added` get ids
// 256, 257, ... in order.
json byte_tokenizer(const std::vector<std::string>& added) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  json tokens = json::array();
  for (size_t i = 0; i < added.size(); ++i)
    tokens.push_back({{"id", 256 + i}, {"content", added[i]}, {"special", true}, {"normalized", false}});
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}},
          {"added_tokens", tokens},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}}};
}

void write_json(const fs::path& path, const json& j) { std::ofstream(path, std::ios::binary) << j.dump(); }

// A random 1-layer Llama checkpoint in `dir` whose vocabulary is the tokenizer's (`added` tokens
// above the 256 bytes), so every sampled id decodes.
void synth_model(const fs::path& dir, size_t added) {
  const RunResult r = run_nibble(fmt::format(
      "synth --arch llama -o {} --layers 1 --hidden 64 --heads 2 --kv-heads 1 --head-dim 32 --ffn 128 "
      "--vocab {} --max-seq 2048",
      q(dir), 256 + added));
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

// The tiny chat template: <s><|system|>S<|end|><|user|>U<|end|><|assistant|>
const char* kTemplate =
    "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}";
const std::vector<std::string> kChatTokens = {"<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"};

struct ChatModel {
  ScratchDir dir;
  explicit ChatModel(bool with_template) {
    synth_model(dir.path, kChatTokens.size());
    write_json(dir.path / "tokenizer.json", byte_tokenizer(kChatTokens));
    json config = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"add_bos_token", true}};
    if (with_template) config["chat_template"] = kTemplate;
    write_json(dir.path / "tokenizer_config.json", config);
  }
};

// The ids after "prompt ids: " in --print-prompt's stderr.
std::vector<int32_t> printed_prompt_ids(const std::string& err) {
  const size_t at = err.find("prompt ids: ");
  EXPECT_NE(at, std::string::npos) << err;
  if (at == std::string::npos) return {};
  std::istringstream line(err.substr(at + 12, err.find('\n', at) - at - 12));
  std::vector<int32_t> ids;
  for (int32_t id; line >> id;) ids.push_back(id);
  return ids;
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::istringstream in(text);
  std::vector<int32_t> ids;
  for (int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

// Token ids by hand: added token i is 256 + i, every other byte is itself.
struct Ids {
  std::vector<int32_t> v;
  Ids& token(const std::string& t) {
    const auto it = std::find(kChatTokens.begin(), kChatTokens.end(), t);
    EXPECT_NE(it, kChatTokens.end()) << t;
    v.push_back(256 + static_cast<int32_t>(it - kChatTokens.begin()));
    return *this;
  }
  Ids& text(const std::string& s) {
    for (const char c : s) v.push_back(static_cast<unsigned char>(c));
    return *this;
  }
};

const std::string kRun = "run --mxfp4-layers none -n 4 --print-prompt ";

TEST(RunChat, PromptGoesThroughTheChatTemplate) {
  const ChatModel model(true);
  const RunResult r = run_nibble(kRun + fmt::format("-m {} -p 'Hi there' --system 'Be brief'", q(model.dir.path)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("prompt (chat format, "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("<s><|system|>Be brief<|end|><|user|>Hi there<|end|><|assistant|>\n"), std::string::npos) << r.err;
  Ids want;
  want.token("<s>").token("<|system|>").text("Be brief").token("<|end|>");
  want.token("<|user|>").text("Hi there").token("<|end|>").token("<|assistant|>");
  EXPECT_EQ(printed_prompt_ids(r.err), want.v);
  // Only the reply is printed, not the prompt.
  EXPECT_EQ(r.out.find("Hi there"), std::string::npos) << r.out;

  // Without --system: the same ids as `nibble tokenize --chat`.
  const RunResult user_only = run_nibble(kRun + fmt::format("-m {} -p 'Hi there'", q(model.dir.path)));
  ASSERT_EQ(user_only.exit_code, 0) << user_only.err;
  const RunResult tokenized = run_nibble(fmt::format("tokenize -m {} --chat 'Hi there' --ids-only", q(model.dir.path)));
  ASSERT_EQ(tokenized.exit_code, 0) << tokenized.err;
  EXPECT_EQ(printed_prompt_ids(user_only.err), parse_ids(tokenized.out));
  Ids user;
  user.token("<s>").token("<|user|>").text("Hi there").token("<|end|>").token("<|assistant|>");
  EXPECT_EQ(printed_prompt_ids(user_only.err), user.v);
}

TEST(RunChat, RawSendsPlainTextWithBos) {
  const ChatModel model(true);
  const RunResult r = run_nibble(kRun + fmt::format("-m {} -p 'Hi there' --raw", q(model.dir.path)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("prompt (plain text, "), std::string::npos) << r.err;
  Ids want;
  want.token("<s>").text("Hi there");
  EXPECT_EQ(printed_prompt_ids(r.err), want.v);
  EXPECT_EQ(r.out.rfind("Hi there", 0), 0u) << r.out;  // plain text: the output starts with the prompt

  const RunResult flags = run_nibble(kRun + fmt::format("-m {} -p x --raw --system y", q(model.dir.path)));
  EXPECT_NE(flags.exit_code, 0);
  EXPECT_NE(flags.err.find("--system needs the chat format, but --raw"), std::string::npos) << flags.err;
}

TEST(RunChat, TemplateFileAndModelsWithoutTemplate) {
  const ChatModel model(false);
  // No template: plain text, and chat flags are refused rather than ignored.
  const RunResult plain = run_nibble(kRun + fmt::format("-m {} -p 'Hi'", q(model.dir.path)));
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(printed_prompt_ids(plain.err), (Ids{}.token("<s>").text("Hi").v));
  const RunResult system = run_nibble(kRun + fmt::format("-m {} -p 'Hi' --system x", q(model.dir.path)));
  EXPECT_NE(system.exit_code, 0);
  EXPECT_NE(system.err.find("no chat template (give one with --chat-template FILE)"), std::string::npos) << system.err;
  // --chat-template FILE supplies one.
  std::ofstream(model.dir.path / "chat.jinja", std::ios::binary) << kTemplate;
  const RunResult chat = run_nibble(
      kRun + fmt::format("-m {} -p 'Hi' --chat-template {}", q(model.dir.path), q(model.dir.path / "chat.jinja")));
  ASSERT_EQ(chat.exit_code, 0) << chat.err;
  EXPECT_EQ(printed_prompt_ids(chat.err), (Ids{}.token("<s>").token("<|user|>").text("Hi").token("<|end|>").token("<|assistant|>").v));
  // Harmony-only flags on a non-harmony model.
  const RunResult effort = run_nibble(kRun + fmt::format("-m {} -p 'Hi' --chat-template {} --reasoning-effort low",
                                                        q(model.dir.path), q(model.dir.path / "chat.jinja")));
  EXPECT_NE(effort.exit_code, 0);
  EXPECT_NE(effort.err.find("--reasoning-effort would be ignored: the chat template does not read"), std::string::npos)
      << effort.err;
  const RunResult bogus = run_nibble(kRun + fmt::format("-m {} -p 'Hi' --reasoning-effort extreme", q(model.dir.path)));
  EXPECT_NE(bogus.exit_code, 0);
  EXPECT_NE(bogus.err.find("extreme"), std::string::npos) << bogus.err;
}

TEST(RunChat, HarmonyTokenizerUsesTheBuiltInRenderer) {
  ScratchDir dir;
  const std::vector<std::string> harmony = {"<|startoftext|>", "<|endoftext|>", "<|start|>", "<|channel|>", "<|message|>",
                                            "<|end|>", "<|return|>", "<|call|>", "<|constrain|>"};
  synth_model(dir.path, harmony.size());
  write_json(dir.path / "tokenizer.json", byte_tokenizer(harmony));
  const std::string args = fmt::format("-m {} -p 'Hi' --reasoning-effort low --show-reasoning", q(dir.path));
  const RunResult r = run_nibble(kRun + args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("Reasoning: low"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("<|start|>user<|message|>Hi<|end|><|start|>assistant\n"), std::string::npos) << r.err;
  // The built-in renderer writes today's date: compare with tokenize before and after (midnight).
  const std::string tokenize =
      fmt::format("tokenize -m {} --chat 'Hi' --reasoning-effort low --ids-only", q(dir.path));
  const std::vector<int32_t> before = parse_ids(run_nibble(tokenize).out);
  const std::vector<int32_t> ran = printed_prompt_ids(r.err);
  const std::vector<int32_t> after = parse_ids(run_nibble(tokenize).out);
  EXPECT_TRUE(ran == before || ran == after) << r.err;
  EXPECT_EQ(ran.front(), 256 + 2);  // <|start|>
}

}  // namespace
}  // namespace nibble

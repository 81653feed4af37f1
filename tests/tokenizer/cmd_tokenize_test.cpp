// `nibble tokenize` end to end: ids, pieces, decode, chat prompts, errors.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <cstdio>
#include <sstream>

#include "oracle_support.h"
#include "tokenizer/tokenizer.h"

namespace nibble {
namespace {

namespace fs = std::filesystem;

struct CliResult {
  int rc;
  std::string out;
};

CliResult run(const std::string& args) {
  const std::string cmd = fmt::format("'{}' tokenize {} 2>&1", NIBBLE_BIN, args);
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WEXITSTATUS(status), out};
}

TEST(CmdTokenize, IdsPiecesDecodeAndChat) {
  const std::string dir = test::bundled_model_dir("llama3").string();
  const auto tok = Tokenizer::load(dir);
  const std::string text = "Hello, wörld! 12345";
  const CliResult ids = run(fmt::format("-m '{}' --ids-only '{}'", dir, text));
  ASSERT_EQ(ids.rc, 0) << ids.out;
  EXPECT_EQ(ids.out, fmt::format("{}\n", fmt::join(tok->encode(text), " ")));

  const CliResult table = run(fmt::format("-m '{}' 'Hello world'", dir));
  ASSERT_EQ(table.rc, 0) << table.out;
  EXPECT_NE(table.out.find("Ġworld"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("2 tokens for 11 bytes"), std::string::npos) << table.out;

  const CliResult decoded = run(fmt::format("-m '{}' --decode {}", dir, fmt::join(tok->encode(text, false), " ")));
  ASSERT_EQ(decoded.rc, 0) << decoded.out;
  EXPECT_EQ(decoded.out, text + "\n");

  const CliResult chat = run(fmt::format("-m '{}' --chat 'Hi'", dir));
  ASSERT_EQ(chat.rc, 0) << chat.out;
  EXPECT_NE(chat.out.find("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"), std::string::npos) << chat.out;
}

TEST(CmdTokenize, BatchMode) {
  const std::string dir = test::bundled_model_dir("gptoss").string();
  const auto tok = Tokenizer::load(dir);
  const fs::path file = fs::temp_directory_path() / fmt::format("nibble_batch_{}.jsonl", ::getpid());
  const std::vector<std::string> texts = {"", "one line", "two\nlines é 😀", "<|start|>x"};
  {
    std::ofstream out(file);
    for (const auto& t : texts) out << nlohmann::json(t).dump() << "\n";
  }
  const CliResult r = run(fmt::format("-m '{}' --batch '{}'", dir, file.string()));
  ASSERT_EQ(r.rc, 0) << r.out;
  std::string expected;
  for (const auto& t : texts) expected += fmt::format("[{}]\n", fmt::join(tok->encode(t), ","));
  EXPECT_EQ(r.out, expected);

  // --decode-batch reads those id lists back: one JSON string per line.
  std::ofstream(file, std::ios::binary) << r.out;
  for (const bool skip : {false, true}) {
    const CliResult back = run(fmt::format("-m '{}' --decode-batch '{}'{}", dir, file.string(), skip ? " --skip-special" : ""));
    ASSERT_EQ(back.rc, 0) << back.out;
    std::string want;
    for (const auto& t : texts) want += nlohmann::json(tok->decode(tok->encode(t), skip)).dump() + "\n";
    EXPECT_EQ(back.out, want) << "skip_special " << skip;
  }
  fs::remove(file);
}

TEST(CmdTokenize, ErrorsAreClear) {
  const CliResult missing = run("-m /nonexistent/model 'x'");
  EXPECT_NE(missing.rc, 0);
  EXPECT_NE(missing.out.find("nibble: error:"), std::string::npos) << missing.out;
  const CliResult no_template = run(fmt::format("-m '{}' --chat 'Hi'", test::bundled_model_dir("llama2").string()));
  EXPECT_NE(no_template.rc, 0);
  EXPECT_NE(no_template.out.find("--chat-template FILE"), std::string::npos) << no_template.out;
}

// --reasoning-effort takes low|medium|high and is refused wherever it would be ignored.
TEST(CmdTokenize, ReasoningEffortIsCheckedNotIgnored) {
  const std::string oss = test::bundled_model_dir("gptoss").string();
  const std::string llama3 = test::bundled_model_dir("llama3").string();
  const CliResult high = run(fmt::format("-m '{}' --chat 'Hi' --reasoning-effort high", oss));
  ASSERT_EQ(high.rc, 0) << high.out;
  EXPECT_NE(high.out.find("Reasoning: high"), std::string::npos) << high.out;

  const CliResult bogus = run(fmt::format("-m '{}' --chat 'Hi' --reasoning-effort extreme", oss));
  EXPECT_NE(bogus.rc, 0);
  EXPECT_NE(bogus.out.find("extreme"), std::string::npos) << bogus.out;
  EXPECT_NE(bogus.out.find("low"), std::string::npos) << bogus.out;  // the allowed values are named

  const CliResult no_chat = run(fmt::format("-m '{}' --reasoning-effort low 'Hi'", oss));
  EXPECT_NE(no_chat.rc, 0);
  EXPECT_NE(no_chat.out.find("--reasoning-effort applies to chat prompts"), std::string::npos) << no_chat.out;

  const CliResult not_read = run(fmt::format("-m '{}' --chat 'Hi' --reasoning-effort low", llama3));
  EXPECT_NE(not_read.rc, 0);
  EXPECT_NE(not_read.out.find("--reasoning-effort would be ignored"), std::string::npos) << not_read.out;

  // A template that reads it gets it.
  const fs::path tmpl = fs::temp_directory_path() / fmt::format("nibble_effort_{}.jinja", ::getpid());
  std::ofstream(tmpl) << "effort={{ reasoning_effort }}";
  const CliResult read = run(fmt::format("-m '{}' --chat 'Hi' --reasoning-effort medium --chat-template '{}'", llama3,
                                         tmpl.string()));
  fs::remove(tmpl);
  ASSERT_EQ(read.rc, 0) << read.out;
  EXPECT_NE(read.out.find("effort=medium"), std::string::npos) << read.out;
}

}  // namespace
}  // namespace nibble

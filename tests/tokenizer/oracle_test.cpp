// Every bundled tokenizer against the Node.js oracle (@lenml/tokenizers) on the whole corpus:
// ids exactly equal, decode (with and without special tokens) equal; and tokenizer.json variants
// derived from them for pipeline stages the bundled files do not use.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "oracle_support.h"
#include "tokenizer/tokenizer.h"
#include "test_files.h"

namespace nibble {
namespace {

using test::CorpusCase;
namespace fs = std::filesystem;

using nibble::test::read_text;

std::string excerpt(const std::string& s, size_t at = 0) {
  const size_t b = at > 40 ? at - 40 : 0;
  return nlohmann::json(s.substr(b, 120)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Every case through our tokenizer `tok` and the oracle's `oracle_name` (a bundled name or a
// directory): ids exactly equal, decode (with and without special tokens) of the oracle's ids
// equal. Prints one summary line.
void expect_oracle_equal(const std::string& label, const std::string& oracle_name, const Tokenizer& tok,
                         const std::vector<CorpusCase>& cases) {
  nlohmann::json request;
  request["add_special_tokens"] = true;
  request["texts"] = nlohmann::json::array();
  size_t bytes = 0;
  for (const auto& c : cases) {
    request["texts"].push_back(c.text);
    bytes += c.text.size();
  }
  const nlohmann::json answer = test::run_oracle(oracle_name, request);

  size_t id_failures = 0, decode_failures = 0, total_ids = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const std::vector<int32_t> expected = answer["encoded"][i].get<std::vector<int32_t>>();
    const std::vector<int32_t> got = tok.encode(c.text, true);
    total_ids += got.size();
    if (got != expected) {
      size_t k = 0;
      while (k < got.size() && k < expected.size() && got[k] == expected[k]) ++k;
      if (++id_failures <= 5) {
        const auto slice = [&](const std::vector<int32_t>& v) {
          std::vector<std::string> out;
          for (size_t j = k; j < std::min(v.size(), k + 8); ++j)
            out.push_back(fmt::format("{}:{}", v[j], tok.id_to_piece(v[j])));
          return fmt::format("{}", fmt::join(out, " "));
        };
        ADD_FAILURE() << label << " " << c.name << ": ids differ at index " << k << " (ours " << got.size()
                      << " ids, oracle " << expected.size() << ")\n  text near: "
                      << excerpt(c.text) << "\n  ours:   " << slice(got) << "\n  oracle: " << slice(expected);
      }
    }
    for (const bool skip : {false, true}) {
      const std::string want = answer[skip ? "decoded_skip" : "decoded"][i].get<std::string>();
      const std::string have = tok.decode(expected, skip);
      if (have != want && ++decode_failures <= 5) {
        size_t k = 0;
        while (k < have.size() && k < want.size() && have[k] == want[k]) ++k;
        ADD_FAILURE() << label << " " << c.name << ": decode(skip_special=" << skip << ") differs at byte " << k
                      << "\n  ours:   " << excerpt(have, k) << "\n  oracle: " << excerpt(want, k);
      }
    }
  }
  EXPECT_EQ(id_failures, 0u) << label << ": " << id_failures << " of " << cases.size() << " cases differ";
  EXPECT_EQ(decode_failures, 0u) << label;
  std::printf("[ oracle ] %s: %zu cases, %zu bytes, %zu ids, all equal: %s\n", label.c_str(), cases.size(), bytes,
              total_ids, id_failures + decode_failures == 0 ? "yes" : "no");
}

class OracleCorpus : public ::testing::TestWithParam<std::string> {};

TEST_P(OracleCorpus, EncodeAndDecodeMatchOracle) {
  const std::string missing = test::oracle_missing();
  ASSERT_TRUE(missing.empty()) << "tokenizer oracle unavailable: " << missing;
  const std::string name = GetParam();
  // Under AddressSanitizer the corpus runs on a prefix of each file (the full run is in the
  // release pass); the oracle comparison itself stays.
  const std::vector<CorpusCase> cases = test::load_corpus(test::kSanitized ? 16 << 10 : 0);
  ASSERT_GT(cases.size(), 20u);
  const auto tok = Tokenizer::load(test::bundled_model_dir(name));
  expect_oracle_equal(name, name, *tok, cases);
}

INSTANTIATE_TEST_SUITE_P(Bundled, OracleCorpus, ::testing::ValuesIn(test::bundled_tokenizers()),
                         [](const auto& info) { return info.param; });

// Pipeline stages no bundled tokenizer uses, on tokenizer.json files derived here from the
// bundled ones and given to both sides: Llama 2 with a Metaspace pre-tokenizer in place of its
// Prepend + Replace normalizer (split false: the JavaScript port never splits; it prepends only
// when the file also says add_prefix_space true), Qwen 3 with other normalizers and a Digits
// pre-tokenizer in front of its Split. Runs on a 64 KB prefix of each corpus file.
struct Variant {
  std::string label, base;
  std::function<void(nlohmann::json& tokenizer)> edit;
};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.label; }

nlohmann::json metaspace(const char* scheme) {
  return {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", scheme},
          {"split", false},      {"add_prefix_space", true}};
}

std::vector<Variant> variants() {
  using nlohmann::json;
  const auto qwen_normalizer = [](json n) {
    return [n](json& t) { t["normalizer"] = n; };
  };
  return {
      {"llama2_metaspace_first", "llama2", [](json& t) { t["normalizer"] = nullptr; t["pre_tokenizer"] = metaspace("first"); }},
      {"llama2_metaspace_always", "llama2", [](json& t) { t["normalizer"] = nullptr; t["pre_tokenizer"] = metaspace("always"); }},
      {"qwen3_nfkc_lowercase_strip_digits", "qwen3",
       [](json& t) {
         t["normalizer"] = {{"type", "Sequence"},
                            {"normalizers", {{{"type", "NFKC"}},
                                             {{"type", "Lowercase"}},
                                             {{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}}}}};
         // Qwen's Split isolates every \p{N} already: Digits in front must change nothing, and
         // the pipeline must still be the same on both sides.
         json& list = t["pre_tokenizer"]["pretokenizers"];
         list.insert(list.begin(), json{{"type", "Digits"}, {"individual_digits", true}});
       }},
      {"qwen3_nfd", "qwen3", qwen_normalizer({{"type", "NFD"}})},
      {"qwen3_nfkd", "qwen3", qwen_normalizer({{"type", "NFKD"}})},
  };
}

class OracleVariant : public ::testing::TestWithParam<Variant> {};

TEST_P(OracleVariant, EncodeAndDecodeMatchOracle) {
  const std::string missing = test::oracle_missing();
  ASSERT_TRUE(missing.empty()) << "tokenizer oracle unavailable: " << missing;
  const Variant& v = GetParam();
  const fs::path base = test::bundled_model_dir(v.base);
  nlohmann::json tokenizer = nlohmann::json::parse(read_text(base / "tokenizer.json"));
  v.edit(tokenizer);
  const fs::path dir = fs::temp_directory_path() / fmt::format("nibble_variant_{}_{}", ::getpid(), v.label);
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.json", std::ios::binary) << tokenizer.dump();
  fs::copy_file(base / "tokenizer_config.json", dir / "tokenizer_config.json", fs::copy_options::overwrite_existing);
  const auto tok = Tokenizer::load(dir);
  expect_oracle_equal(v.label, dir.string(), *tok, test::load_corpus(test::kSanitized ? 16 << 10 : 64 << 10));
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Derived, OracleVariant, ::testing::ValuesIn(variants()),
                         [](const auto& info) { return info.param.label; });

}  // namespace
}  // namespace nibble

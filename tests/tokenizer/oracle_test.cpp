// Every bundled tokenizer against the Node.js oracle (@lenml/tokenizers) on the whole corpus:
// ids exactly equal, decode (with and without special tokens) equal.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "oracle_support.h"
#include "tokenizer/tokenizer.h"

namespace nibble {
namespace {

using test::CorpusCase;

std::string excerpt(const std::string& s, size_t at = 0) {
  const size_t b = at > 40 ? at - 40 : 0;
  return nlohmann::json(s.substr(b, 120)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
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
  nlohmann::json request;
  request["add_special_tokens"] = true;
  request["texts"] = nlohmann::json::array();
  size_t bytes = 0;
  for (const auto& c : cases) {
    request["texts"].push_back(c.text);
    bytes += c.text.size();
  }
  const nlohmann::json answer = test::run_oracle(name, request);
  const auto tok = Tokenizer::load(test::bundled_model_dir(name));

  size_t id_failures = 0, decode_failures = 0, total_ids = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const std::vector<int32_t> expected = answer["encoded"][i].get<std::vector<int32_t>>();
    const std::vector<int32_t> got = tok->encode(c.text, true);
    total_ids += got.size();
    if (got != expected) {
      size_t k = 0;
      while (k < got.size() && k < expected.size() && got[k] == expected[k]) ++k;
      if (++id_failures <= 5) {
        const auto slice = [&](const std::vector<int32_t>& v) {
          std::vector<std::string> out;
          for (size_t j = k; j < std::min(v.size(), k + 8); ++j)
            out.push_back(fmt::format("{}:{}", v[j], tok->id_to_piece(v[j])));
          return fmt::format("{}", fmt::join(out, " "));
        };
        ADD_FAILURE() << name << " " << c.name << ": ids differ at index " << k << " (ours " << got.size()
                      << " ids, oracle " << expected.size() << ")\n  text near: "
                      << excerpt(c.text) << "\n  ours:   " << slice(got) << "\n  oracle: " << slice(expected);
      }
    }
    for (const bool skip : {false, true}) {
      const std::string want = answer[skip ? "decoded_skip" : "decoded"][i].get<std::string>();
      const std::string have = tok->decode(expected, skip);
      if (have != want && ++decode_failures <= 5) {
        size_t k = 0;
        while (k < have.size() && k < want.size() && have[k] == want[k]) ++k;
        ADD_FAILURE() << name << " " << c.name << ": decode(skip_special=" << skip << ") differs at byte " << k
                      << "\n  ours:   " << excerpt(have, k) << "\n  oracle: " << excerpt(want, k);
      }
    }
  }
  EXPECT_EQ(id_failures, 0u) << name << ": " << id_failures << " of " << cases.size() << " cases differ";
  EXPECT_EQ(decode_failures, 0u);
  std::printf("[ oracle ] %s: %zu cases, %zu bytes, %zu ids, all equal: %s\n", name.c_str(), cases.size(), bytes,
              total_ids, id_failures + decode_failures == 0 ? "yes" : "no");
}

INSTANTIATE_TEST_SUITE_P(Bundled, OracleCorpus, ::testing::ValuesIn(test::bundled_tokenizers()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace nibble

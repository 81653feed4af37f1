// Tokenizer behaviour that the oracle corpus does not cover: streaming decode, round trips on
// fresh random text, invalid UTF-8, long inputs (no quadratic blow-up), errors naming the field,
// SentencePiece .model files.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sentencepiece_trainer.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "base/error.h"
#include "oracle_support.h"
#include "tokenizer/text.h"
#include "tokenizer/tokenizer.h"

namespace nibble {
namespace {

namespace fs = std::filesystem;

const Tokenizer& bundled(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[name];
  if (!slot) {
    const fs::path dir = test::bundled_model_dir(name);
    if (!fs::exists(dir / "tokenizer.json"))
      throw std::runtime_error(dir.string() + " is missing: run scripts/setup");
    slot = Tokenizer::load(dir);
  }
  return *slot;
}

// The random tests draw a fresh seed on every run; NIBBLE_TEST_SEED=N replays one. The seed is
// printed with every failure (SCOPED_TRACE at the call site).
uint32_t test_seed() {
  if (const char* s = std::getenv("NIBBLE_TEST_SEED")) return static_cast<uint32_t>(std::stoul(s));
  return std::random_device{}();
}
std::string seed_trace(uint32_t seed) { return fmt::format("random text from NIBBLE_TEST_SEED={}", seed); }

// Random text over a mix of scripts, emoji (with ZWJ), whitespace and digits.
std::string random_text(std::mt19937& rng, size_t chars) {
  static const std::vector<char32_t> pool = {
      'a', 'b', 'e', 'k', 'z', 'A', 'Q', ' ', ' ', ' ', '\n', '\t', '0', '7', '9', '.', ',', '\'', '<', '|', '>',
      0xE9, 0xDF, 0x3A9, 0x416, 0x627, 0x644, 0x915, 0x94D, 0x4E2D, 0x6587, 0x3042, 0xAC00, 0x1F600, 0x1F468,
      0x200D, 0x1F469, 0xFE0F, 0x2764, 0x1F1FA, 0x1F1F8, 0x301, 0x2581, 0xA0, 0x3000};
  std::string s;
  std::uniform_int_distribution<size_t> pick(0, pool.size() - 1);
  for (size_t i = 0; i < chars; ++i) tokenizer::utf8_append(s, pool[pick(rng)]);
  return s;
}

class Bundled : public ::testing::TestWithParam<std::string> {};

TEST_P(Bundled, StreamingDecodeEqualsDecodeAndNeverSplitsACharacter) {
  const Tokenizer& tok = bundled(GetParam());
  const uint32_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937 rng(seed);
  for (int round = 0; round < 20; ++round) {
    const std::string text = random_text(rng, 200);
    const std::vector<int32_t> ids = tok.encode(text, true);
    for (const bool skip : {false, true}) {
      StreamingDecoder stream(tok, skip);
      std::string joined;
      for (const int32_t id : ids) {
        const std::string piece = stream.push(id);
        ASSERT_TRUE(tokenizer::utf8_is_valid(piece)) << "half a character emitted after id " << id;
        joined += piece;
      }
      joined += stream.finish();
      EXPECT_EQ(joined, tok.decode_without_cleanup(ids, skip)) << GetParam() << " text " << text;
    }
  }
}

TEST_P(Bundled, RoundTripOnRandomText) {
  const Tokenizer& tok = bundled(GetParam());
  const uint32_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937 rng(seed);
  for (int round = 0; round < 50; ++round) {
    std::string text = random_text(rng, 300);
    const std::vector<int32_t> ids = tok.encode(text, false);
    if (GetParam() == "llama2") {
      // "▁" in the text is the SentencePiece space: it comes back as " ".
      for (size_t p = text.find("\u2581"); p != std::string::npos; p = text.find("\u2581"))
        text.replace(p, 3, " ");
    }
    if (GetParam() == "qwen3") text = tokenizer::unicode_normalize(text, tokenizer::UnicodeForm::kNfc);
    // Exact for every bundled tokenizer before transformers' clean_up_tokenization_spaces...
    EXPECT_EQ(tok.decode_without_cleanup(ids), text) << GetParam();
    // ...which only Llama 3's configs turn on (lossy: " ." becomes "."); the others give the text.
    if (GetParam() != "llama3" && GetParam() != "llama3_1") EXPECT_EQ(tok.decode(ids), text) << GetParam();
  }
}

TEST_P(Bundled, InvalidUtf8IsReplacedNotRefused) {
  const Tokenizer& tok = bundled(GetParam());
  const std::string bad = "abc \xff\xfe def \xe2\x82 x \xed\xa0\x80 \xf0\x9f\x98";
  const std::string repaired = "abc \xEF\xBF\xBD\xEF\xBF\xBD def \xEF\xBF\xBD x \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD \xEF\xBF\xBD";
  EXPECT_EQ(tokenizer::utf8_repair(bad), repaired);
  EXPECT_EQ(tok.encode(bad), tok.encode(repaired));
  EXPECT_TRUE(tokenizer::utf8_is_valid(tok.decode(tok.encode(bad))));
}

TEST_P(Bundled, LongInputsAreLinear) {
  const Tokenizer& tok = bundled(GetParam());
  // 1 MB single word, 1 MB of spaces, 1 MB of digits, 1 MB of one CJK character; a generous bound
  // that only catches quadratic behaviour (quadratic on 1 MB would take hours).
  const double bound_s = test::kSanitized ? 120 : 20;
  std::string cjk;
  while (cjk.size() < (1 << 20)) cjk += "\xE4\xB8\xAD";
  const uint32_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937 rng(seed);
  std::string word;
  for (size_t i = 0; i < (1 << 20); ++i) word.push_back(static_cast<char>('a' + rng() % 26));
  for (const std::string& text : {word, std::string(1 << 20, ' '), std::string(1 << 20, '7'), cjk}) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<int32_t> ids = tok.encode(text, false);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(s, bound_s) << GetParam() << ": 1 MB input took " << s << " s";
    EXPECT_FALSE(ids.empty());
    std::string back = tok.decode(ids);
    EXPECT_EQ(back.size(), text.size()) << GetParam();
    EXPECT_TRUE(back == text) << GetParam() << ": round trip of a 1 MB input differs";
  }
}

TEST_P(Bundled, SpecialTokensAndStops) {
  const Tokenizer& tok = bundled(GetParam());
  ASSERT_TRUE(tok.eos_id().has_value());
  EXPECT_TRUE(tok.is_stop(*tok.eos_id()));
  EXPECT_TRUE(tok.is_special(*tok.eos_id()));
  const std::string eos = tok.eos_token();
  // A special token written in the text is that token.
  const std::vector<int32_t> ids = tok.encode("x" + eos + "y", false);
  EXPECT_NE(std::find(ids.begin(), ids.end(), *tok.eos_id()), ids.end());
  EXPECT_EQ(tok.decode(ids, true).find(eos), std::string::npos);
  EXPECT_GT(tok.vocab_size(), 30000u);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{static_cast<int32_t>(tok.vocab_size())}), Error);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{-1}), Error);
}

INSTANTIATE_TEST_SUITE_P(Npm, Bundled, ::testing::ValuesIn(test::bundled_tokenizers()),
                         [](const auto& info) { return info.param; });

TEST(Tokenizer, BosFromConfig) {
  EXPECT_EQ(bundled("llama2").bos_id(), 1);
  EXPECT_EQ(bundled("llama2").encode("hi", true).front(), 1);
  EXPECT_NE(bundled("llama2").encode("hi", false).front(), 1);
  const Tokenizer& oss = bundled("gptoss");
  for (const char* stop : {"<|return|>", "<|call|>"}) EXPECT_TRUE(oss.is_stop(*oss.piece_to_id(stop))) << stop;
  EXPECT_FALSE(oss.is_stop(*oss.piece_to_id("<|end|>")));
  const Tokenizer& l3 = bundled("llama3");
  EXPECT_TRUE(l3.is_stop(*l3.piece_to_id("<|eot_id|>")));
}

// ---- errors ----

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / fmt::format("nibble_tok_{}_{}", ::getpid(), std::random_device{}())) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name, std::ios::binary) << text;
  }

 private:
  fs::path path_;
};

std::string load_error(const TempDir& dir) {
  try {
    Tokenizer::load(dir.path());
  } catch (const Error& e) {
    return e.message();
  }
  return "(no error)";
}

nlohmann::json tiny_tokenizer() {
  return nlohmann::json::parse(R"({
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<unk>": 3}, "merges": ["a b"], "unk_token": "<unk>"},
    "added_tokens": [{"id": 4, "content": "<eos>", "special": true}],
    "normalizer": null, "pre_tokenizer": null, "decoder": null, "post_processor": null})");
}

TEST(TokenizerErrors, NameTheField) {
  TempDir dir;
  EXPECT_NE(load_error(dir).find("no tokenizer.json or tokenizer.model"), std::string::npos);
  dir.write("tokenizer.json", "{\"model\": ");
  EXPECT_NE(load_error(dir).find("invalid JSON"), std::string::npos) << load_error(dir);

  const auto expect = [&](nlohmann::json j, const std::string& needle) {
    dir.write("tokenizer.json", j.dump());
    const std::string msg = load_error(dir);
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg << "\nwanted: " << needle;
    EXPECT_NE(msg.find("tokenizer.json"), std::string::npos) << msg;
  };
  auto j = tiny_tokenizer();
  j["model"]["type"] = "Unigram";
  expect(j, "model.type \"Unigram\" is not supported");
  j = tiny_tokenizer();
  j["model"].erase("vocab");
  expect(j, "model.vocab is missing");
  j = tiny_tokenizer();
  j["model"]["merges"] = {"a c"};
  expect(j, "model.merges[0]");
  j = tiny_tokenizer();
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Whitespacey"}}}}};
  expect(j, "pre_tokenizer.pretokenizers[0].type \"Whitespacey\" is not supported");
  j = tiny_tokenizer();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect(j, "pre_tokenizer.pattern.Regex: invalid regex");
  j = tiny_tokenizer();
  j["decoder"] = {{"type", "Nope"}};
  expect(j, "decoder.type \"Nope\"");
  j = tiny_tokenizer();
  j["added_tokens"][0].erase("content");
  expect(j, "added_tokens[0].content is missing");
  j = tiny_tokenizer();
  j["model"]["unk_token"] = "<missing>";
  expect(j, "model.unk_token");
  j = tiny_tokenizer();
  j.erase("model");
  expect(j, "tokenizer.json: field `model` is missing");
  j = tiny_tokenizer();
  j["model"]["vocab"]["c"] = 1;  // "b" has id 1 already
  expect(j, "both have id 1");
  expect(j, "\"c\"");
  expect(j, "\"b\"");
  j = tiny_tokenizer();
  j["model"]["vocab"]["c"] = -4;
  expect(j, "model.vocab[\"c\"] must be a non-negative integer id");
}

TEST(Tokenizer, TinyModelMergesAndAddedTokenOptions) {
  TempDir dir;
  auto j = tiny_tokenizer();
  j["added_tokens"].push_back({{"id", 5}, {"content", "XY"}, {"special", false}, {"lstrip", true}, {"rstrip", true}});
  j["added_tokens"].push_back({{"id", 6}, {"content", "W"}, {"special", false}, {"single_word", true}});
  dir.write("tokenizer.json", j.dump());
  const auto tok = Tokenizer::load(dir.path());
  EXPECT_EQ(tok->encode("abab", false), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ(tok->encode("aab", false), (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(tok->encode("ab<eos>a", false), (std::vector<int32_t>{2, 4, 0}));
  // lstrip/rstrip swallow the spaces around "XY"; "W" only matches as a whole word.
  EXPECT_EQ(tok->encode("a  XY  b", false), (std::vector<int32_t>{0, 5, 1}));
  EXPECT_EQ(tok->encode("a W b", false), (std::vector<int32_t>{0, 3, 6, 3, 1}));
  EXPECT_EQ(tok->encode("aWb", false), (std::vector<int32_t>{0, 3, 1}));  // W inside a word: unk
  EXPECT_FALSE(tok->eos_id().has_value());  // no config: only the usual spellings are guessed
}

// normalized: true added tokens are matched in the normalized text with their content
// normalized the same way (Hugging Face's added vocabulary); normalized: false ones in the raw text.
TEST(Tokenizer, NormalizedAddedTokensMatchAfterTheNormalizer) {
  TempDir dir;
  auto j = tiny_tokenizer();
  j["normalizer"] = {{"type", "Lowercase"}};
  j["added_tokens"].push_back({{"id", 5}, {"content", "XY"}, {"special", false}, {"normalized", true}});
  j["added_tokens"].push_back({{"id", 6}, {"content", "QZ"}, {"special", false}, {"normalized", false}});
  dir.write("tokenizer.json", j.dump());
  const auto tok = Tokenizer::load(dir.path());
  // Spaces are not in the vocabulary: <unk> (3).
  EXPECT_EQ(tok->encode("a XY b", false), (std::vector<int32_t>{0, 3, 5, 3, 1}));
  EXPECT_EQ(tok->encode("a xy b", false), (std::vector<int32_t>{0, 3, 5, 3, 1}));
  EXPECT_EQ(tok->encode("aXyb", false), (std::vector<int32_t>{0, 5, 1}));
  // A normalized: false token matches only as written, before the normalizer runs.
  EXPECT_EQ(tok->encode("aQZb", false), (std::vector<int32_t>{0, 6, 1}));
  EXPECT_EQ(tok->encode("aqzb", false), (std::vector<int32_t>{0, 3, 3, 1}));
  EXPECT_EQ(tok->decode(std::vector<int32_t>{5}), "XY");
  EXPECT_EQ(tok->piece_to_id("XY"), 5);
}

// add_bos_token / add_eos_token of tokenizer_config.json (the Node.js oracle reads neither, so
// these are checked here): they decide for Llama-family configs and for a tokenizer.json that
// adds nothing itself; otherwise the tokenizer.json post-processor decides.
TEST(Tokenizer, AddBosAndEosTokenFromConfig) {
  const auto read_json = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return nlohmann::json::parse(in);
  };
  const std::string text = "Hello world";
  // llama2: LlamaTokenizer; llama3: PreTrainedTokenizerFast whose post-processor (ByteLevel) adds
  // nothing; llama3_1: PreTrainedTokenizerFast with a TemplateProcessing that adds BOS.
  for (const std::string name : {"llama2", "llama3", "llama3_1"}) {
    const fs::path base = test::bundled_model_dir(name);
    TempDir dir;
    fs::copy_file(base / "tokenizer.json", dir.path() / "tokenizer.json");
    nlohmann::json config = read_json(base / "tokenizer_config.json");
    const std::vector<int32_t> body = bundled(name).encode(text, false);
    const int32_t bos = *bundled(name).bos_id(), eos = *bundled(name).eos_id();
    for (const bool add_bos : {false, true}) {
      for (const bool add_eos : {false, true}) {
        config["add_bos_token"] = add_bos;
        config["add_eos_token"] = add_eos;
        dir.write("tokenizer_config.json", config.dump());
        const auto tok = Tokenizer::load(dir.path());
        std::vector<int32_t> want = body;
        if (name != "llama3_1") {  // the config decides
          if (add_bos) want.insert(want.begin(), bos);
          if (add_eos) want.push_back(eos);
        } else {  // the TemplateProcessing decides
          want.insert(want.begin(), bos);
        }
        EXPECT_EQ(tok->encode(text, true), want) << name << " add_bos_token " << add_bos << " add_eos_token " << add_eos;
        EXPECT_EQ(tok->encode(text, false), body) << name;
      }
    }
  }
  // A tokenizer.json without a post-processor: the config decides whatever the class.
  TempDir dir;
  dir.write("tokenizer.json", tiny_tokenizer().dump());
  dir.write("tokenizer_config.json", R"({"eos_token": "<eos>", "add_eos_token": true})");
  const auto tiny = Tokenizer::load(dir.path());
  EXPECT_EQ(tiny->encode("ab", true), (std::vector<int32_t>{2, 4}));
  EXPECT_EQ(tiny->encode("ab", false), (std::vector<int32_t>{2}));
}

// ---- SentencePiece .model ----

TEST(SentencePiece, ModelFileLoadsEncodesAndRoundTrips) {
  TempDir dir;
  std::string corpus;
  const uint32_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937 rng(seed);
  for (const auto& c : test::load_corpus(64 << 10)) corpus += c.text + "\n";
  dir.write("train.txt", corpus);
  const std::string args = fmt::format(
      "--input={} --model_prefix={} --vocab_size=1200 --model_type=bpe --byte_fallback=true "
      "--character_coverage=0.9995 --minloglevel=2 --num_threads=1",
      (dir.path() / "train.txt").string(), (dir.path() / "tokenizer").string());
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  ASSERT_TRUE(status.ok()) << status.ToString();
  const auto tok = Tokenizer::load(dir.path());
  EXPECT_EQ(tok->vocab_size(), 1200u);
  ASSERT_TRUE(tok->bos_id().has_value());
  for (int round = 0; round < 20; ++round) {
    const std::string text = random_text(rng, 100);
    const std::vector<int32_t> ids = tok->encode(text, true);
    EXPECT_EQ(ids.front(), *tok->bos_id());
    // SentencePiece's normalizer folds whitespace runs, so compare on a text without them.
    const std::string simple = "Hello world, 中文 and 😀 émigré 1234";
    EXPECT_EQ(tok->decode(tok->encode(simple, false)), simple);
    StreamingDecoder stream(*tok);
    std::string joined;
    for (const int32_t id : ids) joined += stream.push(id);
    joined += stream.finish();
    EXPECT_EQ(joined, tok->decode(ids));
  }
}

}  // namespace
}  // namespace nibble

#include "tokenizer/pipeline.h"

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "tokenizer/json_util.h"
#include "tokenizer/text.h"

namespace nibble::tokenizer {

using json = nlohmann::json;

namespace {

// A `pattern` object: {"String": "..."} (literal) or {"Regex": "..."}.
struct Pattern {
  std::string literal;
  std::unique_ptr<Regex> regex;

  Pattern(const json& j, const std::string& what) {
    NIBBLE_CHECK(j.is_object(), "{} must be an object with \"String\" or \"Regex\"", what);
    if (j.contains("String")) {
      literal = json_string(j, "String", what);
      NIBBLE_CHECK(!literal.empty(), "{}.String must not be empty", what);
    } else if (j.contains("Regex")) {
      regex = std::make_unique<Regex>(json_string(j, "Regex", what), what + ".Regex");
    } else {
      NIBBLE_THROW("{} must have a \"String\" or \"Regex\" member", what);
    }
  }

  void find_all(std::string_view text, std::vector<Regex::Match>& matches) const {
    if (regex) {
      regex->find_all(text, matches);
      return;
    }
    matches.clear();
    for (size_t pos = text.find(literal); pos != std::string_view::npos;
         pos = text.find(literal, pos + literal.size()))
      matches.push_back({pos, pos + literal.size()});
  }
};

// ---- normalizers ----

class NormalizerSequence final : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> stages;
  void normalize(std::string& text) const override {
    for (const auto& s : stages) s->normalize(text);
  }
};

class PrependNormalizer final : public Normalizer {
 public:
  std::string prepend;
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prepend);
  }
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(const json& j, const std::string& what)
      : pattern(json_field(j, "pattern", what), what + ".pattern"),
        content(json_string(j, "content", what)) {}
  void normalize(std::string& text) const override {
    std::vector<Regex::Match> matches;
    pattern.find_all(text, matches);
    if (matches.empty()) return;
    std::string out;
    out.reserve(text.size() + matches.size() * content.size());
    size_t last = 0;
    for (const auto& m : matches) {
      out.append(text, last, m.begin - last);
      out.append(content);
      last = m.end;
    }
    out.append(text, last);
    text = std::move(out);
  }
  Pattern pattern;
  std::string content;
};

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(UnicodeForm f) : form(f) {}
  void normalize(std::string& text) const override { text = unicode_normalize(text, form); }
  UnicodeForm form;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  void normalize(std::string& text) const override { text = unicode_lowercase(text); }
};

class StripNormalizer final : public Normalizer {
 public:
  bool left = true, right = true;
  void normalize(std::string& text) const override {
    size_t b = 0, e = text.size();
    if (left) {
      while (b < e) {
        size_t i = b;
        if (!unicode_is_whitespace(utf8_next(text, i))) break;
        b = i;
      }
    }
    if (right) {
      while (e > b) {
        size_t s = e - 1;
        while (s > b && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80) --s;
        size_t i = s;
        if (!unicode_is_whitespace(utf8_next(text, i))) break;
        e = s;
      }
    }
    text = text.substr(b, e - b);
  }
};

// ---- pre-tokenizers ----

class PreTokenizerSequence final : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> stages;
  void apply(Pieces& pieces, bool first_section) const override {
    for (const auto& s : stages) s->apply(pieces, first_section);
  }
  bool byte_level() const override {
    for (const auto& s : stages)
      if (s->byte_level()) return true;
    return false;
  }
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Splits each piece at the matches of a pattern, keeping or merging the delimiters as the
// Hugging Face `SplitDelimiterBehavior` says.
void split_pieces(Pieces& pieces, const Pattern& pattern, SplitBehavior behavior, bool invert) {
  std::vector<std::string_view> out;
  out.reserve(pieces.views.size() * 2);
  std::vector<Regex::Match> matches;
  struct Segment {
    size_t begin, end;
    bool delimiter;
  };
  std::vector<Segment> segments;
  for (const std::string_view piece : pieces.views) {
    pattern.find_all(piece, matches);
    segments.clear();
    size_t last = 0;
    for (const auto& m : matches) {
      if (m.begin > last) segments.push_back({last, m.begin, invert});
      segments.push_back({m.begin, m.end, !invert});
      last = m.end;
    }
    if (last < piece.size()) segments.push_back({last, piece.size(), invert});
    switch (behavior) {
      case SplitBehavior::kIsolated:
        for (const auto& s : segments) out.push_back(piece.substr(s.begin, s.end - s.begin));
        break;
      case SplitBehavior::kRemoved:
        for (const auto& s : segments)
          if (!s.delimiter) out.push_back(piece.substr(s.begin, s.end - s.begin));
        break;
      case SplitBehavior::kMergedWithPrevious: {
        size_t start = 0;
        bool open = false;
        for (const auto& s : segments) {
          if (s.delimiter && open) {
            out.push_back(piece.substr(start, s.end - start));
            open = false;
          } else if (s.delimiter) {
            out.push_back(piece.substr(s.begin, s.end - s.begin));
          } else {
            if (open) out.push_back(piece.substr(start, s.begin - start));
            start = s.begin;
            open = true;
          }
        }
        if (open) out.push_back(piece.substr(start));
        break;
      }
      case SplitBehavior::kMergedWithNext: {
        size_t start = 0;
        bool open = false;  // a delimiter waiting for its following text
        for (const auto& s : segments) {
          if (s.delimiter) {
            if (open) out.push_back(piece.substr(start, s.begin - start));
            start = s.begin;
            open = true;
          } else if (open) {
            out.push_back(piece.substr(start, s.end - start));
            open = false;
          } else {
            out.push_back(piece.substr(s.begin, s.end - s.begin));
          }
        }
        if (open) out.push_back(piece.substr(start));
        break;
      }
      case SplitBehavior::kContiguous: {
        for (size_t i = 0; i < segments.size();) {
          size_t j = i + 1;
          if (segments[i].delimiter)
            while (j < segments.size() && segments[j].delimiter) ++j;
          out.push_back(piece.substr(segments[i].begin, segments[j - 1].end - segments[i].begin));
          i = j;
        }
        break;
      }
    }
  }
  pieces.views = std::move(out);
}

SplitBehavior parse_behavior(const std::string& b, const std::string& what) {
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  NIBBLE_THROW("{}.behavior {:?} is not one of Removed, Isolated, MergedWithPrevious, "
               "MergedWithNext, Contiguous", what, b);
}

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(const json& j, const std::string& what)
      : pattern(json_field(j, "pattern", what), what + ".pattern"),
        behavior(parse_behavior(json_string(j, "behavior", what), what)),
        invert(j.value("invert", false)) {}
  void apply(Pieces& pieces, bool) const override { split_pieces(pieces, pattern, behavior, invert); }
  Pattern pattern;
  SplitBehavior behavior;
  bool invert;
};

// GPT-2's own split, used by ByteLevel when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(const json& j, const std::string& what)
      : add_prefix_space(j.value("add_prefix_space", true)) {
    if (j.value("use_regex", true))
      pattern = std::make_unique<Pattern>(json{{"Regex", kGpt2Pattern}}, what + " (GPT-2 regex)");
  }
  void apply(Pieces& pieces, bool) const override {
    if (add_prefix_space) {
      for (auto& v : pieces.views) {
        if (!v.empty() && v.front() != ' ') {
          pieces.storage.push_back(" " + std::string(v));
          v = pieces.storage.back();
        }
      }
    }
    if (pattern) split_pieces(pieces, *pattern, SplitBehavior::kIsolated, false);
    // The mapping to the byte alphabet itself is done by the model (BpeModel works on bytes).
  }
  bool byte_level() const override { return true; }
  bool add_prefix_space;
  std::unique_ptr<Pattern> pattern;
};

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(const json& j, const std::string& what)
      : replacement(json_string(j, "replacement", what)), split(j.value("split", true)) {
    std::string scheme = "always";
    if (j.contains("prepend_scheme")) {
      scheme = json_string(j, "prepend_scheme", what);
    } else if (j.contains("add_prefix_space")) {
      scheme = j.at("add_prefix_space").get<bool>() ? "always" : "never";
    }
    NIBBLE_CHECK(scheme == "always" || scheme == "first" || scheme == "never",
                 "{}.prepend_scheme {:?} is not one of always, first, never", what, scheme);
    prepend = scheme == "always" ? 2 : scheme == "first" ? 1 : 0;
    delimiter = std::make_unique<Pattern>(json{{"String", replacement}}, what);
  }
  void apply(Pieces& pieces, bool first_section) const override {
    for (auto& v : pieces.views) {
      std::string s;
      s.reserve(v.size() + replacement.size());
      for (const char c : v) {
        if (c == ' ')
          s += replacement;
        else
          s.push_back(c);
      }
      if ((prepend == 2 || (prepend == 1 && first_section)) && !s.starts_with(replacement))
        s.insert(0, replacement);
      pieces.storage.push_back(std::move(s));
      v = pieces.storage.back();
    }
    if (split) split_pieces(pieces, *delimiter, SplitBehavior::kMergedWithNext, false);
  }
  std::string replacement;
  bool split;
  int prepend;
  std::unique_ptr<Pattern> delimiter;
};

class DigitsPreTokenizer final : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual)
      : pattern(json{{"Regex", individual ? R"(\p{N})" : R"(\p{N}+)"}}, "Digits"),
        individual_digits(individual) {}
  void apply(Pieces& pieces, bool) const override {
    split_pieces(pieces, pattern, individual_digits ? SplitBehavior::kIsolated
                                                    : SplitBehavior::kContiguous, false);
  }
  Pattern pattern;
  bool individual_digits;
};

// ---- decoders ----

class DecoderSequence final : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> stages;
  void decode_chain(DecodeTokens& tokens) const override {
    for (const auto& s : stages) s->decode_chain(tokens);
  }
};

void fuse(DecodeTokens& tokens) {
  std::string all;
  for (const auto& t : tokens.text) all += t;
  tokens.text.assign(1, std::move(all));
  tokens.added.assign(1, 0);
}

class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(DecodeTokens& tokens) const override {
    std::string bytes;
    for (size_t k = 0; k < tokens.text.size(); ++k) {
      const std::string& t = tokens.text[k];
      if (tokens.added[k]) {
        bytes += t;
        continue;
      }
      const size_t start = bytes.size();
      bool ok = true;
      for (size_t i = 0; i < t.size() && ok;) {
        const int b = unicode_to_byte(utf8_next(t, i));
        if (b < 0)
          ok = false;
        else
          bytes.push_back(static_cast<char>(b));
      }
      if (!ok) {  // not in the byte alphabet: keep the token's own text
        bytes.resize(start);
        bytes += t;
      }
    }
    tokens.text.assign(1, utf8_repair(bytes));
    tokens.added.assign(1, 0);
  }
};

class ByteFallbackDecoder final : public Decoder {
 public:
  static int byte_of(const std::string& t) {
    if (t.size() != 6 || !t.starts_with("<0x") || t[5] != '>') return -1;
    const auto hex = [](char c) {
      return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    };
    const int hi = hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
  void decode_chain(DecodeTokens& tokens) const override {
    DecodeTokens out;
    std::string pending;
    const auto flush = [&] {
      if (pending.empty()) return;
      // The reference emits one U+FFFD per byte when the bytes are not valid UTF-8.
      if (utf8_is_valid(pending)) {
        out.text.push_back(pending);
      } else {
        std::string repl;
        for (size_t i = 0; i < pending.size(); ++i) repl += "\xEF\xBF\xBD";
        out.text.push_back(std::move(repl));
      }
      out.added.push_back(0);
      pending.clear();
    };
    for (size_t k = 0; k < tokens.text.size(); ++k) {
      const int b = tokens.added[k] ? -1 : byte_of(tokens.text[k]);
      if (b >= 0) {
        pending.push_back(static_cast<char>(b));
        continue;
      }
      flush();
      out.text.push_back(std::move(tokens.text[k]));
      out.added.push_back(tokens.added[k]);
    }
    flush();
    tokens = std::move(out);
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(DecodeTokens& tokens) const override { fuse(tokens); }
};

class StripDecoder final : public Decoder {
 public:
  std::string content;
  size_t start = 0, stop = 0;
  void decode_chain(DecodeTokens& tokens) const override {
    for (auto& t : tokens.text) {
      size_t b = 0, e = t.size();
      for (size_t i = 0; i < start && t.compare(b, content.size(), content) == 0 && b < e; ++i)
        b += content.size();
      for (size_t i = 0; i < stop && e >= b + content.size() &&
                         t.compare(e - content.size(), content.size(), content) == 0;
           ++i)
        e -= content.size();
      t = t.substr(b, e - b);
    }
  }
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(const json& j, const std::string& what) : replace(j, what) {}
  void decode_chain(DecodeTokens& tokens) const override {
    for (auto& t : tokens.text) replace.normalize(t);
  }
  ReplaceNormalizer replace;
};

class MetaspaceDecoder final : public Decoder {
 public:
  std::string replacement;
  bool strip_first = true;
  void decode_chain(DecodeTokens& tokens) const override {
    for (size_t k = 0; k < tokens.text.size(); ++k) {
      std::string& t = tokens.text[k];
      std::string s;
      for (size_t i = 0; i < t.size();) {
        if (t.compare(i, replacement.size(), replacement) == 0) {
          s.push_back(' ');
          i += replacement.size();
        } else {
          s.push_back(t[i++]);
        }
      }
      if (k == 0 && strip_first && s.starts_with(' ')) s.erase(0, 1);
      t = std::move(s);
    }
  }
};

}  // namespace

std::unique_ptr<Normalizer> Normalizer::from_json(const json& j, const std::string& what) {
  const std::string type = json_string(j, "type", what);
  if (type == "Sequence") {
    auto seq = std::make_unique<NormalizerSequence>();
    const json& list = json_field(j, "normalizers", what);
    for (size_t i = 0; i < list.size(); ++i)
      seq->stages.push_back(from_json(list[i], fmt::format("{}.normalizers[{}]", what, i)));
    return seq;
  }
  if (type == "Prepend") {
    auto n = std::make_unique<PrependNormalizer>();
    n->prepend = json_string(j, "prepend", what);
    return n;
  }
  if (type == "Replace") return std::make_unique<ReplaceNormalizer>(j, what);
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNfc);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNfd);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNfkd);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip") {
    auto n = std::make_unique<StripNormalizer>();
    n->left = j.value("strip_left", true);
    n->right = j.value("strip_right", true);
    return n;
  }
  NIBBLE_THROW("{}.type {:?} is not supported (supported: Sequence, Prepend, Replace, NFC, NFD, "
               "NFKC, NFKD, Lowercase, Strip)", what, type);
}

std::unique_ptr<PreTokenizer> PreTokenizer::from_json(const json& j, const std::string& what) {
  const std::string type = json_string(j, "type", what);
  if (type == "Sequence") {
    auto seq = std::make_unique<PreTokenizerSequence>();
    const json& list = json_field(j, "pretokenizers", what);
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string item = fmt::format("{}.pretokenizers[{}]", what, i);
      NIBBLE_CHECK(!seq->byte_level(),
                   "{}: a pre-tokenizer after ByteLevel is not supported (ByteLevel must be last)", item);
      seq->stages.push_back(from_json(list[i], item));
    }
    return seq;
  }
  if (type == "Split") return std::make_unique<SplitPreTokenizer>(j, what);
  if (type == "ByteLevel") return std::make_unique<ByteLevelPreTokenizer>(j, what);
  if (type == "Metaspace") return std::make_unique<MetaspacePreTokenizer>(j, what);
  if (type == "Digits") return std::make_unique<DigitsPreTokenizer>(j.value("individual_digits", false));
  NIBBLE_THROW("{}.type {:?} is not supported (supported: Sequence, Split, ByteLevel, Metaspace, "
               "Digits)", what, type);
}

PostProcessor PostProcessor::bos_eos(std::vector<int32_t> prefix, std::vector<int32_t> suffix) {
  PostProcessor p;
  p.prefix_ = std::move(prefix);
  p.suffix_ = std::move(suffix);
  return p;
}

PostProcessor PostProcessor::from_json(const json& j, const std::string& what,
                                       const std::map<std::string, int32_t>& token_ids) {
  PostProcessor p;
  const std::string type = json_string(j, "type", what);
  const auto id_of = [&](const std::string& token, const std::string& field) {
    const auto it = token_ids.find(token);
    NIBBLE_CHECK(it != token_ids.end(), "{}: special token {:?} is not in the vocabulary", field, token);
    return it->second;
  };
  if (type == "ByteLevel") return p;  // offsets only
  if (type == "Sequence") {
    const json& list = json_field(j, "processors", what);
    for (size_t i = 0; i < list.size(); ++i) {
      const PostProcessor q = from_json(list[i], fmt::format("{}.processors[{}]", what, i), token_ids);
      p.prefix_.insert(p.prefix_.end(), q.prefix_.begin(), q.prefix_.end());
      p.suffix_.insert(p.suffix_.begin(), q.suffix_.begin(), q.suffix_.end());
    }
    return p;
  }
  if (type == "TemplateProcessing") {
    const json& single = json_field(j, "single", what);
    const json& specials = j.contains("special_tokens") ? j.at("special_tokens") : json::object();
    bool seen_sequence = false;
    for (size_t i = 0; i < single.size(); ++i) {
      const std::string item = fmt::format("{}.single[{}]", what, i);
      if (single[i].contains("Sequence")) {
        NIBBLE_CHECK(!seen_sequence, "{}: more than one sequence in a single-sequence template", item);
        seen_sequence = true;
        continue;
      }
      const json& special = json_field(single[i], "SpecialToken", item);
      const std::string name = json_string(special, "id", item + ".SpecialToken");
      std::vector<int32_t> ids;
      if (specials.contains(name)) {
        for (const auto& id : json_field(specials.at(name), "ids", what + ".special_tokens." + name))
          ids.push_back(id.get<int32_t>());
      } else {
        ids.push_back(id_of(name, item));
      }
      auto& dst = seen_sequence ? p.suffix_ : p.prefix_;
      dst.insert(dst.end(), ids.begin(), ids.end());
    }
    NIBBLE_CHECK(seen_sequence, "{}.single has no Sequence item", what);
    return p;
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    const json& cls = json_field(j, "cls", what);
    const json& sep = json_field(j, "sep", what);
    p.prefix_.push_back(cls.at(1).get<int32_t>());
    p.suffix_.push_back(sep.at(1).get<int32_t>());
    return p;
  }
  NIBBLE_THROW("{}.type {:?} is not supported (supported: TemplateProcessing, ByteLevel, Sequence, "
               "RobertaProcessing, BertProcessing)", what, type);
}

void PostProcessor::apply(std::vector<int32_t>& ids) const {
  if (!prefix_.empty()) ids.insert(ids.begin(), prefix_.begin(), prefix_.end());
  ids.insert(ids.end(), suffix_.begin(), suffix_.end());
}

std::unique_ptr<Decoder> Decoder::from_json(const json& j, const std::string& what) {
  const std::string type = json_string(j, "type", what);
  if (type == "Sequence") {
    auto seq = std::make_unique<DecoderSequence>();
    const json& list = json_field(j, "decoders", what);
    for (size_t i = 0; i < list.size(); ++i)
      seq->stages.push_back(from_json(list[i], fmt::format("{}.decoders[{}]", what, i)));
    return seq;
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    auto d = std::make_unique<StripDecoder>();
    d->content = json_string(j, "content", what);
    d->start = j.value("start", 0);
    d->stop = j.value("stop", 0);
    return d;
  }
  if (type == "Replace") return std::make_unique<ReplaceDecoder>(j, what);
  if (type == "Metaspace") {
    auto d = std::make_unique<MetaspaceDecoder>();
    d->replacement = json_string(j, "replacement", what);
    if (j.contains("prepend_scheme"))
      d->strip_first = json_string(j, "prepend_scheme", what) != "never";
    else
      d->strip_first = j.value("add_prefix_space", true);
    return d;
  }
  NIBBLE_THROW("{}.type {:?} is not supported (supported: Sequence, ByteLevel, ByteFallback, Fuse, "
               "Strip, Replace, Metaspace)", what, type);
}

std::string clean_up_tokenization(std::string_view text) {
  static const std::pair<std::string_view, std::string_view> kRules[] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  std::string s(text);
  for (const auto& [from, to] : kRules) {
    if (s.find(from) == std::string::npos) continue;
    std::string out;
    size_t last = 0;
    for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, last)) {
      out.append(s, last, pos - last);
      out.append(to);
      last = pos + from.size();
    }
    out.append(s, last);
    s = std::move(out);
  }
  return s;
}

}  // namespace nibble::tokenizer

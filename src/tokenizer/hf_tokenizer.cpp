// The tokenizer.json implementation of Tokenizer (Hugging Face `tokenizers` format).
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <map>
#include <unordered_map>

#include "base/error.h"
#include "tokenizer/backends.h"
#include "tokenizer/bpe.h"
#include "tokenizer/json_util.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/text.h"

namespace nibble::tokenizer {

using json = nlohmann::json;

namespace {

struct AddedToken {
  std::string content;
  int32_t id;
  bool special, lstrip, rstrip, single_word, normalized;
};

bool is_word_char(char32_t cp) { return cp == '_' || unicode_is_alphanumeric(cp); }

// Finds added tokens in a text: at each position the longest token that starts there wins, the
// leftmost position first (the reference's leftmost-longest rule). A byte trie; positions whose
// byte starts no token are skipped with one table lookup.
class AddedTokenMatcher {
 public:
  struct Hit {
    size_t begin, end;
    size_t token;  // index into the added-token list
  };

  void add(std::string_view content, size_t token) {
    if (content.empty()) return;
    int32_t node = 0;
    for (const char c : content) {
      int32_t child = find_child(node, static_cast<unsigned char>(c));
      if (child < 0) {
        child = static_cast<int32_t>(nodes_.size());
        nodes_.emplace_back();
        nodes_[node].children.push_back({static_cast<unsigned char>(c), child});
      }
      node = child;
    }
    nodes_[node].token = static_cast<int32_t>(token);
    first_byte_[static_cast<unsigned char>(content[0])] = true;
    empty_ = false;
  }
  bool empty() const { return empty_; }

  void find(std::string_view text, const std::vector<AddedToken>& tokens, std::vector<Hit>& hits) const {
    hits.clear();
    if (empty_) return;
    for (size_t i = 0; i < text.size();) {
      if (!first_byte_[static_cast<unsigned char>(text[i])]) {
        ++i;
        continue;
      }
      int32_t node = 0;
      int32_t best = -1;
      size_t best_end = 0;
      for (size_t j = i; j < text.size(); ++j) {
        node = find_child(node, static_cast<unsigned char>(text[j]));
        if (node < 0) break;
        const int32_t t = nodes_[node].token;
        if (t >= 0 && (!tokens[t].single_word || word_bounded(text, i, j + 1))) {
          best = t;
          best_end = j + 1;
        }
      }
      if (best >= 0) {
        hits.push_back({i, best_end, static_cast<size_t>(best)});
        i = best_end;
      } else {
        ++i;
      }
    }
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t token = -1;
  };
  int32_t find_child(int32_t node, unsigned char c) const {
    for (const auto& [b, child] : nodes_[node].children)
      if (b == c) return child;
    return -1;
  }
  static bool word_bounded(std::string_view text, size_t begin, size_t end) {
    if (begin > 0) {
      size_t s = begin - 1;
      while (s > 0 && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80) --s;
      if (is_word_char(utf8_next(text, s))) return false;
    }
    if (end < text.size()) {
      size_t i = end;
      if (is_word_char(utf8_next(text, i))) return false;
    }
    return true;
  }
  std::vector<Node> nodes_{1};
  bool first_byte_[256] = {};
  bool empty_ = true;
};

std::string_view trim_left_ws(std::string_view s) {
  while (!s.empty()) {
    size_t i = 0;
    if (!unicode_is_whitespace(utf8_next(s, i))) break;
    s.remove_prefix(i);
  }
  return s;
}

std::string_view trim_right_ws(std::string_view s) {
  while (!s.empty()) {
    size_t b = s.size() - 1;
    while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
    size_t i = b;
    if (!unicode_is_whitespace(utf8_next(s, i))) break;
    s = s.substr(0, b);
  }
  return s;
}

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(const json& tok, const json& config, const json& generation);

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override {
    std::string text = decode_without_cleanup(ids, skip_special_tokens);
    return clean_up_spaces_ ? clean_up_tokenization(text) : text;
  }
  std::string decode_without_cleanup(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  size_t vocab_size() const override { return vocab_size_; }
  std::string id_to_piece(int32_t id) const override {
    if (const auto it = added_by_id_.find(id); it != added_by_id_.end()) return added_[it->second].content;
    return model_->id_to_token(id);
  }
  std::optional<int32_t> piece_to_id(std::string_view piece) const override {
    if (const auto it = added_by_content_.find(piece); it != added_by_content_.end())
      return added_[it->second].id;
    return model_->token_to_id(piece);
  }
  bool is_special(int32_t id) const override {
    return id >= 0 && static_cast<size_t>(id) < special_.size() && special_[id];
  }
  std::string describe() const override { return description_; }

 private:
  struct Segment {
    std::string_view text;
    int32_t added = -1;  // index into added_ when this segment is an added token
  };
  // Splits text at added tokens of `matcher`, applying lstrip/rstrip to the neighbours.
  void split_added(std::string_view text, const AddedTokenMatcher& matcher, std::vector<Segment>& out) const;
  void encode_section(std::string_view section, bool first_section, std::vector<int32_t>& ids) const;
  void encode_normalized(std::string_view text, bool first_section, std::vector<int32_t>& ids) const;

  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  PostProcessor post_;
  std::vector<AddedToken> added_;
  std::unordered_map<int32_t, size_t> added_by_id_;
  std::unordered_map<std::string, size_t, StringHash, std::equal_to<>> added_by_content_;
  AddedTokenMatcher raw_matcher_, normalized_matcher_;
  std::vector<char> special_;
  size_t vocab_size_ = 0;
  bool clean_up_spaces_ = false;
  std::string description_;
};

HfTokenizer::HfTokenizer(const json& tok, const json& config, const json& generation) {
  NIBBLE_CHECK(tok.is_object(), "the top level must be a JSON object");
  NIBBLE_CHECK(tok.contains("model"), "field `model` is missing");
  const json& model = tok["model"];
  const std::string type = model.contains("type") ? json_string(model, "type", "model") : "BPE";
  NIBBLE_CHECK(type == "BPE", "model.type {:?} is not supported (supported: BPE)", type);

  BpeConfig bpe;
  const json& vocab = json_field(model, "vocab", "model");
  NIBBLE_CHECK(vocab.is_object(), "model.vocab must be an object of token -> id (got {})", vocab.type_name());
  bpe.vocab.reserve(vocab.size());
  std::unordered_map<int32_t, std::string> token_of_id;  // two tokens with one id: refused
  token_of_id.reserve(vocab.size());
  for (const auto& [token, id] : vocab.items()) {
    NIBBLE_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() <= INT32_MAX,
                 "model.vocab[{:?}] must be a non-negative integer id", token);
    const auto [it, fresh] = token_of_id.emplace(id.get<int32_t>(), token);
    NIBBLE_CHECK(fresh, "model.vocab: {:?} and {:?} both have id {}", it->second, token, it->first);
    bpe.vocab.emplace(token, id.get<int32_t>());
  }
  const json& merges = json_field(model, "merges", "model");
  NIBBLE_CHECK(merges.is_array(), "model.merges must be an array (got {})", merges.type_name());
  bpe.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ', 1);
      NIBBLE_CHECK(space != std::string::npos, "model.merges[{}] {:?} is not \"left right\"", i, s);
      bpe.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else {
      NIBBLE_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                   "model.merges[{}] must be \"left right\" or [left, right]", i);
      bpe.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    }
  }
  if (model.contains("unk_token") && !model["unk_token"].is_null())
    bpe.unk_token = json_string(model, "unk_token", "model");
  bpe.byte_fallback = json_bool(model, "byte_fallback", "model", false);
  bpe.ignore_merges = json_bool(model, "ignore_merges", "model", false);
  bpe.fuse_unk = json_bool(model, "fuse_unk", "model", false);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model[key].is_null())
      NIBBLE_CHECK(json_string(model, key, "model").empty(),
                   "model.{} is not supported (only empty or null)", key);
  }
  NIBBLE_CHECK(!model.contains("dropout") || model["dropout"].is_null() ||
                   model["dropout"].get<double>() == 0.0,
               "model.dropout is not supported (must be null)");

  if (tok.contains("normalizer") && !tok["normalizer"].is_null())
    normalizer_ = Normalizer::from_json(tok["normalizer"], "normalizer");
  if (tok.contains("pre_tokenizer") && !tok["pre_tokenizer"].is_null())
    pre_tokenizer_ = PreTokenizer::from_json(tok["pre_tokenizer"], "pre_tokenizer");
  if (tok.contains("decoder") && !tok["decoder"].is_null())
    decoder_ = Decoder::from_json(tok["decoder"], "decoder");
  bpe.byte_level = pre_tokenizer_ && pre_tokenizer_->byte_level();
  const size_t model_vocab = bpe.vocab.size();
  const bool byte_fallback = bpe.byte_fallback;
  model_ = std::make_unique<BpeModel>(std::move(bpe));
  vocab_size_ = model_->size();

  // Added tokens.
  if (tok.contains("added_tokens") && !tok["added_tokens"].is_null()) {
    const json& list = tok["added_tokens"];
    NIBBLE_CHECK(list.is_array(), "added_tokens must be an array");
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string what = fmt::format("added_tokens[{}]", i);
      const json& a = list[i];
      const json& id = json_field(a, "id", what);
      NIBBLE_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0, "{}.id must be a non-negative integer", what);
      AddedToken t;
      t.content = json_string(a, "content", what);
      NIBBLE_CHECK(!t.content.empty(), "{}.content must not be empty", what);
      t.id = id.get<int32_t>();
      t.special = json_bool(a, "special", what, false);
      t.lstrip = json_bool(a, "lstrip", what, false);
      t.rstrip = json_bool(a, "rstrip", what, false);
      t.single_word = json_bool(a, "single_word", what, false);
      t.normalized = json_bool(a, "normalized", what, !t.special);
      if (added_by_content_.contains(t.content)) continue;
      added_by_content_.emplace(t.content, added_.size());
      added_by_id_[t.id] = added_.size();
      vocab_size_ = std::max(vocab_size_, static_cast<size_t>(t.id) + 1);
      added_.push_back(std::move(t));
    }
  }
  // Two passes, as Hugging Face's added vocabulary does: tokens with normalized=false are split
  // out of the raw text first; the rest of the text is normalized and then searched for the
  // normalized=true tokens, whose content is normalized the same way first (a Lowercase
  // normalizer makes "XY" match "xy" and "XY" alike).
  for (size_t i = 0; i < added_.size(); ++i) {
    if (!added_[i].normalized) {
      raw_matcher_.add(added_[i].content, i);
    } else if (normalizer_) {
      std::string content = added_[i].content;
      normalizer_->normalize(content);
      normalized_matcher_.add(content, i);
    } else {
      normalized_matcher_.add(added_[i].content, i);
    }
  }
  special_.assign(vocab_size_, 0);
  for (const auto& t : added_)
    if (t.special) special_[t.id] = 1;

  // tokenizer_config.json.
  std::map<std::string, int32_t> token_ids;
  for (const auto& t : added_) token_ids.emplace(t.content, t.id);
  const auto lookup = [&](const std::string& token) -> std::optional<int32_t> {
    if (token.empty()) return std::nullopt;
    return piece_to_id(token);
  };
  if (config.is_object()) {
    bos_token_ = config_token(config, "bos_token");
    eos_token_ = config_token(config, "eos_token");
    bos_id_ = lookup(bos_token_);
    eos_id_ = lookup(eos_token_);
    pad_id_ = lookup(config_token(config, "pad_token"));
    NIBBLE_CHECK(bos_token_.empty() || bos_id_, "tokenizer_config.json: bos_token {:?} is not in the vocabulary", bos_token_);
    NIBBLE_CHECK(eos_token_.empty() || eos_id_, "tokenizer_config.json: eos_token {:?} is not in the vocabulary", eos_token_);
    if (config.contains("additional_special_tokens") && config["additional_special_tokens"].is_array()) {
      for (const auto& t : config["additional_special_tokens"]) {
        const std::string s = t.is_string() ? t.get<std::string>() : t.value("content", "");
        if (const auto id = lookup(s)) special_[*id] = 1;
      }
    }
    clean_up_spaces_ = json_bool(config, "clean_up_tokenization_spaces", "tokenizer_config.json", true);
    if (config.contains("chat_template")) {
      const json& ct = config["chat_template"];
      if (ct.is_string()) {
        chat_template_ = ct.get<std::string>();
      } else if (ct.is_array()) {
        for (const auto& entry : ct)
          if (entry.value("name", "") == "default") chat_template_ = entry.value("template", "");
      }
    }
  }
  // Fallbacks when the config does not name them: the usual spellings, if they are special tokens.
  const auto find_special = [&](std::initializer_list<const char*> names) -> std::optional<int32_t> {
    for (const char* n : names)
      if (const auto it = added_by_content_.find(std::string_view(n)); it != added_by_content_.end())
        return added_[it->second].id;
    return std::nullopt;
  };
  if (!bos_id_ && !config.is_object()) bos_id_ = find_special({"<s>", "<|begin_of_text|>", "<|startoftext|>"});
  if (!eos_id_ && !config.is_object()) eos_id_ = find_special({"</s>", "<|end_of_text|>", "<|endoftext|>"});

  // Post-processor; explicit add_bos_token / add_eos_token win for Llama-family configs (what
  // transformers' LlamaTokenizerFast does) or when tokenizer.json adds nothing itself.
  if (tok.contains("post_processor") && !tok["post_processor"].is_null())
    post_ = PostProcessor::from_json(tok["post_processor"], "post_processor", token_ids);
  if (config.is_object() && (config.contains("add_bos_token") || config.contains("add_eos_token"))) {
    const std::string cls = config.value("tokenizer_class", "");
    if (post_.empty() || cls.starts_with("Llama") || cls.starts_with("CodeLlama") || cls.starts_with("Gemma")) {
      std::vector<int32_t> prefix, suffix;
      if (json_bool(config, "add_bos_token", "tokenizer_config.json", false) && bos_id_) prefix.push_back(*bos_id_);
      if (json_bool(config, "add_eos_token", "tokenizer_config.json", false) && eos_id_) suffix.push_back(*eos_id_);
      post_ = PostProcessor::bos_eos(std::move(prefix), std::move(suffix));
    }
  }

  // Stop ids.
  if (eos_id_) stop_ids_.push_back(*eos_id_);
  if (generation.is_object() && generation.contains("eos_token_id")) {
    const json& e = generation["eos_token_id"];
    if (e.is_number_integer()) stop_ids_.push_back(e.get<int32_t>());
    if (e.is_array())
      for (const auto& v : e)
        if (v.is_number_integer()) stop_ids_.push_back(v.get<int32_t>());
  }
  for (const char* name : {"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>",
                           "<|return|>", "<|call|>", "</s>", "<end_of_turn>"}) {
    if (const auto it = added_by_content_.find(std::string_view(name));
        it != added_by_content_.end() && added_[it->second].special)
      stop_ids_.push_back(added_[it->second].id);
  }
  std::sort(stop_ids_.begin(), stop_ids_.end());
  stop_ids_.erase(std::unique(stop_ids_.begin(), stop_ids_.end()), stop_ids_.end());

  description_ = fmt::format(
      "BPE ({}{}{}), {} model tokens, {} added tokens, normalizer {}, pre-tokenizer {}, decoder {}",
      model_->byte_level() ? "byte-level" : "SentencePiece-style",
      byte_fallback ? ", byte fallback" : "", model_vocab && json_bool(model, "ignore_merges", "model", false) ? ", ignore_merges" : "",
      model_vocab, added_.size(),
      tok.contains("normalizer") && !tok["normalizer"].is_null() ? tok["normalizer"].value("type", "?") : "none",
      tok.contains("pre_tokenizer") && !tok["pre_tokenizer"].is_null() ? tok["pre_tokenizer"].value("type", "?") : "none",
      tok.contains("decoder") && !tok["decoder"].is_null() ? tok["decoder"].value("type", "?") : "none");
}

void HfTokenizer::split_added(std::string_view text, const AddedTokenMatcher& matcher,
                              std::vector<Segment>& out) const {
  out.clear();
  std::vector<AddedTokenMatcher::Hit> hits;
  matcher.find(text, added_, hits);
  size_t last = 0;
  for (const auto& h : hits) {
    if (h.begin > last) out.push_back({text.substr(last, h.begin - last), -1});
    out.push_back({text.substr(h.begin, h.end - h.begin), static_cast<int32_t>(h.token)});
    last = h.end;
  }
  if (last < text.size()) out.push_back({text.substr(last), -1});
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i].added < 0) continue;
    const AddedToken& t = added_[out[i].added];
    if (t.lstrip && i > 0 && out[i - 1].added < 0) out[i - 1].text = trim_right_ws(out[i - 1].text);
    if (t.rstrip && i + 1 < out.size() && out[i + 1].added < 0) out[i + 1].text = trim_left_ws(out[i + 1].text);
  }
}

void HfTokenizer::encode_normalized(std::string_view text, bool first_section, std::vector<int32_t>& ids) const {
  if (text.empty()) return;
  if (!pre_tokenizer_) {
    model_->encode_word(text, ids);
    return;
  }
  Pieces pieces;
  pieces.views.push_back(text);
  pre_tokenizer_->apply(pieces, first_section);
  for (const std::string_view piece : pieces.views) model_->encode_word(piece, ids);
}

void HfTokenizer::encode_section(std::string_view section, bool first_section, std::vector<int32_t>& ids) const {
  if (section.empty()) return;
  std::string normalized;
  if (normalizer_) {
    normalized.assign(section);
    normalizer_->normalize(normalized);
    section = normalized;
  }
  if (normalized_matcher_.empty()) {
    encode_normalized(section, first_section, ids);
    return;
  }
  std::vector<Segment> parts;
  split_added(section, normalized_matcher_, parts);
  for (const auto& p : parts) {
    if (p.added >= 0)
      ids.push_back(added_[p.added].id);
    else  // only a piece at the very start of the text is "first" (Metaspace prepend_scheme first)
      encode_normalized(p.text, first_section && p.text.data() == section.data(), ids);
  }
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::string repaired;
  if (!utf8_is_valid(text)) {
    repaired = utf8_repair(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<Segment> segments;
  split_added(text, raw_matcher_, segments);
  for (size_t i = 0; i < segments.size(); ++i) {
    if (segments[i].added >= 0)
      ids.push_back(added_[segments[i].added].id);
    else
      encode_section(segments[i].text, i == 0, ids);
  }
  if (add_special_tokens) post_.apply(ids);
  return ids;
}

std::string HfTokenizer::decode_without_cleanup(std::span<const int32_t> ids, bool skip_special_tokens) const {
  DecodeTokens tokens;
  tokens.text.reserve(ids.size());
  tokens.added.reserve(ids.size());
  for (const int32_t id : ids) {
    NIBBLE_CHECK(id >= 0 && static_cast<size_t>(id) < vocab_size_,
                 "decode: token id {} is outside the vocabulary (size {})", id, vocab_size_);
    if (skip_special_tokens && special_[id]) continue;
    if (const auto it = added_by_id_.find(id); it != added_by_id_.end()) {
      tokens.text.push_back(added_[it->second].content);
      tokens.added.push_back(1);
    } else {
      const std::string& piece = model_->id_to_token(id);
      NIBBLE_CHECK(!piece.empty(), "decode: token id {} has no entry in the vocabulary", id);
      tokens.text.push_back(piece);
      tokens.added.push_back(0);
    }
  }
  std::string out;
  if (decoder_) {
    decoder_->decode_chain(tokens);
    for (const auto& t : tokens.text) out += t;
  } else {
    for (size_t i = 0; i < tokens.text.size(); ++i) {
      if (i) out += ' ';
      out += tokens.text[i];
    }
  }
  return out;
}

}  // namespace

std::string config_token(const json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return {};
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  NIBBLE_CHECK(v.is_null(), "tokenizer_config.json: {} must be a string, null or an AddedToken object", key);
  return {};
}

std::unique_ptr<Tokenizer> make_hf_tokenizer(const json& tokenizer, const json& config,
                                             const json& generation, const std::string& source) {
  try {
    return std::make_unique<HfTokenizer>(tokenizer, config, generation);
  } catch (const Error& e) {
    NIBBLE_THROW("{}: {}", source, e.message());
  } catch (const json::exception& e) {
    NIBBLE_THROW("{}: unexpected JSON value: {}", source, e.what());
  }
}

}  // namespace nibble::tokenizer

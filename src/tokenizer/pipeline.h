// The stages of a tokenizer.json pipeline around the model: normalizers, pre-tokenizers,
// post-processors and decoders, each built from its JSON object. Supported types are listed in
// docs/tokenizers.md; any other type is an error naming the JSON field and the supported types.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace nibble::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
  // `what` is the JSON path of the object, used in error messages.
  static std::unique_ptr<Normalizer> from_json(const nlohmann::json& j, const std::string& what);
};

// Pieces of one text section while it is being pre-tokenized: views into the section itself or
// into `storage` (for pieces a pre-tokenizer rewrote).
struct Pieces {
  std::vector<std::string_view> views;
  std::deque<std::string> storage;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits (and possibly rewrites) every piece; `first_section` is true for the text before the
  // first added token (Metaspace's prepend_scheme "first").
  virtual void apply(Pieces& pieces, bool first_section) const = 0;
  // True when this stage maps text into GPT-2's byte alphabet (ByteLevel).
  virtual bool byte_level() const { return false; }
  static std::unique_ptr<PreTokenizer> from_json(const nlohmann::json& j, const std::string& what);
};

// Special-token templates (TemplateProcessing, Roberta/Bert processing) for single sequences.
class PostProcessor {
 public:
  // `token_ids` resolves a special token's text to its id (TemplateProcessing carries ids itself).
  static PostProcessor from_json(const nlohmann::json& j, const std::string& what,
                                 const std::map<std::string, int32_t>& token_ids);
  static PostProcessor bos_eos(std::vector<int32_t> prefix, std::vector<int32_t> suffix);
  void apply(std::vector<int32_t>& ids) const;
  bool empty() const { return prefix_.empty() && suffix_.empty(); }
  const std::vector<int32_t>& prefix() const { return prefix_; }
  const std::vector<int32_t>& suffix() const { return suffix_; }

 private:
  std::vector<int32_t> prefix_, suffix_;
};

struct DecodeTokens {
  std::vector<std::string> text;
  std::vector<char> added;  // added tokens bypass ByteLevel's byte mapping
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(DecodeTokens& tokens) const = 0;
  static std::unique_ptr<Decoder> from_json(const nlohmann::json& j, const std::string& what);
};

// transformers' clean_up_tokenization: " ." -> "." and the like.
std::string clean_up_tokenization(std::string_view text);

}  // namespace nibble::tokenizer

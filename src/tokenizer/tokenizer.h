// Text <-> token ids for a model directory.
//
//   auto tok = nibble::Tokenizer::load(model_dir);
//   std::vector<int32_t> ids = tok->encode("Hello", /*add_special_tokens=*/true);
//   std::string text = tok->decode(ids);
//
// Sources, in this order of preference:
//  - tokenizer.json (Hugging Face `tokenizers` format; model type BPE, byte-level or
//    SentencePiece-style) + tokenizer_config.json (special tokens, add_bos/add_eos, chat template)
//    + generation_config.json (extra stop ids), see docs/tokenizers.md for what is covered;
//  - tokenizer.model (a SentencePiece model, through libsentencepiece).
//
// Encode follows the Hugging Face pipeline: added/special tokens are split out of the raw text
// first (longest match; lstrip/rstrip/single_word/normalized honoured), then each remaining
// section is normalized, pre-tokenized and run through the model; the post-processor adds
// BOS/EOS when add_special_tokens is true. Invalid UTF-8 in the input is replaced, never refused:
// each maximal invalid subpart becomes U+FFFD (Python's errors="replace").
//
// Thread safety: a loaded Tokenizer is immutable apart from an internal word cache guarded by
// locks; encode/decode may be called from several threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace nibble {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Reads tokenizer.json (or tokenizer.model) and the configs next to it from a model directory.
  static std::unique_ptr<Tokenizer> load(const std::filesystem::path& model_dir);
  // The same from explicit files (tokenizer_config / generation_config may be empty paths).
  static std::unique_ptr<Tokenizer> load_files(const std::filesystem::path& tokenizer_json,
                                               const std::filesystem::path& tokenizer_config,
                                               const std::filesystem::path& generation_config = {});

  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const = 0;
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const = 0;
  // decode() without transformers' clean_up_tokenization_spaces (" ." -> "."), a whole-text
  // heuristic some configs turn on (Llama 3); what StreamingDecoder concatenates to.
  virtual std::string decode_without_cleanup(std::span<const int32_t> ids, bool skip_special_tokens = false) const {
    return decode(ids, skip_special_tokens);
  }

  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  std::optional<int32_t> pad_id() const { return pad_id_; }
  // Ids that end generation: eos, generation_config.json's eos_token_id(s) and the end-of-turn
  // tokens of known chat formats present in the vocabulary (<|eot_id|>, <|im_end|>, <|return|>,
  // <|call|>, ...). Sorted, unique.
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }
  bool is_stop(int32_t id) const;

  // Number of ids (model vocabulary plus added tokens; the largest id + 1).
  virtual size_t vocab_size() const = 0;
  // The token's text as the vocabulary spells it ("Ġthe", "▁the", "<0x0A>", "<|im_end|>"); empty
  // for an id that is not in the vocabulary.
  virtual std::string id_to_piece(int32_t id) const = 0;
  virtual std::optional<int32_t> piece_to_id(std::string_view piece) const = 0;
  virtual bool is_special(int32_t id) const = 0;

  // tokenizer_config.json values used by chat templates (chat_template.jinja beside it when the
  // config has none; see tokenizer/chat_template.h to render one).
  const std::string& chat_template() const { return chat_template_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  // A short description of the pipeline (model type, pre-tokenizer, decoder), for `nibble tokenize`.
  virtual std::string describe() const = 0;

 protected:
  static std::unique_ptr<Tokenizer> load_without_template_file(const std::filesystem::path& model_dir);
  std::optional<int32_t> bos_id_, eos_id_, pad_id_;
  std::vector<int32_t> stop_ids_;
  std::string chat_template_, bos_token_, eos_token_;
};

// Incremental detokenizer for generation: push() returns the text that became final with this id
// and never ends in the middle of a UTF-8 character (bytes of a character split over several
// byte-fallback or byte-level tokens are held back until it is complete). finish() returns what
// is left (an incomplete character then becomes U+FFFD). The concatenation of all outputs equals
// tokenizer.decode_without_cleanup(all ids).
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);
  std::string push(int32_t id);
  std::string finish();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_ = 0;  // ids_[prefix_, read_) were decoded already (context for the next piece)
  size_t read_ = 0;
};

}  // namespace nibble

// tokenizer.model (SentencePiece) through Debian's libsentencepiece.
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>

#include <algorithm>

#include "base/error.h"
#include "tokenizer/backends.h"

namespace nibble::tokenizer {

using json = nlohmann::json;

namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::filesystem::path& path, const json& config, const json& generation) {
    const auto status = processor_.Load(path.string());
    NIBBLE_CHECK(status.ok(), "{}: cannot load SentencePiece model: {}", path.string(), status.ToString());
    const auto id = [](int v) { return v >= 0 ? std::optional<int32_t>(v) : std::nullopt; };
    bos_id_ = id(processor_.bos_id());
    eos_id_ = id(processor_.eos_id());
    pad_id_ = id(processor_.pad_id());
    // SentencePiece models of the Llama family add BOS and not EOS; tokenizer_config.json may say otherwise.
    add_bos_ = bos_id_.has_value();
    if (config.is_object()) {
      if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean()) add_bos_ = config["add_bos_token"].get<bool>();
      if (config.contains("add_eos_token") && config["add_eos_token"].is_boolean()) add_eos_ = config["add_eos_token"].get<bool>();
      bos_token_ = config_token(config, "bos_token");
      eos_token_ = config_token(config, "eos_token");
      if (config.contains("chat_template") && config["chat_template"].is_string())
        chat_template_ = config["chat_template"].get<std::string>();
    }
    if (bos_id_ && bos_token_.empty()) bos_token_ = processor_.IdToPiece(*bos_id_);
    if (eos_id_ && eos_token_.empty()) eos_token_ = processor_.IdToPiece(*eos_id_);
    if (eos_id_) stop_ids_.push_back(*eos_id_);
    if (generation.is_object() && generation.contains("eos_token_id")) {
      const json& e = generation["eos_token_id"];
      if (e.is_number_integer()) stop_ids_.push_back(e.get<int32_t>());
      if (e.is_array())
        for (const auto& v : e) stop_ids_.push_back(v.get<int32_t>());
    }
    std::sort(stop_ids_.begin(), stop_ids_.end());
    stop_ids_.erase(std::unique(stop_ids_.begin(), stop_ids_.end()), stop_ids_.end());
    path_ = path.string();
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override {
    std::vector<int> pieces;
    const auto status = processor_.Encode(text, &pieces);
    NIBBLE_CHECK(status.ok(), "SentencePiece encode failed: {}", status.ToString());
    std::vector<int32_t> ids;
    ids.reserve(pieces.size() + 2);
    if (add_special_tokens && add_bos_ && bos_id_) ids.push_back(*bos_id_);
    ids.insert(ids.end(), pieces.begin(), pieces.end());
    if (add_special_tokens && add_eos_ && eos_id_) ids.push_back(*eos_id_);
    return ids;
  }

  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override {
    std::vector<int> v;
    v.reserve(ids.size());
    const int n = processor_.GetPieceSize();
    for (const int32_t id : ids) {
      NIBBLE_CHECK(id >= 0 && id < n, "decode: token id {} is outside the vocabulary (size {})", id, n);
      if (skip_special_tokens && is_special(id)) continue;
      v.push_back(id);
    }
    std::string text;
    const auto status = processor_.Decode(v, &text);
    NIBBLE_CHECK(status.ok(), "SentencePiece decode failed: {}", status.ToString());
    return text;
  }

  size_t vocab_size() const override { return static_cast<size_t>(processor_.GetPieceSize()); }
  std::string id_to_piece(int32_t id) const override {
    return id >= 0 && id < processor_.GetPieceSize() ? processor_.IdToPiece(id) : std::string();
  }
  std::optional<int32_t> piece_to_id(std::string_view piece) const override {
    const int id = processor_.PieceToId(piece);
    if (id == processor_.unk_id() && processor_.IdToPiece(id) != piece) return std::nullopt;
    return id;
  }
  bool is_special(int32_t id) const override { return processor_.IsControl(id); }
  std::string describe() const override {
    return fmt::format("SentencePiece model {} ({} pieces)", path_, processor_.GetPieceSize());
  }

 private:
  sentencepiece::SentencePieceProcessor processor_;
  bool add_bos_ = false, add_eos_ = false;
  std::string path_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::filesystem::path& model, const json& config,
                                                        const json& generation) {
  return std::make_unique<SentencePieceTokenizer>(model, config, generation);
}

}  // namespace nibble::tokenizer

// The BPE model of tokenizer.json ("model": {"type": "BPE", ...}).
//
// Two flavours share this code:
//  - byte-level (GPT-2 / Llama 3 / o200k / Qwen): the vocabulary is stored in GPT-2's
//    bytes_to_unicode alphabet; we convert it once to raw bytes, so a word is encoded directly
//    from its UTF-8 bytes (one initial symbol per byte);
//  - SentencePiece-style (Llama 2 / Mistral): initial symbols are Unicode characters, a character
//    missing from the vocabulary becomes its <0xXX> byte tokens (byte_fallback) or unk.
//
// Merging: symbols are token ids; every merge rule is a hash entry (left id, right id) -> (rank,
// merged id), built once at load ("merges cached"). A word is merged with a binary heap keyed by
// (rank, position) over a doubly linked list of symbols: O(n log n) in the word length, so a
// 1 MB "word" costs the same per byte as a short one. The rule order is the one of the
// Hugging Face reference: the lowest rank first, ties to the leftmost pair.
// Words up to kCacheMaxWordBytes are cached (word -> ids).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace nibble::tokenizer {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct BpeConfig {
  StringIdMap vocab;                                  // token text (as in tokenizer.json) -> id
  std::vector<std::pair<std::string, std::string>> merges;
  bool byte_level = false;                            // vocabulary in GPT-2 byte alphabet
  bool byte_fallback = false;
  bool ignore_merges = false;                         // a word found in the vocab is one token
  bool fuse_unk = false;
  std::optional<std::string> unk_token;
};

class BpeModel {
 public:
  explicit BpeModel(BpeConfig config);

  // Appends the ids of one pre-tokenized word (UTF-8 bytes; for byte-level models any bytes).
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  // Id of a token given in the vocabulary's own spelling (tokenizer.json), if any.
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // Vocabulary spelling of an id; empty for ids outside the model's vocabulary.
  const std::string& id_to_token(int32_t id) const;
  size_t size() const { return id_to_token_.size(); }
  bool byte_level() const { return byte_level_; }

  static constexpr size_t kCacheMaxWordBytes = 256;

 private:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const;
  void merge_symbols(std::vector<int32_t>& symbols) const;

  StringIdMap vocab_;                  // keyed by raw bytes for byte-level models
  std::vector<std::string> id_to_token_;  // tokenizer.json spelling
  std::unordered_map<uint64_t, Merge> merges_;
  int32_t byte_ids_[256];              // byte-level: the symbol of each byte; else <0xXX> ids
  bool byte_level_, byte_fallback_, ignore_merges_, fuse_unk_;
  std::optional<int32_t> unk_id_;

  static constexpr size_t kCacheShards = 16;
  static constexpr size_t kCacheShardCapacity = 8192;
  struct CacheShard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> words;
  };
  mutable CacheShard cache_[kCacheShards];
};

}  // namespace nibble::tokenizer

#include "tokenizer/bpe.h"

#include <fmt/format.h>

#include <algorithm>

#include "base/error.h"
#include "tokenizer/text.h"

namespace nibble::tokenizer {
namespace {

// tokenizer.json spelling of a byte-level token -> its raw bytes; nullopt when the spelling
// contains a code point outside the byte alphabet (such a token can never come out of BPE).
std::optional<std::string> byte_level_to_bytes(std::string_view token) {
  std::string bytes;
  bytes.reserve(token.size());
  for (size_t i = 0; i < token.size();) {
    const int b = unicode_to_byte(utf8_next(token, i));
    if (b < 0) return std::nullopt;
    bytes.push_back(static_cast<char>(b));
  }
  return bytes;
}

}  // namespace

BpeModel::BpeModel(BpeConfig config)
    : byte_level_(config.byte_level),
      byte_fallback_(config.byte_fallback),
      ignore_merges_(config.ignore_merges),
      fuse_unk_(config.fuse_unk) {
  int32_t max_id = -1;
  for (const auto& [token, id] : config.vocab) {
    NIBBLE_CHECK(id >= 0, "model.vocab: token {:?} has negative id {}", token, id);
    max_id = std::max(max_id, id);
  }
  id_to_token_.resize(static_cast<size_t>(max_id + 1));
  for (auto& [token, id] : config.vocab) {
    id_to_token_[static_cast<size_t>(id)] = token;
    if (byte_level_) {
      if (auto bytes = byte_level_to_bytes(token)) vocab_.emplace(std::move(*bytes), id);
    } else {
      vocab_.emplace(token, id);
    }
  }
  if (config.unk_token) {
    const auto it = config.vocab.find(*config.unk_token);
    NIBBLE_CHECK(it != config.vocab.end(), "model.unk_token {:?} is not in model.vocab",
                 *config.unk_token);
    unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    byte_ids_[b] = -1;
    const std::string key = byte_level_ ? std::string(1, static_cast<char>(b))
                                        : fmt::format("<0x{:02X}>", b);
    if (const auto it = vocab_.find(key); it != vocab_.end()) byte_ids_[b] = it->second;
  }

  merges_.reserve(config.merges.size());
  for (size_t rank = 0; rank < config.merges.size(); ++rank) {
    const auto& [a, b] = config.merges[rank];
    const auto ia = config.vocab.find(a), ib = config.vocab.find(b);
    const auto im = config.vocab.find(a + b);
    NIBBLE_CHECK(ia != config.vocab.end() && ib != config.vocab.end() && im != config.vocab.end(),
                 "model.merges[{}]: merge ({:?}, {:?}) uses a token that is not in model.vocab",
                 rank, a, b);
    // The first occurrence of a pair keeps its rank (a later duplicate could never fire first).
    merges_.try_emplace(pair_key(ia->second, ib->second),
                        Merge{static_cast<int32_t>(rank), im->second});
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  if (byte_level_) {
    auto bytes = byte_level_to_bytes(token);
    if (!bytes) return std::nullopt;
    const auto it = vocab_.find(*bytes);
    return it == vocab_.end() ? std::nullopt : std::optional<int32_t>(it->second);
  }
  const auto it = vocab_.find(token);
  return it == vocab_.end() ? std::nullopt : std::optional<int32_t>(it->second);
}

const std::string& BpeModel::id_to_token(int32_t id) const {
  static const std::string empty;
  return id >= 0 && static_cast<size_t>(id) < id_to_token_.size() ? id_to_token_[id] : empty;
}

void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const {
  symbols.clear();
  const auto push_unk = [&](std::string_view what) {
    NIBBLE_CHECK(unk_id_.has_value(),
                 "tokenizer: {:?} is not in the vocabulary and the model has no unk_token", what);
    if (fuse_unk_ && !symbols.empty() && symbols.back() == *unk_id_) return;
    symbols.push_back(*unk_id_);
  };
  if (byte_level_) {
    for (const char c : word) {
      const int32_t id = byte_ids_[static_cast<unsigned char>(c)];
      if (id >= 0)
        symbols.push_back(id);
      else
        push_unk(std::string_view(&c, 1));
    }
    return;
  }
  for (size_t i = 0; i < word.size();) {
    const size_t n = std::min(utf8_char_len(static_cast<unsigned char>(word[i])), word.size() - i);
    const std::string_view ch = word.substr(i, n);
    if (const auto it = vocab_.find(ch); it != vocab_.end()) {
      symbols.push_back(it->second);
    } else if (byte_fallback_ &&
               std::all_of(ch.begin(), ch.end(),
                           [&](char c) { return byte_ids_[static_cast<unsigned char>(c)] >= 0; })) {
      for (const char c : ch) symbols.push_back(byte_ids_[static_cast<unsigned char>(c)]);
    } else {
      push_unk(ch);
    }
    i += n;
  }
}

void BpeModel::merge_symbols(std::vector<int32_t>& symbols) const {
  const size_t n = symbols.size();
  if (n < 2) return;
  // Doubly linked list over positions; a merged symbol keeps the left position.
  std::vector<int32_t> prev(n), next(n);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  struct Candidate {
    int32_t rank, pos, left, right;
    // std::push_heap builds a max-heap: "greater" means lower priority.
    bool operator<(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Candidate> heap;
  heap.reserve(n);
  const auto consider = [&](int32_t pos) {
    const int32_t nx = next[pos];
    if (nx < 0) return;
    const auto it = merges_.find(pair_key(symbols[pos], symbols[nx]));
    if (it == merges_.end()) return;
    heap.push_back({it->second.rank, pos, symbols[pos], symbols[nx]});
    std::push_heap(heap.begin(), heap.end());
  };
  for (size_t i = 0; i + 1 < n; ++i) consider(static_cast<int32_t>(i));
  constexpr int32_t kDead = -1;
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Candidate c = heap.back();
    heap.pop_back();
    // Stale entries: the left symbol was merged away or changed, or its neighbour changed.
    if (symbols[c.pos] != c.left) continue;
    const int32_t nx = next[c.pos];
    if (nx < 0 || symbols[nx] != c.right) continue;
    symbols[c.pos] = merges_.find(pair_key(c.left, c.right))->second.merged;
    symbols[nx] = kDead;
    next[c.pos] = next[nx];
    if (next[nx] >= 0) prev[next[nx]] = c.pos;
    if (prev[c.pos] >= 0) consider(prev[c.pos]);
    consider(c.pos);
  }
  size_t out = 0;
  for (int32_t i = 0; i >= 0; i = next[i]) symbols[out++] = symbols[i];
  symbols.resize(out);
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kCacheMaxWordBytes;
  CacheShard& shard = cache_[StringHash{}(word) % kCacheShards];
  if (cacheable) {
    std::lock_guard lock(shard.mutex);
    if (const auto it = shard.words.find(word); it != shard.words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols;
  initial_symbols(word, symbols);
  merge_symbols(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
  if (cacheable) {
    std::lock_guard lock(shard.mutex);
    if (shard.words.size() >= kCacheShardCapacity) shard.words.clear();
    shard.words.emplace(std::string(word), std::move(symbols));
  }
}

}  // namespace nibble::tokenizer

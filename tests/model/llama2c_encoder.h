// An independent llama2.c-style encoder and decoder (run.c's encode/decode, written from its
// description) for tests: the oracle the tokenizer.json that `nibble convert` writes, and the
// prompts of the greedy reference, are checked against.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/llama/llama2c.h"

namespace nibble::test {

// BOS, then " " + text as llama2.c encodes it: code points looked up (bytes + 3 when absent),
// then repeatedly the adjacent pair whose concatenation has the highest score is merged.
inline std::vector<int32_t> llama2c_encode(const Llama2cVocab& v, const std::string& text) {
  auto lookup = [&](const std::string& s) -> int32_t {
    for (size_t i = 3; i < v.pieces.size(); ++i)
      if (v.pieces[i] == s) return int32_t(i);
    return -1;
  };
  std::vector<int32_t> ids;
  if (!text.empty()) ids.push_back(lookup(" "));
  for (size_t i = 0; i < text.size();) {
    size_t len = 1;
    const unsigned char c = text[i];
    if (c >= 0xf0) len = 4;
    else if (c >= 0xe0) len = 3;
    else if (c >= 0xc0) len = 2;
    const int32_t id = lookup(text.substr(i, len));
    if (id >= 0) {
      ids.push_back(id);
    } else {
      for (size_t b = 0; b < len; ++b) ids.push_back(int32_t(uint8_t(text[i + b])) + 3);
    }
    i += len;
  }
  for (;;) {
    float best = -1e10f;
    int32_t best_id = -1;
    size_t best_at = 0;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      const int32_t id = lookup(v.pieces[ids[i]] + v.pieces[ids[i + 1]]);
      if (id >= 0 && v.scores[id] > best) {
        best = v.scores[id];
        best_id = id;
        best_at = i;
      }
    }
    if (best_id < 0) break;
    ids[best_at] = best_id;
    ids.erase(ids.begin() + best_at + 1);
  }
  ids.insert(ids.begin(), 1);  // BOS
  return ids;
}

// run.c's decode: strips the leading space after BOS, turns <0xXX> into its byte.
inline std::string llama2c_decode(const Llama2cVocab& v, int32_t prev, int32_t token) {
  std::string piece = v.pieces[token];
  if (prev == 1 && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
  unsigned int byte;
  if (piece.size() == 6 && std::sscanf(piece.c_str(), "<0x%02X>", &byte) == 1)
    piece = std::string(1, char(byte));
  return piece;
}

}  // namespace nibble::test

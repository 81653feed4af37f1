// Text helpers the tokenizer pipeline is built from: UTF-8 decoding and repair, Unicode
// normalization forms (through ICU), and a PCRE2 regex compiled with Unicode properties and JIT.
//
// NOTES: everything inside the tokenizer works on UTF-8 `std::string`s. Prompts with invalid
// UTF-8 are repaired once at the entry (each maximal invalid subpart becomes U+FFFD, the WHATWG /
// Python `errors="replace"` rule), so every later stage may assume valid UTF-8; the regex engine
// is then run with PCRE2_NO_UTF_CHECK (checking again at every match would make splitting
// quadratic in the input length).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace nibble::tokenizer {

// Length in bytes of the UTF-8 sequence that starts at s[i]; s must be valid UTF-8.
inline size_t utf8_char_len(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

// Length of the longest valid UTF-8 sequence at the start of `s` (0 when s[0] starts none).
size_t utf8_valid_prefix_char(std::string_view s);
bool utf8_is_valid(std::string_view s);
// Replaces every maximal invalid subpart by U+FFFD (same output as Python's
// bytes.decode("utf-8", "replace") and JavaScript's TextDecoder).
std::string utf8_repair(std::string_view s);
// Length of the longest prefix of `s` that ends on a character boundary, assuming `s` is valid
// UTF-8 apart from a possibly truncated last character.
size_t utf8_complete_prefix(std::string_view s);
void utf8_append(std::string& out, char32_t cp);
// Decodes the code point at s[i] (valid UTF-8) and advances i.
char32_t utf8_next(std::string_view s, size_t& i);

enum class UnicodeForm { kNfc, kNfd, kNfkc, kNfkd };
std::string unicode_normalize(std::string_view s, UnicodeForm form);
std::string unicode_lowercase(std::string_view s);
bool unicode_is_whitespace(char32_t cp);      // Python str.isspace / JS \s (Unicode White_Space)
bool unicode_is_alphanumeric(char32_t cp);

// A compiled PCRE2 pattern (UTF + UCP, JIT when available). Thread-safe: match data is per call.
class Regex {
 public:
  // `what` names the pattern in errors (e.g. "pre_tokenizer.pretokenizers[0].pattern.Regex").
  Regex(std::string_view pattern, std::string_view what);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  struct Match {
    size_t begin, end;
  };
  // All non-overlapping matches in `text` (valid UTF-8), left to right; an empty match advances
  // by one character.
  void find_all(std::string_view text, std::vector<Match>& matches) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// GPT-2's bytes_to_unicode table: each byte is shown as a printable code point.
const std::string& byte_to_unicode_utf8(uint8_t byte);
// Inverse; returns -1 for code points that are not in the table.
int unicode_to_byte(char32_t cp);

}  // namespace nibble::tokenizer

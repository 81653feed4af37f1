#include "tokenizer/text.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <array>

#include "base/error.h"

namespace nibble::tokenizer {

size_t utf8_valid_prefix_char(std::string_view s) {
  if (s.empty()) return 0;
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte (Unicode table 3-7)
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (s.size() < n) return 0;
  if (b(1) < lo || b(1) > hi) return 0;
  for (size_t i = 2; i < n; ++i)
    if ((b(i) & 0xC0) != 0x80) return 0;
  return n;
}

bool utf8_is_valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = utf8_valid_prefix_char(s.substr(i));
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// Length of the maximal subpart of an ill-formed sequence at s[0] (at least 1): the longest
// prefix that could still begin a valid sequence.
static size_t utf8_maximal_subpart(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 1;
  }
  size_t i = 1;
  if (i < s.size() && i < n && b(i) >= lo && b(i) <= hi) {
    ++i;
    while (i < s.size() && i < n && (b(i) & 0xC0) == 0x80) ++i;
  }
  return i;
}

std::string utf8_repair(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      out.push_back(s[i++]);
      continue;
    }
    const size_t n = utf8_valid_prefix_char(s.substr(i));
    if (n) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");
      i += utf8_maximal_subpart(s.substr(i));
    }
  }
  return out;
}

size_t utf8_complete_prefix(std::string_view s) {
  // Walk back over at most 3 continuation bytes to the last lead byte.
  size_t i = s.size();
  size_t back = 0;
  while (i > 0 && back < 4 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) {
    --i;
    ++back;
  }
  if (i == 0) return s.size();
  const unsigned char lead = static_cast<unsigned char>(s[i - 1]);
  if (lead < 0x80) return s.size();
  const size_t need = utf8_char_len(lead);
  return back + 1 >= need ? s.size() : i - 1;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

char32_t utf8_next(std::string_view s, size_t& i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  const size_t n = utf8_char_len(c);
  char32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < n && i + k < s.size(); ++k)
    cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

std::string unicode_normalize(std::string_view s, UnicodeForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = nullptr;
  switch (form) {
    case UnicodeForm::kNfc: normalizer = icu::Normalizer2::getNFCInstance(status); break;
    case UnicodeForm::kNfd: normalizer = icu::Normalizer2::getNFDInstance(status); break;
    case UnicodeForm::kNfkc: normalizer = icu::Normalizer2::getNFKCInstance(status); break;
    case UnicodeForm::kNfkd: normalizer = icu::Normalizer2::getNFKDInstance(status); break;
  }
  NIBBLE_CHECK(U_SUCCESS(status) && normalizer, "ICU normalizer unavailable: {}", u_errorName(status));
  // Fast path: most text is already normalized.
  const icu::UnicodeString in = icu::UnicodeString::fromUTF8(
      icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
  if (normalizer->isNormalized(in, status) && U_SUCCESS(status)) return std::string(s);
  status = U_ZERO_ERROR;
  const icu::UnicodeString out = normalizer->normalize(in, status);
  NIBBLE_CHECK(U_SUCCESS(status), "Unicode normalization failed: {}", u_errorName(status));
  std::string result;
  out.toUTF8String(result);
  return result;
}

std::string unicode_lowercase(std::string_view s) {
  icu::UnicodeString in = icu::UnicodeString::fromUTF8(
      icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
  in.toLower(icu::Locale::getRoot());
  std::string result;
  in.toUTF8String(result);
  return result;
}

bool unicode_is_whitespace(char32_t cp) {
  return u_isUWhiteSpace(static_cast<UChar32>(cp)) || cp == 0xFEFF;
}

bool unicode_is_alphanumeric(char32_t cp) { return u_isalnum(static_cast<UChar32>(cp)); }

// ---- Regex ----

struct Regex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
};

namespace {
// Patterns like `\s+(?!\S)` backtrack over long runs; the JIT stack grows on demand up to this.
constexpr size_t kJitStackMax = size_t{256} << 20;

struct JitStack {
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 << 10, kJitStackMax, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  JitStack() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~JitStack() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
  }
};
pcre2_match_context* thread_match_context() {
  thread_local JitStack jit;
  return jit.context;
}
}  // namespace

Regex::Regex(std::string_view pattern, std::string_view what) : impl_(std::make_unique<Impl>()) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (!impl_->code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    NIBBLE_THROW("{}: invalid regex at offset {}: {} (pattern: {})", what, offset,
                 reinterpret_cast<const char*>(message), pattern);
  }
  impl_->jit = pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() {
  if (impl_ && impl_->code) pcre2_code_free(impl_->code);
}

void Regex::find_all(std::string_view text, std::vector<Match>& matches) const {
  matches.clear();
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  pcre2_match_context* context = thread_match_context();
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    const int rc = impl_->jit
                       ? pcre2_jit_match(impl_->code, subject, text.size(), start, 0, data, context)
                       : pcre2_match(impl_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK,
                                     data, context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(data);
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      NIBBLE_THROW("regex match failed at byte {} of a {}-byte text: {}", start, text.size(),
                   reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data);
    const size_t b = ov[0], e = ov[1];
    if (e > b) {
      matches.push_back({b, e});
      start = e;
    } else {  // empty match: step over one character
      if (b >= text.size()) break;
      start = b + utf8_char_len(static_cast<unsigned char>(text[b]));
    }
  }
  pcre2_match_data_free(data);
}

// ---- GPT-2 byte <-> printable code point table ----

namespace {
struct ByteTable {
  std::array<std::string, 256> byte_to_utf8;
  std::array<int, 512> cp_to_byte;
  ByteTable() {
    cp_to_byte.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const int cp = printable ? b : next++;
      utf8_append(byte_to_utf8[b], static_cast<char32_t>(cp));
      cp_to_byte[cp] = b;
    }
  }
};
const ByteTable& byte_table() {
  static const ByteTable table;
  return table;
}
}  // namespace

const std::string& byte_to_unicode_utf8(uint8_t byte) { return byte_table().byte_to_utf8[byte]; }

int unicode_to_byte(char32_t cp) { return cp < 512 ? byte_table().cp_to_byte[cp] : -1; }

}  // namespace nibble::tokenizer

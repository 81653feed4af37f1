// One error type for the whole project. The message says what was wrong in the user's terms
// (file, tensor, field, flag); file:line says where our code caught it.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace nibble {

class Error : public std::runtime_error {
 public:
  Error(std::string message, const char* file, int line);
  // The message alone, without the source location (for user-facing output).
  const std::string& message() const { return message_; }
  const char* file() const { return file_; }
  int line() const { return line_; }

 private:
  std::string message_;
  const char* file_;
  int line_;
};

[[noreturn]] void throw_error(const char* file, int line, std::string message);

}  // namespace nibble

#define NIBBLE_THROW(...) ::nibble::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))
#define NIBBLE_CHECK(cond, ...)          \
  do {                                   \
    if (!(cond)) [[unlikely]]            \
      NIBBLE_THROW(__VA_ARGS__);         \
  } while (0)

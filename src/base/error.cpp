#include "base/error.h"

namespace nibble {

Error::Error(std::string message, const char* file, int line)
    : std::runtime_error(fmt::format("{} [{}:{}]", message, file, line)),
      message_(std::move(message)),
      file_(file),
      line_(line) {}

void throw_error(const char* file, int line, std::string message) {
  throw Error(std::move(message), file, line);
}

}  // namespace nibble

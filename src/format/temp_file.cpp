#include "format/temp_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "base/error.h"

namespace nibble {

TempFile::TempFile(const std::filesystem::path& destination) : destination_(destination) {
  std::string pattern = destination.string() + ".tmp-XXXXXX";
  fd_ = ::mkstemp(pattern.data());
  NIBBLE_CHECK(fd_ >= 0, "cannot create a temporary file beside '{}': {}", destination.string(),
               std::strerror(errno));
  path_ = pattern;
}

TempFile::~TempFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(path_.c_str());
}

void TempFile::write(const void* data, size_t n) {
  NIBBLE_CHECK(!finished_, "internal: writing '{}' after it was finished", destination_.string());
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, std::min<size_t>(n, size_t(1) << 30));
    if (w < 0 && errno == EINTR) continue;
    NIBBLE_CHECK(w > 0, "writing '{}' failed: {}", destination_.string(), std::strerror(errno));
    p += w;
    n -= size_t(w);
  }
}

void TempFile::finish() {
  if (finished_) return;
  NIBBLE_CHECK(::fsync(fd_) == 0, "flushing '{}' failed: {}", destination_.string(), std::strerror(errno));
  const int fd = fd_;
  fd_ = -1;
  NIBBLE_CHECK(::close(fd) == 0, "closing '{}' failed: {}", destination_.string(), std::strerror(errno));
  // mkstemp makes the file 0600; give it the usual permissions a tool's output has.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::chmod(path_.c_str(), 0666 & ~mask);
  finished_ = true;
}

void TempFile::commit() {
  finish();
  NIBBLE_CHECK(::rename(path_.c_str(), destination_.c_str()) == 0, "renaming '{}' to '{}' failed: {}",
               path_.string(), destination_.string(), std::strerror(errno));
  committed_ = true;
}

}  // namespace nibble

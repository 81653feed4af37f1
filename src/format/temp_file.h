// A file written beside its destination and renamed onto it only when complete, so a reader
// never sees half a file and an error leaves nothing behind: the temp file
// ("<destination>.tmp-XXXXXX", same directory, so the rename is atomic) is removed by the
// destructor unless commit() renamed it into place.
#pragma once

#include <cstddef>
#include <filesystem>

namespace nibble {

class TempFile {
 public:
  // Creates the temp file; throws naming the destination when its directory is not writable.
  explicit TempFile(const std::filesystem::path& destination);
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  void write(const void* data, size_t n);  // all of it, or throws
  // Flushes (fsync) and closes: after this the bytes are on disk and only the rename is left.
  // Called by commit() when not called before.
  void finish();
  // finish(), then renames onto the destination (replacing a file there).
  void commit();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path destination_, path_;
  int fd_ = -1;
  bool finished_ = false, committed_ = false;
};

}  // namespace nibble

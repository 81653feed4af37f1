// safetensors files: a reader that maps the file and validates its header completely, a
// multi-shard checkpoint view (model.safetensors.index.json), and a streaming writer that
// writes to a temp file and renames it into place at the end.
//
// File layout: [u64 little-endian header length N][N bytes JSON header][data]. The header maps
// tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
// start of the data), plus an optional "__metadata__" map of strings to strings.
//
// What the reader refuses (each with the file, the tensor and the field in the message): a file
// shorter than 8 bytes; a header length past the end of the file or above 100 MB; a header that
// is not a JSON object or repeats a key (tensor names included); an entry without exactly the
// fields dtype, shape, data_offsets; a dtype not in dtype.h; a shape that is not a list of
// non-negative integers, or whose byte size (numel x dtype size, overflow checked) differs from
// the span of data_offsets; offsets with begin > end or past the end of the data; tensors that
// overlap, leave a gap, or do not reach the end of the file (the data must be tiled exactly, as
// the reference implementation requires); "__metadata__" that is not a map of strings to strings.
//
// NOTES: tensor data is not necessarily aligned to its element size (the header length is
// arbitrary, and the tensors may come in any dtype order): read elements with memcpy or
// byte-wise. Files written here start the data at an 8-byte boundary.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "format/dtype.h"

namespace nibble {

struct TensorView {
  std::string name;
  DType dtype = DType::U8;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the mapped file: valid while the file is open
  size_t nbytes = 0;
  const std::filesystem::path* file = nullptr;  // the file it lives in (for messages)
  size_t numel() const;
};

// Drops the pages of `t` from this process's resident set (madvise MADV_DONTNEED on the
// read-only private mapping: the bytes stay in the page cache and a later read faults them
// back in). Rounds inward to whole pages, so a neighbouring tensor's pages are untouched.
// Streaming readers call it on each tensor they are done with, so that peak RSS does not grow
// with the size of the model.
void release_tensor_pages(const TensorView& t);

// One mapped, validated safetensors file. Every refusal names the file, the tensor and the
// field that was wrong.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }  // in data order
  const TensorView* find(std::string_view name) const;
  const TensorView& at(std::string_view name) const;  // throws naming the file
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::filesystem::path path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// The tensors of a checkpoint: a directory with model.safetensors, or with
// model.safetensors.index.json and its shards, or a single .safetensors file. Like
// Transformers, model.safetensors wins when both are present. The index must agree with the
// shards: a missing shard, a tensor listed but absent from its shard, a tensor stored in a
// shard but not listed (or listed in another), or one stored twice is refused, naming both.
// Shard names must be plain file names inside the directory.
class Checkpoint {
 public:
  explicit Checkpoint(const std::filesystem::path& path);
  const std::filesystem::path& directory() const { return directory_; }
  const std::vector<const TensorView*>& tensors() const { return tensors_; }  // sorted by name
  const TensorView* find(std::string_view name) const;
  const TensorView& at(std::string_view name) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::filesystem::path directory_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<const TensorView*> tensors_;
};

// Declared tensor for the writers: its bytes come from `fill`, which is called once, in
// order, with a buffer of exactly the tensor's size (so a quantizer can produce data
// streaming, one tensor in memory at a time).
struct TensorSpec {
  std::string name;
  DType dtype = DType::U8;
  std::vector<int64_t> shape;
  std::function<void(uint8_t* out, size_t nbytes)> fill;
  size_t nbytes() const;  // numel x dtype size; throws on a negative dimension or overflow
};

// A spec that copies an existing tensor's bytes (for tensors passed through unchanged).
// `view` must stay valid until the spec is written; `name` empty keeps the view's name.
TensorSpec tensor_spec_copy(const TensorView& view, std::string name = {});

// Writes one safetensors file: to "<path>.tmp-XXXX" beside it, renamed onto `path` only when
// every tensor is written and flushed. On any error the temp file is removed.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorSpec>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes a checkpoint into `directory` (which must exist): one model.safetensors when it
// fits in max_shard_bytes (0: no limit), else model-0000i-of-0000n.safetensors shards and
// model.safetensors.index.json (metadata.total_size, weight_map), written last. Each file is
// written atomically as above; `metadata` goes into every file's __metadata__. Files of an
// earlier write that the new checkpoint does not use are removed once the new files are in
// place, so that neither Checkpoint nor a tool globbing *.safetensors reads stale tensors:
// model.safetensors or the index of the other layout, and every shard that the old index named
// or that has the shard name pattern but is not one of the new shards.
void write_checkpoint(const std::filesystem::path& directory, const std::vector<TensorSpec>& tensors,
                      const std::map<std::string, std::string>& metadata = {},
                      size_t max_shard_bytes = 0);

}  // namespace nibble

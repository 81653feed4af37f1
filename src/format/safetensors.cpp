#include "format/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "base/error.h"
#include "format/temp_file.h"

namespace nibble {

namespace {

using json = nlohmann::json;

// The header length is a u64 from the file itself: bound it before trusting it. 100 MB is the
// reference implementation's limit too (a 400-layer MoE header is a few MB).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// Data starts at an 8-byte boundary in files we write (the header is padded with spaces).
constexpr size_t kHeaderAlignment = 8;

const char* kMetadataKey = "__metadata__";
const char* kIndexName = "model.safetensors.index.json";
const char* kSingleName = "model.safetensors";

std::string system_error_text() { return std::strerror(errno); }

// a * b, or nullopt on overflow.
std::optional<uint64_t> checked_mul(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// numel(shape) * element size, or nullopt on overflow; shape entries must be >= 0.
std::optional<uint64_t> shape_bytes(const std::vector<int64_t>& shape, DType dtype) {
  uint64_t n = dtype_size(dtype);
  for (int64_t d : shape) {
    auto r = checked_mul(n, uint64_t(d));
    if (!r) return std::nullopt;
    n = *r;
  }
  return n;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

// nlohmann::json keeps the last of duplicate keys silently; this parser callback refuses them
// (at every depth), remembering the enclosing top-level key for the message.
class DuplicateKeyCheck {
 public:
  explicit DuplicateKeyCheck(const std::string& where) : where_(where) {}
  bool operator()(int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        keys_.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys_.empty()) keys_.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (depth == 1) top_key_ = key;
        if (!keys_.empty() && !keys_.back().insert(key).second) {
          if (depth == 1)
            NIBBLE_THROW("{}: header names tensor '{}' twice (field: tensor name)", where_, key);
          NIBBLE_THROW("{}: tensor '{}': field '{}' appears twice", where_, top_key_, key);
        }
        break;
      }
      default:
        break;
    }
    return true;
  }

 private:
  const std::string& where_;
  std::vector<std::set<std::string>> keys_;
  std::string top_key_;
};

json parse_json_strict(std::string_view text, const std::string& where) {
  try {
    return json::parse(text.begin(), text.end(), DuplicateKeyCheck(where));
  } catch (const json::exception& e) {
    NIBBLE_THROW("{}: header is not valid JSON: {}", where, e.what());
  }
}

struct Mapping {
  void* address = nullptr;
  size_t size = 0;
};

Mapping map_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  NIBBLE_CHECK(fd >= 0, "cannot open safetensors file '{}': {}", path.string(), system_error_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string why = system_error_text();
    ::close(fd);
    NIBBLE_THROW("cannot stat safetensors file '{}': {}", path.string(), why);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    NIBBLE_THROW("safetensors file '{}' is not a regular file", path.string());
  }
  Mapping m;
  m.size = size_t(st.st_size);
  if (m.size > 0) {
    m.address = ::mmap(nullptr, m.size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m.address == MAP_FAILED) {
      const std::string why = system_error_text();
      ::close(fd);
      NIBBLE_THROW("cannot map safetensors file '{}' ({} bytes): {}", path.string(), m.size, why);
    }
  }
  ::close(fd);  // the mapping keeps the file alive
  return m;
}

// One entry of the header, checked field by field.
TensorView parse_tensor_entry(const std::string& where, const std::string& name, const json& entry,
                              uint64_t data_size, uint64_t* begin_out) {
  NIBBLE_CHECK(!name.empty(), "{}: header has a tensor with an empty name", where);
  NIBBLE_CHECK(entry.is_object(), "{}: tensor '{}': entry must be an object with dtype, shape and "
               "data_offsets, found {}", where, name, entry.type_name());
  for (const auto& [field, value] : entry.items()) {
    (void)value;
    NIBBLE_CHECK(field == "dtype" || field == "shape" || field == "data_offsets",
                 "{}: tensor '{}': unknown field '{}' (expected dtype, shape, data_offsets)", where,
                 name, field);
  }
  TensorView view;
  view.name = name;

  // dtype
  NIBBLE_CHECK(entry.contains("dtype"), "{}: tensor '{}': field 'dtype' is missing", where, name);
  const json& dtype = entry["dtype"];
  NIBBLE_CHECK(dtype.is_string(), "{}: tensor '{}': field 'dtype' must be a string, found {}", where,
               name, dtype.type_name());
  const auto parsed_dtype = dtype_from_name(dtype.get_ref<const std::string&>());
  NIBBLE_CHECK(parsed_dtype.has_value(),
               "{}: tensor '{}': field 'dtype': unknown dtype '{}' (known: BOOL, U8, I8, U16, I16, "
               "U32, I32, U64, I64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2, F8_E8M0)",
               where, name, dtype.get_ref<const std::string&>());
  view.dtype = *parsed_dtype;

  // shape
  NIBBLE_CHECK(entry.contains("shape"), "{}: tensor '{}': field 'shape' is missing", where, name);
  const json& shape = entry["shape"];
  NIBBLE_CHECK(shape.is_array(), "{}: tensor '{}': field 'shape' must be an array, found {}", where,
               name, shape.type_name());
  for (size_t i = 0; i < shape.size(); ++i) {
    const json& d = shape[i];
    NIBBLE_CHECK(d.is_number_unsigned() &&
                     d.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()),
                 "{}: tensor '{}': field 'shape': dimension {} must be a non-negative integer, "
                 "found {}", where, name, i, d.dump());
    view.shape.push_back(int64_t(d.get<uint64_t>()));
  }

  // data_offsets
  NIBBLE_CHECK(entry.contains("data_offsets"), "{}: tensor '{}': field 'data_offsets' is missing",
               where, name);
  const json& offsets = entry["data_offsets"];
  NIBBLE_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                   offsets[1].is_number_unsigned(),
               "{}: tensor '{}': field 'data_offsets' must be two non-negative integers "
               "[begin, end], found {}", where, name, offsets.dump());
  const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
  NIBBLE_CHECK(begin <= end, "{}: tensor '{}': field 'data_offsets': begin {} is after end {}",
               where, name, begin, end);
  NIBBLE_CHECK(end <= data_size,
               "{}: tensor '{}': field 'data_offsets': [{}, {}] runs past the end of the data "
               "({} bytes after the header; the file may be truncated)",
               where, name, begin, end, data_size);

  const auto expected = shape_bytes(view.shape, view.dtype);
  NIBBLE_CHECK(expected.has_value(), "{}: tensor '{}': field 'shape' {} overflows a 64-bit byte count",
               where, name, shape_text(view.shape));
  NIBBLE_CHECK(*expected == end - begin,
               "{}: tensor '{}': field 'shape' {} of {} needs {} bytes but 'data_offsets' [{}, {}] "
               "span {} bytes", where, name, shape_text(view.shape), dtype_name(view.dtype),
               *expected, begin, end, end - begin);
  view.nbytes = size_t(end - begin);
  *begin_out = begin;
  return view;
}

}  // namespace

size_t TensorView::numel() const {
  size_t n = 1;
  for (int64_t d : shape) n *= size_t(d);
  return n;
}

void release_tensor_pages(const TensorView& t) {
  static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(t.data) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(t.data) + t.nbytes) & ~(page - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

size_t TensorSpec::nbytes() const {
  for (int64_t d : shape)
    NIBBLE_CHECK(d >= 0, "tensor '{}': shape {} has a negative dimension", name, shape_text(shape));
  const auto n = shape_bytes(shape, dtype);
  NIBBLE_CHECK(n.has_value(), "tensor '{}': shape {} overflows a 64-bit byte count", name,
               shape_text(shape));
  return size_t(*n);
}

TensorSpec tensor_spec_copy(const TensorView& view, std::string name) {
  TensorSpec spec;
  spec.name = name.empty() ? view.name : std::move(name);
  spec.dtype = view.dtype;
  spec.shape = view.shape;
  const uint8_t* data = view.data;
  const size_t n = view.nbytes;
  spec.fill = [data, n](uint8_t* out, size_t nbytes) {
    NIBBLE_CHECK(nbytes == n, "tensor copy: {} bytes asked of a {}-byte tensor", nbytes, n);
    std::memcpy(out, data, n);
  };
  return spec;
}

// ---------------------------------------------------------------------------------------------
// Reader

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : path_(path) {
  const std::string where = fmt::format("safetensors file '{}'", path.string());
  const Mapping m = map_file(path);
  map_ = m.address;
  map_size_ = m.size;
  try {
    const auto* bytes = static_cast<const uint8_t*>(map_);
    NIBBLE_CHECK(map_size_ > 0, "{}: file is empty (0 bytes; an interrupted write or download?)",
                 where);
    NIBBLE_CHECK(map_size_ >= 8,
                 "{}: file is {} bytes, too short for the 8-byte header length (truncated?)",
                 where, map_size_);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = header_len << 8 | bytes[i];  // little-endian
    NIBBLE_CHECK(header_len <= kMaxHeaderBytes,
                 "{}: header length {} is larger than the {}-byte limit (not a safetensors file?)",
                 where, header_len, kMaxHeaderBytes);
    NIBBLE_CHECK(header_len <= map_size_ - 8,
                 "{}: header length {} runs past the end of the file ({} bytes; truncated?)",
                 where, header_len, map_size_);
    NIBBLE_CHECK(header_len > 0, "{}: header length is 0 (the header must be a JSON object, at "
                 "least '{{}}')", where);
    const std::string_view text(reinterpret_cast<const char*>(bytes + 8), size_t(header_len));
    const json header = parse_json_strict(text, where);
    NIBBLE_CHECK(header.is_object(), "{}: header must be a JSON object, found {}", where,
                 header.type_name());

    const uint64_t data_start = 8 + header_len, data_size = map_size_ - data_start;
    std::vector<std::pair<uint64_t, TensorView>> entries;
    for (const auto& [key, value] : header.items()) {
      if (key == kMetadataKey) {
        NIBBLE_CHECK(value.is_object(), "{}: field '__metadata__' must be an object of strings, "
                     "found {}", where, value.type_name());
        for (const auto& [mkey, mvalue] : value.items()) {
          NIBBLE_CHECK(mvalue.is_string(), "{}: field '__metadata__': value of '{}' must be a "
                       "string, found {} {}", where, mkey, mvalue.type_name(), mvalue.dump());
          metadata_[mkey] = mvalue.get<std::string>();
        }
        continue;
      }
      uint64_t begin = 0;
      TensorView view = parse_tensor_entry(where, key, value, data_size, &begin);
      view.data = bytes + data_start + begin;
      view.file = &path_;
      entries.emplace_back(begin, std::move(view));
    }

    // The data must be tiled exactly: sorted by offset, each tensor starting where the
    // previous one ends, the last one ending at the end of the file.
    std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first < b.first : a.second.nbytes < b.second.nbytes;
    });
    uint64_t cursor = 0;
    const TensorView* previous = nullptr;
    for (auto& [begin, view] : entries) {
      if (begin < cursor)
        NIBBLE_THROW("{}: tensor '{}': field 'data_offsets' [{}, {}] overlaps tensor '{}' "
                     "(bytes [{}, {}])", where, view.name, begin, begin + view.nbytes,
                     previous->name, cursor - previous->nbytes, cursor);
      if (begin > cursor)
        NIBBLE_THROW("{}: tensor '{}': field 'data_offsets' begins at {}, leaving bytes [{}, {}] "
                     "of the data unused (offsets must be contiguous)", where, view.name, begin,
                     cursor, begin);
      cursor = begin + view.nbytes;
      tensors_.push_back(std::move(view));
      previous = &tensors_.back();
    }
    NIBBLE_CHECK(cursor == data_size,
                 "{}: the tensors cover {} bytes of data but the file holds {} after the header "
                 "({} trailing bytes)", where, cursor, data_size, data_size - cursor);
    for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  } catch (...) {
    if (map_) ::munmap(map_, map_size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const TensorView* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorView& SafetensorsFile::at(std::string_view name) const {
  const TensorView* view = find(name);
  NIBBLE_CHECK(view, "safetensors file '{}' has no tensor '{}'", path_.string(), name);
  return *view;
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

Checkpoint::Checkpoint(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {
    directory_ = path.parent_path();
    files_.push_back(std::make_unique<SafetensorsFile>(path));
  } else {
    NIBBLE_CHECK(fs::is_directory(path, ec), "checkpoint '{}' is neither a directory nor a "
                 ".safetensors file (it does not exist or cannot be read)", path.string());
    directory_ = path;
    const fs::path single = path / kSingleName, index_path = path / kIndexName;
    if (fs::exists(single, ec)) {
      // Transformers looks for the single file first too.
      files_.push_back(std::make_unique<SafetensorsFile>(single));
    } else if (fs::exists(index_path, ec)) {
      const std::string where = fmt::format("checkpoint index '{}'", index_path.string());
      std::string text;
      {
        const Mapping m = map_file(index_path);
        if (m.address) {
          text.assign(static_cast<const char*>(m.address), m.size);
          ::munmap(m.address, m.size);
        }
      }
      json index;
      try {
        index = json::parse(text);
      } catch (const json::exception& e) {
        NIBBLE_THROW("{}: not valid JSON: {}", where, e.what());
      }
      NIBBLE_CHECK(index.is_object(), "{}: must be a JSON object, found {}", where, index.type_name());
      NIBBLE_CHECK(index.contains("weight_map"), "{}: field 'weight_map' is missing", where);
      const json& weight_map = index["weight_map"];
      NIBBLE_CHECK(weight_map.is_object(), "{}: field 'weight_map' must be an object of tensor "
                   "name -> shard file, found {}", where, weight_map.type_name());
      NIBBLE_CHECK(!index.contains("metadata") || index["metadata"].is_object(),
                   "{}: field 'metadata' must be an object", where);
      std::map<std::string, std::string> shard_of;
      std::set<std::string> shard_names;
      for (const auto& [name, shard] : weight_map.items()) {
        NIBBLE_CHECK(shard.is_string(), "{}: field 'weight_map': tensor '{}' must map to a file "
                     "name string, found {}", where, name, shard.dump());
        const std::string& file = shard.get_ref<const std::string&>();
        // Shards live beside the index: a path could read anything on the machine.
        NIBBLE_CHECK(!file.empty() && file.find('/') == std::string::npos && file != "." &&
                         file != "..",
                     "{}: field 'weight_map': tensor '{}' maps to '{}', which is not a plain file "
                     "name in the checkpoint directory", where, name, file);
        shard_of[name] = file;
        shard_names.insert(file);
      }
      NIBBLE_CHECK(!shard_names.empty(), "{}: field 'weight_map' lists no tensors", where);
      std::map<std::string, const SafetensorsFile*> opened;
      for (const std::string& file : shard_names) {
        const fs::path shard_path = path / file;
        if (!fs::exists(shard_path, ec)) {
          std::string example;
          for (const auto& [name, s] : shard_of)
            if (s == file) { example = name; break; }
          NIBBLE_THROW("{}: shard '{}' (holding tensor '{}', among others) is missing from '{}'",
                       where, file, example, path.string());
        }
        files_.push_back(std::make_unique<SafetensorsFile>(shard_path));
        opened[file] = files_.back().get();
      }
      for (const auto& [name, file] : shard_of)
        NIBBLE_CHECK(opened[file]->find(name), "{}: tensor '{}' is listed in shard '{}', but that "
                     "file has no such tensor", where, name, file);
      for (const auto& [file, shard] : opened)
        for (const TensorView& view : shard->tensors()) {
          const auto it = shard_of.find(view.name);
          NIBBLE_CHECK(it != shard_of.end(), "{}: shard '{}' holds tensor '{}', which the index "
                       "does not list", where, file, view.name);
          NIBBLE_CHECK(it->second == file, "{}: tensor '{}' is listed in shard '{}' but is also "
                       "stored in shard '{}'", where, view.name, it->second, file);
        }
    } else {
      size_t found = 0;
      for (const auto& entry : fs::directory_iterator(path, ec))
        found += entry.path().extension() == ".safetensors";
      NIBBLE_THROW("checkpoint directory '{}' has neither {} nor {} ({} other .safetensors "
                   "files found)", path.string(), kSingleName, kIndexName, found);
    }
  }
  for (const auto& file : files_)
    for (const TensorView& view : file->tensors()) tensors_.push_back(&view);
  std::sort(tensors_.begin(), tensors_.end(),
            [](const TensorView* a, const TensorView* b) { return a->name < b->name; });
  for (size_t i = 1; i < tensors_.size(); ++i)
    NIBBLE_CHECK(tensors_[i - 1]->name != tensors_[i]->name,
                 "checkpoint '{}': tensor '{}' is stored twice, in '{}' and '{}'", path.string(),
                 tensors_[i]->name, tensors_[i - 1]->file->string(), tensors_[i]->file->string());
}

const TensorView* Checkpoint::find(std::string_view name) const {
  const auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                                   [](const TensorView* v, std::string_view n) { return v->name < n; });
  return it != tensors_.end() && (*it)->name == name ? *it : nullptr;
}

const TensorView& Checkpoint::at(std::string_view name) const {
  const TensorView* view = find(name);
  NIBBLE_CHECK(view, "checkpoint '{}' has no tensor '{}'", directory_.string(), name);
  return *view;
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {

void check_specs(const std::filesystem::path& path, const std::vector<TensorSpec>& tensors) {
  std::set<std::string_view> names;
  for (const TensorSpec& t : tensors) {
    NIBBLE_CHECK(!t.name.empty(), "writing '{}': a tensor has an empty name", path.string());
    NIBBLE_CHECK(t.name != kMetadataKey, "writing '{}': '__metadata__' is not a valid tensor name",
                 path.string());
    NIBBLE_CHECK(names.insert(t.name).second, "writing '{}': tensor '{}' is given twice",
                 path.string(), t.name);
    NIBBLE_CHECK(t.fill || t.nbytes() == 0, "writing '{}': tensor '{}' has no fill function",
                 path.string(), t.name);
  }
}

// "model-00001-of-00003.safetensors": the shard names this writer (and Transformers) uses.
bool is_shard_name(const std::string& name) {
  const std::string prefix = "model-", middle = "-of-", suffix = ".safetensors";
  if (name.size() != prefix.size() + 5 + middle.size() + 5 + suffix.size()) return false;
  const auto digits = [&](size_t at) {
    return std::all_of(name.begin() + long(at), name.begin() + long(at + 5),
                       [](char c) { return c >= '0' && c <= '9'; });
  };
  return name.starts_with(prefix) && digits(prefix.size()) &&
         name.compare(prefix.size() + 5, middle.size(), middle) == 0 &&
         digits(prefix.size() + 5 + middle.size()) && name.ends_with(suffix);
}

// The shard files an earlier write may have left in `directory`: those named by its index
// (read before the new one replaces it; unreadable indexes are ignored) and every file with
// the shard name pattern (an interrupted write leaves shards without an index).
std::set<std::string> existing_shards(const std::filesystem::path& directory) {
  namespace fs = std::filesystem;
  std::set<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(directory, ec))
    if (is_shard_name(entry.path().filename().string())) names.insert(entry.path().filename().string());
  const fs::path index_path = directory / kIndexName;
  if (!fs::is_regular_file(index_path, ec)) return names;
  try {
    const Mapping m = map_file(index_path);
    std::string text;
    if (m.address) {
      text.assign(static_cast<const char*>(m.address), m.size);
      ::munmap(m.address, m.size);
    }
    const json index = json::parse(text);
    for (const auto& [tensor, shard] : index.at("weight_map").items()) {
      (void)tensor;
      const std::string& file = shard.get_ref<const std::string&>();
      // Only plain .safetensors names beside the index (as the reader accepts), never the
      // index itself.
      if (file.find('/') == std::string::npos && file.ends_with(".safetensors")) names.insert(file);
    }
  } catch (const std::exception&) {
    // Not an index this writer can read: only the pattern decides.
  }
  return names;
}

// Removes the shards of an earlier write that the checkpoint just written does not name.
void remove_stale_shards(const std::filesystem::path& directory, const std::set<std::string>& before,
                         const std::set<std::string>& written) {
  std::error_code ec;
  for (const std::string& name : before)
    if (!written.count(name) && name != kSingleName) std::filesystem::remove(directory / name, ec);
}

}  // namespace

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorSpec>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  check_specs(path, tensors);
  json header = json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (const TensorSpec& t : tensors) {
    const uint64_t n = t.nbytes();
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((kHeaderAlignment - (8 + text.size()) % kHeaderAlignment) % kHeaderAlignment, ' ');
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = uint8_t(uint64_t(text.size()) >> (8 * i));

  TempFile out(path);
  out.write(length, 8);
  out.write(text.data(), text.size());
  std::vector<uint8_t> buffer;
  for (const TensorSpec& t : tensors) {
    const size_t n = t.nbytes();
    if (n == 0) continue;
    buffer.assign(n, 0);  // one tensor in memory at a time
    t.fill(buffer.data(), n);
    out.write(buffer.data(), n);
  }
  out.commit();
}

void write_checkpoint(const std::filesystem::path& directory, const std::vector<TensorSpec>& tensors,
                      const std::map<std::string, std::string>& metadata, size_t max_shard_bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  NIBBLE_CHECK(fs::is_directory(directory, ec), "checkpoint directory '{}' does not exist",
               directory.string());
  check_specs(directory, tensors);
  uint64_t total = 0;
  for (const TensorSpec& t : tensors) total += t.nbytes();
  const std::set<std::string> old_shards = existing_shards(directory);
  if (max_shard_bytes == 0 || total <= max_shard_bytes) {
    write_safetensors(directory / kSingleName, tensors, metadata);
    fs::remove(directory / kIndexName, ec);  // a stale index from an earlier sharded write
    remove_stale_shards(directory, old_shards, {});
    return;
  }
  // Greedy, in order: a shard closes when the next tensor would take it past the limit; a
  // tensor larger than the limit gets a shard of its own.
  std::vector<std::vector<TensorSpec>> shards(1);
  uint64_t shard_bytes = 0;
  for (const TensorSpec& t : tensors) {
    const uint64_t n = t.nbytes();
    if (!shards.back().empty() && shard_bytes + n > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(t);
    shard_bytes += n;
  }
  json weight_map = json::object();
  std::set<std::string> written;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name = fmt::format("model-{:05}-of-{:05}.safetensors", s + 1, shards.size());
    write_safetensors(directory / name, shards[s], metadata);
    for (const TensorSpec& t : shards[s]) weight_map[t.name] = name;
    written.insert(name);
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  const std::string text = index.dump(2) + "\n";
  TempFile out(directory / kIndexName);
  out.write(text.data(), text.size());
  out.commit();
  // A stale single file would shadow the shards (readers look for it first).
  fs::remove(directory / kSingleName, ec);
  remove_stale_shards(directory, old_shards, written);
}

}  // namespace nibble

// The key/value cache of one sequence: per layer, K and V rows [capacity, kv_heads * head_dim]
// in F32, filled position by position by the model's forward. One object per sequence, so a
// batched engine later holds one per request (or pages of them) without the model changing.
//
// The rows live in host memory (the CPU model) or on a device (the CUDA executor, which
// makes the cache through LlamaModel::make_cache and owns the storage's layout): the length
// bookkeeping is the same, the host accessors k()/v() are for host caches only.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

namespace nibble {

// Rows held somewhere other than host memory; the backend that made it knows its type.
class KvCacheStorage {
 public:
  virtual ~KvCacheStorage() = default;
  virtual size_t bytes() const = 0;
};

class KvCache {
 public:
  KvCache(size_t layers, size_t capacity, size_t kv_width);
  // A cache whose rows are `storage` (made by a device backend); no host rows.
  KvCache(size_t layers, size_t capacity, size_t kv_width, std::unique_ptr<KvCacheStorage> storage);
  size_t layers() const { return layers_; }
  size_t capacity() const { return capacity_; }
  size_t kv_width() const { return kv_width_; }
  // Positions filled so far (the next token's position).
  size_t length() const { return length_; }
  void set_length(size_t length);
  void clear() { length_ = 0; }
  // Host rows (host caches only: storage() == nullptr).
  float* k(size_t layer, size_t pos) { return k_.data() + (layer * capacity_ + pos) * kv_width_; }
  float* v(size_t layer, size_t pos) { return v_.data() + (layer * capacity_ + pos) * kv_width_; }
  const float* k(size_t layer, size_t pos) const {
    return k_.data() + (layer * capacity_ + pos) * kv_width_;
  }
  const float* v(size_t layer, size_t pos) const {
    return v_.data() + (layer * capacity_ + pos) * kv_width_;
  }
  // Device rows, or null for a host cache.
  KvCacheStorage* storage() const { return storage_.get(); }
  size_t bytes() const {
    return storage_ ? storage_->bytes() : (k_.size() + v_.size()) * sizeof(float);
  }

 private:
  size_t layers_, capacity_, kv_width_, length_ = 0;
  std::vector<float> k_, v_;
  std::unique_ptr<KvCacheStorage> storage_;
};

}  // namespace nibble

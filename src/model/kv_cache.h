// The key/value cache of one sequence: per layer, K and V rows [capacity, kv_heads * head_dim]
// in F32, filled position by position by the model's forward. One object per sequence, so a
// batched engine later holds one per request (or pages of them) without the model changing.
#pragma once

#include <cstddef>
#include <vector>

namespace nibble {

class KvCache {
 public:
  KvCache(size_t layers, size_t capacity, size_t kv_width);
  size_t layers() const { return layers_; }
  size_t capacity() const { return capacity_; }
  size_t kv_width() const { return kv_width_; }
  // Positions filled so far (the next token's position).
  size_t length() const { return length_; }
  void set_length(size_t length);
  void clear() { length_ = 0; }
  float* k(size_t layer, size_t pos) { return k_.data() + (layer * capacity_ + pos) * kv_width_; }
  float* v(size_t layer, size_t pos) { return v_.data() + (layer * capacity_ + pos) * kv_width_; }
  const float* k(size_t layer, size_t pos) const {
    return k_.data() + (layer * capacity_ + pos) * kv_width_;
  }
  const float* v(size_t layer, size_t pos) const {
    return v_.data() + (layer * capacity_ + pos) * kv_width_;
  }
  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }

 private:
  size_t layers_, capacity_, kv_width_, length_ = 0;
  std::vector<float> k_, v_;
};

}  // namespace nibble

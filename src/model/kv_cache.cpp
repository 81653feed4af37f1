#include "model/kv_cache.h"

#include "base/error.h"

namespace nibble {
namespace {

void check_shape(size_t layers, size_t capacity, size_t kv_width) {
  NIBBLE_CHECK(layers > 0 && capacity > 0 && kv_width > 0,
               "KV cache needs layers, capacity and width > 0 (got {}, {}, {})", layers, capacity,
               kv_width);
}

}  // namespace

KvCache::KvCache(size_t layers, size_t capacity, size_t kv_width)
    : layers_(layers), capacity_(capacity), kv_width_(kv_width) {
  check_shape(layers, capacity, kv_width);
  k_.resize(layers * capacity * kv_width);
  v_.resize(layers * capacity * kv_width);
}

KvCache::KvCache(size_t layers, size_t capacity, size_t kv_width,
                 std::unique_ptr<KvCacheStorage> storage)
    : layers_(layers), capacity_(capacity), kv_width_(kv_width), storage_(std::move(storage)) {
  check_shape(layers, capacity, kv_width);
  NIBBLE_CHECK(storage_ != nullptr, "KV cache: no device storage given");
}

void KvCache::set_length(size_t length) {
  NIBBLE_CHECK(length <= capacity_, "KV cache: length {} exceeds its capacity of {} positions",
               length, capacity_);
  length_ = length;
}

}  // namespace nibble

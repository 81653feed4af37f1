#include "model/kv_cache.h"

#include "base/error.h"

namespace nibble {

KvCache::KvCache(size_t layers, size_t capacity, size_t kv_width)
    : layers_(layers), capacity_(capacity), kv_width_(kv_width),
      k_(layers * capacity * kv_width), v_(layers * capacity * kv_width) {
  NIBBLE_CHECK(layers > 0 && capacity > 0 && kv_width > 0,
               "KV cache needs layers, capacity and width > 0 (got {}, {}, {})", layers, capacity,
               kv_width);
}

void KvCache::set_length(size_t length) {
  NIBBLE_CHECK(length <= capacity_, "KV cache: length {} exceeds its capacity of {} positions",
               length, capacity_);
  length_ = length;
}

}  // namespace nibble

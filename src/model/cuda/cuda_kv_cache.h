// The device rows of a KvCache (model/kv_cache.h) on a CUDA device (CUDA builds only): per
// layer, K and V [capacity, kv_width] F32, contiguous by position; cuda_attention writes a
// chunk's rotated keys and its values straight into their rows.
// F32 as on the CPU (accuracy first; a BF16 or FP8 cache halves or quarters it later).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "model/cuda/cuda_context.h"
#include "model/kv_cache.h"

namespace nibble {

class CudaKvStorage final : public KvCacheStorage {
 public:
  CudaKvStorage(size_t layers, size_t capacity, size_t kv_width)
      : id_(next_id_.fetch_add(1) + 1),
        layer_floats_(capacity * kv_width),
        k_(layers * layer_floats_ * sizeof(float), "the KV cache's keys"),
        v_(layers * layer_floats_ * sizeof(float), "the KV cache's values") {}
  // A decode step the executor launched ahead (llama_model_cuda.h) may still use the rows.
  ~CudaKvStorage() override { cudaDeviceSynchronize(); }
  // Unique over the process (an address may be reused by the next cache).
  uint64_t id() const { return id_; }
  // Rows 0 .. capacity - 1 of `layer`.
  float* k(size_t layer) const { return k_.as<float>() + layer * layer_floats_; }
  float* v(size_t layer) const { return v_.as<float>() + layer * layer_floats_; }
  size_t bytes() const override { return k_.bytes() + v_.bytes(); }

 private:
  inline static std::atomic<uint64_t> next_id_{0};
  uint64_t id_;
  size_t layer_floats_;
  DeviceBuffer k_, v_;
};

}  // namespace nibble
